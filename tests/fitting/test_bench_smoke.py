"""Smoke test of the coarse and medium benches (two synthetic faces each) and of their error measures.

The ``face_model`` / ``closed_model`` fixtures build the model cache (shared
with other tests in a session), so the benches' own loads hit the cache.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fitting.bench.common import umeyama, vertex_errors

NUMBER = re.compile(r"^-?\d+(\.\d+)?$|^nan$|^inf$")


def _table_rows(out: str, title: str):
    """{row name: [cells]} of the table printed after the line starting with ``title``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header = lines[start + 1]
    assert header.startswith("method") and set(lines[start + 2]) == {"-"}
    rows = {}
    for line in lines[start + 3:]:
        if not line.strip() or line.startswith(("medium vs coarse", "normal-error reduction", "mean error below")):
            break
        name, _, rest = line.partition("  ")
        rows[name.strip()] = rest.split()
    return rows


def _assert_finite(cells, n_cols=6):
    assert len(cells) == n_cols, cells
    for c in cells:
        assert NUMBER.match(c), cells
        assert math.isfinite(float(c)), cells


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(200, 3)) * 50
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    dst = 1.3 * src @ rot.T + np.array([5.0, -2.0, 30.0])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(1.3)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    assert vertex_errors(src, dst).max() < 1e-9
    noisy = dst + rng.normal(size=dst.shape) * 0.1
    assert vertex_errors(src, noisy).mean() == pytest.approx(0.1 * math.sqrt(8 / math.pi), rel=0.15)


def test_coarse_and_medium_benches_print_finite_tables(ict_dir, face_model, closed_model, capsys):
    from fitting.bench.__main__ import main

    import importlib.util

    # eos-py (the test extra) has no wheel past Python 3.12: there the bench runs without its row
    has_eos = importlib.util.find_spec("eos") is not None
    common = ["--n", "2", "--seed", "0", "--model-dir", str(ict_dir), "--size", "384", "--no-progress"]
    assert main(["coarse", *common, "--no-photometric"] + ([] if has_eos else ["--no-eos"])) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out, "coarse bench:")
    assert "MediaPipe found 2/2" in out
    for name in ("mean shape (Umeyama-aligned)", "ours, least squares") + (("eos-py (identity only)",) * has_eos):
        _assert_finite(rows[name])
        assert rows[name][-1] == "2"
    assert "not run (--no-photometric)" in " ".join(rows["ours + photometric"])
    # fed exact landmarks (the truth's table points projected), the solver must beat the mean face clearly;
    # a wrong pixel or camera convention in the oracle points would not
    mean_mm = float(rows["mean shape (Umeyama-aligned)"][0])
    for name in ("ours, LS, exact landmarks", "ours, LS, exact, priors/100"):
        _assert_finite(rows[name])
        assert float(rows[name][3]) < 1.5, rows[name]  # landmark px against the points it was fed
    assert float(rows["ours, LS, exact, priors/100"][0]) < 0.6 * mean_mm, (rows, mean_mm)
    assert re.search(r"mean error below the mean shape's: least squares -?\d+\.\d %", out)

    assert main(["medium", *common]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out, "medium bench:")
    for name in ("coarse (least squares)", "medium (Laplacian)", "coarse, exact landmarks",
                 "medium, exact landmarks"):
        _assert_finite(rows[name])
    assert float(rows["coarse, exact landmarks"][0]) < float(rows["coarse (least squares)"][0])
    assert re.search(r"medium vs coarse, exact landmarks: mean error [+-]\d+\.\d %", out)
    change = re.search(r"mean error ([+-]\d+\.\d) %, median error ([+-]\d+\.\d) %", out)
    assert change and all(math.isfinite(float(g)) for g in change.groups())


