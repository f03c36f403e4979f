"""fitting.stages.view_texture: one UV albedo from several views, each texel from the views that see it best.

Two synthetic views of one ICT face at yaw -40 / +40 degrees, rendered with a known coloured albedo
texture under a side light: the merged texture matches the truth on both cheeks better than either view
alone does (each view alone leaves its far cheek to the fill)."""
import math

import pytest
import torch
import torch.nn.functional as F

from fitting.rendering.renderer import Renderer
from fitting.stages.view_texture import ViewTextureSettings, edge_ramp, exposure_gains, merge_views
from landmarks import REGION_NAMES
from morphable.geometry import vertex_normals
from sfs.sh import BAND_FACTORS, C1, default_frontal_light, sh_irradiance

SIZE = 256  # crop px
HEIGHT = 256  # texture px
FOCAL = 700.0  # px: the face about 180 px across at 600 mm
DISTANCE = 600.0  # mm


def yaw_matrix(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])


def truth_texture(height: int, tiles: int, cycles: float = 6.0) -> torch.Tensor:
    """(H, W, 3) a smooth coloured pattern over the atlas (what the views are painted with): ``cycles``
    periods across the atlas in red, 5/6 as many down it in green."""
    v, u = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, tiles * height), indexing="ij")
    return torch.stack([0.55 + 0.25 * torch.sin(2 * math.pi * cycles * u),
                        0.45 + 0.2 * torch.cos(2 * math.pi * cycles * 5 / 6 * v), 0.35 + 0.25 * u * v], -1)


def render_views(model, renderer, truth, yaws, gains=None):
    """Each yaw's view of the neutral face: photo (N, S, S, 3) = texture x shading (a light from the camera's
    upper left, fixed while the head turns), labels (skin where covered), cameras."""
    neutral = model.mean.float()
    centre = neutral.mean(0)
    rot = torch.stack([yaw_matrix(y) for y in yaws])
    verts_cam = (neutral - centre) @ rot.transpose(1, 2) + torch.tensor([0.0, 0.0, -DISTANCE])
    n = len(yaws)
    k = torch.tensor([FOCAL, FOCAL, SIZE / 2, SIZE / 2]).expand(n, 4).contiguous()
    frags = renderer.rasterize(verts_cam, model.triangles, k, SIZE, SIZE)
    uv = renderer.interpolate(model.uv_atlas(), frags, model.uv_triangles)
    colour = renderer.texture(truth[None].expand(n, -1, -1, -1).contiguous(), uv)
    normals = F.normalize(renderer.interpolate(vertex_normals(verts_cam, model.triangles), frags), dim=-1)
    light = default_frontal_light(n, ambient=0.55, frontal=0.3)
    light[:, 3] = 0.2 / (BAND_FACTORS[3] * C1)  # and from the camera's left: shading 0.55 + 0.3 n_z + 0.2 n_x
    photo = (colour * sh_irradiance(normals, light)).clamp(0, 1)
    if gains is not None:
        photo = (photo * torch.tensor(gains)[:, None, None, None]).clamp(0, 1)
    photo = torch.where(frags.mask[..., None], photo, torch.full_like(photo, 0.3))
    labels = torch.where(frags.mask, REGION_NAMES.index("skin"), REGION_NAMES.index("background"))
    return verts_cam, k, photo, labels


def cheek_texels(model, renderer, tiles):
    """(H, W) bool: the two cheeks' texels (model-frame normal pointing sideways, front of the head,
    between the eyes' height and the jaw), split into (subject's left, right)."""
    from fitting.rendering.renderer import uv_to_texel
    neutral = model.mean.float()[None]
    frags = renderer.rasterize_pixels(uv_to_texel(model.uv_atlas(), HEIGHT, tiles * HEIGHT)[None],
                                      model.uv_triangles, HEIGHT, tiles * HEIGHT)
    pos = renderer.interpolate(neutral[0], frags, model.triangles)[0]
    nrm = F.normalize(renderer.interpolate(vertex_normals(neutral, model.triangles)[0], frags, model.triangles)[0],
                      dim=-1)
    c = neutral[0].mean(0)
    front = (pos[..., 2] > c[2]) & (pos[..., 1] < c[1] + 20) & (pos[..., 1] > c[1] - 60) & frags.mask[0]
    return front & (nrm[..., 0] > 0.5) & (nrm[..., 2] > 0.2), front & (nrm[..., 0] < -0.5) & (nrm[..., 2] > 0.2)


@pytest.fixture(scope="module")
def scene(face_model):
    renderer = Renderer("cpu")
    tiles = face_model.uv_tiles
    truth = truth_texture(HEIGHT, tiles)
    return renderer, tiles, truth, cheek_texels(face_model, renderer, tiles)


def merged(model, renderer, tiles, views, idx, settings):
    verts_cam, k, photo, labels = views
    return merge_views(renderer, verts_cam[idx], model.triangles, model.uv_atlas(), model.uv_triangles, tiles,
                       k[idx], photo[idx], labels[idx], reference=0, settings=settings)


