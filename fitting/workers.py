"""Photos fitted by several local worker processes, each a :class:`fitting.api.FaceFitter` over a share.

Why processes: on a CPU, torch's intra-op threads leave a core idle through every Python step,
every small tensor and the single-threaded parts (detection, the sparse solve, writing), while
two processes of one thread each keep both cores busy (8 photos, all stages, on the 2-core
machine: 71 s in one process with two threads, 51 s in two workers of one thread). Each worker imports torch and loads the model, the
detector and the renderer once, fits its tasks (a few photos each, so every stage still runs on
batched tensors) and writes each face's folder itself (the atomic save of
:mod:`fitting.outputs`), so writing runs in parallel too. The parent hands out tasks, shows one
progress bar and collects what the workers report; it never imports torch.

Start: the first worker loads the model before the others read it, so a model that is not yet
in the cache is downloaded or unpacked once, not once per worker.

Ctrl-C: the workers start with SIGINT ignored (a terminal sends it to the whole process group,
and a second interrupt during a save's clean-up would leave its temporary folder behind). The
parent stops each running worker with one SIGTERM, which the worker turns into a
``KeyboardInterrupt`` once: a save in progress removes its temporary folder, so no face folder
is ever half-written, and the folders already written stay.

A worker that dies (killed, out of memory) loses only the photos of the task it was on: they are
reported as failed with the reason, and the other workers finish the run.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

__all__ = ["Task", "FaceOutcome", "WorkerStats", "WorkerStartError", "cpu_cores", "default_workers",
           "fitter_for", "plan_tasks", "run_workers"]

# Memory one worker may need at the default batch of 4 faces, all stages (measured peak on the CPU:
# 1.2 GB for one photo, 2.4 GB for a batch of 4), so that the default never asks for more workers
# than the machine's memory holds.
WORKER_MEMORY_BYTES = 3 * 2 ** 30
# How long the parent waits for a stopped worker to clean up before it is killed (s).
STOP_GRACE_S = 30.0
# How often the parent looks for workers that died without a word (s).
POLL_S = 0.5


@dataclass(frozen=True)
class Task:
    """Photos for one worker to fit as one call of ``iter_fit`` (batched together)."""

    index: int
    photos: Tuple[str, ...]
    names: Tuple[str, ...]  # output names, unique across the whole run


@dataclass(frozen=True)
class FaceOutcome:
    """What became of one face (or of a photo that gave none): ``folder`` where it was written."""

    name: str
    photo: str
    ok: bool
    error: str = ""
    folder: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)  # the result's seconds per part


@dataclass
class WorkerStats:
    """One worker's own seconds and memory (its faces' parts are in their outcomes)."""

    index: int
    imports_s: float = 0.0
    load_s: float = 0.0
    writing_s: float = 0.0
    peak_mib: float = 0.0


class WorkerStartError(RuntimeError):
    """A worker could not load the model, the detector or the renderer; the message is one line."""


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_workers(n_photos: int, device: str) -> int:
    """Workers for ``n_photos`` on ``device`` ("auto", "cpu", "cuda"): one per CPU core, at most one
    per photo and as many as the memory holds; one where the fit may run on a GPU (CUDA, or "auto"
    with nvdiffrast installed), which the processes would only share."""
    if device == "cuda":
        return 1
    if device == "auto":
        import importlib.util
        if importlib.util.find_spec("nvdiffrast") is not None:
            return 1
    workers = min(cpu_cores(), max(1, n_photos))
    memory = _memory_bytes()
    if memory:
        workers = min(workers, max(1, memory // WORKER_MEMORY_BYTES))
    return max(1, workers)


def plan_tasks(photos: Sequence[str], names: Sequence[str], workers: int, batch_size: int) -> List[Task]:
    """Split the photos, in order, into tasks of at most ``batch_size``, their number a multiple of
    ``workers`` (so that no worker is left alone with a last task) and their sizes within one."""
    n = len(photos)
    if n == 0:
        return []
    count = max(1, math.ceil(n / batch_size))
    count = min(n, math.ceil(count / workers) * workers)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [Task(i, tuple(photos[a:b]), tuple(names[a:b])) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def run_workers(tasks: Sequence[Task], *, workers: int, threads: int, out: Path, model_dir: Optional[str],
                fitter_kwargs: dict, stages: Sequence[str], progress: bool,
                on_outcome: Callable[[FaceOutcome], None]) -> List[WorkerStats]:
    """Fit ``tasks`` in ``workers`` processes of ``threads`` torch threads each, saving under ``out``.

    ``fitter_kwargs`` go to :class:`fitting.api.FaceFitter` (with ``model_dir`` loaded once per
    worker); ``on_outcome`` is called in this process for every face as it is saved or fails.
    Returns each worker's stats. Raises :class:`WorkerStartError` when a worker cannot start
    (the others are stopped first) and ``KeyboardInterrupt`` after stopping them on Ctrl-C.
    """
    from .progress import StageProgress

    ctx = mp.get_context("spawn")  # a fresh interpreter: fork after torch's or MediaPipe's threads is unsafe
    task_queue, events, model_ready = ctx.Queue(), ctx.Queue(), ctx.Event()
    for task in tasks:
        task_queue.put(task)
    for _ in range(workers):
        task_queue.put(None)  # one "no more work" per worker
    procs = [ctx.Process(target=_worker_main, name=f"fit-face-worker-{i}", daemon=True,
                         args=(i, model_dir, fitter_kwargs, str(out), threads, task_queue, events, model_ready))
             for i in range(workers)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: the workers start ignoring it
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)

    bar = StageProgress(sum(len(t.photos) for t in tasks), stages, enabled=progress)
    by_index = {t.index: t for t in tasks}
    unreported = {t.index: list(t.names) for t in tasks}  # names of each task not yet reported
    current: Dict[int, int] = {}  # worker -> the task it is on
    stats = {i: WorkerStats(i) for i in range(workers)}
    running = set(range(workers))
    started_tasks = set()

    def fail(task_index: int, reason: str) -> None:
        task = by_index[task_index]
        for name in unreported.pop(task_index, []):
            photo = task.photos[task.names.index(name)]
            bar.detected(0)
            on_outcome(FaceOutcome(name=name, photo=photo, ok=False, error=reason))

    def handle(event) -> None:
        kind, worker = event[0], event[1]
        if kind == "ready":
            stats[worker].imports_s, stats[worker].load_s = event[2], event[3]
        elif kind == "task":
            current[worker] = event[2]
            started_tasks.add(event[2])
            # with -v: which process holds which photos, for a user (or a test) watching a stuck or killed worker
            log.info("worker %d (pid %d) fits %s", worker, procs[worker].pid, ", ".join(by_index[event[2]].names))
        elif kind == "progress":
            getattr(bar, event[2])(*event[3])
        elif kind == "outcome":
            task_index, outcome = event[2], event[3]
            names = unreported.get(task_index, [])
            if outcome.name in names:
                names.remove(outcome.name)
            on_outcome(outcome)
        elif kind == "task_done":
            unreported.pop(event[2], None)
            current.pop(worker, None)
        elif kind == "exit":
            stats[worker].writing_s, stats[worker].peak_mib = event[2], event[3]
            running.discard(worker)
        elif kind == "crash":  # an error no result could hold: this worker's task fails, the run goes on
            if worker in current:
                fail(current.pop(worker), f"worker process failed: {event[2]}")
        elif kind == "fatal":
            raise WorkerStartError(event[2])

    try:
        while running:
            try:
                handle(events.get(timeout=POLL_S))
                continue
            except queue.Empty:
                pass
            for i in sorted(running):
                if procs[i].exitcode is None:
                    continue
                try:  # what it said before it went is still in the pipe
                    while True:
                        handle(events.get(timeout=0.1))
                except queue.Empty:
                    pass
                if i in running:  # gone without its goodbye
                    running.discard(i)
                    model_ready.set()  # the others may be waiting for it to load the model
                    if i in current:
                        fail(current.pop(i), f"worker process ended unexpectedly (exit code {procs[i].exitcode})")
        for task_index in sorted(set(unreported) - started_tasks):  # every worker died before reaching these
            fail(task_index, "not fitted: every worker process ended before this photo")
    except BaseException:  # Ctrl-C, a worker that could not start, or a bug here: stop everyone, then report
        _stop(procs)
        raise
    finally:
        bar.close()
    for p in procs:
        p.join(timeout=STOP_GRACE_S)
    return [stats[i] for i in range(workers)]


def fitter_for(model, fitter_kwargs: dict):
    """A FaceFitter on ``model`` in a worker process (here or a Ray actor) from the CLI's plain
    arguments: ``fine_subdivisions`` becomes the fine stage's settings."""
    from .api import FaceFitter
    kwargs = dict(fitter_kwargs)
    subdivisions = kwargs.pop("fine_subdivisions", None)
    if subdivisions is not None:
        from .stages.fine import FineSettings
        kwargs["fine"] = FineSettings(displaced_subdivisions=subdivisions)
    return FaceFitter(model=model, **kwargs)


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: the worker interrupts itself once and cleans up
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


