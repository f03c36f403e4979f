"""Cast shadows of a depth map (sfs.shadows) on a known scene: a block standing on a plane."""
import torch
import torch.nn.functional as F

from sfs.shadows import cast_shadows, dominant_light_direction
from sfs.sh import sh_basis
from sfs_synth import intrinsics


def _block_on_plane(size=128, plane_mm=500.0, block_mm=20.0):
    """A fronto-parallel plane at ``plane_mm`` with a square block ``block_mm`` nearer the camera in the
    middle third of the image: depth (1, S, S), mask, the block's (1, S, S) bool and the intrinsics."""
    intr = intrinsics(size, size, float(size), dtype=torch.float32)  # 90-degree view: 1 px ~ 3.9 mm at 500 mm
    block = torch.zeros(1, size, size, dtype=torch.bool)
    block[:, size // 3:2 * size // 3, size // 3:2 * size // 3] = True
    depth = torch.where(block, plane_mm - block_mm, plane_mm)
    return depth, torch.ones_like(block), block, intr


def test_a_block_shadows_the_plane_on_the_side_away_from_the_light():
    depth, mask, block, intr = _block_on_plane()
    s = depth.shape[-1]
    light = F.normalize(torch.tensor([[1.0, 0.0, 1.0]]), dim=-1)  # from the right, 45 degrees
    shadow = cast_shadows(depth, mask, intr, light, reach_mm=60.0, step_mm=1.0, margin_mm=1.0)
    rows = slice(s // 3 + 2, 2 * s // 3 - 2)
    left_of_block = shadow[0, rows, s // 3 - 3:s // 3]  # a few px left of the block: the 20 mm wall hides the light
    right_of_block = shadow[0, rows, 2 * s // 3 + 1:2 * s // 3 + 4]
    assert left_of_block.float().mean() > 0.9
    assert not right_of_block.any()  # lit side
    assert not shadow[block].any()  # the block's top sees the light
    assert not shadow[0, :s // 3 - 2].any() and not shadow[0, 2 * s // 3 + 2:].any()  # above and below: open
    # the shadow's length on the plane is the wall's height x tan(45 deg) = 20 mm, about 5 px here
    far_left = shadow[0, rows, : s // 3 - 8]
    assert not far_left.any()


def test_a_light_from_the_camera_casts_no_shadow_and_masked_pixels_do_not_occlude():
    depth, mask, block, intr = _block_on_plane()
    front = torch.tensor([[0.0, 0.0, 1.0]])
    assert not cast_shadows(depth, mask, intr, front, 60.0).any()
    side = F.normalize(torch.tensor([[1.0, 0.0, 1.0]]), dim=-1)
    assert not cast_shadows(depth, mask & ~block, intr, side, 60.0).any()  # the block left out: nothing occludes


def test_dominant_light_direction_of_a_directional_sh_light():
    d = F.normalize(torch.tensor([-0.4, 0.5, 0.77]), dim=0)
    light = 0.3 * torch.eye(9)[0][None, :, None].expand(1, 9, 3) + 0.6 * sh_basis(d)[None, :, None]
    torch.testing.assert_close(dominant_light_direction(light)[0], d, atol=1e-5, rtol=0)
