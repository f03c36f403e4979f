"""Synthetic faces with ground truth, rendered from the ICT model.

One face = random identity (within +/-2 sigma), a few mild expression
activations, a pose (yaw up to ``yaw_range``, small pitch and roll), a 9x3
SH light (dominant ambient plus a random directional part), a procedural
albedo painted in UV space, and optionally

- fine detail: wrinkle-like grooves (forehead lines, crow's feet, nasolabial
  folds, 0.2-1 mm) and fine noise, displacing a twice-subdivided mesh along
  its normal and ABSENT from the albedo (what shape from shading must find);
- a smooth out-of-model deformation: a few Gaussian RBF displacements of
  1-4 mm applied to the base mesh (what the Laplacian stage must find).

Image formation is METHOD.md eq. 4 without specular: ``albedo * S(n)`` with
camera-frame normals, over a gently varying background, with mild noise.

The "face_closed" region is used so that eyes and mouth are not holes. Its UV
layout puts the face in u in [0, 2) and both eyeballs in [0, 1) (shared), so
the procedural texture is an atlas of four tiles: face (two tiles), left
eyeball (u + 2) and right eyeball (u + 3), addressed with u / 4.

Ground truth (all mm): base-topology vertices in the model and camera frames
(deformation included, detail not: detail has no base-topology counterpart),
the deformation offsets, the camera, the coefficients, per-pixel depth,
camera-frame normals, albedo and mask.

CLI: ``python -m fitting.synthetic --n N --seed S --out DIR [--size 512] [--detail] [--deformation]``.
Same seed, same bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from fitting.camera import DEFAULT_FOV, Camera, euler_to_matrix
from fitting.rendering.renderer import Renderer, uv_to_texel
from morphable.geometry import vertex_normals
from morphable.model import MorphableModel
from sfs.sh import sh_irradiance

ATLAS_TILES = 4  # face: tiles 0-1 (ICT UDIM layout), left eyeball: tile 2, right eyeball: tile 3


@dataclass
class SyntheticFace:
    """One synthetic face and its ground truth.

    - ``image`` (H, W, 3) float32 in [0, 1]; ``albedo`` (H, W, 3) (0 outside the
      mask); ``shading`` (H, W, 3) SH irradiance; ``normals`` (H, W, 3) unit,
      camera frame (0 outside); ``depth`` (H, W) mm (0 outside); ``mask`` (H, W) bool;
    - ``verts_model`` / ``verts_camera`` (V, 3) mm: the true base-topology
      vertices (deformation applied, no fine detail), model / camera frame;
    - ``deformation`` (V, 3) mm: the out-of-model offsets (zeros if none);
    - ``triangles`` (F, 3): base topology; ``camera``: the :class:`Camera` (B = 1);
    - ``params``: JSON-ready dict (coefficients, pose, light, camera, detail
      and deformation settings); ``texture`` (Ht, Wt, 3): the albedo atlas.
    """

    image: np.ndarray
    albedo: np.ndarray
    shading: np.ndarray
    normals: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    verts_model: np.ndarray
    verts_camera: np.ndarray
    deformation: np.ndarray
    triangles: np.ndarray
    camera: Camera
    params: Dict
    texture: np.ndarray = field(repr=False, default=None)


# --------------------------------------------------------------------------- helpers

def _smoothstep(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _label_mask(model: MorphableModel, name: str) -> torch.Tensor:
    return model.vertex_labels == model.label_names.index(name)


def _atlas_uvs(model: MorphableModel) -> torch.Tensor:
    """(T, 2) texture coordinates of the three-tile atlas (see module doc)."""
    tri_label = model.vertex_labels[model.triangles[:, 0]]
    uv = model.uvs.clone()
    for tile, name in ((2, "eyeball_left"), (3, "eyeball_right")):
        if name in model.label_names:
            eye = torch.unique(model.uv_triangles[tri_label == model.label_names.index(name)].reshape(-1))
            uv[eye, 0] += tile
    uv[:, 0] /= ATLAS_TILES
    return uv


def _subdivide(tris: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Midpoint split of every triangle into four: -> (E, 2) edges (new vertex
    n + e is the midpoint of edge e) and (4F, 3) triangles. The face order
    depends on the face list only, so two index spaces (positions and UVs)
    subdivided separately stay in step."""
    e = torch.cat([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]], 0).sort(1).values
    # one int64 key per edge: 1-D unique is far faster than unique(dim=0)
    keys, inv = torch.unique(e[:, 0] * n + e[:, 1], return_inverse=True)
    edges = torch.stack([keys // n, keys % n], 1)
    m01, m12, m20 = (n + inv).reshape(3, -1)
    v0, v1, v2 = tris.unbind(1)
    new = torch.stack([torch.stack([v0, m01, m20], 1), torch.stack([v1, m12, m01], 1),
                       torch.stack([v2, m20, m12], 1), torch.stack([m01, m12, m20], 1)], 1)
    return edges, new.reshape(-1, 3)


def _subdivide_mesh(verts, normals, attrs, tris, uvs, uv_tris, levels, alpha=0.75):
    """Subdivide ``levels`` times. New positions use Phong tessellation (the edge
    midpoint pulled toward the tangent planes of its end points, shape factor
    ``alpha``) so the refined surface is smooth, not faceted; original vertices
    stay where they are. ``attrs`` (V, C) are interpolated linearly."""
    for _ in range(levels):
        edges, new_tris = _subdivide(tris, verts.shape[0])
        pi, pj = verts[edges[:, 0]], verts[edges[:, 1]]
        ni, nj = normals[edges[:, 0]], normals[edges[:, 1]]
        m = (pi + pj) / 2
        proj_i = m - ((m - pi) * ni).sum(-1, keepdim=True) * ni
        proj_j = m - ((m - pj) * nj).sum(-1, keepdim=True) * nj
        mid = (1 - alpha) * m + alpha * (proj_i + proj_j) / 2
        verts = torch.cat([verts, mid])
        normals = torch.cat([normals, torch.nn.functional.normalize(ni + nj, dim=-1)])
        attrs = torch.cat([attrs, (attrs[edges[:, 0]] + attrs[edges[:, 1]]) / 2])
        uv_edges, uv_tris = _subdivide(uv_tris, uvs.shape[0])
        uvs = torch.cat([uvs, (uvs[uv_edges[:, 0]] + uvs[uv_edges[:, 1]]) / 2])
        tris = new_tris
    return verts, normals, attrs, tris, uvs, uv_tris


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 2) points, (S, 2) segment ends -> (N,) distance to the nearest segment."""
    ab = b - a
    t = (((p[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return (p[:, None] - closest).norm(dim=-1).min(1).values


def _polygon_inside(p: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """(N, 2) points, (K, 2) closed polygon -> (N,) bool, even-odd rule (vectorised crossings)."""
    a, b = poly, poly.roll(-1, 0)
    y = p[:, 1:2]
    cond = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    x_cross = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (
        b[None, :, 1] - a[None, :, 1] + 1e-12)
    return ((cond & (p[:, 0:1] < x_cross)).sum(1) % 2) == 1


class _Landmarks:
    """Feature positions on the model's mean mesh (multipie68 numbering), model frame mm."""

    def __init__(self, model: MorphableModel):
        lm = model.mean[model.landmark_sets["multipie68"]]
        self.lm = lm
        self.brows = (lm[17:22, :2], lm[22:27, :2])
        self.outer_lip = lm[48:60, :2]
        self.eye_corners = (lm[36], lm[45])  # outer corners: subject's right (x < 0) and left
        self.nose_wings = (lm[31], lm[35])
        self.mouth_corners = (lm[48], lm[54])


# --------------------------------------------------------------------------- albedo

class _TexelFeatures:
    """Per-texel region label and mean-mesh position of the atlas (computed once per model)."""

    @staticmethod
    def _uv_priority(model: MorphableModel, uv: torch.Tensor) -> torch.Tensor:
        """(1, T) model-frame z of each UV coordinate's vertex."""
        z = torch.zeros(uv.shape[0])
        z[model.uv_triangles.reshape(-1)] = model.mean[model.triangles.reshape(-1), 2]
        return z[None]

    def __init__(self, model: MorphableModel, renderer: Renderer, size: int):
        self.size = (size, size * ATLAS_TILES)
        uv = _atlas_uvs(model)
        h, w = self.size
        # UV shells overlap inside the eyeballs (layers): bake the front-most (largest z)
        frags = renderer.rasterize_pixels(uv_to_texel(uv, h, w)[None], model.uv_triangles, h, w,
                                          priority=self._uv_priority(model, uv))
        self.valid = frags.mask[0]
        pos = renderer.interpolate(model.mean, frags, model.triangles)[0]
        tri = frags.tri_id[0].clamp_min(0)
        self.label = torch.where(self.valid, model.vertex_labels[model.triangles[tri, 0]], -1)
        # eyeball texels: position relative to the centre of the eye opening (the
        # mean of the six eye-contour landmarks), where the iris is seen
        lm = model.mean[model.landmark_sets["multipie68"]]
        for name, eye in (("eyeball_left", lm[42:48]), ("eyeball_right", lm[36:42])):
            if name in model.label_names:
                sel = self.label == model.label_names.index(name)
                pos[sel] = pos[sel] - eye.mean(0)
        self.pos = pos
        self.uv = uv
        # nearest valid texel for every texel, to bleed colours across UV seams
        from scipy.ndimage import distance_transform_edt
        _, idx = distance_transform_edt(~self.valid.numpy(), return_indices=True)
        self.nearest = torch.from_numpy(idx[0] * w + idx[1]).reshape(-1)
        self.names = list(model.label_names)
        self.weights = _feature_weights(self, _Landmarks(model))


def _feature_weights(feats: "_TexelFeatures", lms: _Landmarks) -> Dict[str, torch.Tensor]:
    """Per-texel geometric weights of the painted features (the same for every face)."""
    p = feats.pos.reshape(-1, 3)
    xy = p[:, :2]
    front = _smoothstep(40.0, 70.0, p[:, 2])
    d = torch.minimum(_segment_distance(xy, lms.brows[0][:-1], lms.brows[0][1:]),
                      _segment_distance(xy, lms.brows[1][:-1], lms.brows[1][1:]))
    brow = (1 - _smoothstep(1.5, 3.5, d)) * front
    inside = _polygon_inside(xy, lms.outer_lip)
    edge = _segment_distance(xy, lms.outer_lip, lms.outer_lip.roll(-1, 0))
    lip = torch.where(inside, 0.5 + 0.5 * _smoothstep(0.0, 1.5, edge), 0.5 * (1 - _smoothstep(0.0, 1.5, edge)))
    lip = lip * front * (1 - _smoothstep(-5, 5, p[:, 1] - lms.lm[33, 1]))  # nothing above the nose base
    cheek = sum(torch.exp(-(((p[:, 0] - cx) ** 2 + (p[:, 1] + 5) ** 2) / (2 * 18.0 ** 2))) for cx in (-45.0, 45.0))
    eye_r = torch.full_like(front, 1e3)
    for name in ("eyeball_left", "eyeball_right"):
        if name in feats.names:
            sel = feats.label.reshape(-1) == feats.names.index(name)
            q = p[sel]
            eye_r[sel] = q[:, :2].norm(dim=-1) + 1e3 * (q[:, 2] < -8)  # front of the eyeball only
    return {"brow": brow, "lip": lip, "cheek": cheek, "eye_r": eye_r}


def _albedo_texture(model: MorphableModel, feats: "_TexelFeatures", rng: np.random.Generator) -> Tuple[torch.Tensor, Dict]:
    """(Ht, Wt, 3) albedo atlas in [0, 1] and the settings drawn for it.

    Smooth by design: the fine detail belongs to the geometry only."""
    names, w = model.label_names, feats.weights
    p = feats.pos.reshape(-1, 3)
    lab = feats.label.reshape(-1)
    tone = float(rng.uniform(0, 1))
    light_skin, dark_skin = torch.tensor([0.86, 0.68, 0.57]), torch.tensor([0.40, 0.26, 0.19])
    skin = light_skin * (1 - tone) + dark_skin * tone
    skin = skin * torch.tensor(rng.uniform(0.95, 1.05, 3), dtype=torch.float32)
    # low-frequency blotchiness and rosy cheeks
    k = torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32) / float(rng.uniform(25, 60))
    ph = torch.tensor(rng.uniform(0, 2 * math.pi, 4), dtype=torch.float32)
    blotch = torch.sin(p @ k + ph).mean(-1, keepdim=True) * float(rng.uniform(0.02, 0.06))
    redness = float(rng.uniform(0.0, 0.12))
    col = skin * (1 + blotch) * (1 + redness * w["cheek"][:, None] * torch.tensor([0.4, -0.6, -0.6]))
    brow_col = float(rng.uniform(0.08, 0.3)) * torch.tensor([1.0, 0.8, 0.65])
    brow = w["brow"][:, None] * float(rng.uniform(0.5, 0.8))
    col = col * (1 - brow) + brow_col * brow
    lip_col = skin * torch.tensor([0.95, 0.55, 0.58]) * float(rng.uniform(0.8, 1.0))
    lip = w["lip"][:, None]
    col = col * (1 - lip) + lip_col * lip
    if "mouth_socket" in names:  # mouth interior
        col[lab == names.index("mouth_socket")] = torch.tensor([0.30, 0.10, 0.10])
    # eyeballs: sclera, iris and pupil by the distance from the centre of the eye opening
    iris_col = torch.tensor([[0.30, 0.18, 0.08], [0.25, 0.40, 0.55], [0.30, 0.38, 0.20]])[int(rng.integers(0, 3))]
    iris_col = iris_col * float(rng.uniform(0.6, 1.1))
    eye = torch.zeros_like(lab, dtype=torch.bool)
    for name in ("eyeball_left", "eyeball_right"):
        if name in names:
            eye |= lab == names.index(name)
    r = w["eye_r"][:, None]
    eye_col = torch.where(r < 1.8, torch.tensor([0.03, 0.03, 0.03]),
                          torch.where(r < 4.8, iris_col, torch.tensor([0.88, 0.85, 0.82])))
    col = torch.where(eye[:, None], eye_col, col)
    out = col.clamp(0, 1)[feats.nearest].reshape(*feats.pos.shape[:2], 3)
    info = {"skin_tone": tone, "skin_rgb": skin.tolist(), "cheek_redness": redness}
    return out, info


