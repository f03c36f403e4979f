"""``animation.glb``: a fitted identity with its expressions as glTF 2.0 morph targets and the fit's
per-frame expression weights and head pose as an animation (issue 18, item 3).

The document (built with pygltflib, written as one binary ``.glb``):

- one mesh, ``identity``: the neutral mesh (POSITION, NORMAL; TEXCOORD_0 and a base-colour texture
  when the mesh has a texture, COLOR_0 when it has vertex colours, otherwise a flat grey
  material), with one morph target per expression: the POSITION deltas of the expression's
  blendshape from the neutral (the model is linear, so ``neutral + sum_k w_k delta_k`` is exactly
  the fitted face). The targets' names are in ``mesh.extras.targetNames`` (what Blender and
  three.js read as shape-key / morph names). The targets carry no NORMAL deltas: a viewer shades
  an expression with the neutral's normals (Blender recomputes them from the shape);
- node 0, ``head``, holds the mesh; its rotation and translation are the head pose, node 1 a
  perspective camera at the origin (the first view's field of view);
- one animation, ``fit``: per key, the 53 weights (path ``weights``), the rotation (unit
  quaternion) and the translation of ``head``, all sharing one time accessor.

Units and axes: glTF's unit is the metre, so every length is the toolkit's millimetres times
``metres_per_mm``. glTF's axes (+Y up, +Z out of the asset's front, +X its left: right-handed)
are the model frame's (+x the subject's left, +y up, +z out of the face), so vertices need no
axis change. The head pose is the fit's model -> camera transform ``X_cam = R X + t``; the camera
frame (+x right, +y up, looking down -z) is also a glTF camera's, so the node's TRS is ``R`` as a
quaternion and ``t`` in metres, and the camera node sits at the origin unrotated: seen through it
the animation shows the head as the photos or the video did.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..mesh import Mesh
from ..rotation import matrix_to_quaternion
from .files import PNG_COMPRESS_LEVEL, _to_uint8, split_seams

# glTF's enums (the spec's numbers; pygltflib names the same values)
_FLOAT, _UNSIGNED_INT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR_FILTER, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


@dataclass(frozen=True)
class GlbSettings:
    """How ``animation.glb`` is written."""

    # glTF's unit is the metre (glTF 2.0 spec, "Coordinate System and Units"); the toolkit's is the mm.
    metres_per_mm: float = 1e-3
    # Photos have no time: one key per photo, this many seconds apart, with STEP interpolation
    # (each photo's face held for the interval; interpolating between unrelated photos means nothing).
    photo_spacing_s: float = 1.0
    # The flat material of a mesh without texture or colours: light grey (linear RGBA), not metallic,
    # rough (skin shows no sharp highlights); the mesh is all the file shows then.
    base_color: Tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    roughness: float = 0.8
    # The camera's near plane (m): well short of a face at arm's length (~0.3 m and more).
    znear_m: float = 0.01


def keyframe_times(times_s: Sequence[Optional[float]], settings: GlbSettings = GlbSettings()) -> Tuple[np.ndarray, str]:
    """The animation's key times (N,) in seconds and its interpolation for N views.

    Where every view has a time and the times strictly increase (one video's frames), the keys
    are at those times with LINEAR interpolation (frames left out, e.g. without a face, are
    bridged). Otherwise (photos, or several videos whose times restart) key ``i`` is at
    ``i * settings.photo_spacing_s`` with STEP interpolation.
    """
    n = len(times_s)
    if n and all(t is not None for t in times_s):
        t = np.asarray(times_s, np.float64)
        if n == 1 or bool(np.all(np.diff(t) > 0)):
            return t.astype(np.float32), "LINEAR"
    return (np.arange(n, dtype=np.float64) * settings.photo_spacing_s).astype(np.float32), "STEP"


def continuous_quaternions(rotations: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations -> (N, 4) ``(x, y, z, w)`` quaternions with each one's sign chosen so
    that consecutive ones have a non-negative dot product (q and -q are the same rotation; the
    sign decides which way an interpolation turns, and a flip would spin the head the long way)."""
    q = matrix_to_quaternion(torch.as_tensor(np.asarray(rotations), dtype=torch.float64)).numpy()
    if len(q) > 1:
        steps = np.where(np.sum(q[1:] * q[:-1], axis=1) < 0, -1.0, 1.0)
        q[1:] *= np.cumprod(steps)[:, None]
    return q


class _Buffer:
    """The glb's one binary buffer, assembled from views (each 4-byte aligned) and their accessors."""

    def __init__(self, gltf):
        self.gltf = gltf
        self.chunks, self.size = [], 0

    def view(self, data: bytes, target: Optional[int] = None) -> int:
        import pygltflib
        pad = -self.size % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.size += pad
        self.gltf.bufferViews.append(pygltflib.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data),
                                                          target=target))
        self.chunks.append(data)
        self.size += len(data)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, target: Optional[int] = None, bounds: bool = False) -> int:
        """An accessor over ``array`` (N,) or (N, C) float32 / uint32, in a view of its own.
        ``bounds``: with per-component ``min`` / ``max`` (required for POSITION and animation input)."""
        import pygltflib
        array = np.ascontiguousarray(array)
        component = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint32): _UNSIGNED_INT}[array.dtype]
        width = 1 if array.ndim == 1 else array.shape[1]
        flat = array.reshape(len(array), width)
        extra = {}
        if bounds:
            extra = dict(min=flat.min(0).tolist(), max=flat.max(0).tolist())
        self.gltf.accessors.append(pygltflib.Accessor(bufferView=self.view(array.tobytes(), target),
                                                      componentType=component, count=len(array),
                                                      type=_TYPES[width], **extra))
        return len(self.gltf.accessors) - 1

    def blob(self) -> bytes:
        data = b"".join(self.chunks)
        return data + b"\0" * (-len(data) % 4)


