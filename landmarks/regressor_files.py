"""The files of the 3DDFA_V2 regressor (:mod:`landmarks.regressor`): where they are found, how they are
downloaded and verified.

The regressor is optional: its 68-point bases descend from the Basel Face Model, whose terms allow
non-commercial research only, so nothing of it ships with the package. Where the files are found,
in order:

1. an explicit folder (``find_regressor_files(path)``, ``fit-face --3ddfa-dir``);
2. the environment variable ``FACEFIT_3DDFA_DIR``;
3. the user's cache folder (``FACEFIT_CACHE_DIR`` overrides it), ``3ddfa_v2-<commit>/``;
4. a download of the upstream files at their pinned commits into that cache folder
   (``FACEFIT_3DDFA_URL`` overrides the address template, e.g. for a mirror).

A folder holds the network's weights ``mb05_120x120.pth`` and the keypoint model in one of two forms:
``keypoint_model.npz`` (the arrays below, as in the project's shared folder), or the upstream files
it is converted from (``param_mean_std_62d_120x120.pkl``, ``u_base.txt``, ``w_shp_base.txt``,
``w_exp_base.txt``). Every upstream file is checked against the SHA-256 of its bytes at the pinned
commit; ``keypoint_model.npz`` is checked by the SHA-256 of its arrays (names, dtypes, shapes and
bytes), which does not depend on how numpy zipped them.

The keypoint model (68 iBUG points, x y z each):

- ``param_mean``, ``param_std`` (62,): the network's output is normalised by them;
- ``u_base`` (68, 3): the mean shape at the 68 points (BFM units, about micrometres);
- ``w_shp_base`` (68, 3, 40), ``w_exp_base`` (68, 3, 10): identity and expression bases there.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .cache_dir import default_cache_dir
from .errors import LandmarksError

log = logging.getLogger(__name__)

V2_REPO, V2_COMMIT = "cleardusk/3DDFA_V2", "1b6c67601abffc1e9f248b291708aef0e43b55ae"
# The 68-point bases are published as text only in the first 3DDFA repository (its C++ demo, which
# pairs them with 3DDFA_V2's normalisation, as the network here does).
V1_REPO, V1_COMMIT = "cleardusk/3DDFA", "3545f355bfc71e5748fa915b13932958363135d7"
URL_TEMPLATE = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
ENV_DIR = "FACEFIT_3DDFA_DIR"
ENV_URL = "FACEFIT_3DDFA_URL"

WEIGHTS_NAME = "mb05_120x120.pth"
KEYPOINT_MODEL_NAME = "keypoint_model.npz"

# Local name -> (repository, commit, path there, SHA-256 of the bytes at that commit).
UPSTREAM_FILES: Dict[str, Tuple[str, str, str, str]] = {
    WEIGHTS_NAME: (V2_REPO, V2_COMMIT, "weights/mb05_120x120.pth",
                   "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280"),
    "param_mean_std_62d_120x120.pkl": (V2_REPO, V2_COMMIT, "configs/param_mean_std_62d_120x120.pkl",
                                       "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795"),
    "u_base.txt": (V1_REPO, V1_COMMIT, "c++/weights/u_base.txt",
                   "1ea7c3116070aeee720605a4a44ca9db582ac550095c321c3cf65ec925fe43cf"),
    "w_shp_base.txt": (V1_REPO, V1_COMMIT, "c++/weights/w_shp_base.txt",
                       "bec9a2189eb77c61ff940c801dcd9e5cd7f1973b6d91949494d9cd7ac121b7f6"),
    "w_exp_base.txt": (V1_REPO, V1_COMMIT, "c++/weights/w_exp_base.txt",
                       "4dc637c92c34bfd69faab74cafce23913f2b6181ff00c57a7ab69c1204d20b18"),
    # The MIT notices of code and weights travel with them.
    "LICENSE-3DDFA_V2.txt": (V2_REPO, V2_COMMIT, "LICENSE",
                             "4e8e329d78d0dbd3be980d979f773d0c554b5deed5276c12d0de442cfecc2c24"),
    "LICENSE-3DDFA.txt": (V1_REPO, V1_COMMIT, "LICENSE",
                          "6f8099609b3821f640993355580b55c1e5180c2eb39ff997f67e649a085b6d20"),
}
KEYPOINT_SOURCES = ("param_mean_std_62d_120x120.pkl", "u_base.txt", "w_shp_base.txt", "w_exp_base.txt")
# SHA-256 of the converted arrays (see :func:`keypoint_model_digest`): the same for the shared folder's
# keypoint_model.npz and for what :func:`convert_keypoint_model` makes of the upstream files.
KEYPOINT_MODEL_DIGEST = "9956d3c82899dc1cfcade06fa707f681c5261fff235a8089ab088915fb8d608b"
KEYPOINT_SHAPES = {"param_mean": (62,), "param_std": (62,), "u_base": (68, 3), "w_shp_base": (68, 3, 40),
                   "w_exp_base": (68, 3, 10)}
N_KEYPOINTS = 68


class RegressorFilesError(LandmarksError):
    """The regressor's files could not be found, downloaded, verified or read (message: one line)."""


