"""Staged shape from shading (METHOD.md "Fine stage", eq. 4-9): light, albedo, specular, depth.

Everything is image space on the face crop, batched ``(B, ...)`` torch on the input's device:

* image ``I`` (B, H, W, 3) float in [0, 1];
* depth ``d`` (B, H, W) in mm, positive distance ``d = -z`` (camera space of ``sfs.projection``);
* normals (B, H, W, 3) unit, camera space, toward the camera;
* albedo ``gamma`` (B, H, W, 3) in [0, 1]; specular ``beta`` (B, H, W, 1) grey, >= 0;
* light ``r`` (B, 9, 3) SH coefficients (band factors applied to the basis, see ``sfs.sh``).

Rescaling of the paper's weights (stated once, used in :class:`SfsSettings`):

1. Intensities. The paper used [0, 255] images, we use [0, 1]. A term that is squared
   intensity on both sides of a ratio (photometric vs. region colour, vs. specular prior,
   vs. the image-gradient term) keeps its weight. A term that is *not* in intensity units
   (RTV, which is a ratio; depth terms in mm) is compared with a photometric term that is
   255^2 times smaller in our units, so its paper weight is divided by 255^2 ... in
   principle. Learning rates of intensity-valued unknowns (albedo, specular) are divided by
   255 (Adam's step is in the unknown's own units).
2. Depth. We do not know the paper's depth unit; we assume mm and keep the depth learning
   rates (mm per Adam step). The depth-term weights were then retuned on the synthetic test
   (ellipsoid face at 500 mm, 0.5 mm bumps, ~0.6 mm pixels): the /255^2 rule leaves the
   depth unconstrained (normals got worse), so lambda_d1 = 3 x paper and lambda_d2 =
   0.02 x paper; lambda_rtv = 1.2e-3 x paper for the same reason. Each default in
   :class:`SfsSettings` shows the paper's number and the factor used.
3. Image size. All terms are *means* over the masked pixels (not sums), so the weights do
   not depend on the crop size; derivatives are per pixel at the working resolution
   (default 256 px on the long side, see SfsSettings.working_size).

Performance note: on a busy 2-core CPU torch's OpenMP with 2 threads was 3-10x slower than
one thread (OMP_NUM_THREADS=1 / torch.set_num_threads(1)); this module does not change
the thread count, the caller decides.

The alternation of eq. 9 ("alternating albedo, specular and depth") is done as
simultaneous block updates: one forward/backward of the total energy per iteration,
each unknown with its own Adam and learning rate. The albedo and specular priors do not
involve depth and vice versa, so each block sees exactly its own energy (eq. 6, 8, 9)
with the other blocks at their current values. By default the albedo block is held at eq. 6's
result (``SfsSettings.lr_albedo`` 0: the paper's step size hardly moved it).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .adam import Adam, cosine_annealed
from .grad_mode import with_gradients
from .light import estimate_sh_light, one_light_target
from .normals import depth_to_normals
from .rtv import image_gradients, masked_gaussian_blur, rtv
from .sh import sh_irradiance

_I255 = 255.0  # the paper's intensity scale

# Depth (mm) given to an image whose mask has no valid depth at all: nothing is refined there, the
# value only has to be a plausible, finite camera distance (a face at arm's length).
EMPTY_MASK_DEPTH_MM = 500.0
# working px: how far past the mask's edge SfsResult.smooth_change is extended (a caller sampling it at a
# surface point just outside the mask, between pixels, finds the edge's value rather than 0)
SMOOTH_CHANGE_REACH_PX = 4


@dataclass
class SfsSettings:
    """All settings of the fine stage. Paper defaults (METHOD.md) are quoted per field."""

    # --- resolution, robustness -------------------------------------------------------
    working_size: int = 256              # px, long side the optimisation runs at (input is resized if larger,
                                         # the depth change is upsampled back). Measured 384 -> 256 (with
                                         # depth_iters (40, 40) -> (30, 30)): `bench scan` fine normal error lower at
                                         # all 8 yaws and looks (uniform yaw 0 11.0 -> 10.9 deg, textured 12.3 -> 12.0),
                                         # `bench fine` (8 synthetic faces, wrinkles in the geometry only) 10.66 ->
                                         # 10.68 deg, and the stage 3.5 x faster. Most of the error left is smooth
                                         # shape the medium mesh gets wrong, which resolution does not change.
                                         # Measured again, not taken (2026-12-05): 384 with every setting in working
                                         # px scaled by 1.5 (cells (48, 24, 12, 6), basis_pool 3, colour_cell_px 6,
                                         # shadow_dilate_px 3, rtv_sigma 3, specular_blur_px 4.5, ms_smooth and d2 x
                                         # 1.5^4, d3 x 1.5^2, crop_margin_px 12), so the pooled phases keep their
                                         # cost: `bench fine` (20 faces, seed 0, fine stage on cached medium results)
                                         # -14.55 % -> -15.27 %, -15.47 % with depth_iters (20, 20) and albedo_iters
                                         # 25, -15.49 % with (15, 15) and 20; but on the shared photos (a process per
                                         # photo, one thread) the stage went 3.40 -> 6.04 s per face ((30, 30)) and
                                         # 4.15 ((20, 20); of which the per-pixel phases about 2.0, the free change
                                         # 0.66, the modes' depth maps at 384 px 0.45) against the filing tree's
                                         # 9.34-10.03, and with (20, 20) or (15, 15) steps tests/sfs's scenes,
                                         # refined at their own 256 px, lose detail (skin colour only: 12 % / 9 %
                                         # better than the start instead of 21 %). Those settings count working px,
                                         # which stand for crop px only at one working size: in crop px they would
                                         # carry over.
    saturation: float = 0.98             # [0,1] intensity; pixels with a channel >= this are left out of
                                         # the light fit and the photometric terms
    dark: float = 0.0                    # [0,1] intensity; pixels with all channels <= this are left out too
    max_depth_change_mm: float = 5.0     # mm, |d - d0| of the per-pixel phases is bounded softly (tanh) by this,
                                         # the whole change (modes and free change too) clamped to it
    light_ridge: float = 1e-9            # unitless, relative ridge of the light least squares
    # Every light fit (shadow test, modes, free change, the per-pixel phases' light) is pulled toward the
    # closest ambient + one distant light (sfs.light.one_light_fit), with this weight relative to the data's
    # mean diagonal (like light_ridge). Over a face the constant, z and 3z^2 - 1 terms are nearly collinear,
    # and the plain fit on a start shape that is a little off trades them: on `bench scan`'s uniform look at
    # yaw 40 it gave constant 1.18, z -0.24, 3z^2 - 1 0.55 where the scan's own normals give 0.78, 0.30, 0.17
    # (the free change solves the light inside its energy, so the wrong light shaped the shape). Measured
    # from the cached medium results (fine normal error / coarse's, uniform yaw 0 / 40, textured 0 / 20):
    # 0.849 / 0.912 / 0.908 / 0.967 -> 0.849 / 0.892 / 0.903 / 0.944 (0.1: 0.850 / 0.893 / 0.920 / 0.936; the
    # light alone, 0.850 / 0.911 / 0.928 / 0.930); with ms_anchor 0, 0.74 / 0.94 / 0.95 / 0.98 -> 0.757 /
    # 0.784 / 0.925 / 0.892 (the scan's true light, anchor 0: 0.71 / 0.74). Every synthetic light here is of
    # that form (ambient + one light), the textured look's (a clamped key, a fill from above) and photos' not.
    light_one_light_prior: float = 0.01  # unitless; 0: off

    # --- the albedo the shape phases hold (gamma_avg of eq. 6) ----------------------------
    # Each region's albedo is its colour with the start shape's shading divided out (per channel, the least
    # squares a in I = a S(n0)), not its mean colour: a small region's mean took in its mean shading (the
    # brows, on the brow ridge's lower slope, came out 20 % darker than the skin on the uniform-albedo scan),
    # and so that part of its relief out of the shading. And a region that looks like the largest region
    # (the skin) is skin: its albedo within [region_merge_ratio, 1 / region_merge_ratio] x the skin's in every
    # channel (shading error reaches such factors, as in the joint polish's ratio test), the same chromaticity
    # (max - min over the channels of log(ratio) <= region_merge_chroma: shading under a white light does not
    # change it) and no more mottled than the skin (the mean absolute deviation of its pixels' grey log ratio
    # to the skin's albedo under the start's shading <= region_merge_spread x the skin's: hair strands over
    # skin are far more). Lips are redder and brow hair darker or mottled on most faces; they keep their own.
    # Measured on `bench scan`'s cached medium results (fine normal error / coarse's, uniform yaw 0 / 20 / 40,
    # textured 0 / 20 / 40): region means 0.847 / 0.858 / 0.881, 0.897 / 0.939 / 0.948; shading divided out
    # 0.844 / 0.844 / 0.864, 0.893 / 0.934 / 0.924; and merged 0.824 / 0.819 / 0.824, 0.894 / 0.934 / 0.924 (the
    # uniform look's brows merge: ratio 0.79-0.86, chroma 0, spread 1.45-1.87 x; merging the lips does not
    # matter; the textured look's brows, 0.55-0.59 x, and lips, chroma 0.21-0.26, do not). The bounds from the
    # eight shared photos, where no region should merge: lips chroma 0.08-0.63 (pale older lips 0.08), brows
    # 0.52-0.83 x, chroma 0.03-0.20, spread 0.93-4.5 x (Grace Hopper's grey brows: 0.83 x, 0.05, 1.55 x); and
    # from 8 synthetic faces of `bench fine`, whose painted brows are thin strands of hair over skin: ratio
    # 0.59-0.93, chroma 0.01-0.10, spread 2.8-17 x. Merged without the spread test they cost 0.05 deg there
    # (`bench fine`, 20 faces, fine normal error 9.49 -> 9.54 deg).
    region_merge_ratio: float = 0.7      # unitless; 0: regions never merge
    region_merge_chroma: float = 0.04    # unitless (log ratio)
    region_merge_spread: float = 2.0     # unitless, x the skin's

    # --- albedo, eq. 6, 7 (initial stage, eps = 0) -------------------------------------
    albedo_iters: int = 40               # Adam steps on the albedo before the depth phases
    lr_albedo_init: float = 1.5 / _I255  # [0,1] intensity per step; paper 1.5 on [0,255]
    lambda_region: float = 0.3           # unitless (intensity^2 / intensity^2); paper lambda_gamma1 = 0.3
    lambda_rtv: float = 2.5 * 1.2e-3     # 1/intensity^2 vs. our photometric term; paper lambda_gamma2 = 2.5.
                                         # The rule 2.5/255^2 = 3.8e-5 is about nothing here. On 8 synthetic faces
                                         # (seed 1, not the bench's) from the true smooth depth, fine normal error
                                         # by factor: 0 -> 3.98, 4e-4 -> 3.87, 1.2e-3 -> 3.90, 4e-3 -> 3.99 deg (a
                                         # strong RTV pushes image noise into the depth); on the photos the wrinkles
                                         # fade as it weakens (older man: clear at 4e-3, faint at 4e-4). 1.2e-3 keeps
                                         # most of both.
    rtv_sigma: float = 2.0               # px, Gaussian window of RTV
    rtv_eps: float = 1e-2                # [0,1] intensity per px (= 2.55 on [0,255]); the 'e' of eq. 7

    # --- specular, eq. 8 ----------------------------------------------------------------
    eps_specular: float = 1.0            # unitless; paper eps = 1 during the depth phases
    lambda_specular: float = 0.5         # unitless (intensity^2 / intensity^2); paper lambda_beta = 0.5
    lr_specular: float = 0.25 / _I255    # [0,1] intensity per step; paper 0.25 on [0,255]
    specular_blur_px: float = 3.0        # px; beta0 = blurred positive grey residual of the diffuse
                                         # rendering (a sharp beta0 would absorb the shading detail)

    # --- albedo during the depth phases -------------------------------------------------
    # The paper's 0.05 on [0,255] moves the albedo by at most 0.012 over 60 steps: it is held at eq. 6's result
    # (0), and its priors, constant then, are not evaluated: RTV's blur, forward and backward, was the largest
    # cost of a depth step (one thread, a 300 x 260 px box: 23.5 ms, the normals and shading 16.4 ms). `bench
    # fine` (20 synthetic faces, seed 0, cached medium results): 0.05 / 255 -14.55 %, 0 -14.62 % fine vs medium
    # normal error (at working size 384: -15.27 / -15.26 %); the shared photos' fine stage (three frontal photos,
    # a process each, one thread, two runs) 4.60 / 3.60 -> 3.99 / 2.99 s per face, re-render PSNR +0.01 dB.
    lr_albedo: float = 0.0               # [0,1] intensity per step (0: held); paper 0.05 on [0,255]

    # --- depth, eq. 9: (lambda_d1 |d-d0|^2 [1/mm^2], lambda_d2 |Lap d|^2 [px^4/mm^2],
    #                    lambda_d3 |grad I - lambda_d4 grad d|^2 [unitless, intensity^2/intensity^2],
    #                    lambda_d4 [intensity/mm]) -- all relative to our photometric mean in [0,1]^2.
    # paper phase 1: (0.001, 0.05, 0.001, 0.001), lr 0.015; phase 2: (0.001, 0.03, 0.025, 2.5), lr 0.05.
    # Ours: d3 kept (intensity^2 on both sides); d4 mm -> [0,1] intensity: /255; d1 and d2 retuned on the
    # synthetic test (the /255^2 intensity rule left the depth unconstrained and made normals worse):
    # d1 = 1.5 x paper, d2 = 0.005 x paper (keeps the paper's phase-2/phase-1 ratio 0.6). Retuned 2026-12-05 once
    # the free change and the modes carried the smooth shape (the per-pixel phases now only add detail, which the
    # old 3 x / 0.02 x held back); `bench fine` (20 synthetic faces, seed 0, cached medium results), fine vs medium
    # normal error, from 3 x / 0.02 x (-14.63 %): d2 x0.5 -14.85, x0.25 -14.94, x0.1 -14.95, 0 -14.77, x2 -14.26;
    # d1 x0.5 -14.87; both d1 x0.5 and d2 x0.25 (this) -15.22, d1 x0.5 and d2 x0.1 -15.16 %. `bench scan` (one
    # thread) unchanged within 0.01 mm RMSE and 0.1 deg at every row (textured 0 / 20 / 60 +0.1 deg); the shared
    # photos' re-render PSNR within 0.05 dB and their fine.obj (clay, 0 and 45 deg) alike; no change in time.
    depth_iters: tuple = (30, 30)        # Adam steps of phase 1 and phase 2 (see working_size)
    lambda_depth_1: tuple = (0.001 * 1.5, 0.05 * 0.005, 0.001, 0.001 / _I255)
    lambda_depth_2: tuple = (0.001 * 1.5, 0.03 * 0.005, 0.025, 2.5 / _I255)
    lr_depth: tuple = (0.015, 0.05)      # mm per Adam step; paper 0.015 and 0.05 (depth unit assumed mm)
    # The per-pixel phases' photometric residual: Cauchy at this scale ([0,1] intensity; 0: squared), as the free
    # change's (ms_robust): a cast shadow the shadow test misses, a highlight or a mole pulls less. And each
    # phase's step size cosine-annealed to 0 (Adam moves every pixel by about its step size each iteration, so a
    # phase that ends at lr_depth leaves a +-lr_depth mm jitter on every pixel: normal noise at the working
    # size's 1-2 mm pixels). Measured (2026-12-03) from the cached medium results of `bench scan` (fine normals
    # / coarse's, uniform yaw 0 / 20 / 40, textured 0 / 20 / 40) and on 8 synthetic faces of `bench fine` (fine
    # vs medium normal error): neither 0.689 / 0.693 / 0.693, 0.817 / 0.907 / 0.875, -11.2 %; robust 0.05
    # 0.686 / 0.692 / 0.691, 0.812 / 0.897 / 0.874, -11.3 %; both 0.691 / 0.691 / 0.688, 0.812 / 0.896 / 0.867,
    # -11.5 % (robust 0.02: 0.691 / 0.696 / 0.696, 0.809 / 0.890 / 0.880). The same gain came from a 10x smaller
    # constant step (0.005 mm: 0.695 / 0.691 / 0.688, 0.811 / 0.888 / 0.858, -11.8 %), but 60 such steps cannot
    # move a pixel more than 0.3 mm, less than a deep wrinkle; annealing keeps the paper's reach.
    depth_robust: float = 0.05
    depth_lr_anneal: bool = True

    # --- mid-frequency shape from the morphable model (before eq. 6-9) ----------------------
    # The start depth's error is mostly smooth (eye sockets, brow ridge, nose sides, cheeks), which the
    # per-pixel terms of eq. 9 do not move. When the caller gives ``depth_basis`` (the depth change per
    # unit coefficient of a few smooth shape modes, e.g. the model's identity modes), their coefficients c
    # are fitted first to the shading: min_c min_light |I - gamma_avg S(n(d0 + B c), light)|^2
    # + basis_prior |c|^2, with the light solved in closed form inside the energy (variable projection)
    # and the albedo held at the region means (a flat albedo cannot absorb the smooth shading).
    # Measured on the scan bench's cached medium results (the fine stage alone on the same inputs; fine
    # normal error, mean of the 8 photos; main 10.94 deg) and on `bench fine --n 8 --seed 0` (synthetic
    # faces from the model itself; main 10.78 deg, depth error 2.945 mm):
    # - 100 modes, 30 iterations, no anchor: scan 9.52 deg (every row lower, uniform yaw 0 10.55 -> 8.61), bench
    #   fine 10.35 deg / 2.829 mm; about +3 s per face.
    # - 60 modes, 15 iterations, no anchor: scan 9.65, bench fine 10.38 / 2.833; about +0.5 s per face (mode maps
    #   0.14 s, fit 0.4-0.9 s). But the scan's RMSE rose at 5 of 8 rows (uniform 0 1.27 -> 1.42 mm, 60 2.41 ->
    #   2.62, textured 20 1.39 -> 1.52, 40 1.36 -> 1.50): on a face outside the model, shading fixes the slopes,
    #   not the relief's depth. Hence basis_anchor, the pull of eq. 9's d1 toward the start depth:
    # - anchor 0.001: scan 10.13, RMSE at or below medium's except uniform 60 (+0.02 mm) and textured 40
    #   (+0.003); bench fine 10.61 / 2.923.
    # - anchor 0.003 (= lambda_depth_1's d1 then, the per-pixel phases' own trust in d0; taken by that principle):
    #   scan 10.41, RMSE at or below medium's except uniform 60 (+0.002 mm) and textured 0 (+0.017); bench fine
    #   10.69 / 2.934.
    # The prior was not tuned (1e-4: about the photometric mean's change of a one-sigma mode).
    # Measured again with the free change and the merged region albedos (2026-12-03), `bench scan` in full
    # (fine normals / coarse's, uniform yaw 0 / 20 / 40, textured 0 / 20 / 40; fine RMSE mm, same rows):
    # 3e-3 (this) 0.82 / 0.82 / 0.83, 0.89 / 0.93 / 0.91; 1.49 / 1.29 / 1.31, 1.40 / 1.24 / 1.20;
    # 9e-4        0.79 / 0.78 / 0.80, 0.86 / 0.91 / 0.89; 1.44 / 1.27 / 1.30, 1.35 / 1.23 / 1.19;
    # 3e-4        0.76 / 0.74 / 0.78, 0.84 / 0.90 / 0.88; 1.38 / 1.24 / 1.28, 1.28 / 1.21 / 1.19;
    # 1e-4        0.74 / 0.73 / 0.77, 0.82 / 0.89 / 0.86; 1.34 / 1.22 / 1.26, 1.24 / 1.19 / 1.18
    # (fine <= medium at every row and at yaw 60), and `bench fine` (20 synthetic faces) 9.49 -> 9.17 deg at
    # 1e-4 (-5.2 % -> -8.4 % against medium). Held back at first: applied to the depth map's pixels only, the
    # modes' larger change opened a visible step along the SfS mask's edge in fine.obj on the shared photos
    # (Grace Hopper's temple, the jaw line of the woman's frontal portrait, rendered at 0 and 45 degrees).
    # Taken (1e-4) once the smooth change was carried past the mask along the mesh (FineSettings.carry_mm):
    # the seams gone on those photos, `bench scan` fine RMSE uniform 1.30 / 1.18 / 1.26, textured 1.19 / 1.17 /
    # 1.17 mm with the carry (yaw 60: 1.62 / 1.49, below medium's 1.67 / 1.68).
    basis_iters: int = 15                # L-BFGS iterations (0: off)
    # 1e-4 -> 5e-5 (2026-12-03, with anchor 1e-4, the carry and ms_smooth 0.1): from the cached medium results of
    # `bench scan` (fine normals / coarse's, uniform yaw 0 / 20 / 40, textured 0 / 20 / 40): 1e-4 0.700 / 0.707 /
    # 0.720, 0.810 / 0.894 / 0.874; 5e-5 0.689 / 0.693 / 0.695, 0.817 / 0.906 / 0.875; 3e-5 0.687 / 0.688 / 0.677,
    # 0.822 / 0.913 / 0.881; 1e-5 0.737 / 0.719 / 0.686, 0.861 / 0.951 / 0.916 (weaker, the modes take up the
    # textured look's albedo). At 5e-5 `bench scan` in full: fine RMSE uniform 1.23 / 1.15 / 1.25, textured
    # 1.13 / 1.14 / 1.17 mm (1.29 / 1.18 / 1.26, 1.17 / 1.16 / 1.16 at 1e-4); `bench fine` (20 synthetic faces)
    # 9.06 -> 8.98 deg; `bench photos` PSNR / SSIM 38.46 / 0.9393.
    basis_prior: float = 5e-5            # 1/coefficient^2 (coefficients in the modes' standard deviations)
    # The modes are fitted on the working image average-pooled by this factor (the modes are smooth: 64 px
    # at pool 4 and the default working size). 2 -> 4 on the scan cache: mean fine normal error 10.41 -> 10.42 deg, RMSE
    # within 0.01 mm per row; fine stage 4.27 / 4.14 s per face without the modes, 4.31 / 4.97 with them at
    # pool 4 (runs back to back, the machine shared), 5.51 / 5.91 at pool 2 in an earlier pair.
    # 4 -> 2 and the anchor 1e-4 -> 3e-5 (2026-12-03, with depth_robust and depth_lr_anneal), measured as there
    # (scan: uniform 0 / 20 / 40, textured 0 / 20 / 40; synthetic: 8 faces): pool 4, anchor 1e-4 0.691 / 0.691 /
    # 0.688, 0.812 / 0.896 / 0.867, -11.5 %; pool 2 0.657 / 0.694 / 0.678, 0.798 / 0.884 / 0.875, -12.6 % (pool 1:
    # -12.8 %, slower); pool 2, anchor 3e-5 0.626 / 0.692 / 0.656, 0.780 / 0.880 / 0.878, -13.9 %; anchor 1e-5
    # 0.614 / 0.703 / 0.645, 0.771 / 0.881 / 0.888, -14.1 %. The prior at pool 2: 1e-4 0.675 / 0.707 / 0.705,
    # 0.795 / 0.874 / 0.872, -11.3 %; 2.5e-5 0.650 / 0.687 / 0.656, 0.803 / 0.896 / 0.884, -13.5 %. Taken: `bench
    # scan` in full, fine normals / coarse's 0.63 / 0.69 / 0.65, 0.78 / 0.87 / 0.88 (yaw 60: 0.78 / 0.80), fine RMSE
    # uniform 1.21 / 1.10 / 1.23, textured 1.07 / 1.13 / 1.17 mm (yaw 60: 1.60 / 1.47, medium 1.67 / 1.68); `bench
    # fine` (20 synthetic faces) 8.98 -> 8.69 deg (-13.2 % against medium; these two steps together).
    basis_pool: int = 2
    basis_anchor: float = 3e-5           # 1/mm^2: weight of the modes' mean squared depth change (mean over the mask)

    # --- how far the smooth shape may move, by the skin's colour ----------------------------------
    # The modes' and the free change's pull toward the start shape (basis_prior, basis_anchor, ms_anchor) is
    # what keeps an albedo that varies over the face from becoming shape: shading cannot tell a darker patch
    # of skin from a slope. Where the albedo is one colour the pull only holds the shape back. A grey
    # albedo change is invisible in the image, a coloured one is not, and real skin's changes are coloured (a
    # flush, a tan, freckles: melanin and blood change hue with brightness). So the pulls are scaled per
    # face by the skin's colour spread at the modes' scale (sfs.skin.colour_spread over the largest region's
    # usable pixels, cells of colour_cell_px working px): by free_scale_basis / free_scale_ms at a spread of
    # colour_spread_free[0] or less, not at all from colour_spread_free[1] up, linearly between.
    # Measured spreads: `bench scan`'s uniform look 0.000 (yaw 0-40), its textured look 0.041-0.059 (two runs); 8
    # synthetic faces of `bench fine` 0.004-0.013 (their skin painted in one hue with mild blotches); the
    # shared photos 0.054-0.137 (all at today's pulls). Measured at the free end from the cached medium
    # results (fine normals / coarse's, uniform yaw 0 / 20 / 40; 8 synthetic faces, fine vs medium normal
    # error): today's pulls 0.626 / 0.692 / 0.656, -13.9 %; basis x 0.5 0.610 / 0.682 / 0.611, -15.0 %; and ms
    # x 0.5 0.602 / 0.677 / 0.593, -15.4 %; ms x 0.25 0.596 / 0.673 / 0.578, -15.7 %; basis x 0.25 (ms x 1)
    # 0.617 / 0.684 / 0.587, -14.3 %; basis x 0.1 0.634 / 0.706 / 0.595, -11.5 % (too free: the light and the
    # shape trade). On the textured look (spread 0.05) the free end costs: 0.792 / 0.904 / 0.889 at basis x
    # 0.5 against 0.780 / 0.880 / 0.878. Blind spot: a grey albedo change (a grey blob, the textured look's
    # brightness waves alone) reads as one colour. Hence ms x 0.5, not 0.25: tests/sfs's scene of one skin
    # colour with a 25 % darker grey blob, half the face masked (test_half_occluded_still_improves_visible_half),
    # normal error away from the blob 1.24 deg at ms x 1, 1.42 at 0.5, 1.90 at 0.25 (the blob's dent spreads;
    # the test's bound 1.75). Taken: `bench fine` (20 synthetic faces) 8.69 -> 8.56 deg (-13.2 % -> -14.6 %
    # against medium's 10.01).
    colour_spread_free: tuple = (0.02, 0.04)  # unitless (log ratio); (0, 0): today's pulls always
    colour_cell_px: int = 4                   # working px
    free_scale_basis: float = 0.5             # unitless factor on basis_prior and basis_anchor at the free end
    free_scale_ms: float = 0.5                # unitless factor on ms_anchor at the free end

    # --- mid-frequency free-form depth (after the modes, before eq. 6-9) ----------------------
    # The modes move only what the model can express, and eq. 9's per-pixel Adam steps cannot carry a
    # correction across a cheek. This phase fits a free depth change, a sum of bicubic-upsampled grids of
    # coefficients, coarse to fine (cells of ms_cells working px), to the shading with the light solved
    # inside the energy (as the modes' phase) and the albedo held at the region means; each level is fitted
    # on the image pooled so that its cells span ms_cell_px pixels (the cost of the coarse levels is small).
    # Shading leaves free, with the light, a scaling and tilt of the relief (the bas-relief ambiguity: with
    # the light free and no pull toward the start shape the fits flatten or deepen the face, uniform look
    # yaw 20: 9.4 -> 13.5 deg); ms_gbr pulls that part of the change (the least-squares fit of the change
    # by the start depth, x, y and a constant) toward 0, and ms_anchor weakly the whole change.
    # Measured on `bench scan`'s photos, the fine stage alone from the same medium results (cached; fine
    # normal error / coarse's, uniform yaw 0 / 40, textured 0 / 20; main 0.91 / 0.99 / 0.96 / 0.95):
    # - cells (32, 16, 8, 4), squared residual, anchor 3e-4, gbr 0.01: 0.79 / - / 1.13 / -: the textured
    #   look's cast shadow of the nose became a dent (the picture);
    # - + Cauchy residual at 0.05 (ms_robust) and shadowed pixels left out (shadow_*): 0.75 / - / 0.98 / 0.97;
    # - + ms_smooth 1.0: 0.81 / 0.92 / 0.89 / 0.95 (mean of the 8 photos 0.90); cells from 64: the same;
    #   40 iterations: the same; the light fixed from the start depth instead: 0.87 / - / 1.08 / -;
    # - anchor 1e-4: 0.78 / 0.90 / 0.90 / 0.94; 0: 0.74 / 0.94 / 0.95 / 0.98;
    # - then the nose's albedo as the skin's (FineSettings.skin_albedo_regions): 0.77 / 0.87 / 0.90 / 0.92;
    #   ms_cell_px 4 -> 2 (the finest level on a 128 px image): 0.79 / 0.87 / 0.90 / 0.94, the fine stage
    #   11.5 -> 7.6 s per face (without this phase 6.6 s; the machine idle); cells (32, 16, 8) at 4 px: 0.78 /
    #   0.88 / 0.89 / 0.94, 7.9 s.
    # - but a weak anchor costs where the start is right or the albedo is not flat: on the synthetic scene of
    #   tests/sfs (right smooth start, fine bumps, an unlabelled blob of 25 % darker skin) the fine normal
    #   error was 1.38 deg without this phase, 2.22 with anchor 1e-4 (the blob became a dent), 1.80 at 3e-4,
    #   1.50 at 1e-3; with half the face masked 1.49 / 3.73 / 2.91 / 2.28; and on the older man's photo a
    #   forehead corner at the mask's edge (few pixels per cell) moved past max_depth_change_mm at 1e-4 (a
    #   flat, creased patch in shading.png), not at 1e-3. Hence 1e-3 (taken): on the scan 0.84 / 0.93 / 0.90
    #   / 0.96 (all 8 photos: uniform 0.84 / 0.87 / 0.93 / 0.85, textured 0.90 / 0.96 / 0.95 / 0.98, yaw
    #   0 / 20 / 40 / 60; main's fine stage 0.91 / 0.94 / 0.99 / 0.99 and 0.96 / 0.95 / 1.00 / 1.01); `bench
    #   fine` (8 synthetic faces, seed 0) fine vs medium normal error -2.9 % -> -7.2 % at 1e-4.
    # With the uniform look's true light (an oracle) anchor 0 reaches 0.71 / 0.74: the light estimated from
    # an imperfect start shape is what limits this phase now.
    # Tried and not taken (2026-12-02): the anchor per pixel, weakened where the image's log-chromaticity is the
    # local skin's (an achromatic change read as shading, a chromatic one as albedo): at 0 there, uniform yaw 0 /
    # 40 0.847 / 0.881 -> 0.711 / 0.785 and textured 0 / 20 0.897 / 0.939 -> 0.906 / 0.943, but tests/sfs's
    # scenes (grey albedo changes, and one of skin colour only) lost most of their gain (the RTV scene 27 % ->
    # 1.9 % better than the start); at 0.1 x the anchor there, 0.782 / 0.823 on the scan and three of those tests
    # still failed. Nor did the anchor in full within 6 working px of the mask's edge help (0.833 / 0.832).
    ms_cells: tuple = (32, 16, 8, 4)     # working px per coefficient cell, per level, coarse to fine; (): off
    ms_cell_px: int = 2                  # px: a level's image is pooled until its cells span this many px
    ms_iters: int = 25                   # L-BFGS iterations per level
    ms_anchor: float = 1e-3              # 1/mm^2: weight of the change's mean square
    ms_gbr: float = 0.01                 # 1/mm^2: weight of the mean square of its relief scaling/tilt part
    ms_robust: float = 0.05              # [0,1] intensity: Cauchy scale of a pixel's residual (0: squared)
    # 1.0 -> 0.1 (2026-12-03, after the modes' anchor 1e-4 and the carry past the mask): the fine stage alone on
    # the cached medium results of `bench scan`, uniform yaw 0 / 20 / 40, textured 0 / 20 / 40: 1.0 0.735 /
    # 0.731 / 0.757, 0.817 / 0.904 / 0.888; 0.3 0.717 / 0.717 / 0.731, 0.810 / 0.896 / 0.879; 0.1 0.700 / 0.707 /
    # 0.720, 0.810 / 0.894 / 0.874; 0.03 0.690 / 0.705 / 0.720, 0.823 / 0.901 / 0.877; 0 0.692 / 0.709 / 0.733,
    # 0.859 / 0.925 / 0.897 (the textured look's shadows and albedo waves come through unsmoothed). At 0.1:
    # `bench scan` in full fine RMSE uniform 1.29 / 1.18 / 1.26, textured 1.17 / 1.16 / 1.16 mm; `bench fine`
    # 9.17 -> 9.06 deg; tests/sfs's RTV scene 39.5 -> 45.3 % better than its start; `bench photos` PSNR / SSIM
    # 38.73 / 0.9400 -> 38.62 / 0.9397; the shared photos' fine.obj at +-45 degrees without new ripples.
    ms_smooth: float = 0.1               # px^4/mm^2: weight of the change's mean squared Laplacian (working px)

    # --- cast shadows -------------------------------------------------------------------------
    # A hard light's cast shadows (the nose's on the cheek) are darker than any normal can make them: left
    # in, every depth phase carves them in as dents. A pixel is left out of the light fit and the photometric
    # terms when the start depth map shadows it from the light's main direction (sfs.shadows, within
    # shadow_reach_mm; grown by shadow_dilate_px for a start shape that is a little off) AND it is darker
    # than shadow_darker x what the start shape's shading predicts (under soft light, or in the uniform look
    # which has no cast shadows, the geometric test alone would throw good pixels away). 0: off.
    shadow_reach_mm: float = 40.0        # mm; a nose is about 20 mm high
    shadow_darker: float = 0.85          # unitless ratio of intensities
    shadow_dilate_px: int = 2            # working px
    # A cast shadow falls on a surface that faces the light: where the start normal turns away from the light's
    # main direction, the dark is the surface's own (attached) shading, which the SH light models, not an
    # occluder's. Those pixels were taken for cast shadows too (the ray toward the light runs into the convex
    # face itself): on the scan's textured look at yaw 20 the whole temple and side of the brow away from the
    # key light left the light fit, which then shaded that side of the face wrongly. Measured (the fine stage
    # alone on `bench scan`'s cached inputs, fine/coarse normal error, textured yaw 0 / 20 / 40; uniform rows
    # within 0.01): off (-1) 0.787 / 0.888 / 0.850; 0 (this) 0.785 / 0.847 / 0.846; 0.1 0.783 / 0.850 / 0.847;
    # 0.2 0.795 / 0.851 / 0.854; 0.3 0.844 / 0.849 / 0.855; no shadow test at all 0.863 / 0.856 / 0.883.
    # `bench scan` in full (one thread): textured fine normals 7.5 / 7.9 / 6.2 deg (coarse 9.5 / 9.4 / 7.3), fine
    # RMSE 1.07 / 1.14 / 1.11 -> 1.10 / 1.10 / 1.11 mm; uniform rows and yaw 60 within 0.01 mm and 0.1 deg.
    # `bench fine` (20 synthetic faces, SH light: no cast shadows) -15.2 -> -15.0 %: on one face the old test
    # had left out 515 px of painted eyebrow hair (dark, outside the landmark brows, turned away from a light
    # whose fitted direction points away from the camera), by accident; that face 11.8 -> 12.2 deg.
    # Shared photos: re-render PSNR 38.15 -> 37.91 dB, SSIM 0.9386 -> 0.9387; Grace Hopper -2.6 dB (under her top
    # light the undersides of the nose, lip and chin now count as shading and the light fits them less well), yet
    # her fine.obj in clay renders has no dents there and a softer, truer nostril groove.
    shadow_min_facing: float = 0.0       # cos of the angle between the start normal and the light's direction

    # --- reporting ----------------------------------------------------------------------
    # Closed-form last albedo pass at the input resolution (see refine_depth),
    # unitless: the ridge weight toward the optimised albedo relative to
    # shading^2 (~1). Small: the texture follows the photo; None: skip it.
    # 0.2 -> 0.1 with working_size 384 -> 256: the optimised albedo reaches the crop upsampled 2x,
    # blurred, and the old pull took the photo's detail out of the texture. Measured at 256:
    # `bench fine` albedo error against the truth 0.0327 (0.2) -> 0.0318 (0.1) -> 0.0316 (0.05);
    # `bench photos` PSNR / SSIM of the re-render 34.2 / 0.928 -> 38.5 / 0.937 -> 42.8 / 0.941
    # (384 and 0.2: 36.4 / 0.934). The re-render's PSNR follows this weight more than the geometry.
    final_albedo_prior: Optional[float] = 0.1
    progress: bool = False               # tqdm progress bars
    # Work on the faces' box only: the image cropped to the union of the masks' bounding boxes (plus a margin of
    # crop_margin_px working px, the box aligned to that many working px, so the working pixels and the free
    # change's pooling grid stay those of the whole image), then pasted back. Every term is a masked sum or a
    # filter narrower than the margin, so the result is the whole image's up to float rounding and the free
    # change's coefficient grids, which span the box instead of the image. A face in a 512 px crop spans
    # about a third of it (the 8 shared photos: boxes 30-35 % of the crop), and the per-pixel phases' cost
    # goes with the pixels. False: the whole image (the reference).
    crop_to_mask: bool = True
    crop_margin_px: int = 16             # working px; >= the widest filter (RTV's 13 px window, the specular
                                         # blur's 19) and a multiple of the free change's largest pool (32 / 2)


@dataclass
class SfsResult:
    """Output of :func:`refine_depth`, at the input resolution (B, H, W, ...)."""

    depth: torch.Tensor        # (B, H, W) mm; outside the mask the input depth0 unchanged (even NaN)
    normals: torch.Tensor      # (B, H, W, 3) camera space, (0, 0, 1) outside the mask
    albedo: torch.Tensor       # (B, H, W, 3) [0, 1]
    shading: torch.Tensor      # (B, H, W, 3) S(n), unitless
    specular: torch.Tensor     # (B, H, W, 1) beta, [0, 1] intensity (rendered with eps_specular)
    light: torch.Tensor        # (B, 9, 3) SH coefficients
    rendered: torch.Tensor     # (B, H, W, 3) gamma * S(n) + eps * beta
    mask: torch.Tensor         # (B, H, W) bool
    # (B, H, W) mm: the smooth part of the depth change (the modes' and the free change's, see basis_iters and
    # ms_cells), on the mask and extended a few px past its edge (0 further out), for the caller to carry on
    # the surface beyond the mask: stopped at the mask's edge it is a step. None: neither phase ran.
    smooth_change: Optional[torch.Tensor] = None
    history: dict = field(default_factory=dict)   # phase name -> list of total energies per iteration
    basis_coeffs: Optional[torch.Tensor] = None   # (B, K) the fitted coefficients of ``depth_basis`` (None: none)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def region_mean(values: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean of ``values`` over its region.

    ``values`` (B, H, W, C), ``labels`` (B, H, W) int64 (-1: no region), ``weights`` (B, H, W) >= 0.
    Returns (B, H, W, C): the weighted mean of the pixel's region (0 where label < 0 or the
    region has no weight).
    """
    k = int(labels.max().clamp_min(0)) + 1
    sums = _region_sums(values, labels, weights, k)
    count = _region_sums(torch.ones_like(values[..., :1]), labels, weights, k)
    return _per_pixel(sums / count.clamp_min(1e-8), labels) * (labels >= 0)[..., None].to(values.dtype)