def animation_glb(mesh: Mesh, exp_deltas: np.ndarray, target_names: Sequence[str], times_s: Sequence[Optional[float]],
                  weights: np.ndarray, rotations: np.ndarray, translations: np.ndarray,
                  intrinsics: Optional[np.ndarray] = None, settings: GlbSettings = GlbSettings()):
    """The glTF document (a ``pygltflib.GLTF2`` with its binary blob set) of the module doc.

    Args:
        mesh: the neutral mesh, model frame, mm.
        exp_deltas: (K, V, 3) mm, each expression's blendshape minus the neutral, on ``mesh``'s vertices.
        target_names: K names, the targets' (for the ICT model: ARKit's, :mod:`morphable.arkit`).
        times_s: N views' times in seconds or None (:func:`keyframe_times` makes the keys).
        weights: (N, K) expression weights; clipped to [0, 1], the range glTF viewers expect.
        rotations: (N, 3, 3) and translations: (N, 3) mm, model -> camera per view.
        intrinsics: (4,) ``fx, fy, cx, cy`` px of the first view's photo (principal point at the
            centre): the camera node's field of view; None: no camera.
    Raises ValueError when the shapes disagree.
    """
    import pygltflib

    exp_deltas, weights = np.asarray(exp_deltas), np.asarray(weights)
    rotations, translations = np.asarray(rotations), np.asarray(translations)
    k, n = len(target_names), len(times_s)
    if exp_deltas.shape != (k, len(mesh.vertices), 3):
        raise ValueError(f"exp_deltas must be ({k}, {len(mesh.vertices)}, 3), got {exp_deltas.shape}")
    if weights.shape != (n, k) or rotations.shape != (n, 3, 3) or translations.shape != (n, 3) or n == 0:
        raise ValueError(f"{n} views: weights {weights.shape}, rotations {rotations.shape}, "
                         f"translations {translations.shape} do not match ({k} targets)")
    scale = settings.metres_per_mm

    textured = mesh.texture is not None and mesh.uvs is not None
    if textured:  # glTF has one index per corner: vertices split along UV seams, deltas follow their source
        vertices, uvs, triangles, source = split_seams(mesh)
        normals, deltas = mesh.vertex_normals()[source], exp_deltas[:, source]
        colors = None if mesh.vertex_colors is None else mesh.vertex_colors[source]
        # u on ``tiles`` unit tiles side by side (ICT: 2) -> one [0, 1] atlas; glTF's v runs down the image
        tiles = max(1, math.ceil(float(uvs[:, 0].max())))
        texcoord = np.stack([uvs[:, 0] / tiles, 1.0 - uvs[:, 1]], 1)
    else:
        vertices, triangles, normals, deltas = mesh.vertices, mesh.triangles, mesh.vertex_normals(), exp_deltas
        colors = mesh.vertex_colors

    gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator="facefit"))
    buf = _Buffer(gltf)
    f32 = np.float32
    attributes = pygltflib.Attributes(
        POSITION=buf.accessor((vertices * scale).astype(f32), _ARRAY_BUFFER, bounds=True),
        NORMAL=buf.accessor(normals.astype(f32), _ARRAY_BUFFER))
    if textured:
        attributes.TEXCOORD_0 = buf.accessor(texcoord.astype(f32), _ARRAY_BUFFER)
    if colors is not None:
        attributes.COLOR_0 = buf.accessor(np.clip(colors, 0, 1).astype(f32), _ARRAY_BUFFER)
    indices = buf.accessor(triangles.reshape(-1).astype(np.uint32), _ELEMENT_ARRAY_BUFFER)
    # one POSITION accessor per target (K of them; glTF has no (K, V, 3) accessor)
    targets = [pygltflib.Attributes(POSITION=buf.accessor(d, _ARRAY_BUFFER, bounds=True))
               for d in (deltas * scale).astype(f32)]

    pbr = pygltflib.PbrMetallicRoughness(metallicFactor=0.0, roughnessFactor=settings.roughness)
    if textured:
        png = io.BytesIO()
        Image.fromarray(_to_uint8(mesh.texture)).save(png, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        gltf.images.append(pygltflib.Image(bufferView=buf.view(png.getvalue()), mimeType="image/png"))
        gltf.samplers.append(pygltflib.Sampler(magFilter=_LINEAR_FILTER, minFilter=_LINEAR_MIPMAP_LINEAR,
                                               wrapS=_CLAMP_TO_EDGE, wrapT=_CLAMP_TO_EDGE))
        gltf.textures.append(pygltflib.Texture(sampler=0, source=0))
        pbr.baseColorTexture = pygltflib.TextureInfo(index=0)
    elif colors is None:
        pbr.baseColorFactor = list(settings.base_color)
    # alphaCutoff applies to MASK only; pygltflib's default 0.5 would be written for OPAQUE too
    gltf.materials.append(pygltflib.Material(name="face", pbrMetallicRoughness=pbr, alphaCutoff=None))
    gltf.meshes.append(pygltflib.Mesh(
        name="identity", weights=[0.0] * k, extras={"targetNames": list(target_names)},
        primitives=[pygltflib.Primitive(attributes=attributes, indices=indices, material=0, targets=targets)]))

    # the animation: one key per view
    times, interpolation = keyframe_times(times_s, settings)
    quats = continuous_quaternions(rotations).astype(f32)
    trans = (translations * scale).astype(f32)
    w = np.clip(weights, 0.0, 1.0).astype(f32)
    time_acc = buf.accessor(times, bounds=True)
    outputs = {"weights": buf.accessor(w.reshape(-1)), "rotation": buf.accessor(quats),
               "translation": buf.accessor(trans)}
    gltf.animations.append(pygltflib.Animation(
        name="fit", extras={"keys": "video frame times" if interpolation == "LINEAR"
                            else f"one per photo, {settings.photo_spacing_s:g} s apart"},
        samplers=[pygltflib.AnimationSampler(input=time_acc, output=acc, interpolation=interpolation)
                  for acc in outputs.values()],
        channels=[pygltflib.AnimationChannel(sampler=i, target=pygltflib.AnimationChannelTarget(node=0, path=path))
                  for i, path in enumerate(outputs)]))

    # the head at the first key's pose (what a viewer without animation shows), the camera at the origin
    gltf.nodes.append(pygltflib.Node(name="head", mesh=0, rotation=quats[0].tolist(), translation=trans[0].tolist()))
    nodes = [0]
    if intrinsics is not None:
        fx, fy, cx, cy = (float(x) for x in np.asarray(intrinsics).reshape(4))
        gltf.cameras.append(pygltflib.Camera(name="photo", type="perspective", perspective=pygltflib.Perspective(
            yfov=2.0 * math.atan(cy / fy), aspectRatio=(cx / fx) / (cy / fy), znear=settings.znear_m)))
        gltf.nodes.append(pygltflib.Node(name="camera", camera=0))
        nodes.append(1)
    gltf.scenes.append(pygltflib.Scene(name="fit", nodes=nodes))
    gltf.scene = 0
    gltf.extras = {"units": "m", "frame": "glTF: +Y up, +Z out of the face, +X the subject's left; "
                   "node 'head' = the fit's model -> camera pose, camera at the origin looking down -Z"}

    blob = buf.blob()
    gltf.buffers.append(pygltflib.Buffer(byteLength=len(blob)))
    gltf.set_binary_blob(blob)
    return gltf


def write_glb(gltf, path) -> Path:
    """Write ``gltf`` (with its binary blob) to ``path`` as one ``.glb``; callers stage it (atomic).
    pygltflib repacks the views on saving (each padded to 4 bytes, the image's byteLength with it)."""
    path = Path(path)
    if not gltf.save_binary(str(path)):
        raise OSError(f"pygltflib could not write {path}")
    return path
