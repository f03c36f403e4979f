"""One progress bar over images and stages, for :class:`fitting.api.FaceFitter`.

A step is the detection of one image, or one stage of one face: a photo
fitted with all three stages counts four steps, so the bar moves while the
stages run (the fine stage, ~15 s a face on a CPU, dominates) instead of
filling as soon as the photos are read. Faces found by ``--all-faces`` add
their stage steps when they are found; a photo that fails, or a chunk whose
stage fails, takes its remaining steps off the total, so the bar still ends
full.
"""
from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm


class StageProgress:
    """``n_images`` photos, each to run through ``stages``; ``enabled`` False: no bar, same counts.

    ``done`` and ``total`` count steps (kept here: a disabled tqdm counts nothing).
    """

    def __init__(self, n_images: int, stages: Sequence[str], enabled: bool = True):
        self.n_stages = len(stages)
        self.done = 0
        self.total = n_images * (1 + self.n_stages)
        self.bar = tqdm(total=self.total, desc="fitting", unit="step", disable=not enabled)

    def detected(self, n_faces: int) -> None:
        """One photo read: ``n_faces`` faces will run the stages (0: it failed, no stage steps)."""
        self._resize((n_faces - 1) * self.n_stages)
        self._advance(1)

    def stage(self, names: Sequence[str], stage: str) -> None:
        """``stage`` starts on the faces ``names``."""
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        self.bar.set_postfix_str(f"{stage}: {shown}")

    def stage_done(self, n_faces: int) -> None:
        """The current stage has finished on ``n_faces`` faces."""
        self._advance(n_faces)

    def skipped(self, n_steps: int) -> None:
        """``n_steps`` stage steps will not run (their chunk failed)."""
        self._resize(-n_steps)

    def close(self) -> None:
        self.bar.set_postfix_str("")
        self.bar.close()

    def _advance(self, n: int) -> None:
        self.done += n
        self.bar.update(n)

    def _resize(self, delta: int) -> None:
        if delta:
            self.total = max(self.done, self.total + delta)
            self.bar.total = self.total
            self.bar.refresh()
