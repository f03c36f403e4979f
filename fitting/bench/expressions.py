"""Expression bench: does the coarse fit tell expression from identity? Synthetic faces with set expressions.

    python -m fitting.bench expressions [--yaws 0,20,40] [--identities 2] [--seed 0] [--photometric]

Issue 16: on a neutral face the expressions should stay near 0 and the identity should carry the shape
(the ``neutral`` mesh, every expression at 0, is what a user rigs and animates); a real expression
should be found as that blendshape, not absorbed by the identity. Here the truth is known: ICT faces
(:class:`fitting.synthetic.faces.FaceGenerator`, random identity within 2 sigma, seeds ``(seed, i)``)
rendered at each of ``--yaws`` with one set of expression weights each (:data:`SETS`): none, the eyes
closed, a smile, an open jaw, brows raised, brows lowered. Each set has the same identities and poses.
MediaPipe finds the points and :func:`fitting.stages.coarse.fit_landmarks` fits them
(``CoarseSettings()``, least squares; ``--photometric`` adds the polish). Printed per set, means over
its faces:

- ``found``: the fitted weight of each true blendshape (truth in brackets);
- ``false max``: the largest weight of a blendshape whose truth is 0 (eyeLook, which the fit leaves
  out, excluded), mean and worst over the faces;
- ``neutral mm``: the fitted identity with every expression at 0 against the true identity's,
  mean per-vertex distance after a similarity over the ICT face area (as ``bench coarse``);
- ``coarse mm``: the fitted face against the true one (identity and expression).
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import numpy as np
import torch

# name -> {blendshape: weight}
SETS: Dict[str, Dict[str, float]] = {
    "neutral": {},
    "eyes closed": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "smile": {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8},
    "jaw open": {"jawOpen": 0.5},
    "brows up": {"browInnerUp_L": 0.7, "browInnerUp_R": 0.7},
    "brows down": {"browDown_L": 0.7, "browDown_R": 0.7},
}
LEFT_OUT = "eyeLook"  # CoarseSettings.exp_exclude: not fitted, not scored


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yaws", default="0,20,40", help="head yaws in degrees, comma-separated (default 0,20,40)")
    p.add_argument("--identities", type=int, default=2, help="random identities per set (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the identities (default 0)")
    p.add_argument("--size", type=int, default=512, help="synthetic image side, pixels (default 512)")
    p.add_argument("--model-dir", default=None, help="ICT-FaceKit folder or archive (default: the model cache)")
    p.add_argument("--photometric", action="store_true", help="also run the photometric polish")
    p.add_argument("--no-progress", action="store_true", help="no progress output")


def set_weights(names: List[str], weights: Dict[str, float]) -> torch.Tensor:
    """(n_exp,) blendshape weights from {name: weight} (names of ``names``; unknown names raise)."""
    out = torch.zeros(len(names))
    for k, v in weights.items():
        out[names.index(k)] = float(v)
    return out


def expression_scores(fitted: torch.Tensor, truth: torch.Tensor, names: List[str]) -> Dict[str, object]:
    """One face: ``fitted``, ``truth`` (n_exp,) -> {"found": {name: fitted weight} of the true blendshapes,
    "false_max": the largest fitted weight where the truth is 0 (``LEFT_OUT`` excluded)}."""
    scored = torch.tensor([not n.startswith(LEFT_OUT) for n in names])
    active = truth != 0
    false = fitted[scored & ~active]
    return {"found": {names[j]: float(fitted[j]) for j in torch.nonzero(active).flatten().tolist()},
            "false_max": float(false.max()) if false.numel() else 0.0}


def run(args) -> int:
    from fitting.camera import DEFAULT_FOV
    from fitting.detections import DetectionBatch, crop_face
    from fitting.stages.coarse import CoarseSettings, fit_landmarks
    from fitting.stages.correspondence import load_correspondence
    from landmarks import FaceMeshDetector

    from .common import _generator, load_models, vertex_errors

    say = (lambda *a: None) if args.no_progress else (lambda *a: print(*a, flush=True))  # noqa: E731
    yaws = [float(y) for y in args.yaws.split(",") if y.strip()]
    face_model, closed_model = load_models(args.model_dir)
    gen, corr, names = _generator(closed_model), load_correspondence(), face_model.exp_names
    nv = face_model.n_vertices
    settings = CoarseSettings(photometric=args.photometric)
    renderer = None
    if args.photometric:
        from fitting.rendering.renderer import Renderer
        from fitting.stages.photometric import photometric_refine
        renderer = Renderer("cpu")
    lines = []
    t0 = time.perf_counter()
    with FaceMeshDetector() as det:
        for set_name, weights in SETS.items():
            truth_exp = set_weights(names, weights)
            crops, truths, neutral_truths = [], [], []
            for i in range(args.identities):
                for yaw in yaws:
                    sf = gen((args.seed, i), size=args.size, yaw_deg=yaw, pitch_deg=0.0, exp_coeffs=truth_exp,
                             fov_deg=DEFAULT_FOV)
                    found = det.detect(sf.image)
                    if not found:
                        say(f"expressions: {set_name}, identity {i}, yaw {yaw:g}: MediaPipe found no face")
                        continue
                    crops.append(crop_face(sf.image, found[0], args.size, f"{set_name}_{i}_{yaw:g}", DEFAULT_FOV))
                    truths.append(sf.verts_model[:nv].astype(np.float64))
                    ident = torch.tensor(sf.params["id_coeffs"], dtype=torch.float32)[None]
                    neutral_truths.append(closed_model(ident)[0, :nv].detach().cpu().numpy().astype(np.float64))
            if not crops:
                lines.append(f"{set_name:12s} no face found")
                continue
            batch = DetectionBatch.stack(crops)
            coarse = fit_landmarks(face_model, batch, corr, settings)
            if args.photometric:
                coarse = photometric_refine(face_model, batch, corr, coarse, settings, renderer)
            neutral = face_model(coarse.id_coeffs).detach().cpu().numpy()
            verts = coarse.vertices.detach().cpu().numpy()
            scores = [expression_scores(coarse.exp_coeffs[j].cpu(), truth_exp, names) for j in range(len(crops))]
            found = {k: np.mean([s["found"][k] for s in scores]) for k in weights}
            false = [s["false_max"] for s in scores]
            e_neutral = np.mean([vertex_errors(neutral[j], neutral_truths[j]).mean() for j in range(len(crops))])
            e_coarse = np.mean([vertex_errors(verts[j], truths[j]).mean() for j in range(len(crops))])
            found_text = ", ".join(f"{k} {v:.2f} ({weights[k]:g})" for k, v in found.items()) or "-"
            lines.append(f"{set_name:12s} {len(crops):5d}  {np.mean(false):9.2f}/{np.max(false):.2f}  "
                         f"{e_neutral:10.3f}  {e_coarse:9.3f}  {found_text}")
            say(f"expressions: {set_name} fitted")
    print()
    print(f"expression bench: {args.identities} identities (seed {args.seed}) x yaws {', '.join(f'{y:g}' for y in yaws)}"
          f" per set, {args.size} px, coarse least squares{' + photometric polish' if args.photometric else ''}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'set':12s} {'faces':>5s}  {'false max':>14s}  {'neutral mm':>10s}  {'coarse mm':>9s}  found (truth)")
    print("\n".join(lines))
    print(f"false max: the largest fitted weight of a blendshape whose truth is 0 ({LEFT_OUT} left out), mean/worst "
          "over the faces; neutral mm: fitted identity (expressions at 0) against the true identity, coarse mm: the "
          "fit against the truth, mean per-vertex distance after a similarity (ICT face area); found: mean fitted "
          "weight of each true blendshape.")
    return 0
