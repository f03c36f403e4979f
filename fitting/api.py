"""The Python API: one object that loads the model and detector once and fits photos.

    fitter = FaceFitter(stages=("coarse", "medium", "fine"))
    result = fitter.fit("photo.jpg")             # FitResult
    results = fitter.fit_many(["a.jpg", "b.png"])  # a bad file is reported in its result; the others go on
                                                   # (paths, arrays, tensors or Pillow images)
    results = fitter.fit_batch(images)           # (B, H, W, 3) array
    person = fitter.fit_same_person(["a.jpg", "b.jpg"])  # one identity from photos of one person
    person.save("out/person")
    for result in fitter.iter_fit(paths):        # any number of photos: each result as it is done
        result.save(f"out/{result.name}")

Inside, faces are cut to working crops and every stage runs on (B, ...)
tensors in chunks of ``batch_size``.
"""
from __future__ import annotations

import logging
import time
import os
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image as PILImage

from landmarks import FaceMeshDetector, LandmarksError, load_image
from morphable import MorphableModel, load_ict

from .camera import DEFAULT_FOV
from .detections import FaceJob, crop_face
from .naming import name_of as _name_of, path_of as _path_of, unique_names
from .progress import StageProgress
from .result import FitError, FitResult
from .stages import STAGE_NAMES, check_stages, load_stage
from .stages.coarse import CoarseSettings
from .stages.context import FitContext
from .stages.correspondence import load_correspondence

log = logging.getLogger(__name__)
STAGES = STAGE_NAMES
ImageSource = Union[str, os.PathLike, np.ndarray, torch.Tensor, PILImage.Image]
__all__ = ["FaceFitter", "FitResult", "FitError", "ImageSource", "STAGES", "unique_names"]


