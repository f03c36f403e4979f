"""Alignment bench: 68-point NME per yaw bin of MediaPipe, the 3DDFA_V2 regressor and our fits, on synthetic faces.

    python -m fitting.bench align --faces 8 --seed 0 [--initializer auto|3ddfa_v2] [--3ddfa-dir DIR]

Faces: :class:`fitting.synthetic.faces.FaceGenerator` ("face_closed" model), ``--faces`` per yaw bin
(0-30, 30-60, 60-90 degrees, |yaw| uniform in the bin, sign alternating), pitch uniform in
+-``--pitch-max`` (default 40) degrees, face ``i`` of bin ``j`` drawn with seed ``(seed, j, i)``.
Ground truth: the model's own 68 iBUG points (``multipie68`` vertices, the 3D jaw) projected by the
synthetic camera. Each image goes through MediaPipe and :func:`fitting.detections.crop_face` as the
API does. A face MediaPipe's mesh misses but a detector boxes is, with the regressor, read by it alone
(:mod:`fitting.regressor_faces`, as the API does): it is scored in the regressor's and the fused rows
only (the MediaPipe, "no initializer" and "pose start" rows have no MediaPipe points to use). "found by
MediaPipe" and "fitted" count the faces.

NME: mean over the 68 points of the distance (photo pixels) to the truth, over the truth's box size
sqrt(w h), in %; each cell the mean over the bin's found faces. Rows:

- MediaPipe 478 -> 68: MediaPipe's points at the 68 places (:func:`fitting.stages.fusion.mediapipe_to_68`);
- 3DDFA_V2: the regressor alone (two passes, the first from MediaPipe's box, as the initialiser runs it);
- coarse / medium: the coarse stage's least squares (``CoarseSettings(photometric=False)``) and the medium
  stage on it, their ``multipie68`` vertices projected with the fitted camera; "no initializer": the
  mean face and the stage's own pose solve; "pose start": the regressor's pose, MediaPipe's points
  only (fusion off); "fused": the regressor's pose and 68 points fused with MediaPipe's
  (:mod:`fitting.stages.fusion`, the default).

Time (s / face): each row's own work (the regressor's time is in its row, not in the fits' rows);
generation and MediaPipe are not timed.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import add_initializer_arguments

BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
DEFAULT_PITCH_MAX = 40.0  # degrees


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faces", type=int, default=8, help="synthetic faces per yaw bin (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--size", type=int, default=512, help="synthetic image side, pixels (default 512)")
    p.add_argument("--crop-size", type=int, default=256,
                   help="working crop side, pixels (default 256: the landmark stages do not need 512)")
    p.add_argument("--pitch-max", type=float, default=DEFAULT_PITCH_MAX,
                   help=f"largest |pitch|, degrees (default {DEFAULT_PITCH_MAX:g})")
    add_initializer_arguments(p, "the regressor rows and fits: 'auto' uses it when its files are on this machine",
                              choices=("auto", "3ddfa_v2"))
    p.add_argument("--no-medium", action="store_true", help="leave out the medium-stage rows")
    p.add_argument("--chunk", type=int, default=8, help="faces per batch through our stages (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--landmarks-backend", default="litert", choices=("litert", "mediapipe"),
                   help="who runs MediaPipe's face models: our runner (litert, default) or mediapipe 0.10.21 "
                        "itself (the cross-check extra, Python <= 3.12)")


@dataclass
class AlignFace:
    """One synthetic face: ``truth`` (68, 2) photo px, its |yaw| bin, and its crop (None: MediaPipe missed)."""

    bin: int
    yaw: float
    pitch: float
    truth: np.ndarray
    image: np.ndarray
    crop: object = None
    mediapipe: bool = True  # False: MediaPipe's mesh missed it, the regressor read it alone


@dataclass
class NmeRow:
    name: str
    nme: Dict[int, List[float]] = field(default_factory=dict)  # bin -> per-face NME %
    seconds: List[float] = field(default_factory=list)
    note: Optional[str] = None

    def add(self, bin_: int, nme: float, seconds: float) -> None:
        self.nme.setdefault(bin_, []).append(float(nme))
        self.seconds.append(float(seconds))


def nme_percent(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance of ``pred`` to ``truth`` (68, 2) over the truth's box size sqrt(w h), in %."""
    span = truth.max(0) - truth.min(0)
    return float(100.0 * np.linalg.norm(pred - truth, axis=1).mean() / np.sqrt(span[0] * span[1]))


