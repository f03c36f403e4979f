"""``animation.glb`` of a same-person result (issue 18, item 3; fitting.outputs.gltf): read back with
pygltflib, and imported by Blender where ``blender`` is on PATH.

The results here are built by hand from the ICT model (random identity, expressions and poses), so
the file can be checked against the faces it must reproduce, without a fit.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

from morphable.arkit import arkit_names

pygltflib = pytest.importorskip("pygltflib", reason="pygltflib (an install requirement) is not installed")

FRAMES = 6
FPS = 10.0
SKIPPED_FRAME = 3  # a frame without a face: the video's times jump over it
COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
DTYPES = {5126: np.float32, 5125: np.uint32}


def _result(model, times, seed=0, texture=False):
    """A SamePersonResult of ``len(times)`` views: one random identity, random expressions in [0, 1],
    poses within 30 degrees of frontal about 0.5 m in front of the camera."""
    from fitting.mesh import Mesh
    from fitting.rotation import euler_to_matrix
    from fitting.same_person import SamePersonResult, ViewFit

    g = torch.Generator().manual_seed(seed)
    n = len(times)
    id_coeffs = torch.randn(1, model.n_id, generator=g)
    exp = torch.rand(n, model.n_exp, generator=g) * 0.6
    angles = (torch.rand(3, n, generator=g) - 0.5) * 60.0
    rotation = euler_to_matrix(*angles).numpy()
    translation = np.array([0.0, 0.0, -500.0]) + (torch.rand(n, 3, generator=g).numpy() - 0.5) * 40.0
    neutral = model(id_coeffs)[0].numpy()
    kwargs = {}
    if texture:
        kwargs["texture"] = torch.rand(32, 64, 3, generator=g).numpy()
    mesh = Mesh.from_model(model, neutral, **kwargs)
    views = [ViewFit(name=f"v{i}", source="clip.avi", rotation=rotation[i], translation=translation[i],
                     euler_deg=angles[:, i].numpy(), intrinsics=np.array([900.0, 900.0, 320.0, 240.0]),
                     exp_coeffs=exp[i].numpy(), landmark_error_px=1.0, time_s=times[i]) for i in range(n)]
    result = SamePersonResult(neutral=mesh, id_coeffs=id_coeffs[0].numpy(), views=views,
                              exp_names=list(model.exp_names), exp_basis=model.exp_basis.numpy())
    faces = model(id_coeffs.expand(n, -1), exp).numpy()                    # (N, V, 3) mm, model frame
    posed = np.einsum("nij,nvj->nvi", rotation, faces) + translation[:, None]  # camera frame, mm
    return result, posed


def _video_times():
    return [i / FPS for i in range(FRAMES + 1) if i != SKIPPED_FRAME]


@pytest.fixture(scope="module")
def video(face_model, tmp_path_factory):
    """(glb document, the SamePersonResult, its posed faces (N, V, 3) mm, the file) of a video-like result."""
    result, posed = _result(face_model, _video_times())
    path = result.save(tmp_path_factory.mktemp("video") / "me") / "animation.glb"
    return pygltflib.GLTF2().load(str(path)), result, posed, path


def _data(gltf, index) -> np.ndarray:
    """Accessor ``index``'s values, (count, components), read from the glb's binary chunk."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = COMPONENTS[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(gltf.binary_blob(), DTYPES[acc.componentType], acc.count * width, start)
    assert start + data.nbytes <= view.byteOffset + view.byteLength
    return data.reshape(acc.count, width)


def _position(target):
    return target["POSITION"] if isinstance(target, dict) else target.POSITION


def _channels(gltf):
    """path -> (times (N,), values (N, C), interpolation) of the one animation's channels on node 0."""
    (anim,) = gltf.animations
    out = {}
    for ch in anim.channels:
        assert ch.target.node == 0
        sampler = anim.samplers[ch.sampler]
        out[ch.target.path] = (_data(gltf, sampler.input)[:, 0], _data(gltf, sampler.output), sampler.interpolation)
    return out


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """(N, 4) (x, y, z, w) unit quaternions -> (N, 3, 3)."""
    x, y, z, w = q.T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


# --------------------------------------------------------------------------- the document

def test_53_targets_named_as_arkit(video, face_model):
    gltf, _, _, _ = video
    (mesh,) = gltf.meshes
    (prim,) = mesh.primitives
    names = arkit_names(face_model.exp_names)
    assert len(prim.targets) == 53 and mesh.extras["targetNames"] == names
    assert "eyeBlinkLeft" in names and "jawOpen" in names
    assert mesh.weights == [0.0] * 53
    assert gltf.asset.version == "2.0" and gltf.scenes[gltf.scene].nodes[0] == 0 and gltf.nodes[0].mesh == 0


