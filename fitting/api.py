"""The Python API: one object that loads the model and detector once and fits photos.

    fitter = FaceFitter(stages=("coarse", "medium", "fine"))
    result = fitter.fit("photo.jpg")             # FitResult
    results = fitter.fit_many(["a.jpg", "b.png"])  # a bad file is reported in its result; the others go on
                                                   # (paths, arrays, tensors or Pillow images)
    results = fitter.fit_batch(images)           # (B, H, W, 3) array
    for result in fitter.iter_fit(paths):        # any number of photos: each result as it is done
        result.save(f"out/{result.name}")

Inside, faces are cut to working crops and every stage runs on (B, ...)
tensors in chunks of ``batch_size``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image as PILImage

from landmarks import FaceMeshDetector, LandmarksError, load_image
from morphable import MorphableModel, load_ict

from .coarse import CoarseSettings
from .correspondence import load_correspondence
from .detections import DEFAULT_FOV_DEG, FaceCrop, crop_face
from .mesh import Mesh
from .progress import StageProgress

log = logging.getLogger(__name__)
STAGES = ("coarse", "medium", "fine")
ImageSource = Union[str, os.PathLike, np.ndarray, torch.Tensor, PILImage.Image]


class FitError(RuntimeError):
    """A photo could not be fitted (message: one line)."""


@dataclass
class FitResult:
    """The fit of one face. ``ok`` False: ``error`` says why in one line and the rest is empty.

    Meshes are in the model frame (mm); ``camera`` maps them into the photo:
    ``intrinsics`` (4,) photo pixels, ``rotation`` (3, 3), ``translation`` (3,) mm.
    """

    name: str  # unique within one fit_many call; also the CLI's output folder name
    ok: bool = True
    error: Optional[str] = None
    crop: Optional[FaceCrop] = None
    meshes: Dict[str, Mesh] = field(default_factory=dict)
    params: Dict[str, object] = field(default_factory=dict)
    camera: Dict[str, np.ndarray] = field(default_factory=dict)
    images: Dict[str, np.ndarray] = field(default_factory=dict)  # report pictures and fine-stage maps
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)  # e.g. the fine depth map
    timings: Dict[str, float] = field(default_factory=dict)  # seconds: "detection", each stage, "results"
    source: Optional[str] = None  # the image's path as given (None for arrays and tensors)
    index: int = 0  # position of its photo in the sources given to fit_many / iter_fit

    @property
    def mesh(self) -> Optional[Mesh]:
        """The last stage's mesh."""
        for stage in reversed(STAGES):
            if stage in self.meshes:
                return self.meshes[stage]
        return None

    def save(self, folder: Union[str, os.PathLike]) -> Path:
        from .outputs import save_result
        return save_result(self, Path(folder))