def _region_sums(values: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K, C) the ``weights``-weighted sums of ``values`` (B, H, W, C) over each region of ``labels``
    (B, H, W) in [-1, K) (-1: none)."""
    b, c = values.shape[0], values.shape[-1]
    valid = labels >= 0
    idx = (labels.clamp_min(0) + k * torch.arange(b, device=labels.device)[:, None, None]).reshape(-1)
    wv = (weights * valid).reshape(-1, 1).to(values.dtype)
    sums = torch.zeros(b * k, c, device=values.device, dtype=values.dtype)
    return sums.index_add_(0, idx, values.reshape(-1, c) * wv).view(b, k, c)


def _per_pixel(table: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) each pixel's row of the (B, K, C) per-region ``table`` (label -1 reads region 0)."""
    at = labels.clamp_min(0).flatten(1)[..., None].expand(-1, -1, table.shape[-1])
    return table.gather(1, at).view(*labels.shape, table.shape[-1])


def _region_albedo(img, labels, w_photo, w_mask):
    """gamma_avg of eq. 6: (B, H, W, 3) each region's mean colour over its usable pixels (``w_photo``), or
    over all its pixels (``w_mask``) for a region with none usable (all saturated or shadowed)."""
    gamma_avg = region_mean(img, labels, w_photo)
    return torch.where(gamma_avg.sum(-1, keepdim=True) > 0, gamma_avg, region_mean(img, labels, w_mask))


