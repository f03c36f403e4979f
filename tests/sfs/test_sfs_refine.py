"""End-to-end checks of refine_depth on a synthetic face (geometry-only fine bumps)."""
import dataclasses
import math

import pytest
import torch

from sfs.refine import SfsResult, SfsSettings, refine_depth, region_mean
from sfs_synth import face_scene, mean_normal_error

FAST = SfsSettings(albedo_iters=5, depth_iters=(5, 5))
# the per-pixel phases alone (no free depth change, whose smooth change reaches fixed pixels too)
PER_PIXEL = dataclasses.replace(FAST, ms_cells=())


@pytest.fixture(scope="module")
def scene():
    return face_scene(256)


def _run(sc, image=None, depth0=None, mask=None, settings=SfsSettings(), labels="scene", **kw):
    return refine_depth(sc["image"] if image is None else image,
                        sc["depth_smooth"] if depth0 is None else depth0,
                        sc["mask"] if mask is None else mask,
                        sc["intrinsics"], sc["labels"] if labels == "scene" else labels, settings, **kw)


def _check_sane(r: SfsResult, sc, mask, bound):
    for name in ("normals", "albedo", "shading", "specular", "light", "rendered"):
        assert torch.isfinite(getattr(r, name)).all(), name
    assert torch.isfinite(r.depth[mask]).all()
    dd = (r.depth - sc["depth_smooth"])[mask].abs()
    assert dd.max() <= bound + 1e-3
    torch.testing.assert_close(r.normals.norm(dim=-1), torch.ones_like(r.depth))


def test_refine_improves_normals_with_rtv_more_than_skin_colour_only(scene):
    sc = scene
    e0 = mean_normal_error(sc["normals_smooth"], sc["normals"], sc["mask"])
    assert e0 > 2.0  # the bumps are really there
    r = _run(sc)
    e_rtv = mean_normal_error(r.normals, sc["normals"], sc["mask"])
    r0 = _run(sc, settings=dataclasses.replace(SfsSettings(), lambda_rtv=0.0))
    e_skin = mean_normal_error(r0.normals, sc["normals"], sc["mask"])
    print(f"\nmean normal error: smooth d0 {e0:.3f} deg, refined (RTV) {e_rtv:.3f} deg "
          f"({100 * (1 - e_rtv / e0):.1f}% better), skin colour only {e_skin:.3f} deg "
          f"({100 * (1 - e_skin / e0):.1f}% better)")
    assert e_rtv <= 0.78 * e0      # measured ~27% better
    assert e_skin <= 0.85 * e0     # measured ~21% better
    assert e_rtv < e_skin
    _check_sane(r, sc, sc["mask"], SfsSettings().max_depth_change_mm)
    # the photometric fit improves in every phase and the rendering matches the image
    for k in ("depth1", "depth2"):
        assert r.history[k][-1] < r.history[k][0]
    m = sc["mask"]
    assert (r.rendered - sc["image"]).abs()[m].mean() < 0.01
    # outside the mask nothing moves
    assert torch.equal(r.depth[~m], sc["depth_smooth"][~m])
    assert r.light.shape == (1, 9, 3) and r.specular.shape == (1, 256, 256, 1)


@pytest.mark.parametrize("kind", ["dark", "saturated", "black", "white", "half_occluded"])
def test_hard_inputs_no_nan_no_explosion(scene, kind):
    sc = scene
    img, mask, d0 = sc["image"], sc["mask"].clone(), sc["depth_smooth"].clone()
    if kind == "dark":
        img = img * 0.05
    elif kind == "saturated":
        img = (img * 3).clamp(max=1.0)
    elif kind == "black":
        img = torch.zeros_like(img)
    elif kind == "white":
        img = torch.ones_like(img)
    elif kind == "half_occluded":
        mask[:, :, 128:] = False
        img = img.clone()
        img[:, :, 128:] = torch.rand_like(img[:, :, 128:])   # the occluder
        d0[:, :, 140:] = float("nan")                        # no depth behind it
        d0[:, :10] = 0.0
    s = dataclasses.replace(SfsSettings(), albedo_iters=10, depth_iters=(15, 15))
    r = _run(sc, image=img, depth0=d0, mask=mask, settings=s)
    # pixels without a valid depth0 are dropped from the mask
    assert not (r.mask & ~mask).any() and r.mask.sum() > 0.4 * mask.sum()
    if kind == "half_occluded":
        assert not r.mask[:, :10].any() and not r.mask[:, :, 128:].any()
    _check_sane(r, sc, r.mask, s.max_depth_change_mm)
    assert all(math.isfinite(v) for h in r.history.values() for v in h)