def test_positions_have_their_bounds(video):
    """glTF requires min/max on every POSITION accessor, the targets' included, and on animation input."""
    gltf, _, _, _ = video
    (prim,) = gltf.meshes[0].primitives
    for index in [prim.attributes.POSITION, *(_position(t) for t in prim.targets)]:
        acc, data = gltf.accessors[index], _data(gltf, index)
        assert acc.min is not None and acc.max is not None, index
        np.testing.assert_array_equal(np.float32(acc.min), data.min(0))
        np.testing.assert_array_equal(np.float32(acc.max), data.max(0))
    for sampler in gltf.animations[0].samplers:
        assert gltf.accessors[sampler.input].min is not None and gltf.accessors[sampler.input].max is not None


def test_neutral_and_one_target_round_trip_in_metres(video, face_model):
    gltf, result, _, _ = video
    (prim,) = gltf.meshes[0].primitives
    np.testing.assert_allclose(_data(gltf, prim.attributes.POSITION), result.neutral.vertices * 1e-3, atol=1e-7)
    k = face_model.exp_names.index("jawOpen")
    deltas = _data(gltf, _position(prim.targets[k]))
    np.testing.assert_allclose(deltas, face_model.exp_basis[k].numpy() * 1e-3, atol=1e-8)
    assert float(np.abs(deltas).max()) > 5e-3  # the jaw opens by millimetres: a real shape, not zeros
    faces = _data(gltf, prim.indices).reshape(-1, 3)
    np.testing.assert_array_equal(faces, face_model.triangles.numpy())
    # the face looks along +Z (glTF's front): the nose tip is the most forward vertex, in front of the eyes
    neutral = _data(gltf, prim.attributes.POSITION)
    nose = neutral[np.argmax(neutral[:, 2])]
    assert abs(nose[0]) < 0.01 and nose[2] > neutral[:, 2].mean() + 0.02


def test_keys_at_the_video_frames(video):
    gltf, result, _, _ = video
    channels = _channels(gltf)
    assert set(channels) == {"weights", "rotation", "translation"}
    for path, (times, values, interpolation) in channels.items():
        assert len(times) == len(result.views) == FRAMES  # one key per fitted frame
        np.testing.assert_allclose(times, _video_times(), atol=1e-6)  # the skipped frame's time is bridged
        assert interpolation == "LINEAR", path
    weights = channels["weights"][1].reshape(FRAMES, 53)
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    np.testing.assert_allclose(weights, np.stack([v.exp_coeffs for v in result.views]), atol=1e-7)
    q = channels["rotation"][1]
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    assert (np.sum(q[1:] * q[:-1], axis=1) >= 0).all()  # no sign flips between keys


def test_every_frame_reproduces_the_posed_face(video):
    """neutral + sum_k w_k delta_k, rotated and translated by the node's keys, is the fitted face in the
    camera frame (metres): targets, weights, axes and pose all round-trip."""
    gltf, _, posed, _ = video
    (prim,) = gltf.meshes[0].primitives
    neutral = _data(gltf, prim.attributes.POSITION).astype(np.float64)
    deltas = np.stack([_data(gltf, _position(t)) for t in prim.targets]).astype(np.float64)
    ch = _channels(gltf)
    weights = ch["weights"][1].reshape(FRAMES, 53)
    faces = neutral + np.einsum("nk,kvc->nvc", weights, deltas)
    world = np.einsum("nij,nvj->nvi", _quat_matrix(ch["rotation"][1].astype(np.float64)), faces) \
        + ch["translation"][1][:, None]
    np.testing.assert_allclose(world, posed * 1e-3, atol=2e-6)  # 2 micrometres: float32 in metres
    assert (world[..., 2] < 0).all()  # in front of the camera node, which looks down -Z


def test_camera_node_has_the_photo_field_of_view(video):
    gltf, _, _, _ = video
    (camera,) = gltf.cameras
    assert gltf.nodes[1].camera == 0 and gltf.nodes[1].rotation is None and gltf.nodes[1].translation is None
    assert camera.perspective.yfov == pytest.approx(2 * math.atan(240.0 / 900.0))
    assert camera.perspective.aspectRatio == pytest.approx(640.0 / 480.0)


def test_photos_get_one_key_a_second_held(face_model, tmp_path):
    result, _ = _result(face_model, [None, None, None], seed=1)
    gltf = pygltflib.GLTF2().load(str(result.save(tmp_path / "p") / "animation.glb"))
    for times, values, interpolation in _channels(gltf).values():
        np.testing.assert_array_equal(times, [0.0, 1.0, 2.0])
        assert interpolation == "STEP" and len(values) in (3, 3 * 53)
    assert not gltf.images and not gltf.textures  # no texture: a flat material
    from fitting.outputs.gltf import GlbSettings
    assert gltf.materials[0].pbrMetallicRoughness.baseColorFactor == pytest.approx(list(GlbSettings().base_color))


