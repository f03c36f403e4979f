"""Writing a :class:`~fitting.result.FitResult` to a folder: meshes, maps, params.json, pictures, the
licence notices of the model its meshes derive from.

The whole folder is assembled in a temporary sibling and moved into place
at the end, so an interrupted or failed save leaves no half-written result
(an older result of the same name is replaced only once the new one is whole).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .files import ExportError, save_image, save_obj, save_ply


def save_result(result, folder: Path) -> Path:
    if not result.ok:
        raise ExportError(f"nothing to save for {result.name}: {result.error}")
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as exc:
        raise ExportError(f"cannot write to {folder.parent}: {exc.strerror or exc}") from None
    try:
        for stage, mesh in result.meshes.items():
            save_obj(mesh, tmp / f"{stage}.obj")
            save_ply(mesh, tmp / f"{stage}.ply")
        for name, image in result.images.items():
            save_image(image, tmp / f"{name}.png")
        for name, array in result.arrays.items():
            np.save(tmp / f"{name}.npy", array)
        params = {"name": result.name, "source": result.source,
                  "camera": {k: np.asarray(v).tolist() for k, v in result.camera.items()},
                  **_jsonable(result.params), "timings_s": result.timings}
        (tmp / "params.json").write_text(json.dumps(params, indent=1))
        if result.landmarks68:
            (tmp / "landmarks68.json").write_text(json.dumps(_jsonable(result.landmarks68), indent=1))
        for name, text in result.licenses.items():
            (tmp / name).write_text(text)
        if folder.exists():
            old = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError as exc:
        raise ExportError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