def error(texture, truth, where):
    """Mean absolute error over ``where`` after one least-squares scale per channel: the albedo's scale
    against the light's is not observable (the merge keeps each photo's mean level)."""
    t, x = truth[where], texture[where]
    scale = (t * x).sum(0) / (x * x).sum(0).clamp_min(1e-9)
    return float((x * scale - t).abs().mean())


def test_two_turned_views_give_both_cheeks(face_model, scene):
    renderer, tiles, truth, (left, right) = scene
    assert left.sum() > 500 and right.sum() > 500
    views = render_views(face_model, renderer, truth, [-40.0, 40.0])
    settings = ViewTextureSettings(texture_height=HEIGHT)
    both = merged(face_model, renderer, tiles, views, [0, 1], settings)
    alone = [merged(face_model, renderer, tiles, views, [i], settings) for i in (0, 1)]
    errors = {name: (error(r.texture, truth, left), error(r.texture, truth, right))
              for name, r in (("both", both), ("yaw -40", alone[0]), ("yaw +40", alone[1]))}
    print(errors)
    # measured: both 0.0193 / 0.0109, yaw -40 alone 0.0191 / 0.0903, yaw +40 alone 0.0898 / 0.0105
    for cheek in (0, 1):
        singles = sorted(errors[name][cheek] for name in ("yaw -40", "yaw +40"))
        assert errors["both"][cheek] < 1.05 * singles[0], errors  # as good as the view that shows it
        assert errors["both"][cheek] < 0.4 * singles[1], errors  # far better than the fill of the other
        assert errors["both"][cheek] < 0.03, errors  # the truth's colours span 0.1-0.8
    # each cheek comes mostly from the view turned to show it
    assert float((both.best[left] == 0).float().mean()) > 0.8 or float((both.best[left] == 1).float().mean()) > 0.8
    assert int(both.best[left].mode().values) != int(both.best[right].mode().values)
    assert both.seen[left].float().mean() > 0.9 and both.seen[right].float().mean() > 0.9
    assert both.coverage.sum() == pytest.approx(1.0) and (both.coverage > 0.2).all()


def test_shading_removed_and_exposure_matched(face_model, scene):
    """A darker second photo (0.7 x exposure) is scaled to the first; without the shading removal the side
    light stays in the texture as a bright and a dark cheek."""
    renderer, tiles, truth, (left, right) = scene
    views = render_views(face_model, renderer, truth, [-40.0, 40.0], gains=[1.0, 0.7])
    on = merged(face_model, renderer, tiles, views, [0, 1], ViewTextureSettings(texture_height=HEIGHT))
    assert float(on.gains[1].mean()) == pytest.approx(1 / 0.7, rel=0.1) and torch.allclose(on.gains[0], torch.ones(3))
    off = merged(face_model, renderer, tiles, views, [0, 1],
                 ViewTextureSettings(texture_height=HEIGHT, match_exposure=False))
    raw = merged(face_model, renderer, tiles, views, [0, 1],
                 ViewTextureSettings(texture_height=HEIGHT, remove_shading=False))
    cheeks = left | right  # one scale for both: a bright and a dark cheek do not both match it
    errors = [error(r.texture, truth, cheeks) for r in (on, off, raw)]
    print("both cheeks: merged / without exposure matching / without shading removal", errors)
    assert errors[0] < errors[1] and errors[0] < errors[2], errors


def test_edge_ramp_and_gains():
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, 4:28, 4:28] = True
    ramp = edge_ramp(mask, 4)
    assert (ramp[~mask] == 0).all() and (ramp[:, 10:22, 10:22] == 1).all()
    row = ramp[0, 16, 4:9]
    assert (row.diff() > 0).all() and float(row[0]) < 0.2  # rises from the edge inward
    albedo = torch.rand(2, 500, 3)
    ref = albedo[0]
    w = torch.ones(2, 500)
    views = torch.stack([ref, ref * torch.tensor([0.5, 2.0, 1.0])])  # view 1: the same colours, exposed differently
    g = exposure_gains(views, w, ref, w[0])
    torch.testing.assert_close(g[0], torch.ones(3))
    assert g[1].tolist() == pytest.approx([2.0, 0.5, 1.0], rel=1e-4)
    g_none = exposure_gains(albedo, torch.zeros(2, 500), ref, w[0])
    torch.testing.assert_close(g_none, torch.ones(2, 3))


def test_pick_views_spreads_over_yaw_and_keeps_the_reference():
    from fitting.stages.view_texture import pick_views
    yaw = torch.tensor([0.0, 5, 10, -30, 40, 2, 1, -3, 20, -10])
    assert pick_views(yaw, 2, None) == list(range(10)) and pick_views(yaw, 2, 10) == list(range(10))
    four = pick_views(yaw, 6, 4)
    assert len(four) == 4 and 6 in four and 3 in four and 4 in four  # the reference and both extremes
    assert pick_views(yaw, 6, 1) == [6]
    assert pick_views(yaw, 1, 2) == [1, 3] and pick_views(yaw, 7, 2) == [4, 7]  # the far side's extreme
    for count in range(1, 10):
        picked = pick_views(yaw, 0, count)
        assert len(picked) == count and 0 in picked and picked == sorted(set(picked))