def _shaded_region_albedo(img, labels, shading, gamma_avg, usable, s: SfsSettings):
    """gamma_avg with the start's shading divided out and skin-coloured regions merged into the skin
    (SfsSettings.region_merge_ratio): (B, H, W, 3). ``shading`` (B, H, W, 3) the start's, under the light
    fitted on it with ``gamma_avg``; a region with no ``usable`` pixel keeps its ``gamma_avg``."""
    w = usable.to(img.dtype)
    k = int(labels.max().clamp_min(0)) + 1

    def albedo_of(lab):  # (B, K, 3) per-region least squares, (B, K) usable pixels
        num, den = _region_sums(img * shading, lab, w, k), _region_sums(shading ** 2, lab, w, k)
        return num / den.clamp_min(1e-12), _region_sums(torch.ones_like(w)[..., None], lab, w, k)[..., 0]

    table, count = albedo_of(labels)
    if s.region_merge_ratio > 0:
        skin = count.argmax(1)  # (B,) the largest region
        skin_albedo = table.gather(1, skin[:, None, None].expand(-1, 1, 3))  # (B, 1, 3)
        ratio = table / skin_albedo.clamp_min(1e-6)
        log_ratio = ratio.clamp_min(1e-6).log()
        # each region's spread: the mean absolute deviation from its mean of the pixels' grey log ratio to
        # the skin's albedo under the start's shading
        pixel = (img.clamp_min(1e-3) / (skin_albedo[:, :, None] * shading).clamp_min(1e-3)).log().mean(-1, keepdim=True)
        mean = _region_sums(pixel, labels, w, k) / count[..., None].clamp_min(1)
        deviation = (pixel - _per_pixel(mean, labels)).abs()
        spread = (_region_sums(deviation, labels, w, k) / count[..., None].clamp_min(1))[..., 0]  # (B, K)
        merge = ((count > 0) & (ratio.amin(-1) >= s.region_merge_ratio) & (ratio.amax(-1) <= 1 / s.region_merge_ratio)
                 & (log_ratio.amax(-1) - log_ratio.amin(-1) <= s.region_merge_chroma)
                 & (spread <= s.region_merge_spread * spread.gather(1, skin[:, None])))
        to = torch.where(merge, skin[:, None], torch.arange(k, device=labels.device)[None])  # (B, K)
        labels = torch.where(labels >= 0, to.gather(1, labels.clamp_min(0).flatten(1)).view_as(labels), labels)
        table, count = albedo_of(labels)
    seen = (_per_pixel(count[..., None], labels) > 0) & (labels >= 0)[..., None]
    return torch.where(seen, _per_pixel(table, labels).clamp(0, 1), gamma_avg)


