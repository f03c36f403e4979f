"""What fitting.pipeline reports of a fit: the landmark error's reference and its normaliser."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from fitting.camera import Camera
from fitting.pipeline import frontal_inter_ocular_px, landmark_references
from fitting.rotation import euler_to_matrix
from fitting.stages.coarse import fit_landmarks, landmark_weights
from fitting.stages.correspondence import load_correspondence

from test_fusion import NO_FUSION, SETTINGS, scene


def test_landmark_error_is_measured_against_the_source_the_fit_followed(face_model):
    """params.json's landmark error (fitting.pipeline.landmark_references): against MediaPipe's points
    where they carried the fit, against the regressor's 68 where the fusion distrusted MediaPipe (a
    profile's wrong mesh would otherwise read as a 40 % error of a fit that sits on the face)."""
    corr = load_correspondence()
    for yaw, garbage, expected in [(10.0, False, "mediapipe478"), (75.0, True, "regressor68")]:
        batch, init, _ = scene(face_model, yaw, 15.0, garbage=garbage)
        fused = fit_landmarks(face_model, batch, corr, SETTINGS, init)
        weights = landmark_weights(batch, corr, SETTINGS, fused.camera.rotation)
        assert landmark_references(fused, weights, [True]) == [expected]
        # a face MediaPipe missed is always measured against the regressor's points
        assert landmark_references(fused, weights, [False]) == ["regressor68"]
        # without the regressor there is only MediaPipe
        plain = fit_landmarks(face_model, batch, corr, NO_FUSION, init)
        assert landmark_references(dataclasses.replace(plain, points68=None), weights, [True]) == ["mediapipe478"]



def test_inter_ocular_normaliser_does_not_shrink_as_the_head_turns(face_model):
    """The same fitted face at yaw 0 and 70: the eyes' distance in the photo falls by more than half,
    the normaliser (frontal_inter_ocular_px) changes only with the eyes' depth; at yaw 0 it is the
    distance between the projected eye centres."""
    corr = load_correspondence()
    from fitting.stages.coarse import CoarseResult
    from landmarks import indices as I
    verts = face_model(torch.zeros(1, face_model.n_id), torch.zeros(1, face_model.n_exp))
    values, apparent = [], []
    for yaw in (0.0, 70.0):
        rot = euler_to_matrix(torch.tensor([yaw]), torch.tensor([0.0]), torch.tensor([0.0]))
        cam = Camera.from_image_size(512, 512, 30.0, rotation=rot[0])
        fit = CoarseResult(camera=cam, vertices=verts, id_coeffs=torch.zeros(1, face_model.n_id),
                           exp_coeffs=torch.zeros(1, face_model.n_exp), landmark_error=torch.zeros(1))
        points = fit.landmark_points(corr, verts)
        values.append(float(frontal_inter_ocular_px(cam, points)[0]))
        uv = cam.project(points)[0, :, :2]
        eyes = [0.5 * (uv[a] + uv[b]) for a, b in ((I.RIGHT_EYE_OUTER_CORNER, I.RIGHT_EYE_INNER_CORNER),
                                                   (I.LEFT_EYE_INNER_CORNER, I.LEFT_EYE_OUTER_CORNER))]
        apparent.append(float((eyes[1] - eyes[0]).norm()))
    assert math.isclose(values[0], apparent[0], rel_tol=0.02)
    assert apparent[1] < 0.5 * apparent[0]
    # turned about the head's centre, the eyes move about 60 mm further from the camera (600 mm away): the
    # normaliser follows 1 / depth, nothing else
    assert 0.85 * values[0] < values[1] < values[0]
    assert np.isfinite(values).all()
