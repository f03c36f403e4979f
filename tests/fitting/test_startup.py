"""Start-up: a command imports what it needs and no more (issue 21, item 2).

Each check runs in a fresh interpreter and reads ``sys.modules`` after the
command, so a module any earlier test imported cannot hide a leak.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240

# What --help, --version and the errors found before fitting answer without: the libraries a
# fit loads (torch alone takes over a second to import).
FIT_LIBRARIES = {"numpy", "torch", "ai_edge_litert", "mediapipe", "open3d", "cv2", "trimesh", "PIL", "scipy", "skimage",
                 "morphable", "landmarks", "sfs"}
# What a coarse-only fit never runs: the medium stage (SciPy's sparse solvers through
# fitting.stages.laplacian), the fine stage (fitting.stages.fine, its texture baking, the SfS solver
# and masks) and trimesh (the fine stage's subdivision; the mesh files are written without it: its
# import took about a second, most of a coarse fit's writing).
LATER_STAGE_MODULES = {"fitting.stages.medium", "fitting.stages.laplacian", "fitting.stages.fine",
                       "fitting.stages.texture", "sfs.refine", "sfs.skin", "trimesh"}

CLI_PROBE = """
import json, runpy, sys
sys.argv = ["fit-face"] + json.loads(sys.argv[1])
try:
    runpy.run_module("fitting.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

COARSE_PROBE = """
import json, sys
from fitting.api import FaceFitter
from fitting.stages.coarse import CoarseSettings
model_dir, photo, out = sys.argv[1:4]
# a short polish: it still renders and steps Adam, which is what a coarse fit loads
with FaceFitter(("coarse",), model_dir=model_dir, coarse=CoarseSettings(photometric_steps=2)) as fitter:
    result = fitter.fit(photo)
    result.save(out)
print(json.dumps({"timings": result.timings, "modules": sorted(sys.modules)}))
"""


def _probe(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.setdefault("OMP_NUM_THREADS", "1")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _top_level(modules) -> set:
    return {m.split(".")[0] for m in modules}


def test_help_version_and_argument_errors_load_no_fit_library(tmp_path):
    for argv, code in ((["--help"], 0), (["--version"], 0), (["photo.jpg", "--batch-size", "0"], 2),
                       (["photo.jpg", "--stages"], 2)):
        found = _probe(CLI_PROBE, json.dumps(argv))
        assert found["code"] == code, argv
        assert not _top_level(found["modules"]) & FIT_LIBRARIES, (argv, _top_level(found["modules"]) & FIT_LIBRARIES)


def test_only_missing_photos_load_nothing(tmp_path):
    """Every photo missing: the one error line per photo and exit 2 (nothing could be fitted), without
    loading the model or torch (the fitter, ~5 s of imports and model load, used to be built to fit nothing)."""
    found = _probe(CLI_PROBE, json.dumps([str(tmp_path / "no_such.jpg"), "--out", str(tmp_path / "out")]))
    assert found["code"] == 2
    assert not _top_level(found["modules"]) & FIT_LIBRARIES, _top_level(found["modules"]) & FIT_LIBRARIES
    assert not (tmp_path / "out").exists()


def test_coarse_only_fit_loads_no_later_stage(tmp_path, ict_dir, face_model, good_photos):
    # face_model: the session fixture that fills the model cache the subprocess reads
    found = _probe(COARSE_PROBE, str(ict_dir), str(good_photos[0]), str(tmp_path / "out"))
    assert (tmp_path / "out" / "coarse.obj").is_file()
    loaded = set(found["modules"])
    assert "open3d" in loaded and "fitting.stages.photometric" in loaded  # the polish did render: the probe is live
    assert not loaded & LATER_STAGE_MODULES, sorted(loaded & LATER_STAGE_MODULES)
    # Adam steps without torch.optim, whose optimisers import the compiler torch._dynamo (1.2 s; sfs.adam)
    assert "torch._dynamo" not in loaded
    assert set(found["timings"]) == {"detection", "coarse", "results"}  # what --timings sums: seconds per face
    assert all(seconds > 0 for seconds in found["timings"].values())


def test_sfs_names_load_on_first_use():
    """sfs's fine-stage names (solver, masks) load when first asked for and are the submodules' own."""
    found = _probe("import json, sys, sfs.projection; print(json.dumps({'modules': sorted(sys.modules)}))")
    assert not set(found["modules"]) & {"sfs.refine", "sfs.skin"}
    import sfs
    import sfs.refine
    import sfs.skin
    from sfs import SfsSettings, brow_pixels, refine_depth, rtv

    assert SfsSettings is sfs.refine.SfsSettings and refine_depth is sfs.refine.refine_depth
    assert brow_pixels is sfs.skin.brow_pixels
    assert callable(rtv) and sfs.rtv is rtv  # the function, not its submodule of the same name
    assert {"refine_depth", "non_skin_pixels", "rtv"} <= set(dir(sfs))
    with pytest.raises(AttributeError):
        sfs.no_such_name


def test_cli_skips_the_garbage_collection_at_exit(tmp_path):
    """fit-face freezes the heap at exit, so the interpreter's collection at shutdown (1-2 s after torch,
    MediaPipe and open3d; measured by ``fitting.bench e2e``'s exit column) skips it. Seen from an exit
    handler registered before the CLI's, which therefore runs after it."""
    probe = """
import atexit, gc, runpy, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
sys.argv = ["fit-face", sys.argv[1]]
runpy.run_module("fitting.cli", run_name="__main__")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    res = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "no_such.jpg")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 2, res.stderr  # no photo to fit
    frozen = int(res.stdout.split("frozen at exit:")[1])
    assert frozen > 1000, res.stdout
