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


def _ball_on_plane(size=128, plane_mm=500.0, radius_mm=30.0):
    """A fronto-parallel plane at ``plane_mm`` with a half ball of ``radius_mm`` facing the camera in the
    middle (1 px about 1 mm): depth (1, S, S), mask, the ball's (1, S, S) bool and the intrinsics."""
    intr = intrinsics(size, size, 4.0 * size, dtype=torch.float32)
    mm = (torch.arange(size, dtype=torch.float32) - size / 2 + 0.5) * plane_mm / (4.0 * size)
    r2 = mm[None, :] ** 2 + mm[:, None] ** 2
    ball = r2 < radius_mm ** 2
    depth = plane_mm - torch.sqrt((radius_mm ** 2 - r2).clamp_min(0.0))
    return depth[None], torch.ones(1, size, size, dtype=torch.bool), ball[None], intr


def test_the_side_turned_from_the_light_is_shading_not_a_cast_shadow():
    """A ball under a hard light from the right casts a shadow on the plane (left out of the fit) while its
    own side turned away from the light is only darker shading, which the SH light models (kept in)."""
    from sfs.normals import depth_to_normals
    from sfs.refine import SfsSettings, _cast_shadow_pixels

    depth, mask, ball, intr = _ball_on_plane()
    light = F.normalize(torch.tensor([[1.0, 0.0, 1.0]]), dim=-1)
    normals = depth_to_normals(depth, intr, mask)
    facing = (normals * light[:, None, None]).sum(-1)
    cast = cast_shadows(depth, mask, intr, light, reach_mm=60.0, step_mm=0.5, margin_mm=1.0) & ~ball
    shading = 0.3 + 0.9 * facing.clamp_min(0.0) * (~cast).float()
    albedo = torch.full((1, *depth.shape[1:], 3), 0.6)
    image = albedo * shading[..., None]
    turned_away = ball & (facing < -0.1)
    assert turned_away.sum() > 50 and cast.sum() > 100  # the scene has both

    def flagged(min_facing):
        # shadow_darker 100: every pixel counts as darker than the shading predicts, so the geometry alone
        # decides (the photometric half of the test is not what this checks)
        s = SfsSettings(shadow_min_facing=min_facing, shadow_dilate_px=0, shadow_darker=100.0)
        return _cast_shadow_pixels(image, depth, normals, mask, intr, albedo, mask, s)

    found = flagged(0.0)
    assert found[cast].float().mean() > 0.8  # the plane's shadow is found
    assert not found[turned_away].any()  # the ball's dark side is not
    assert not found[ball & (facing > 0.2)].any()  # nor its lit side
    assert flagged(-1.0)[turned_away].float().mean() > 0.5  # without the rule it was taken for a cast shadow
