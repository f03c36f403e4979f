"""Builds the MediaPipe -> ICT landmark table (see :mod:`fitting.stages.correspondence` for the method).

    python -m fitting.stages.correspondence_build [--n 24] [--n-offsets 300] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from tqdm.auto import tqdm

from landmarks import FaceMeshDetector, NoFaceError
from landmarks import indices as mp_index
from landmarks.indices import GROUP_NAMES, point_groups
from morphable import load_ict

from ..rendering.renderer import Renderer
from ..synthetic.faces import FaceGenerator
from .correspondence import DATA_PATH, Correspondence, yaw_bin_weights

FACE_VERTICES = 9409  # ICT face area: vertices 0..9408, first in every region that keeps it
MIN_HITS = 3
CONTOUR_MAX_YAW = 12.0  # deg: contour points are read only from near-frontal renders
OFFSET_YAW_MAX = 45.0  # deg: renders for the pose-dependent offsets span |yaw| <= this (the bench's range)
OFFSET_YAW_STEP = 15.0  # deg: spacing of the offset bins
# Ridge on each offset (px^2 per mm^2 of offset, summed over renders): a direction the renders hardly
# observe (depth, near frontal) stays near zero instead of fitting noise.
OFFSET_RIDGE = 10.0
OFFSET_SEED_BASE = 500_000  # offset renders use other seeds than the table's
# The ICT rest shape is near-symmetric about the plane x = 0 (model frame): a point's left/right mirror.
MIRROR = np.array([-1.0, 1.0, 1.0])
# The lower lip's vertices move down 20-35 mm per unit of jawOpen, the upper lip's 2-8 mm: a vertex moving
# more than this (mm per unit, downward) is on the lower lip (lower_lip_rows).
LOWER_LIP_JAW_MM = 15.0
# lower_lip_rows looks for the lower lip's top edge within this of the averaged point: across (x, mm),
# up and down (y, mm) and behind it (z, mm; the lower lip tucks up to 3 mm behind the upper one).
LOWER_LIP_SEARCH_MM = (1.5, 6.0, 8.0)


def _closest_surface_points(verts: np.ndarray, tris: np.ndarray, points: np.ndarray):
    """Nearest points on a mesh: (K,) triangle ids and (K, 3) barycentrics."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(tris.astype(np.uint32)))
    ans = scene.compute_closest_points(o3d.core.Tensor(points.astype(np.float32)))
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    uv = ans["primitive_uvs"].numpy().astype(np.float64)
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
    return prim, bary


def build(model_dir, n: int, seed: int, out: Path, n_offsets: int = 300, keep_table: bool = False) -> Path:
    """Make the table (``n`` renders) and its pose-dependent offsets (``n_offsets`` renders) and write ``out``.
    ``keep_table``: read the surface-point table from ``out`` and remake only the offsets (and the lower
    inner-lip rows, :func:`lower_lip_rows`, which a table made before them lacks)."""
    model = load_ict(model_dir, region="face_closed")
    renderer = Renderer("cpu")
    if keep_table:
        with np.load(out) as z:
            table = {key: z[key] for key in ("vertex_ids", "bary", "valid", "hits")}
    else:
        table = build_table(model, renderer, n, seed)
    table = lower_lip_rows(model, table)
    if n_offsets > 0:
        table.update(build_offsets(model, renderer, table, n_offsets, seed))
    return _write(out, table)


