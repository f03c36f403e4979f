"""Image + face landmarks -> a face descriptor: who the face is, as 128 numbers (dlib's face recognition net).

Photos of one person lie close together in this space and photos of two people far apart: dlib's
ResNet was trained to put each identity in a ball of radius 0.6, and at that distance it tells LFW's
pairs apart 99.38 % of the time. The same-person fit uses it to warn when the photos it was given show
different people (:data:`SAME_PERSON_DISTANCE`), which the fitted shapes cannot tell: identities seen
through MediaPipe's points differ by as little between two people as between two views of one.

Optional: ``pip install ".[identity]"`` brings ``dlib-bin`` (dlib's wheels; dlib is Boost-licensed) and
``face_recognition_models`` (the model files; Davis King released them into the public domain, the
package is MIT). Only the 5-point shape predictor and the recognition net are read; the package's
68-point predictor (trained on iBUG 300-W, non-commercial) is not. :func:`face_descriptor_available`
says whether they are installed. Knows no 3D model.

    from landmarks.identity import FaceDescriber
    describe = FaceDescriber()
    d = describe(pixels, face.uv)        # (128,) float32; np.linalg.norm(d1 - d2) > 0.6: two people
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from . import indices as I
from .errors import ModelFileError
from .image import to_uint8

# dlib's own decision threshold for its recognition net (dlib's dnn_face_recognition example, the
# face_recognition package's default tolerance): two descriptors farther apart show two people.
# Measured with our boxes (:func:`face_box`) on the shared photos and their mirror images: 8 real
# people, every pair of two people 0.66-1.0 apart (median 0.85); a photo and its mirror 0.14-0.4.
SAME_PERSON_DISTANCE = 0.6

_PACKAGE = "face_recognition_models"
_SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
_NET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def _model_folder() -> Optional[Path]:
    """The installed ``face_recognition_models``' model folder, found without importing the package
    (its ``__init__`` needs ``pkg_resources``, which current setuptools no longer has)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if (folder / _SHAPE_FILE).is_file() and (folder / _NET_FILE).is_file() else None


def face_descriptor_available() -> bool:
    """True when dlib and the model files are installed (``pip install ".[identity]"``)."""
    return importlib.util.find_spec("dlib") is not None and _model_folder() is not None


def face_box(uv: np.ndarray) -> tuple:
    """``(left, top, right, bottom)`` pixels: the square box dlib's face detector would draw around the
    face whose MediaPipe points are ``uv`` (478, 2). dlib's 5-point shape predictor was trained on its
    detector's boxes; measured on the 7 shared photos its HOG detector finds, those boxes are centred
    0.31-0.60 of the way from the eyes' midpoint to the mouth's (median 0.50) and 1.98-2.57 x that distance
    wide (median 2.13). Built
    from the points, the box also exists for the turned faces the HOG detector misses (the 45-degree
    photo), and descriptors from it lie 0.02-0.12 from those from dlib's boxes on the frontal photos."""
    uv = np.asarray(uv, np.float64)
    eyes = 0.25 * (uv[I.RIGHT_EYE_OUTER_CORNER] + uv[I.RIGHT_EYE_INNER_CORNER]
                   + uv[I.LEFT_EYE_INNER_CORNER] + uv[I.LEFT_EYE_OUTER_CORNER])
    mouth = 0.5 * (uv[I.UPPER_LIP_INNER] + uv[I.LOWER_LIP_INNER])
    gap = float(np.linalg.norm(mouth - eyes))
    centre, half = 0.5 * (eyes + mouth), 1.05 * gap
    return (int(round(centre[0] - half)), int(round(centre[1] - half)),
            int(round(centre[0] + half)), int(round(centre[1] + half)))


class FaceDescriber:
    """dlib's face recognition net on faces given by their MediaPipe points; loads its two files once.

    Raises :class:`landmarks.errors.ModelFileError` (one line) when dlib or the files are missing."""

    def __init__(self):
        folder = _model_folder()
        if importlib.util.find_spec("dlib") is None or folder is None:
            raise ModelFileError("face descriptors need dlib and its models: pip install \".[identity]\"")
        import dlib
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(folder / _SHAPE_FILE))
        self._net = dlib.face_recognition_model_v1(str(folder / _NET_FILE))

    def __call__(self, image: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) RGB, uint8 or float in [0, 1]; ``uv`` (478, 2) the face's MediaPipe points in
        its pixels. Returns the (128,) float32 descriptor (unit-free; :data:`SAME_PERSON_DISTANCE`)."""
        pixels = np.ascontiguousarray(to_uint8(np.asarray(image)))
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {pixels.shape}")
        rect = self._dlib.rectangle(*face_box(uv))
        shape = self._shape(pixels, rect)
        return np.asarray(self._net.compute_face_descriptor(pixels, shape, 1), np.float32)


def median_distances(descriptors: np.ndarray) -> np.ndarray:
    """``(N,)``: each descriptor's median distance to the other N - 1 of ``descriptors`` (N, D), the lower
    of the two middle ones for an even count (NaN for N = 1). So the views of one person outvote one
    intruder among three or more views (two views and an intruder: each view's nearer one, its twin); two
    views both get their one distance."""
    d = np.asarray(descriptors, np.float64)
    n = len(d)
    if n < 2:
        return np.full(n, np.nan)
    dist = np.linalg.norm(d[:, None] - d[None], axis=-1)
    others = np.sort(dist[~np.eye(n, dtype=bool)].reshape(n, n - 1), axis=1)
    return others[:, (n - 2) // 2]
