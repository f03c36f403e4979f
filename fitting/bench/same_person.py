"""Same-person bench: one identity from N photos (joint fit) against single-photo fits, synthetic faces.

    python -m fitting.bench same-person --n 5 --views 8 --seed 0 [--model-dir DIR]
    python -m fitting.bench same-person --clip-only --clip-frames 90 --seed 0 --out DIR   # part (b) alone

Part (a) of issue 18. ``--n`` synthetic people; person ``p`` has one random
identity (seed ``(seed, p)``) and ``--views`` photos of it, each with its own
random pose (|yaw| <= ``--yaw-max``), expression (0-3 mild activations),
light, albedo and camera (seed ``(seed, p, v)``; :class:`fitting.synthetic.FaceGenerator`
with ``id_coeffs``). Every photo goes through MediaPipe and the crop as the API does.

For N = 1, 2, 4, 8 (the first N views of each person), identity error in mm:
the fitted neutral mesh (identity, no expression) against the true neutral
mesh, mean per-vertex distance after a similarity alignment, over the face
area (as bench coarse measures shape). Rows:

- single-view fits: :func:`fitting.stages.coarse.fit_landmarks` (least squares,
  no photometric polish) on each of the N views alone, error averaged over the views;
- single-view identities averaged: the mean of those fits' identity coefficients;
- joint: :func:`fitting.stages.joint.fit_same_person` on the N views, least squares only and (unless
  ``--no-photometric``) with its joint photometric polish; the polished table also lists each view's
  own single-view polish ('polished'). The ratio is always against the single-view least squares.

Also measured: the expression-weight error of the joint fit (mean |fitted - true|
over the 53 weights and the views), and the disagreement check's distances (each
view's single-view neutral mesh from the joint one, mm) for views of one person
and for a mixed set (view v of person v mod n: different people), which is what
``SamePersonSettings.disagreement_mm`` is set from.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .common import DEFAULT_YAW_MAX, add_initializer_arguments, load_models, vertex_errors

VIEW_COUNTS = (1, 2, 4, 8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=5, help="number of synthetic people (default 5)")
    p.add_argument("--views", type=int, default=8, help="photos per person (default 8; N runs up to this)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--size", type=int, default=512, help="synthetic image side, pixels (default 512)")
    p.add_argument("--yaw-max", type=float, default=DEFAULT_YAW_MAX,
                   help=f"largest |yaw| of the synthetic views, degrees (default {DEFAULT_YAW_MAX:g})")
    p.add_argument("--clip-frames", type=int, default=0, metavar="T",
                   help="part (b): also a synthetic clip of T frames (smooth head motion, jaw and blink curves; "
                        "default 0: not run)")
    p.add_argument("--temporal", default="0,1000,5000",
                   help="part (b): lambda_temporal_exp values to compare (comma-separated; default 0,1000,5000: "
                        "off, weaker and SamePersonSettings' default)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="part (b): write clip_curves.csv, clip_jawOpen.png and clip_eyeBlink_L.png (the curves over the "
                        "frames: truth, independent fits, the joint fit at the last --temporal value) here")
    p.add_argument("--clip-only", action="store_true",
                   help="run part (b) only (the clip; needs --clip-frames), not part (a)'s people")
    p.add_argument("--no-oracle", action="store_true",
                   help="leave out the oracle rows: those fed exact landmarks (the true projections of the table's "
                        "surface points) and, in part (b), the joint fits with the identity held (truth, "
                        "independent fits' mean)")
    p.add_argument("--no-photometric", action="store_true",
                   help="part (a): least squares only, without the rows of the joint photometric polish "
                        "(SamePersonSettings.photometric; the single-view fits then get their own polish too), "
                        "which cost about 4 CPU s per view in the joint polish, 1.5 s per single-view polish")
    p.add_argument("--oracle-photometric", action="store_true",
                   help="part (a): also the exact landmarks' rows with the photometric polish")
    add_initializer_arguments(p, "part (a)'s fits: the 3DDFA_V2 regressor's pose and 68 points fused with "
                                 "MediaPipe's, as fit-face does; 'auto' (default) uses it when its files are on this "
                                 "machine")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_people(face_model, closed_model, n: int, views: int, seed: int, size: int, yaw_max: float,
                progress: bool = True):
    """``n`` people x ``views`` photos: a list of dicts ``{"id": (n_id,), "views": [BenchFace, ...]}``
    (:class:`fitting.bench.common.BenchFace`; ``crop`` None where MediaPipe missed the face) and
    ``"exp"``: the views' true expression weights (views, n_exp)."""
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import crop_face
    from landmarks import FaceMeshDetector
    from .common import BenchFace, _generator

    gen = _generator(closed_model)
    people = []
    with FaceMeshDetector() as det:
        bar = tqdm(total=n * views, desc="synthetic views", unit="photo", disable=not progress)
        for p in range(n):
            rng = np.random.default_rng((seed, p))
            id_c = torch.tensor(np.clip(rng.normal(size=closed_model.n_id), -2, 2), dtype=torch.float32)
            person = {"id": id_c, "views": [], "exp": []}
            for v in range(views):
                sf = gen((seed, p, v), size=size, yaw_range=yaw_max, fov_deg=DEFAULT_FOV, id_coeffs=id_c)
                faces = det.detect(sf.image)
                nv = face_model.n_vertices
                face = BenchFace(index=v, seed=(seed, p, v), truth=sf.verts_model[:nv].astype(np.float64),
                                 yaw=float(sf.params["pose_deg"]["yaw"]), deformation_mm=0.0,
                                 n_faces_found=len(faces), truth_camera=sf.verts_camera[:nv].astype(np.float64))
                if faces:
                    face.crop = crop_face(sf.image, faces[0], 512, f"person{p}_view{v}", DEFAULT_FOV)
                person["views"].append(face)
                person["exp"].append(torch.tensor(sf.params["exp_coeffs"]))
                bar.update(1)
            person["exp"] = torch.stack(person["exp"])
            people.append(person)
        bar.close()
    return people