class FaceFitter:
    """Loads the model, the detector and the landmark table once; fits any number of photos.

    ``stages``: a prefix-closed subset of ("coarse", "medium", "fine").
    ``device``: "auto" (CUDA with nvdiffrast when present), "cpu" or "cuda".
    ``initializer``: a name registered in :mod:`fitting.initializers` or a
    callable ``(image, landmarks) -> CoarseInit``; None: start from the mean face.
    ``medium``, ``fine``: the stages' settings (None: their defaults); ``medium_settings`` and
    ``fine_settings`` stay None for a stage not in ``stages``.
    """

    def __init__(self, stages: Sequence[str] = STAGES, *, model: Optional[MorphableModel] = None,
                 model_dir: Optional[str] = None, device: str = "auto", crop_size: int = 512,
                 batch_size: int = 4, face_index: int = 0, all_faces: bool = False,
                 fov_deg: float = DEFAULT_FOV_DEG, coarse: Optional[CoarseSettings] = None,
                 medium=None, fine=None, initializer=None, progress: bool = False):
        stages = tuple(stages)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage {bad[0]!r}; stages are {', '.join(STAGES)}")
        if not stages:
            raise ValueError(f"no stages given; stages must start at coarse: {', '.join(STAGES)}")
        if stages != STAGES[:len(stages)]:
            raise ValueError(f"stages must start at coarse and not skip one: got {','.join(stages)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(face_index) < 0:
            raise ValueError(f"face_index counts from 0 (the largest face), got {face_index}")
        if int(crop_size) < 64:
            raise ValueError(f"crop_size must be at least 64 pixels, got {crop_size}")
        from .renderer import Renderer
        self.renderer = Renderer(device)
        self.device = torch.device("cuda") if self.renderer.backend == "nvdiffrast" else torch.device("cpu")
        self.stages = stages
        self.model = (model if model is not None else load_ict(model_dir, region="face", progress=progress)).to(self.device)
        self.corr = load_correspondence()
        self.detector = FaceMeshDetector()
        self.crop_size, self.batch_size, self.fov_deg = crop_size, batch_size, fov_deg
        self.face_index, self.all_faces = face_index, all_faces
        self.coarse_settings = coarse or CoarseSettings()
        # A later stage's defaults only when it runs: its module brings SciPy's sparse solvers
        # (medium) or trimesh (fine), which a coarse-only fit does not load. None: not run.
        self.medium_settings = medium
        if not medium and "medium" in stages:
            from .medium import MediumSettings
            self.medium_settings = MediumSettings()
        self.fine_settings = fine
        if not fine and "fine" in stages:
            from .fine import FineStageSettings
            self.fine_settings = FineStageSettings()
        from .initializers import resolve_initializer
        self.initializer = resolve_initializer(initializer)
        self.progress = progress

    def close(self) -> None:
        self.detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ public entry points

    def fit(self, source: ImageSource, name: Optional[str] = None) -> FitResult:
        """Fit one photo (the largest face, or ``face_index``). Raises FitError when it fails."""
        results = self.fit_many([source], names=[name] if name else None)
        if not results[0].ok:
            raise FitError(results[0].error)
        return results[0]

    def fit_batch(self, images: np.ndarray, names: Optional[Sequence[str]] = None) -> List[FitResult]:
        """(B, H, W, 3) array or tensor (uint8, or float in [0, 1]; a tensor may also be (B, 3, H, W))
        -> one result per image (or per face with all_faces)."""
        names = names or [f"image_{i:03d}" for i in range(len(images))]
        return self.fit_many(list(images), names=names)

    def fit_many(self, sources: Sequence[ImageSource], names: Optional[Sequence[str]] = None,
                 on_result=None) -> List[FitResult]:
        """Fit several photos; a failure is reported in that photo's result and the others go on.

        Returns the results in input order (a photo's faces in face order with ``all_faces``).
        ``on_result(result)`` is called as each result is complete. Every result is kept until
        the end (a full fit holds about 80 MB); for a folder of any size use :meth:`iter_fit`.
        """
        out = []
        for result in self.iter_fit(sources, names):
            if on_result:
                on_result(result)
            out.append(result)
        out.sort(key=lambda r: r.index)  # stable: a photo's faces stay in face order
        return out

    def iter_fit(self, sources: Sequence[ImageSource], names: Optional[Sequence[str]] = None
                 ) -> Iterator[FitResult]:
        """Fit several photos, yielding each result as soon as it is complete; nothing is kept.

        Faces are fitted in chunks of ``batch_size``, so results come in the order they are
        done: a photo that cannot be read comes out at once, before the chunk of earlier
        photos. ``result.index`` is its photo's position in ``sources``. Save each result and
        let it go, and memory stays flat however many photos there are (the CLI does this).
        """
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} images")
        names = unique_names(list(names) if names else [_name_of(s, i) for i, s in enumerate(sources)])
        pending: List[FitResult] = []
        bar = StageProgress(len(sources), self.stages, enabled=self.progress)
        try:
            for i, (src, name) in enumerate(zip(sources, names)):
                path = _path_of(src)
                started = time.perf_counter()
                try:
                    found = self._detect(src, name)
                except (LandmarksError, FitError, ValueError, OSError) as exc:
                    found = []
                    bar.detected(0)
                    yield FitResult(name=name, ok=False, error=_one_line(exc), source=path, index=i,
                                    timings={"detection": time.perf_counter() - started})
                else:
                    bar.detected(len(found))
                detection = time.perf_counter() - started
                for r in found:  # the photo's reading and detection, shared by its faces
                    r.source, r.index = path, i
                    r.timings["detection"] = detection / len(found)
                pending.extend(found)
                while len(pending) >= self.batch_size:
                    yield from self._run_chunk(pending[:self.batch_size], bar)
                    pending = pending[self.batch_size:]
            while pending:
                yield from self._run_chunk(pending[:self.batch_size], bar)
                pending = pending[self.batch_size:]
        finally:
            bar.close()

    # ------------------------------------------------------------------ steps

    def _detect(self, source: ImageSource, name: str) -> List[FitResult]:
        img = load_image(source, name=name)
        faces = self.detector.detect(img)
        if not faces:
            from landmarks import NoFaceError
            raise NoFaceError(f"no face found in '{name}'")
        if self.all_faces:
            chosen = list(enumerate(faces))
        else:
            if self.face_index >= len(faces):
                raise FitError(f"face_index {self.face_index} out of range: {len(faces)} face(s) in '{name}'")
            chosen = [(self.face_index, faces[self.face_index])]
        results = []
        for i, face in chosen:
            fname = name if len(chosen) == 1 else f"{name}#face{i}"
            crop = crop_face(img.pixels, face, self.crop_size, fname, self.fov_deg)
            results.append(FitResult(name=fname, crop=crop))
        return results

    def _run_chunk(self, chunk: List[FitResult], bar: StageProgress) -> List[FitResult]:
        from .pipeline import run_stages
        before = bar.done
        try:
            run_stages(self, chunk, bar)
        except (RuntimeError, ValueError) as exc:  # a numerical failure fails the chunk, not the run
            log.exception("stage failure")
            for r in chunk:
                r.ok, r.error = False, _one_line(exc)
            bar.skipped(len(chunk) * len(self.stages) - (bar.done - before))
        return chunk


def unique_names(names: Sequence[str]) -> List[str]:
    """``names`` with repeats made distinct: the first keeps its name, later ones get -2, -3, ...

    Two photos called face.jpg in different folders must not write to the
    same output folder; a suffix that is itself taken is skipped.
    """
    taken = set(names)
    used: set = set()
    out = []
    for name in names:
        unique, k = name, 1
        while unique in used or (unique != name and unique in taken):
            k += 1
            unique = f"{name}-{k}"
        used.add(unique)
        out.append(unique)
    return out


def _path_of(source: ImageSource) -> Optional[str]:
    """The file an image came from: a path as given, a Pillow image's file; None for arrays and tensors."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "filename", None) or None  # "" for a Pillow image made in memory


def _name_of(source: ImageSource, i: int) -> str:
    path = _path_of(source)
    return Path(path).stem if path else f"image_{i:03d}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
