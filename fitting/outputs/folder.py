"""Writing a :class:`~fitting.result.FitResult` to a folder: meshes, maps, params.json, pictures, the
licence notices of the model its meshes derive from.

The whole folder is assembled in a temporary sibling and moved into place
at the end, so an interrupted or failed save leaves no half-written result
(an older result of the same name is replaced only once the new one is whole).
The folder gets the mode any ``mkdir`` gives (0o777 less the umask), not the
0o700 of a private temporary folder. A save killed outright (SIGKILL, power
loss) cannot remove its temporary folder; the folder's name carries the
saving process's host and PID, and the next save of the same name into the
same folder removes such leftovers once that process is gone.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Optional

import numpy as np

from .files import ExportError, save_image, save_obj, save_ply


def save_result(result, folder: Path) -> Path:
    if not result.ok:
        raise ExportError(f"nothing to save for {result.name}: {result.error}")
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_folders(folder.parent, folder.name)
        tmp = _make_temp_folder(folder.parent, folder.name, SAVING)
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
            old = folder.parent / temp_folder_name(folder.name, REPLACED)
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except BaseException:  # Ctrl-C or an error between the two renames: the previous result goes back
                if not folder.exists():
                    os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError as exc:
        raise ExportError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# Kinds of temporary sibling folder: a result being written, and the previous
# result of the same name while the new one takes its place.
SAVING, REPLACED = "saving", "replaced"
# Random hex digits that keep two saves of one process (threads) apart.
_TOKEN_BYTES = 4


def _host_tag() -> str:
    """8 hex digits naming this machine: a PID means nothing on another host sharing the folder."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_folder_name(name: str, kind: str, pid: Optional[int] = None) -> str:
    """The hidden sibling ``.<name>-<kind>-<host>-<pid>-<random hex>`` used while saving ``name``."""
    pid = os.getpid() if pid is None else pid
    return f".{name}-{kind}-{_host_tag()}-{pid}-{secrets.token_hex(_TOKEN_BYTES)}"


def _make_temp_folder(parent: Path, name: str, kind: str) -> Path:
    """A new, empty temporary sibling; os.mkdir applies the umask (mkdtemp would make it 0o700)."""
    for _ in range(100):
        tmp = parent / temp_folder_name(name, kind)
        try:
            os.mkdir(tmp)
            return tmp
        except FileExistsError:  # the random part collided: draw again
            continue
    raise FileExistsError(f"no free temporary name for {name} in {parent}")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (True when it cannot be told)."""
    if os.name != "posix" or pid <= 0:  # os.kill(pid, 0) probes only on POSIX; 0 and below name groups
        return True
    try:
        os.kill(pid, 0)  # signal 0: delivers nothing, only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by another user
        return True
    return True


def _remove_stale_temp_folders(parent: Path, name: str) -> None:
    """Remove ``name``'s temporary siblings in ``parent`` left by saves on this host whose process is gone.

    A folder of a live process (this one included), of another host, or of
    another result name is never touched; neither is any other hidden entry.
    """
    pattern = re.compile(rf"\.{re.escape(name)}-(?:{SAVING}|{REPLACED})-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)"
                         rf"-[0-9a-f]{{{2 * _TOKEN_BYTES}}}")
    host = _host_tag()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return  # the save itself reports a folder it cannot use
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and match["host"] == host and not _pid_alive(int(match["pid"])) \
                and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


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
