"""``fit-face --ray``: photos fitted by long-lived Ray actors, on a cluster or a local Ray; resumable.

Ray (an optional extra, ``pip install -e ".[ray]"``) runs the actors; this module only hands them
tasks and keeps the books:

* Inputs: photo files, folders (their photos, recursively, in name order) and manifests (a
  ``.txt`` list of paths, one per line; a ``.csv`` with a ``path`` column or the paths in its first
  column; a ``.parquet`` with a ``path`` column, read with pyarrow). A manifest's relative paths
  are relative to the manifest. Names are made unique over the whole input as the local CLI makes
  them, so they are stable between runs and no two faces share a folder.
* Each actor loads the model, the detector and the renderer once and fits tasks of a few photos
  (batched), writing each face's folder itself with the atomic save of :mod:`fitting.outputs`:
  an output folder that exists is complete.
* Resume: a photo whose folder holds a readable ``params.json`` is skipped; a rerun of the same
  command fits only what is missing (a run with nothing left starts no Ray at all). A temporary
  folder left by a killed worker is removed by the next save of that name.
* A worker that dies loses only the task it was on: the task goes to a fresh actor, whose save
  skips the faces already written, at most ``retries`` more times; then its photos are reported
  as failed and the run goes on.
* ``summary.csv`` in the output folder (written atomically at the end): one row per photo with
  its status, reason, worker, attempts, seconds per part and landmark errors.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .naming import name_of, unique_names

__all__ = ["PHOTO_SUFFIXES", "RayUnavailable", "SummaryRow", "expand_inputs", "is_complete", "run_on_ray",
           "write_summary"]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")
SUMMARY_FILE = "summary.csv"
TIME_PARTS = ("detection", "coarse", "medium", "fine", "results", "writing")
INSTALL_HINT = "--ray needs Ray: pip install -e \".[ray]\" (or pip install ray)"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message is one line."""


