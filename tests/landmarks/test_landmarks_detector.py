"""FaceMeshDetector on real photos: geometry sanity, input variants, scale, EXIF, errors."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from landmarks import indices as I
from landmarks.detector import FaceLandmarks, FaceMeshDetector
from landmarks.errors import FaceIndexError, ImageLoadError, NoFaceError
from landmarks.image import load_image, to_uint8
from shared_photos import FACES, PHOTOS

HOPPER = FACES / "02_grace_hopper_older_glasses.jpg"
OBAMA = FACES / "04_obama_official_portrait_frontal.jpg"
FRONTAL = FACES / "13_east_asian_man_frontal.jpg"


@pytest.fixture(scope="module")
def det():
    with FaceMeshDetector() as d:
        yield d


@pytest.fixture(scope="module")
def reference(det):
    """Largest face of each test photo, detected once for the whole module."""
    cache = {}

    def get(key):
        if key not in cache:
            src = skimage.data.astronaut() if key == "astronaut" else key
            cache[key] = det.detect_one(load_image(src, name=str(key)))
        return cache[key]
    return get


def _err(a: FaceLandmarks, b_uv: np.ndarray) -> np.ndarray:
    """Per-point (478,) distance in pixels between a's points and b_uv."""
    return np.linalg.norm(a.uv - b_uv, axis=1)


@pytest.mark.parametrize("src", PHOTOS + ["astronaut"], ids=lambda p: getattr(p, "stem", p))
def test_face_found_with_plausible_geometry(reference, src):
    face = reference(src)
    h, w = face.image_size
    assert face.points.shape == (478, 3) and face.points.dtype == np.float32
    assert np.isfinite(face.points).all()
    u, v = face.uv.T
    assert (u >= 0).all() and (u <= w).all() and (v >= 0).all() and (v <= h).all()
    u0, v0, u1, v1 = face.bbox
    assert u0 == pytest.approx(u.min()) and v1 == pytest.approx(v.max())
    # Adult faces: eye-centre distance is ~30-50% of face-oval width (less when turned).
    assert 0.2 < face.inter_ocular / (u1 - u0) < 0.6
    assert 0.7 < face.inter_pupillary / face.inter_ocular < 1.3
    # Subject's left eye appears on the image right in an unmirrored photo.
    assert face.uv[list(I.LEFT_EYE_LOOP), 0].mean() > face.uv[list(I.RIGHT_EYE_LOOP), 0].mean()
    assert face.uv[I.LEFT_IRIS_CENTER, 0] > face.uv[I.RIGHT_IRIS_CENTER, 0]
    # Vertical order: brows above eyes above nose tip (1) above lips above chin (152).
    brow_v = face.uv[list(I.LEFT_BROW + I.RIGHT_BROW), 1].mean()
    eye_v = face.eye_centers[:, 1].mean()
    lips_v = face.uv[list(I.LIPS_OUTER_LOOP), 1].mean()
    assert brow_v < eye_v < face.uv[1, 1] < lips_v < face.uv[152, 1]
    # Documented z sign: smaller = closer. The nose tip is closer than the face outline.
    assert face.points[1, 2] < face.points[list(I.FACE_OVAL_LOOP), 2].mean()
    assert face.refined


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_turned_photo_without_exif_gives_the_turned_points(det, reference, quarter_turns):
    """A photo stored turned with no EXIF tag: the points are the upright photo's, turned with it.
    Upside down (2) needs the crop pass's orientation check: Face Mesh alone puts the chin's points
    on the forehead there."""
    ref = reference(FRONTAL)                                     # 1000 x 1000
    pixels = load_image(FRONTAL).pixels
    face = det.detect_one(np.ascontiguousarray(np.rot90(pixels, quarter_turns)))
    h, w = ref.image_size
    expected = ref.uv
    for _ in range(quarter_turns):  # np.rot90 turns counter-clockwise: (u, v) -> (v, w - u)
        expected = np.column_stack([expected[:, 1], w - expected[:, 0]])
        h, w = w, h
    e = _err(face, expected)
    # sideways faces come out of Face Mesh a little less exactly (2.5 % of the IOD on average here)
    assert e.mean() < 0.03 * ref.inter_ocular and e.max() < 0.15 * ref.inter_ocular