# --------------------------------------------------------------------------- geometry

def _detail_height(ref: torch.Tensor, lms: _Landmarks, rng: np.random.Generator) -> Tuple[torch.Tensor, Dict]:
    """(N, 3) mean-mesh (reference) positions -> (N,) displacement in mm along the normal:
    forehead lines, crow's feet, nasolabial folds (grooves, negative) plus fine noise."""
    x, y, z = ref.unbind(-1)
    brow_top = float(torch.cat(lms.brows)[:, 1].max())
    a_fore = float(rng.uniform(0.3, 1.0))
    lam = float(rng.uniform(7.0, 11.0))
    h = torch.zeros_like(x)
    for k in range(3):  # forehead lines, gently wavy
        yk = brow_top + 12 + k * lam + 2.0 * torch.sin(x / 25 + float(rng.uniform(0, 6.3)))
        h = h - a_fore * torch.exp(-((y - yk) ** 2) / (2 * 1.2 ** 2)) * torch.exp(-((x / 40) ** 4))
    a_crow = float(rng.uniform(0.2, 0.6))
    for c in lms.eye_corners:  # crow's feet fanning out from the outer eye corners
        dx = (x - c[0]) * torch.sign(c[0])
        dy = y - c[1]
        r = torch.sqrt(dx ** 2 + dy ** 2 + 1e-9)
        theta = torch.atan2(dy, dx)
        fan = torch.clamp(torch.cos(6 * theta), min=0) ** 6 * (theta.abs() < 1.1)
        h = h - a_crow * fan * _smoothstep(4, 8, r) * (1 - _smoothstep(14, 22, r)) * (dx > 0)
    a_naso = float(rng.uniform(0.4, 1.0))
    for wing, corner in zip(lms.nose_wings, lms.mouth_corners):  # nasolabial folds
        s = torch.sign(wing[0])
        a = torch.stack([wing[0] + 4 * s, wing[1] + 1])
        b = torch.stack([corner[0] + 5 * s, corner[1] - 4])
        mid = (a + b) / 2 + torch.stack([4 * s, torch.tensor(0.0)])
        segs_a, segs_b = torch.stack([a, mid]), torch.stack([mid, b])
        d = _segment_distance(ref[:, :2], segs_a, segs_b)
        h = h - a_naso * torch.exp(-d ** 2 / (2 * 1.8 ** 2)) * _smoothstep(60, 90, z)
    m = 24  # fine noise: random 3-D sinusoids, wavelengths 1.5-5 mm
    dirs = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(m, 3)), dtype=torch.float32), dim=-1)
    freq = 2 * math.pi / torch.tensor(rng.uniform(1.5, 5.0, m), dtype=torch.float32)
    phase = torch.tensor(rng.uniform(0, 2 * math.pi, m), dtype=torch.float32)
    a_noise = float(rng.uniform(0.04, 0.1))
    h = h + a_noise * math.sqrt(2.0 / m) * torch.sin(ref @ (dirs * freq[:, None]).T + phase).sum(-1)
    return h, {"forehead_mm": a_fore, "forehead_spacing_mm": lam, "crows_feet_mm": a_crow,
               "nasolabial_mm": a_naso, "noise_std_mm": a_noise}