def test_half_occluded_still_improves_visible_half(scene):
    """Half the face masked: the per-pixel phases alone take 10 % off the visible half. The free depth change
    (SfsSettings.ms_cells) improves it further away from the scene's unlabelled darker blob (25 % darker skin,
    about 10 px across, the same colour: to shading it is a dent, and with the light fitted well (the
    one-light prior) the change carves it in). Measured with the defaults: visible half 2.38 -> 2.39 deg, of
    which the blob's 1047 px 6.07 -> 13.63 and the rest 2.19 -> 1.42 / the band along the cut 2.18 -> 2.60;
    per-pixel phases only 1.83. The scene is the colour rule's blind spot (SfsSettings.colour_spread_free: one
    skin colour, spread 0.002, so the smooth phases get the freer pulls and the grey blob's dent spreads);
    with today's pulls kept (colour_spread_free (0, 0)) 2.07, blob 12.41, rest 1.24, band 2.13."""
    from sfs_synth import angular_error_deg

    sc = scene
    h, w = sc["mask"].shape[1:]
    mask = sc["mask"].clone()
    mask[:, :, w // 2:] = False
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blob = (torch.exp(-((xx + 0.3) ** 2 + (yy - 0.15) ** 2) / (2 * 0.08 ** 2)) > 0.2)[None]  # sfs_synth's blob
    away = mask & ~blob & (torch.arange(w) < w // 2 - 24)  # and off the band along the cut
    e0 = mean_normal_error(sc["normals_smooth"], sc["normals"], mask)
    r = _run(sc, mask=mask, settings=dataclasses.replace(SfsSettings(), ms_cells=()))
    assert mean_normal_error(r.normals, sc["normals"], mask) < 0.9 * e0
    r = _run(sc, mask=mask)
    err = angular_error_deg(r.normals.double(), sc["normals"].double())
    start = angular_error_deg(sc["normals_smooth"].double(), sc["normals"].double())
    assert float(err[away].mean()) < 0.8 * float(start[away].mean())
    assert float(err[mask].mean()) < 1.05 * e0


def test_working_resolution_and_callback(scene):
    sc = scene
    calls = []
    s = dataclasses.replace(FAST, working_size=128)
    r = _run(sc, settings=s, callback=lambda p, i, e: calls.append((p, i, e)))
    assert r.depth.shape == (1, 256, 256) and r.albedo.shape == (1, 256, 256, 3)
    assert [c[0] for c in calls].count("depth1") == 5 and len(r.history["albedo"]) == 5
    _check_sane(r, sc, sc["mask"], s.max_depth_change_mm)
    # outside the mask the input depth comes back unchanged
    assert torch.equal(r.depth[~sc["mask"]], sc["depth_smooth"][~sc["mask"]])
    # the depth did move inside the mask
    assert (r.depth - sc["depth_smooth"])[sc["mask"]].abs().max() > 0.01


def test_batch_items_are_independent(scene):
    sc = scene
    img = torch.cat([sc["image"], sc["image"] * 0.05])
    d0 = sc["depth_smooth"].expand(2, -1, -1)
    mask = sc["mask"].expand(2, -1, -1)
    intr = sc["intrinsics"].expand(2, 4)
    labels = sc["labels"].expand(2, -1, -1)
    rb = refine_depth(img, d0, mask, intr, labels, FAST)
    r1 = refine_depth(sc["image"], sc["depth_smooth"], sc["mask"], sc["intrinsics"], sc["labels"], FAST)
    torch.testing.assert_close(rb.depth[:1], r1.depth, atol=1e-3, rtol=0)
    torch.testing.assert_close(rb.light[:1], r1.light, atol=1e-4, rtol=1e-4)


def test_region_mean():
    v = torch.arange(8.0).reshape(1, 2, 4, 1)
    lab = torch.tensor([[[0, 0, 1, 1], [0, -1, 1, 2]]])
    out = region_mean(v, lab, torch.ones(1, 2, 4))
    exp = torch.tensor([[[5 / 3, 5 / 3, 11 / 3, 11 / 3], [5 / 3, 0.0, 11 / 3, 7.0]]])[..., None]
    torch.testing.assert_close(out, exp)


def test_fixed_depth_pixels_keep_depth0_and_the_rest_moves(scene):
    sc = scene
    fixed = torch.zeros_like(sc["mask"])
    fixed[:, : fixed.shape[1] // 2] = True                          # the upper half of the image
    fixed &= sc["mask"]
    r = _run(sc, settings=PER_PIXEL, fixed_depth=fixed)
    assert torch.equal(r.depth[fixed], sc["depth_smooth"][fixed])
    assert r.smooth_change is None  # no modes, no free change
    free = sc["mask"] & ~fixed
    assert (r.depth - sc["depth_smooth"])[free].abs().max() > 1e-3
    # light and albedo still use the fixed pixels: the rendering matches the image there too
    assert (r.rendered - sc["image"]).abs()[fixed].mean() < 0.05


def test_fixed_depth_is_exact_at_a_reduced_working_size(scene):
    sc = scene
    fixed = torch.zeros_like(sc["mask"])
    fixed[:, 100:140, 60:200] = True
    fixed &= sc["mask"]
    r = _run(sc, settings=dataclasses.replace(PER_PIXEL, working_size=128), fixed_depth=fixed)
    assert torch.equal(r.depth[fixed], sc["depth_smooth"][fixed])
    assert (r.depth - sc["depth_smooth"])[sc["mask"] & ~fixed].abs().max() > 1e-3


def test_smooth_modes_fitted_to_the_shading_correct_the_start_shape(scene):
    """depth_basis: a start shape wrong by a smooth mode (a 4 mm wide bulge) is corrected by fitting the
    mode's coefficient to the shading (light solved inside, albedo the region means); without the basis the
    per-pixel phases leave that error."""
    from sfs.normals import depth_to_normals
    from sfs.sh import sh_irradiance

    sc = scene
    h, w = sc["mask"].shape[1:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    bulge = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / (2 * 0.3 ** 2))[None]
    tilt = (0.5 * xx * torch.exp(-(xx ** 2 + yy ** 2)))[None]
    depth_true = sc["depth"] - 4.0 * bulge  # toward the camera
    n_true = depth_to_normals(depth_true, sc["intrinsics"], sc["mask"])
    image = (sc["albedo"] * sh_irradiance(n_true, sc["light"])).clamp(0, 1) * sc["mask"][..., None]
    basis = torch.stack([bulge, tilt], 1) * sc["mask"][:, None]  # (1, 2, H, W) mm per unit
    on = dataclasses.replace(FAST, basis_iters=30, basis_prior=1e-6, basis_anchor=0.0)
    e0 = mean_normal_error(depth_to_normals(sc["depth_smooth"], sc["intrinsics"], sc["mask"]), n_true, sc["mask"])
    r_off = _run(sc, image=image, settings=on)  # no basis given: the modes phase is skipped
    r_on = _run(sc, image=image, settings=on, depth_basis=-basis)  # coefficient +4 on the first mode
    e_off = mean_normal_error(r_off.normals, n_true, sc["mask"])
    e_on = mean_normal_error(r_on.normals, n_true, sc["mask"])
    print(f"\nnormal error: start {e0:.2f} deg, per-pixel only {e_off:.2f}, with the modes {e_on:.2f}")
    assert "basis" in r_on.history and "basis" not in r_off.history
    assert r_on.history["basis"][-1] < r_on.history["basis"][0]
    assert e_on < 0.85 * e_off  # measured 2.31 vs 2.98 deg (0.78)
    # the smooth change is handed out on the mask and a few px past it, for the caller to carry further
    import torch.nn.functional as F
    from sfs.refine import SMOOTH_CHANGE_REACH_PX
    near = F.max_pool2d(sc["mask"][:, None].float(), 3, 1, 1)[:, 0].bool() & ~sc["mask"]
    assert r_on.smooth_change[near].abs().min() > 0
    reach = SMOOTH_CHANGE_REACH_PX + 2  # + the working size's own 2 px (at full size here)
    grown = F.max_pool2d(sc["mask"][:, None].float(), 2 * reach + 3, 1, reach + 1)[:, 0].bool()
    assert (r_on.smooth_change[~grown] == 0).all()
    _check_sane(r_on, sc, sc["mask"], 4.0 * 1.5 + on.max_depth_change_mm)


def test_modes_phase_does_not_import_the_compiler():
    """The modes phase's L-BFGS is SciPy's: any torch.optim optimiser imports torch._dynamo, about 1.3 s
    of the first fine fit in every process (a fresh interpreter, as a user's run starts)."""
    import subprocess
    import sys
    code = """
import sys, torch
from sfs.refine import SfsSettings, refine_depth
h = w = 32
yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
depth = (500.0 + 30.0 * (xx ** 2 + yy ** 2))[None]
mask = torch.ones(1, h, w, dtype=torch.bool)
image = torch.full((1, h, w, 3), 0.5)
basis = torch.stack([xx, yy], 0)[None]
s = SfsSettings(working_size=32, basis_iters=3, albedo_iters=2, depth_iters=(2, 2))
r = refine_depth(image, depth, mask, torch.tensor([[60.0, 60.0, 16.0, 16.0]]), settings=s, depth_basis=basis)
assert "basis" in r.history
print("torch._dynamo" in sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_free_depth_change_corrects_a_smooth_error_the_per_pixel_phases_leave(scene):
    """SfsSettings.ms_cells: a start shape missing a 10 mm high, 15 mm wide bump on the cheek (one colour of
    skin there), no modes given: the free change, fitted coarse to fine to the shading (light solved inside),
    takes off a good part of the normal error over the bump, which the per-pixel phases leave as it was; its
    price elsewhere, where the start was right, stays small. With a weaker pull toward the start (ms_anchor
    1e-4, the scan bench's best) it halves it, at a larger price. The whole change stays within
    max_depth_change_mm."""
    from sfs.normals import depth_to_normals
    from sfs.sh import sh_irradiance

    sc = scene
    h, w = sc["mask"].shape[1:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    bump = torch.exp(-((xx - 0.3) ** 2 + (yy - 0.1) ** 2) / (2 * 0.1 ** 2))[None]
    depth_true = sc["depth_smooth"] - 10.0 * bump  # toward the camera
    n_true = depth_to_normals(depth_true, sc["intrinsics"], sc["mask"])
    skin = torch.tensor([0.78, 0.58, 0.48])
    albedo = torch.where(sc["labels"][..., None] == 0, skin, sc["albedo"])  # the scene's blob of darker skin out
    image = (albedo * sh_irradiance(n_true, sc["light"])).clamp(0, 1) * sc["mask"][..., None]
    on_bump = sc["mask"] & (bump > 0.05)
    elsewhere = sc["mask"] & ~on_bump
    runs = {name: _run(sc, image=image, settings=settings) for name, settings in
            (("off", PER_PIXEL), ("default", FAST), ("weak anchor", dataclasses.replace(FAST, ms_anchor=1e-4)))}
    bump_err = {k: mean_normal_error(r.normals, n_true, on_bump) for k, r in runs.items()}
    rest_err = {k: mean_normal_error(r.normals, n_true, elsewhere) for k, r in runs.items()}
    e_start = mean_normal_error(depth_to_normals(sc["depth_smooth"], sc["intrinsics"], sc["mask"]), n_true, on_bump)
    print(f"\nnormal error over the bump (start {e_start:.2f} deg) / elsewhere: "
          + ", ".join(f"{k} {bump_err[k]:.2f} / {rest_err[k]:.2f}" for k in runs))
    # measured: per-pixel only 20.20 / 1.38, default 17.3 / 1.53, weak anchor 10.9 / 1.81
    assert "multiscale" in runs["default"].history and "multiscale" not in runs["off"].history
    assert runs["default"].history["multiscale"][-1] < runs["default"].history["multiscale"][0]
    assert bump_err["off"] > 0.95 * e_start  # the per-pixel phases do not reach it
    assert bump_err["default"] < 0.9 * bump_err["off"] and rest_err["default"] < rest_err["off"] + 0.3
    assert bump_err["weak anchor"] < 0.6 * bump_err["off"] and rest_err["weak anchor"] < rest_err["off"] + 0.75
    for r in runs.values():
        _check_sane(r, sc, sc["mask"], FAST.max_depth_change_mm)


def test_region_albedo_divides_out_the_shading_and_merges_skin_coloured_regions(scene):
    """SfsSettings.region_merge_ratio: with the scene's own normals and light, a region's albedo is its true
    colour (its mean colour is not: a patch of skin on the side turned from the light looks darker); a patch
    of skin labelled as its own region joins the skin, the redder lips, the darker brows and a patch of skin
    under strands of dark hair (on average within the ratio and of the skin's hue, but mottled) do not."""
    from sfs.refine import _region_albedo, _shaded_region_albedo
    from sfs.sh import sh_irradiance

    sc = scene
    h, w = sc["mask"].shape[1:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    patch = ((xx - 0.5).abs() < 0.1) & ((yy - 0.2).abs() < 0.1) & sc["mask"][0]
    strands = (xx.abs() < 0.1) & ((yy - 0.15).abs() < 0.1) & sc["mask"][0]
    labels = torch.where(patch[None], 3, sc["labels"])
    labels = torch.where(strands[None], 4, labels)
    usable = sc["mask"]
    img, n, light = sc["image"].double(), sc["normals"].double(), sc["light"].double()
    hair = strands & (torch.arange(w) % 4 < 1)  # every fourth column: 0.4 x as bright
    img = torch.where(hair[None, ..., None], 0.4 * img, img)
    mean_colour = _region_albedo(img, labels, usable.double(), usable.double())
    skin = torch.tensor([0.78, 0.58, 0.48], dtype=torch.float64)
    assert (mean_colour[0][patch] - skin).abs().max() > 0.05  # the patch's mean colour took in its shading

    shading = sh_irradiance(n, light)
    apart = _shaded_region_albedo(img, labels, shading, mean_colour, usable,
                                  dataclasses.replace(SfsSettings(), region_merge_ratio=0.0))
    torch.testing.assert_close(apart[0][patch], skin.expand(int(patch.sum()), 3), atol=2e-3, rtol=0)
    for region, colour in ((1, (0.70, 0.35, 0.35)), (2, (0.35, 0.25, 0.20))):
        sel = labels[0] == region
        torch.testing.assert_close(apart[0][sel], torch.tensor(colour, dtype=torch.float64).expand(int(sel.sum()), 3),
                                   atol=2e-3, rtol=0)

    merged = _shaded_region_albedo(img, labels, shading, mean_colour, usable, SfsSettings())
    skin_fit = merged[0][labels[0] == 0][0]  # the skin's (the unlabelled blob of darker skin is in it)
    assert (skin_fit - skin).abs().max() < 0.02
    torch.testing.assert_close(merged[0][patch], skin_fit.expand(int(patch.sum()), 3))  # joined the skin
    for region in (1, 2, 4):  # kept their own colour
        sel = labels[0] == region
        torch.testing.assert_close(merged[0][sel], apart[0][sel])


def test_annealed_depth_steps_leave_less_jitter_than_constant_steps(scene):
    """Started from the true depth, the per-pixel phases should leave it where it is. Adam moves every pixel by
    about its step size each iteration; at a constant step the last iterations leave that much jitter, which the
    cosine-annealed step (SfsSettings.depth_lr_anneal) takes out."""
    sc = scene
    m = sc["mask"]
    settings = dataclasses.replace(SfsSettings(), ms_cells=(), depth_robust=0.0)
    errors = {}
    for anneal in (False, True):
        r = _run(sc, depth0=sc["depth"], settings=dataclasses.replace(settings, depth_lr_anneal=anneal))
        errors[anneal] = (mean_normal_error(r.normals, sc["normals"], m),
                          float((r.depth - sc["depth"])[m].std()))
    print(f"\nfrom the true depth: normal error / depth change std, constant steps {errors[False][0]:.3f} deg / "
          f"{errors[False][1]:.4f} mm, annealed {errors[True][0]:.3f} deg / {errors[True][1]:.4f} mm")
    assert errors[True][0] < 0.95 * errors[False][0]  # measured 0.545 vs 0.611 deg


def test_robust_residual_keeps_a_dark_spot_out_of_the_depth(scene):
    """A dark spot the albedo prior does not explain (a mole, a missed cast shadow) pulls the per-pixel depth with
    the squared residual; with the Cauchy residual (SfsSettings.depth_robust) the depth there moves less."""
    sc = scene
    m = sc["mask"]
    image = sc["image"].clone()
    w = m.shape[-1]
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    cy, cx = int(ys.float().mean()), int(xs.float().mean()) + w // 8
    spot = torch.zeros_like(m)
    spot[:, cy - 4:cy + 4, cx - 4:cx + 4] = True
    image[spot] *= 0.5
    settings = dataclasses.replace(SfsSettings(), ms_cells=())
    moved = {}
    for robust in (0.0, 0.05):
        r = _run(sc, image=image, settings=dataclasses.replace(settings, depth_robust=robust))
        clean = _run(sc, settings=dataclasses.replace(settings, depth_robust=robust))
        moved[robust] = float((r.depth - clean.depth)[spot].abs().mean())
    print(f"\nthe dark spot's depth change against the clean image: squared {moved[0.0]:.4f} mm, "
          f"Cauchy {moved[0.05]:.4f} mm")
    # measured 0.128 vs 0.592 mm on one 2-core machine and 0.316 vs 0.626 mm on another with the same torch build
    # (the per-pixel phases' path at a lone spot follows the CPU's float kernels); a Cauchy residual that did nothing
    # would leave the ratio at 1
    assert moved[0.05] < 0.6 * moved[0.0]


def test_one_coloured_skin_frees_the_smooth_shape_a_coloured_skin_keeps_the_pulls(scene):
    """SfsSettings.colour_spread_free: the bump scene above (one colour of skin, a 10 mm bump missing from the
    start) reads as a small colour spread, and its smooth phases get the weaker pulls, which take off more of
    the bump's normal error than the full pulls (colour_spread_free=(0, 0)). The same face with a red flush
    over the skin (a coloured albedo change, which shading alone would take for shape) reads as a large spread
    and keeps the full pulls: its result is the full pulls' to the bit."""
    from sfs.normals import depth_to_normals
    from sfs.sh import sh_irradiance

    sc = scene
    h, w = sc["mask"].shape[1:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    bump = torch.exp(-((xx - 0.3) ** 2 + (yy - 0.1) ** 2) / (2 * 0.1 ** 2))[None]
    n_true = depth_to_normals(sc["depth_smooth"] - 10.0 * bump, sc["intrinsics"], sc["mask"])
    skin = torch.tensor([0.78, 0.58, 0.48])
    albedo = torch.where(sc["labels"][..., None] == 0, skin, sc["albedo"])
    shading = sh_irradiance(n_true, sc["light"])
    image = (albedo * shading).clamp(0, 1) * sc["mask"][..., None]
    flush = torch.stack([0.2 * torch.sin(6 * xx) * torch.cos(5 * yy), torch.zeros_like(xx), torch.zeros_like(xx)], -1).exp()
    flushed_albedo = torch.where(sc["labels"][..., None] == 0, skin * flush, sc["albedo"])
    flushed = (flushed_albedo * shading).clamp(0, 1) * sc["mask"][..., None]
    full = dataclasses.replace(FAST, colour_spread_free=(0.0, 0.0))
    on_bump = sc["mask"] & (bump > 0.05)

    free, held = _run(sc, image=image, settings=FAST), _run(sc, image=image, settings=full)
    e_free, e_held = (mean_normal_error(r.normals, n_true, on_bump) for r in (free, held))
    lo, hi = FAST.colour_spread_free
    print(f"\none colour: spread {free.history['colour_spread'][0]:.4f}, bump error free {e_free:.2f} / "
          f"full pulls {e_held:.2f} deg")
    # measured: spread 0.0034, bump error 14.50 (free) vs 17.00 deg (full pulls); flushed spread 0.050
    assert free.history["colour_spread"][0] < lo
    assert e_free < 0.95 * e_held

    f_default, f_full = _run(sc, image=flushed, settings=FAST), _run(sc, image=flushed, settings=full)
    print(f"flushed: spread {f_default.history['colour_spread'][0]:.4f}")
    assert f_default.history["colour_spread"][0] > hi
    torch.testing.assert_close(f_default.depth, f_full.depth, rtol=0, atol=0)
    _check_sane(free, sc, sc["mask"], FAST.max_depth_change_mm)


def _framed(x, fill, offset=(70, 50), frame=384):
    """(1, 128, 128, ...) -> (1, frame, frame, ...): the scene upsampled 2x (nearest) and placed at ``offset``."""
    import torch.nn.functional as F
    xf = x.double() if x.dtype in (torch.bool, torch.long) else x
    out = torch.full((1, frame, frame) + tuple(x.shape[3:]), float(fill), dtype=xf.dtype)
    up = F.interpolate(xf.reshape(1, 128, 128, -1).permute(0, 3, 1, 2), scale_factor=2, mode="nearest")
    y, x_ = offset
    out[:, y:y + 256, x_:x_ + 256] = up.permute(0, 2, 3, 1).reshape((1, 256, 256) + tuple(x.shape[3:]))
    return out > 0.5 if x.dtype == torch.bool else out.round().to(x.dtype) if x.dtype == torch.long else out


def test_a_small_face_is_refined_on_its_box_as_on_the_whole_image():
    # a 256 px face in a 384 px frame (working size 192: 2 input px per working px): the crop to the mask's
    # box (SfsSettings.crop_to_mask) gives the whole image's result up to float rounding and the free
    # change's grids, which span the box; outside the box everything is as refine_depth documents
    from sfs.refine import _mask_box
    sc = face_scene(128)
    img, d0, m = _framed(sc["image"], 0.2), _framed(sc["depth_smooth"], 600.0), _framed(sc["mask"], 0)
    labels = _framed(sc["labels"], -1)
    intr = sc["intrinsics"] * 2
    intr[:, 2] += 50
    intr[:, 3] += 70
    s = dataclasses.replace(FAST, working_size=192)
    y0, y1, x0, x1 = _mask_box(m, s)
    step = 2 * s.crop_margin_px
    assert all(v % step == 0 for v in (y0, y1, x0, x1))
    assert y0 < int(m.any(2).nonzero()[:, 1].min()) - s.crop_margin_px and x1 > int(m.any(1).nonzero()[:, 1].max())
    whole = refine_depth(img, d0, m, intr, labels, dataclasses.replace(s, crop_to_mask=False))
    boxed = refine_depth(img, d0, m, intr, labels, s)
    mm = whole.mask[0]
    assert torch.equal(boxed.mask, whole.mask)
    apart = torch.rad2deg(torch.acos((boxed.normals * whole.normals).sum(-1).clamp(-1, 1)))[0][mm]
    print(f"\nbox {y1 - y0} x {x1 - x0} of 384 x 384; normals box vs whole: mean {float(apart.mean()):.3f}, "
          f"max {float(apart.max()):.3f} deg")
    assert float(apart.mean()) < 0.5  # measured 0.31 (the free change differs most: its grids span the box)
    assert float((boxed.depth - whole.depth)[0][mm].abs().mean()) < 0.02  # mm
    assert torch.equal(boxed.depth[~m], d0[~m])
    out = torch.ones_like(m)
    out[:, y0:y1, x0:x1] = False
    assert (boxed.normals[out] == torch.tensor([0.0, 0.0, 1.0])).all()
    torch.testing.assert_close(boxed.shading[out], whole.shading[out], atol=1e-3, rtol=0)  # same light, same up
    # a face filling the frame is not cropped
    assert _mask_box(sc["mask"], FAST) is None
