"""Shared pieces of the fitting benches: synthetic data through the real detection path, and the error measures.

Measures (METHOD.md, "How results are judged"):

- shape: per-vertex distance in mm after a similarity (Umeyama: scale,
  rotation, translation) alignment of the prediction onto the truth, fitted
  and measured over the same vertex set (the face area);
- landmarks: distance in *photo* pixels between MediaPipe's landmarks on the
  synthetic image and the fitted surface points projected. The stages work
  on the crop, where ``u_crop = (u_photo - x0) * scale``, so a crop-pixel
  distance is divided by the crop's ``scale``.

Synthetic data: :class:`fitting.synthetic.FaceGenerator` on the "face_closed"
model, face ``i`` of a set drawn with seed ``(seed, i)`` (as
``python -m fitting.synthetic`` does), so a set is the same for the same
seed. Each image goes through :class:`landmarks.FaceMeshDetector` and
:func:`fitting.detections.crop_face`, the path the API uses; faces MediaPipe
does not find are kept in the set as misses and reported.
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from landmarks.indices import GROUP_NAMES, point_groups

DEFAULT_YAW_MAX = 45.0  # degrees: |yaw| of the synthetic faces


# --------------------------------------------------------------------------- alignment and errors

def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True):
    """Least-squares similarity ``dst ~ s R src + t`` of (N, 3) point sets, in float64
    (:func:`morphable.geometry.similarity_transform`). Returns ``(s, R, t)`` as numpy."""
    from morphable.geometry import similarity_transform
    s, rot, t = similarity_transform(torch.as_tensor(np.asarray(src, np.float64)),
                                     torch.as_tensor(np.asarray(dst, np.float64)), with_scale)
    return float(s), rot.numpy(), t.numpy()


def apply_similarity(points: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    return s * np.asarray(points, np.float64) @ rot.T + t


def vertex_errors(pred: np.ndarray, truth: np.ndarray, area: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-vertex distances (mm) over ``area`` (vertex indices; None: all) after aligning
    ``pred`` onto ``truth`` by a similarity fitted on the same vertices."""
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    if area is not None:
        pred, truth = pred[area], truth[area]
    s, rot, t = umeyama(pred, truth)
    return np.linalg.norm(apply_similarity(pred, s, rot, t) - truth, axis=1)


def landmark_mask(corr) -> np.ndarray:
    """(478,) bool: landmarks scored for reprojection: a valid correspondence and not an iris point
    (iris points sit on the eyeball, outside the face area; every stage gives them weight 0)."""
    groups = point_groups()
    return corr.valid.cpu().numpy().astype(bool) & (groups != GROUP_NAMES.index("iris"))


def landmark_error_photo_px(projected_crop_uv: np.ndarray, crop, mask: np.ndarray) -> float:
    """Mean distance in photo pixels between projected points and the crop's MediaPipe points (both crop px)."""
    err = np.linalg.norm(np.asarray(projected_crop_uv, np.float64) - crop.points[:, :2], axis=1)[mask]
    return float(err.mean() / crop.scale)


# --------------------------------------------------------------------------- models and data

@functools.lru_cache(maxsize=4)
def load_models(model_dir: Optional[str]):
    """(face model, face_closed model), loaded once per process per folder."""
    from morphable import load_ict
    face = load_ict(model_dir, region="face", progress=False)
    closed = load_ict(model_dir, region="face_closed", progress=False)
    n = face.n_vertices
    if not torch.equal(face.mean, closed.mean[:n]):
        raise RuntimeError("the first vertices of 'face_closed' are not the 'face' region's: "
                           "ground truth cannot be compared")
    return face, closed


_GENERATORS: Dict[int, object] = {}


def _generator(closed_model):
    """One FaceGenerator per model object (building its albedo atlas features takes seconds)."""
    from fitting.synthetic.faces import FaceGenerator
    key = id(closed_model)
    if key not in _GENERATORS:
        _GENERATORS[key] = (closed_model, FaceGenerator(closed_model))
    return _GENERATORS[key][1]