def _deformation(model: MorphableModel, rng: np.random.Generator) -> Tuple[torch.Tensor, list]:
    """(V, 3) smooth offsets (a few Gaussian RBFs of 1-4 mm) evaluated at the mean mesh."""
    ref = model.mean
    face = torch.nonzero(_label_mask(model, "face") & (ref[:, 2] > 70)).squeeze(1)
    out = torch.zeros_like(ref)
    bumps = []
    for _ in range(int(rng.integers(2, 5))):
        c = ref[face[int(rng.integers(0, face.numel()))]]
        sigma = float(rng.uniform(15, 35))
        amp = float(rng.uniform(1, 4))
        direction = torch.nn.functional.normalize(torch.tensor(rng.normal(size=3), dtype=torch.float32), dim=0)
        w = torch.exp(-((ref - c) ** 2).sum(-1) / (2 * sigma ** 2))
        out = out + amp * w[:, None] * direction
        bumps.append({"centre_mm": c.tolist(), "sigma_mm": sigma, "amplitude_mm": amp,
                      "direction": direction.tolist()})
    return out, bumps


def random_light(rng: np.random.Generator) -> torch.Tensor:
    """(9, 3) SH coefficients: a dominant, slightly tinted ambient term plus a
    directional light from the camera's hemisphere (its SH projection, bands 1-2),
    so the irradiance stays positive."""
    amb = float(rng.uniform(0.75, 1.0)) * torch.tensor(rng.uniform(0.93, 1.07, 3), dtype=torch.float32)
    c = torch.zeros(9, 3)
    c[0] = amb / (math.pi * 0.282095)
    d = torch.tensor([rng.uniform(-0.8, 0.8), rng.uniform(-0.3, 0.8), 1.0], dtype=torch.float32)
    d = torch.nn.functional.normalize(d, dim=0)
    s = float(rng.uniform(0.15, 0.45))
    x, y, zz = d.tolist()
    band1 = torch.tensor([0.488603 * y, 0.488603 * zz, 0.488603 * x])
    band2 = torch.tensor([1.092548 * x * y, 1.092548 * y * zz, 0.315392 * (3 * zz * zz - 1),
                          1.092548 * x * zz, 0.546274 * (x * x - y * y)])
    c[1:4] = s * band1[:, None] * 1.5
    c[4:9] = s * band2[:, None] * 0.4
    return c


