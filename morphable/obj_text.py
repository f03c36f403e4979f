"""Fast reading of the parts of Wavefront OBJ text a morphable model needs.

The ICT model is 154 OBJ files of the same topology; only their ``v`` lines
differ. General mesh IO (export, round trips) goes through trimesh; this
reader exists because a model loader needs the raw vertex order and the
separate position/UV indices of each polygon, which a general mesh loader
merges or reorders.
"""
from __future__ import annotations

from dataclasses import dataclass
import warnings
from typing import List

import numpy as np


class ObjFormatError(ValueError):
    """An OBJ file that cannot be parsed as expected."""


def read_vertices(text: str, name: str = "<obj>") -> np.ndarray:
    """The ``v x y z`` lines of an OBJ as a (V, 3) float64 array."""
    rows = [line[2:] for line in text.splitlines() if line.startswith("v ")]
    if not rows:
        raise ObjFormatError(f"corrupt OBJ {name}: no vertex lines")
    # np.fromstring parses in C (10x faster than split + float); it stops at
    # the first token it cannot read, which the size check below catches.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flat = np.fromstring(" ".join(rows), dtype=np.float64, sep=" ")
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