@dataclass
class _FaceSettings:
    settings: SfsSettings
    colour_spread: float


def _settings_by_colour(img, labels, usable, s: SfsSettings):
    """Per face, ``s`` with the smooth phases' pulls scaled by the skin's colour spread
    (SfsSettings.colour_spread_free) and that spread: a list of :class:`_FaceSettings`."""
    from .skin import colour_spread
    lo, hi = (float(x) for x in s.colour_spread_free)
    k = int(labels.max().clamp_min(0)) + 1
    count = _region_sums(torch.ones_like(img[..., :1]), labels, usable.to(img.dtype), k)[..., 0]  # (B, K)
    largest = labels == count.argmax(1)[:, None, None]
    spread = colour_spread(img, largest & usable, s.colour_cell_px).tolist()
    out = []
    for v in spread:
        t = 1.0 if hi <= 0 else min(1.0, max(0.0, (v - lo) / max(hi - lo, 1e-12)))  # 0: free end, 1: as set
        fb = s.free_scale_basis + (1.0 - s.free_scale_basis) * t
        fm = s.free_scale_ms + (1.0 - s.free_scale_ms) * t
        out.append(_FaceSettings(replace(s, basis_prior=s.basis_prior * fb, basis_anchor=s.basis_anchor * fb,
                                         ms_anchor=s.ms_anchor * fm), float(v)))
    return out


