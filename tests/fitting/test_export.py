"""OBJ/PLY export: what is read back equals what was written (UVs and colours included), the fast OBJ
writer writes what trimesh's did; failures leave nothing behind."""
from __future__ import annotations

import re

import numpy as np
import pytest
import trimesh
from PIL import Image

from fitting.outputs.files import (ExportError, colors_from_texture, load_mesh, save_image, save_obj, save_ply,
                                  to_trimesh)
from fitting.mesh import Mesh
from morphable.ict import LICENSE_PATH
from morphable.obj_text import format_obj, format_rows, read_topology, read_vertices


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


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_ply_bytes_are_trimesh_binary_writers(face_model, channels):
    """The PLY writer (numpy only, no trimesh import) gives trimesh's exporter's bytes, header comment aside."""
    import trimesh
    from fitting.outputs.files import ply_bytes
    rng = np.random.default_rng(2)
    colors = None if channels is None else rng.integers(0, 256, (face_model.n_vertices, channels), dtype=np.uint8)
    mesh = Mesh(face_model.mean, face_model.triangles)
    normals = mesh.vertex_normals()
    ours = ply_bytes(mesh.vertices, mesh.triangles, normals, colors)
    tm = trimesh.Trimesh(mesh.vertices, mesh.triangles, vertex_normals=normals, vertex_colors=colors, process=False)
    theirs = trimesh.exchange.ply.export_ply(tm, encoding="binary", vertex_normal=True)
    assert ours.replace(b"comment facefit\n", b"") == theirs.replace(b"comment https://github.com/mikedh/trimesh\n", b"")


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


# ---------------------------------------------------------------- UVs and colours in every file (issue 19)

def read_obj_corners(path):
    """Per-corner positions (F, 3, 3) and UVs (F, 3, 2) of an OBJ's ``v``/``vt`` lines and ``f v/vt/..`` corners,
    read with the model loader's own OBJ reader (not the writer under test)."""
    text = path.read_text()
    top = read_topology(text, path.name)
    assert (top.uv_triangles >= 0).all(), "a face corner without a vt index"
    return read_vertices(text, path.name)[top.triangles], top.uvs[top.uv_triangles]


def read_ply_vertex_properties(path):
    """The vertex element of a PLY as trimesh parsed it: {property name: (V,) array}."""
    raw = load_mesh(path).metadata["_ply_raw"]["vertex"]["data"]
    return {name: np.asarray(raw[name]) for name in raw.dtype.names}


def bilinear_reference(texture, uv):
    """(N, 3) bilinear samples of an (H, W, 3) texture at (N, 2) uv (v up, texel centres at (i + 0.5) / W,
    clamped at the edges), written out in numpy for the test."""
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize("with_texture", [False, True])
def test_obj_of_the_model_topology_carries_the_model_uvs(face_model, textured, tmp_path, with_texture):
    # coarse.obj, medium.obj, neutral.obj have no texture: they used to be written with no vt lines at all
    mesh = textured if with_texture else Mesh.from_model(face_model, textured.vertices)
    save_obj(mesh, tmp_path / "coarse.obj")
    positions, uvs = read_obj_corners(tmp_path / "coarse.obj")
    np.testing.assert_allclose(positions, corners(mesh.vertices, mesh.triangles), atol=1e-5)
    np.testing.assert_allclose(uvs, corners(face_model.uvs.numpy(), face_model.uv_triangles.numpy()), atol=1e-7)
    assert ("mtllib coarse.mtl" in (tmp_path / "coarse.obj").read_text()) == with_texture


def test_textured_ply_carries_the_texture_at_its_vertices(textured, tmp_path):
    # fine.ply had no colours (grey in MeshLab/Blender) though the mesh has an albedo texture
    save_ply(textured, tmp_path / "fine.ply")
    props = read_ply_vertex_properties(tmp_path / "fine.ply")
    assert {"red", "green", "blue"} <= set(props), sorted(props)
    written = np.stack([props["red"], props["green"], props["blue"]], axis=1)
    # each vertex: the mean of the texture at its UVs (two or more on a UV seam)
    pairs = np.unique(np.stack([textured.triangles.ravel(), textured.uv_triangles.ravel()], 1), axis=0)
    samples = bilinear_reference(textured.texture.astype(np.float64), textured.uvs[pairs[:, 1]].astype(np.float64))
    sums = np.zeros((len(textured.vertices), 3))
    np.add.at(sums, pairs[:, 0], samples)
    counts = np.bincount(pairs[:, 0], minlength=len(textured.vertices))
    used = counts > 0
    want = sums[used] / counts[used, None]
    assert len(pairs) > len(np.unique(pairs[:, 0])), "the model has UV seams: some vertices have two UVs"
    # 8-bit colours: rounded, so within half a step (and float32 sampling's error) of the reference
    np.testing.assert_allclose(written[used], want * 255, atol=0.5 + 1e-3)
    np.testing.assert_array_equal(written[used], (np.clip(colors_from_texture(textured)[used], 0, 1) * 255 + 0.5)
                                  .astype(np.uint8))


