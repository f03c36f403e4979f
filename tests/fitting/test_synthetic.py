"""Synthetic faces: ground truth consistency, deformation, detail, CLI determinism, Face Mesh finds them."""
import hashlib
import json

import numpy as np
import pytest
import torch

from fitting.synthetic.faces import FaceGenerator, main


@pytest.fixture(scope="module")
def gen(closed_model):
    return FaceGenerator(closed_model, texture_size=256)


def test_ground_truth_is_consistent(gen, closed_model):
    f = gen(3, size=160, deformation=False, detail=False, noise=False, yaw_range=50)
    h = w = 160
    assert f.image.shape == (h, w, 3) and f.image.dtype == np.float32
    assert 0.0 <= f.image.min() and f.image.max() <= 1.0
    assert 0.1 < f.mask.mean() < 0.7
    m = f.mask
    # image formation: albedo * SH shading on the face (no noise asked)
    assert np.allclose(f.image[m], np.clip(f.albedo[m] * f.shading[m], 0, 1), atol=1e-5)
    assert np.allclose(np.linalg.norm(f.normals[m], axis=-1), 1.0, atol=1e-4)
    assert np.abs(f.normals[~m]).max() == 0 and np.abs(f.depth[~m]).max() == 0
    assert (f.shading[m] > 0).all()
    # coefficients within the documented ranges
    p = f.params
    assert np.abs(p["id_coeffs"]).max() <= 2.0
    exp = np.array(p["exp_coeffs"])
    assert exp.min() >= 0 and exp.max() <= 0.5 and (exp > 0).sum() <= 3
    assert abs(p["pose_deg"]["yaw"]) <= 50 and abs(p["pose_deg"]["pitch"]) <= 10
    json.dumps(p)
    # vertices: model = eq. 1 with the recorded coefficients; camera = R X + t
    ref = closed_model.forward(torch.tensor([p["id_coeffs"]]), torch.tensor([p["exp_coeffs"]]))[0].numpy()
    assert np.allclose(f.verts_model, ref, atol=1e-3)
    assert np.allclose(f.verts_camera, f.camera.to_camera(torch.from_numpy(f.verts_model)[None])[0].numpy(), atol=1e-3)
    # the depth map agrees with the vertices: a visible vertex (nose tip) at its pixel
    uvd = f.camera.project(torch.from_numpy(f.verts_model)[None])[0].numpy()
    nose = int(closed_model.landmark_sets["multipie68"][30])
    u, v, d = uvd[nose]
    assert f.depth[int(v), int(u)] == pytest.approx(d, abs=3.0)
    assert f.depth[m].min() >= uvd[:, 2].min() - 1e-3
    lm = np.array(p["landmarks68_uvd"])
    assert lm.shape == (68, 3) and np.allclose(lm[30], uvd[nose], atol=1e-3)


def test_same_seed_same_face_and_different_seeds_differ(gen):
    a, b, c = gen(7, size=96), gen(7, size=96), gen(8, size=96)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_deformation_recorded_on_base_topology(gen, closed_model):
    f = gen(11, size=96, deformation=True)
    p = f.params
    base = closed_model.forward(torch.tensor([p["id_coeffs"]]), torch.tensor([p["exp_coeffs"]]))[0].numpy()
    assert np.allclose(f.verts_model - base, f.deformation, atol=1e-3)
    mag = np.linalg.norm(f.deformation, axis=-1).max()
    assert 0.5 < mag < 4.0 * len(p["deformation"]) and 2 <= len(p["deformation"]) <= 4


def test_detail_changes_geometry_not_albedo(gen):
    plain = gen(5, size=200, detail=False, yaw_range=20)
    fine = gen(5, size=200, detail=True, yaw_range=20)
    both = plain.mask & fine.mask
    assert both.sum() > 0.95 * plain.mask.sum()
    # same albedo (painted texture, not geometry) ...
    assert np.median(np.abs(plain.albedo[both] - fine.albedo[both])) < 0.01
    # ... but normals bent by 0.2-1 mm wrinkles and noise
    cos = (plain.normals[both] * fine.normals[both]).sum(-1).clip(-1, 1)
    ang = np.degrees(np.arccos(cos))
    assert np.mean(ang) > 1.0 and np.percentile(ang, 99) > 5.0
    # depth moves by the displacement only (occlusion boundaries aside)
    dd = np.abs(plain.depth[both] - fine.depth[both])
    assert np.percentile(dd, 95) < 1.5 and np.median(dd) > 0.01
    assert fine.params["detail"]["forehead_mm"] >= 0.2


def _hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_writes_files_deterministically(tmp_path, ict_dir):
    args = ["--n", "2", "--seed", "4", "--size", "64", "--deformation", "--model-dir", str(ict_dir)]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb
    for name in ("image.png", "mesh.obj", "params.json", "depth.npy", "normals.npy", "albedo.npy", "mask.png",
                 "verts_model.npy", "verts_camera.npy", "deformation.npy"):
        assert f"face_0001/{name}" in ha
    import trimesh
    mesh = trimesh.load(tmp_path / "a" / "face_0000" / "mesh.obj", process=False)
    v = np.load(tmp_path / "a" / "face_0000" / "verts_model.npy")
    assert np.allclose(mesh.vertices, v, atol=1e-4)


@pytest.mark.slow
def test_face_mesh_detects_generated_faces(gen):
    """Our Face Mesh runner finds the generated faces; where mediapipe 0.10.21 is installed, it finds
    the same ones with the same points (within 0.5 px mean)."""
    from landmarks.face_mesh import FaceMeshRunner
    try:
        import mediapipe
        mp = mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
    except ImportError:   # optional extra; Python 3.13 has no mediapipe 0.10.21
        mp = None
    ours = FaceMeshRunner(max_faces=1)
    found, compared = 0, 0
    for i in range(40):
        f = gen(1000 + i, size=512, yaw_range=45)
        frame = np.ascontiguousarray((f.image * 255).round().astype(np.uint8))
        pts = ours.process(frame)
        found += bool(pts)
        if mp is not None:
            ref = mp.process(frame).multi_face_landmarks or []
            assert len(ref) == len(pts), i
            for a, b in zip(pts, ref):
                b = np.array([(p.x, p.y, p.z) for p in b.landmark], np.float32)
                assert np.linalg.norm((a - b)[:, :2] * 512, axis=1).mean() < 0.5, i
                compared += 1
    if mp is not None:
        mp.close()
        assert compared == found
    assert found >= 38, f"Face Mesh found {found} of 40 faces"


def test_generate_face_accepts_a_generator(closed_model):
    from fitting.synthetic.faces import generate_face
    a = generate_face(closed_model, np.random.default_rng(5), size=64)
    b = generate_face(closed_model, 5, size=64)
    assert np.array_equal(a.image, b.image) and b.params["seed"] == 5 and a.params["seed"] is None