def _masked_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sum over batch of per-image weighted means: ``x`` (B, H, W) and ``w`` (B, H, W)."""
    return ((x * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)).sum()


def _laplacian(d: torch.Tensor, mask: torch.Tensor):
    """5-point Laplacian of (B, H, W) in mm/px^2 and the (B, H, W) mask where it is defined."""
    lap = torch.zeros_like(d)
    lap[:, 1:-1, 1:-1] = (d[:, :-2, 1:-1] + d[:, 2:, 1:-1] + d[:, 1:-1, :-2] + d[:, 1:-1, 2:]
                          - 4.0 * d[:, 1:-1, 1:-1])
    m = torch.zeros_like(mask)
    m[:, 1:-1, 1:-1] = (mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1]
                        & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:])
    return lap, m


def _extend(x: torch.Tensor, mask: torch.Tensor, px: int) -> torch.Tensor:
    """(B, H, W) ``x`` with the pixels within ``px`` of the (B, H, W) bool ``mask`` (outside it) set to
    the mean of their masked 3x3 neighbours, ring by ring."""
    m = mask.to(x.dtype)[:, None]
    x = x[:, None] * m
    for _ in range(px):
        num = F.avg_pool2d(x * m, 3, 1, 1)
        den = F.avg_pool2d(m, 3, 1, 1)
        x = torch.where(m > 0, x, num / den.clamp_min(1e-6))
        m = (den > 0).to(x.dtype)
    return x[:, 0]


def _resize(x: torch.Tensor, size, mode: str) -> torch.Tensor:
    """Resize (B, H, W, C) channels-last."""
    kw = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    return F.interpolate(x.permute(0, 3, 1, 2), size=size, mode=mode, **kw).permute(0, 2, 3, 1)


class _Progress:
    def __init__(self, settings: SfsSettings, callback):
        self.on = settings.progress
        self.callback = callback

    def iterate(self, n: int, name: str):
        if self.on and n > 0:
            try:
                from tqdm.auto import tqdm
                return tqdm(range(n), desc=name, leave=False)
            except ImportError:  # pragma: no cover
                pass
        return range(n)

    def report(self, name: str, it: int, value: float):
        if self.callback is not None:
            self.callback(name, it, value)


# ----------------------------------------------------------------------------------------
# energies
# ----------------------------------------------------------------------------------------

def _photometric(rendered, image, w, robust: float = 0.0):
    """Mean over ``w`` of the squared colour residual, or (``robust`` > 0, [0,1] intensity) its Cauchy loss."""
    r2 = ((rendered - image) ** 2).sum(-1)
    if robust > 0:
        r2 = robust ** 2 * torch.log1p(r2 / robust ** 2)
    return _masked_mean(r2, w)


def _albedo_prior(albedo, gamma_avg, mask, w_mask, s: SfsSettings):
    e = s.lambda_region * _masked_mean(((albedo - gamma_avg) ** 2).sum(-1), w_mask)
    if s.lambda_rtv > 0:
        r = rtv(albedo, s.rtv_sigma, s.rtv_eps, mask)
        e = e + s.lambda_rtv * _masked_mean((r ** 2).sum(-1), w_mask)
    return e


def _depth_prior(d, d0, gray_gx, gray_gy, mask, w_mask, lam):
    l1, l2, l3, l4 = lam
    e = l1 * _masked_mean((d - d0) ** 2, w_mask)
    if l2 > 0:
        lap, lm = _laplacian(d, mask)
        e = e + l2 * _masked_mean(lap ** 2, lm.to(d.dtype))
    if l3 > 0:
        gx, gy = image_gradients(d[..., None], mask)
        e = e + l3 * _masked_mean(((gray_gx - l4 * gx) ** 2 + (gray_gy - l4 * gy) ** 2)[..., 0], w_mask)
    return e


def _fit_basis(img, d0, basis, m, intr, gamma_avg, w_photo, s: SfsSettings):
    """Coefficients (B, K) of ``basis`` fitted to the shading (see SfsSettings.basis_iters), and the
    energies per L-BFGS evaluation: [coeffs, history]."""
    # smooth modes: a pooled image is enough (pixel-edge intrinsics scale like _resize's)
    img, d0, m, intr, gamma_avg, w_photo, basis = _pooled(max(1, int(s.basis_pool)), img, d0, m, intr, gamma_avg,
                                                          w_photo, basis)
    usable = w_photo > 0
    # SciPy's L-BFGS-B, not torch.optim.LBFGS: constructing any torch.optim optimiser imports
    # torch._dynamo, 1.2-1.4 s of every process's first fine fit (measured here); the energy and its
    # gradient stay torch's.
    from scipy.optimize import minimize
    shape = basis.shape[:2]
    hist = []
    target = _light_target(img, d0, intr, m, gamma_avg, usable, s)

    def energy_and_gradient(x):
        c = torch.as_tensor(x, dtype=d0.dtype, device=d0.device).view(shape).requires_grad_(True)
        d = d0 + torch.einsum("bk,bkhw->bhw", c, basis)
        n = depth_to_normals(d, intr, m)
        light = _fit_light(img, n, gamma_avg, usable, s, target)
        e = _photometric(gamma_avg * sh_irradiance(n, light), img, w_photo) + s.basis_prior * (c ** 2).sum()
        if s.basis_anchor > 0:
            e = e + s.basis_anchor * _masked_mean((d - d0) ** 2, m.to(d.dtype))
        e.backward()
        hist.append(float(e.detach()))
        return float(e.detach()), c.grad.detach().cpu().double().numpy().ravel()

    fitted = minimize(energy_and_gradient, np.zeros(shape.numel()), jac=True, method="L-BFGS-B",
                      options={"maxiter": int(s.basis_iters), "maxcor": 20, "gtol": 1e-9, "ftol": 1e-12})
    return [torch.as_tensor(fitted.x, dtype=d0.dtype, device=d0.device).view(shape), hist]


def _fit_light(img, normals, gamma_avg, usable, s: SfsSettings, target=None):
    """(B, 9, 3) the SH light with the settings' ridge and one-light pull (toward ``target`` when given)."""
    return estimate_sh_light(img, normals, gamma_avg, usable, ridge=s.light_ridge,
                             one_light_prior=s.light_one_light_prior, one_light_target=target)


