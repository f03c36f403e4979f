"""OBJ/PLY export: what is read back equals what was written; failures leave nothing behind."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fitting.outputs.files import ExportError, load_mesh, save_image, save_obj, save_ply
from fitting.mesh import Mesh
from morphable.ict import LICENSE_PATH


def corners(vertices, triangles):
    return np.asarray(vertices)[np.asarray(triangles)]


@pytest.fixture
def textured(face_model):
    rng = np.random.default_rng(0)
    tex = rng.random((32, 48, 3)).astype(np.float32)
    verts = face_model.mean.numpy() + rng.normal(0, 0.5, (face_model.n_vertices, 3)).astype(np.float32)
    return Mesh.from_model(face_model, verts, texture=tex)


def test_obj_round_trip_with_uvs_and_texture(textured, tmp_path):
    path = save_obj(textured, tmp_path / "coarse.obj", notice=LICENSE_PATH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ICT_LICENSE.txt", "coarse.mtl", "coarse.obj", "coarse.png"]
    back = load_mesh(path)
    # Per-corner positions and UVs are what the file means, whatever the vertex splitting.
    np.testing.assert_allclose(corners(back.vertices, back.faces), corners(textured.vertices, textured.triangles),
                               atol=1e-5)
    np.testing.assert_allclose(corners(back.visual.uv, back.faces), corners(textured.uvs, textured.uv_triangles),
                               atol=1e-6)
    tex = np.asarray(Image.open(tmp_path / "coarse.png").convert("RGB"))
    np.testing.assert_array_equal(tex, (np.clip(textured.texture, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_obj_without_texture_has_no_material(face_model, tmp_path):
    mesh = Mesh.from_model(face_model, face_model.mean)
    save_obj(mesh, tmp_path / "m.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.obj"]
    back = load_mesh(tmp_path / "m.obj")
    np.testing.assert_allclose(corners(back.vertices, back.faces), corners(mesh.vertices, mesh.triangles), atol=1e-5)


def test_ply_round_trip_colours_and_normals(face_model, tmp_path):
    rng = np.random.default_rng(1)
    colors = rng.random((face_model.n_vertices, 3))
    mesh = Mesh(face_model.mean, face_model.triangles, vertex_colors=colors)
    save_ply(mesh, tmp_path / "m.ply")
    back = load_mesh(tmp_path / "m.ply")
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, mesh.triangles)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], (colors * 255 + 0.5).astype(np.uint8))
    raw = back.metadata["_ply_raw"]["vertex"]["data"]
    normals = np.stack([raw["nx"], raw["ny"], raw["nz"]], axis=1)
    np.testing.assert_allclose(normals, mesh.vertex_normals(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_unwritable_path_is_one_clear_error(face_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    mesh = Mesh.from_model(face_model, face_model.mean, texture=np.zeros((4, 4, 3)))
    for writer, name in ((save_obj, "x.obj"), (save_ply, "x.ply")):
        with pytest.raises(ExportError, match="cannot write") as err:
            writer(mesh, blocker / name)
        assert "\n" not in str(err.value)
    with pytest.raises(ExportError):
        save_image(np.zeros((4, 4, 3)), blocker / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_failed_write_leaves_nothing_half_written(face_model, tmp_path, monkeypatch):
    import fitting.outputs.files as export
    mesh = Mesh.from_model(face_model, face_model.mean, texture=np.zeros((4, 4, 3)))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", broken)
    with pytest.raises(ExportError, match="No space left"):
        save_obj(mesh, tmp_path / "out" / "coarse.obj")
    assert list((tmp_path / "out").iterdir()) == []
