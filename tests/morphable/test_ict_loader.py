"""The ICT loader: bases, regions, landmark sets, cache and every bad-input case."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from morphable import ModelLoadError, load_ict
from morphable.ict import ICT_PARTS, known_checksums
from morphable.obj_text import read_vertices


def obj_vertex(path: Path, k: int) -> np.ndarray:
    return read_vertices(path.read_text())[k]


def test_counts_and_units(face_model):
    m = face_model
    assert m.n_vertices == 9409
    assert m.n_id == 100 and m.n_exp == 53
    assert m.units == "mm"
    assert int(m.triangles.max()) < m.n_vertices and int(m.uv_triangles.max()) < m.uvs.shape[0]
    # A face is ~140 mm wide: the model is in mm, not cm.
    width = float(m.mean[:, 0].max() - m.mean[:, 0].min())
    assert 120 < width < 250


def test_identity_vertex_reproduced_from_basis(face_model, ict_dir):
    fx = ict_dir / "FaceXModel"
    for k in (0, 1234, 9408):
        want = obj_vertex(fx / "identity000.obj", k) * 10.0
        coeffs = torch.zeros(1, 100)
        coeffs[0, 0] = 1.0
        got = face_model(coeffs)[0, k].numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_expression_vertex_and_names(face_model, ict_dir):
    fx = ict_dir / "FaceXModel"
    names = json.loads((fx / "vertex_indices.json").read_text())["expressions"]
    assert face_model.exp_names == names
    j = names.index("jawOpen")
    exp = torch.zeros(1, 53)
    exp[0, j] = 0.5
    k = 1447  # on the jaw line
    neutral = obj_vertex(fx / "generic_neutral_mesh.obj", k)
    jaw = obj_vertex(fx / "jawOpen.obj", k)
    np.testing.assert_allclose(face_model(None, exp)[0, k].numpy(), 10 * (neutral + 0.5 * (jaw - neutral)), atol=1e-4)
    assert np.linalg.norm(jaw - neutral) > 0.1  # the vertex does move with jawOpen


def test_landmarks_and_sets(face_model, ict_dir):
    idx = json.loads((ict_dir / "FaceXModel" / "vertex_indices.json").read_text())
    assert face_model.landmark_sets["multipie68"].tolist() == idx["idx_to_landmark_verts"]
    assert face_model.landmark_sets["jaw_left"].numel() == 8
    # Nose tip (landmark 30) is the most forward landmark.
    lm = face_model.mean[face_model.landmark_sets["multipie68"]]
    assert int(torch.argmax(lm[:, 2])) == 30
    assert face_model.vertex_sets["face_narrow"].numel() == 6706


def test_triangles_face_outward(face_model):
    from morphable.geometry import face_normals
    n = face_normals(face_model.mean[None], face_model.triangles)[0]
    assert float(n[:, 2].mean()) > 0.3


def test_region_selection_remaps(ict_dir):
    m = load_ict(ict_dir, region="face_closed", progress=False)
    a, b = ICT_PARTS["eyeball_left"]
    assert m.n_vertices == 9409 + (ICT_PARTS["mouth_socket"][1] - ICT_PARTS["mouth_socket"][0] + 1) + 2 * (b - a + 1)
    assert set(m.label_names) == {"face", "mouth_socket", "eyeball_left", "eyeball_right"}
    assert len(m.vertices_with_label("eyeball_left")) == b - a + 1
    narrow = load_ict(ict_dir, region=[(0, 6705)], progress=False)
    assert narrow.n_vertices == 6706
    assert int(narrow.triangles.max()) < 6706
    # The jaw-line set lies partly outside the narrow area: dropped whole, not cut.
    assert all(int(v.max()) < 6706 for v in narrow.landmark_sets.values())
    with pytest.raises(ModelLoadError, match="unknown region"):
        load_ict(ict_dir, region="ears", progress=False)


def test_cache_is_used_and_rebuilt_on_change(ict_dir, tmp_path):
    cache = tmp_path / "cache"
    m1 = load_ict(ict_dir, cache_dir=cache, progress=False)
    assert m1.source == str(ict_dir)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and files[0].stat().st_size < 30e6
    assert (cache / "ICT_LICENSE.txt").is_file()
    m2 = load_ict(ict_dir, cache_dir=cache, progress=False)
    assert m2.source.startswith("cache")
    assert torch.equal(m1.id_basis, m2.id_basis) and torch.equal(m1.triangles, m2.triangles)
    # No explicit path: the cache alone is enough (no download attempted).
    m3 = load_ict(None, cache_dir=cache, download=False, progress=False)
    assert torch.equal(m3.mean, m1.mean)
    # A corrupt cache is ignored and rebuilt from the source.
    files[0].write_bytes(b"not an npz")
    m4 = load_ict(ict_dir, cache_dir=cache, progress=False)
    assert torch.equal(m4.mean, m1.mean)
    # So is one cut short (numpy raises zipfile.BadZipFile for it), and nothing half-written stays beside it.
    rebuilt = files[0].read_bytes()
    files[0].write_bytes(rebuilt[:len(rebuilt) // 2])
    m5 = load_ict(ict_dir, cache_dir=cache, progress=False)
    assert torch.equal(m5.mean, m1.mean) and files[0].read_bytes() == rebuilt
    assert sorted(p.name for p in cache.iterdir()) == sorted([files[0].name, "ICT_LICENSE.txt"])


def test_env_var_names_the_model(face_model, ict_dir, monkeypatch):
    # Session cache (built by face_model from the same folder) is current.
    monkeypatch.setenv("FACEFIT_ICT_DIR", str(ict_dir))
    m = load_ict(None, download=False, progress=False)
    assert m.n_id == 100 and str(ict_dir) in m.source


def _copy_model(ict_dir: Path, dest: Path) -> Path:
    """A cheap copy (symlinks) of the model folder whose files a test may replace."""
    (dest / "FaceXModel").mkdir(parents=True)
    for p in (ict_dir / "FaceXModel").iterdir():
        (dest / "FaceXModel" / p.name).symlink_to(p)
    return dest


def test_missing_file_is_reported(ict_dir, tmp_path):
    root = _copy_model(ict_dir, tmp_path / "m")
    (root / "FaceXModel" / "jawOpen.obj").unlink()
    with pytest.raises(ModelLoadError, match="incomplete: missing FaceXModel/jawOpen.obj"):
        load_ict(root, cache_dir=tmp_path / "c", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no FaceXModel"):
        load_ict(empty, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_ict(tmp_path / "nowhere", cache_dir=tmp_path / "c", progress=False)


def test_checksum_mismatch_and_corrupt_obj(ict_dir, tmp_path):
    root = _copy_model(ict_dir, tmp_path / "m")
    target = root / "FaceXModel" / "identity005.obj"
    text = target.read_text()
    target.unlink()
    target.write_text(text.replace("v ", "v x", 1))
    with pytest.raises(ModelLoadError, match="checksum mismatch for .*identity005.obj"):
        load_ict(root, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ModelLoadError, match="corrupt OBJ identity005.obj"):
        load_ict(root, cache_dir=tmp_path / "c", verify=False, progress=False)
    assert not list((tmp_path / "c").glob("*.npz")), "a failed load must not leave a cache behind"


def test_checksum_list_matches_shared_sums(ict_archive_path):
    shared = {}
    for line in (ict_archive_path.parent / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        shared[name.strip()] = digest
    ours = known_checksums()
    assert ours["FaceXModel/generic_neutral_mesh.obj"] == \
        "eedbc2576d8e5ea57f55255b8f98263213a1efb5431d8bfceed1d7aef10271f9"
    assert ours["FaceXModel/identity000.obj"] == "918160cf82d541336b4c367cf93199c9827832bde02511b8fbdf9019d6f1a773"
    assert ours["FaceXModel/jawOpen.obj"] == "8d84355e10f48b05550980cee385bcd426f4797090da76a20de0535bb2f99f4a"
    assert all(shared[k] == v for k, v in ours.items())


def test_archive_accepted_as_model_path(ict_dir, tmp_path):
    # A small archive is enough to show that a file path is read as an archive.
    import tarfile
    archive = tmp_path / "partial.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ict_dir / "FaceXModel" / "vertex_indices.json", arcname="ICT/FaceXModel/vertex_indices.json")
        tar.add(ict_dir / "FaceXModel" / "generic_neutral_mesh.obj", arcname="ICT/FaceXModel/generic_neutral_mesh.obj")
    with pytest.raises(ModelLoadError, match="incomplete: missing FaceXModel/identity000.obj"):
        load_ict(archive, cache_dir=tmp_path / "c", progress=False)


def test_folder_holding_one_archive_reads_the_archive(ict_dir, tmp_path):
    # e.g. the project's shared folder: an ICT-FaceKit-*.tar.xz beside its README, nothing unpacked
    import tarfile
    folder = tmp_path / "shared"
    folder.mkdir()
    with tarfile.open(folder / "ICT-FaceKit-test.tar.gz", "w:gz") as tar:
        tar.add(ict_dir / "FaceXModel" / "vertex_indices.json", arcname="ICT/FaceXModel/vertex_indices.json")
    (folder / "README.md").write_text("the model archive")
    with pytest.raises(ModelLoadError, match="not an ICT-FaceKit archive"):  # the archive was opened
        load_ict(folder, cache_dir=tmp_path / "c", progress=False)
    (folder / "ICT-FaceKit-other.tar.gz").write_bytes((folder / "ICT-FaceKit-test.tar.gz").read_bytes())
    with pytest.raises(ModelLoadError, match="no FaceXModel/ folder in it"):  # two archives: ambiguous
        load_ict(folder, cache_dir=tmp_path / "c", progress=False)


def _info(*args, env=None):
    return subprocess.run([sys.executable, "-m", "morphable", "info", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_info_command_and_cached_second_call(face_model, ict_dir):
    env = None  # the session cache: the first call may already find it
    first = _info("--model-dir", str(ict_dir), env=env)
    assert first.returncode == 0, first.stderr
    assert "identity modes:   100" in first.stdout and "expression modes: 53" in first.stdout
    assert "vertices:         9409" in first.stdout
    second = _info("--model-dir", str(ict_dir), env=env)
    assert second.returncode == 0 and "source:           cache" in second.stdout


def test_info_command_bad_path_one_line(tmp_path):
    r = _info("--model-dir", str(tmp_path / "missing"), "--no-download", env={"FACEFIT_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]


def test_no_model_and_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEFIT_ICT_DIR", raising=False)
    with pytest.raises(ModelLoadError, match="not found"):
        load_ict(None, cache_dir=tmp_path, download=False, progress=False)