# --------------------------------------------------------------------------- checksums

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def keypoint_model_digest(arrays: Dict[str, np.ndarray]) -> str:
    """SHA-256 over the keypoint model's arrays in name order: name, dtype, shape and C-order bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _verify(path: Path, name: str) -> None:
    want = UPSTREAM_FILES[name][3]
    try:
        got = sha256_file(path)
    except OSError as exc:
        raise RegressorFilesError(f"cannot read {path}: {exc.strerror or exc}") from None
    if got != want:
        raise RegressorFilesError(f"checksum mismatch for {path}: expected {want[:16]}..., got {got[:16]}... "
                                  f"(not the 3DDFA file of commit {UPSTREAM_FILES[name][1][:12]})")


# --------------------------------------------------------------------------- conversion

class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and nothing else: a pickle can run any code it names."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a parameter file")
        return super().find_class(module, name)


def convert_keypoint_model(folder: Path) -> Dict[str, np.ndarray]:
    """The keypoint model's arrays (float32, shapes in :data:`KEYPOINT_SHAPES`) from the upstream files
    in ``folder`` (already verified): the pickled normalisation and the three text bases, whose 204
    rows are the 68 points' x, y, z interleaved."""
    try:
        with open(folder / "param_mean_std_62d_120x120.pkl", "rb") as f:
            norm = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
        out = {"param_mean": np.asarray(norm["mean"], np.float32), "param_std": np.asarray(norm["std"], np.float32)}
        for name in ("u_base", "w_shp_base", "w_exp_base"):
            shape = KEYPOINT_SHAPES[name]
            out[name] = np.loadtxt(folder / f"{name}.txt", dtype=np.float32).reshape(shape)
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as exc:
        raise RegressorFilesError(f"cannot convert the 3DDFA keypoint files in {folder}: {exc}") from None
    return out


def _read_npz(path: Path) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise RegressorFilesError(f"cannot read {path}: {exc}") from None
    if keypoint_model_digest(arrays) != KEYPOINT_MODEL_DIGEST:
        raise RegressorFilesError(f"checksum mismatch for {path}: its arrays are not the 3DDFA keypoint model "
                                  f"(pinned digest {KEYPOINT_MODEL_DIGEST[:16]}...)")
    return arrays


# --------------------------------------------------------------------------- locating

@dataclass(frozen=True)
class RegressorFiles:
    """A verified set of the regressor's files: ``weights`` (the torch state dict's path), ``keypoints``
    (the keypoint model's arrays) and ``source`` (where they came from, for messages)."""

    weights: Path
    keypoints: Dict[str, np.ndarray]
    source: str


def cache_folder(cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"3ddfa_v2-{V2_COMMIT[:12]}"


def _from_folder(folder: Path) -> Optional[RegressorFiles]:
    """The verified files in ``folder``; None when it holds neither form (raises on a bad file)."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        return None
    if (folder / KEYPOINT_MODEL_NAME).is_file():
        keypoints = _read_npz(folder / KEYPOINT_MODEL_NAME)
    elif all((folder / n).is_file() for n in KEYPOINT_SOURCES):
        for n in KEYPOINT_SOURCES:
            _verify(folder / n, n)
        keypoints = convert_keypoint_model(folder)
    else:
        return None
    _verify(weights, WEIGHTS_NAME)
    return RegressorFiles(weights=weights, keypoints=keypoints, source=str(folder))


def download_file(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (written as ``dest.part`` and renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
            if total is not None and out.tell() != total:
                raise RegressorFilesError(f"download of {url} was cut short: {out.tell()} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise RegressorFilesError(f"cannot download the 3DDFA_V2 regressor from {url}: {reason} "
                                  f"(offline? pass --3ddfa-dir or set {ENV_DIR})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def download_regressor_files(folder: Path, url_template: Optional[str] = None) -> None:
    """Fetch every upstream file missing from ``folder`` at its pinned commit, verifying each; a file
    that fails its checksum is deleted so that it cannot poison a later run."""
    template = url_template or os.environ.get(ENV_URL) or URL_TEMPLATE
    for name, (repo, commit, path, _) in UPSTREAM_FILES.items():
        dest = folder / name
        if dest.is_file():
            continue
        url = template.format(repo=repo, commit=commit, path=path)
        log.info("downloading %s from %s", name, url)
        download_file(url, dest)
        try:
            _verify(dest, name)
        except RegressorFilesError:
            dest.unlink(missing_ok=True)
            raise


def find_regressor_files(path: Union[str, os.PathLike, None] = None, *, cache_dir=None, download: bool = True,
                         url_template: Optional[str] = None) -> Optional[RegressorFiles]:
    """The regressor's files, verified (see the module's docstring for the order searched).

    Returns None when they are nowhere and ``download`` is False. Raises
    :class:`RegressorFilesError` (one line) when a named folder lacks them, a file fails its
    checksum, or the download fails.
    """
    explicit = path if path is not None else os.environ.get(ENV_DIR) or None
    if explicit is not None:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise RegressorFilesError(f"3DDFA folder {folder} does not exist")
        found = _from_folder(folder)
        if found is None:
            raise RegressorFilesError(f"3DDFA folder {folder} is incomplete: it needs {WEIGHTS_NAME} and "
                                      f"{KEYPOINT_MODEL_NAME} (or {', '.join(KEYPOINT_SOURCES)})")
        return found
    cached = cache_folder(cache_dir)
    try:
        found = _from_folder(cached) if cached.is_dir() else None
    except RegressorFilesError as exc:
        if not download:
            raise
        log.warning("re-downloading the 3DDFA_V2 regressor: %s", exc)
        for name in UPSTREAM_FILES:
            (cached / name).unlink(missing_ok=True)
        found = None
    if found is not None or not download:
        return found
    download_regressor_files(cached, url_template)
    found = _from_folder(cached)
    if found is None:  # every file was just fetched and verified: only a race with another process gets here
        raise RegressorFilesError(f"the 3DDFA_V2 regressor's files vanished from {cached}")
    return found
