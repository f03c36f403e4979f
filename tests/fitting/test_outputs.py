"""Result folders: their mode, what an interrupted save leaves, and the leftovers of a killed one."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fitting.outputs import folder as outputs
from fitting.api import FitResult


def small_result(name: str = "face", marker: float = 0.0) -> FitResult:
    """A result with a picture, an array and params: enough to exercise the folder logic (no model)."""
    return FitResult(name=name, params={"units": "mm", "marker": marker},
                     images={"overlay": np.full((8, 8, 3), 0.5, np.float32)},
                     arrays={"depth": np.zeros((4, 4), np.float32)}, licenses={"MODEL_LICENSE.txt": "notice\n"})


def hidden_entries(parent: Path):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def umask():
    """Sets the process umask for one test and puts the previous one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_result_folder_has_the_mode_mkdir_gives(tmp_path, umask, mask, folder_mode, file_mode):
    # The folder was made by tempfile.mkdtemp and renamed: drwx------ whatever the
    # umask, unreadable to other users and to a web server serving the results.
    umask(mask)
    folder = outputs.save_result(small_result(), tmp_path / "face")
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode
    for name in ("params.json", "overlay.png", "depth.npy", "MODEL_LICENSE.txt"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == file_mode, name


@pytest.fixture
def dead_and_live_pids():
    """A PID whose process has exited and been reaped, and one of a process that is still running."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield done.pid, live.pid
    finally:
        live.kill()
        live.wait()


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(tmp_path, dead_and_live_pids):
    dead, live = dead_and_live_pids
    parent = tmp_path / "out"
    parent.mkdir()

    def leftover(name, kind, pid, host=None):
        entry_name = outputs.temp_folder_name(name, kind, pid)
        if host is not None:  # the same name as written on another machine sharing the folder
            entry_name = entry_name.replace(f"-{outputs._host_tag()}-", f"-{host}-")
        (parent / entry_name).mkdir()
        (parent / entry_name / "coarse.obj").write_bytes(b"v 0 0 0\n" * 1000)  # partly written
        return entry_name

    stale = [leftover("face", outputs.SAVING, dead), leftover("face", outputs.REPLACED, dead)]
    kept = [leftover("face", outputs.SAVING, live),  # a save running in another process
            leftover("face", outputs.SAVING, os.getpid()),  # one running in this process (another thread)
            leftover("face", outputs.SAVING, dead, host="0badc0de"),  # that PID means nothing here
            leftover("face-2", outputs.SAVING, dead)]  # another result's: its own next save removes it
    (parent / ".face-notes").mkdir()  # not a temporary folder of ours at all
    kept.append(".face-notes")

    outputs.save_result(small_result(), parent / "face")
    assert (parent / "face" / "params.json").is_file()
    assert hidden_entries(parent) == sorted(kept), f"removed: {stale}"


def test_an_interrupted_save_leaves_no_folder_and_keeps_the_previous_result(tmp_path, monkeypatch):
    outputs.save_result(small_result(marker=1.0), tmp_path / "face")
    before = (tmp_path / "face" / "params.json").read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(outputs, "save_image", interrupted)  # Ctrl-C while the pictures are written
        with pytest.raises(KeyboardInterrupt):
            outputs.save_result(small_result(marker=2.0), tmp_path / "face")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face"]
    assert (tmp_path / "face" / "params.json").read_text() == before

    # Ctrl-C between moving the previous result aside and moving the new one in
    real_replace = os.replace
    into_place = []

    def replace(src, dst):
        if Path(dst) == tmp_path / "face":
            into_place.append(Path(src).name)
            if len(into_place) == 1:  # the new result's move into place
                raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        outputs.save_result(small_result(marker=3.0), tmp_path / "face")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face"], "the previous result went back in place"
    assert (tmp_path / "face" / "params.json").read_text() == before


def test_report_sheet_titles_are_drawn_on_float_panels():
    # the titles are drawn on 8 bits (OpenCV 5 refuses text on float images) and come back as float
    from fitting.rendering.pictures import report_sheet
    panels = [np.full((64, 64, 3), 0.5, np.float32), np.zeros((32, 48, 3), np.float32)]
    sheet = report_sheet(panels, ["input", "fine"], tile=96)
    assert sheet.shape == (96 + 28, 2 * 96, 3) and sheet.dtype == np.float32
    head = sheet[:28]
    assert head.max() == 1.0 and head.min() < 0.3  # white strip with dark text on it
    assert np.allclose(sheet[28:, :96], 0.5)