def test_exif_rotated_file_maps_back(det, reference, tmp_path):
    """A sideways-stored JPEG with orientation 6 gives the upright image's landmarks."""
    upright = np.asarray(Image.open(OBAMA).convert("RGB"))
    stored = np.ascontiguousarray(np.rot90(upright, k=1))   # 90 deg CCW; tag 6 says "rotate CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(p, quality=95, exif=exif)

    img = load_image(p)
    assert img.size == upright.shape[:2] and img.exif_orientation == 6
    face = det.detect_one(p)
    ref = reference(OBAMA)
    assert face.image_size == ref.image_size
    e = _err(face, ref.uv)
    assert e.mean() < 0.02 * ref.inter_ocular and np.median(e) < 2.0


def test_grey_rgba_16bit_inputs_match_rgb(det, reference, tmp_path):
    ref = reference(FRONTAL)
    rgb8 = np.asarray(Image.open(FRONTAL).convert("RGB"))

    grey = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgba = np.dstack([rgb8, np.full(grey.shape, 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "deep.png"), np.ascontiguousarray((rgb8.astype(np.uint16) * 257)[..., ::-1]))

    tol = 0.02 * ref.inter_ocular
    for name in ("rgba.png", "deep.png"):          # same pixel values as the RGB file
        e = _err(det.detect_one(tmp_path / name), ref.uv)
        assert e.mean() < 0.2 and e.max() < tol, name
    e = _err(det.detect_one(tmp_path / "grey.png"), ref.uv)   # different pixels: only close
    assert e.mean() < tol and np.percentile(e, 95) < 2.5 * tol


def test_upscaled_4x_gives_4x_landmarks(det, reference):
    ref = reference(HOPPER)
    h, w = ref.image_size
    big = cv2.resize(load_image(HOPPER).pixels, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC)
    face = det.detect_one(big)
    assert face.image_size == (4 * h, 4 * w)
    e = _err(face, 4.0 * ref.uv) / 4.0          # in original-image pixels
    assert e.mean() < 0.02 * ref.inter_ocular and e.max() < 0.08 * ref.inter_ocular
    assert face.inter_ocular == pytest.approx(4 * ref.inter_ocular, rel=0.03)


def test_6000x4000_photo_is_fast_and_exact(det, reference):
    ref = reference(FRONTAL)                                     # 1000 x 1000
    canvas = np.full((4000, 6000, 3), 0.5, np.float32)
    canvas[:, 1000:5000] = cv2.resize(load_image(FRONTAL).pixels, (4000, 4000), interpolation=cv2.INTER_CUBIC)
    t0 = time.perf_counter()
    face = det.detect_one(canvas)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"6000x4000 detection took {elapsed:.2f} s"
    e = _err(face, 4.0 * ref.uv + np.array([1000.0, 0.0])) / 4.0
    assert e.mean() < 0.02 * ref.inter_ocular and e.max() < 0.08 * ref.inter_ocular


@pytest.mark.parametrize("canvas", [5000, 10000])
def test_small_face_in_a_big_photo_is_found(det, reference, canvas):
    """A 1000-px portrait pasted into a 5000 or 10000-px square: the face is a tenth to a twentieth of
    the width, under what Face Mesh's own (short-range) detector finds on the shrunk copy; the
    full-range detector finds it and the crop pass gives the same points as the portrait alone."""
    ref = reference(FRONTAL)                                     # 1000 x 1000
    photo = np.full((canvas, canvas, 3), 0.8, np.float32)
    top, left = canvas // 3, canvas // 4
    photo[top:top + 1000, left:left + 1000] = load_image(FRONTAL).pixels
    (face,) = det.detect(photo)
    assert face.refined
    e = _err(face, ref.uv + np.array([left, top]))
    assert e.mean() < 0.02 * ref.inter_ocular and e.max() < 0.08 * ref.inter_ocular


def test_small_image_still_works(det, reference):
    ref = reference("astronaut")                                 # 512 x 512, IOD ~ 42 px
    small = cv2.resize(skimage.data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    face = det.detect_one(small)
    s = 192 / 512
    e = _err(face, s * ref.uv) / s
    assert face.refined and e.mean() < 0.05 * ref.inter_ocular


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face_raises(det, kind):
    if kind == "noise":
        img = np.random.default_rng(0).random((480, 640, 3), dtype=np.float32)
    else:
        img = np.full((480, 640, 3), 0.8, np.float32)
    assert det.detect(img) == []
    with pytest.raises(NoFaceError, match=r"no face found in '<array>'"):
        det.detect_one(img)


def test_no_face_message_names_file(det, tmp_path):
    p = tmp_path / "wall.png"
    Image.fromarray(np.full((100, 120, 3), 200, np.uint8)).save(p)
    with pytest.raises(NoFaceError, match=r"^no face found in 'wall\.png'$"):
        det.detect_one(p)


def test_corrupt_file_raises_image_load_error(det, tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(FRONTAL.read_bytes()[:3000])
    with pytest.raises(ImageLoadError, match=r"cannot read image 'broken\.jpg'"):
        det.detect_one(p)


def test_two_faces_largest_first_and_face_index(det, reference):
    left = to_uint8(load_image(HOPPER).pixels)                   # 600 x 512, small face
    right = cv2.resize(np.asarray(Image.open(FRONTAL).convert("RGB")), (600, 600),
                       interpolation=cv2.INTER_AREA)             # larger face
    pair = np.concatenate([left, right], axis=1)
    faces = det.detect(pair)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    split = left.shape[1]
    assert faces[0].bbox[0] > split and faces[1].bbox[2] < split   # largest = the right photo
    # Each face's points agree with the single-photo detections (right one shifted/scaled).
    e_left = _err(faces[1], reference(HOPPER).uv)
    e_right = _err(faces[0], reference(FRONTAL).uv * 0.6 + np.array([split, 0.0]))
    assert e_left.mean() < 2.0 and e_right.mean() < 2.0
    np.testing.assert_allclose(det.detect_one(pair, face_index=1).points, faces[1].points, atol=1e-3)
    with pytest.raises(FaceIndexError, match=r"face_index 2 out of range: 2 face\(s\) found in '<array>'"):
        det.detect_one(pair, face_index=2)


def test_refine_off_is_close_to_refined(reference):
    ref = reference(FRONTAL)
    with FaceMeshDetector(refine=False) as d:
        coarse = d.detect_one(FRONTAL)
    assert not coarse.refined
    assert _err(coarse, ref.uv).mean() < 0.03 * ref.inter_ocular


def test_close_and_bad_arguments():
    d = FaceMeshDetector(max_faces=1)
    d.close()
    d.close()                                                    # idempotent
    assert d.closed
    with pytest.raises(RuntimeError, match="closed"):
        d.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="max_faces"):
        FaceMeshDetector(max_faces=0)
    with pytest.raises(ValueError, match="min_confidence"):
        FaceMeshDetector(min_confidence=1.5)


@pytest.mark.parametrize("quiet", [True, False])
def test_native_log_lines_stay_off_the_terminal(quiet):
    # In a fresh process: the TFLite runtime writes its notices to fd 2 from C++
    # when an interpreter is made, which pytest's capture cannot see.
    import subprocess
    import sys
    code = ("import skimage.data\n"
            "from landmarks.detector import FaceMeshDetector\n"
            f"with FaceMeshDetector(quiet={quiet}) as d:\n"
            "    assert len(d.detect(skimage.data.astronaut())) == 1\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    if quiet:
        assert run.stderr == ""
    else:   # the control: the lines this hides do exist in this runtime
        assert "XNNPACK" in run.stderr or "W0000" in run.stderr


def test_stderr_comes_back_after_overlapping_silences_in_two_threads():
    """Detectors in two threads: this one silences first, the other enters, this one leaves first,
    the other leaves last; fd 2 must end where it began (a naive save/restore leaves it at /dev/null)."""
    import os
    import threading
    from landmarks.detector import _native_stderr_silenced
    before = os.fstat(2)
    entered, release = threading.Event(), threading.Event()

    def hold():
        with _native_stderr_silenced(True):
            entered.set()
            release.wait(10)

    with _native_stderr_silenced(True):
        t = threading.Thread(target=hold)
        t.start()
        assert entered.wait(10)
    release.set()
    t.join(10)
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
