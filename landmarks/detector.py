"""Face landmarks from a photo: MediaPipe Face Mesh, two passes, any image size.

The models are MediaPipe's (face detectors and the 478-point attention face
mesh, shipped in ``landmarks/data``), run by our own runner on
``ai_edge_litert`` (:mod:`landmarks.face_mesh`); ``backend="mediapipe"``
runs ``mediapipe==0.10.21`` itself instead, as a cross-check
(:mod:`landmarks.backends`).

Frames and units of the results (:class:`FaceLandmarks`):

* ``u, v``: pixels of the *original* (EXIF-upright) image, u right, v down,
  continuous frame: pixel ``[row, col]`` covers ``[col, col+1) x [row, row+1)``
  (MediaPipe's normalised ``x * W`` is already in this frame).
* ``z``: MediaPipe's relative depth converted to the same pixel scale as u
  (``z_pixels = z_normalised * width_of_the_image_it_ran_on``, then mapped
  like u). **Smaller (more negative) z = closer to the camera**; the origin is
  roughly the depth of the head's centre, so it is only meaningful relative
  to other points of the same face.

How a face is found (why two passes):

1. Detection pass: the image is shrunk (``cv2.INTER_AREA``, anti-aliased) so
   its longest side is at most ``working_size`` and Face Mesh runs on that.
   Feeding a 24-megapixel photo straight to MediaPipe is slow and its
   internal ROI resampling aliases.
2. Refinement pass, per face: a square around the face (``crop_scale`` times
   its larger bbox side) is cut from the *original* pixels, resized to
   ``crop_size`` (shrunk with INTER_AREA, or enlarged with INTER_CUBIC for
   small photos) and Face Mesh runs again; the face in the crop that best
   overlaps the first-pass box is mapped back to original pixels. If the
   crop pass finds nothing, the first-pass points are kept
   (``FaceLandmarks.refined`` is then ``False``).

Small faces: Face Mesh's own detector is MediaPipe's short-range model,
made for faces that fill a good part of the frame; a face under about a
tenth of the (shrunk) image's width is not found. MediaPipe's full-range
face detector, run on the same shrunk copy, finds faces down to a few tens
of pixels there; each face it finds that the first pass missed gets the
refinement pass on a crop of the original pixels, where it is large again.
A box whose crop shows no face mesh is dropped.

Upside-down faces: Face Mesh and both detectors label a face turned by 180
degrees (a photo upside down without an EXIF tag) as an upright one, the
chin's points on the forehead; 90 and 270 degrees they get right. The crop
pass therefore asks the short-range detector how face-like the crop is as
it stands and turned by 180 degrees (upright faces: 0.79-0.95 against
0.00-0.72 turned, on the shared photos; the upside-down one: 0.72 against
0.94; a crop scoring under the detector's 0.5 threshold counts as 0, see
:mod:`landmarks.backends`) and runs Face Mesh on the turned crop when that
scores higher by more than ``UPSIDE_DOWN_MARGIN``, turning the points back.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from . import indices as I
from .errors import FaceIndexError, NoFaceError
from .image import ImageSource, LoadedImage, load_image, to_uint8

__all__ = ["FaceLandmarks", "FaceMeshDetector"]

# How much more face-like (detector score, 0..1) a crop turned by 180 degrees must look than
# the crop as it stands before the face is taken as upside down (see the module docstring).
UPSIDE_DOWN_MARGIN = 0.1


@dataclass(frozen=True)
class FaceLandmarks:
    """The 478 Face Mesh landmarks of one face in one image.

    Attributes:
        points: ``(478, 3)`` float32 ``(u, v, z)``: u, v in original-image
            pixels (u right, v down, pixel centres at +0.5); z relative depth
            in pixels, smaller = closer to the camera (see module docstring).
            Index meanings: :mod:`landmarks.indices`.
        bbox: ``(u0, v0, u1, v1)`` pixels, the min/max of the points' u, v.
        image_size: ``(H, W)`` of the image the points refer to.
        refined: ``True`` if the points come from the crop (refinement) pass.
    """

    points: np.ndarray
    bbox: tuple[float, float, float, float]
    image_size: tuple[int, int]
    refined: bool = True

    @property
    def uv(self) -> np.ndarray:
        """``(478, 2)`` float32 pixel coordinates ``(u, v)``."""
        return self.points[:, :2]

    @property
    def bbox_size(self) -> float:
        """Larger side of :attr:`bbox` in pixels."""
        u0, v0, u1, v1 = self.bbox
        return float(max(u1 - u0, v1 - v0))

    @property
    def area(self) -> float:
        """Area of :attr:`bbox` in pixels^2 (used to sort faces, largest first)."""
        u0, v0, u1, v1 = self.bbox
        return float((u1 - u0) * (v1 - v0))

    @property
    def eye_centers(self) -> np.ndarray:
        """``(2, 2)`` ``(u, v)`` of the subject's right then left eye centre, pixels.

        An eye centre is the midpoint of its two corners (canthi: 33/133 and
        362/263), not the iris centre, so it does not move with gaze.
        """
        p = self.uv
        right = 0.5 * (p[I.RIGHT_EYE_OUTER_CORNER] + p[I.RIGHT_EYE_INNER_CORNER])
        left = 0.5 * (p[I.LEFT_EYE_INNER_CORNER] + p[I.LEFT_EYE_OUTER_CORNER])
        return np.stack([right, left])

    @property
    def inter_ocular(self) -> float:
        """Distance in pixels between the two :attr:`eye_centers` (eye-corner midpoints)."""
        r, l = self.eye_centers
        return float(np.linalg.norm(l - r))

    @property
    def inter_pupillary(self) -> float:
        """Distance in pixels between the iris centres (468, 473); changes with gaze/vergence."""
        p = self.uv
        return float(np.linalg.norm(p[I.LEFT_IRIS_CENTER] - p[I.RIGHT_IRIS_CENTER]))


# The full-range detector's second pass: a box overlapping a face already found by this IoU or
# more is that face again (its boxes are looser than the mesh's, hence the low bar); a mesh found
# in a new box that overlaps a known face's by SAME_FACE_IOU or more is a duplicate of it.
NEW_BOX_MAX_IOU = 0.2
SAME_FACE_IOU = 0.5


def _make_face(points: np.ndarray, image_size: tuple[int, int], refined: bool) -> FaceLandmarks:
    pts = np.ascontiguousarray(points, dtype=np.float32)
    lo = pts[:, :2].min(axis=0)
    hi = pts[:, :2].max(axis=0)
    return FaceLandmarks(pts, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                         (int(image_size[0]), int(image_size[1])), refined)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_silence_lock = threading.Lock()
_silence_depth = 0          # how many threads are inside _native_stderr_silenced
_saved_stderr_fd = -1       # the real fd 2 while silenced


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool):
    """While active, file descriptor 2 goes to the null device.

    The TFLite runtime (ai_edge_litert, and mediapipe's C++ side) writes
    notices such as "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    straight to fd 2 when an interpreter is made (mediapipe also on its first
    frames); no environment variable (TF_CPP_MIN_LOG_LEVEL, GLOG_minloglevel)
    reaches that logger. Errors still arrive: as Python exceptions, which do
    not use fd 2. Counted across threads (detectors in two threads): the
    first to enter redirects, the last to leave restores.
    """
    global _silence_depth, _saved_stderr_fd
    if not enabled:
        yield
        return
    with _silence_lock:
        if _silence_depth == 0:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError):   # no fd 2 to redirect (embedded interpreter, closed stream)
                saved = -1
            if saved >= 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            _saved_stderr_fd = saved
        _silence_depth += 1
    try:
        yield
    finally:
        with _silence_lock:
            _silence_depth -= 1
            if _silence_depth == 0 and _saved_stderr_fd >= 0:
                os.dup2(_saved_stderr_fd, 2)
                os.close(_saved_stderr_fd)
                _saved_stderr_fd = -1


class FaceMeshDetector:
    """MediaPipe Face Mesh (478 points, iris included) for photos of any size.

    Keep one detector for many images: the models are loaded once (about
    half a second) and reused. Close it (or use ``with FaceMeshDetector() as
    det:``) to free them. Not thread-safe: use one detector per thread.

    Args:
        max_faces: most faces reported per image (>= 1).
        min_confidence: MediaPipe's ``min_detection_confidence`` in ``(0, 1]``.
        working_size: longest side, pixels, of the copy used for the detection pass.
        crop_size: side, pixels, of the square crop used for the refinement pass.
        crop_scale: crop side / larger side of the first-pass face box; > 1
            leaves context around the face, which MediaPipe's detector needs.
        refine: run the refinement pass (``False``: detection pass only).
        quiet: keep the TFLite runtime's native log lines off the terminal (they
            go to file descriptor 2 directly; see ``_native_stderr_silenced``).
        backend: ``"litert"`` (default: our runner of the shipped models) or
            ``"mediapipe"`` (mediapipe 0.10.21 itself; optional extra).

    Raises:
        ModelFileError: a model file of ``landmarks/data`` is missing or damaged.
        ImportError: ``backend="mediapipe"`` without mediapipe 0.10.21 installed.
    """

    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5, working_size: int = 1024,
                 crop_size: int = 512, crop_scale: float = 1.7, refine: bool = True, quiet: bool = True,
                 backend: str = "litert"):
        if int(max_faces) < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if not 0.0 < float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence}")
        if int(working_size) < 64 or int(crop_size) < 64:
            raise ValueError(f"working_size and crop_size must be >= 64, got {working_size}, {crop_size}")
        if float(crop_scale) < 1.0:
            raise ValueError(f"crop_scale must be >= 1, got {crop_scale}")
        # Imported here: the TFLite runtime (or mediapipe) costs import time that code using only
        # load_image / regions should not pay.
        from .backends import make_backend

        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self.working_size = int(working_size)
        self.crop_size = int(crop_size)
        self.crop_scale = float(crop_scale)
        self.refine = bool(refine)
        self.quiet = bool(quiet)
        with _native_stderr_silenced(self.quiet):
            self._models = make_backend(backend, self.max_faces, self.min_confidence)
        self.backend = backend
        self._closed = False

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the models. Idempotent; ``detect`` afterwards raises RuntimeError."""
        if not self._closed:
            self._models.close()
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- public API
    def detect(self, image: ImageSource) -> list[FaceLandmarks]:
        """All faces in ``image``, largest bounding box first.

        Args:
            image: anything :func:`landmarks.image.load_image` accepts (path,
                array, :class:`LoadedImage`).

        Returns:
            A list (possibly empty) of at most ``max_faces`` :class:`FaceLandmarks`.

        Raises:
            ImageLoadError: the image cannot be read.
            RuntimeError: the detector has been closed.
        """
        if self._closed:
            raise RuntimeError("FaceMeshDetector is closed")
        img = load_image(image)
        h, w = img.size
        # Normalised MediaPipe coords are resolution independent: x * W of the
        # original image is the original-pixel u whatever size it ran on.
        small = self._working_copy(img)
        first = [n * np.array([w, h, w], np.float32) for n in self._run(small, self.max_faces)]

        faces = []
        for pts in first:
            coarse = _make_face(pts, (h, w), refined=False)
            fine = self._refine(img, coarse.bbox) if self.refine else None
            faces.append(fine if fine is not None else coarse)
        if len(faces) < self.max_faces:
            for box in self._small_face_boxes(small, (h, w)):
                if all(_iou(box, f.bbox) < NEW_BOX_MAX_IOU for f in faces):
                    found = self._refine(img, box)
                    if found is not None and all(_iou(found.bbox, f.bbox) < SAME_FACE_IOU for f in faces):
                        faces.append(found)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[:self.max_faces]

    def boxes_without_mesh(self, image: ImageSource, faces: list[FaceLandmarks] | None = None) -> list[tuple]:
        """Face boxes the detectors find where Face Mesh found no face: ``(u0, v0, u1, v1)`` original pixels,
        largest first.

        Near profiles (|yaw| about 85-90 degrees) are the common case: the short-range detector finds
        them (scores 0.60-0.80 on `bench align`'s four missed faces) but the mesh model's face presence
        score on its region is 0.001-0.05 against a threshold of 0.5, so :meth:`detect` drops them. The
        boxes of both detectors on the working copy (short range at its threshold 0.5, full range at
        0.6), less those overlapping a face of ``faces`` (default: :meth:`detect`'s) by
        ``NEW_BOX_MAX_IOU`` or more, and less duplicates (a box overlapping a larger one kept by
        ``SAME_FACE_IOU`` or more). What to do with them is the caller's: a landmark regressor that does
        not need MediaPipe's mesh can read them.
        """
        if self._closed:
            raise RuntimeError("FaceMeshDetector is closed")
        img = load_image(image)
        h, w = img.size
        if faces is None:
            faces = self.detect(img)
        small = np.ascontiguousarray(self._working_copy(img))
        with _native_stderr_silenced(self.quiet):
            found = list(self._models.short_boxes(small)) + list(self._models.boxes(small))
        boxes = sorted(((x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in found),
                       key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        kept: list[tuple] = []
        for box in boxes:
            if all(_iou(box, f.bbox) < NEW_BOX_MAX_IOU for f in faces) and \
                    all(_iou(box, k) < SAME_FACE_IOU for k in kept):
                kept.append(box)
        return kept[:max(0, self.max_faces - len(faces))]

    def detect_one(self, image: ImageSource, face_index: int = 0) -> FaceLandmarks:
        """The ``face_index``-th largest face in ``image`` (0 = largest).

        Raises:
            NoFaceError: no face found (``"no face found in '<name>'"``).
            FaceIndexError: fewer than ``face_index + 1`` faces found.
        """
        img = load_image(image)
        faces = self.detect(img)
        if not faces:
            raise NoFaceError(f"no face found in '{img.name}'")
        if not -len(faces) <= face_index < len(faces):
            raise FaceIndexError(f"face_index {face_index} out of range: {len(faces)} face(s) "
                                 f"found in '{img.name}'")
        return faces[face_index]

    # ------------------------------------------------------------- internals
    def _working_copy(self, img: LoadedImage) -> np.ndarray:
        """The detection pass's frame: ``img`` shrunk (INTER_AREA) to at most ``working_size`` on its
        longer side, uint8 RGB (once, for Face Mesh and the full-range detector)."""
        h, w = img.size
        scale = min(1.0, self.working_size / max(h, w))
        if scale < 1.0:
            small_wh = (max(1, round(w * scale)), max(1, round(h * scale)))
            return to_uint8(cv2.resize(img.pixels, small_wh, interpolation=cv2.INTER_AREA))
        return to_uint8(img.pixels)

    def _crop_frame(self, img: LoadedImage, x0: int, y0: int, side: int) -> np.ndarray | None:
        """The square ``[x0, x0 + side) x [y0, y0 + side)`` of the original pixels, black outside the
        image, resized to ``crop_size`` (float RGB); None if it misses the image."""
        h, w = img.size
        crop = img.pixels[max(y0, 0):min(y0 + side, h), max(x0, 0):min(x0 + side, w)]
        if crop.size == 0:
            return None
        # Faces near the border: pad to a full square so the crop -> image map
        # stays a pure scale + shift. Black padding: no fake texture.
        pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))
        if any(pad):
            crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
        r = self.crop_size
        interp = cv2.INTER_AREA if side > r else cv2.INTER_CUBIC
        return cv2.resize(crop, (r, r), interpolation=interp)   # cubic may overshoot; to_uint8 clips

    def _run(self, pixels: np.ndarray, max_faces: int) -> list[np.ndarray]:
        """Face Mesh on ``(h, w, 3)`` RGB (float in [0, 1], or uint8) -> list of ``(478, 3)`` normalised
        (x, y, z) arrays."""
        frame = np.ascontiguousarray(to_uint8(pixels))
        with _native_stderr_silenced(self.quiet):
            return self._models.mesh(frame, max_faces)

    def _small_face_boxes(self, pixels: np.ndarray, size_hw: tuple[int, int]) -> list[tuple]:
        """The full-range detector's face boxes on ``pixels`` (the shrunk copy, RGB float or uint8), as
        ``(u0, v0, u1, v1)`` in original pixels of an image of ``size_hw``."""
        h, w = size_hw
        with _native_stderr_silenced(self.quiet):
            found = self._models.boxes(np.ascontiguousarray(to_uint8(pixels)))
        return [(x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in found]

    def _upside_down(self, crop: np.ndarray) -> bool:
        """Whether the face in ``crop`` (a square around one face) is upside down."""
        small = to_uint8(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA))

        def score(frame):
            with _native_stderr_silenced(self.quiet):
                return self._models.face_score(np.ascontiguousarray(frame))

        return score(small[::-1, ::-1]) > score(small) + UPSIDE_DOWN_MARGIN

    def _refine(self, img: LoadedImage, bbox: tuple) -> FaceLandmarks | None:
        """Face Mesh on a crop of the original pixels around ``bbox`` ``(u0, v0, u1, v1)``; the face
        found there that overlaps ``bbox`` best, in original pixels (None if none does)."""
        h, w = img.size
        u0, v0, u1, v1 = bbox
        side = int(math.ceil(self.crop_scale * max(u1 - u0, v1 - v0)))
        side = max(side, 8)
        # Integer crop origin so the crop is a plain slice of the pixel grid. (So a first-pass box
        # that moves by a hundredth of a pixel can move the crop by one pixel, and Face Mesh's points
        # by about that much: the two backends agree to 0.01 px on the same frame, but not always
        # on the same crop; see tests/landmarks/test_mediapipe_agreement.py.)
        x0 = int(math.floor(0.5 * (u0 + u1) - 0.5 * side))
        y0 = int(math.floor(0.5 * (v0 + v1) - 0.5 * side))
        crop = self._crop_frame(img, x0, y0, side)
        if crop is None:
            return None

        turned = self._upside_down(crop)
        if turned:
            crop = np.ascontiguousarray(crop[::-1, ::-1])
        best, best_iou = None, 0.3   # below this overlap the crop found some other face
        # The crop may also show part of a neighbouring face; ask for two and
        # keep the one overlapping the first-pass box.
        for n in self._run(crop, 2):
            if turned:  # back from the turned crop: x -> 1 - x, y -> 1 - y; depth unchanged
                n = np.column_stack([1.0 - n[:, 0], 1.0 - n[:, 1], n[:, 2]]).astype(np.float32)
            # crop pixel = x * r; original = x0 + crop_pixel * side / r = x0 + x * side.
            pts = n * np.float32(side) + np.array([x0, y0, 0.0], np.float32)
            cand = _make_face(pts, (h, w), refined=True)
            iou = _iou(cand.bbox, bbox)
            if iou > best_iou:
                best, best_iou = cand, iou
        return best