def build_table(model, renderer, n: int, seed: int) -> dict:
    """The surface point under each MediaPipe landmark, averaged over ``n`` renders (see :mod:`fitting.stages.correspondence`)."""
    gen = FaceGenerator(model, renderer, texture_size=512)
    groups = point_groups()
    contour = groups == GROUP_NAMES.index("contour")
    iris = groups == GROUP_NAMES.index("iris")
    k = len(groups)
    sums = np.zeros((k, 3))
    hits = np.zeros(k)
    rest = model.mean.numpy().astype(np.float64)
    tris_all = model.triangles.numpy()
    with FaceMeshDetector(max_faces=1) as det:
        for i in tqdm(range(n), desc="correspondence renders"):
            face = gen(seed * 1000 + i, size=512, yaw_range=25.0, noise=False)
            try:
                lm = det.detect_one(face.image)
            except NoFaceError:
                continue
            frags = renderer.rasterize(torch.from_numpy(face.verts_camera)[None], model.triangles,
                                       face.camera.intrinsics, 512, 512)
            tri_map, bary_map = frags.tri_id[0].numpy(), frags.bary[0].numpy()
            cols = np.clip(np.floor(lm.points[:, 0]).astype(int), 0, 511)
            rows = np.clip(np.floor(lm.points[:, 1]).astype(int), 0, 511)
            tri = tri_map[rows, cols]
            ok = tri >= 0
            tv = tris_all[np.where(ok, tri, 0)]
            ok &= (tv < FACE_VERTICES).all(1)
            if abs(face.params["pose_deg"]["yaw"]) > CONTOUR_MAX_YAW:
                ok &= ~contour
            p = (rest[tv] * bary_map[rows, cols][..., None]).sum(1)
            sums[ok] += p[ok]
            hits[ok] += 1
    valid = (hits >= MIN_HITS) & ~iris
    mean_pts = sums / np.maximum(hits, 1)[:, None]
    # Rows left invalid keep zero weight but still get a real surface point (see stand_in_points).
    mean_pts = np.where(valid[:, None], mean_pts, stand_in_points(mean_pts, valid))
    face_tris = tris_all[(tris_all < FACE_VERTICES).all(1)]
    prim, bary = _closest_surface_points(rest[:FACE_VERTICES], face_tris, mean_pts)
    vertex_ids = face_tris[prim]
    table = dict(vertex_ids=vertex_ids.astype(np.int32), bary=bary.astype(np.float32), valid=valid,
                 hits=hits.astype(np.int32))
    print(f"table: {int(valid.sum())} of {k} landmarks valid (min hits {int(hits[~iris].min())}, renders {n})")
    return table


def lower_inner_lip() -> np.ndarray:
    """MediaPipe's inner-lip outline between the mouth corners 78 and 308 by way of 14: the lower lip's
    points (corners excluded)."""
    loop = list(_from_outer_corner(mp_index.LIPS_INNER_LOOP, 78))
    end = loop.index(308)
    half = loop[1:end] if 14 in loop[1:end] else loop[end + 1:]
    return np.array(half)


def lower_lip_rows(model, table: dict) -> dict:
    """The table with MediaPipe's lower inner-lip points on the lower lip's top edge.

    On a closed mouth the inner-lip outline's upper and lower points fall on the one line where the lips
    meet, and the renders' average put all but one of them on the upper lip (13 and 14 on one vertex):
    as the mouth opened, MediaPipe's lower points went down with the lip and their table points stayed up,
    and the fit read a jaw opened 0.5 as 0.28 (bench expressions). Each lower point not on the lower lip
    already now sits on the lower-lip vertex (moving down more than LOWER_LIP_JAW_MM per unit of jawOpen)
    highest in the rest shape within LOWER_LIP_SEARCH_MM of its averaged point: the lower lip's edge as
    seen from the front. A table made this way is left as it is."""
    rest = model.mean[:FACE_VERTICES].numpy().astype(np.float64)
    drop = model.exp_basis[model.exp_names.index("jawOpen"), :FACE_VERTICES, 1].numpy()
    lower = np.nonzero(drop < -LOWER_LIP_JAW_MM)[0]
    q = rest[lower]
    ids, bary = table["vertex_ids"].copy(), table["bary"].copy()
    dx, dy, dz = LOWER_LIP_SEARCH_MM
    for k in lower_inner_lip():
        if (drop[ids[k]] * bary[k]).sum() < -LOWER_LIP_JAW_MM:  # on the lower lip already (178 was)
            continue
        p = (rest[ids[k]] * bary[k][:, None]).sum(0)
        near = lower[(np.abs(q[:, 0] - p[0]) < dx) & (np.abs(q[:, 1] - p[1]) < dy) & (q[:, 2] > p[2] - dz)]
        if len(near) == 0:
            raise RuntimeError(f"no lower-lip vertex near MediaPipe point {k}'s surface point {p.round(1)}")
        ids[k] = near[np.argmax(rest[near, 1])]
        bary[k] = (1.0, 0.0, 0.0)
    return dict(table, vertex_ids=ids, bary=bary)


def _from_outer_corner(loop, corner: int) -> np.ndarray:
    """A closed MediaPipe outline as an index array starting at ``corner``."""
    loop = list(loop)
    i = loop.index(corner)
    return np.array(loop[i:] + loop[:i])


