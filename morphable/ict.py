"""The ICT Face Model Light (ICT-VGL/ICT-FaceKit, MIT licence) as a :class:`MorphableModel`.

Where the model files are found, in order:

1. an explicit path (``load_ict(path)``, ``--model-dir``): the ICT-FaceKit
   folder, its ``FaceXModel`` folder, or the repository archive
   (``.tar.gz``/``.tar.xz``/``.zip`` is not accepted, tar only);
2. the environment variable ``FACEFIT_ICT_DIR`` (same forms);
3. the compact cache in the user's cache directory (``FACEFIT_CACHE_DIR``
   overrides it), and an archive downloaded there earlier;
4. a download of the public repository archive at the pinned commit
   (``FACEFIT_ICT_URL`` overrides the address), with a progress bar; it
   enters the cache only once read through whole, every model file matching
   its SHA-256 (:func:`verify_archive`).

A damaged archive is reported in one line; one in the cache is removed (the
next run downloads it again), one the user named is left where it is.

Every file used is checked against its SHA-256 (``morphable/data/ict_sha256.txt``,
the upstream bytes of the pinned commit). The cache (one ``.npz`` per region,
about 18 MB for the default face area) makes a second load take well under a
second; it is rebuilt when the source folder changes.

Units: the ICT files are in centimetres; the model returned is in millimetres.
The MIT notice of the ICT model ships as ``morphable/ICT_LICENSE.txt`` and is
copied beside every file derived from it that the toolkit writes.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .model import MM_PER_CM, MorphableModel
from .obj_text import ObjFormatError, read_topology, read_vertices

log = logging.getLogger(__name__)

ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
ICT_URL = f"https://github.com/ICT-VGL/ICT-FaceKit/archive/{ICT_COMMIT}.tar.gz"
ENV_MODEL_DIR = "FACEFIT_ICT_DIR"
ENV_CACHE_DIR = "FACEFIT_CACHE_DIR"
ENV_URL = "FACEFIT_ICT_URL"
CACHE_FORMAT = 1
LICENSE_PATH = Path(__file__).with_name("ICT_LICENSE.txt")
MODEL_NAME = "ICT Face Model Light"

# Vertex ranges of the ICT topology (inclusive ends, from the ICT-FaceKit README).
ICT_PARTS: Dict[str, Tuple[int, int]] = {
    "face": (0, 9408),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677),
    "eye_socket_right": (13678, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_left": (24591, 24794),
    "lacrimal_right": (24795, 24998),
    "eye_blend_left": (24999, 25022),
    "eye_blend_right": (25023, 25046),
    "eye_occlusion_left": (25047, 25198),
    "eye_occlusion_right": (25199, 25350),
    "eyelashes_left": (25351, 26034),
    "eyelashes_right": (26035, 26718),
}
NARROW_FACE_LAST = 6705  # vertices 0..6705: the narrow face area

# Named regions a caller can ask for.
REGIONS: Dict[str, Tuple[str, ...]] = {
    "face": ("face",),
    # The face plus what closes its holes: eyeballs behind the eyelids and the
    # mouth socket behind the lips (used to render believable synthetic faces).
    "face_closed": ("face", "mouth_socket", "eyeball_left", "eyeball_right"),
    "head": ("face", "head_neck"),
    "full": tuple(ICT_PARTS),
}

# Jaw-line landmark vertices listed in the ICT-FaceKit README.
JAW_SETS = {
    "jaw_right": [1278, 1272, 12, 1834, 243, 781, 2199, 1447],
    "jaw_left": [3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496],
    "jaw_right_extended": [1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781,
                           1673, 2199, 801, 1447, 800],
    "jaw_left_extended": [3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061,
                          2253, 3466, 3490, 3493, 3496, 3498],
}

RegionSpec = Union[str, Sequence[Union[str, Tuple[int, int]]]]


class ModelLoadError(RuntimeError):
    """The model could not be found, read, verified or downloaded (message: one line).

    A reason quoted from a library may span lines (tarfile lists every
    compression it tried, one a line); the lines are joined with "; " so that
    every caller can print the error as one line.
    """

    def __init__(self, message: str):
        super().__init__("; ".join(line.strip() for line in str(message).splitlines() if line.strip()))


# What reading a damaged or cut-short archive raises, by layer: tarfile's own
# errors, gzip/bz2 (OSError), xz (LZMAError), a stream that ends early
# (EOFError) and zlib (zlib.error), which tarfile does not always wrap.
ARCHIVE_READ_ERRORS = (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error)

# How to avoid the download, said wherever the model is missing or cannot be fetched.
LOCAL_COPY_HINT = (f"to use a local copy, pass --model-dir or set {ENV_MODEL_DIR} to the ICT-FaceKit folder "
                   "or its archive")


# --------------------------------------------------------------------------- checksums

def known_checksums() -> Dict[str, str]:
    """Upstream SHA-256 of every ICT file the loader may use, by path in the repository."""
    out = {}
    for line in (Path(__file__).parent / "data" / "ict_sha256.txt").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip()] = digest
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- regions

def _region_parts(region: RegionSpec) -> List[Tuple[str, int, int]]:
    names = REGIONS.get(region, None) if isinstance(region, str) else region
    if names is None:
        raise ModelLoadError(f"unknown region {region!r}; choose one of {sorted(REGIONS)} or a list of parts")
    parts = []
    for item in names:
        if isinstance(item, str):
            if item not in ICT_PARTS:
                raise ModelLoadError(f"unknown ICT part {item!r}; parts are {list(ICT_PARTS)}")
            parts.append((item, *ICT_PARTS[item]))
        else:
            a, b = int(item[0]), int(item[1])
            parts.append((f"vertices_{a}_{b}", a, b))
    return parts


def _region_key(parts) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- locating files

def default_cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("facefit"))


def _model_root(path: Path) -> Path:
    """The folder holding ``FaceXModel/`` for a given ICT-FaceKit folder or its FaceXModel folder."""
    if (path / "FaceXModel").is_dir():
        return path
    if path.name == "FaceXModel" and path.is_dir():
        return path.parent
    subdirs = [p for p in path.iterdir() if p.is_dir() and (p / "FaceXModel").is_dir()] if path.is_dir() else []
    if len(subdirs) == 1:
        return subdirs[0]
    raise ModelLoadError(f"model folder {path} is incomplete: no FaceXModel/ folder in it")


def _archive_in_folder(path: Path) -> Optional[Path]:
    """The one ``ICT-FaceKit-*.tar*`` archive in a folder that holds no unpacked model (a download
    folder, the project's shared folder), else None."""
    if not path.is_dir():
        return None
    try:
        _model_root(path)
        return None
    except ModelLoadError:
        pass
    found = sorted(p for p in path.glob("ICT-FaceKit-*.tar*") if p.is_file())
    return found[0] if len(found) == 1 else None


def _fingerprint(path: Path) -> str:
    """Cheap identity of a source (names, sizes, mtimes) to tell whether a cache is current."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        items = [(str(path), st.st_size, st.st_mtime_ns)]
    else:
        root = _model_root(path)
        items = [(str(root), 0, 0)]
        for p in sorted((root / "FaceXModel").iterdir()):
            st = p.stat()
            items.append((p.name, st.st_size, st.st_mtime_ns))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()


# --------------------------------------------------------------------------- building from files

def _required_files(root: Path) -> Tuple[List[str], List[str]]:
    fx = root / "FaceXModel"
    idx_path = fx / "vertex_indices.json"
    if not idx_path.is_file():
        raise ModelLoadError(f"model folder {root} is incomplete: missing FaceXModel/vertex_indices.json")
    try:
        indices = json.loads(idx_path.read_text())
        expressions = list(indices["expressions"])
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"corrupt FaceXModel/vertex_indices.json in {root}: {exc}") from None
    identities = [f"identity{i:03d}" for i in range(100)]
    return identities, expressions


def _build_from_folder(root: Path, parts, verify: bool, progress: bool) -> Tuple[Dict[str, np.ndarray], dict]:
    from tqdm.auto import tqdm

    root = _model_root(root)
    fx = root / "FaceXModel"
    identities, expressions = _required_files(root)
    rel = ["FaceXModel/generic_neutral_mesh.obj", "FaceXModel/vertex_indices.json"]
    rel += [f"FaceXModel/{n}.obj" for n in identities + expressions]
    missing = [r for r in rel if not (root / r).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"model folder {root} is incomplete: missing {missing[0]}{more}")

    if verify:
        sums = known_checksums()
        with ThreadPoolExecutor(4) as pool:
            digests = list(pool.map(lambda r: _sha256(root / r), rel))
        for r, got in zip(rel, digests):
            want = sums.get(r)
            if want is None:
                raise ModelLoadError(f"no known checksum for {r}; is this the ICT model at commit {ICT_COMMIT[:12]}?")
            if got != want:
                raise ModelLoadError(f"checksum mismatch for {root / r}: expected {want[:16]}..., got {got[:16]}...")

    def read_text(name: str) -> str:
        try:
            return (fx / name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"cannot read {fx / name}: {exc}") from None

    try:
        neutral_text = read_text("generic_neutral_mesh.obj")
        neutral = read_vertices(neutral_text, "generic_neutral_mesh.obj")
        topo = read_topology(neutral_text, "generic_neutral_mesh.obj")
    except ObjFormatError as exc:
        raise ModelLoadError(str(exc)) from None

    n_all = neutral.shape[0]
    keep = np.zeros(n_all, bool)
    labels_all = np.full(n_all, -1, np.int64)
    label_names = []
    for name, a, b in parts:
        if b >= n_all:
            raise ModelLoadError(f"region part {name} ends at vertex {b}, the model has {n_all}")
        keep[a:b + 1] = True
        label_names.append(name)
        labels_all[a:b + 1] = len(label_names) - 1
    new_index = np.full(n_all, -1, np.int64)
    new_index[keep] = np.arange(int(keep.sum()))

    tri_keep = keep[topo.triangles].all(axis=1)
    tris = new_index[topo.triangles[tri_keep]]
    uv_tris_old = topo.uv_triangles[tri_keep]
    if (uv_tris_old < 0).any():
        raise ModelLoadError("corrupt OBJ generic_neutral_mesh.obj: faces without texture coordinates")
    used_uv, uv_tris = np.unique(uv_tris_old, return_inverse=True)
    uv_tris = uv_tris.reshape(-1, 3)
    uvs = topo.uvs[used_uv]

    def deltas(names: Iterable[str], what: str) -> np.ndarray:
        names = list(names)
        out = np.empty((len(names), int(keep.sum()), 3), np.float32)
        for i, n in enumerate(tqdm(names, desc=f"ICT {what}", disable=not progress, leave=False)):
            try:
                v = read_vertices(read_text(f"{n}.obj"), f"{n}.obj")
            except ObjFormatError as exc:
                raise ModelLoadError(str(exc)) from None
            if v.shape != neutral.shape:
                raise ModelLoadError(f"corrupt OBJ {fx / (n + '.obj')}: {v.shape[0]} vertices, expected {n_all}")
            out[i] = ((v - neutral)[keep] * MM_PER_CM).astype(np.float32)
        return out

    id_basis = deltas(identities, "identity")
    exp_basis = deltas(expressions, "expressions")
    mean = (neutral[keep] * MM_PER_CM).astype(np.float32)

    # Make the triangles face outward (+z for the face, which looks at +z).
    face_rows = labels_all[keep][tris[:, 0]] == (label_names.index("face") if "face" in label_names else -2)
    if face_rows.any():
        p = mean[tris[face_rows]]
        nz = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2].sum()
        if nz < 0:
            tris = tris[:, [0, 2, 1]]
            uv_tris = uv_tris[:, [0, 2, 1]]

    indices = json.loads((fx / "vertex_indices.json").read_text())
    arrays: Dict[str, np.ndarray] = {
        "mean": mean, "id_basis": id_basis, "exp_basis": exp_basis,
        "triangles": tris.astype(np.int32), "uvs": uvs.astype(np.float32),
        "uv_triangles": uv_tris.astype(np.int32), "vertex_labels": labels_all[keep].astype(np.int8),
    }
    landmark_sets = {"multipie68": indices.get("idx_to_landmark_verts", []), **JAW_SETS}
    for name, idx in landmark_sets.items():
        idx = np.asarray(idx, np.int64)
        if idx.size and keep[idx].all():  # a landmark set is kept only whole
            arrays[f"landmarks/{name}"] = new_index[idx].astype(np.int32)
    vertex_sets = {
        "rigid": indices.get("idx_to_rigid_verts", []),
        "fitting": indices.get("idx_to_fitting_verts", []),
        "laplacian_rigid": indices.get("idx_to_lap_rigid_verts", []),
        "face_narrow": list(range(NARROW_FACE_LAST + 1)),
    }
    for name, idx in vertex_sets.items():
        idx = np.asarray(idx, np.int64)
        idx = idx[(idx < n_all)]
        idx = idx[keep[idx]]
        arrays[f"sets/{name}"] = new_index[idx].astype(np.int32)
    meta = {"format": CACHE_FORMAT, "commit": ICT_COMMIT, "parts": parts, "label_names": label_names,
            "exp_names": expressions}
    return arrays, meta


def _escapes(name: str) -> bool:
    """An archive member name that would be written outside the folder it is unpacked into."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def _safe_members(tar: tarfile.TarFile, dest: Path) -> List[tarfile.TarInfo]:
    """Archive members the model needs, refusing any that would land outside ``dest``."""
    dest = dest.resolve()
    chosen = []
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if _escapes(m.name) or not str(target).startswith(str(dest) + os.sep):
            raise ModelLoadError(f"unsafe archive member {m.name!r}: it would be written outside {dest}")
        if m.issym() or m.islnk() or m.isdev():
            if "FaceXModel" in m.name:
                raise ModelLoadError(f"unsafe archive member {m.name!r}: links and devices are not accepted")
            continue
        parts = PurePosixPath(m.name).parts
        if len(parts) >= 2 and (parts[1] in ("FaceXModel", "LICENSE")):
            chosen.append(m)
    if not any(m.name.endswith("generic_neutral_mesh.obj") for m in chosen):
        raise ModelLoadError("the archive holds no */FaceXModel/generic_neutral_mesh.obj: not an ICT-FaceKit archive")
    return chosen


def _build_from_archive(archive: Path, parts, verify: bool, progress: bool):
    with tempfile.TemporaryDirectory(prefix="facefit-ict-") as tmp:
        # Reading the member list decompresses the whole stream: a damaged or
        # cut-short archive fails here or in extractall, never later.
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(tar, Path(tmp))
                tar.extractall(tmp, members=members, filter="data")
        except tarfile.ReadError as exc:
            raise ModelLoadError(f"cannot read model archive {archive}: {_read_error_reason(exc)}") from None
        except ARCHIVE_READ_ERRORS as exc:
            raise ModelLoadError(f"cannot read model archive {archive}: damaged or cut short ({_reason(exc)})") \
                from None
        return _build_from_folder(Path(tmp), parts, verify, progress)


def _reason(exc: BaseException) -> str:
    """An exception as one line of text: its message, or its type's name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _read_error_reason(exc: tarfile.ReadError) -> str:
    """tarfile's ReadError in words: "r:*" lists every compression it tried, one a line."""
    if "could not be opened successfully" in str(exc):
        return "not a tar archive (tried gzip, bzip2, xz and plain tar)"
    if "unexpected end of data" in str(exc):
        return "cut short (unexpected end of data)"
    return f"damaged or cut short ({_reason(exc)})"


def verify_archive(archive: Path, what: Optional[str] = None) -> None:
    """Check that ``archive`` is a whole, unaltered ICT-FaceKit archive, or raise :class:`ModelLoadError`.

    The upstream archive's own SHA-256 is not fixed (GitHub builds it on
    request, and a mirror may recompress it), so the check is on its content:
    one streaming pass reads every member, which fails on a damaged or
    cut-short stream, and every ``FaceXModel/`` file of
    ``morphable/data/ict_sha256.txt`` must be present with its upstream
    SHA-256. ``what`` names the archive in messages (default: its path).
    About 4 s for the 23 MB .tar.xz (400 MB of OBJ text) on one CPU core.
    """
    what = what or str(archive)
    want = {name: digest for name, digest in known_checksums().items() if name.startswith("FaceXModel/")}
    got: Dict[str, str] = {}
    try:
        with tarfile.open(archive, "r|*") as tar:  # "|": one pass, no seeking back
            for member in tar:
                if _escapes(member.name):
                    raise ModelLoadError(f"unsafe archive member {member.name!r}: it would be written outside "
                                         "the model folder")
                rel = "/".join(PurePosixPath(member.name).parts[1:])  # below the top folder ICT-FaceKit-<commit>/
                if rel in want and member.isfile():
                    h = hashlib.sha256()
                    f = tar.extractfile(member)
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                    got[rel] = h.hexdigest()
    except tarfile.ReadError as exc:
        raise ModelLoadError(f"cannot read model archive {what}: {_read_error_reason(exc)}") from None
    except ARCHIVE_READ_ERRORS as exc:
        raise ModelLoadError(f"cannot read model archive {what}: damaged or cut short ({_reason(exc)})") from None
    missing = sorted(set(want) - set(got))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"model archive {what} is incomplete: missing {missing[0]}{more}")
    for name in sorted(want):
        if got[name] != want[name]:
            raise ModelLoadError(f"checksum mismatch for {name} in model archive {what}: "
                                 f"expected {want[name][:16]}..., got {got[name][:16]}...")