class FaceFitter:
    """Loads the model, the detector and the landmark table once; fits any number of photos.

    ``stages``: a prefix-closed subset of ("coarse", "medium", "fine"), or one comma-separated string.
    ``device``: "auto" (CUDA with nvdiffrast when present), "cpu" or "cuda".
    ``initializer``: a name registered in :mod:`fitting.stages.initializers` or a
    callable ``(image, landmarks, model) -> CoarseInit``; None: start from the mean face;
    "auto" (default): the 3DDFA_V2 regressor when its files are on this machine, else None.
    ``regressor_dir``: the folder of the 3DDFA_V2 regressor's files (``"3ddfa_v2"``, ``"auto"``).
    """

    def __init__(self, stages: Sequence[str] = STAGES, *, model: Optional[MorphableModel] = None,
                 model_dir: Optional[str] = None, device: str = "auto", crop_size: int = 512,
                 batch_size: int = 4, face_index: int = 0, all_faces: bool = False,
                 fov_deg: float = DEFAULT_FOV, coarse: Optional[CoarseSettings] = None,
                 medium=None, fine=None, initializer="auto", regressor_dir: Optional[str] = None,
                 progress: bool = False):
        stages = check_stages(stages)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(face_index) < 0:
            raise ValueError(f"face_index counts from 0 (the largest face), got {face_index}")
        if int(crop_size) < 64:
            raise ValueError(f"crop_size must be at least 64 pixels, got {crop_size}")
        from .rendering.renderer import Renderer
        from .stages.initializers import resolve_initializer
        renderer = Renderer(device)
        dev = torch.device("cuda") if renderer.backend == "nvdiffrast" else torch.device("cpu")
        model = (model if model is not None else load_ict(model_dir, region="face", progress=progress)).to(dev)
        given = {"coarse": coarse, "medium": medium, "fine": fine}
        # Each stage of this run gets its settings (the user's, or its defaults); a stage not run has
        # none, and its module (SciPy for medium, trimesh for fine) is not imported.
        settings = {name: given.get(name) or load_stage(name).settings_type() for name in stages}
        self.context = FitContext(model=model, correspondence=load_correspondence(), renderer=renderer, device=dev,
                                  settings=settings, initializer=resolve_initializer(initializer, regressor_dir))
        self.stages = stages
        self.detector = FaceMeshDetector()
        self.crop_size, self.batch_size, self.fov_deg = crop_size, batch_size, fov_deg
        self.face_index, self.all_faces = face_index, all_faces
        self.progress = progress
        self._describer = None  # landmarks.identity.FaceDescriber, loaded by the first same-person check

    # The context's parts, for callers that render or measure beside the fit.
    @property
    def model(self) -> MorphableModel:
        return self.context.model

    @property
    def renderer(self):
        return self.context.renderer

    @property
    def device(self) -> torch.device:
        return self.context.device

    def settings(self, stage: str):
        """The settings ``stage`` runs with (a stage of this fitter)."""
        return self.context.settings[stage]

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

    def iter_fit(self, sources: Sequence[ImageSource], names: Optional[Sequence[str]] = None,
                 progress=None) -> Iterator[FitResult]:
        """Fit several photos, yielding each result as soon as it is complete; nothing is kept.

        Faces are fitted in chunks of ``batch_size``, so results come in the order they are
        done: a photo that cannot be read comes out at once, before the chunk of earlier
        photos. ``result.index`` is its photo's position in ``sources``. Save each result and
        let it go, and memory stays flat however many photos there are (the CLI does this).
        ``progress``: an object with :class:`fitting.progress.StageProgress`'s methods to tell
        instead of this fitter's own bar (a worker process tells its parent's bar through it).
        """
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} images")
        names = unique_names(list(names) if names else [_name_of(s, i) for i, s in enumerate(sources)])
        pending: List[FaceJob] = []
        bar = progress if progress is not None else StageProgress(len(sources), self.stages, enabled=self.progress)
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
                for job in found:  # the photo's reading and detection, shared by its faces
                    job.source, job.index, job.detection_seconds = path, i, detection / len(found)
                pending.extend(found)
                while len(pending) >= self.batch_size:
                    yield from self._run_chunk(pending[:self.batch_size], bar)
                    pending = pending[self.batch_size:]
            while pending:
                yield from self._run_chunk(pending[:self.batch_size], bar)
                pending = pending[self.batch_size:]
        finally:
            bar.close()

    def fit_same_person(self, sources: Sequence[ImageSource], names: Optional[Sequence[str]] = None,
                        settings=None):
        """Photos of ONE person -> one identity and each photo's pose and expression
        (:class:`fitting.same_person.SamePersonResult`; :mod:`fitting.stages.joint`).

        The largest face (or ``face_index``) of each photo; a photo that cannot be read or shows no
        face is listed in ``result.skipped`` and the others go on (FitError when none is left).
        ``settings``: :class:`fitting.stages.joint.SamePersonSettings` (default: the coarse
        settings of this fitter without the single-view photometric polish; the joint fit runs its own).
        A photo whose own single-view identity lies farther than ``settings.disagreement_mm`` from
        the joint one gets a line in ``result.warnings`` (may be another person), and so does one whose face
        descriptor lies farther than ``settings.face_descriptor_distance`` from the other photos' where
        dlib is installed (:mod:`landmarks.identity`; the check that tells people apart). The joint fit is
        landmark least squares, then the joint photometric polish of all photos with the identity shared
        (``settings.photometric``, on by default; not on a video's frames); the views' albedo is merged into one UV texture (``settings.texture``) and the
        single-view medium and fine stages run on ``settings.detail``'s views (``result.details``), with
        this fitter's settings for the stages it was made with and the defaults for the others. With
        ``settings.frame_meshes`` every view also gets its medium mesh (``view.mesh_vertices``).
        """
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} images")
        names = unique_names(list(names) if names else [_name_of(s, i) for i, s in enumerate(sources)])
        return self.fit_views(((name, src, _path_of(src), None) for src, name in zip(sources, names)), settings)

    def fit_video(self, path, every: int = 1, max_frames: Optional[int] = None, settings=None):
        """A video of ONE person (any file OpenCV reads): every ``every``-th frame, at most ``max_frames``,
        fitted as :meth:`fit_same_person` fits photos; each view's ``time_s`` is its frame's time.
        Frames without a face are listed in ``result.skipped`` (their neighbours become consecutive).
        Raises VideoError for a file that does not decode. The frames' expressions are smoothed over
        time (``settings.lambda_temporal_exp``); the poses are each frame's own."""
        from pathlib import Path
        from .video import frame_views
        return self.fit_views(frame_views(path, Path(path).stem, every, max_frames), settings, ordered=True)

    def fit_views(self, items, settings=None, ordered: bool = False):
        """The same-person fit of ``items``, an iterable of ``(name, image source, path or None,
        time_s or None)`` (names unique), read one at a time: only each face's crop is kept.
        What :meth:`fit_same_person` and :meth:`fit_video` run. ``ordered``: the items are a video's
        frames in order (the temporal term applies)."""
        import dataclasses
        from .detections import DetectionBatch
        from .same_person import SamePersonResult, ViewFit
        from .mesh import Mesh
        from .stages.coarse import initial_guess
        from .stages.joint import SamePersonSettings, detail_views, fit_same_person, frame_meshes

        if settings is None:
            coarse = self.context.settings.get("coarse") or CoarseSettings()
            settings = SamePersonSettings(coarse=dataclasses.replace(coarse, photometric=False))
        started = time.perf_counter()
        jobs, skipped, times = [], [], []
        for i, (name, src, path, time_s) in enumerate(items):
            try:
                found = self._detect(src, name)
            except (LandmarksError, FitError, ValueError, OSError) as exc:
                skipped.append((name, _one_line(exc)))
                log.info("%s: skipped: %s", name, _one_line(exc))
                continue
            job = found[0]  # all_faces does not apply: one person, one face per photo
            job.source, job.index = path, i
            jobs.append(job)
            times.append(time_s)
        if not jobs:
            raise FitError("no face found in any photo or frame" + "".join(f"; {n}: {r}" for n, r in skipped[:5]))
        model = self.model
        batch = DetectionBatch.stack([j.crop for j in jobs], device=self.device)
        fit = fit_same_person(model, batch, self.context.correspondence, settings, renderer=self.renderer,
                              ordered=ordered, init=initial_guess(self.context, batch))
        euler = fit.camera.euler_degrees().cpu().numpy()
        meshes = None
        if settings.frame_meshes:  # every view's medium mesh, with this fitter's medium settings
            meshes = frame_meshes(model, batch, self.context.correspondence, fit, self.context.settings.get("medium"),
                                  renderer=self.renderer)
        overlays = self._view_overlays(fit, jobs, meshes)
        names = [j.name for j in jobs]
        face_distances = [None] * len(jobs) if ordered else self._face_distances(jobs, euler, settings)
        detail, unknown = detail_views(names, torch.as_tensor(euler), settings.detail)
        warnings = [f"{name}: no such view for the detail (the views: {', '.join(names[:5])}"
                    f"{', ...' if len(names) > 5 else ''})" for name in unknown]
        texture, texture_info = None, {}
        if settings.texture is not None:  # exposed like the detail view, or the most frontal one
            reference = (detail or detail_views(names, torch.as_tensor(euler), ("frontal",))[0])[0]
            texture, texture_info = self._merged_texture(fit, batch, reference, settings.texture)
            texture_info["reference"] = names[reference]
        details = self._detail_fits(fit, jobs, detail) if detail else []
        views = []
        for i, job in enumerate(jobs):
            photo = fit.camera[i].uncrop(torch.as_tensor(job.crop.box)[None], *job.crop.photo_size)
            dis = None if fit.disagreement_mm is None else float(fit.disagreement_mm[i])
            views.append(ViewFit(name=job.name, source=job.source, rotation=fit.camera.rotation[i].cpu().numpy(),
                                 translation=fit.camera.translation[i].cpu().numpy(), euler_deg=euler[i],
                                 intrinsics=photo.intrinsics[0].cpu().numpy(),
                                 exp_coeffs=fit.exp_coeffs[i].cpu().numpy(),
                                 landmark_error_px=float(fit.landmark_error[i]) / job.crop.scale,
                                 disagreement_mm=dis, face_distance=face_distances[i], time_s=times[i],
                                 overlay=overlays[i],
                                 mesh_vertices=None if meshes is None else meshes[i].detach().cpu().float().numpy()))
            # The face descriptors, where they compared this photo, are the check that tells people apart;
            # the identities' distance then adds only its false alarms (a frontal portrait beside its mirror
            # image and another person read 3.0 and 2.8 mm, the other person 2.6).
            if dis is not None and len(jobs) > 1 and dis > settings.disagreement_mm and face_distances[i] is None:
                warnings.append(f"{job.name}: its own identity is {dis:.1f} mm from the joint one (threshold "
                                f"{settings.disagreement_mm:g} mm): is it the same person?")
            if face_distances[i] is not None and face_distances[i] > settings.face_descriptor_distance:
                warnings.append(f"{job.name}: its face is {face_distances[i]:.2f} from the other photos' (face "
                                f"descriptors; two people beyond {settings.face_descriptor_distance:g}): "
                                "is it the same person?")
        for line in warnings:
            log.info("%s", line)
        neutral = Mesh.from_model(model, fit.neutral.detach().cpu().numpy())
        if texture is not None:  # the texture's atlas: the model's UV tiles side by side in [0, 1]
            neutral = Mesh(neutral.vertices, neutral.triangles, uvs=model.uv_atlas().cpu().numpy(),
                           uv_triangles=neutral.uv_triangles, texture=texture)
        return SamePersonResult(neutral=neutral, id_coeffs=fit.id_coeffs.cpu().numpy(), views=views,
                                exp_names=list(model.exp_names), skipped=skipped, warnings=warnings,
                                settings={"lambda_id": settings.lambda_id, "disagreement_mm": settings.disagreement_mm,
                                          "coarse": dataclasses.asdict(settings.coarse),
                                          "texture": None if settings.texture is None
                                          else dataclasses.asdict(settings.texture),
                                          "detail": list(settings.detail), "frame_meshes": settings.frame_meshes},
                                texture_info=texture_info, details=details,
                                licenses={model.license_name: model.license_text} if model.license_name else {},
                                seconds=time.perf_counter() - started,
                                exp_basis=model.exp_basis.detach().cpu().numpy())

    def _face_distances(self, jobs: List[FaceJob], euler, settings) -> List[Optional[float]]:
        """Per photo, the median distance of its face descriptor to the other photos'
        (:mod:`landmarks.identity`), or None where not checked: fewer than two photos to compare, a photo
        turned past ``settings.face_descriptor_max_yaw_deg`` (``euler`` (N, 3) degrees) or whose face
        MediaPipe's mesh missed, the check off, or dlib not installed (then a log line says so)."""
        from landmarks.identity import FaceDescriber, face_descriptor_available, median_distances
        out: List[Optional[float]] = [None] * len(jobs)
        use = [i for i, job in enumerate(jobs)
               if job.crop.mediapipe and abs(float(euler[i][0])) <= settings.face_descriptor_max_yaw_deg]
        if settings.face_descriptor_distance is None or len(use) < 2:
            return out
        if not face_descriptor_available():
            log.info("photos not compared by face descriptors (pip install \".[identity]\" for dlib's): "
                     "only gross differences between people are flagged")
            return out
        if self._describer is None:
            self._describer = FaceDescriber()
        found = np.stack([self._describer(jobs[i].crop.image, jobs[i].crop.points[:, :2]) for i in use])
        for i, d in zip(use, median_distances(found)):
            out[i] = float(d)
        return out

    def _merged_texture(self, fit, batch, reference: int, settings):
        """The views' merged UV albedo (:func:`fitting.stages.view_texture.merge_views`) as an (H, W, 3)
        float32 array, and what the result's parameters report of it (``reference``: the view index whose
        exposure it has; how many views were merged (``settings.max_views``, spread over the yaw range); per
        view the share of texels it gave most and its exposure gains (0 and 1 for a view not merged); seconds)."""
        from .stages.view_texture import merge_views, pick_views
        started = time.perf_counter()
        model = self.model
        idx = pick_views(fit.camera.euler_degrees()[:, 0].cpu(), reference, settings.max_views)
        sel = torch.as_tensor(idx, device=fit.vertices.device)
        cam = fit.camera[sel]
        with torch.no_grad():
            merged = merge_views(self.renderer, cam.to_camera(fit.vertices[sel]), model.triangles,
                                 model.uv_atlas(), model.uv_triangles, model.uv_tiles, cam.intrinsics,
                                 batch.images[sel.to(batch.images.device)],
                                 batch.region_labels[sel.to(batch.images.device)], reference=idx.index(reference),
                                 settings=settings)
        share, gains = [0.0] * len(fit.vertices), [[1.0, 1.0, 1.0]] * len(fit.vertices)
        for j, i in enumerate(idx):
            share[i], gains[i] = float(merged.coverage[j]), merged.gains[j].cpu().tolist()
        info = {"reference": reference, "merged_views": len(idx), "seen_fraction": float(merged.seen.float().mean()),
                "best_view_share": share, "exposure_gains": gains, "seconds": time.perf_counter() - started}
        return merged.texture.cpu().numpy(), info

    def _detail_fits(self, fit, jobs: List[FaceJob], indices: List[int]) -> List[FitResult]:
        """The single-view medium and fine stages on the views ``indices`` of ``fit`` (a
        :class:`fitting.stages.joint.JointFit`), started from its identity, pose and expression: one
        :class:`FitResult` each (its meshes, texture, maps and report, as ``fit`` gives for one photo).
        Stage settings: this fitter's where it runs the stage, else the defaults."""
        import dataclasses
        from .detections import DetectionBatch
        from .pipeline import assemble
        settings = {name: self.context.settings.get(name) or load_stage(name).settings_type() for name in STAGES}
        context = dataclasses.replace(self.context, settings=settings)
        chosen = [jobs[i] for i in indices]
        batch = DetectionBatch.stack([j.crop for j in chosen], device=self.device)
        results, timings = {"coarse": fit.coarse_result(torch.as_tensor(indices, device=self.device))}, {}
        for name in ("medium", "fine"):
            t = time.perf_counter()
            results[name] = load_stage(name).run(context, batch, results["coarse" if name == "medium" else "medium"])
            timings[name] = (time.perf_counter() - t) / len(chosen)
        return assemble(context, batch, chosen, results, timings)

    def _view_overlays(self, fit, jobs: List[FaceJob], vertices: Optional[torch.Tensor] = None,
                       chunk: int = 16) -> List[np.ndarray]:
        """Each view's crop with ``fit`` (a :class:`fitting.stages.joint.JointFit`: the identity with the
        view's expression, at its pose; or ``vertices`` (N, V, 3) model frame, the views' medium meshes)
        shaded over it and the points it followed (MediaPipe's, or the
        regressor's 68 where the fusion trusted MediaPipe less than half): (S, S, 3) uint8 RGB at
        :data:`fitting.same_person.OVERLAY_SIZE` px, rendered ``chunk`` views at a time."""
        import cv2
        from .pipeline import OUTSIDE_PHOTO
        from .rendering.pictures import overlay, shade_geometry
        from .same_person import OVERLAY_SIZE
        out = []
        scale = OVERLAY_SIZE / fit.camera.height  # rendered at the overlay's size: a quarter of the rays of 512 px
        for s in range(0, len(jobs), chunk):
            cam = fit.camera[s:s + chunk]
            verts = cam.to_camera((fit.vertices if vertices is None else vertices)[s:s + chunk].to(cam.rotation))
            img, mask = shade_geometry(self.renderer, verts, self.model.triangles, cam.intrinsics * scale, OVERLAY_SIZE)
            for i, job in enumerate(jobs[s:s + chunk], start=s):
                crop = job.crop
                photo = cv2.resize(np.where(crop.inside[..., None], crop.image, OUTSIDE_PHOTO).astype(np.float32),
                                   (OVERLAY_SIZE, OVERLAY_SIZE), interpolation=cv2.INTER_AREA)
                followed = crop.points[:, :2] if crop.mediapipe else None
                if fit.points68 is not None and (not crop.mediapipe or float(fit.landmark_trust[i]) < 0.5):
                    followed = fit.points68[i].cpu().numpy()
                picture = overlay(photo, img[i - s].cpu().numpy(), mask[i - s].cpu().numpy(),
                                  None if followed is None else followed * scale)
                out.append((np.clip(picture, 0, 1) * 255).round().astype(np.uint8))
        return out

    # ------------------------------------------------------------------ steps

    def _detect(self, source: ImageSource, name: str) -> List[FaceJob]:
        img = load_image(source, name=name)
        faces = [(f, True) for f in self.detector.detect(img)]
        if not faces or (self.all_faces and len(faces) < self.detector.max_faces):
            faces += [(f, False) for f in self._regressor_faces(img, [f for f, _ in faces])]
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
        for i, (face, mediapipe) in chosen:
            fname = name if len(chosen) == 1 else f"{name}#face{i}"
            crop = crop_face(img.pixels, face, self.crop_size, fname, self.fov_deg, mediapipe=mediapipe)
            results.append(FaceJob(name=fname, crop=crop))
        return results

    def _regressor_faces(self, img, faces) -> list:
        """Faces MediaPipe's mesh missed but a detector boxed, read by the 3DDFA_V2 regressor alone
        (:mod:`fitting.regressor_faces`): stand-in :class:`landmarks.FaceLandmarks`, largest first. None
        without the regressor (the face stays not found, as before) or with fusion off (nothing would fit
        the regressor's points)."""
        from .regressor_faces import regressor_face
        from .stages.initializers import RegressorInitializer
        init = self.context.initializer
        coarse = self.context.settings.get("coarse")
        if not isinstance(init, RegressorInitializer) or (coarse is not None and not coarse.fusion.enabled):
            return []
        init.prepare()
        found = [regressor_face(img.pixels, box, init.regressor, self.model, self.context.correspondence,
                                self.fov_deg)[0] for box in self.detector.boxes_without_mesh(img, faces)]
        return sorted(found, key=lambda f: f.area, reverse=True)

    def _run_chunk(self, chunk: List[FaceJob], bar: StageProgress) -> List[FitResult]:
        from .pipeline import run_stages
        before = bar.done
        try:
            return run_stages(self.context, self.stages, chunk, bar)
        except (RuntimeError, ValueError) as exc:  # a numerical failure fails the chunk, not the run
            log.exception("stage failure")
            bar.skipped(len(chunk) * len(self.stages) - (bar.done - before))
            return [FitResult(name=j.name, ok=False, error=_one_line(exc), crop=j.crop, source=j.source,
                              index=j.index) for j in chunk]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