# --------------------------------------------------------------------------- generator

class FaceGenerator:
    """Reusable generator: caches the renderer and the per-model albedo atlas features."""

    def __init__(self, model: MorphableModel, renderer: Optional[Renderer] = None, texture_size: int = 512):
        if "eyeball_left" not in model.label_names:
            raise ValueError("use the 'face_closed' region so that eyes and mouth are not holes")
        self.model = model
        self.renderer = renderer or Renderer("cpu")
        self.feats = _TexelFeatures(model, self.renderer, texture_size)
        self.lms = _Landmarks(model)
        self.face = _label_mask(model, "face")

    def __call__(self, seed, size: int = 512, yaw_range: float = 60.0, detail: bool = False,
                 deformation: bool = False, fov_deg: float = DEFAULT_FOV, noise: bool = True,
                 yaw_deg: Optional[float] = None, pitch_deg: Optional[float] = None,
                 id_coeffs: Optional[torch.Tensor] = None, exp_coeffs: Optional[torch.Tensor] = None,
                 pose_deg: Optional[Tuple[float, float, float]] = None, fill: Optional[float] = None) -> SyntheticFace:
        """One face; arguments as :func:`generate_face`. Deterministic in ``seed``.

        ``yaw_deg`` / ``pitch_deg`` (degrees): that head pose instead of the drawn one; ``id_coeffs``
        (n_id,), ``exp_coeffs`` (n_exp,), ``pose_deg`` (yaw, pitch, roll) and ``fill`` (the face's
        share of the image): these instead of random ones (several views of one person, frames of a
        clip). The draws are still made, so everything else is the same as without them."""
        model = self.model
        rng = np.random.default_rng(seed)
        # shape: identity within +/-2 sigma, a few mild expression activations
        id_c = torch.tensor(np.clip(rng.normal(size=model.n_id), -2, 2), dtype=torch.float32)
        if id_coeffs is not None:
            id_c = torch.as_tensor(id_coeffs, dtype=torch.float32).reshape(model.n_id).clone()
        exp_c = torch.zeros(model.n_exp)
        active = rng.choice(model.n_exp, size=int(rng.integers(0, 4)), replace=False)
        exp_c[torch.as_tensor(active, dtype=torch.long)] = torch.tensor(rng.uniform(0.1, 0.5, active.size),
                                                                        dtype=torch.float32)
        if exp_coeffs is not None:
            exp_c = torch.as_tensor(exp_coeffs, dtype=torch.float32).reshape(model.n_exp).clone()
            active = np.flatnonzero(exp_c.numpy())
        verts = model.forward(id_c[None], exp_c[None])[0]
        deform, bumps = _deformation(model, rng) if deformation else (torch.zeros_like(verts), [])
        verts = verts + deform
        # pose and camera
        yaw = float(rng.uniform(-yaw_range, yaw_range))
        pitch, roll = float(rng.uniform(-10, 10)), float(rng.uniform(-6, 6))
        yaw = yaw if yaw_deg is None else float(yaw_deg)
        pitch = pitch if pitch_deg is None else float(pitch_deg)
        if pose_deg is not None:
            yaw, pitch, roll = (float(x) for x in pose_deg)
        rot = euler_to_matrix(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([roll]))
        fill = float(rng.uniform(0.6, 0.75)) if fill is None else float(fill)
        cam = Camera.from_image_size(size, size, fov_deg=fov_deg, rotation=rot[0])
        cam = cam.look_at_face(verts[self.face][None], fill=fill)
        light = random_light(rng)
        texture, alb_info = _albedo_texture(model, self.feats, rng)

        verts_cam = cam.to_camera(verts[None])[0]
        normals = vertex_normals(verts_cam[None], model.triangles)[0]
        tris, uvs, uv_tris = model.triangles, self.feats.uv, model.uv_triangles
        detail_info = None
        if detail:
            attrs = torch.cat([model.mean, self.face.float()[:, None]], 1)
            verts_cam, normals, attrs, tris, uvs, uv_tris = _subdivide_mesh(
                verts_cam, normals, attrs, tris, uvs, uv_tris, levels=2)
            h, detail_info = _detail_height(attrs[:, :3], self.lms, rng)
            verts_cam = verts_cam + (h * attrs[:, 3])[:, None] * normals
            normals = vertex_normals(verts_cam[None], tris)[0]

        r = self.renderer
        frags = r.rasterize(verts_cam[None], tris, cam.intrinsics, size, size)
        mask = frags.mask[0]
        n_img = torch.nn.functional.normalize(r.interpolate(normals, frags)[0], dim=-1) * mask[..., None]
        uv_img = r.interpolate(uvs, frags, uv_tris)
        albedo = r.texture(texture[None], uv_img)[0] * mask[..., None]
        shading = sh_irradiance(n_img[None], light[None])[0] * mask[..., None]
        # background: a plain colour with a gentle linear gradient
        bg0 = torch.tensor(rng.uniform(0.2, 0.8, 3), dtype=torch.float32)
        grad = torch.tensor(rng.uniform(-0.15, 0.15, 3), dtype=torch.float32)
        gy = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
        bg = bg0 + gy[:, None, None] * grad
        image = torch.where(mask[..., None], albedo * shading, bg.expand(size, size, 3))
        sigma = float(rng.uniform(0.0, 0.012)) if noise else 0.0
        if sigma > 0:
            image = image + sigma * torch.tensor(rng.normal(size=image.shape), dtype=torch.float32)
        image = image.clamp(0, 1)

        verts_cam_base = cam.to_camera(verts[None])[0]
        lm68 = cam.project(verts[model.landmark_sets["multipie68"]][None])[0]
        params = {
            "seed": _seed_record(seed),
            "model": {"source": "ICT-FaceKit", "region": "face_closed", "n_vertices": model.n_vertices},
            "units": "mm",
            "id_coeffs": id_c.tolist(),
            "exp_coeffs": exp_c.tolist(),
            "exp_active": {model.exp_names[i]: float(exp_c[i]) for i in sorted(active.tolist())},
            "pose_deg": {"yaw": yaw, "pitch": pitch, "roll": roll},
            "sh_coeffs": light.tolist(),
            "camera": {"intrinsics": cam.intrinsics[0].tolist(), "rotation": cam.rotation[0].tolist(),
                       "translation": cam.translation[0].tolist(), "height": size, "width": size,
                       "fov_deg": fov_deg, "fill": fill},
            "albedo": alb_info,
            "detail": detail_info,
            "deformation": bumps,
            "background": {"colour": bg0.tolist(), "vertical_gradient": grad.tolist()},
            "noise_sigma": sigma,
            # the 68 model landmarks (multipie68 vertex set) projected: u, v pixels and depth mm
            # (self-occluded ones included, e.g. the far jaw line at large yaw)
            "landmarks68_uvd": lm68.tolist(),
        }
        return SyntheticFace(
            image=image.numpy(), albedo=albedo.numpy(), shading=shading.numpy(), normals=n_img.numpy(),
            depth=frags.depth[0].numpy(), mask=mask.numpy(), verts_model=verts.numpy(),
            verts_camera=verts_cam_base.numpy(), deformation=deform.numpy(),
            triangles=model.triangles.numpy(), camera=cam, params=params, texture=texture.numpy())


