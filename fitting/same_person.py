"""The result of fitting several photos of one person, and its folder (issue 18).

:meth:`fitting.api.FaceFitter.fit_same_person` fits the joint model
(:mod:`fitting.stages.joint`) and returns a :class:`SamePersonResult`;
:meth:`SamePersonResult.save` writes

- ``identity.obj`` / ``identity.ply``: the neutral mesh (the identity, no expression), model frame, mm;
- ``identity_params.json``: identity coefficients, each view's pose (rotation matrix, yaw/pitch/roll,
  translation, camera intrinsics of its photo), expression weights, landmark error, the disagreement
  check, the photos skipped and why;
- ``expressions.csv``: one row per fitted photo or video frame: ``source``, ``time_s`` (a frame's
  time in its video; empty for a photo), head rotation (``yaw_deg``, ``pitch_deg``,
  ``roll_deg``) and translation (``tx_mm``, ``ty_mm``, ``tz_mm``; model -> the photo's camera,
  ``X_cam = R X + t``, camera looking down -z with y up), then the 53 expression weights in [0, 1]
  under ARKit's names (:mod:`morphable.arkit`; ICT-only shapes under ICT's);
- ``identity.png`` / ``identity.mtl`` (with ``identity.obj``): the albedo merged from every view into the
  model's UV atlas (:mod:`fitting.stages.view_texture`: each texel from the views that see it best,
  shading divided out, exposure matched to the detail view); ``identity.ply``'s vertex colours are
  sampled from it. Where the fit made one (``SamePersonSettings.texture``; the default);
- ``detail/<view name>/``: for each detail view (``SamePersonSettings.detail``, default the most
  frontal view) the single-view medium and fine stages' folder, started from the joint fit
  (:meth:`fitting.result.FitResult.save`: ``fine.obj`` with its own texture, ``medium.obj``, the maps
  and ``report.png``, ``params.json``);
- ``animation.glb`` (glTF 2.0, metres; :mod:`fitting.outputs.gltf`): the neutral mesh (its texture
  where it has one, else a flat grey material) with the 53 expressions
  as morph targets under the same names, and an animation of the expression weights and the head
  pose: keys at a video's frame times (LINEAR), or one per photo 1 s apart (STEP). Written when the
  result carries the model's expression basis (``exp_basis``; every fit does);
- ``overlay.mp4`` (a video's frames) or ``overlays.png`` (photos, a sheet of them in input order): each
  view's crop with the joint fit (the one identity, the view's pose and expression; its medium mesh where
  it has one) shaded over it and the detected landmarks in green, so a person can watch the fit. Written
  when the views carry them (``ViewFit.overlay``; every fit does);
- ``frames/<view name>.ply`` (``#`` in a video frame's name written as ``_``): each view's medium mesh
  (binary PLY, model frame, mm, the topology and colours of ``identity.ply``; the head pose is the
  view's row of ``expressions.csv``), where the views carry them (``ViewFit.mesh_vertices``;
  ``SamePersonSettings.frame_meshes``, ``fit-face --frame-meshes``).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from morphable.arkit import arkit_names

from .mesh import Mesh
from .outputs.files import ExportError, _write_png, ply_bytes, ply_colors, save_obj, save_ply, staged_files
from .outputs.gltf import GlbSettings, animation_glb, write_glb

POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm")


@dataclass
class ViewFit:
    """One photo of the joint fit: ``rotation`` (3, 3) and ``translation`` (3,) mm, model -> the
    photo's camera; ``euler_deg`` (3,) yaw, pitch, roll; ``intrinsics`` (4,) of the photo's camera
    (fx, fy, cx, cy px); ``exp_coeffs`` (n_exp,) in [0, 1]; ``landmark_error_px`` mean reprojection
    error in photo pixels; ``disagreement_mm`` how far this photo's own single-view identity lies
    from the joint one (mean vertex distance of the neutral meshes; None: not checked);
    ``face_distance`` the median distance of this photo's face descriptor to the other photos'
    (:mod:`landmarks.identity`; above 0.6: another person; None: not checked)."""

    name: str
    source: Optional[str]
    rotation: np.ndarray
    translation: np.ndarray
    euler_deg: np.ndarray
    intrinsics: np.ndarray
    exp_coeffs: np.ndarray
    landmark_error_px: float
    disagreement_mm: Optional[float] = None
    face_distance: Optional[float] = None
    time_s: Optional[float] = None  # a video frame's time (None: a photo)
    # (S, S, 3) uint8 RGB: the crop with the fit shaded over it (OVERLAY_SIZE px; None: not made)
    overlay: Optional[np.ndarray] = field(default=None, repr=False)
    # (V, 3) float32 mm, model frame: the view's medium mesh (SamePersonSettings.frame_meshes; None: not made)
    mesh_vertices: Optional[np.ndarray] = field(default=None, repr=False)


OVERLAY_SIZE = 256  # px, each view's overlay: a 300-frame video keeps 300 x 192 KB
SHEET_COLUMNS = 6  # overlays.png: views per row


@dataclass
class SamePersonResult:
    """One identity from several photos. ``neutral``: the identity's mesh (model frame, mm, no
    expression); ``id_coeffs`` (n_id,); ``views``: the photos fitted, in input order; ``skipped``:
    ``(name, reason)`` for each photo left out (unreadable, no face); ``warnings``: one line each
    (identities that disagree); ``exp_names``: the model's (ICT) expression names; ``exp_basis``:
    (n_exp, V, 3) mm, the model's expression blendshapes minus the neutral (the model is linear:
    the same for every identity), model frame, on ``neutral``'s vertices (None: no ``animation.glb``)."""

    neutral: Mesh
    id_coeffs: np.ndarray
    views: List[ViewFit]
    exp_names: List[str]
    skipped: List[tuple] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    settings: Dict[str, object] = field(default_factory=dict)
    licenses: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    exp_basis: Optional[np.ndarray] = None
    # the merged texture's report (identity_params.json's "texture": the reference view, the fraction of
    # texels seen, each view's share of the texels it gave most, its exposure gains, seconds)
    texture_info: Dict[str, object] = field(default_factory=dict)
    # the detail views' single-view results (fitting.result.FitResult: anything with .name and .save(folder))
    details: List[object] = field(default_factory=list)

    def expressions_csv(self) -> str:
        """The text of ``expressions.csv`` (see the module doc)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["source", "time_s", *POSE_COLUMNS, *arkit_names(self.exp_names)])
        for v in self.views:
            writer.writerow([v.source or v.name, "" if v.time_s is None else f"{v.time_s:.4f}",
                             *(f"{x:.4f}" for x in v.euler_deg),
                             *(f"{x:.3f}" for x in v.translation), *(f"{x:.4f}" for x in v.exp_coeffs)])
        return buf.getvalue()

    def params(self) -> Dict[str, object]:
        """``identity_params.json``'s content."""
        names = arkit_names(self.exp_names)
        return {
            "units": "mm", "frame": "model (x: subject's left, y: up, z: out of the face)",
            "id_coeffs": self.id_coeffs.tolist(),
            "expression_names": {"ict": list(self.exp_names), "arkit": names},
            "views": [{"name": v.name, "source": v.source, "time_s": v.time_s, "rotation": v.rotation.tolist(),
                       "translation_mm": v.translation.tolist(),
                       "yaw_pitch_roll_deg": v.euler_deg.tolist(), "photo_intrinsics": v.intrinsics.tolist(),
                       "expressions": dict(zip(names, v.exp_coeffs.tolist())),
                       "landmark_error_px": v.landmark_error_px, "disagreement_mm": v.disagreement_mm,
                       "face_distance": v.face_distance,
                       "mesh": None if v.mesh_vertices is None else f"frames/{frame_mesh_name(v.name)}"}
                      for v in self.views],
            "texture": self.texture_info,
            "detail_views": [d.name for d in self.details],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
            "warnings": list(self.warnings),
            "settings": self.settings,
            "seconds": self.seconds,
        }

    def animation_glb(self, settings: GlbSettings = GlbSettings()):
        """``animation.glb``'s document (a ``pygltflib.GLTF2``; :func:`fitting.outputs.gltf.animation_glb`).
        Raises ValueError without ``exp_basis``."""
        if self.exp_basis is None:
            raise ValueError("no expression basis: animation.glb needs the model's blendshapes")
        views = self.views
        return animation_glb(self.neutral, self.exp_basis, arkit_names(self.exp_names), [v.time_s for v in views],
                             np.stack([v.exp_coeffs for v in views]), np.stack([v.rotation for v in views]),
                             np.stack([v.translation for v in views]), intrinsics=views[0].intrinsics,
                             settings=settings)

    def save(self, folder) -> Path:
        """Write the files of the module doc (and the model's licence notice) into ``folder``;
        each file is written whole or not at all. Raises ExportError."""
        folder = Path(folder)
        save_obj(self.neutral, folder / "identity.obj")
        save_ply(self.neutral, folder / "identity.ply")
        glb = self.animation_glb() if self.exp_basis is not None else None
        overlays = [v.overlay for v in self.views if v.overlay is not None]
        overlays = overlays if overlays and len(overlays) == len(self.views) else None
        video = overlays is not None and all(v.time_s is not None for v in self.views)
        pictures = [] if overlays is None else [folder / ("overlay.mp4" if video else "overlays.png")]
        meshes = {frame_mesh_name(v.name): v.mesh_vertices for v in self.views if v.mesh_vertices is not None}
        targets = [folder / "identity_params.json", folder / "expressions.csv", *pictures,
                   *([folder / "animation.glb"] if glb is not None else []), *(folder / name for name in self.licenses)]
        try:
            with staged_files(*targets) as tmp:
                if glb is not None:
                    write_glb(glb, tmp["animation.glb"])
                if video:
                    _write_video(overlays, [v.time_s for v in self.views], tmp["overlay.mp4"])
                elif overlays is not None:
                    _write_sheet(overlays, tmp["overlays.png"])
                tmp["identity_params.json"].write_text(json.dumps(self.params(), indent=1), encoding="utf-8")
                tmp["expressions.csv"].write_text(self.expressions_csv(), encoding="utf-8")
                for name, text in self.licenses.items():
                    tmp[name].write_text(text, encoding="utf-8")
            if meshes:  # identity.ply's colours on every frame's mesh (the same vertices)
                colors = ply_colors(self.neutral)
                with staged_files(*(folder / "frames" / name for name in meshes)) as tmp:
                    for name, vertices in meshes.items():
                        mesh = Mesh(vertices, self.neutral.triangles)
                        tmp[name].write_bytes(ply_bytes(mesh.vertices, mesh.triangles, mesh.vertex_normals(), colors))
        except OSError as exc:
            raise ExportError(f"cannot write {folder}: {exc.strerror or exc}") from None
        for d in self.details:
            d.save(folder / "detail" / d.name)
        return folder


def frame_mesh_name(view_name: str) -> str:
    """A view's medium mesh file under ``frames/``: its name with ``#`` (a video frame's) as ``_``."""
    return view_name.replace("#", "_") + ".ply"


def _write_sheet(images: List[np.ndarray], path: Path) -> None:
    """The (S, S, 3) uint8 RGB ``images`` in rows of SHEET_COLUMNS, as one PNG."""
    size = images[0].shape[0]
    rows = -(-len(images) // SHEET_COLUMNS)
    cols = min(len(images), SHEET_COLUMNS)
    sheet = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, SHEET_COLUMNS)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = img
    _write_png(sheet, path)


def _write_video(images: List[np.ndarray], times: List[float], path: Path) -> None:
    """The (S, S, 3) uint8 RGB ``images`` as an MP4 (MPEG-4 part 2) at the frames' own rate (the median
    step of ``times``, seconds; 25 fps for a single frame)."""
    import cv2
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    fps = float(1.0 / np.median(steps)) if len(steps) else 25.0
    size = images[0].shape[0]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise OSError(f"no MP4 encoder in this OpenCV for {path.name}")
    try:
        for img in images:
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
