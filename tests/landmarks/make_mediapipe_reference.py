"""Write tests/landmarks/mediapipe_reference.npz: mediapipe 0.10.21's landmarks on the shared photos and astronaut.

How it was made (Python 3.11, mediapipe==0.10.21, opencv-contrib-python 4.11, numpy 1.26):

    pip install -e ".[test,mediapipe]"
    python tests/landmarks/make_mediapipe_reference.py

For every JPEG of ../shared/faces (or $FACEFIT_SHARED/faces), skimage's
astronaut and three scenes built from the photos (:func:`sources`: two faces
side by side, a small face in a 5000-px canvas that only the full-range
detector finds, a face upside down):
``FaceMeshDetector(backend="mediapipe").detect(image)`` (both
passes, default settings). Stored per image ``<name>``:

* ``<name>``: every face's ``(478, 3)`` points in original-image pixels,
  ``(n_faces, 478, 3)`` float32; ``<name>:size``: ``(H, W)``;
* ``<name>:calls``: ``(n, 4)``, one row per frame the detector gave Face
  Mesh: ``(-1, 0, 0, 0)`` for the whole (shrunk) image, ``(x0, y0, side,
  turned)`` for a crop (see ``FaceMeshDetector._refine``);
  ``<name>:call<i>``: mediapipe's normalised ``(k, 478, 3)`` meshes on it.

test_mediapipe_agreement.py rebuilds those frames and runs our runner on
them (where mediapipe cannot be installed, e.g. Python 3.13), and checks
that mediapipe still gives this where it can.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "mediapipe_reference.npz"


def sources():
    """``(name, image source)`` of every reference image (arrays are uint8 RGB)."""
    import cv2
    import skimage.data

    from landmarks.image import load_image, to_uint8
    sys.path.insert(0, str(HERE))
    from shared_photos import FACES, PHOTOS
    frontal = to_uint8(load_image(FACES / "13_east_asian_man_frontal.jpg").pixels)       # 1000 x 1000
    hopper = to_uint8(load_image(FACES / "02_grace_hopper_older_glasses.jpg").pixels)    # 600 x 512
    pair = np.concatenate([hopper, cv2.resize(frontal, (600, 600), interpolation=cv2.INTER_AREA)], axis=1)
    small = np.full((5000, 5000, 3), 204, np.uint8)
    small[1666:2666, 1250:2250] = frontal
    return ([(p.name, p) for p in PHOTOS] + [("astronaut", skimage.data.astronaut())]
            + [("two_faces", pair), ("small_face_in_5000px", small),
               ("upside_down", np.ascontiguousarray(frontal[::-1, ::-1]))])


def record(det, name: str, src) -> dict:
    """Run ``det.detect`` on ``src``, recording each frame given to Face Mesh and the meshes found."""
    from landmarks.image import load_image
    calls, meshes, crop = [], [], {}
    mesh, crop_frame, upside_down = det._models.mesh, det._crop_frame, det._upside_down

    def crop_frame_(img, x0, y0, side):
        crop.update(box=(x0, y0, side))
        return crop_frame(img, x0, y0, side)

    def upside_down_(frame):
        crop.update(turned=upside_down(frame))
        return crop["turned"]

    def mesh_(frame, max_faces):
        found = mesh(frame, max_faces)
        calls.append((-1, 0, 0, 0) if max_faces != 2 else (*crop.pop("box"), crop.pop("turned")))
        meshes.append(np.array(found, np.float32).reshape(-1, 478, 3))
        return found

    det._models.mesh, det._crop_frame, det._upside_down = mesh_, crop_frame_, upside_down_
    try:
        img = load_image(src, name=name)
        faces = det.detect(img)
    finally:
        det._models.mesh, det._crop_frame, det._upside_down = mesh, crop_frame, upside_down
    out = {name: np.stack([f.points for f in faces]).astype(np.float32),
           f"{name}:size": np.array(img.size, np.int64), f"{name}:calls": np.array(calls, np.int64)}
    out.update({f"{name}:call{i}": m for i, m in enumerate(meshes)})
    print(name, img.size, len(faces), "faces,", len(calls), "Face Mesh frames")
    return out


def main() -> int:
    import mediapipe

    from landmarks.detector import FaceMeshDetector
    arrays = {"mediapipe_version": np.array(mediapipe.__version__)}
    with FaceMeshDetector(backend="mediapipe") as det:
        for name, src in sources():
            arrays.update(record(det, name, src))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
