"""Fast reading of the parts of Wavefront OBJ text a morphable model needs, and fast OBJ/MTL writing.

The ICT model is 154 OBJ files of the same topology; only their ``v`` lines
differ. General mesh reading goes through trimesh; this reader exists
because a model loader needs the raw vertex order and the separate
position/UV indices of each polygon, which a general mesh loader merges or
reorders.

The writer (:func:`format_obj`, :func:`format_mtl`) formats each block of
lines (``v``, ``vn``, ``vt``, ``f``) with one ``%`` over the block's numbers
as Python scalars: trimesh's exporter formats numpy scalars one at a time
through ``str.format``, which took 3-5 s for the fine mesh (150k vertices)
against about 0.5 s here, for the same text.
"""
from __future__ import annotations

from dataclasses import dataclass
import warnings
from typing import List, Optional, Sequence

import numpy as np


class ObjFormatError(ValueError):
    """An OBJ file that cannot be parsed as expected."""


def read_vertices(text: str, name: str = "<obj>") -> np.ndarray:
    """The ``v x y z`` lines of an OBJ as a (V, 3) float64 array."""
    rows = [line[2:] for line in text.splitlines() if line.startswith("v ")]
    if not rows:
        raise ObjFormatError(f"corrupt OBJ {name}: no vertex lines")
    # np.fromstring parses in C (10x faster than split + float). On a token it cannot read,
    # numpy 1 stops there (a DeprecationWarning; the size check below catches it) and numpy 2
    # raises ValueError: both are a corrupt file.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            flat = np.fromstring(" ".join(rows), dtype=np.float64, sep=" ")
    except ValueError:
        raise ObjFormatError(f"corrupt OBJ {name}: a vertex line holds something other than numbers") from None
    if flat.size != 3 * len(rows):
        raise ObjFormatError(f"corrupt OBJ {name}: vertex lines do not all hold 3 numbers")
    if not np.all(np.isfinite(flat)):
        raise ObjFormatError(f"corrupt OBJ {name}: non-finite vertex coordinate")
    return flat.reshape(-1, 3)


@dataclass
class ObjTopology:
    """Triangulated topology of an OBJ: (F, 3) position and UV indices, (T, 2) UVs."""

    triangles: np.ndarray
    uv_triangles: np.ndarray
    uvs: np.ndarray
    polygon_of_triangle: np.ndarray  # (F,) index of the source polygon


def read_topology(text: str, name: str = "<obj>") -> ObjTopology:
    """Polygons (``f a/ta b/tb ...``) split into triangles as fans from the first corner.

    A quad (a, b, c, d) becomes (a, b, c), (a, c, d) for positions and UVs
    alike, so a triangle's UV corners always belong to its position corners.
    """
    uvs: List[str] = []
    pos_tris: List[List[int]] = []
    uv_tris: List[List[int]] = []
    poly_ids: List[int] = []
    n_poly = 0
    for line in text.splitlines():
        if line.startswith("vt "):
            uvs.append(line[3:])
        elif line.startswith("f "):
            corners = line.split()[1:]
            try:
                idx = [c.split("/") for c in corners]
                p = [int(c[0]) - 1 for c in idx]
                t = [int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in idx]
            except ValueError:
                raise ObjFormatError(f"corrupt OBJ {name}: bad face line {line.strip()!r}") from None
            if len(p) < 3:
                raise ObjFormatError(f"corrupt OBJ {name}: face with {len(p)} corners")
            for k in range(1, len(p) - 1):
                pos_tris.append([p[0], p[k], p[k + 1]])
                uv_tris.append([t[0], t[k], t[k + 1]])
                poly_ids.append(n_poly)
            n_poly += 1
    if not pos_tris:
        raise ObjFormatError(f"corrupt OBJ {name}: no faces")
    try:
        uv = np.array(" ".join(uvs).split(), dtype=np.float64).reshape(-1, 2) if uvs else np.zeros((0, 2))
    except ValueError:
        raise ObjFormatError(f"corrupt OBJ {name}: bad texture coordinate lines") from None
    return ObjTopology(np.asarray(pos_tris, np.int64), np.asarray(uv_tris, np.int64), uv,
                       np.asarray(poly_ids, np.int64))


# Decimals of every float written: what trimesh's exporter wrote, so files keep their precision.
# 1e-8 mm is far below a float32 vertex's own resolution (about 1e-5 mm at 100 mm).
OBJ_DECIMALS = 8
_FLOAT = f"%.{OBJ_DECIMALS}f"