@dataclass
class BenchFace:
    """One synthetic face: the truth on the fitted model's vertices (model frame, mm) and its crop (None: missed)."""

    index: int
    seed: tuple
    truth: np.ndarray
    yaw: float
    deformation_mm: float  # mean |out-of-model offset| over the face area (0 without deformation)
    crop: object = None
    n_faces_found: int = 0
    maps: Optional[Dict[str, np.ndarray]] = None  # ground-truth image maps in the crop (keep_maps=True only)
    truth_camera: Optional[np.ndarray] = None  # (V, 3) the truth in the synthetic camera's frame, mm


def oracle_crop(face: BenchFace, corr):
    """``face.crop`` with MediaPipe's (u, v) replaced by the exact ones: the true projections of the
    correspondence table's surface points on the true mesh (crop pixels; MediaPipe's relative depth kept).

    What a perfect detector of the table's surface points would report: fitting to these
    (with ``CoarseSettings(landmark_offsets=False)``, since the offsets model MediaPipe's own
    drift) measures the solver and the model alone, the ceiling a better landmark source could reach.
    """
    import dataclasses
    from sfs.projection import camera_to_pixel

    pts = corr.points(torch.as_tensor(face.truth_camera, dtype=torch.float64)[None])  # (1, K, 3) camera frame
    uv = camera_to_pixel(pts, torch.as_tensor(face.crop.intrinsics, dtype=torch.float64)[None])[0, :, :2].numpy()
    points = face.crop.points.copy()
    points[:, :2] = uv
    return dataclasses.replace(face.crop, points=points.astype(face.crop.points.dtype))


@dataclass
class SyntheticSet:
    faces: List[BenchFace]
    settings: Dict[str, object]
    seconds_generate: float = 0.0
    seconds_detect: float = 0.0

    @property
    def detected(self) -> List[BenchFace]:
        return [f for f in self.faces if f.crop is not None]

    @property
    def missed(self) -> List[BenchFace]:
        return [f for f in self.faces if f.crop is None]

    def header(self) -> str:
        s = self.settings
        text = (f"n={len(self.faces)} synthetic faces, seed={s['seed']}, |yaw|<={s['yaw_max']:g} deg, "
                f"{s['size']} px, deformation={'on' if s['deformation'] else 'off'}"
                + (", fine detail=on" if s.get("detail") else "")
                + f"; MediaPipe found {len(self.detected)}/{len(self.faces)}")
        if self.missed:
            text += " (missed: " + ", ".join(f"#{f.index} yaw {f.yaw:+.0f}" for f in self.missed) + ")"
        return text


