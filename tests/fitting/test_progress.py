"""The progress bar over images and stages (fitting.progress) and how FaceFitter drives it."""
from __future__ import annotations

import fitting.api
from fitting.api import FaceFitter
from fitting.stages.coarse import CoarseSettings
from fitting.progress import StageProgress


def test_steps_follow_faces_failures_and_failed_chunks():
    p = StageProgress(3, ("coarse", "medium", "fine"), enabled=False)
    assert (p.done, p.total) == (0, 12)             # 3 photos x (detection + 3 stages)
    p.detected(1)                                    # photo 1: one face
    p.detected(0)                                    # photo 2: unreadable, its stage steps go
    p.detected(2)                                    # photo 3: two faces (all_faces)
    assert (p.done, p.total) == (3, 12)
    p.stage(["a", "c#face0", "c#face1"], "coarse")
    p.stage_done(3)
    assert p.done == 6
    p.skipped(6)                                     # the chunk failed in the medium stage
    assert p.done == p.total == 6
    p.close()


def test_fit_many_moves_the_bar_per_stage_and_ends_full(monkeypatch, face_model, good_photos, bad_inputs):
    seen = []

    class Recording(StageProgress):
        def stage(self, names, stage):
            seen.append((stage, tuple(names), self.done))
            super().stage(names, stage)

        def close(self):
            seen.append(("closed", (), self.done, self.total))
            super().close()

    monkeypatch.setattr(fitting.api, "StageProgress", Recording)
    with FaceFitter(("coarse", "medium"), model=face_model, crop_size=256,
                    coarse=CoarseSettings(photometric=False)) as f:
        f.fit_many([good_photos[0], bad_inputs["corrupt"]])
    name = good_photos[0].stem
    # detection of both photos (2 steps), then coarse, then medium on the one face
    assert seen == [("coarse", (name,), 2), ("medium", (name,), 3), ("closed", (), 4, 4)]