def _seed_record(seed):
    """A JSON-ready record of what seeded a face (a Generator's state is not recorded)."""
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    if isinstance(seed, (list, tuple)):
        return [int(x) for x in seed]
    return None


_GENERATORS: Dict[int, FaceGenerator] = {}


def generate_face(model: MorphableModel, seed=0, size: int = 512, yaw_range: float = 60.0,
                  detail: bool = False, deformation: bool = False, **kwargs) -> SyntheticFace:
    """One synthetic face (see :class:`SyntheticFace`).

    ``seed``: an int, a sequence of ints (e.g. ``(run_seed, index)``) or a
    ``numpy.random.Generator``. ``yaw_range`` degrees; ``detail``: fine wrinkle
    geometry; ``deformation``: smooth out-of-model offsets. Other keywords go to
    :meth:`FaceGenerator.__call__` (``fov_deg``, ``noise``). The generator (and
    its albedo atlas features, about a second to build) is cached per model.
    """
    gen = _GENERATORS.get(id(model))
    if gen is None or gen.model is not model:
        gen = _GENERATORS[id(model)] = FaceGenerator(model)
    return gen(seed, size=size, yaw_range=yaw_range, detail=detail, deformation=deformation, **kwargs)


# --------------------------------------------------------------------------- files

def save_face(face: SyntheticFace, folder: Path) -> None:
    """Write image.png, mask.png, mesh.obj (base topology, model frame, mm),
    params.json, depth.npy, normals.npy, albedo.npy, verts_model.npy,
    verts_camera.npy, deformation.npy into ``folder``."""
    import cv2
    import trimesh

    folder.mkdir(parents=True, exist_ok=True)
    img = np.round(face.image * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "image.png"), img[..., ::-1])
    cv2.imwrite(str(folder / "mask.png"), face.mask.astype(np.uint8) * 255)
    trimesh.Trimesh(face.verts_model.astype(np.float64), face.triangles, process=False).export(
        str(folder / "mesh.obj"))
    (folder / "params.json").write_text(json.dumps(face.params, indent=1, sort_keys=True))
    for name in ("depth", "normals", "albedo", "verts_model", "verts_camera", "deformation"):
        np.save(folder / f"{name}.npy", getattr(face, name).astype(np.float32))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fitting.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="number of faces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--yaw-range", type=float, default=60.0, help="max |yaw| in degrees")
    ap.add_argument("--detail", action="store_true", help="fine wrinkle/noise geometry")
    ap.add_argument("--deformation", action="store_true", help="smooth out-of-model deformation")
    ap.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive")
    args = ap.parse_args(argv)
    from tqdm import tqdm
    from morphable import load_ict
    model = load_ict(args.model_dir, region="face_closed", progress=False)
    gen = FaceGenerator(model)
    for i in tqdm(range(args.n), desc="faces", unit="face"):
        face = gen((args.seed, i), size=args.size, yaw_range=args.yaw_range, detail=args.detail,
                   deformation=args.deformation)
        save_face(face, args.out / f"face_{i:04d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
