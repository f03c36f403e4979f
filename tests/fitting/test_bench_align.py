"""Smoke test of ``python -m fitting.bench align`` (one synthetic face per yaw bin) and of its NME measure."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from fitting.bench.align import BINS, nme_percent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "landmarks"))
from shared_3ddfa import DDFA_DIR  # noqa: E402


def test_nme_is_the_mean_distance_over_the_box_size():
    truth = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 25.0], [0.0, 25.0]])  # box 100 x 25: size 50
    assert nme_percent(truth, truth) == 0.0
    assert nme_percent(truth + [3.0, 4.0], truth) == pytest.approx(10.0)  # 5 px / 50 px


def test_align_bench_prints_a_row_per_method(ict_dir, face_model, closed_model, capsys):
    from fitting.bench.__main__ import main

    assert main(["align", "--faces", "1", "--seed", "0", "--model-dir", str(ict_dir), "--size", "384",
                 "--no-progress", "--no-medium", "--3ddfa-dir", str(DDFA_DIR)]) == 0
    out = capsys.readouterr().out
    assert "initializer 'auto' -> 3ddfa_v2" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        name, _, rest = line.partition("  ")
        rows[name.strip()] = rest.split()
    assert set(rows) == {"MediaPipe 478 -> 68", "3DDFA_V2 alone", "coarse, no initializer",
                         "coarse, 3ddfa_v2 pose start", "coarse, 3ddfa_v2 fused", "found by MediaPipe", "fitted"}
    by_mediapipe, fitted = rows.pop("found by MediaPipe"), rows.pop("fitted")
    assert len(by_mediapipe) == len(BINS) and by_mediapipe[0] == "1/1"  # a frontal face is always found
    # with the regressor every face is fitted, those MediaPipe's mesh misses from the regressor alone
    assert fitted == ["1/1"] * len(BINS)
    for name, cells in rows.items():
        assert len(cells) == len(BINS) + 2, (name, cells)
        found = fitted if name in ("3DDFA_V2 alone", "coarse, 3ddfa_v2 fused") else by_mediapipe
        measured = [float(c) for c, f in zip(cells, found) if f != "0/1"] + [float(c) for c in cells[-2:]]
        assert all(math.isfinite(x) for x in measured), (name, cells)
        # every method puts the 68 points within a tenth of the face's size on a frontal face:
        # a wrong pixel frame or point order in the bench would not
        assert 0.0 < float(cells[0]) < 10.0, (name, cells)