def to_photo(uv_crop: np.ndarray, crop) -> np.ndarray:
    """Crop pixels -> photo pixels (``u_crop = (u_photo - x0) * scale``)."""
    return np.asarray(uv_crop, np.float64) / crop.scale + np.array([crop.x0, crop.y0])


def make_faces(closed_model, n_per_bin: int, seed: int, size: int, crop_size: int, pitch_max: float,
               progress: bool, initializer=None, face_model=None, corr=None, backend: str = "litert") -> List[AlignFace]:
    from fitting.bench.common import _generator
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from fitting.regressor_faces import regressor_face
    from fitting.stages.initializers import RegressorInitializer
    from landmarks import FaceMeshDetector

    gen = _generator(closed_model)
    faces = []
    with FaceMeshDetector(backend=backend) as det:
        bar = tqdm(total=n_per_bin * len(BINS), desc="synthetic faces", unit="face", disable=not progress)
        for j, (lo, hi) in enumerate(BINS):
            for i in range(n_per_bin):
                rng = np.random.default_rng((seed, j, i, 1))
                yaw = float(rng.uniform(lo, hi)) * (1 if i % 2 == 0 else -1)
                pitch = float(rng.uniform(-pitch_max, pitch_max))
                sf = gen((seed, j, i), size=size, fov_deg=DEFAULT_FOV, yaw_deg=yaw, pitch_deg=pitch)
                truth = np.asarray(sf.params["landmarks68_uvd"], np.float64)[:, :2]
                face = AlignFace(bin=j, yaw=yaw, pitch=pitch, truth=truth, image=sf.image)
                found = det.detect(sf.image)
                name = f"align_{seed}_{j}_{i}"
                if found:
                    face.crop = crop_face(sf.image, found[0], crop_size, name, DEFAULT_FOV)
                elif isinstance(initializer, RegressorInitializer):
                    boxes = det.boxes_without_mesh(sf.image, found)
                    if boxes:
                        initializer.prepare()
                        lm, _ = regressor_face(sf.image, boxes[0], initializer.regressor, face_model, corr,
                                               DEFAULT_FOV)
                        face.crop = crop_face(sf.image, lm, crop_size, name, DEFAULT_FOV, mediapipe=False)
                        face.mediapipe = False
                faces.append(face)
                bar.update(1)
        bar.close()
    return faces


