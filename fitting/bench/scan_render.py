"""The head scan rendered as photographs (two looks), with its exact normals, and its landmarks read off a render.

Camera: the photo's pinhole (:data:`fitting.camera.DEFAULT_FOV` on the longer
side, principal point at the centre: the intrinsics the API assumes for a
photo), looking at the head along the scan's -z; ``yaw`` turns the head
about the vertical axis (positive: the nose toward image right, as
:mod:`fitting.camera`). Surfaces come from :class:`fitting.rendering.renderer.Renderer`
(Open3D ray casting) with the scan's own vertex normals interpolated; each
photo is rendered at :data:`SUPERSAMPLE` times its size and shrunk by area
averaging (the silhouettes are antialiased like a photo's).

Looks (values linear, in [0, 1]):

- ``uniform``: one skin albedo everywhere, shaded by a light that spherical
  harmonics of order 2 represent exactly (what the fine stage models): an
  ambient term plus the order-2 projection of a distant light from the upper
  left. Nothing else: no shadows, no specular.
- ``textured``: a procedural skin albedo (smooth colour variation, flushed
  cheeks, redder lips, darker brows; :func:`procedural_albedo`) under a hard
  key light from the right with cast shadows (a shadow ray per pixel), plus a
  soft SH fill. Not representable by order-2 SH: what a photo does to the
  stages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fitting.camera import DEFAULT_FOV, Camera, euler_to_matrix
from fitting.rendering.renderer import Renderer
from landmarks import REGION_NAMES, region_label_map
from sfs.projection import pixel_to_camera
from sfs.sh import UNIFORM_C0, sh_basis, sh_irradiance

from .scan_protocol import ScanMesh, ScanReference, raycasting_scene

LOOKS = ("uniform", "textured")
SUPERSAMPLE = 2  # photo pixels rendered per side of each output pixel
BACKGROUND = (0.30, 0.33, 0.36)  # a grey-blue backdrop
# The part of the scan a photo frames (mm from the nose tip: face, forehead, ears; not the
# shoulders) and the fraction of the image side its bounding box spans.
FRAME_RADIUS_MM = 120.0
FRAME_FILL = 0.7
# Light-skin albedo (linear RGB) of the uniform look, and the base of the textured one.
SKIN_ALBEDO = (0.78, 0.57, 0.47)

# uniform look: radiance coefficients = ambient (shading UNIFORM_AMBIENT everywhere) + a distant
# light of strength UNIFORM_KEY from UNIFORM_KEY_DIR (camera frame, toward the light), projected on
# order-2 SH. Shading runs from about 0.5 (facing away) to 1.1 (facing the light): no clipping.
UNIFORM_AMBIENT = 0.45
UNIFORM_KEY = 0.65
UNIFORM_KEY_DIR = (-0.35, 0.45, 0.82)

# textured look: a hard key from the right (the side the head turns to at positive yaw), above and
# in front (camera frame, toward the light), warm; a soft fill (ambient plus a little from above) in
# cooler light. At yaw 0 the nose casts its shadow on the cheek at image left.
KEY_DIR = (0.62, 0.42, 0.66)
KEY_RGB = (0.85, 0.80, 0.74)
FILL_AMBIENT_RGB = (0.30, 0.32, 0.35)
FILL_TOP = 0.12  # order-2 SH light from straight above, strength
SHADOW_OFFSET_MM = 0.3  # shadow rays start this far off the surface (the mesh is faceted under smooth normals)

# Procedural albedo of the textured look (linear RGB offsets from SKIN_ALBEDO).
ALBEDO_SEED = 16
ALBEDO_WAVES = 6  # sinusoids of position, random directions, wavelengths in ALBEDO_WAVELENGTH_MM
ALBEDO_WAVELENGTH_MM = (35.0, 90.0)
# Each wave scales the skin's brightness by up to this fraction and moves its colour toward red
# (REDNESS_RGB) by up to this multiple: blotchy, not patterned, skin.
ALBEDO_WAVE_BRIGHTNESS = 0.04
ALBEDO_WAVE_REDNESS = 0.6
REDNESS_RGB = (0.05, -0.02, -0.025)
CHEEK_FLUSH_RGB = (0.06, -0.03, -0.02)
CHEEK_LANDMARKS = (50, 280)  # MediaPipe: the right and left cheek
CHEEK_SIGMA_MM = 18.0
LIPS_RGB = (0.60, 0.30, 0.29)
BROWS_RGB = (0.30, 0.21, 0.16)

# The frontal render the landmarks are read from: big enough for MediaPipe's crop pass.
FRONTAL_SIZE = 1024
FRONTAL_FILL = 0.95  # of the whole scan (head and shoulders): the scale is not known yet


# --------------------------------------------------------------------------- camera and surface

def scan_camera(framed: np.ndarray, yaw_deg: float, size: int, fill: float = FRAME_FILL) -> Camera:
    """A square photo's camera looking at ``framed`` (N, 3) points (the scan's frame) turned by
    ``yaw_deg``: their bounding box spans ``fill`` of the side (:meth:`Camera.look_at_face`)."""
    rot = euler_to_matrix(torch.tensor([float(yaw_deg)]), torch.zeros(1), torch.zeros(1))[0]
    cam = Camera.from_image_size(size, size, DEFAULT_FOV, rotation=rot, dtype=torch.float64)
    return cam.look_at_face(torch.as_tensor(framed, dtype=torch.float64)[None], fill=fill)


@dataclass
class Surface:
    """What a camera sees of the scan, per covered pixel (packed, ``frags.pixels`` order):
    ``points`` (N, 3) and ``normals`` (N, 3) unit, camera frame (mm or the scan's units);
    ``vertex_ids`` (N, 3) and ``bary`` (N, 3) for per-vertex attributes."""

    frags: object
    points: torch.Tensor
    normals: torch.Tensor
    vertex_ids: torch.Tensor
    bary: torch.Tensor

    def image(self, values: torch.Tensor, background) -> torch.Tensor:
        """(N, C) packed values -> (H, W, C), ``background`` (C,) elsewhere."""
        img = self.frags.scatter(values)[0]
        bg = torch.as_tensor(background, dtype=img.dtype)
        return torch.where(self.frags.mask[0, ..., None], img, bg)

    def per_vertex(self, values: np.ndarray) -> torch.Tensor:
        """(V, C) per-vertex values interpolated at the covered pixels: (N, C)."""
        v = torch.as_tensor(values, dtype=self.bary.dtype)
        return (v[self.vertex_ids] * self.bary[..., None]).sum(1)


def see(renderer: Renderer, vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, camera: Camera,
        height: int, width: int, intrinsics: Optional[torch.Tensor] = None) -> Surface:
    """Rasterise the scan (``vertices`` (V, 3) in its frame) with ``camera`` (its intrinsics, or
    ``intrinsics`` (4,) for another image of the same camera frame, e.g. a crop)."""
    rot, t = camera.rotation[0].to(torch.float64), camera.translation[0].to(torch.float64)
    verts_cam = torch.as_tensor(vertices, dtype=torch.float64) @ rot.T + t
    normals_cam = torch.as_tensor(normals, dtype=torch.float64) @ rot.T
    k = (camera.intrinsics if intrinsics is None else torch.as_tensor(intrinsics).reshape(1, 4)).to(torch.float64)
    tris = torch.as_tensor(triangles, dtype=torch.int64)
    with torch.no_grad():
        frags = renderer.rasterize(verts_cam[None], tris, k, height, width)
        points = renderer.interpolate(verts_cam[None], frags, packed=True)
        n = F.normalize(renderer.interpolate(normals_cam[None], frags, packed=True), dim=-1)
    return Surface(frags, points, n, tris[frags.pix_tri], frags.pix_bary.to(torch.float64))


def surface_maps(reference: ScanReference, camera: Camera, intrinsics, size: int,
                 renderer: Optional[Renderer] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scan seen through ``camera``'s frame with ``intrinsics`` (4,) at ``size`` (for example a fit's
    crop), from one rasterisation: ((S, S, 3) its exact unit normals, camera frame, +z toward the camera;
    (S, S) its depth ``d = -z``, mm after :func:`make_reference`, 0 where uncovered; (S, S) bool covered).
    No antialiasing: each pixel is its centre's surface point."""
    surf = see(renderer or Renderer("cpu"), reference.vertices, reference.triangles, reference.normals, camera,
               size, size, intrinsics)
    return (surf.image(surf.normals, (0.0, 0.0, 0.0)).numpy(), -surf.image(surf.points[:, 2:3], (0.0,))[..., 0].numpy(),
            surf.frags.mask[0].numpy())


def normal_map(reference: ScanReference, camera: Camera, intrinsics, size: int,
               renderer: Optional[Renderer] = None) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`surface_maps` without the depth: ((S, S, 3) normals, (S, S) bool covered)."""
    normals, _, covered = surface_maps(reference, camera, intrinsics, size, renderer)
    return normals, covered


# --------------------------------------------------------------------------- looks

def uniform_light(dtype=torch.float64) -> torch.Tensor:
    """(1, 9, 3) the uniform look's light (module docstring), grey."""
    c = torch.zeros(1, 9, 3, dtype=dtype)
    c[0, 0, :] = UNIFORM_AMBIENT * UNIFORM_C0
    key = F.normalize(torch.tensor(UNIFORM_KEY_DIR, dtype=dtype), dim=0)
    c[0] += UNIFORM_KEY * sh_basis(key)[:, None]
    return c


def _fill_light(dtype=torch.float64) -> torch.Tensor:
    c = torch.zeros(1, 9, 3, dtype=dtype)
    c[0, 0, :] = torch.tensor(FILL_AMBIENT_RGB, dtype=dtype) * UNIFORM_C0
    c[0] += FILL_TOP * sh_basis(torch.tensor([0.0, 1.0, 0.0], dtype=dtype))[:, None]
    return c


def lit_by_key(surface: Surface, key_dir: torch.Tensor, scene) -> torch.Tensor:
    """(N,) bool: the covered pixels' surface points see the distant light ``key_dir`` (camera frame,
    toward the light; ``scene`` the scan in the camera frame): facing it and no surface in the way."""
    import open3d as o3d
    facing = (surface.normals @ key_dir) > 0
    origin = surface.points + SHADOW_OFFSET_MM * surface.normals
    rays = torch.cat([origin, key_dir.expand_as(origin)], 1).numpy().astype(np.float32)
    blocked = scene.test_occlusions(o3d.core.Tensor(rays)).numpy().astype(bool)
    return facing & torch.from_numpy(~blocked)


@dataclass
class ScanPhoto:
    """One rendered photo: ``image`` (H, W, 3) float32 linear in [0, 1]; ``camera`` the scan's frame (mm)
    -> camera (photo intrinsics); ``look``; ``yaw_deg``."""

    image: np.ndarray
    camera: Camera
    look: str
    yaw_deg: float


def render_photo(reference: ScanReference, look: str, yaw_deg: float, size: int,
                 albedo: Optional[np.ndarray] = None, renderer: Optional[Renderer] = None) -> ScanPhoto:
    """The scan as a ``size`` x ``size`` photo in ``look`` at ``yaw_deg``; ``albedo`` (V, 3) per vertex
    for the textured look (default :func:`procedural_albedo` needs the reference's landmarks)."""
    if look not in LOOKS:
        raise ValueError(f"look must be one of {LOOKS}, not {look!r}")
    renderer = renderer or Renderer("cpu")
    framed = reference.vertices[np.linalg.norm(reference.vertices, axis=1) < FRAME_RADIUS_MM]
    camera = scan_camera(framed, yaw_deg, size)
    big = size * SUPERSAMPLE
    k_big = camera.intrinsics * SUPERSAMPLE  # pixel centres line up after the area shrink
    surf = see(renderer, reference.vertices, reference.triangles, reference.normals, camera, big, big, k_big[0])
    if look == "uniform":
        colour = torch.tensor(SKIN_ALBEDO, dtype=torch.float64) * sh_irradiance(surf.normals[None], uniform_light())[0]
    else:
        if albedo is None:
            raise ValueError("the textured look needs a per-vertex albedo (procedural_albedo)")
        rot, t = camera.rotation[0].numpy(), camera.translation[0].numpy()
        scene = raycasting_scene(reference.vertices @ rot.T + t, reference.triangles)
        key = F.normalize(torch.tensor(KEY_DIR, dtype=torch.float64), dim=0)
        lit = lit_by_key(surf, key, scene)
        direct = (surf.normals @ key).clamp_min(0.0) * lit
        shading = sh_irradiance(surf.normals[None], _fill_light())[0] + direct[:, None] * torch.tensor(KEY_RGB)
        colour = surf.per_vertex(albedo) * shading
    img = surf.image(colour.clamp(0.0, 1.0), BACKGROUND).numpy().astype(np.float32)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return ScanPhoto(np.clip(img, 0.0, 1.0), camera, look, float(yaw_deg))


# --------------------------------------------------------------------------- what a frontal render tells

@dataclass
class FrontalView:
    """Read off a frontal render of the scan: ``landmarks`` (478, 3) MediaPipe's points cast onto the
    scan (file units, NaN where the ray missed); ``regions`` (V, R) per vertex, the fraction of its
    footprint in the render that each of :data:`landmarks.REGION_NAMES` covers (zeros: unseen)."""

    landmarks: np.ndarray
    regions: np.ndarray


def read_frontal_view(scan: ScanMesh, renderer: Optional[Renderer] = None) -> FrontalView:
    """Render the scan from the front (uniform look), run MediaPipe, cast its points back onto the scan."""
    import open3d as o3d
    from landmarks import FaceMeshDetector, NoFaceError

    renderer = renderer or Renderer("cpu")
    camera = scan_camera(scan.vertices, 0.0, FRONTAL_SIZE, FRONTAL_FILL)
    surf = see(renderer, scan.vertices, scan.triangles, scan.normals, camera, FRONTAL_SIZE, FRONTAL_SIZE)
    shade = sh_irradiance(surf.normals[None], uniform_light())[0]
    image = surf.image((torch.tensor(SKIN_ALBEDO, dtype=torch.float64) * shade).clamp(0, 1), BACKGROUND).numpy()
    with FaceMeshDetector() as det:
        faces = det.detect(image.astype(np.float32))
    if not faces:
        raise NoFaceError("MediaPipe found no face on the frontal render of the scan")
    face = faces[0]
    # rays from the camera centre through the landmarks' (sub-pixel) positions, in the scan's frame
    rot, t = camera.rotation[0], camera.translation[0]
    uv = torch.as_tensor(face.points[:, :2], dtype=torch.float64)[None]
    dirs = pixel_to_camera(uv, torch.ones(1, uv.shape[1], dtype=torch.float64), camera.intrinsics)[0] @ rot
    origin = (-rot.T @ t).expand_as(dirs)
    rays = torch.cat([origin, F.normalize(dirs, dim=-1)], 1).numpy().astype(np.float32)
    hit = raycasting_scene(scan.vertices, scan.triangles).cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy().astype(np.float64)
    landmarks = rays[:, :3].astype(np.float64) + t_hit[:, None] * rays[:, 3:].astype(np.float64)
    landmarks[~np.isfinite(t_hit)] = np.nan

    labels = region_label_map(face, FRONTAL_SIZE, FRONTAL_SIZE).reshape(-1)[surf.frags.pixels.numpy()]
    regions = np.zeros((len(scan.vertices), len(REGION_NAMES)))
    np.add.at(regions, (surf.vertex_ids.numpy().reshape(-1), np.repeat(labels, 3)), surf.bary.numpy().reshape(-1))
    total = regions.sum(1, keepdims=True)
    regions = np.divide(regions, total, out=np.zeros_like(regions), where=total > 0)
    return FrontalView(landmarks, regions)


def procedural_albedo(reference: ScanReference, regions: np.ndarray, seed: int = ALBEDO_SEED) -> np.ndarray:
    """(V, 3) per-vertex skin albedo (linear RGB) of the textured look: :data:`SKIN_ALBEDO` plus smooth
    waves of colour over the surface, a flush on each cheek, lips and brows by their share of the
    frontal render's regions (``regions`` (V, R), :class:`FrontalView`)."""
    rng = np.random.default_rng(seed)
    x = reference.vertices
    albedo = np.tile(np.asarray(SKIN_ALBEDO, np.float64), (len(x), 1))
    dirs = rng.normal(size=(ALBEDO_WAVES, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    wavelengths = rng.uniform(*ALBEDO_WAVELENGTH_MM, size=ALBEDO_WAVES)
    phases = rng.uniform(0, 2 * math.pi, size=ALBEDO_WAVES)
    brightness = rng.uniform(-1, 1, size=ALBEDO_WAVES) * ALBEDO_WAVE_BRIGHTNESS
    redness = rng.uniform(-1, 1, size=ALBEDO_WAVES) * ALBEDO_WAVE_REDNESS
    waves = np.sin(2 * math.pi * (x @ dirs.T) / wavelengths + phases)  # (V, W)
    albedo = albedo * (1.0 + waves @ brightness)[:, None] + (waves @ redness)[:, None] * np.asarray(REDNESS_RGB)
    if reference.landmarks is not None:
        for k in CHEEK_LANDMARKS:
            if np.isfinite(reference.landmarks[k]).all():
                r2 = ((x - reference.landmarks[k]) ** 2).sum(1)
                albedo += np.exp(-r2 / (2 * CHEEK_SIGMA_MM ** 2))[:, None] * np.asarray(CHEEK_FLUSH_RGB)
    for name, rgb in (("lips", LIPS_RGB), ("brows", BROWS_RGB)):
        w = regions[:, REGION_NAMES.index(name)][:, None]
        albedo = (1 - w) * albedo + w * np.asarray(rgb)
    return np.clip(albedo, 0.0, 1.0)


def region_share(regions: np.ndarray) -> Dict[str, int]:
    """How many vertices each region mostly covers (a check that the frontal view found lips and brows)."""
    best = np.where(regions.sum(1) > 0, regions.argmax(1), -1)
    return {name: int((best == i).sum()) for i, name in enumerate(REGION_NAMES)}
