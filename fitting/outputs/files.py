"""Meshes to OBJ (with UVs, MTL and texture PNG) and PLY (vertex colours and normals).

OBJ text is formatted by :mod:`morphable.obj_text` (numbers formatted a
block at a time; the layout and precision of trimesh's exporter, which this
replaced for speed); PLY is written from one numpy structured array, the
bytes of trimesh's binary writer, without importing trimesh (about a second,
most of a coarse-only run's writing).

Every writer is all-or-nothing: files are written into a temporary folder
beside the target and moved into place only when all of them are complete,
so a failure leaves nothing half-written behind. Failures raise
:class:`ExportError` with a one-line reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from morphable.obj_text import format_mtl, format_obj

from ..mesh import Mesh
from ..rendering.renderer import uv_to_grid

PathLike = Union[str, os.PathLike]


# zlib level of every PNG: level 1 encodes the 1024 x 2048 texture in about half the time of
# Pillow's default 6 (0.14 s against 0.31 s) for a file about a quarter larger (0.42 MB against
# 0.33 MB), a small share of a result whose fine.obj alone is about 32 MB.
PNG_COMPRESS_LEVEL = 1

# The texture's material: white diffuse (the texture shows as it is) and the grey ambient and
# specular (102/255) and Ns 1 of trimesh's SimpleMaterial, which the files carried before.
MTL_AMBIENT = (0.4, 0.4, 0.4)
MTL_DIFFUSE = (1.0, 1.0, 1.0)
MTL_SPECULAR = (0.4, 0.4, 0.4)
MTL_SHININESS = 1.0
FILE_HEADER = "facefit"


class ExportError(RuntimeError):
    """An output could not be written (message: one line)."""


@contextmanager
def staged_files(*targets: PathLike) -> Iterator[Dict[str, Path]]:
    """Yield temporary paths for ``targets`` (keyed by file name); move them into place on success.

    The temporary folder lives beside the first target so that the final
    moves are renames on the same file system.
    """
    paths = [Path(t) for t in targets]
    folder = paths[0].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".facefit-", dir=folder))
    except OSError as exc:
        raise ExportError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        yield {p.name: tmp / p.name for p in paths}
        for p in paths:
            os.replace(tmp / p.name, p)
    except OSError as exc:
        raise ExportError(f"cannot write {paths[0]}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def split_seams(mesh: Mesh):
    """Vertices duplicated along UV seams so that each (position, uv) pair is one vertex.

    Returns ``(vertices (V', 3), uvs (V', 2), triangles (F, 3), source_vertex (V',))``,
    the pairs sorted by (position index, uv index); formats with one index per
    corner (trimesh, PLY) need this.
    """
    source, uv_index, inverse = _corner_pairs(mesh)
    return mesh.vertices[source], mesh.uvs[uv_index], inverse.reshape(-1, 3), source


def _corner_pairs(mesh: Mesh):
    """The distinct (position index, uv index) pairs of the triangles' corners, sorted.

    Returns ``(position (P,), uv (P,), inverse (3 F,))`` with ``inverse`` each corner's pair.
    One integer key per pair makes this a 1-D unique (``np.unique(axis=0)`` on the
    (3 F, 2) pairs sorted rows as structured data: 0.7 s for the fine mesh against 0.05 s).
    """
    n_uv = np.int64(len(mesh.uvs))
    keys = mesh.triangles.reshape(-1) * n_uv + mesh.uv_triangles.reshape(-1)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique // n_uv, unique % n_uv, inverse.reshape(-1).astype(np.int64)


def colors_from_texture(mesh: Mesh) -> np.ndarray:
    """(V, 3) float [0, 1]: the mesh's texture sampled bilinearly at each vertex's UV.

    Texel centres sit at ((i + 0.5) / Wt, ...) and lookups past the edge clamp
    to it, as in the renderer's texture lookup. A vertex on a UV seam has one
    UV per side and gets the mean of its samples; a vertex no triangle uses gets 0.
    """
    if mesh.texture is None or mesh.uvs is None:
        raise ValueError("colors_from_texture needs a mesh with a texture and UVs")
    source, uv_index, _ = _corner_pairs(mesh)
    tex = torch.from_numpy(mesh.texture).permute(2, 0, 1)[None]       # (1, 3, Ht, Wt)
    grid = uv_to_grid(torch.from_numpy(mesh.uvs[uv_index]))[None, None]  # (1, 1, P, 2)
    samples = F.grid_sample(tex, grid.to(tex), mode="bilinear", padding_mode="border",
                            align_corners=False)[0, :, 0].T.double()     # (P, 3)
    n = len(mesh.vertices)
    src = torch.from_numpy(source)
    sums = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, src, samples)
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, src, torch.ones(len(source), dtype=torch.float64))
    return (sums / counts.clamp_min(1)[:, None]).numpy().astype(np.float32)


def to_trimesh(mesh: Mesh, name: str = "material_0"):
    """A trimesh.Trimesh (process=False: vertex order kept) with UVs, texture and colours where present."""
    import trimesh
    if mesh.uvs is not None:
        verts, uvs, faces, src = split_seams(mesh)
        normals = mesh.vertex_normals()[src]
        tex = None if mesh.texture is None else Image.fromarray(_to_uint8(mesh.texture))
        material = trimesh.visual.material.SimpleMaterial(image=tex, diffuse=(255, 255, 255, 255), name=name) if tex else None
        visual = trimesh.visual.TextureVisuals(uv=uvs, material=material) if tex else \
            trimesh.visual.TextureVisuals(uv=uvs)
        return trimesh.Trimesh(verts, faces, vertex_normals=normals, visual=visual, process=False)
    colors = None if mesh.vertex_colors is None else _to_uint8(mesh.vertex_colors)
    return trimesh.Trimesh(mesh.vertices, mesh.triangles, vertex_normals=mesh.vertex_normals(),
                           vertex_colors=colors, process=False)


def save_obj(mesh: Mesh, path: PathLike, notice: Optional[PathLike] = None) -> Path:
    """Write ``path`` (.obj) with normals, UVs when the mesh has them (vertices split
    along UV seams: one index per corner), vertex colours in the ``v`` lines when it
    has colours and no UVs, plus ``<stem>.mtl`` and ``<stem>.png`` when it has a
    texture. ``notice``: a licence file copied beside it (for meshes derived from a
    model whose licence asks for that)."""
    path = Path(path)
    stem = path.stem
    textured = mesh.texture is not None and mesh.uvs is not None
    if mesh.uvs is not None:
        verts, uvs, faces, src = split_seams(mesh)
        normals, colors = mesh.vertex_normals()[src], None
    else:
        verts, uvs, faces = mesh.vertices, None, mesh.triangles
        normals = mesh.vertex_normals()
        # colours go through 8 bits, as in the PLY and as the files had them before
        colors = None if mesh.vertex_colors is None else _to_uint8(mesh.vertex_colors) / 255.0
    mtl_name, png_name = f"{stem}.mtl", f"{stem}.png"
    text = format_obj(verts, faces, normals=normals, uvs=uvs, vertex_colors=colors,
                      mtllib=mtl_name if textured else None, usemtl=stem if textured else None,
                      header=FILE_HEADER)
    targets = [path] + ([path.with_name(mtl_name), path.with_name(png_name)] if textured else [])
    if notice is not None:
        targets.append(path.with_name(Path(notice).name))
    with staged_files(*targets) as tmp:
        tmp[path.name].write_text(text, encoding="ascii")
        if textured:
            tmp[mtl_name].write_text(format_mtl(stem, MTL_AMBIENT, MTL_DIFFUSE, MTL_SPECULAR, MTL_SHININESS,
                                                texture_file=png_name, header=FILE_HEADER), encoding="ascii")
            _write_png(mesh.texture, tmp[png_name])
        if notice is not None:
            shutil.copyfile(notice, tmp[Path(notice).name])
    return path


def save_ply(mesh: Mesh, path: PathLike, notice: Optional[PathLike] = None) -> Path:
    """Write a binary little-endian PLY with vertex normals and, when the mesh has them,
    vertex colours; a textured mesh without colours gets its texture sampled at its
    UVs (:func:`colors_from_texture`).

    PLY has no separate UV indices: the mesh is written on its own vertices
    (texture and UVs are the OBJ's job).
    """
    path = Path(path)
    data = ply_bytes(mesh.vertices, mesh.triangles, mesh.vertex_normals(), ply_colors(mesh))
    targets = [path] + ([path.with_name(Path(notice).name)] if notice is not None else [])
    with staged_files(*targets) as tmp:
        tmp[path.name].write_bytes(data)
        if notice is not None:
            shutil.copyfile(notice, tmp[Path(notice).name])
    return path


def ply_colors(mesh: Mesh) -> Optional[np.ndarray]:
    """(V, 3) or (V, 4) uint8: the colours :func:`save_ply` writes for ``mesh`` (its vertex colours, else its
    texture sampled at its UVs), or None."""
    colors = mesh.vertex_colors
    if colors is None and mesh.texture is not None and mesh.uvs is not None:
        colors = colors_from_texture(mesh)
    return None if colors is None else _to_uint8(colors)


def ply_bytes(vertices, triangles, normals, colors: Optional[np.ndarray] = None) -> bytes:
    """A binary little-endian PLY: float32 positions and normals, uchar RGBA colours where given
    ((V, 3) colours get alpha 255), triangles as ``list uchar int`` (trimesh's layout and bytes).

    Args:
        vertices, normals: (V, 3); triangles: (F, 3) 0-based; colors: (V, 3|4) uint8 or None.
    """
    vertices, normals = np.asarray(vertices), np.asarray(normals)
    triangles = np.asarray(triangles)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [(c, "u1") for c in ("red", "green", "blue", "alpha")]
    vert = np.empty(len(vertices), dtype=fields)
    for i, axis in enumerate("xyz"):
        vert[axis] = vertices[:, i]
        vert["n" + axis] = normals[:, i]
    if colors is not None:
        colors = np.asarray(colors, np.uint8)
        for i, c in enumerate(("red", "green", "blue")):
            vert[c] = colors[:, i]
        vert["alpha"] = colors[:, 3] if colors.shape[1] == 4 else 255
    face = np.empty(len(triangles), dtype=[("count", "u1"), ("index", "<i4", (3,))])
    face["count"] = 3
    face["index"] = triangles
    header = ["ply", "format binary_little_endian 1.0", "comment facefit", f"element vertex {len(vert)}",
              *[f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in fields],
              f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vert.tobytes() + face.tobytes()


def load_mesh(path: PathLike):
    """Read an OBJ/PLY back without any processing (vertex order kept): a trimesh.Trimesh."""
    import trimesh
    try:
        return trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # trimesh raises many kinds
        raise ExportError(f"cannot read mesh {path}: {exc}") from None


def save_image(image: np.ndarray, path: PathLike) -> Path:
    """Write an (H, W, 3) or (H, W) float [0, 1] image as PNG, all-or-nothing."""
    path = Path(path)
    with staged_files(path) as tmp:
        _write_png(image, tmp[path.name])
    return path


def _write_png(image: np.ndarray, path: Path) -> None:
    """Encode an (H, W, 3) or (H, W) float [0, 1] (or uint8) image once, straight into ``path``."""
    Image.fromarray(_to_uint8(image)).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