def run(args) -> int:
    from fitting.bench.common import chunks, init_subset, load_models
    from fitting.detections import DetectionBatch
    from fitting.rendering.renderer import Renderer
    from fitting.stages import medium as medium_stage
    from fitting.stages.coarse import CoarseSettings, fit_landmarks, initial_guess
    from fitting.stages.context import FitContext
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.fusion import FusionSettings, mediapipe_to_68
    from fitting.stages.initializers import resolve_initializer
    from fitting.stages.medium import MediumSettings

    progress = not args.no_progress
    face_model, closed_model = load_models(args.model_dir)
    corr = load_correspondence()
    ids68 = face_model.landmark_sets["multipie68"]
    mp68 = mediapipe_to_68(face_model, corr).numpy()
    initializer = resolve_initializer(args.initializer, args.ddfa_dir)
    faces = make_faces(closed_model, args.faces, args.seed, args.size, args.crop_size, args.pitch_max, progress,
                       initializer, face_model, corr, backend=args.landmarks_backend)
    found = [f for f in faces if f.crop is not None]

    fits = {"none": ("no initializer", CoarseSettings(photometric=False), False),
            "pose": ("3ddfa_v2 pose start", CoarseSettings(photometric=False, fusion=FusionSettings(enabled=False)),
                     True),
            "fused": ("3ddfa_v2 fused", CoarseSettings(photometric=False), True)}
    rows: Dict[str, NmeRow] = {"mp": NmeRow("MediaPipe 478 -> 68"), "reg": NmeRow("3DDFA_V2 alone")}
    for key, (label, _, _) in fits.items():
        rows[f"{key}_coarse"] = NmeRow(f"coarse, {label}")
        if not args.no_medium:
            rows[f"{key}_medium"] = NmeRow(f"medium, {label}")
    if initializer is None:
        why = "not run (the regressor's files are not on this machine: --3ddfa-dir or FACEFIT_3DDFA_DIR)"
        for key in rows:
            if key == "reg" or key.startswith(("pose", "fused")):
                rows[key].note = why
    context = FitContext(model=face_model, correspondence=corr, renderer=Renderer("cpu"), device=face_model.device,
                         settings={"medium": MediumSettings()}, initializer=initializer)

    bar = tqdm(total=len(found), desc="fits", unit="face", disable=not progress)
    for chunk in chunks(found, max(1, args.chunk)):
        b = len(chunk)
        batch = DetectionBatch.stack([f.crop for f in chunk])
        mp_only = [i for i, f in enumerate(chunk) if f.mediapipe]  # faces with MediaPipe's points
        for f in (chunk[i] for i in mp_only):
            rows["mp"].add(f.bin, nme_percent(to_photo(f.crop.points[mp68, :2], f.crop), f.truth), 0.0)
        init = None
        if initializer is not None:
            t0 = time.perf_counter()
            init = initial_guess(context, batch)
            t_reg = (time.perf_counter() - t0) / b
            for i, f in enumerate(chunk):
                rows["reg"].add(f.bin, nme_percent(to_photo(init.points68[i].cpu().numpy(), f.crop), f.truth), t_reg)
        for key, (_, settings, needs_init) in fits.items():
            if needs_init and init is None:
                continue
            # only the fused fit takes a face MediaPipe missed (the others have no points to fit it to)
            idx = list(range(b)) if key == "fused" else mp_only
            if not idx:
                continue
            sub = [chunk[i] for i in idx]
            sub_batch = batch if len(idx) == b else DetectionBatch.stack([f.crop for f in sub])
            sub_init = None if init is None else init_subset(init, idx)
            t0 = time.perf_counter()
            coarse = fit_landmarks(face_model, sub_batch, corr, settings, sub_init if needs_init else None)
            t1 = time.perf_counter()
            stages = [("coarse", coarse.vertices, t1 - t0)]
            if not args.no_medium:
                medium = medium_stage.run(context, sub_batch, coarse).vertices
                stages.append(("medium", medium, time.perf_counter() - t1))
            for stage, verts, dt in stages:
                uv = coarse.camera.project(verts[:, ids68].to(coarse.camera.rotation))[..., :2].detach().cpu().numpy()
                for i, f in enumerate(sub):
                    rows[f"{key}_{stage}"].add(f.bin, nme_percent(to_photo(uv[i], f.crop), f.truth), dt / len(sub))
        bar.update(b)
    bar.close()

    print()
    print(f"align bench: {len(faces)} synthetic faces ({args.faces} per yaw bin), seed={args.seed}, "
          f"|pitch|<={args.pitch_max:g} deg, {args.size} px, crop {args.crop_size} px; "
          f"initializer {args.initializer!r} -> {'3ddfa_v2' if initializer is not None else 'none'}; "
          f"MediaPipe's models run by {args.landmarks_backend}")
    print(format_table(list(rows.values()), faces))
    print()
    print("NME: mean over the 68 iBUG points of the distance to the model's own 68 points projected (the 3D jaw), "
          "over the truth's box size sqrt(w h), %; mean over the bin's faces that MediaPipe found (regressor and "
          "fused rows: every fitted face). "
          "Fits: least squares (photometric=False); medium: MediumSettings() on that coarse fit.")
    print(f"torch threads {torch.get_num_threads()}.")
    return 0 if found else 1


def format_table(rows: List[NmeRow], faces: List[AlignFace]) -> str:
    heads = [f"yaw {lo:g}-{hi:g}" for lo, hi in BINS] + ["all", "s / face"]
    name_w = max(len("method"), *(len(r.name) for r in rows)) + 2
    width = max(len(h) for h in heads) + 2
    lines = ["method".ljust(name_w) + "".join(h.rjust(width) for h in heads)]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r.note is not None:
            lines.append(r.name.ljust(name_w) + f"  {r.note}")
            continue
        cells = [f"{np.mean(r.nme[j]):.2f}" if r.nme.get(j) else "nan" for j in range(len(BINS))]
        every = [x for j in range(len(BINS)) for x in r.nme.get(j, [])]
        cells += [f"{np.mean(every):.2f}" if every else "nan", f"{np.mean(r.seconds):.3f}" if r.seconds else "nan"]
        lines.append(r.name.ljust(name_w) + "".join(c.rjust(width) for c in cells))
    for label, ok in (("found by MediaPipe", lambda f: f.crop is not None and f.mediapipe),
                      ("fitted", lambda f: f.crop is not None)):
        counts = [f"{sum(ok(f) for f in faces if f.bin == j)}/{sum(f.bin == j for f in faces)}"
                  for j in range(len(BINS))]
        lines.append(label.ljust(name_w) + "".join(c.rjust(width) for c in counts))
    return "\n".join(lines)