def clip_truth(model, frames: int):
    """A clip's true curves, T = ``frames``: ``exp`` (T, n_exp) with speech-like jaw motion
    (|sin|, period 12 frames, up to 0.45) and a blink every 15 frames (both eyes, 3 frames:
    0.5, 1, 0.5), and ``pose`` (T, 3) yaw, pitch, roll degrees (yaw 15 sin, pitch 4 sin at twice the rate)."""
    t = np.arange(frames, dtype=np.float64)
    exp = np.zeros((frames, model.n_exp))
    exp[:, model.exp_names.index("jawOpen")] = 0.45 * np.abs(np.sin(np.pi * t / 12.0))
    blink = np.zeros(frames)
    for centre in range(7, frames, 15):
        for d, v in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            if 0 <= centre + d < frames:
                blink[centre + d] = v
    for name in ("eyeBlink_L", "eyeBlink_R"):
        exp[:, model.exp_names.index(name)] = blink
    pose = np.stack([15.0 * np.sin(2 * np.pi * t / frames), 4.0 * np.sin(4 * np.pi * t / frames), 0 * t], 1)
    return torch.tensor(exp, dtype=torch.float32), pose


def clip_scene(closed_model, frames: int, seed: int):
    """Part (b)'s synthetic clip: ``(id_coeffs (n_id,), exp (T, n_exp), pose (T, 3) deg, render)`` with
    ``render(t, size)`` frame ``t`` as a synthetic face of ``size`` px (one seed for every frame: the same
    light, skin, background and camera distance)."""
    from fitting.camera import DEFAULT_FOV
    from .common import _generator
    gen = _generator(closed_model)
    rng = np.random.default_rng((seed, 1000))
    id_c = torch.tensor(np.clip(rng.normal(size=closed_model.n_id), -2, 2), dtype=torch.float32)
    exp, pose = clip_truth(closed_model, frames)

    def render(t: int, size: int):
        return gen((seed, 1000), size=size, fov_deg=DEFAULT_FOV, id_coeffs=id_c, exp_coeffs=exp[t],
                   pose_deg=tuple(pose[t]), fill=0.65)
    return id_c, exp, pose, render