def download_archive(url: str, dest: Path, progress: bool = True, timeout: float = 60.0,
                     check: Optional[Callable[[Path], None]] = None) -> Path:
    """Download ``url`` to ``dest``: written as ``dest.part``, passed to ``check`` (which raises
    :class:`ModelLoadError` to refuse it) and renamed to ``dest`` only when complete and accepted.
    A refused or failed download leaves nothing behind."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading the ICT Face Model from %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="ICT-FaceKit", disable=not progress) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise ModelLoadError(f"download of {url} was cut short: {out.tell()} of {total} bytes; "
                                     f"{LOCAL_COPY_HINT}")
        if check is not None:
            # Without a Content-Length a connection that drops looks like the end
            # of the file: only reading the archive tells a whole one from a part.
            check(part)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = _reason(getattr(exc, "reason", exc))
        raise ModelLoadError(f"cannot download the ICT Face Model from {url}: {reason}; {LOCAL_COPY_HINT}") \
            from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- cache

def write_npz(path: Path, arrays: Dict[str, np.ndarray], what: str) -> bool:
    """Write ``arrays`` to ``path`` whole or not at all (a temporary file beside it, renamed into place).
    False, with one warning naming ``what``, when it cannot be written: a cache is then made again."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.part")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("could not write the %s %s (%s); it is made again next time", what, path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def read_npz(path: Path, what: str) -> Optional[Dict[str, np.ndarray]]:
    """Every array in ``path``, or None, with one warning naming ``what``, when the file is unreadable
    (damaged; cut short, which numpy reports as zipfile.BadZipFile)."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring the unreadable %s %s (%s)", what, path, exc)
        return None


def _write_cache(path: Path, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    meta_bytes = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    if write_npz(path, {"__meta__": meta_bytes, **arrays}, "model cache"):
        try:
            shutil.copyfile(LICENSE_PATH, path.parent / "ICT_LICENSE.txt")
        except OSError as exc:
            log.warning("could not copy the model's licence beside its cache %s (%s)", path, exc)


def _read_cache(path: Path) -> Optional[Tuple[Dict[str, np.ndarray], dict]]:
    arrays = read_npz(path, "model cache")
    if arrays is None:
        return None
    try:
        meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    except (KeyError, ValueError) as exc:
        log.warning("ignoring the unreadable model cache %s (%s)", path, exc)
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("commit") != ICT_COMMIT:
        return None
    return arrays, meta


def _to_model(arrays: Dict[str, np.ndarray], meta: dict, source: str) -> MorphableModel:
    t = torch.from_numpy
    return MorphableModel(
        mean=t(arrays["mean"]), id_basis=t(arrays["id_basis"]), exp_basis=t(arrays["exp_basis"]),
        triangles=t(arrays["triangles"].astype(np.int64)), uvs=t(arrays["uvs"]),
        uv_triangles=t(arrays["uv_triangles"].astype(np.int64)), exp_names=list(meta["exp_names"]),
        landmark_sets={k.split("/", 1)[1]: t(v.astype(np.int64)) for k, v in arrays.items() if k.startswith("landmarks/")},
        vertex_sets={k.split("/", 1)[1]: t(v.astype(np.int64)) for k, v in arrays.items() if k.startswith("sets/")},
        vertex_labels=t(arrays["vertex_labels"].astype(np.int64)), label_names=list(meta["label_names"]),
        source=source, units="mm", name=MODEL_NAME, license_name=LICENSE_PATH.name,
        license_text=LICENSE_PATH.read_text(),
    )


# --------------------------------------------------------------------------- entry point

def load_ict(path: Union[str, os.PathLike, None] = None, region: RegionSpec = "face", *,
             cache_dir: Union[str, os.PathLike, None] = None, download: bool = True,
             verify: bool = True, progress: bool = True, url: Optional[str] = None) -> MorphableModel:
    """Load the ICT Face Model Light for a region (default: the face area, vertices 0..9408).

    ``region``: a name from :data:`REGIONS`, or a list of ICT part names
    (:data:`ICT_PARTS`) and/or inclusive ``(first, last)`` vertex ranges.
    Returns a model in mm with 100 identity and 53 expression modes.
    Raises :class:`ModelLoadError` with a one-line reason on any failure.
    """
    parts = _region_parts(region)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache_dir / f"ict-{ICT_COMMIT[:12]}-{_region_key(parts)}.npz"
    explicit = path if path is not None else os.environ.get(ENV_MODEL_DIR) or None

    if explicit is not None:
        src = Path(explicit).expanduser()
        if not src.exists():
            raise ModelLoadError(f"model path {src} does not exist")
        src = _archive_in_folder(src) or src
        fp = _fingerprint(src)
        cached = _read_cache(cache) if cache.is_file() else None
        if cached and cached[1].get("fingerprint") == fp:
            return _to_model(*cached, source=f"cache {cache} (built from {src})")
        builder = _build_from_archive if src.is_file() else _build_from_folder
        arrays, meta = builder(src, parts, verify, progress)
        meta["fingerprint"] = fp
        _write_cache(cache, arrays, meta)
        return _to_model(arrays, meta, source=str(src))

    cached = _read_cache(cache) if cache.is_file() else None
    if cached:
        return _to_model(*cached, source=f"cache {cache}")
    archive = cache_dir / f"ICT-FaceKit-{ICT_COMMIT}.tar.gz"
    if not archive.is_file():
        if not download:
            raise ModelLoadError(f"the ICT Face Model was not found and the download is off; {LOCAL_COPY_HINT}")
        source = url or os.environ.get(ENV_URL) or ICT_URL
        download_archive(source, archive, progress,
                         check=lambda part: verify_archive(part, what=f"downloaded from {source}"))
    try:
        arrays, meta = _build_from_archive(archive, parts, verify, progress)
    except ModelLoadError as exc:
        # An archive in the cache is ours (a download, or one left by an older
        # version that did not check it): a bad one must not poison later runs.
        archive.unlink(missing_ok=True)
        raise ModelLoadError(f"{exc}; removed it from the cache, the next run downloads it again") from None
    meta["fingerprint"] = _fingerprint(archive)
    _write_cache(cache, arrays, meta)
    return _to_model(arrays, meta, source=str(archive))


def timed_load(*args, **kwargs) -> Tuple[MorphableModel, float]:
    t0 = time.perf_counter()
    model = load_ict(*args, **kwargs)
    return model, time.perf_counter() - t0