@dataclass
class SummaryRow:
    """One photo's line of ``summary.csv``."""

    name: str
    photo: str
    status: str  # "fitted", "done before" (skipped: its folder was complete), "failed"
    error: str = ""
    folder: str = ""
    worker: str = ""  # host:pid of the actor that fitted it
    attempts: int = 0
    worker_peak_mib: float = 0.0  # the worker's peak resident memory when it had fitted this photo
    seconds: Dict[str, float] = field(default_factory=dict)
    landmark_error_iod: Dict[str, float] = field(default_factory=dict)


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Photo paths from files, folders and manifests, in the order given (folders: name order).

    Raises ValueError with one line for an input that does not exist or a manifest that cannot be read.
    """
    photos: List[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            photos.extend(str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in PHOTO_SUFFIXES and f.is_file())
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            photos.extend(_read_manifest(p))
        elif p.exists():
            photos.append(str(p))
        else:
            raise ValueError(f"{item}: no such file or folder")
    return photos


def _read_manifest(path: Path) -> List[str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ValueError(f"{path}: a Parquet manifest needs pyarrow (pip install pyarrow)") from None
            table = pq.read_table(path)
            if "path" not in table.column_names:
                raise ValueError(f"{path}: no 'path' column (columns: {', '.join(table.column_names)})")
            entries = [str(v) for v in table.column("path").to_pylist() if v]
        elif suffix == ".csv":
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
            if not rows:
                return []
            column = rows[0].index("path") if "path" in rows[0] else 0
            body = rows[1:] if "path" in rows[0] else rows
            entries = [r[column].strip() for r in body if len(r) > column and r[column].strip()]
        else:
            entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                       if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the manifest ({exc})") from None
    return [e if os.path.isabs(e) else str(path.parent / e) for e in entries]


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished face folder: saves are atomic, and params.json is in every one."""
    try:
        return isinstance(json.loads((Path(folder) / "params.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _done_before(name: str, photo: str, folder: Path) -> SummaryRow:
    params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    return SummaryRow(name, photo, "done before", folder=str(folder),
                      seconds={k: float(v) for k, v in (params.get("timings_s") or {}).items() if k in TIME_PARTS},
                      landmark_error_iod={k: float(v) for k, v in (params.get("landmark_error_iod") or {}).items()})


class _FitActor:
    """One Ray worker: a FaceFitter loaded once, fitting and saving task after task."""

    def __init__(self, model_dir, fitter_kwargs: dict, threads: int, out: str):
        import torch
        torch.set_num_threads(threads)
        from morphable import load_ict
        from .workers import fitter_for
        self.fitter = fitter_for(load_ict(model_dir, region="face", progress=False), fitter_kwargs)
        self.out = Path(out)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        return self.worker

    def fit(self, photos: List[str], names: List[str]) -> List[dict]:
        """Fit and save the photos not yet saved (a retried task skips what its first attempt wrote)."""
        from .outputs.files import ExportError
        todo = [(p, n) for p, n in zip(photos, names) if not is_complete(self.out / n)]
        rows = [asdict(_done_before(n, p, self.out / n)) | {"status": "fitted", "worker": ""}
                for p, n in zip(photos, names) if (p, n) not in todo]
        if not todo:
            return rows
        for result in self.fitter.iter_fit([p for p, _ in todo], [n for _, n in todo]):
            photo = result.source or todo[result.index][0]
            timings = {k: float(v) for k, v in result.timings.items() if k in TIME_PARTS}
            row = SummaryRow(result.name, photo, "fitted" if result.ok else "failed", result.error or "",
                             worker=self.worker, seconds=timings,
                             landmark_error_iod={k: float(v) for k, v in
                                                 (result.params.get("landmark_error_iod") or {}).items()})
            if result.ok:
                started = time.perf_counter()
                try:
                    row.folder = str(result.save(self.out / result.name))
                except ExportError as exc:
                    row.status, row.error = "failed", str(exc)
                row.seconds["writing"] = time.perf_counter() - started
            row.worker_peak_mib = _peak_mib()
            rows.append(asdict(row))
            del result
        return rows


def _peak_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


def run_on_ray(photos: Sequence[str], out: Path, *, address: Optional[str], workers: Optional[int],
               threads: int, gpus_per_worker: float, batch_size: int, model_dir: Optional[str],
               fitter_kwargs: dict, retries: int = 2, progress: bool = True) -> List[SummaryRow]:
    """Fit ``photos`` on Ray into ``out``; one :class:`SummaryRow` per photo (or face), in input order.

    ``address``: a Ray cluster's address, or None for a local Ray on this machine. ``workers``:
    actors (None: the cluster's CPUs / ``threads``, or one per GPU when ``gpus_per_worker`` > 0).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    names = unique_names([name_of(p, i) for i, p in enumerate(photos)])
    rows: Dict[str, SummaryRow] = {}
    todo = []
    for photo, name in zip(photos, names):
        if is_complete(out / name):
            rows[name] = _done_before(name, photo, out / name)
        else:
            todo.append((photo, name))
    if todo:
        _fit_todo(todo, out, rows, address=address, workers=workers, threads=threads,
                  gpus_per_worker=gpus_per_worker, batch_size=batch_size, model_dir=model_dir,
                  fitter_kwargs=fitter_kwargs, retries=retries, progress=progress, tqdm=tqdm)
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows.values(), key=lambda r: (order.get(r.name.split("#face")[0], len(order)), r.name))


def _fit_todo(todo, out: Path, rows: Dict[str, SummaryRow], *, address, workers, threads, gpus_per_worker,
              batch_size, model_dir, fitter_kwargs, retries, progress, tqdm) -> None:
    ray = _ray()
    from ray.exceptions import RayActorError, RayTaskError
    from .workers import cpu_cores, plan_tasks

    started_ray = not ray.is_initialized()
    if started_ray:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=cpu_cores(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, a bad address: one line
            raise RayUnavailable(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                                 ) from None
    try:
        resources = ray.cluster_resources()
        if workers is None:
            if gpus_per_worker > 0:
                workers = max(1, int(resources.get("GPU", 0) // gpus_per_worker))
            else:
                workers = max(1, int(resources.get("CPU", 1) // threads))
        kwargs = dict(fitter_kwargs)
        if gpus_per_worker > 0:
            kwargs["device"] = "cuda"
        planned = plan_tasks([p for p, _ in todo], [n for _, n in todo], workers, batch_size)
        tasks = [(list(t.photos), list(t.names)) for t in planned]
        workers = max(1, min(workers, len(tasks)))
        actor_class = ray.remote(num_cpus=threads, num_gpus=gpus_per_worker or 0)(_FitActor)

        def new_actor():
            return actor_class.remote(model_dir, kwargs, threads, str(out))

        bar = tqdm(total=len(todo), desc="fitting", unit="photo", disable=not progress)
        failed = 0

        def record(task, status_rows: List[dict], attempts: int) -> None:
            nonlocal failed
            for r in status_rows:
                row = SummaryRow(**{**r, "attempts": attempts})
                rows[row.name] = row
                failed += row.status == "failed"
            bar.update(len(task[1]))
            bar.set_postfix_str(f"failed: {failed}" if failed else "")

        # The first actor loads the model alone: one download or unpacking, not one per worker.
        actors = [new_actor()]
        try:
            ray.get(actors[0].ready.remote())
        except RayTaskError as exc:  # the model, the detector or the renderer could not load
            raise RayUnavailable(_cause(exc)) from None
        except RayActorError as exc:  # it died while loading (out of memory, killed)
            raise RayUnavailable(f"the first Ray worker died while loading the model: {_cause(exc)}") from None
        actors += [new_actor() for _ in range(workers - 1)]
        attempts: Dict[int, int] = {}
        inflight = {}
        idle = list(range(workers))
        task_ids = deque(range(len(tasks)))
        task_list = tasks
        while task_ids or inflight:
            while idle and task_ids:
                slot, t = idle.pop(), task_ids.popleft()
                attempts[t] = attempts.get(t, 0) + 1
                inflight[actors[slot].fit.remote(*task_list[t])] = (slot, t)
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in done:
                slot, t = inflight.pop(ref)
                try:
                    record(task_list[t], ray.get(ref), attempts[t])
                except RayActorError as exc:  # the worker died: a fresh one, and the task again
                    actors[slot] = new_actor()
                    if attempts[t] <= retries:
                        task_ids.appendleft(t)
                    else:
                        record(task_list[t], _failed_rows(task_list[t], f"worker died {attempts[t]} times: "
                                                          f"{_cause(exc)}"), attempts[t])
                except RayTaskError as exc:  # an error no result could hold: this task fails
                    record(task_list[t], _failed_rows(task_list[t], _cause(exc)), attempts[t])
                idle.append(slot)
        bar.close()
    finally:
        if started_ray:
            ray.shutdown()


def _failed_rows(task, reason: str) -> List[dict]:
    return [asdict(SummaryRow(n, p, "failed", reason)) for p, n in zip(*task)]


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def write_summary(rows: Sequence[SummaryRow], path: Path) -> None:
    """``summary.csv``: one row per photo (or face), written to a temporary file and renamed."""
    parts = list(TIME_PARTS)
    stages = sorted({k for r in rows for k in r.landmark_error_iod})
    header = ["name", "photo", "status", "error", "folder", "worker", "attempts", "worker_peak_mib",
              *[f"seconds_{p}" for p in parts], *[f"landmark_error_iod_{s}" for s in stages]]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow([r.name, r.photo, r.status, r.error, r.folder, r.worker, r.attempts,
                         f"{r.worker_peak_mib:.0f}" if r.worker_peak_mib else "",
                         *[f"{r.seconds[p]:.3f}" if p in r.seconds else "" for p in parts],
                         *[f"{r.landmark_error_iod[s]:.5f}" if s in r.landmark_error_iod else "" for s in stages]])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