def write_clip_video(closed_model, path, frames: int, seed: int = 0, size=(1280, 720), fps: float = 30.0) -> None:
    """Part (b)'s synthetic clip (:func:`clip_scene`, the person and look of ``seed``) as a video file a
    user could give fit-face: each frame rendered square at the video's height and centred on a grey
    ``size`` (width, height) px frame, ``fps`` frames per second (MPEG-4 part 2, as OpenCV writes it)."""
    import cv2
    *_, render = clip_scene(closed_model, frames, seed)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for t in range(frames):
            sf = render(t, height)
            img = sf.image if sf.image.dtype == np.uint8 else (np.clip(sf.image, 0, 1) * 255).round().astype(np.uint8)
            frame = np.full((height, width, 3), 90, np.uint8)
            left = (width - height) // 2
            frame[:, left:left + height] = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            writer.write(frame)
    finally:
        writer.release()


def plot_curves(path, curves, height: int = 360, width: int = 720) -> None:
    """A PNG of weight curves in [0, 1] over frames: ``curves`` a list of ``(label, (T,) values, BGR colour,
    thickness)``, drawn with OpenCV (no plotting library needed); a legend in the top left."""
    import cv2
    img = np.full((height, width, 3), 255, np.uint8)
    m = 30
    for y in (0.0, 0.5, 1.0):
        yy = int(height - m - y * (height - 2 * m))
        cv2.line(img, (m, yy), (width - m, yy), (220, 220, 220), 1)
        cv2.putText(img, f"{y:.1f}", (2, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    for k, (label, values, colour, thick) in enumerate(curves):
        v = np.asarray(values, np.float64)
        xs = m + np.arange(len(v)) * (width - 2 * m) / max(1, len(v) - 1)
        ys = height - m - np.clip(v, 0, 1) * (height - 2 * m)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, colour, thick)
        cv2.putText(img, label, (m + 5, 15 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    cv2.imwrite(str(path), img)


def clip_bench(face_model, closed_model, corr, frames: int, seed: int, size: int, temporal, progress: bool,
               out=None, oracle: bool = True) -> str:
    """Part (b), a synthetic clip: expression-weight error and per-vertex jitter of independent per-frame
    fits and of the joint fit at each ``temporal`` weight. Returns the printed table; with ``out`` (a
    folder) writes the jawOpen and eyeBlink_L curves there (:func:`plot_curves`, and as CSV).

    ``oracle``: also the default joint fit told what it cannot know, to say where its error comes from:
    the identity held at the truth, held at the mean of the independent fits' identities, and fed exact
    landmarks (the true projections of the table's surface points, no landmark offsets) instead of
    MediaPipe's."""
    import dataclasses
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import DetectionBatch, crop_face
    from fitting.stages.coarse import fit_landmarks
    from fitting.stages.joint import SamePersonSettings, fit_same_person, frame_meshes
    from landmarks import FaceMeshDetector
    from .common import BenchFace, oracle_crop

    id_c, exp, pose, render = clip_scene(closed_model, frames, seed)
    crops, kept, exact = [], [], []
    nv = face_model.n_vertices
    with FaceMeshDetector() as det:
        for t in tqdm(range(frames), desc="clip frames", unit="frame", disable=not progress):
            sf = render(t, size)
            faces = det.detect(sf.image)
            if faces:
                crops.append(crop_face(sf.image, faces[0], 512, f"frame{t}", DEFAULT_FOV))
                kept.append(t)
                if oracle:
                    face = BenchFace(index=t, seed=(seed, 1000), truth=sf.verts_model[:nv], yaw=float(pose[t, 0]),
                                     deformation_mm=0.0, crop=crops[-1],
                                     truth_camera=sf.verts_camera[:nv].astype(np.float64))
                    exact.append(oracle_crop(face, corr))
    truth_exp = exp[kept]
    truth_verts = face_model(id_c[None].expand(len(kept), -1), truth_exp)[:, :nv]

    def jitter(v):  # mean |second difference| over frames and vertices, mm
        return float((v[2:] - 2 * v[1:-1] + v[:-2]).norm(dim=-1).mean())

    def channel(e, name):
        i = face_model.exp_names.index(name)
        return float((e[:, i] - truth_exp[:, i]).abs().mean())

    zeros = torch.zeros(1, face_model.n_exp)
    truth_neutral = face_model(id_c[None], zeros)[0].numpy()

    def identity_error(a_id):  # mm, the neutral meshes after a similarity alignment, as in part (a)
        return float(vertex_errors(face_model(a_id.reshape(1, -1), zeros)[0].numpy(), truth_neutral).mean())

    batch = DetectionBatch.stack(crops)
    rows = []
    base = SamePersonSettings(check_disagreement=False)
    single = fit_landmarks(face_model, batch, corr, base.coarse)
    # (name, exp (T, n_exp), vertices (T, V, 3), identity error mm (NaN: one per frame, not one), seconds)
    rows.append(("independent per-frame fits", single.exp_coeffs, single.vertices,
                 float(np.mean([identity_error(a) for a in single.id_coeffs])), float("nan")))

    def joint_row(name, st, fit_batch=batch, id_coeffs=None):
        t0 = time.perf_counter()
        fit = fit_same_person(face_model, fit_batch, corr, st, ordered=True, id_coeffs=id_coeffs)
        rows.append((name, fit.exp_coeffs, fit.vertices, identity_error(fit.id_coeffs), time.perf_counter() - t0))

    for lam in temporal:
        joint_row(f"joint, temporal {lam:g}", SamePersonSettings(check_disagreement=False, lambda_temporal_exp=lam))
    # every frame's medium mesh on the default joint fit (fitting.stages.joint.frame_meshes): its fps counts
    # the joint fit and the medium stage
    t0 = time.perf_counter()
    fit = fit_same_person(face_model, batch, corr, SamePersonSettings(check_disagreement=False), ordered=True)
    medium_vertices = frame_meshes(face_model, batch, corr, fit)
    rows.append(("joint + medium per frame", fit.exp_coeffs, medium_vertices, identity_error(fit.id_coeffs),
                 time.perf_counter() - t0))
    n_plain = len(rows)
    if oracle:
        default = SamePersonSettings(check_disagreement=False)
        joint_row("oracle: identity = truth", default, id_coeffs=id_c)
        joint_row("identity = indep. fits' mean", default, id_coeffs=single.id_coeffs.mean(0))
        exact_settings = dataclasses.replace(default, coarse=dataclasses.replace(default.coarse,
                                                                                 landmark_offsets=False))
        joint_row("oracle: exact landmarks", exact_settings, fit_batch=DetectionBatch.stack(exact))
    jaw_i = face_model.exp_names.index("jawOpen")
    head = (f"{'method':<30}{'exp weight err':>16}{'jawOpen err':>13}{'jawOpen max':>13}{'eyeBlink err':>14}"
            f"{'jitter mm':>11}{'identity mm':>13}{'fps':>8}")
    lines = [f"part (b): synthetic clip, {frames} frames ({len(kept)} found by MediaPipe), seed {seed}; truth "
             f"jitter {jitter(truth_verts):.3f} mm, jawOpen max {float(truth_exp[:, jaw_i].max()):.2f}", head,
             "-" * len(head)]
    for name, e, v, id_err, secs in rows:
        blink = 0.5 * (channel(e, "eyeBlink_L") + channel(e, "eyeBlink_R"))
        fps = len(kept) / secs if secs == secs else float("nan")
        lines.append(f"{name:<30}{float((e - truth_exp).abs().mean()):>16.4f}{channel(e, 'jawOpen'):>13.4f}"
                     f"{float(e[:, jaw_i].max()):>13.2f}{blink:>14.4f}{jitter(v):>11.3f}{id_err:>13.3f}{fps:>8.1f}")
    rows = rows[:n_plain - 1]  # the curves: truth, independent fits, the joint fit at the last --temporal value
    if out is not None and len(rows) > 1:
        from pathlib import Path
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        jaw, blink = face_model.exp_names.index("jawOpen"), face_model.exp_names.index("eyeBlink_L")
        joint_name, joint_e = rows[-1][0], rows[-1][1]
        series = {"truth": truth_exp, "independent": single.exp_coeffs, "joint": joint_e}
        with open(folder / "clip_curves.csv", "w", encoding="utf-8") as f:
            f.write("frame," + ",".join(f"{k}_{c}" for k in series for c in ("jawOpen", "eyeBlink_L")) + "\n")
            for i, t in enumerate(kept):
                f.write(f"{t}," + ",".join(f"{float(e[i, c]):.4f}" for e in series.values() for c in (jaw, blink))
                        + "\n")
        colours = {"truth": (0, 0, 0), "independent": (60, 60, 230), "joint": (200, 120, 0)}
        for channel_name, c, offset in (("jawOpen", jaw, 0), ("eyeBlink_L", blink, 1)):
            plot_curves(folder / f"clip_{channel_name}.png",
                        [(f"{channel_name} {k if k != 'joint' else joint_name}", e[:, c].numpy(), colours[k],
                          2 if k == "truth" else 1) for k, e in series.items()])
        lines.append(f"curves: {folder}/clip_jawOpen.png, clip_eyeBlink_L.png, clip_curves.csv")
    lines.append("jitter: mean per-vertex |v[t+1] - 2 v[t] + v[t-1]| of the fitted meshes (model frame, with "
                 "expression; the head's own motion is not in it), mm; identity: the neutral mesh against the "
                 "truth as in part (a) (independent fits: the mean over the frames' own); fps: the joint fit's "
                 "frames per second (landmark least squares, MediaPipe not included; 'medium per frame': the "
                 "default joint fit and every frame's medium mesh, its jitter the medium meshes')." + (
                     " Oracle rows: the default joint fit with the identity held at the truth, held at the "
                     "independent fits' mean identity, or fed exact landmarks." if oracle else ""))
    return "\n".join(lines)


def score(face_model, corr, people, counts, settings, exact: bool = False, narrow=None, context=None,
          renderer=None):
    """Identity errors (mm) of single-view and joint fits for each N in ``counts``, over ``people``.

    ``exact``: fit the true projections of the table's surface points instead of MediaPipe's
    (:func:`fitting.bench.common.oracle_crop`; ``settings.coarse.landmark_offsets`` should be off).
    Returns ``{N: {"single", "averaged", "joint", "joint_narrow", "single_narrow", "exp", "seconds":
    [per person]}}`` and the joint fits' disagreement distances at the largest N (mm, one per view).
    ``context``: a :class:`fitting.stages.context.FitContext` whose initialiser (the 3DDFA_V2 regressor)
    reads every view, as the API's coarse stage and same-person fit do: single-view and joint fits then
    fuse its 68 points with MediaPipe's (not with ``exact``).
    ``renderer``: the joint fits run their photometric polish (``settings.photometric``), and the
    single-view fits theirs (:func:`fitting.stages.photometric.photometric_refine`, each view alone) for
    the ``"single_polished"`` entries; None: least squares only (``"single_polished"`` stays empty).
    """
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import fit_landmarks, initial_guess
    from fitting.stages.joint import fit_same_person
    from .common import init_subset, oracle_crop

    zeros = torch.zeros(1, face_model.n_exp)

    def neutral(id_c):
        return face_model(id_c.reshape(1, -1), zeros)[0].numpy()

    def err(mesh, truth, area=None):
        return float(vertex_errors(mesh, truth, area).mean())

    keys = ("single", "averaged", "joint", "single_narrow", "joint_narrow", "exp", "seconds", "single_polished")
    out = {c: {k: [] for k in keys} for c in counts}
    distances = []
    for person in people:
        truth = neutral(person["id"])
        found = [v for v, f in enumerate(person["views"]) if f.crop is not None]
        if not found:
            continue
        crops = [oracle_crop(person["views"][v], corr) if exact else person["views"][v].crop for v in found]
        views = DetectionBatch.stack(crops)
        init = initial_guess(context, views) if context is not None and not exact else None
        alone = fit_landmarks(face_model, views, corr, settings.coarse, init)  # each view alone
        alone_mesh = [neutral(a) for a in alone.id_coeffs]
        polished_mesh = None
        if renderer is not None:
            from fitting.stages.photometric import photometric_refine
            polished = photometric_refine(face_model, views, corr, alone, settings.coarse, renderer)
            polished_mesh = [neutral(a) for a in polished.id_coeffs]
        for c in counts:
            if c > len(crops):
                continue
            row = out[c]
            row["single"].append(float(np.mean([err(m, truth) for m in alone_mesh[:c]])))
            row["single_narrow"].append(float(np.mean([err(m, truth, narrow) for m in alone_mesh[:c]])))
            row["averaged"].append(err(neutral(alone.id_coeffs[:c].mean(0)), truth))
            if polished_mesh is not None:
                row["single_polished"].append(float(np.mean([err(m, truth) for m in polished_mesh[:c]])))
            fit = fit_same_person(face_model, DetectionBatch.stack(crops[:c]), corr, settings, renderer=renderer,
                                  init=None if init is None else init_subset(init, list(range(c))))
            row["seconds"].append(fit.seconds)
            row["joint"].append(err(fit.neutral.numpy(), truth))
            row["joint_narrow"].append(err(fit.neutral.numpy(), truth, narrow))
            row["exp"].append(float((fit.exp_coeffs - person["exp"][found[:c]]).abs().mean()))
            if c == max(counts) and fit.disagreement_mm is not None:
                distances += fit.disagreement_mm.tolist()
    return out, distances


def format_rows(rows, counts) -> str:
    polished = any(rows[c]["single_polished"] for c in counts)
    head = (f"{'N views':>8}{'single-view mm':>16}" + (f"{'polished':>10}" if polished else "")
            + f"{'singles averaged mm':>21}{'joint mm':>10}{'joint / single':>16}"
            f"{'narrow: single':>16}{'joint':>8}{'ratio':>7}{'exp weight err':>16}{'joint s':>9}{'people':>8}")
    lines = [head, "-" * len(head)]
    for c in counts:
        r = rows[c]
        if not r["joint"]:
            continue
        s, j, sn, jn = (float(np.mean(r[k])) for k in ("single", "joint", "single_narrow", "joint_narrow"))
        lines.append(f"{c:>8d}{s:>16.3f}" + (f"{np.mean(r['single_polished']):>10.3f}" if polished else "")
                     + f"{np.mean(r['averaged']):>21.3f}{j:>10.3f}{j / s:>16.3f}{sn:>16.3f}"
                     f"{jn:>8.3f}{jn / sn:>7.3f}{np.mean(r['exp']):>16.4f}{np.mean(r['seconds']):>9.2f}"
                     f"{len(r['joint']):>8d}")
    return "\n".join(lines)


def run(args) -> int:
    import dataclasses
    from fitting.detections import DetectionBatch
    from fitting.stages.correspondence import load_correspondence
    from fitting.stages.joint import SamePersonSettings, fit_same_person
    from .common import narrow_area, regressor_context

    face_model, closed_model = load_models(args.model_dir)
    corr = load_correspondence()
    if args.clip_only:
        if args.clip_frames <= 0:
            print("error: --clip-only needs --clip-frames T > 0")
            return 2
        print(clip_bench(face_model, closed_model, corr, args.clip_frames, args.seed, args.size,
                         [float(x) for x in args.temporal.split(",")], not args.no_progress, args.out,
                         oracle=not args.no_oracle))
        return 0
    narrow = narrow_area(face_model)
    settings = SamePersonSettings()
    t0 = time.perf_counter()
    people = make_people(face_model, closed_model, args.n, args.views, args.seed, args.size, args.yaw_max,
                         progress=not args.no_progress)
    t_gen = time.perf_counter() - t0
    counts = [c for c in VIEW_COUNTS if c <= args.views]
    found = sum(f.crop is not None for p in people for f in p["views"])
    initializer, context = regressor_context(args, face_model, corr)
    rows, same_dist = score(face_model, corr, people, counts, settings, narrow=narrow, context=context)
    renderer, polished_rows = None, None
    if not args.no_photometric:
        from fitting.rendering.renderer import Renderer
        renderer = Renderer("cpu")
        polished_rows, _ = score(face_model, corr, people, counts, settings, narrow=narrow, context=context,
                                 renderer=renderer)
    # different people in one set: view v of person v mod n
    mixed = [people[v % len(people)]["views"][v].crop for v in range(args.views)]
    mixed = [c for c in mixed if c is not None]
    mixed_dist = []
    if len(people) > 1 and len(mixed) > 1:
        mixed_dist = fit_same_person(face_model, DetectionBatch.stack(mixed), corr, settings).disagreement_mm.tolist()
    exact_rows = None
    if not args.no_oracle:
        exact = SamePersonSettings(coarse=dataclasses.replace(settings.coarse, landmark_offsets=False),
                                   lambda_id=settings.lambda_id, check_disagreement=False)
        exact_rows, _ = score(face_model, corr, people, counts, exact, exact=True, narrow=narrow)
    exact_polished = None
    if not args.no_oracle and args.oracle_photometric and renderer is not None:
        exact_polished, _ = score(face_model, corr, people, counts, exact, exact=True, narrow=narrow,
                                  renderer=renderer)

    print()
    print(f"same-person bench: {args.n} synthetic people x {args.views} views, seed={args.seed}, "
          f"|yaw|<={args.yaw_max:g} deg, {args.size} px; MediaPipe found {found}/{args.n * args.views} views")
    print("MediaPipe's landmarks (the real path)" + (", fused with the 3DDFA_V2 regressor's 68 points:"
                                                     if context is not None else ", no regressor:"))
    print("least squares (no photometric polish):")
    print(format_rows(rows, counts))
    if polished_rows is not None:
        print("with the photometric polish (joint: SamePersonSettings' polish of all views, the identity shared; "
              "'polished': each view's own single-view polish):")
        print(format_rows(polished_rows, counts))
    final = rows if polished_rows is None else polished_rows
    if final.get(8) and final[8]["joint"]:
        ratio = np.mean(final[8]["joint"]) / np.mean(final[8]["single"])
        print(f"issue 18 (a): joint 8-view identity error <= 0.75 x single-view (least squares): {ratio:.3f} "
              f"({'met' if ratio <= 0.75 else 'NOT met'}; joint fit "
              f"{'least squares only' if polished_rows is None else 'with its photometric polish'})")
    if exact_rows is not None:
        print()
        print("exact landmarks (true projections of the table's surface points; the solver's ceiling), least squares:")
        print(format_rows(exact_rows, counts))
    if exact_polished is not None:
        print("exact landmarks, with the photometric polish:")
        print(format_rows(exact_polished, counts))
    print()
    fmt = lambda xs: (f"median {np.median(xs):.2f}, min {np.min(xs):.2f}, max {np.max(xs):.2f} mm"  # noqa: E731
                      if xs else "n/a")
    print(f"disagreement (each view's single-view neutral mesh vs the joint one, mean vertex distance, MediaPipe): "
          f"one person {fmt(same_dist)}; mixed people {fmt(mixed_dist)}; warning threshold "
          f"{settings.disagreement_mm:g} mm")
    if args.clip_frames > 0:
        print()
        print(clip_bench(face_model, closed_model, corr, args.clip_frames, args.seed, args.size,
                         [float(x) for x in args.temporal.split(",")], not args.no_progress, args.out,
                         oracle=not args.no_oracle))
    print()
    print("Errors: identity = neutral meshes (no expression), mean per-vertex distance after a similarity "
          "alignment over the ICT face area ('narrow': ICT's face_narrow set, the front of the face); "
          "'single-view mm' averages the N views' own fits; 'singles averaged' fits each view alone and "
          "averages the identity coefficients; 'exp weight err' = mean |fitted - true| over the 53 expression "
          "weights of the N views (joint fit). 'single-view mm' is always the single-view least squares; "
          f"CPU, torch threads {torch.get_num_threads()}; 'joint s' = seconds per joint fit (with its single-view "
          f"disagreement check on the MediaPipe rows). Not timed: synthetic generation and MediaPipe {t_gen:.1f} s.")
    return 0 if found else 1