def crop_maps(sf, crop) -> Dict[str, np.ndarray]:
    """A SyntheticFace's ground-truth image maps resampled into ``crop`` (the warp ``crop_face`` applies).

    Returns (S, S) maps: ``normals`` (S, S, 3) unit camera frame, ``depth`` mm,
    ``albedo`` (S, S, 3), ``mask`` (nearest) and ``inside`` (pixels whose whole
    interpolation footprint is in the mask: where the interpolated maps are
    not mixed with the background's zeros).
    """
    import cv2
    size = crop.image.shape[0]
    x0, y0, sc = crop.x0, crop.y0, crop.scale
    m = np.array([[sc, 0.0, -x0 * sc + 0.5 * sc - 0.5], [0.0, sc, -y0 * sc + 0.5 * sc - 0.5]], np.float64)
    interp = cv2.INTER_AREA if sc < 1 else cv2.INTER_LINEAR
    warp = lambda a, flags=interp: cv2.warpAffine(np.ascontiguousarray(a, np.float32), m, (size, size),  # noqa: E731
                                                  flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask_f = sf.mask.astype(np.float32)
    normals = warp(sf.normals)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    return {"normals": normals, "depth": warp(sf.depth), "albedo": warp(sf.albedo),
            "mask": warp(mask_f, cv2.INTER_NEAREST) > 0.5, "inside": warp(mask_f) > 0.999}


def make_synthetic_set(face_model, closed_model, n: int, seed: int, *, size: int = 512,
                       yaw_max: float = DEFAULT_YAW_MAX, deformation: bool = False, crop_size: int = 512,
                       progress: bool = True, detail: bool = False, keep_maps: bool = False) -> SyntheticSet:
    """``n`` synthetic faces (seed ``(seed, i)``), detected and cropped as the API does.

    ``detail``: fine geometric detail (wrinkles, noise; absent from the albedo); ``keep_maps``:
    keep the ground-truth normal, depth, albedo and mask maps resampled into each crop
    (:func:`crop_maps`, ``BenchFace.maps``).
    """
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from landmarks import FaceMeshDetector

    gen = _generator(closed_model)
    nv = face_model.n_vertices
    out = SyntheticSet([], dict(n=n, seed=seed, size=size, yaw_max=yaw_max, deformation=deformation,
                                crop_size=crop_size, detail=detail))
    with FaceMeshDetector() as det:
        for i in tqdm(range(n), desc="synthetic faces", unit="face", disable=not progress):
            t0 = time.perf_counter()
            sf = gen((seed, i), size=size, yaw_range=yaw_max, deformation=deformation, fov_deg=DEFAULT_FOV,
                     detail=detail)
            t1 = time.perf_counter()
            faces = det.detect(sf.image)
            face = BenchFace(index=i, seed=(seed, i), truth=sf.verts_model[:nv].astype(np.float64),
                             yaw=float(sf.params["pose_deg"]["yaw"]),
                             deformation_mm=float(np.linalg.norm(sf.deformation[:nv], axis=1).mean()),
                             n_faces_found=len(faces), truth_camera=sf.verts_camera[:nv].astype(np.float64))
            if faces:
                # the photo's intrinsics the crop assumes must be the camera that made the image
                face.crop = crop_face(sf.image, faces[0], crop_size, f"synthetic_{seed}_{i:04d}", DEFAULT_FOV)
                k_true = sf.camera.intrinsics[0].cpu().numpy()
                if not np.allclose(face.crop.photo_intrinsics, k_true, rtol=1e-4, atol=1e-3):
                    raise RuntimeError(f"crop intrinsics {face.crop.photo_intrinsics} differ from the synthetic "
                                       f"camera's {k_true}")
                if keep_maps:
                    face.maps = crop_maps(sf, face.crop)
            out.seconds_generate += t1 - t0
            out.seconds_detect += time.perf_counter() - t1
            out.faces.append(face)
    return out


def setup_from_args(args, **synthetic):
    """What every bench starts from: ``(face_model, closed_model, corr, data)``, the synthetic set
    made from the common arguments (``--model-dir --n --seed --size --yaw-max --crop-size``);
    ``synthetic``: the set's other options (``deformation``, ``detail``, ``keep_maps``)."""
    from fitting.stages.correspondence import load_correspondence
    face_model, closed_model = load_models(args.model_dir)
    data = make_synthetic_set(face_model, closed_model, args.n, args.seed, size=args.size, yaw_max=args.yaw_max,
                              crop_size=args.crop_size, progress=not args.no_progress, **synthetic)
    return face_model, closed_model, load_correspondence(), data


def chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------- scoring and printing

@dataclass
class RowStats:
    """Per-face measurements of one method; summarised as means over faces."""

    name: str
    mean_mm: List[float] = field(default_factory=list)
    median_mm: List[float] = field(default_factory=list)
    narrow_mm: List[float] = field(default_factory=list)
    landmark_px: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    note: Optional[str] = None  # set: the row is not measured, this says why

    def add(self, pred: np.ndarray, truth: np.ndarray, narrow: Optional[np.ndarray], landmark_px: float,
            seconds: float) -> None:
        e = vertex_errors(pred, truth)
        self.mean_mm.append(float(e.mean()))
        self.median_mm.append(float(np.median(e)))
        if narrow is not None:
            self.narrow_mm.append(float(vertex_errors(pred, truth, narrow).mean()))
        self.landmark_px.append(float(landmark_px))
        self.seconds.append(float(seconds))

    def summary(self) -> Dict[str, float]:
        f = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
        return {"mean_mm": f(self.mean_mm), "median_mm": f(self.median_mm), "narrow_mm": f(self.narrow_mm),
                "landmark_px": f(self.landmark_px), "seconds": f(self.seconds), "n": len(self.mean_mm)}


COLUMNS = [("mean mm", "mean_mm", "{:.3f}"), ("median mm", "median_mm", "{:.3f}"),
           ("mean mm narrow", "narrow_mm", "{:.3f}"), ("landmarks px", "landmark_px", "{:.2f}"),
           ("s / face", "seconds", "{:.3f}"), ("faces", "n", "{:d}")]


def format_table(rows: Sequence[RowStats]) -> str:
    name_w = max(len("method"), *(len(r.name) for r in rows)) + 2
    widths = [max(len(h), 8) + 2 for h, _, _ in COLUMNS]
    lines = ["method".ljust(name_w) + "".join(h.rjust(w) for (h, _, _), w in zip(COLUMNS, widths))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r.note is not None:
            lines.append(r.name.ljust(name_w) + f"  {r.note}")
            continue
        s = r.summary()
        cells = [fmt.format(s[key]) for _, key, fmt in COLUMNS]
        lines.append(r.name.ljust(name_w) + "".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def measures_note(face_model) -> str:
    narrow = face_model.vertex_sets.get("face_narrow")
    return (f"Errors: mean over faces of each face's mean / median per-vertex distance (mm) after a similarity "
            f"(Umeyama) alignment fitted on the same vertices: 'mean mm' / 'median mm' over the ICT face area "
            f"({face_model.n_vertices} vertices), 'mean mm narrow' over ICT's face_narrow set "
            f"({0 if narrow is None else narrow.numel()} vertices, the front of the face). 'landmarks px': "
            f"mean distance in photo pixels between MediaPipe's landmarks and the fitted landmark points projected "
            f"(surface points plus the correspondence table's yaw-dependent offsets), over the valid non-iris "
            f"landmarks.")


def narrow_area(face_model) -> Optional[np.ndarray]:
    s = face_model.vertex_sets.get("face_narrow")
    return None if s is None or s.numel() == 0 else s.cpu().numpy().astype(np.int64)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=50, help="number of synthetic faces (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--size", type=int, default=512, help="synthetic image side, pixels (default 512)")
    p.add_argument("--yaw-max", type=float, default=DEFAULT_YAW_MAX,
                   help=f"largest |yaw| of the synthetic faces, degrees (default {DEFAULT_YAW_MAX:g})")
    p.add_argument("--crop-size", type=int, default=512, help="working crop side, pixels (default 512, as the API)")
    p.add_argument("--chunk", type=int, default=8, help="faces per batch through our stages (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_initializer_arguments(p: argparse.ArgumentParser, help: str,
                              choices=("auto", "3ddfa_v2", "none")) -> None:
    """``--initializer`` (the 3DDFA_V2 regressor's rows or fits; ``help`` says which) and ``--3ddfa-dir``."""
    p.add_argument("--initializer", default="auto", choices=choices, help=help)
    p.add_argument("--3ddfa-dir", dest="ddfa_dir", default=None, help="the regressor's files (else as the CLI)")


def regressor_context(args, face_model, corr):
    """``(initializer, context)`` from :func:`add_initializer_arguments`' options: the regressor as
    ``fit-face`` resolves it (None with ``--initializer none`` or, for ``auto``, without its files) and a
    :class:`fitting.stages.context.FitContext` carrying it for :func:`fitting.stages.coarse.initial_guess`
    (None without it)."""
    from fitting.stages.context import FitContext
    from fitting.stages.initializers import resolve_initializer
    initializer = resolve_initializer(args.initializer, args.ddfa_dir)
    context = None if initializer is None else FitContext(model=face_model, correspondence=corr, renderer=None,
                                                          device=face_model.device, initializer=initializer)
    return initializer, context


def init_subset(init, idx: List[int]):
    """The faces ``idx`` of a batch's :class:`fitting.stages.coarse.CoarseInit`."""
    from dataclasses import fields, replace
    return replace(init, **{f.name: getattr(init, f.name)[idx] for f in fields(init)
                            if getattr(init, f.name) is not None})