def test_save_result_writes_uvs_colours_and_each_picture_once(face_model, textured, tmp_path, monkeypatch):
    from fitting.api import FitResult
    model_mesh = Mesh.from_model(face_model, textured.vertices)
    grid = Mesh(textured.vertices[:3], [[0, 1, 2]], vertex_colors=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    result = FitResult(name="x", meshes={"neutral": model_mesh, "coarse": model_mesh, "fine": textured,
                                         "fine_grid": grid},
                       images={"overlay": np.zeros((8, 8, 3)), "specular": np.ones((8, 8))})
    encoded = []
    real_save = Image.Image.save

    def counting_save(self, fp, *args, **kwargs):
        encoded.append(fp)  # a path or a buffer
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", counting_save)
    folder = result.save(tmp_path / "x")
    pictures = sorted(p.name for p in folder.glob("*.png"))
    assert pictures == ["fine.png", "overlay.png", "specular.png"]
    assert len(encoded) == len(pictures)  # each picture encoded once
    for stage in ("neutral", "coarse"):
        _, uvs = read_obj_corners(folder / f"{stage}.obj")
        np.testing.assert_allclose(uvs, corners(face_model.uvs.numpy(), face_model.uv_triangles.numpy()), atol=1e-7)
    assert {"red", "green", "blue"} <= set(read_ply_vertex_properties(folder / "fine.ply"))
    grid_props = read_ply_vertex_properties(folder / "fine_grid.ply")
    np.testing.assert_array_equal(np.stack([grid_props[c] for c in ("red", "green", "blue")], 1), np.eye(3) * 255)


# ---------------------------------------------------------------- the fast writer against trimesh's (issue 21)

def trimesh_obj_files(mesh, folder, stem):
    """The OBJ files as the exporter wrote them before (trimesh's export_obj); returns the OBJ path."""
    text, files = trimesh.exchange.obj.export_obj(
        to_trimesh(mesh, name=stem), include_normals=True, include_color=mesh.uvs is None,
        include_texture=mesh.texture is not None, return_texture=True, mtl_name=f"{stem}.mtl", header="facefit")
    folder.mkdir()
    (folder / f"{stem}.obj").write_text(text)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder / f"{stem}.obj"


def obj_rows(path, keyword):
    """(N, K) numbers of an OBJ's ``keyword`` lines."""
    rows = [line.split()[1:] for line in path.read_text().splitlines() if line.startswith(keyword + " ")]
    assert rows, f"no {keyword} lines in {path}"
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("kind", ["textured", "model_topology", "vertex_colours"])
def test_fast_obj_writer_matches_trimesh(face_model, textured, tmp_path, kind):
    rng = np.random.default_rng(2)
    mesh = {"textured": textured,
            "model_topology": Mesh.from_model(face_model, textured.vertices),
            "vertex_colours": Mesh(textured.vertices, textured.triangles,
                                   vertex_colors=rng.random((len(textured.vertices), 3)))}[kind]
    old = load_mesh(trimesh_obj_files(mesh, tmp_path / "old", "fine"))
    new = load_mesh(save_obj(mesh, tmp_path / "new" / "fine.obj"))
    np.testing.assert_allclose(new.vertices, old.vertices, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(new.faces, old.faces)
    # trimesh recomputes normals on reading: compare the files' own vn lines
    np.testing.assert_allclose(obj_rows(tmp_path / "new" / "fine.obj", "vn"), obj_rows(tmp_path / "old" / "fine.obj", "vn"),
                               rtol=1e-6, atol=0)
    if kind == "textured":
        np.testing.assert_allclose(new.visual.uv, old.visual.uv, rtol=1e-6, atol=0)
        assert (tmp_path / "new" / "fine.mtl").read_text() == (tmp_path / "old" / "fine.mtl").read_text()
        # the same pixels (the zlib level differs, so not the same bytes)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "new" / "fine.png")),
                                      np.asarray(Image.open(tmp_path / "old" / "fine.png")))
    if kind == "vertex_colours":
        np.testing.assert_array_equal(new.visual.vertex_colors, old.visual.vertex_colors)
    # beyond trimesh's reading: the text is the old text, vt lines (which the old one lacked here) aside
    old_text = (tmp_path / "old" / "fine.obj").read_text()
    new_text = (tmp_path / "new" / "fine.obj").read_text()
    if kind == "model_topology":
        assert "\nvt " not in old_text
        new_text = re.sub(r"vt .*\n", "", new_text)
        new_text = re.sub(r" (\d+)/\1/\1", r" \1//\1", new_text)
    assert new_text == old_text


def test_format_obj_rows_and_empty_blocks():
    verts = np.array([[0.5, -1.25, 3.0], [1e-9, 2.0, -0.0]], np.float32)
    text = format_obj(verts, np.zeros((0, 3), np.int64), uvs=np.array([[0.0, 1.0], [0.25, 0.5]]))
    assert text == "v 0.50000000 -1.25000000 3.00000000\nv 0.00000000 2.00000000 -0.00000000\n" \
                   "vt 0.00000000 1.00000000\nvt 0.25000000 0.50000000\n\n"
    with pytest.raises(ValueError, match="multiple of 2"):
        format_rows("f", np.zeros((1, 3)), field="%d/%d")
