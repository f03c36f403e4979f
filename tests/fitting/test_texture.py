"""The UV texture's fill: seen texels kept, the rest a smooth continuation of them."""
import torch

from fitting.stages.texture import fill_unseen


def test_seen_texels_are_kept_and_a_single_colour_fills_everything():
    tex = torch.rand(1, 32, 64, 3)
    seen = torch.zeros(1, 32, 64, dtype=torch.bool)
    seen[0, 10:14, 20:30] = True
    tex[0, 10:14, 20:30] = torch.tensor([0.8, 0.5, 0.4])
    out = fill_unseen(tex, seen, fallback=torch.zeros(1, 3))
    torch.testing.assert_close(out[seen], tex[seen])
    torch.testing.assert_close(out[~seen], torch.tensor([0.8, 0.5, 0.4]).expand(int((~seen).sum()), 3))


def test_gap_between_two_colours_is_a_smooth_monotone_blend():
    tex = torch.zeros(1, 16, 64, 1)
    seen = torch.zeros(1, 16, 64, dtype=torch.bool)
    seen[0, :, :16] = True
    seen[0, :, 48:] = True
    tex[0, :, 48:] = 1.0
    out = fill_unseen(tex, seen, fallback=torch.zeros(1, 1))[0, 8, :, 0]
    gap = out[16:48]
    assert (gap.diff() >= -1e-6).all(), gap  # no overshoot or ripple: monotone from 0 to 1
    assert 0 <= float(gap.min()) and float(gap.max()) <= 1
    assert float(gap[:4].mean()) < 0.3 and float(gap[-4:].mean()) > 0.7  # each side continues its own colour
    assert float(gap.diff().abs().max()) < 0.2  # no jump: the seam the flat fill made


def test_batch_faces_are_independent_and_an_unseen_face_takes_its_fallback():
    tex = torch.rand(2, 16, 16, 3)
    seen = torch.rand(2, 16, 16) > 0.7
    seen[1] = False
    fallback = torch.tensor([[0.1, 0.2, 0.3], [0.6, 0.5, 0.4]])
    out = fill_unseen(tex, seen, fallback)
    alone = fill_unseen(tex[:1], seen[:1], fallback[:1])
    torch.testing.assert_close(out[:1], alone)
    torch.testing.assert_close(out[1], fallback[1].expand(16, 16, 3))
    assert torch.isfinite(out).all()


def test_the_atlas_is_rasterised_once_per_atlas_and_size():
    from fitting.rendering.renderer import Renderer, uv_to_texel
    from fitting.stages.texture import atlas_fragments
    renderer = Renderer("cpu")
    uvs = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    first = atlas_fragments(renderer, uvs, tris, 32, 64)
    assert atlas_fragments(renderer, uvs.clone(), tris.clone(), 32, 64) is first  # same atlas: kept
    fresh = renderer.rasterize_pixels(uv_to_texel(uvs, 32, 64)[None], tris, 32, 64)
    assert torch.equal(first.tri_id, fresh.tri_id) and torch.equal(first.mask, fresh.mask)
    other = atlas_fragments(renderer, uvs * 0.5, tris, 32, 64)  # another atlas: made anew
    assert other is not first and int(other.mask.sum()) < int(first.mask.sum())
    assert atlas_fragments(renderer, uvs, tris, 16, 32).tri_id.shape[-2:] == (16, 32)


def test_the_atlas_kept_on_disk_is_the_atlas_and_a_damaged_file_is_made_anew(tmp_path, monkeypatch):
    from fitting.rendering.renderer import Renderer, uv_to_texel
    from fitting.stages import texture
    monkeypatch.setenv("FACEFIT_CACHE_DIR", str(tmp_path))
    renderer = Renderer("cpu")
    uvs = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    fresh = renderer.rasterize_pixels(uv_to_texel(uvs, 32, 64)[None], tris, 32, 64)
    texture._atlas_fragments.clear()
    texture.atlas_fragments(renderer, uvs, tris, 32, 64)
    (kept,) = tmp_path.glob("uv-atlas-32x64-*.npz")
    assert list(tmp_path.iterdir()) == [kept]  # nothing half-written left behind
    texture._atlas_fragments.clear()  # a new process: read from disk
    loaded = texture.atlas_fragments(renderer, uvs, tris, 32, 64)
    assert torch.equal(loaded.tri_id, fresh.tri_id) and torch.equal(loaded.pixels, fresh.pixels)
    assert torch.equal(loaded.pix_bary, fresh.pix_bary) and torch.equal(loaded.pix_depth, fresh.pix_depth)
    values = torch.rand(4, 2)
    assert torch.allclose(renderer.interpolate(values, loaded, tris), renderer.interpolate(values, fresh, tris))
    whole = kept.read_bytes()
    for damaged in (b"not an npz", whole[:len(whole) // 2]):  # garbage, and a file cut short
        kept.write_bytes(damaged)
        texture._atlas_fragments.clear()
        again = texture.atlas_fragments(renderer, uvs, tris, 32, 64)
        assert torch.equal(again.tri_id, fresh.tri_id)
    texture._atlas_fragments.clear()
    assert torch.equal(texture.atlas_fragments(renderer, uvs, tris, 32, 64).tri_id, fresh.tri_id)  # rewritten