def format_rows(keyword: str, values: np.ndarray, field: str = _FLOAT) -> str:
    """``keyword f0 f1 ...`` lines, one per row of ``values`` (N, K).

    ``field`` formats one space-separated field and may take several numbers
    (``"%d/%d"``): a row holds K / (numbers per field) fields. One ``%`` over
    the whole block: the numbers go in as Python scalars (``tolist``), whose
    formatting is several times faster than numpy scalars'.
    """
    values = np.asarray(values)
    per_field = field.count("%")
    if values.ndim != 2 or values.shape[1] % per_field:
        raise ValueError(f"expected (N, K) values for {keyword!r} lines with K a multiple of {per_field}, "
                         f"got shape {values.shape}")
    n, k = values.shape
    if n == 0:
        return ""
    line = keyword + f" {field}" * (k // per_field) + "\n"
    return (line * n) % tuple(values.ravel().tolist())


def format_obj(vertices: np.ndarray, faces: np.ndarray, *, normals: Optional[np.ndarray] = None,
               uvs: Optional[np.ndarray] = None, vertex_colors: Optional[np.ndarray] = None,
               mtllib: Optional[str] = None, usemtl: Optional[str] = None,
               header: Optional[str] = None) -> str:
    """OBJ text of a triangle mesh with one index per corner (``f a/a/a``, as trimesh writes it).

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) 0-based indices into every per-vertex array below.
        normals: (V, 3) vertex normals (``vn`` lines), or None.
        uvs: (V, 2) texture coordinates, v up (``vt`` lines), or None.
        vertex_colors: (V, 3) floats in [0, 1] appended to each ``v`` line
            (the common ``v x y z r g b`` extension), or None.
        mtllib, usemtl: the material library file and material name, or None.
        header: a comment for the first line, or None.
    Returns:
        The text, lines in the order ``# header``, ``mtllib``, ``usemtl``,
        ``v``, ``vn``, ``vt``, ``f`` and a blank last line; floats with
        :data:`OBJ_DECIMALS` decimals.
    """
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertex_colors is not None:
        vertices = np.concatenate([vertices.astype(np.float64), np.asarray(vertex_colors, np.float64)], axis=1)
    parts = [f"# {header}\n" if header is not None else "",
             f"mtllib {mtllib}\n" if mtllib is not None else "",
             f"usemtl {usemtl}\n" if usemtl is not None else "",
             format_rows("v", vertices)]
    corner = "%d"
    if normals is not None:
        parts.append(format_rows("vn", normals))
    if uvs is not None:
        parts.append(format_rows("vt", uvs))
        corner += "/%d"
    if normals is not None:
        corner += "/%d" if uvs is not None else "//%d"
    # Every attribute shares the vertex's index, so a corner's text ("7/7/7") depends on its
    # vertex only: formatted once per vertex and looked up for each of the about 6 corners a
    # vertex is in (3x faster than formatting 3 F corners of repeated integers).
    repeats = corner.count("%")
    n = len(vertices)
    corner_text = ((corner + "\n") * n) % tuple(np.repeat(np.arange(1, n + 1), repeats).tolist())
    corner_of_vertex = np.array(corner_text.split("\n")[:-1], dtype=object)
    parts.append(format_rows("f", corner_of_vertex[faces.astype(np.int64)], field="%s"))
    parts.append("\n")
    return "".join(parts)


def format_mtl(name: str, ambient: Sequence[float], diffuse: Sequence[float], specular: Sequence[float],
               shininess: float, texture_file: Optional[str] = None, header: Optional[str] = None) -> str:
    """MTL text of one material: colours are RGB floats in [0, 1], ``shininess`` the ``Ns`` exponent.

    The layout is trimesh's (``# header``, a blank line, ``newmtl``, ``Ka``,
    ``Kd``, ``Ks``, ``Ns``, ``map_Kd``; no newline after the last line).
    """
    lines = [f"newmtl {name}",
             "Ka " + " ".join([_FLOAT] * 3) % tuple(map(float, ambient)),
             "Kd " + " ".join([_FLOAT] * 3) % tuple(map(float, diffuse)),
             "Ks " + " ".join([_FLOAT] * 3) % tuple(map(float, specular)),
             f"Ns {_FLOAT}" % float(shininess)]
    if texture_file is not None:
        lines.append(f"map_Kd {texture_file}")
    return (f"# {header}\n\n" if header is not None else "") + "\n".join(lines)
