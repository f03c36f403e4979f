"""The models behind :class:`landmarks.detector.FaceMeshDetector`: ours (default) or mediapipe 0.10.21's.

Both give the detector the same three things, on ``(H, W, 3)`` uint8 RGB frames,
in normalised frame coordinates (x = u / W, y = v / H):

* ``mesh(frame, max_faces)``: Face Mesh with refined eyes, lips and irises:
  a list of ``(478, 3)`` float32 ``(x, y, z)``, z in frame widths;
* ``boxes(frame)``: the full-range detector's face boxes ``(xmin, ymin, xmax, ymax)``;
* ``face_score(frame)``: the short-range detector's best score (0 if none
  reaches 0.5): how face-like the frame is;
* ``short_boxes(frame)``: the short-range detector's face boxes, as ``boxes`` (faces the
  mesh's detector finds but whose mesh it rejects, e.g. near profiles: see
  :meth:`landmarks.detector.FaceMeshDetector.boxes_without_mesh`).

Score thresholds of the two detectors: mediapipe 0.10.21's ``FaceDetection``
takes ``min_detection_confidence`` but never applies it: the subgraph's own
option wins (checked: 0.05, 0.5 and 0.95 give the same detections), so its
short-range detector always cut at 0.5 and its full-range one at 0.6, the
graphs' defaults. Our backend uses those same fixed thresholds, so that the
boxes (a weighted mean over every box above the threshold) and the
orientation check come out as before. ``min_confidence`` applies to the
face mesh's detector, where mediapipe did apply it.

``"litert"`` (:mod:`landmarks.face_mesh`, :mod:`landmarks.face_detection`)
runs the model files shipped in ``landmarks/data`` on ``ai_edge_litert``;
``"mediapipe"`` runs ``mediapipe==0.10.21`` itself (``pip install
facefit[mediapipe]``, Python <= 3.12), kept as a cross-check.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BACKENDS", "make_backend"]

BACKENDS = ("litert", "mediapipe")


class LitertBackend:
    """Our runner (see the module docstring)."""

    name = "litert"

    def __init__(self, max_faces: int, min_confidence: float):
        from .face_detection import FULL_RANGE, SHORT_RANGE, FaceDetector
        from .face_mesh import FaceMeshRunner
        self._mesh = FaceMeshRunner(max_faces, min_confidence)
        # the graphs' own thresholds, 0.6 and 0.5 (module docstring); the mesh's detector is the same
        # short-range one when it cuts at 0.5 too
        self._full_range = FaceDetector(FULL_RANGE)
        same = self._mesh.detector.min_score == SHORT_RANGE.min_score
        self._short_range = self._mesh.detector if same else FaceDetector(SHORT_RANGE)

    def mesh(self, frame: np.ndarray, max_faces: int) -> list[np.ndarray]:
        return self._mesh.process(frame, max_faces)

    def boxes(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [tuple(float(v) for v in b) for b in self._full_range(frame).boxes]

    def short_boxes(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [tuple(float(v) for v in b) for b in self._short_range(frame).boxes]

    def face_score(self, frame: np.ndarray) -> float:
        scores = self._short_range(frame).scores
        return float(scores.max()) if len(scores) else 0.0

    def close(self) -> None:
        # the interpreters go with the last reference to them
        self._mesh = self._full_range = self._short_range = None


class MediaPipeBackend:
    """mediapipe 0.10.21's solutions, the graphs our runner reproduces."""

    name = "mediapipe"

    def __init__(self, max_faces: int, min_confidence: float):
        try:
            from mediapipe.python.solutions.face_detection import FaceDetection
            from mediapipe.python.solutions.face_mesh import FaceMesh
        except ImportError as e:
            raise ImportError(f"backend='mediapipe' needs mediapipe==0.10.21 (pip install 'facefit[mediapipe]', "
                              f"Python <= 3.12): {e}") from None
        mesh = lambda n: FaceMesh(static_image_mode=True, max_num_faces=n, refine_landmarks=True,
                                  min_detection_confidence=min_confidence)
        # max_num_faces is fixed per graph: one for the whole-image pass, one (2) for crops.
        self._meshes = {max_faces: mesh(max_faces)}
        if 2 not in self._meshes:
            self._meshes[2] = mesh(2)
        # min_detection_confidence has no effect on these two (module docstring)
        self._full_range = FaceDetection(model_selection=1)
        self._short_range = FaceDetection(model_selection=0)
        # The graphs open their calculators on worker threads, which log as they do; one blank
        # frame each waits for that to finish inside the caller's stderr silencing.
        blank = np.zeros((64, 64, 3), np.uint8)
        for g in (*self._meshes.values(), self._full_range, self._short_range):
            g.process(blank)

    def mesh(self, frame: np.ndarray, max_faces: int) -> list[np.ndarray]:
        found = self._meshes[max_faces].process(frame).multi_face_landmarks or []
        return [np.array([(p.x, p.y, p.z) for p in f.landmark], np.float32) for f in found]

    @staticmethod
    def _boxes(graph, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        """One face detection graph's boxes, (xmin, ymin, xmax, ymax) normalised."""
        boxes = (d.location_data.relative_bounding_box for d in graph.process(frame).detections or [])
        return [(b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height) for b in boxes]

    def boxes(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        return self._boxes(self._full_range, frame)

    def short_boxes(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        return self._boxes(self._short_range, np.ascontiguousarray(frame))

    def face_score(self, frame: np.ndarray) -> float:
        found = self._short_range.process(np.ascontiguousarray(frame)).detections or []
        return max((d.score[0] for d in found), default=0.0)

    def close(self) -> None:
        for g in (*self._meshes.values(), self._full_range, self._short_range):
            g.close()


def make_backend(name: str, max_faces: int, min_confidence: float):
    """A backend by name (one of :data:`BACKENDS`)."""
    if name == "litert":
        return LitertBackend(max_faces, min_confidence)
    if name == "mediapipe":
        return MediaPipeBackend(max_faces, min_confidence)
    raise ValueError(f"unknown landmark backend {name!r}; known: {', '.join(BACKENDS)}")