def test_times_that_restart_fall_back_to_one_a_second(face_model):
    from fitting.outputs.gltf import keyframe_times
    assert keyframe_times([0.0, 0.1, 0.0, 0.1])[1] == "STEP"  # two videos one after the other
    times, interpolation = keyframe_times([0.5])
    assert interpolation == "LINEAR" and times.tolist() == [0.5]


def test_a_texture_travels_with_split_vertices(face_model, tmp_path):
    from fitting.outputs.files import split_seams
    result, posed = _result(face_model, _video_times(), seed=2, texture=True)
    gltf = pygltflib.GLTF2().load(str(result.save(tmp_path / "t") / "animation.glb"))
    (prim,) = gltf.meshes[0].primitives
    (image,) = gltf.images
    assert image.mimeType == "image/png" and gltf.materials[0].pbrMetallicRoughness.baseColorTexture.index == 0
    uv = _data(gltf, prim.attributes.TEXCOORD_0)
    assert uv.min() >= 0.0 and uv.max() <= 1.0  # ICT's two UV tiles in one atlas
    _, _, _, source = split_seams(result.neutral)
    assert len(source) > face_model.n_vertices  # seams split
    k = face_model.exp_names.index("eyeBlink_L")
    np.testing.assert_allclose(_data(gltf, _position(prim.targets[k])), face_model.exp_basis[k].numpy()[source] * 1e-3,
                               atol=1e-8)


def test_quaternions_match_axis_angle():
    from fitting.rotation import axis_angle_to_matrix, matrix_to_quaternion
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(64, 1, generator=g, dtype=torch.float64) * math.pi
    angle[:4] = torch.tensor([[0.0], [1e-9], [math.pi - 1e-9], [math.pi]], dtype=torch.float64)
    q = matrix_to_quaternion(axis_angle_to_matrix(axis * angle))
    expected = torch.cat([axis * torch.sin(angle / 2), torch.cos(angle / 2)], -1)
    same = torch.minimum((q - expected).abs().amax(-1), (q + expected).abs().amax(-1))  # q and -q agree
    assert float(same.max()) < 1e-6
    np.testing.assert_allclose(_quat_matrix(q.numpy()), axis_angle_to_matrix(axis * angle).numpy(), atol=1e-9)


def test_without_an_expression_basis_no_glb(face_model, tmp_path):
    result, _ = _result(face_model, [None], seed=3)
    result.exp_basis = None
    folder = result.save(tmp_path / "n")
    assert (folder / "expressions.csv").is_file() and not (folder / "animation.glb").exists()


# --------------------------------------------------------------------------- Blender

BLENDER_CHECK = """
import bpy, json, sys
try:  # Debian 12's Blender 3.4.1 importer still says np.bool, which Debian's numpy 1.24 no longer has
    import numpy
    if "bool" not in vars(numpy):
        numpy.bool = numpy.bool_
except ImportError:  # the importer cannot run at all: say so, the test skips
    print("RESULT-NO-NUMPY")
    sys.exit(0)
path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=path)
obj = next(o for o in bpy.data.objects if o.type == "MESH")
keys = [k.name for k in obj.data.shape_keys.key_blocks]

def fcurves(action):
    if hasattr(action, "fcurves"):  # Blender < 5: one list of F-curves per action
        return list(action.fcurves)
    return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags for fc in bag.fcurves]

curves = {fc.data_path: [p.co[0] for p in fc.keyframe_points] for a in bpy.data.actions for fc in fcurves(a)}
scene = bpy.context.scene
print("RESULT " + json.dumps({"keys": keys, "curves": curves, "fps": scene.render.fps / scene.render.fps_base,
                              "version": list(bpy.app.version)}))
"""


@pytest.mark.skipif(shutil.which("blender") is None, reason="blender is not on PATH (the glTF checks above still run)")
def test_blender_imports_shape_keys_and_animation(video):
    _, result, _, path = video
    res = subprocess.run(["blender", "-b", "--factory-startup", "--python-expr", BLENDER_CHECK, "--", str(path)],
                         capture_output=True, text=True, timeout=300)
    if "RESULT-NO-NUMPY" in res.stdout:
        pytest.skip("Blender's Python has no numpy, which its glTF importer needs (Debian: apt-get install python3-numpy)")
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["version"] >= [3, 4], out["version"]
    names = arkit_names(result.exp_names)
    assert len(out["keys"]) == 54 and out["keys"][1:] == names  # Blender's "Basis" and the 53
    jaw = out["curves"]['key_blocks["jawOpen"].value']
    assert len(jaw) == FRAMES
    # Blender places keys at time x its scene's frame rate (24 by default, not the video's)
    np.testing.assert_allclose(np.diff(sorted(jaw)), np.diff(_video_times()) * out["fps"], atol=0.01)
    rotation = [v for k, v in out["curves"].items() if k == "rotation_quaternion"]
    assert rotation and len(rotation[0]) == FRAMES
