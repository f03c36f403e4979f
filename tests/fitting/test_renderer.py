"""CPU renderer: known geometry, gradients, texture convention, the mean face."""
import math

import pytest
import torch

from fitting.camera import Camera
from fitting.rendering.renderer import Renderer, uv_to_texel
from fitting.rendering.shaded_mesh import render_mesh, shade
from morphable.geometry import vertex_normals
from sfs.projection import camera_to_pixel


@pytest.fixture(scope="module")
def renderer():
    return Renderer("cpu")


def _quad(z, half):
    """A square at depth -z facing the camera (+z normal), CCW seen from the camera."""
    v = torch.tensor([[-half, -half, -z], [half, -half, -z], [half, half, -z], [-half, half, -z]])
    t = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return v[None], t


def test_auto_picks_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert Renderer("auto").backend == "cpu"
    with pytest.raises(ValueError):
        Renderer("gpu")


def test_plane_coverage_depth_normals(renderer):
    h = w = 64
    k = torch.tensor([[100.0, 100.0, 32.0, 32.0]])
    verts, tris = _quad(500.0, 100.0)  # spans +-20 px around the centre: pixel cols 12..51
    fr = renderer.rasterize(verts, tris, k, h, w)
    assert fr.tri_id.shape == (1, h, w) and fr.tri_id.dtype == torch.int64
    assert int(fr.mask.sum()) == 40 * 40
    assert bool(fr.mask[0, 12:52, 12:52].all()) and not bool(fr.mask[0, 11].any())
    assert torch.allclose(fr.depth[fr.mask], torch.tensor(500.0))
    assert float(fr.depth[~fr.mask].abs().max()) == 0.0
    assert torch.allclose(fr.bary.sum(-1)[fr.mask], torch.tensor(1.0), atol=1e-5)
    n = renderer.interpolate(vertex_normals(verts, tris), fr)
    assert torch.allclose(n[fr.mask], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert float(n[~fr.mask].abs().max()) == 0.0


def test_tilted_plane_depth_is_perspective_correct(renderer):
    # plane z = -400 - 0.5 x: depth along the ray through each pixel centre solved by hand
    h = w = 48
    f = 80.0
    k = torch.tensor([[f, f, 24.0, 24.0]])
    xs = torch.tensor([-150.0, 150.0])
    v = torch.tensor([[xs[0], -150, -400 - 0.5 * xs[0]], [xs[1], -150, -400 - 0.5 * xs[1]],
                      [xs[1], 150, -400 - 0.5 * xs[1]], [xs[0], 150, -400 - 0.5 * xs[0]]])[None]
    fr = renderer.rasterize(v, torch.tensor([[0, 1, 2], [0, 2, 3]]), k, h, w)
    rows, cols = torch.nonzero(fr.mask[0], as_tuple=True)
    a = (cols + 0.5 - 24.0) / f  # x/depth
    expected = 400.0 / (1 - 0.5 * a)  # depth d: -d = -400 - 0.5 a d
    assert torch.allclose(fr.depth[0, rows, cols], expected, rtol=1e-5)
    # the camera-space x interpolated perspective-correctly matches the ray
    x = renderer.interpolate(v[0, :, :1], fr)[0, rows, cols, 0]
    assert torch.allclose(x, a * expected, atol=1e-3)


def test_cube_coverage_and_face_normals(renderer):
    # unit cube (side 100 mm) seen corner-on: three faces visible, total projected area by hand
    s = 50.0
    corners = torch.tensor([[x, y, z] for x in (-s, s) for y in (-s, s) for z in (-s, s)])
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    tris = torch.tensor([[f[0], f[i], f[i + 1]] for f in faces for i in (1, 2)])
    cam = Camera.from_image_size(200, 200, fov_deg=30.0, distance=1000.0)
    fr = renderer.rasterize(cam.to_camera(corners[None]), tris, cam.intrinsics, 200, 200)
    # front face at depth 950: a square of side 100 * f / 950 px (the others are edge-on)
    f = cam.intrinsics[0, 0]
    side = float(100 * f / 950)
    assert abs(int(fr.mask.sum()) - side * side) < 4 * side + 4
    tri_normal = torch.nn.functional.normalize(torch.cross(
        corners[tris[:, 1]] - corners[tris[:, 0]], corners[tris[:, 2]] - corners[tris[:, 0]], dim=-1), dim=-1)
    seen = tri_normal[fr.tri_id[fr.mask]]
    assert torch.allclose(seen.abs()[:, 2], torch.tensor(1.0))


def test_gradcheck_interpolation_wrt_vertices_and_attributes(renderer):
    torch.manual_seed(0)
    verts = torch.tensor([[[-60.0, -50.0, -400.0], [70.0, -40.0, -430.0], [0.0, 80.0, -380.0],
                           [90.0, 70.0, -450.0]]], dtype=torch.float64)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    k = torch.tensor([[60.0, 60.0, 8.0, 8.0]], dtype=torch.float64)
    attr = torch.randn(1, 4, 2, dtype=torch.float64)
    fr0 = renderer.rasterize(verts, tris, k, 16, 16)
    assert int(fr0.mask.sum()) > 40

    def f(v, a):
        fr = renderer.rasterize(v, tris, k, 16, 16)
        assert torch.equal(fr.tri_id, fr0.tri_id)  # small perturbations do not change visibility
        return renderer.interpolate(a, fr), fr.depth

    assert torch.autograd.gradcheck(f, (verts.clone().requires_grad_(), attr.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-6)


def test_texture_v_up_convention(renderer):
    tex = torch.zeros(1, 4, 4, 1)
    tex[0, 3] = 1.0  # bottom row of the image
    uv = torch.tensor([[[[0.5, 0.1], [0.5, 0.9]]]])
    out = renderer.texture(tex, uv)
    assert out[0, 0, 0, 0] == pytest.approx(1.0) and out[0, 0, 1, 0] == pytest.approx(0.0)


def test_rasterize_pixels_bakes_uv_triangle(renderer):
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pts = uv_to_texel(uvs, 32, 32)[None]
    fr = renderer.rasterize_pixels(pts, torch.tensor([[0, 1, 2]]), 32, 32)
    # the lower-left half of the texture image (v up -> bottom-left in image rows)
    assert bool(fr.mask[0, 31, 0]) and not bool(fr.mask[0, 0, 31])
    assert abs(int(fr.mask.sum()) - 32 * 32 / 2) <= 32


def test_mean_face_render(renderer, face_model):
    cam = Camera.from_image_size(128, 128).look_at_face(face_model.mean[None], fill=0.8)
    vc = cam.to_camera(face_model.mean[None])
    light = torch.zeros(1, 9, 3)
    light[:, 0] = 1.0 / (math.pi * 0.282095)  # uniform irradiance 1
    out = render_mesh(renderer, vc, face_model.triangles, cam.intrinsics, 128, 128, light,
                      vertex_albedo=torch.full((face_model.n_vertices, 3), 0.5))
    m = out.mask[0]
    assert 0.25 < float(m.float().mean()) < 0.8
    assert torch.allclose(out.image[0][m], torch.tensor(0.5), atol=1e-5)
    # normals face the camera where the face is seen
    assert float((out.normals[0][m][:, 2] > 0).float().mean()) > 0.97
    # depth: between the nose tip and the face border, consistent with the projected vertices
    d = out.depth[0][m]
    uvd = camera_to_pixel(vc, cam.intrinsics)
    assert float(d.min()) >= float(uvd[0, :, 2].min()) - 1e-3 and float(d.max()) <= float(uvd[0, :, 2].max())
    nose = face_model.landmark_sets["multipie68"][30]
    u, v, dn = uvd[0, nose].tolist()
    assert out.depth[0, int(v), int(u)] == pytest.approx(dn, abs=2.0)


def test_shade_matches_sh(renderer):
    n = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    coeffs = torch.randn(2, 9, 3)
    from sfs.sh import sh_irradiance
    img = shade(torch.full((2, 5, 3), 0.3), n, coeffs, specular=torch.ones(2, 5, 1), eps=0.5)
    assert torch.allclose(img, 0.3 * sh_irradiance(n, coeffs) + 0.5)


def test_packed_interpolation_and_shading_match_dense(renderer, face_model):
    from fitting.rendering.shaded_mesh import sh_shading_packed
    from sfs.sh import sh_irradiance
    torch.manual_seed(2)
    verts = face_model.mean[None].expand(2, -1, -1)
    cam = Camera.from_image_size(64, 64, batch=2).look_at_face(verts)
    vc = cam.to_camera(verts) + torch.randn(2, 1, 3)
    fr = renderer.rasterize(vc, face_model.triangles, cam.intrinsics, 64, 64)
    nrm = vertex_normals(vc, face_model.triangles)
    dense = renderer.interpolate(nrm, fr)
    packed = renderer.interpolate(nrm, fr, packed=True)
    assert packed.shape == (int(fr.mask.sum()), 3)
    assert torch.equal(fr.scatter(packed), dense) and torch.equal(fr.gather(dense), packed)
    sh = torch.randn(2, 9, 3)
    s_packed = sh_shading_packed(packed, sh, fr.pixels // (64 * 64))
    assert torch.allclose(fr.scatter(s_packed), sh_irradiance(dense, sh) * fr.mask[..., None], atol=1e-5)


def test_rejects_mismatched_batch(renderer):
    verts, tris = _quad(500.0, 100.0)
    with pytest.raises(ValueError):
        renderer.rasterize(verts.expand(2, -1, -1), tris, torch.tensor([[100.0, 100.0, 32.0, 32.0]]), 64, 64)


def test_cuda_backend_that_cannot_run_says_why_in_one_line(monkeypatch):
    import builtins
    from fitting.rendering.renderer import RendererUnavailable
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RendererUnavailable, match="sees no CUDA GPU") as info:
        Renderer("cuda")
    assert "\n" not in str(info.value)
    # CUDA present but nvdiffrast missing (or its plugin build failing)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_import = builtins.__import__

    def no_nvdiffrast(name, *args, **kwargs):
        if name.startswith("nvdiffrast"):
            raise ImportError("No module named 'nvdiffrast'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_nvdiffrast)
    with pytest.raises(RendererUnavailable, match=r"needs nvdiffrast .*\[cuda\].*No module named") as info:
        Renderer("cuda")
    assert "\n" not in str(info.value)


def test_open3d_imports_without_dash_and_its_plotly_helpers_still_work():
    # In a fresh interpreter: the renderer's import of open3d leaves Dash unimported, and open3d's
    # plotly helper still works when called (it imports the real module then).
    import subprocess
    import sys
    code = (
        "import sys\n"
        "from fitting.rendering.renderer import import_open3d\n"
        "o3d = import_open3d()\n"
        "assert 'dash' not in sys.modules, 'dash imported'\n"
        "assert 'open3d.visualization.draw_plotly' not in sys.modules\n"
        "o3d.t.geometry.RaycastingScene()\n"
        "pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))\n"
        "fig = o3d.visualization.get_plotly_fig([pcd])\n"
        "assert type(fig).__name__ == 'Figure', type(fig)\n"
        "assert 'dash' in sys.modules\n"
        "import open3d.visualization.draw_plotly as real\n"
        "assert real.draw_plotly.__module__ == 'open3d.visualization.draw_plotly'\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