def _light_target(img, d, intr, m, gamma_avg, usable, s: SfsSettings):
    """The ambient + one light the light fits of an energy's evaluations are pulled toward
    (SfsSettings.light_one_light_prior), found once on the depth ``d`` the fit starts from; None when off."""
    if s.light_one_light_prior <= 0:
        return None
    return one_light_target(img, depth_to_normals(d, intr, m), gamma_avg, usable, s.light_ridge,
                            s.light_one_light_prior)


def _cast_shadow_pixels(img, d0, n0, m, intr, gamma_avg, usable, s: SfsSettings) -> torch.Tensor:
    """(B, H, W) bool: mask pixels in the start depth's cast shadow that face the light (SfsSettings.
    shadow_min_facing) and are darker than its shading says (``n0``: the start depth's normals)."""
    from .shadows import cast_shadows, dominant_light_direction
    light = _fit_light(img, n0, gamma_avg, usable, s)
    dark = img.mean(-1) < s.shadow_darker * (gamma_avg * sh_irradiance(n0, light)).mean(-1)
    mm_per_px = float(d0[m].mean()) / float(intr[:, 0].mean()) if m.any() else 1.0
    direction = dominant_light_direction(light)
    shadow = cast_shadows(d0, m, intr, direction, s.shadow_reach_mm,
                          step_mm=max(mm_per_px, 0.25), margin_mm=1.0)
    if s.shadow_dilate_px > 0:
        k = 2 * s.shadow_dilate_px + 1
        shadow = F.max_pool2d(shadow.to(d0.dtype)[:, None], k, 1, s.shadow_dilate_px)[:, 0] > 0
    facing = (n0 * direction[:, None, None]).sum(-1) > s.shadow_min_facing
    return shadow & dark & m & facing