def eye_twins(points: np.ndarray, valid: np.ndarray) -> dict:
    """Each MediaPipe eye-outline point -> the same point of the other eye (its left/right twin), both ways.

    The two outlines are mirror images: walked from their outer corners, point i of one is the twin of
    point i of the other walked one way round or the other. The way is the one under which the mirrored
    valid points of the subject's right eye land nearest their twins: ``points`` (K, 3) rest-shape table
    points, mm, model frame; ``valid`` (K,) bool.
    """
    right = _from_outer_corner(mp_index.RIGHT_EYE_LOOP, mp_index.RIGHT_EYE_OUTER_CORNER)
    left = _from_outer_corner(mp_index.LEFT_EYE_LOOP, mp_index.LEFT_EYE_OUTER_CORNER)
    ways = (left, np.concatenate([left[:1], left[1:][::-1]]))

    def mismatch(other):
        both = valid[right] & valid[other]
        return np.linalg.norm(points[right[both]] * MIRROR - points[other[both]], axis=-1).mean()

    other = min(ways, key=mismatch)
    twins = dict(zip(right.tolist(), other.tolist()))
    twins.update({b: a for a, b in twins.items()})
    return twins


def stand_in_points(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(K, 3) rest-shape positions (mm, model frame) for the rows that renders could not place.

    Such rows keep zero weight, but a caller of ``Correspondence.points`` still gets a point where the
    landmark belongs instead of an arbitrary vertex. For an invalid row k (``valid`` (K,) bool; the
    other rows of ``points`` (K, 3) are read, the returned valid rows are ``points``' own):

    1. an eye-outline point whose twin in the other eye is valid: the twin mirrored (x -> -x);
    2. a face-mesh point with valid neighbours in MediaPipe's mesh: their mean;
    3. an iris point (on the eyeball, which the face area lacks): the centre of its eye's outline.

    Snap the result to the surface. Raises ValueError for a row none of these place.
    """
    out = np.array(points, dtype=np.float64)
    placed = np.array(valid, dtype=bool)
    for k, twin in eye_twins(out, placed).items():
        if not placed[k] and valid[twin]:
            out[k], placed[k] = out[twin] * MIRROR, True
    tris = mp_index.MESH_TRIANGLES
    for k in np.flatnonzero(~placed[:mp_index.NUM_MESH_LANDMARKS]):
        around = np.unique(tris[(tris == k).any(1)])
        around = around[(around != k) & placed[around]]
        if around.size:
            out[k], placed[k] = out[around].mean(0), True
    for iris, outline in ((mp_index.LEFT_IRIS, mp_index.LEFT_EYE_LOOP), (mp_index.RIGHT_IRIS, mp_index.RIGHT_EYE_LOOP)):
        iris, outline = np.array(iris), np.array(outline)
        todo = iris[~placed[iris]]
        if todo.size and placed[outline].all():
            out[todo], placed[todo] = out[outline].mean(0), True
    if not placed.all():
        raise ValueError(f"no stand-in point for landmarks {np.flatnonzero(~placed).tolist()}")
    return out


def fill_invalid_rows(model_dir, out: Path) -> Path:
    """Give the invalid rows of the table at ``out`` real surface points (:func:`stand_in_points`) and write it
    back; the valid rows, the validity, the hit counts and the offsets stay as they are."""
    model = load_ict(model_dir, region="face_closed")
    rest = model.mean.numpy().astype(np.float64)[:FACE_VERTICES]
    tris_all = model.triangles.numpy()
    face_tris = tris_all[(tris_all < FACE_VERTICES).all(1)]
    with np.load(out) as z:
        table = {key: z[key] for key in z.files}
    valid = table["valid"].astype(bool)
    points = (rest[table["vertex_ids"]] * table["bary"][..., None]).sum(1)
    stand_in = stand_in_points(points, valid)
    prim, bary = _closest_surface_points(rest, face_tris, stand_in[~valid])
    table["vertex_ids"][~valid] = face_tris[prim]
    table["bary"][~valid] = bary
    print(f"stand-in surface points for the {int((~valid).sum())} invalid rows: {np.flatnonzero(~valid).tolist()}")
    return _write(out, table)


def _write(out: Path, table: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **table)
    tmp.replace(out)
    print(f"wrote {out}")
    return out


def build_offsets(model, renderer, table: dict, n: int, seed: int) -> dict:
    """Per yaw bin and landmark, the model-frame offset (mm) from the table's surface point to where
    MediaPipe's point behaves as if it sat (see :mod:`fitting.stages.correspondence`).

    ``n`` renders with yaw uniform in +/-OFFSET_YAW_MAX; for each, the true pose and shape give the
    table points ``P_k`` in the camera frame, and MediaPipe's point ``u_k``; the offset ``o`` enters as
    ``u_k ~ proj(P_k + R o)``, linearised at ``o = 0`` (the offsets are a few mm at 600 mm). Each
    bin's offset solves the ridge-regularised least squares over the renders, each weighted by the
    hat function of its yaw around the bin centre. Returns ``offset_yaws`` (Y,) and ``offsets`` (Y, K, 3).
    """
    from sfs.projection import camera_to_pixel, camera_to_pixel_jacobian

    corr = Correspondence(torch.from_numpy(table["vertex_ids"].astype(np.int64)),
                          torch.from_numpy(table["bary"]), torch.from_numpy(table["valid"]))
    gen = FaceGenerator(model, renderer, texture_size=512)
    yaws = np.arange(-OFFSET_YAW_MAX, OFFSET_YAW_MAX + 1e-6, OFFSET_YAW_STEP)
    k = corr.vertex_ids.shape[0]
    ata = np.zeros((len(yaws), k, 3, 3))
    atb = np.zeros((len(yaws), k, 3))
    before, seen = [], []
    with FaceMeshDetector(max_faces=1) as det:
        for i in tqdm(range(n), desc="offset renders"):
            face = gen(OFFSET_SEED_BASE + seed * 1000 + i, size=512, yaw_range=OFFSET_YAW_MAX, noise=False)
            try:
                lm = det.detect_one(face.image)
            except NoFaceError:
                continue
            vc = torch.from_numpy(face.verts_camera[:FACE_VERTICES]).double()
            rot = face.camera.rotation[0].double()  # model -> camera
            pts = corr.points(vc[None])
            kint = face.camera.intrinsics.double()
            resid = (torch.from_numpy(lm.points[:, :2]).double() - camera_to_pixel(pts, kint)[0, :, :2]).numpy()
            jac = (camera_to_pixel_jacobian(pts, kint)[0] @ rot).numpy()  # (K, 2, 3): per mm of model-frame offset
            yaw = float(face.params["pose_deg"]["yaw"])
            hat = yaw_bin_weights(torch.tensor([yaw]), torch.from_numpy(yaws))[0].double().numpy()
            for b in np.nonzero(hat)[0]:
                ata[b] += hat[b] * np.einsum("kai,kaj->kij", jac, jac)
                atb[b] += hat[b] * np.einsum("kai,ka->ki", jac, resid)
            before.append(resid)
            seen.append((yaw, jac))
    offsets = np.linalg.solve(ata + OFFSET_RIDGE * np.eye(3), atb[..., None])[..., 0]
    offsets[:, ~table["valid"]] = 0.0
    # how much of MediaPipe's distance to the table points the offsets explain, on their own renders
    valid = table["valid"]
    fitted = Correspondence(corr.vertex_ids, corr.bary, corr.valid, torch.from_numpy(yaws).float(),
                            torch.from_numpy(offsets).float())
    after = []
    for (yaw, jac), r in zip(seen, before):
        o = fitted.offsets_at(torch.tensor([yaw]))[0].double().numpy()  # as the stages read them
        after.append(np.linalg.norm(r - np.einsum("kai,ki->ka", jac, o), axis=-1)[valid].mean())
    dist_before = np.mean([np.linalg.norm(r, axis=-1)[valid].mean() for r in before])
    print(f"offsets: {len(seen)} renders, MediaPipe to table points {dist_before:.2f} px -> {np.mean(after):.2f} px "
          f"with the offsets; |offset| mean {np.linalg.norm(offsets[:, valid], axis=-1).mean():.2f} mm")
    return dict(offset_yaws=yaws.astype(np.float32), offsets=offsets.astype(np.float32))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fitting.stages.correspondence_build", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="ICT-FaceKit folder or archive")
    ap.add_argument("--n", type=int, default=24, help="number of synthetic renders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-offsets", type=int, default=300,
                    help="renders for the pose-dependent offsets (0: none)")
    ap.add_argument("--keep-table", action="store_true",
                    help="keep the surface-point table already in --out, remake only the offsets")
    ap.add_argument("--fill-invalid", action="store_true",
                    help="only give the invalid rows of the table in --out stand-in surface points "
                         "(mirrored twins, eye centres); everything else is kept")
    ap.add_argument("--out", default=str(DATA_PATH))
    args = ap.parse_args(argv)
    if args.fill_invalid:
        fill_invalid_rows(args.model_dir, Path(args.out))
        return 0
    build(args.model_dir, args.n, args.seed, Path(args.out), args.n_offsets, args.keep_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