def test_fine_bench_prints_a_finite_table(ict_dir, face_model, closed_model, capsys, monkeypatch):
    """One small face through coarse, medium and two fine runs; the table's measured cells are finite.

    The bench's fine stage runs with fewer iterations in every phase (each still runs) and without the
    subdivided mesh and with a small texture (outputs that the table does not read): the cells are measured
    the same way whatever the settings, and the pipeline's default fine settings run in test_readme."""
    import fitting.stages.fine as fine_stage
    from sfs.refine import SfsSettings
    from fitting.bench.__main__ import main

    default = fine_stage.FineSettings

    def quick_fine(**kwargs):
        kwargs.setdefault("sfs", SfsSettings(albedo_iters=5, depth_iters=(5, 5), basis_iters=3, ms_iters=3))
        kwargs.setdefault("displaced_subdivisions", 0)
        kwargs.setdefault("texture_height", 128)
        return default(**kwargs)

    monkeypatch.setattr(fine_stage, "FineSettings", quick_fine)
    assert main(["fine", "--n", "1", "--seed", "0", "--model-dir", str(ict_dir), "--size", "256",
                 "--crop-size", "256", "--no-progress", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "fine detail=on; MediaPipe found 1/1" in out
    rows = _table_rows(out, "fine bench:")
    assert set(rows) == {"coarse (least squares)", "medium (Laplacian)", "fine (RTV + skin colour)",
                         "fine (skin colour only)"}
    for name, cells in rows.items():
        assert len(cells) == 6 and cells[-1] == "1", cells
        measured = [c for c in cells if c != "n/a"]
        assert len(measured) == (4 if name.startswith(("coarse", "medium")) else 6), cells
        assert all(NUMBER.match(c) and math.isfinite(float(c)) for c in measured), cells
    assert re.search(r"normal-error reduction vs medium: fine \(RTV \+ skin colour\) [+-]\d+\.\d %", out)


def test_photos_bench_prints_a_row_per_photo(ict_dir, face_model, faces_dir, tmp_path, capsys):
    """Two shared photos (one frontal, the 45-degree one) through coarse and medium: one finite row each, the
    summary lines, and the results saved under --out; a folder without photos is a one-line error."""
    import shutil
    from fitting.bench.__main__ import main

    photos = sorted(faces_dir.glob("*.jpg"))
    picked = [p for p in photos if "yaw45" in p.name][:1] + [p for p in photos if "yaw45" not in p.name][:1]
    assert len(picked) == 2
    folder = tmp_path / "faces"
    folder.mkdir()
    for p in picked:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not a photo")
    out_dir = tmp_path / "out"
    assert main(["photos", "--faces", str(folder), "--no-astronaut", "--stages", "coarse,medium", "--crop-size",
                 "256", "--model-dir", str(ict_dir), "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "photos bench: 2 of 2 photos fitted, stages coarse,medium" in out
    for p in picked:
        line = next(line for line in out.splitlines() if line.startswith(p.stem[:30]))
        cells = line[30:].split()
        yaw, coarse, medium, flips, lap = (float(c) for c in cells[:5])
        assert cells[5:7] == ["n/a", "n/a"]  # no fine stage: no PSNR / SSIM
        assert 0 < medium < coarse < 8.0 and flips == 0 and 0 < lap < 1.0, line
        assert (abs(yaw) > 30) == ("yaw45" in p.name), line
        assert (out_dir / p.stem / "medium.obj").is_file()
    assert re.search(r"medium lowers the landmark error on 2/2 photos; flipped triangles in all: 0", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no photos in"):
        main(["photos", "--faces", str(tmp_path / "empty"), "--no-astronaut", "--model-dir", str(ict_dir)])


STUB_CLI = '''"""A fit-face of an older tree: no --timings; makes each photo's folder and nothing else."""
import argparse
from pathlib import Path

ap = argparse.ArgumentParser(prog="fit-face")
ap.add_argument("images", nargs="+")
ap.add_argument("--out")
ap.add_argument("--stages")
ap.add_argument("--model-dir")
ap.add_argument("--no-progress", action="store_true")
args = ap.parse_args()
for photo in args.images:
    (Path(args.out) / Path(photo).stem).mkdir(parents=True)
'''


def test_e2e_bench_measures_the_cli_and_a_baseline_without_timings(ict_dir, face_model, faces_dir, tmp_path,
                                                                   capsys):
    """One photo, coarse only, in a fresh fit-face process: the parts come from the CLI's --timings and add up
    to no more than the wall time; a baseline tree whose CLI lacks --timings gets its totals only; the
    outputs are deleted after."""
    from fitting.bench.__main__ import main
    from fitting.bench.e2e import PARTS

    stub = tmp_path / "old_tree"
    (stub / "fitting").mkdir(parents=True)
    (stub / "fitting" / "__init__.py").write_text("")
    (stub / "fitting" / "cli.py").write_text(STUB_CLI)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "unrelated.txt").write_text("not the bench's")
    assert main(["e2e", "--baseline", str(stub), "--photos", "1", "--stages", "coarse", "--faces", str(faces_dir),
                 "--model-dir", str(ict_dir), "--out", str(out_dir), "--no-warmup"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["unrelated.txt"]  # its own outputs gone, nothing else
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("baseline ", "this "))}
    assert set(rows) == {"baseline", "this"}
    totals, _, parts = rows["this"].partition("|")
    photos, stages, workers, wall, cpu, peak_mib, per_min = totals.split()[1:]
    assert (photos, stages, workers) == ("1", "coarse", "1")  # one photo: fitted in the CLI's own process
    wall, cpu, peak_mib, per_min = float(wall), float(cpu), float(peak_mib), float(per_min)
    assert wall > 0 and cpu > 0 and peak_mib > 300  # torch alone holds more than 300 MiB
    assert abs(per_min - 60 / wall) < 0.02 * per_min + 0.01
    seconds = dict(zip(PARTS, map(float, parts.split())))
    assert seconds["startup"] > 0 and seconds["load"] > 0 and seconds["detection"] > 0 and seconds["coarse"] > 0
    assert seconds["medium"] == 0 and seconds["fine"] == 0 and seconds["writing"] > 0
    assert seconds["other"] > -0.01 and seconds["exit"] > -0.01  # disjoint spans: none left negative
    assert abs(sum(seconds.values()) - wall) < 0.05 + 0.01 * len(PARTS)  # the parts add up to the wall time
    base_totals, _, base_parts = rows["baseline"].partition("|")
    assert base_parts.split() == ["n/a"] * len(PARTS)
    assert "baseline: " in out and "totals only" in out


def test_e2e_bench_times_a_video_with_and_without_frame_meshes(ict_dir, face_model, tmp_path, capsys):
    """--video: the synthetic clip written as a video and fitted in a fresh process, with --detail none and
    with --frame-meshes (the #18 speed line); frames per second printed; the clip and outputs deleted after."""
    from fitting.bench.__main__ import main
    out_dir = tmp_path / "out"
    assert main(["e2e", "--video", "3", "--model-dir", str(ict_dir), "--out", str(out_dir), "--no-warmup"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[0].split() for line in out.splitlines() if line.startswith("this ")]
    assert [r[1:3] for r in rows] == [["3", "video"], ["3", "video+frame"]], rows
    assert all(float(r[-4]) > 0 for r in rows)  # wall s
    (fps_line,) = [line for line in out.splitlines() if "frames per second end to end" in line]
    assert "video+frame meshes" in fps_line
    assert not any(out_dir.iterdir())


def test_same_person_bench_prints_finite_tables(ict_dir, face_model, closed_model, tmp_path, capsys, monkeypatch):
    """Two people x two views and a 4-frame clip: both part (a) tables, the disagreement line, part (b)'s rows
    and files. The photometric polish (single-view and joint) runs 4 steps at 96 px instead of 30 at 192 (it
    took most of the run): the polished table is measured and printed the same way whatever the steps; the
    polish itself is tested in test_photometric and test_same_person."""
    import dataclasses
    import fitting.stages.joint as joint
    from fitting.bench.__main__ import main

    default = joint.SamePersonSettings

    def quick_polish(**kwargs):
        s = default(**kwargs)
        return dataclasses.replace(s, coarse=dataclasses.replace(s.coarse, photometric_steps=4, photometric_size=96))

    monkeypatch.setattr(joint, "SamePersonSettings", quick_polish)

    assert main(["same-person", "--n", "2", "--views", "2", "--model-dir", str(ict_dir), "--no-oracle",
                 "--no-progress", "--clip-frames", "4", "--temporal", "0,100", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for title, columns in (("least squares", 11), ("with the photometric polish", 12)):  # 12: + 'polished'
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        assert lines[start + 1].split()[:2] == ["N", "views"] and set(lines[start + 2]) == {"-"}
        for line in lines[start + 3:start + 5]:  # N = 1, 2
            cells = line.split()
            assert len(cells) == columns and all(math.isfinite(float(c)) for c in cells), line
    assert "issue 18 (a)" not in out  # 8 views only
    assert "disagreement" in out
    clip = next(i for i, line in enumerate(lines) if line.startswith("part (b)"))
    rows = [line for line in lines[clip + 3:clip + 7]]
    assert rows[0].startswith("independent per-frame fits") and rows[2].startswith("joint, temporal 100")
    assert rows[3].startswith("joint + medium per frame")
    assert all(math.isfinite(float(c)) for c in rows[3].split()[-7:]), rows[3]
    for name in ("clip_jawOpen.png", "clip_eyeBlink_L.png", "clip_curves.csv"):
        assert (tmp_path / name).is_file(), name
