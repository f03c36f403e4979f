"""Meshes to OBJ (with UVs, MTL and texture PNG) and PLY (vertex colours and normals), through trimesh.

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
import trimesh
from PIL import Image

from ..mesh import Mesh

PathLike = Union[str, os.PathLike]


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

    Returns ``(vertices (V', 3), uvs (V', 2), triangles (F, 3), source_vertex (V',))``;
    formats with one index per corner (trimesh, PLY) need this.
    """
    pairs = np.stack([mesh.triangles.reshape(-1), mesh.uv_triangles.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return (mesh.vertices[unique[:, 0]], mesh.uvs[unique[:, 1]], inverse.reshape(-1, 3).astype(np.int64),
            unique[:, 0])


def to_trimesh(mesh: Mesh, name: str = "material_0") -> trimesh.Trimesh:
    """A trimesh.Trimesh (process=False: vertex order kept) with UVs, texture and colours where present."""
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
    """Write ``path`` (.obj) with UVs when the mesh has them, plus ``<stem>.mtl`` and
    ``<stem>.png`` when it has a texture. ``notice``: a licence file copied beside
    it (for meshes derived from a model whose licence asks for that)."""
    path = Path(path)
    tm = to_trimesh(mesh, name=path.stem)
    mtl_name = f"{path.stem}.mtl"
    text, files = trimesh.exchange.obj.export_obj(
        tm, include_normals=True, include_color=mesh.uvs is None, include_texture=mesh.texture is not None,
        return_texture=True, mtl_name=mtl_name, header="facefit")
    targets = [path] + [path.with_name(n) for n in files]
    if notice is not None:
        targets.append(path.with_name(Path(notice).name))
    with staged_files(*targets) as tmp:
        tmp[path.name].write_text(text)
        for name, data in files.items():
            tmp[name].write_bytes(data)
        if notice is not None:
            shutil.copyfile(notice, tmp[Path(notice).name])
    return path


def save_ply(mesh: Mesh, path: PathLike, notice: Optional[PathLike] = None) -> Path:
    """Write a binary PLY with vertex normals and, when the mesh has them, vertex colours.

    PLY has no separate UV indices: the mesh is written on its own vertices
    (texture and UVs are the OBJ's job).
    """
    path = Path(path)
    colors = None if mesh.vertex_colors is None else _to_uint8(mesh.vertex_colors)
    tm = trimesh.Trimesh(mesh.vertices, mesh.triangles, vertex_normals=mesh.vertex_normals(),
                         vertex_colors=colors, process=False)
    data = trimesh.exchange.ply.export_ply(tm, encoding="binary", vertex_normal=True)
    targets = [path] + ([path.with_name(Path(notice).name)] if notice is not None else [])
    with staged_files(*targets) as tmp:
        tmp[path.name].write_bytes(data)
        if notice is not None:
            shutil.copyfile(notice, tmp[Path(notice).name])
    return path


def load_mesh(path: PathLike) -> trimesh.Trimesh:
    """Read an OBJ/PLY back without any processing (vertex order kept)."""
    try:
        return trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # trimesh raises many kinds
        raise ExportError(f"cannot read mesh {path}: {exc}") from None


def save_image(image: np.ndarray, path: PathLike) -> Path:
    """Write an (H, W, 3) or (H, W) float [0, 1] image as PNG, all-or-nothing."""
    path = Path(path)
    with staged_files(path) as tmp:
        Image.fromarray(_to_uint8(image)).save(tmp[path.name], format="PNG")
    return path


def _to_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
