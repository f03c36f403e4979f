"""Semantic face regions rasterised from the landmark mesh.

Regions (label values in :data:`REGION_NAMES` order):

* ``skin``: inside the face oval or a triangle of the landmark mesh's inner
  part, and in none of the regions below (forehead up to the mesh's top
  edge, cheeks, chin, the sides of the nose). The triangles matter on a
  turned head: the oval's far side then runs behind the nose, and the oval
  alone would leave out the strip between it and the nose (the nose's side,
  the bridge). Triangles within :data:`CONTOUR_RINGS` edges of the oval are
  left to the oval: near the face's edge MediaPipe's mesh pokes past it.
* ``brows``: each brow's upper and lower edge joined into one polygon.
* ``eyes``: inside each eyelid loop (iris included).
* ``nose``: convex hull of MediaPipe's nose points (bridge from between the
  eyes down to the tip, plus the nostril outline) - the nose group is a
  line plus a loop, not one ordered outline, hence the hull.
* ``lips``: between the outer and inner lip loops.
* ``mouth_interior``: inside the inner lip loop (teeth, tongue, dark gap);
  empty-ish when the mouth is closed.

Regions are disjoint by construction: polygons are painted into one label
map in the order skin, nose, brows, eyes, lips, mouth_interior, each
overwriting the previous, so e.g. an eye corner that the nose hull reaches
stays ``eyes``. The masks are a partition of the face oval and the mesh
(plus whatever of the nose/brows pokes outside them, which is labelled too).

Pixel convention: pixel ``[row, col]`` is in a polygon exactly when its
centre ``(col + 0.5, row + 0.5)`` is (``skimage.draw.polygon`` on float
vertices, so sub-pixel landmark positions are honoured).
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.draw import polygon as draw_polygon

from . import indices as I
from .detector import FaceLandmarks

__all__ = ["REGION_NAMES", "SKIN_REGIONS", "CONTOUR_RINGS", "region_label_map", "region_masks", "region_label_maps_torch",
           "region_polygons", "in_regions"]

REGION_NAMES: tuple[str, ...] = ("background", "skin", "brows", "eyes", "nose", "lips", "mouth_interior")
#: The regions whose reflectance is roughly Lambertian skin: shape from shading's mask and the texture's
#: source. The eyes and the mouth's interior are not skin (wet, glossy, or a hole).
SKIN_REGIONS: tuple[str, ...] = ("skin", "nose", "lips", "brows")
"""Label ``k`` of :func:`region_label_map` is region ``REGION_NAMES[k]``; 0 = not face."""


def _brow_polygon(uv: np.ndarray, chains) -> np.ndarray:
    """Join the two open brow polylines into one closed outline.

    Both chains run temple -> nose, so one is reversed; checking the end
    distances anyway keeps the outline simple (non self-crossing) even if a
    future MediaPipe reorders its edges.
    """
    a = uv[list(chains[0])]
    b = uv[list(chains[1])]
    straight = np.linalg.norm(a[-1] - b[0]) + np.linalg.norm(b[-1] - a[0])
    crossed = np.linalg.norm(a[-1] - b[-1]) + np.linalg.norm(b[0] - a[0])
    return np.concatenate([a, b[::-1] if crossed < straight else b])


CONTOUR_RINGS = 2
"""Mesh triangles with a point this many edges or fewer from the face oval are not filled: on frontal
photos those pokes past the oval were background (up to 2200 px on a 1000 px photo), and without
them no frontal photo of ../shared/faces (nor the astronaut) gains a pixel over the oval, while the
45-degree one keeps about 87 % of what the whole mesh adds (15 100 of 17 200 px)."""
_INNER_TRIANGLES = I.MESH_TRIANGLES[
    I.mesh_ring_distance(I.FACE_OVAL_LOOP)[I.MESH_TRIANGLES].min(axis=1) > CONTOUR_RINGS]


def region_polygons(landmarks: FaceLandmarks, height: int | None = None,
                    width: int | None = None) -> dict[str, list[np.ndarray]]:
    """Outline polygons of each region source, in the pixel frame of a ``(height, width)`` image.

    Returns ``{"face_oval", "face_mesh", "nose", "brows", "eyes", "lips_outer", "lips_inner"}``
    -> list of ``(N, 2)`` float32 ``(u, v)`` polygons (``face_mesh``: the
    landmark mesh's inner triangles, N = 3). Points are scaled from
    ``landmarks.image_size`` to ``(height, width)`` (default: the same size),
    so masks can be made at a reduced resolution.
    """
    h0, w0 = landmarks.image_size
    height = h0 if height is None else int(height)
    width = w0 if width is None else int(width)
    # Scaling the continuous frame: u' = u * W'/W (pixel edges map to pixel edges).
    uv = landmarks.uv.astype(np.float32) * np.array([width / w0, height / h0], np.float32)
    nose = uv[list(I.NOSE)]
    return {
        "face_oval": [uv[list(I.FACE_OVAL_LOOP)]],
        "face_mesh": list(uv[_INNER_TRIANGLES]),
        "nose": [cv2.convexHull(nose).reshape(-1, 2)],
        "brows": [_brow_polygon(uv, I.LEFT_BROW_CHAINS), _brow_polygon(uv, I.RIGHT_BROW_CHAINS)],
        "eyes": [uv[list(I.LEFT_EYE_LOOP)], uv[list(I.RIGHT_EYE_LOOP)]],
        "lips_outer": [uv[list(I.LIPS_OUTER_LOOP)]],
        "lips_inner": [uv[list(I.LIPS_INNER_LOOP)]],
    }


def _fill(label: np.ndarray, polys: list[np.ndarray], value: int) -> None:
    # skimage.draw.polygon takes a pixel when its integer (row, col) point is
    # inside; pixel centres sit at +0.5 in (u, v), hence the -0.5. Not
    # cv2.fillPoly: it also paints every pixel the outline touches, which makes
    # each region about half a pixel too fat all round (a whole extra ring on
    # thin regions such as lips at reduced resolution).
    for p in polys:
        rr, cc = draw_polygon(p[:, 1] - 0.5, p[:, 0] - 0.5, shape=label.shape)
        label[rr, cc] = value


def region_label_map(landmarks: FaceLandmarks, height: int | None = None,
                     width: int | None = None) -> np.ndarray:
    """``(H, W)`` uint8 label map; value ``k`` means region ``REGION_NAMES[k]`` (0 = background).

    ``height``/``width`` default to ``landmarks.image_size``; other sizes
    rescale the landmarks (u by ``W/W0``, v by ``H/H0``) first.
    """
    h0, w0 = landmarks.image_size
    height = h0 if height is None else int(height)
    width = w0 if width is None else int(width)
    if height < 1 or width < 1:
        raise ValueError(f"region map size must be positive, got {height}x{width}")
    polys = region_polygons(landmarks, height, width)
    label = np.zeros((height, width), np.uint8)
    code = REGION_NAMES.index
    # Painter's order: later regions win where polygons overlap (see module docstring).
    _fill(label, polys["face_oval"], code("skin"))
    _fill(label, polys["face_mesh"], code("skin"))
    _fill(label, polys["nose"], code("nose"))
    _fill(label, polys["brows"], code("brows"))
    _fill(label, polys["eyes"], code("eyes"))
    _fill(label, polys["lips_outer"], code("lips"))
    _fill(label, polys["lips_inner"], code("mouth_interior"))
    return label


def in_regions(labels, names):
    """Bool map, same shape and kind (numpy or torch) as the label map ``labels``
    (values index :data:`REGION_NAMES`), of the pixels in any of the named regions."""
    codes = [REGION_NAMES.index(n) for n in names]
    if isinstance(labels, np.ndarray):
        return np.isin(labels, codes)
    import torch  # local: the rest of the module is numpy-only
    return torch.isin(labels, torch.tensor(codes, dtype=labels.dtype, device=labels.device))


def region_masks(landmarks: FaceLandmarks, height: int | None = None,
                 width: int | None = None) -> dict[str, np.ndarray]:
    """Region name -> ``(H, W)`` bool mask, for every name in ``REGION_NAMES[1:]``.

    The masks are pairwise disjoint (they come from one label map).
    """
    label = region_label_map(landmarks, height, width)
    return {name: label == k for k, name in enumerate(REGION_NAMES) if k > 0}


def region_label_maps_torch(faces: list[FaceLandmarks], height: int, width: int,
                            device=None, one_hot: bool = False):
    """Batched label maps for a list of faces as a torch tensor.

    Returns ``(B, H, W)`` int64 labels (values index :data:`REGION_NAMES`), or
    with ``one_hot=True`` a ``(B, R, H, W)`` float32 tensor with
    ``R = len(REGION_NAMES)`` channels (channel 0 = background), ready to
    multiply per-pixel losses. Each face's points are rescaled from its own
    ``image_size`` to ``(height, width)``.
    """
    import torch  # local: the rest of the module is numpy-only

    if len(faces) == 0:
        labels = torch.zeros((0, int(height), int(width)), dtype=torch.int64, device=device)
    else:
        stack = np.stack([region_label_map(f, height, width) for f in faces])
        labels = torch.from_numpy(stack.astype(np.int64)).to(device)
    if not one_hot:
        return labels
    return torch.nn.functional.one_hot(labels, len(REGION_NAMES)).permute(0, 3, 1, 2).float()