# ------------------------------------------------------------------------------------ in the worker

class _ProgressToParent:
    """The :class:`fitting.progress.StageProgress` calls of ``iter_fit``, sent to the parent's bar."""

    def __init__(self, events, worker: int):
        self.events, self.worker, self.done = events, worker, 0

    def _send(self, method: str, *args) -> None:
        self.events.put(("progress", self.worker, method, args))

    def detected(self, n_faces: int) -> None:
        self.done += 1
        self._send("detected", n_faces)

    def stage(self, names, stage: str) -> None:
        self._send("stage", list(names), stage)

    def stage_done(self, n_faces: int) -> None:
        self.done += n_faces
        self._send("stage_done", n_faces)

    def skipped(self, n_steps: int) -> None:
        self._send("skipped", n_steps)

    def close(self) -> None:  # the parent's bar lives on across tasks
        pass


def _interrupt_once(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _worker_main(index: int, model_dir, fitter_kwargs: dict, out: str, threads: int, tasks, events,
                 model_ready) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt_once)
    try:
        _work(index, model_dir, fitter_kwargs, Path(out), threads, tasks, events, model_ready)
    except KeyboardInterrupt:  # stopped by the parent: what was saving has cleaned up
        pass


def _work(index, model_dir, fitter_kwargs, out: Path, threads, tasks, events, model_ready) -> None:
    started = time.perf_counter()
    try:
        import torch
        torch.set_num_threads(threads)
        from morphable import load_ict
        imports = time.perf_counter() - started
        if index > 0:
            model_ready.wait()
        try:
            model = load_ict(model_dir, region="face", progress=False)
        finally:
            model_ready.set()  # the others read the cache now (or meet the same error themselves)
        fitter = fitter_for(model, fitter_kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the model, the detector or the renderer: the whole run cannot go on
        events.put(("fatal", index, str(exc).strip().splitlines()[0] if str(exc).strip() else _one_line(exc)))
        return
    events.put(("ready", index, imports, time.perf_counter() - started - imports))
    from .outputs.files import ExportError

    writing = 0.0
    with fitter:
        while True:
            task = tasks.get()
            if task is None:
                break
            events.put(("task", index, task.index))
            try:
                bar = _ProgressToParent(events, index)
                for result in fitter.iter_fit(list(task.photos), list(task.names), progress=bar):
                    photo = result.source or task.photos[result.index]
                    if not result.ok:
                        outcome = FaceOutcome(result.name, photo, False, result.error, None, dict(result.timings))
                    else:
                        t = time.perf_counter()
                        try:
                            folder = str(result.save(out / result.name))
                            outcome = FaceOutcome(result.name, photo, True, "", folder, dict(result.timings))
                        except ExportError as exc:
                            outcome = FaceOutcome(result.name, photo, False, str(exc), None, dict(result.timings))
                        writing += time.perf_counter() - t
                    events.put(("outcome", index, task.index, outcome))
                    del result  # saved and let go: memory stays flat
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a bug or MemoryError: this task's photos fail, the others go on
                events.put(("crash", index, _one_line(exc)))
                return
            events.put(("task_done", index, task.index))
    import resource
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    events.put(("exit", index, writing, peak_mib))
