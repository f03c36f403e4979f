"""fitting.stages.fine: which SfS pixels keep the medium depth (fixed_depth_pixels), on a painted face;
which pixels give the texture its colour (texture_source_mask)."""
import pytest
import torch

from fitting.stages.fine import FineSettings, fixed_depth_pixels, texture_source_mask
from landmarks import REGION_NAMES

SKIN = torch.tensor([0.80, 0.58, 0.47])
BROW = torch.tensor([0.30, 0.21, 0.16])


def _face(size: int = 96):
    """(1, S, S, 3) shaded skin with a painted eyebrow whose landmark region covers only its upper half;
    returns image, mask, region labels (-1 outside), the painted brow below the region."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    img = SKIN * (0.6 + 0.35 * u / size)[..., None]
    brow = (v >= 30) & (v < 40) & (u >= 20) & (u < 76)
    img = torch.where(brow[..., None], BROW * (1.0 + 0.15 * torch.sin(u * 1.7))[..., None], img)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[6:-6, 6:-6] = True
    labels = torch.full((size, size), REGION_NAMES.index("skin"))
    region = (v >= 30) & (v < 35) & (u >= 20) & (u < 76)
    labels[region] = REGION_NAMES.index("brows")
    labels[~mask] = -1
    return img[None], mask[None], labels[None], (brow & ~region)[None]


def test_brow_hair_below_the_region_keeps_the_medium_depth_unless_switched_off():
    img, mask, labels, below = _face()
    brows = labels == REGION_NAMES.index("brows")
    on = fixed_depth_pixels(img, mask, labels, FineSettings())
    off = fixed_depth_pixels(img, mask, labels, FineSettings(brow_reach_px=None))
    assert on[brows].all() and off[brows].all()          # the region itself always
    assert on[below].float().mean() > 0.8
    assert off[below].float().mean() < 0.2
    assert not (on & ~mask).any()


def test_texture_leaves_out_the_outer_edge_but_not_the_eyes_edge():
    size, edge = 64, 4
    labels = torch.full((1, size, size), REGION_NAMES.index("background"))
    labels[:, 8:56, 8:56] = REGION_NAMES.index("skin")
    labels[:, 20:26, 16:30] = REGION_NAMES.index("eyes")
    mask = labels == REGION_NAMES.index("skin")  # the SfS mask has the eye as a hole
    source = texture_source_mask(mask, labels, edge)
    assert not (source & ~mask).any()
    assert not source[:, 8:8 + edge].any() and not source[:, :, 56 - edge:56].any()  # outer band out
    assert source[:, 8 + edge:56 - edge, 8 + edge:56 - edge][mask[:, 8 + edge:56 - edge, 8 + edge:56 - edge]].all()
    assert source[:, 19, 16:30].all() and source[:, 26, 16:30].all()  # right above and below the eye: kept
    assert torch.equal(texture_source_mask(mask, labels, 0), mask)


def test_subdivide_keeps_the_surface_and_the_uv_layout_in_step():
    from fitting.stages.fine import subdivide
    # a 3x3-vertex square whose UVs are its (x, y) / 10, with the right column's UVs duplicated (a seam)
    xs, ys = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="xy")
    verts = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(9)], -1)
    tris = torch.tensor([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4], [3, 4, 7], [3, 7, 6], [4, 5, 8], [4, 8, 7]])
    # the top-right quad has its own copies of the UVs of vertices 2 and 5: a UV seam along 1-5-4
    uvs = torch.cat([verts[:, :2] / 10, verts[[2, 5], :2] / 10])      # 9, 10: copies of 2, 5
    uv_tris = tris.clone()
    uv_tris[2:4][tris[2:4] == 2] = 9
    uv_tris[2:4][tris[2:4] == 5] = 10
    batch = torch.stack([verts, verts * 2 + 1])
    out = subdivide(batch, tris, uvs, uv_tris, levels=2)
    assert out.triangles.shape == (8 * 16, 3) and out.uv_triangles.shape == (8 * 16, 3)
    assert out.vertices.shape == (2, 81, 3)  # a 9 x 9 grid: shared edges got one midpoint each
    assert out.uvs.shape[0] > 81  # the seam's edges got a UV midpoint on each side
    # every new corner's UV is its position / 10: positions and UVs were split in step
    pos = out.vertices[0][torch.as_tensor(out.triangles)]
    uv = torch.as_tensor(out.uv_triangles)
    torch.testing.assert_close(torch.as_tensor(out.uvs)[uv], pos[..., :2] / 10)
    torch.testing.assert_close(out.vertices[1], out.vertices[0] * 2 + 1)  # faces of a batch alike
    assert (out.vertices[0][:, 2] == 0).all()  # the surface did not move
    same = subdivide(batch, tris, uvs, uv_tris, levels=0)
    torch.testing.assert_close(same.vertices, batch)


def _mean_face_in_view(face_model, size: int):
    """The model's mean face 500 mm in front of a camera whose (size x size) image spans 200 mm there (the
    model frame is the camera frame): (renderer, (1, V, 3) float64 vertices, (1, 4) intrinsics, fragments)."""
    from fitting.rendering.renderer import Renderer

    renderer = Renderer("cpu")
    verts = face_model.mean[None].double()
    verts = verts - verts.mean(1, keepdim=True) + torch.tensor([0.0, 0.0, -500.0], dtype=torch.float64)
    f = size * 500.0 / 200.0
    k = torch.tensor([[f, f, size / 2, size / 2]], dtype=torch.float64)
    return renderer, verts, k, renderer.rasterize(verts, face_model.triangles, k, size, size)


def test_mode_depth_maps_match_the_depth_of_the_displaced_mesh(face_model):
    """mode_depth_maps (the tangent-plane depth change per unit mode) against rasterising the mesh moved
    by a small multiple of each of two identity modes, over pixels away from the silhouette."""
    from fitting.stages.fine import erode, mode_depth_maps

    size = 128
    renderer, verts, k, frags = _mean_face_in_view(face_model, size)
    tris = face_model.triangles
    modes = face_model.id_basis[:2].double()[None]  # (1, 2, V, 3), model frame = camera frame here
    maps = mode_depth_maps(renderer, frags, verts, tris, modes, k)
    inner = erode(frags.mask, 3)[0]
    for j in range(2):
        eps = 0.05
        moved = renderer.rasterize(verts + eps * modes[:, j], tris, k, size, size)
        both = inner & moved.mask[0]
        change = (moved.depth - frags.depth)[0][both] / eps
        approx = maps[0, j][both]
        err = (approx - change).abs()
        assert float(err.median()) < 0.05 * float(change.abs().median()) + 1e-3


def test_detailed_mesh_carries_the_smooth_change_past_the_mask_without_a_step(face_model):
    """The SfS's smooth change (3 mm away from the camera over the mask, the face's left half, no detail)
    moves fine.obj's vertices past the mask's edge too, fading out over FineSettings.carry_mm along the
    surface: no edge of the mesh stretches by more than the fade's slope; with carry_mm 0 the change
    stops at the mask's edge, a step of its full size, and the far side does not move in either case."""
    import dataclasses
    from fitting.stages.fine import detailed_mesh
    from morphable.geometry import mesh_edges
    from sfs.refine import SfsResult

    size = 128
    _, verts, k, frags = _mean_face_in_view(face_model, size)
    tris = face_model.triangles
    mask = frags.mask.clone()
    mask[:, :, size // 2:] = False
    change = torch.where(mask, 3.0, 0.0).double()
    empty = torch.zeros(1, size, size, 3, dtype=torch.float64)
    sfs = SfsResult(depth=frags.depth + change, normals=empty, albedo=empty, shading=empty,
                    specular=empty[..., :1], light=torch.zeros(1, 9, 3), rendered=empty, mask=mask,
                    smooth_change=change)
    atlas = face_model.uv_atlas()
    edges = None
    stretch = {}
    for carry in (0.0, FineSettings().carry_mm):
        settings = dataclasses.replace(FineSettings(), carry_mm=carry, displaced_subdivisions=0)
        out = detailed_mesh(verts, tris, atlas, face_model.uv_triangles, k, sfs, frags.depth, settings)
        edges = mesh_edges(torch.as_tensor(out.triangles)) if edges is None else edges
        before = (verts[0, edges[:, 0]] - verts[0, edges[:, 1]]).norm(dim=-1)
        after = (out.vertices[0, edges[:, 0]] - out.vertices[0, edges[:, 1]]).norm(dim=-1)
        stretch[carry] = float(((after - before).abs() / before).max())  # mm per mm of edge
        far = verts[0, :, 0] > 40.0  # mm right of the face's middle: more than carry_mm from the mask
        torch.testing.assert_close(out.vertices[0, far], verts[0, far])
    print(f"\nlargest change of an edge's length per mm: carry off {stretch[0.0]:.2f}, on {stretch[FineSettings().carry_mm]:.2f}")
    assert stretch[0.0] > 0.5  # the step: 3 mm on edges of a few mm
    # the fade's steepest slope: 1.5 x 3 mm / carry_mm (a smoothstep), 0.23 at 20 mm
    assert stretch[FineSettings().carry_mm] < 0.3


def test_fixed_depth_pixels_on_the_masks_box_are_the_whole_images():
    # skin with a dark fringe of hair reaching into the forehead, a pale band of hair above the mask, brows
    # and a blue frame: every test of fixed_depth_pixels fires, and the box crop changes none of them
    from fitting.stages.fine import _fixed_depth_pixels_in
    g = torch.Generator().manual_seed(0)
    img = torch.tensor([0.75, 0.55, 0.45]).expand(1, 256, 256, 3) * (0.9 + 0.2 * torch.rand(1, 256, 256, 1,
                                                                                            generator=g))
    mask = torch.zeros(1, 256, 256, dtype=torch.bool)
    mask[:, 90:200, 70:190] = True
    labels = torch.where(mask, REGION_NAMES.index("skin"), 0)
    labels[:, 120:126, 90:120] = REGION_NAMES.index("brows")
    img = img.clone()
    img[:, 70:100, 60:200] = torch.tensor([0.25, 0.18, 0.12])   # hair above and over the forehead's top
    img[:, 121:125, 88:122] = torch.tensor([0.2, 0.15, 0.1])    # brow hair, past the brow region's ends
    img[:, 150:153, 80:180] = torch.tensor([0.1, 0.2, 0.7])     # a blue frame
    settings = FineSettings()
    boxed = fixed_depth_pixels(img, mask, labels, settings)
    whole = _fixed_depth_pixels_in(img, mask, labels, settings)
    assert torch.equal(boxed, whole)
    assert bool(boxed[:, 150:153, 100:160].all()) and bool(boxed[:, 90:100, 100:160].any())
    assert not bool(boxed[~mask].any())


def test_appearance_metrics_ssim_on_the_box_is_the_whole_images():
    """SSIM is computed on the mask's box: inside the mask it must equal skimage's on the whole image,
    for a mask in the middle, one on the image's edge, and a speck too small for a window."""
    from skimage.metrics import structural_similarity
    from fitting.stages.fine import appearance_metrics
    g = torch.Generator().manual_seed(0)
    image = torch.rand(96, 128, 3, generator=g)
    rendered = (image + 0.1 * torch.randn(96, 128, 3, generator=g)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(128), indexing="ij")
    masks = {"middle": ((yy - 50) / 20.0) ** 2 + ((xx - 60) / 30.0) ** 2 < 1,
             "edge": (yy < 20) | (xx > 120), "speck": (yy < 2) & (xx < 2)}
    _, whole = structural_similarity(image.numpy(), rendered.numpy(), channel_axis=2, data_range=1.0, full=True)
    for name, mask in masks.items():
        got = appearance_metrics(image, rendered, mask)
        want = float(whole.mean(-1)[mask.numpy()].mean())
        assert got["ssim"] == pytest.approx(want, abs=1e-6), name
        assert got["mask_pixels"] == int(mask.sum())
