"""Pictures and timings of the merged same-person texture (fitting.stages.view_texture), to look at.

    PYTHONPATH=. python tools/view_texture_pictures.py --out /tmp/vt [--photo /work/shared/faces/07_man_yaw45_right.jpg]

Writes into ``--out`` (each picture the atlas's face tile, rows top to bottom):

- ``synthetic.png``: three views of the ICT mean face at yaw -40 / 0 / +40, painted with a known pattern and lit
  from the side (the renderer of tests/fitting/test_view_texture.py); the photos; the truth, the merged texture,
  yaw -40 alone; the best view per texel (red / green / blue: -40 / 0 / +40);
- ``photo.png``: ``--photo`` and its mirror image as two views of one (mirror-symmetric) person, through the
  joint fit: the merged texture, the photo alone, the merge without the shading removal, the best view per texel
  (red: the photo, green: the mirror image).

Prints the merge's seconds for 1, 2, 4 and 8 synthetic views (512 px crops, the default 512 px atlas) and the
per-view slope, and the cheeks' errors of the three-view merge; with ``--sharpness`` the table behind
``ViewTextureSettings.sharpness``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fitting"))  # the test's synthetic views (render_views, cheek_texels)


def _bgr(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).cpu().numpy()[..., ::-1] * 255).round().astype(np.uint8)


def _tile(texture: torch.Tensor) -> np.ndarray:
    h = texture.shape[0]
    return _bgr(texture[:, :h])  # the face's tile of the atlas


def _best(best: torch.Tensor) -> np.ndarray:
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])  # RGB for views 0, 1, 2: red, green, blue
    out = torch.where((best >= 0)[..., None], colours[best.clamp(0, 2)], torch.zeros(3))
    return _tile(out)


def synthetic(model, out: Path) -> None:
    import cv2
    import test_view_texture as T
    from fitting.rendering.renderer import Renderer
    from fitting.stages.view_texture import ViewTextureSettings, merge_views
    T.SIZE, T.FOCAL, T.HEIGHT = 512, 1400.0, 512
    renderer, tiles = Renderer("cpu"), model.uv_tiles
    truth = T.truth_texture(512, tiles)
    yaws = [-40.0, 0.0, 40.0, -20.0, 20.0, -10.0, 10.0, 30.0]
    verts_cam, k, photo, labels = T.render_views(model, renderer, truth, yaws)
    settings = ViewTextureSettings()

    def merge(idx):
        with torch.no_grad():
            return merge_views(renderer, verts_cam[idx], model.triangles, model.uv_atlas(), model.uv_triangles, tiles,
                               k[idx], photo[idx], labels[idx], reference=0, settings=settings)

    seconds = {}
    for n in (1, 2, 4, 8):
        t = time.perf_counter()
        merge(list(range(n)))
        seconds[n] = time.perf_counter() - t
    print("merge seconds by views:", {n: round(s, 2) for n, s in seconds.items()},
          f"per view (2 -> 8): {(seconds[8] - seconds[2]) / 6:.2f} s")
    three, alone = merge([0, 1, 2]), merge([0])
    left, right = T.cheek_texels(model, renderer, tiles)
    for name, r in (("three views", three), ("yaw -40 alone", alone)):
        print(f"{name}: cheek error left {T.error(r.texture, truth, left):.4f} right {T.error(r.texture, truth, right):.4f}")
    print("best-view share", [round(x, 3) for x in three.coverage.tolist()])
    photos = np.hstack([_bgr(p) for p in photo[:3]])
    row = np.hstack([_tile(truth), _tile(three.texture), _tile(alone.texture)])
    best = np.hstack([_best(three.best), np.zeros((512, 1024, 3), np.uint8)])
    cv2.imwrite(str(out / "synthetic.png"), np.vstack([photos, row, best]))


def sharpness_table(model) -> None:
    """ViewTextureSettings.sharpness's table: three views at yaw -40 / 0 / +40 (256 px, the test's scene), the
    cheeks' errors at sharpness 1 / 2 / 4 for two pattern frequencies, with exact poses and with each view's
    fitted yaw off by 3 degrees (alternating in sign, or the same for all)."""
    import test_view_texture as T
    from fitting.rendering.renderer import Renderer
    from fitting.stages.view_texture import ViewTextureSettings, merge_views
    T.SIZE, T.FOCAL, T.HEIGHT = 256, 700.0, 256
    renderer, tiles = Renderer("cpu"), model.uv_tiles
    left, right = T.cheek_texels(model, renderer, tiles)
    for cycles in (6.0, 24.0):
        truth = T.truth_texture(T.HEIGHT, tiles, cycles)
        verts_cam, k, photo, labels = T.render_views(model, renderer, truth, [-40.0, 0.0, 40.0])
        for label, signs in (("exact", (0, 0, 0)), ("-3/+3/-3 deg", (-1, 1, -1)), ("+3 deg all", (1, 1, 1))):
            centre = verts_cam.mean(1, keepdim=True)
            rot = torch.stack([T.yaw_matrix(3.0 * sg) for sg in signs])
            fitted = (verts_cam - centre) @ rot.transpose(1, 2) + centre
            cells = []
            for sharpness in (1.0, 2.0, 4.0):
                with torch.no_grad():
                    m = merge_views(renderer, fitted, model.triangles, model.uv_atlas(), model.uv_triangles, tiles, k,
                                    photo, labels, settings=ViewTextureSettings(texture_height=T.HEIGHT,
                                                                                sharpness=sharpness))
                cells.append(f"{T.error(m.texture, truth, left):.4f}/{T.error(m.texture, truth, right):.4f}")
            print(f"{cycles:g} cycles, {label}: sharpness 1 / 2 / 4: {'  '.join(cells)}")


def photo_pair(fitter, path: Path, out: Path) -> None:
    import cv2
    from fitting.detections import DetectionBatch
    from fitting.stages.coarse import initial_guess
    from fitting.stages.joint import SamePersonSettings, fit_same_person
    from fitting.stages.view_texture import ViewTextureSettings, merge_views
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    jobs = [fitter._detect(img, "photo")[0], fitter._detect(img[:, ::-1].copy(), "mirrored")[0]]
    batch = DetectionBatch.stack([j.crop for j in jobs])
    fit = fit_same_person(fitter.model, batch, fitter.context.correspondence, SamePersonSettings(check_disagreement=False),
                          init=initial_guess(fitter.context, batch))
    print("yaw/pitch/roll", fit.camera.euler_degrees().round().tolist())
    m = fitter.model

    def merge(n, **kw):
        with torch.no_grad():
            return merge_views(fitter.renderer, fit.camera.to_camera(fit.vertices)[:n], m.triangles, m.uv_atlas(),
                               m.uv_triangles, m.uv_tiles, fit.camera.intrinsics[:n], batch.images[:n],
                               batch.region_labels[:n], reference=0, settings=ViewTextureSettings(**kw))

    both, one, raw = merge(2), merge(1), merge(2, remove_shading=False)
    print("photo pair: best-view share", [round(x, 3) for x in both.coverage.tolist()], "gains",
          [[round(g, 3) for g in v] for v in both.gains.tolist()], "seen", round(float(both.seen.float().mean()), 3))
    cv2.imwrite(str(out / "photo.png"), np.vstack([np.hstack([_tile(both.texture), _tile(one.texture)]),
                                                   np.hstack([_tile(raw.texture), _best(both.best)])]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--photo", type=Path, default=Path("/work/shared/faces/07_man_yaw45_right.jpg"))
    ap.add_argument("--sharpness", action="store_true", help="also print ViewTextureSettings.sharpness's table")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from fitting.api import FaceFitter
    fitter = FaceFitter(stages=("coarse",), device="cpu")
    synthetic(fitter.model, args.out)
    photo_pair(fitter, args.photo, args.out)
    if args.sharpness:
        sharpness_table(fitter.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