def _pooled(f, img, d0, m, intr, gamma_avg, w_photo, *maps):
    """The working maps average-pooled by ``f`` over the mask: ``(img, d0, m, intr, gamma_avg, w_photo,
    *maps)`` with ``m`` the cells the mask fills and ``maps``, any (B, C, H, W), 0 outside them."""
    if f == 1:
        return (img, d0, m, intr, gamma_avg, w_photo, *maps)
    mf = m.to(d0.dtype)

    def pool(x):  # (B, C, H, W) mean over the mask pixels of each f x f cell
        return F.avg_pool2d(x * mf[:, None], f) / F.avg_pool2d(mf[:, None], f).clamp_min(1e-6)
    full = F.avg_pool2d(mf[:, None], f)[:, 0] > 0.999
    img = pool(img.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    gamma_avg = pool(gamma_avg.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    d0 = torch.where(full, pool(d0[:, None])[:, 0], d0.mean())
    w_photo = (F.avg_pool2d(w_photo[:, None], f)[:, 0] > 0.999).to(d0.dtype) * full
    return (img, d0, full, intr / f, gamma_avg, w_photo, *(pool(x) * full[:, None] for x in maps))


def _fit_multiscale(img, d0, m, intr, gamma_avg, w_photo, s: SfsSettings):
    """The start depth plus a free change fitted to the shading (SfsSettings.ms_cells), and the energies per
    L-BFGS evaluation: (B, H, W) mm, list. The change is a sum of bicubic-upsampled coefficient grids, one per
    level; level k is fitted with the levels before it still free, on the image pooled by its cell size /
    ``ms_cell_px``."""
    from scipy.optimize import minimize
    b, hw, ww = d0.shape
    dev = d0.device  # the coefficients live in numpy for SciPy's L-BFGS; each evaluation crosses over
    shapes = [(max(2, hw // c), max(2, ww // c)) for c in s.ms_cells]
    sizes = [b * sh[0] * sh[1] for sh in shapes]
    hist = []

    def change_of(x, size):
        out, o = 0.0, 0
        for sh, sz in zip(shapes, sizes):
            c = x[o:o + sz].view(b, 1, *sh)
            o += sz
            out = out + F.interpolate(c, size=size, mode="bicubic", align_corners=False)[:, 0]
        return out

    x = np.zeros(sum(sizes))
    for level, cell in enumerate(s.ms_cells):
        used = sum(sizes[:level + 1])
        f = max(1, cell // s.ms_cell_px)
        pimg, pd0, pm, pintr, pg, pw = _pooled(f, img, d0, m, intr, gamma_avg, w_photo)
        pusable = pw > 0
        mf = pm.to(d0.dtype)
        h_, w_ = pd0.shape[1:]
        ys, xs = torch.meshgrid(torch.arange(h_, dtype=d0.dtype, device=dev), torch.arange(w_, dtype=d0.dtype, device=dev),
                                indexing="ij")
        dmean = (pd0 * mf).flatten(1).sum(1) / mf.flatten(1).sum(1).clamp_min(1)
        gbr = torch.stack([(pd0 - dmean[:, None, None]) * mf, (xs / w_ - 0.5).expand_as(pd0) * 100 * mf,
                           (ys / h_ - 0.5).expand_as(pd0) * 100 * mf, mf], 1).flatten(2)  # (B, 4, P)
        gram_inv = torch.linalg.pinv(gbr @ gbr.transpose(1, 2))
        target = _light_target(pimg, pd0 + change_of(torch.as_tensor(x, dtype=d0.dtype, device=dev), (h_, w_)) * mf, pintr, pm, pg,
                               pusable, s)  # the levels so far

        def energy_and_gradient(xx):
            xt = torch.as_tensor(xx, dtype=d0.dtype, device=dev).requires_grad_(True)
            delta = change_of(torch.cat([xt, torch.zeros(x.size - used, dtype=d0.dtype, device=dev)]), (h_, w_)) * mf
            d = pd0 + delta
            n = depth_to_normals(d, pintr, pm)
            light = _fit_light(pimg, n, pg, pusable, s, target)
            e = _photometric(pg * sh_irradiance(n, light), pimg, pw, s.ms_robust)
            if s.ms_anchor > 0:
                e = e + s.ms_anchor * _masked_mean(delta ** 2, mf)
            if s.ms_smooth > 0:
                lap, lm = _laplacian(delta, pm)
                e = e + s.ms_smooth / f ** 4 * _masked_mean(lap ** 2, lm.to(d.dtype))  # per working px^2
            if s.ms_gbr > 0:
                coef = gram_inv @ (gbr @ delta.flatten(1)[..., None])
                part = (gbr.transpose(1, 2) @ coef)[..., 0]
                e = e + s.ms_gbr * ((part ** 2).sum(1) / mf.flatten(1).sum(1).clamp_min(1)).sum()
            e.backward()
            hist.append(float(e.detach()))
            return float(e.detach()), xt.grad.detach().cpu().double().numpy()

        fitted = minimize(energy_and_gradient, x[:used], jac=True, method="L-BFGS-B",
                          options={"maxiter": int(s.ms_iters), "maxcor": 20, "gtol": 1e-12, "ftol": 1e-14})
        x[:used] = fitted.x
    with torch.no_grad():
        d = d0 + change_of(torch.as_tensor(x, dtype=d0.dtype, device=dev), (hw, ww)) * m.to(d0.dtype)
    return d.detach(), hist


# ----------------------------------------------------------------------------------------
# main entry point
# ----------------------------------------------------------------------------------------

def mask_bounds(mask: torch.Tensor) -> Optional[Tuple[int, int, int, int]]:
    """(first row, last row, first column, last column), inclusive, of the union of the (B, H, W) masks;
    None when every mask is empty."""
    rows, cols = mask.any(0).any(1), mask.any(0).any(0)
    if not bool(rows.any()):
        return None
    ys, xs = torch.nonzero(rows)[:, 0], torch.nonzero(cols)[:, 0]
    return int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])


def _mask_box(mask: torch.Tensor, s: SfsSettings) -> Optional[Tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) input px: the union of the (B, H, W) masks' boxes grown by ``s.crop_margin_px`` working
    px and aligned to that step (so the cropped image resizes to a sub-grid of the whole image's working
    pixels); None when cropping is off, the mask is empty or the box would save under a fifth of the pixels."""
    b, h, w = mask.shape
    if not s.crop_to_mask or not bool(mask.any()):
        return None
    scale = min(1.0, s.working_size / max(h, w))
    step = s.crop_margin_px / scale  # input px per alignment step
    if abs(step - round(step)) > 1e-6:
        return None  # a working pixel is no whole number of input px: no exact sub-grid
    step = int(round(step))
    top, bottom, left, right = mask_bounds(mask)
    y0 = max(0, (top // step - 1) * step)
    x0 = max(0, (left // step - 1) * step)
    y1 = min(h, (bottom // step + 2) * step)
    x1 = min(w, (right // step + 2) * step)
    if (y1 - y0) * (x1 - x0) > 0.8 * h * w:
        return None
    return y0, y1, x0, x1


@with_gradients  # Adam needs autograd even when the caller fits under no_grad or inference_mode
def refine_depth(image: torch.Tensor, depth0: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor,
                 region_labels: Optional[torch.Tensor] = None, settings: SfsSettings = SfsSettings(),
                 callback: Optional[Callable[[str, int, float], None]] = None,
                 fixed_depth: Optional[torch.Tensor] = None,
                 depth_basis: Optional[torch.Tensor] = None) -> SfsResult:
    """Refine a depth map by shape from shading (METHOD.md eq. 4-9).

    Args:
        image: (B, H, W, 3) float in [0, 1] (values outside are clamped).
        depth0: (B, H, W) initial depth in mm (``d = -z``), e.g. the medium mesh rendered;
            values outside ``mask`` are ignored (may be 0/NaN).
        mask: (B, H, W) bool, the face pixels to refine.
        intrinsics: (B, 4) ``(fx, fy, cx, cy)`` in pixels of ``image``.
        region_labels: optional (B, H, W) int64 semantic regions (skin, brows, lips, ...),
            -1 outside; the albedo prior pulls each region toward its mean colour. None: one
            region (the whole mask).
        settings: :class:`SfsSettings`.
        callback: optional ``callback(phase, iteration, energy)``, called every iteration.
        fixed_depth: optional (B, H, W) bool, mask pixels whose depth stays ``depth0`` (plus the
            smooth change of the modes, with ``depth_basis``, and of SfsSettings.ms_cells; they still take
            part in light, albedo and specular), e.g. eyebrows: hair,
            whose colour varies at the scale of the detail and would become ridges.
        depth_basis: optional (B, K, H', W') mm per unit coefficient: smooth shape modes whose
            coefficients are fitted to the shading before the per-pixel phases
            (``SfsSettings.basis_iters``), at any resolution (resized to the working size).

    Returns:
        :class:`SfsResult` at the input resolution; the history holds the total energy per
        iteration of phases ``"albedo"``, ``"depth1"``, ``"depth2"`` (and per evaluation of
        ``"basis"`` and ``"multiscale"`` when they run, face after face), and ``"shadow_pixels"``:
        per face, the working-size pixels left out as cast shadow.
    """
    box = _mask_box(mask.bool(), settings) if mask.dim() == 3 else None
    if box is None:
        return _refine_whole(image, depth0, mask, intrinsics, region_labels, settings, callback, fixed_depth,
                             depth_basis)
    return _refine_in_box(box, image, depth0, mask, intrinsics, region_labels, settings, callback, fixed_depth,
                          depth_basis)


def _refine_in_box(box, image, depth0, mask, intrinsics, region_labels, settings, callback, fixed_depth,
                   depth_basis) -> SfsResult:
    """refine_depth on the ``box`` (y0, y1, x0, x1 input px, :func:`_mask_box`) of every input, pasted back into
    whole-image outputs: outside the box the mask is empty, so there the depth is depth0, the normals (0, 0, 1),
    the albedo, specular and smooth change 0, and the shading and rendering those of that normal and light."""
    y0, y1, x0, x1 = box
    b, h, w = mask.shape
    scale = min(1.0, settings.working_size / max(h, w))
    # the same working pixel size on the box: its long side at scale x its input px (a whole number: aligned)
    inner = replace(settings, working_size=round(scale * max(y1 - y0, x1 - x0)))
    shift = torch.tensor([0.0, 0.0, x0, y0], dtype=intrinsics.dtype, device=intrinsics.device)
    basis = None
    if depth_basis is not None:  # any resolution spanning the whole image: its part over the box
        bh, bw = depth_basis.shape[-2:]
        by0, by1 = round(y0 * bh / h), round(y1 * bh / h)
        bx0, bx1 = round(x0 * bw / w), round(x1 * bw / w)
        basis = depth_basis[..., by0:by1, bx0:bx1]
    r = _refine_whole(image[:, y0:y1, x0:x1], depth0[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1], intrinsics - shift,
                      None if region_labels is None else region_labels[:, y0:y1, x0:x1], inner, callback,
                      None if fixed_depth is None else fixed_depth[:, y0:y1, x0:x1], basis)

    def paste(part, whole):
        whole = whole.clone()
        whole[:, y0:y1, x0:x1] = part
        return whole

    dev, dtype = r.depth.device, r.depth.dtype
    normals = paste(r.normals, torch.zeros(b, h, w, 3, device=dev, dtype=dtype) + torch.tensor([0.0, 0.0, 1.0],
                                                                                                 device=dev, dtype=dtype))
    albedo = paste(r.albedo, torch.zeros(b, h, w, 3, device=dev, dtype=dtype))
    specular = paste(r.specular, torch.zeros(b, h, w, 1, device=dev, dtype=dtype))
    shading = sh_irradiance(normals, r.light)
    shading[:, y0:y1, x0:x1] = r.shading
    rendered = albedo * shading + settings.eps_specular * specular
    rendered[:, y0:y1, x0:x1] = r.rendered
    return SfsResult(depth=paste(r.depth, depth0.to(dev, dtype)), normals=normals, albedo=albedo, shading=shading,
                     specular=specular, light=r.light, rendered=rendered,
                     mask=paste(r.mask, torch.zeros(b, h, w, dtype=torch.bool, device=dev)),
                     smooth_change=None if r.smooth_change is None else
                     paste(r.smooth_change, torch.zeros(b, h, w, device=dev, dtype=dtype)),
                     history=r.history, basis_coeffs=r.basis_coeffs)


def _refine_whole(image, depth0, mask, intrinsics, region_labels, settings, callback, fixed_depth,
                  depth_basis) -> SfsResult:
    """refine_depth on the whole image (its docstring says what each argument is)."""
    s = settings
    dev, dtype = image.device, image.dtype
    b, h, w, _ = image.shape
    mask = mask.bool()
    image = torch.nan_to_num(image, nan=0.0).clamp(0.0, 1.0)

    # sanitise d0 outside the mask / non-finite: per-image mean of the valid depth
    good = mask & torch.isfinite(depth0) & (depth0 > 0)
    mask = good
    d0_fill = (torch.nan_to_num(depth0) * good).flatten(1).sum(1) / good.flatten(1).sum(1).clamp_min(1)
    d0_fill = torch.where(d0_fill > 0, d0_fill, torch.full_like(d0_fill, EMPTY_MASK_DEPTH_MM))
    depth0_full = torch.where(good, torch.nan_to_num(depth0), d0_fill[:, None, None].expand(b, h, w))

    # ---- working resolution --------------------------------------------------------------
    scale = min(1.0, s.working_size / max(h, w))
    if scale < 1.0:
        hw, ww = max(1, round(h * scale)), max(1, round(w * scale))
        sx, sy = ww / w, hw / h  # u scales with the width, v with the height (pixel edges map to edges)
        img = _resize(image, (hw, ww), "bilinear")
        mf = _resize(mask[..., None].to(dtype), (hw, ww), "bilinear")[..., 0]
        d0 = _resize((depth0_full * mask)[..., None], (hw, ww), "bilinear")[..., 0] / mf.clamp_min(1e-6)
        m = mf > 0.99
        d0 = torch.where(m, d0, d0_fill[:, None, None].expand_as(d0))
        intr = intrinsics.to(dtype) * torch.tensor([sx, sy, sx, sy], device=dev, dtype=dtype)
        labels = None if region_labels is None else \
            _resize(region_labels[..., None].to(dtype), (hw, ww), "nearest")[..., 0].long()
        fixed = None if fixed_depth is None else \
            _resize(fixed_depth.to(dev)[..., None].to(dtype), (hw, ww), "bilinear")[..., 0] > 0
    else:
        img, d0, m, intr, labels = image, depth0_full, mask, intrinsics.to(dtype), region_labels
        fixed = None if fixed_depth is None else fixed_depth.to(dev).bool()
    d0 = d0.detach()
    basis = None
    if depth_basis is not None:  # to the working size; the modes' maps may come at any resolution
        basis = depth_basis.to(dev, dtype)
        if tuple(basis.shape[-2:]) != tuple(d0.shape[-2:]):
            basis = F.interpolate(basis, size=tuple(d0.shape[-2:]), mode="bilinear", align_corners=False)
        basis = basis * m[:, None]

    # region labels: -1 outside the mask, unlabelled mask pixels form one extra region
    if labels is None:
        labels = torch.where(m, 0, -1).long()
    else:
        labels = labels.long().to(dev)
        extra = int(labels.max().clamp_min(-1)) + 1
        labels = torch.where(m & (labels < 0), torch.full_like(labels, extra), labels)
        labels = torch.where(m, labels, torch.full_like(labels, -1))

    # pixel weights: in the mask, not saturated, not (too) dark
    usable = m & (img.amax(-1) < s.saturation) & (img.amax(-1) > s.dark)
    w_photo = usable.to(dtype)
    w_mask = m.to(dtype)
    prog = _Progress(s, callback)
    history = {"albedo": [], "depth1": [], "depth2": []}

    gamma_avg = _region_albedo(img, labels, w_photo, w_mask)
    n_start = depth_to_normals(d0, intr, m)

    if s.shadow_reach_mm > 0:  # cast shadows out of the light fit and the photometric terms (SfsSettings)
        shadowed = _cast_shadow_pixels(img, d0, n_start, m, intr, gamma_avg, usable, s)
        history["shadow_pixels"] = shadowed.flatten(1).sum(1).tolist()
        usable = usable & ~shadowed
        w_photo = usable.to(dtype)
        gamma_avg = _region_albedo(img, labels, w_photo, w_mask)
    shading_start = sh_irradiance(n_start, _fit_light(img, n_start, gamma_avg, usable, s))
    gamma_avg = _shaded_region_albedo(img, labels, shading_start, gamma_avg, usable, s)

    # ---- 0. smooth shape modes fitted to the shading (SfsSettings.basis_iters) ---------------
    coeffs = None
    d_start = d0
    face_settings = _settings_by_colour(img, labels, usable, s)
    history["colour_spread"] = [fs.colour_spread for fs in face_settings]
    # One L-BFGS per face: a shared line search over the batch would make each face's result depend on the
    # others'. The histories hold the energies per evaluation, face after face.
    def per_face(fit, *maps):
        outs = [fit(*(x[i:i + 1] for x in maps), face_settings[i].settings) for i in range(b)]
        return torch.cat([o[0] for o in outs]), [e for o in outs for e in o[1]]

    if basis is not None and s.basis_iters > 0 and basis.shape[1] > 0:
        coeffs, history["basis"] = per_face(_fit_basis, img, d0, basis, m, intr, gamma_avg, w_photo)
        d0 = (d0 + torch.einsum("bk,bkhw->bhw", coeffs, basis)).detach()

    if s.ms_cells:
        d0, history["multiscale"] = per_face(_fit_multiscale, img, d0, m, intr, gamma_avg, w_photo)

    # ---- 1. light by least squares, albedo = region mean colour, eps = 0 -------------------
    n0 = depth_to_normals(d0, intr, m)
    light = _fit_light(img, n0, gamma_avg, usable, s).detach()
    shading0 = sh_irradiance(n0, light)

    # ---- 2. albedo, eq. 6 (eps = 0, normals of d0) ----------------------------------------
    albedo = gamma_avg.clone().requires_grad_(True)
    opt_a = Adam([albedo], lr=s.lr_albedo_init)
    for it in prog.iterate(s.albedo_iters, "albedo"):
        opt_a.zero_grad(set_to_none=True)
        e = _photometric(albedo * shading0, img, w_photo) + _albedo_prior(albedo, gamma_avg, m, w_mask, s)
        if not torch.isfinite(e):
            break
        e.backward()
        opt_a.step()
        with torch.no_grad():
            albedo.clamp_(0.0, 1.0)
        history["albedo"].append(float(e.detach()))
        prog.report("albedo", it, history["albedo"][-1])

    # ---- 3. specular init: beta0 = smoothed positive grey residual of the diffuse rendering --
    with torch.no_grad():
        resid = (img - albedo * shading0).mean(-1, keepdim=True).clamp_min(0.0)
        beta0 = masked_gaussian_blur(resid, usable, s.specular_blur_px) if s.specular_blur_px > 0 else resid * w_photo[..., None]
    beta = beta0.clone().requires_grad_(True)

    # ---- 4. depth, eq. 9, two phases, with the specular (eq. 8) and, unless held (lr_albedo 0), the albedo (eq. 6)
    gray = img.mean(-1, keepdim=True)
    ggx, ggy = image_gradients(gray, m)
    bound = float(s.max_depth_change_mm)
    delta = torch.zeros_like(d0, requires_grad=True)
    hold_albedo = s.lr_albedo <= 0  # SfsSettings.lr_albedo: then its priors are constants, left out
    if hold_albedo:
        albedo = albedo.detach()
    opt_ab = Adam(([] if hold_albedo else [{"params": [albedo], "lr": s.lr_albedo}])
                  + [{"params": [beta], "lr": s.lr_specular}])

    w_free = w_mask if fixed is None else w_mask * (~fixed).to(dtype)

    def current_depth():
        return d0 + bound * torch.tanh(delta / bound) * w_free

    for phase, (iters, lam, lr) in enumerate(zip(s.depth_iters, (s.lambda_depth_1, s.lambda_depth_2), s.lr_depth)):
        name = f"depth{phase + 1}"
        opt_d = Adam([delta], lr=lr)
        for it in prog.iterate(int(iters), name):
            if s.depth_lr_anneal:
                cosine_annealed(opt_d, [lr], it, int(iters))
            opt_d.zero_grad(set_to_none=True)
            opt_ab.zero_grad(set_to_none=True)
            d = current_depth()
            n = depth_to_normals(d, intr, m)
            rendered = albedo * sh_irradiance(n, light) + s.eps_specular * beta
            e = (_photometric(rendered, img, w_photo, s.depth_robust)
                 + (0.0 if hold_albedo else _albedo_prior(albedo, gamma_avg, m, w_mask, s))
                 + s.lambda_specular * _masked_mean(((beta - beta0) ** 2)[..., 0], w_mask)
                 + _depth_prior(d, d0, ggx, ggy, m, w_mask, lam))
            if not torch.isfinite(e):
                break
            e.backward()
            for p in (delta, albedo, beta):
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            opt_d.step()
            opt_ab.step()
            with torch.no_grad():
                if not hold_albedo:
                    albedo.clamp_(0.0, 1.0)
                beta.clamp_(0.0, 1.0)
            history[name].append(float(e.detach()))
            prog.report(name, it, history[name][-1])

    # ---- outputs at the input resolution ------------------------------------------------------
    with torch.no_grad():
        d = current_depth()
        start = depth0_full
        smooth_change = None
        if coeffs is not None or s.ms_cells:  # the smooth change reaches every mask pixel, fixed ones too
            # extended past the working mask first: no ramp to 0 at its edge
            change = _extend(d0 - d_start, m, SMOOTH_CHANGE_REACH_PX + max(2, round(1 / scale)))
            if change.shape[-2:] != (h, w):
                change = F.interpolate(change[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            smooth_change = change.clamp(-bound, bound)
            depth0_full = depth0_full + change * mask
        if scale < 1.0:
            dd = _resize((d - d0)[..., None], (h, w), "bilinear")[..., 0]
            keep = mask if fixed_depth is None else mask & ~fixed_depth.to(dev).bool()
            depth = depth0_full + dd * keep
            albedo_o = _resize(albedo.detach(), (h, w), "bilinear").clamp(0, 1)
            beta_o = _resize(beta.detach(), (h, w), "bilinear").clamp_min(0)
            mask_o = mask
        else:
            depth, albedo_o, beta_o, mask_o = d, albedo.detach(), beta.detach(), m
        # the whole change (modes, free change, per-pixel detail) within the bound of the start depth: a badly
        # lit or occluded face must not move further than the detail may
        depth = start + (depth - start).clamp(-bound, bound)
        normals = depth_to_normals(depth, intrinsics.to(dtype), mask_o)
        depth = torch.where(mask_o, depth, depth0)
        shading = sh_irradiance(normals, light)
        if s.final_albedo_prior is not None:
            # Last albedo pass at the input resolution, depth and specular fixed:
            # argmin_g |I - g S - eps beta|^2 + lam |g - g_opt|^2, per pixel and
            # channel, in closed form. The geometry is final; this only lets the
            # texture keep what the geometry does not explain.
            lam = float(s.final_albedo_prior)
            target = image - s.eps_specular * beta_o
            refit = ((target * shading + lam * albedo_o) / (shading ** 2 + lam)).clamp(0.0, 1.0)
            albedo_o = torch.where(mask_o[..., None], refit, albedo_o)
        rendered = albedo_o * shading + s.eps_specular * beta_o
    return SfsResult(depth=depth, normals=normals, albedo=albedo_o, shading=shading, specular=beta_o,
                      light=light, rendered=rendered, mask=mask_o, smooth_change=smooth_change,
                      history=history, basis_coeffs=coeffs)
