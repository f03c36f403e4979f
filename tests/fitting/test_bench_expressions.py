"""The expression bench (fitting.bench.expressions): its scores, and one small run end to end."""
from __future__ import annotations

import math

import pytest
import torch

from fitting.bench.expressions import SETS, expression_scores, set_weights

NAMES = ["eyeBlink_L", "eyeBlink_R", "eyeLookUp_L", "browDown_L", "jawOpen"]


def test_set_weights_places_each_weight_by_name():
    w = set_weights(NAMES, {"jawOpen": 0.5, "eyeBlink_R": 1.0})
    assert w.tolist() == [0.0, 1.0, 0.0, 0.0, 0.5]
    with pytest.raises(ValueError):
        set_weights(NAMES, {"noSuchShape": 1.0})


def test_scores_split_true_and_false_weights_and_leave_eye_gaze_out():
    truth = set_weights(NAMES, {"jawOpen": 0.5})
    fitted = torch.tensor([0.2, 0.1, 0.9, 0.4, 0.3])  # eyeLookUp_L 0.9 is not fitted, so not scored
    s = expression_scores(fitted, truth, NAMES)
    assert s["found"] == {"jawOpen": pytest.approx(0.3)}
    assert s["false_max"] == pytest.approx(0.4)


def test_every_set_names_real_blendshapes(face_model):
    for weights in SETS.values():
        w = set_weights(face_model.exp_names, weights)
        assert float(w.sum()) == pytest.approx(sum(weights.values()))


def test_expression_bench_prints_a_finite_row_per_set(ict_dir, face_model, closed_model, capsys):
    from fitting.bench.__main__ import main

    assert main(["expressions", "--yaws", "0", "--identities", "1", "--size", "384", "--model-dir", str(ict_dir),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("set "))
    rows = lines[head + 1:head + 1 + len(SETS)]
    for name, line in zip(SETS, rows):
        assert line.startswith(name), line
        cells = line[12:].split()
        assert cells[0] == "1", line
        false_mean, false_worst = (float(x) for x in cells[1].split("/"))
        assert 0.0 <= false_mean <= false_worst <= 1.0
        neutral_mm, coarse_mm = float(cells[2]), float(cells[3])
        assert math.isfinite(neutral_mm) and 0.0 < neutral_mm < 10.0 and 0.0 < coarse_mm < 10.0, line
