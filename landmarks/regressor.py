"""A learned 3D face regressor: 3DDFA_V2's MobileNet-V1 (width x0.5), image -> head pose and 68 3D points.

Guo et al., "Towards Fast, Accurate and Stable 3D Dense Face Alignment" (ECCV 2020). The network reads a
120 x 120 crop around a face and outputs 62 numbers; de-normalised, they are a 3 x 4 pose matrix
(scale x rotation, offset), 40 identity and 10 expression coefficients of a 68-point Basel-Face-Model
basis (:mod:`landmarks.regressor_files`). It stays reliable where heads turn past 60 degrees, where
MediaPipe's mesh does not.

How a face is read (as upstream, so that the network sees what it was trained on):

1. the region of interest (ROI) is a square around a face box (:func:`roi_from_box`: 1.58 times the
   box's mean side, moved down by 0.14 of it) or around 68 points (:func:`roi_from_points`: the
   diagonal of their bounding square); its corners are rounded to whole pixels and the crop is taken
   with black outside the image, then resized to 120 x 120 (bilinear);
2. BGR channel order (upstream read its images with OpenCV), ``(pixel - 127.5) / 128``;
3. the network; its 62 outputs times ``param_std`` plus ``param_mean``;
4. the points ``P[:, :3] @ (u + W_shp a_shp + W_exp a_exp) + P[:, 3]`` in the 120-pixel crop (y up,
   one-based as in upstream's MATLAB-trained data), mapped back to the photo by the ROI.

Pixels in and out follow :mod:`landmarks.detector`: u right, v down, continuous frame (pixel centres at
+0.5; upstream's integer pixel centres are shifted by half a pixel on the way in and out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch import nn

from .regressor_files import N_KEYPOINTS, RegressorFiles, RegressorFilesError, find_regressor_files

INPUT_SIZE = 120  # px: the network's square input
WIDTH = 0.5  # MobileNet width multiplier of the published "mb05" weights
N_PARAMS = 62  # 12 pose + 40 identity + 10 expression
N_POSE, N_SHP, N_EXP = 12, 40, 10
PIXEL_MEAN, PIXEL_STD = 127.5, 128.0  # input normalisation of 8-bit pixels
# ROI from a face box (upstream's numbers, tuned for its FaceBoxes detector's boxes): side = 1.58 x the
# box's mean side, centre moved down by 0.14 x that side (boxes sit high on the face, the chin matters).
ROI_BOX_SCALE, ROI_BOX_SHIFT = 1.58, 0.14
HALF_PIXEL = 0.5  # continuous pixel frame (ours) minus integer-centred frame (upstream's)

# MobileNet-V1 at full width: (name, input channels, output channels, stride) of each depthwise-separable
# block after the 32-channel stem. Names are those of the published state dict.
_BLOCKS = (("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
           ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2), ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1),
           ("dw5_3", 512, 512, 1), ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
           ("dw6", 1024, 1024, 1))
_STEM = 32


class _SeparableBlock(nn.Module):
    """3x3 depthwise convolution and 1x1 pointwise convolution, each followed by batch norm and ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn_dw = nn.BatchNorm2d(c_in)
        self.conv_sep = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_dw(self.conv_dw(x)))
        return torch.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """(N, 3, 120, 120) normalised BGR crops -> (N, 62) normalised parameters."""

    def __init__(self, width: float = WIDTH, n_out: int = N_PARAMS):
        super().__init__()
        c = lambda n: int(n * width)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(_STEM), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(_STEM))
        self.block_names = [name for name, *_ in _BLOCKS]
        for name, c_in, c_out, stride in _BLOCKS:
            self.add_module(name, _SeparableBlock(c(c_in), c(c_out), stride))
        self.fc = nn.Linear(c(_BLOCKS[-1][2]), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))

    def load_published(self, path) -> "MobileNetV1":
        """Load the published checkpoint. Its state dict was saved from a multi-GPU wrapper (keys carry a
        ``module.`` prefix); its output layer is ``fc_param``, and ``fc_lm`` is a landmark head used only
        in training (upstream ignores it too). Only tensors are unpickled (``weights_only``)."""
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file  # noqa: BLE001
            raise RegressorFilesError(f"cannot read the 3DDFA_V2 weights {path}: {exc}") from None
        state = checkpoint.get("state_dict", checkpoint)
        state = {k.removeprefix("module.").replace("fc_param.", "fc."): v for k, v in state.items()
                 if not k.removeprefix("module.").startswith("fc_lm.")}
        try:
            self.load_state_dict(state)
        except RuntimeError as exc:
            raise RegressorFilesError(f"{path} is not the MobileNet x{WIDTH} checkpoint: "
                                      f"{' '.join(str(exc).split())[:200]}") from None
        return self.eval()


# --------------------------------------------------------------------------- ROIs and crops

def roi_from_box(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) face boxes ``x0, y0, x1, y1`` -> (N, 4) square ROIs, same frame (see ``ROI_BOX_*``).

    The side is truncated to whole pixels, as upstream's."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    mean_side = (w + h) / 2
    cx = boxes[:, 2] - w / 2
    cy = boxes[:, 3] - h / 2 + mean_side * ROI_BOX_SHIFT
    side = np.trunc(mean_side * ROI_BOX_SCALE)
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def roi_from_points(points: np.ndarray) -> np.ndarray:
    """(N, K, >=2) points -> (N, 4) square ROIs: centred on their bounding square, side its diagonal."""
    pts = np.asarray(points, np.float64)[..., :2]
    lo, hi = pts.min(1), pts.max(1)
    centre = (lo + hi) / 2
    side = np.sqrt(2.0) * (hi - lo).max(1)
    return np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], 1)


def crop_rois(image: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """(H, W, 3) image, (N, 4) ROIs in integer-centred pixels -> (N, 120, 120, 3), same dtype.

    Corners are rounded to whole pixels (half to even, as Python's ``round``); what lies outside the
    image is black. The resize is OpenCV's bilinear one on the image's own dtype (8-bit images are
    resized in 8 bits, as upstream's)."""
    h, w = image.shape[:2]
    out = np.empty((len(rois), INPUT_SIZE, INPUT_SIZE, 3), image.dtype)
    for i, roi in enumerate(np.round(np.asarray(rois, np.float64)).astype(np.int64)):
        x0, y0, x1, y1 = (int(v) for v in roi)
        canvas = np.zeros((y1 - y0, x1 - x0, 3), image.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(canvas, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return out


# --------------------------------------------------------------------------- results

@dataclass
class RegressedFaces:
    """The regressor's reading of N faces, in the photo's pixels (continuous frame).

    - ``params`` (N, 62): de-normalised: pose matrix (12, row-major 3 x 4), 40 identity, 10 expression;
    - ``rois`` (N, 4): ``x0, y0, x1, y1`` of the crop each face was read from;
    - ``points`` (N, 68, 3): iBUG 68 points (the jaw included): ``u``, ``v`` in pixels and depth ``z``
      in pixels, larger = closer to the camera, 0 at the farthest point (as upstream);
    - ``rotation`` (N, 3, 3): the pose's rotation (nearest proper rotation to the pose matrix's 3 x 3
      part), from the model frame (x toward the subject's left, y up, z out of the face) to the view
      frame (x right, y up, z toward the viewer);
    - ``scale`` (N,): photo pixels per model unit (the model is in micrometres, roughly).
    """

    params: np.ndarray
    rois: np.ndarray
    points: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) the bounding boxes ``x0, y0, x1, y1`` of the 68 points."""
        return np.concatenate([self.points[..., :2].min(1), self.points[..., :2].max(1)], 1)


class FaceRegressor:
    """3DDFA_V2's MobileNet x0.5 with its keypoint model.

    ``files``: verified :class:`~landmarks.regressor_files.RegressorFiles`, or None to find them
    (``find_regressor_files``: the environment, the cache, else a download).
    """

    def __init__(self, files: Optional[RegressorFiles] = None, device: Union[str, torch.device] = "cpu"):
        files = files if files is not None else find_regressor_files()
        self.files = files
        self.device = torch.device(device)
        self.net = MobileNetV1().load_published(files.weights).to(self.device)
        kp = files.keypoints
        self.param_mean = torch.as_tensor(kp["param_mean"], dtype=torch.float32)
        self.param_std = torch.as_tensor(kp["param_std"], dtype=torch.float32)
        self.u_base = torch.as_tensor(kp["u_base"], dtype=torch.float32)  # (68, 3)
        self.w_shp = torch.as_tensor(kp["w_shp_base"], dtype=torch.float32)  # (68, 3, 40)
        self.w_exp = torch.as_tensor(kp["w_exp_base"], dtype=torch.float32)  # (68, 3, 10)

    @torch.no_grad()
    def network(self, crops: np.ndarray) -> torch.Tensor:
        """(N, 120, 120, 3) RGB crops (uint8, or float in [0, 1]) -> (N, 62) normalised outputs (CPU)."""
        pixels = torch.as_tensor(np.ascontiguousarray(crops[..., ::-1]), dtype=torch.float32)  # RGB -> BGR
        if crops.dtype != np.uint8:
            pixels = pixels * 255.0
        x = ((pixels - PIXEL_MEAN) / PIXEL_STD).permute(0, 3, 1, 2).to(self.device)
        return self.net(x).cpu()

    def model_points(self, params: torch.Tensor) -> torch.Tensor:
        """(N, 62) de-normalised -> (N, 68, 3) the 68 points in the 120-pixel crop's frame (y up)."""
        pose = params[:, :N_POSE].reshape(-1, 3, 4)
        shape = self.u_base + torch.einsum("kcn,bn->bkc", self.w_shp, params[:, N_POSE:N_POSE + N_SHP]) \
            + torch.einsum("kcn,bn->bkc", self.w_exp, params[:, N_POSE + N_SHP:])
        return shape @ pose[:, :, :3].transpose(1, 2) + pose[:, None, :, 3]

    def from_rois(self, image: np.ndarray, rois: np.ndarray) -> RegressedFaces:
        """Read the faces in ``rois`` (N, 4) ``x0, y0, x1, y1`` (continuous pixels) of ``image``
        (H, W, 3) RGB, uint8 or float in [0, 1]."""
        return self.from_rois_of_images([image], np.asarray(rois, np.float64).reshape(1, -1, 4))

    def from_rois_of_images(self, images: Sequence[np.ndarray], rois: np.ndarray) -> RegressedFaces:
        """:meth:`from_rois` for several images in one network call: ``rois`` (I, N, 4), N faces in each of
        the I ``images`` (each (H, W, 3), their own sizes). Returns the I x N faces image by image."""
        rois = np.asarray(rois, np.float64).reshape(len(images), -1, 4)
        crops = np.concatenate([crop_rois(np.asarray(img), r - HALF_PIXEL) for img, r in zip(images, rois)])
        rois = rois.reshape(-1, 4)
        rois_int = rois - HALF_PIXEL
        out = self.network(crops)
        params = out * self.param_std + self.param_mean
        q = self.model_points(params).double().numpy()
        # The crop's frame to the photo's: upstream's one-based x and z, y up over the 120-pixel side.
        sx = (rois_int[:, 2] - rois_int[:, 0]) / INPUT_SIZE
        sy = (rois_int[:, 3] - rois_int[:, 1]) / INPUT_SIZE
        u = (q[..., 0] - 1) * sx[:, None] + rois_int[:, :1] + HALF_PIXEL
        v = (INPUT_SIZE - q[..., 1]) * sy[:, None] + rois_int[:, 1:2] + HALF_PIXEL
        z = (q[..., 2] - 1) * ((sx + sy) / 2)[:, None]
        z = z - z.min(1, keepdims=True)
        pose = params[:, :N_POSE].reshape(-1, 3, 4)[:, :, :3].double()
        uu, sig, vh = torch.linalg.svd(pose)
        fix = torch.ones_like(sig)
        fix[:, 2] = torch.sign(torch.det(uu @ vh))  # a proper rotation (det +1)
        rotation = (uu * fix[:, None]) @ vh
        scale = sig.mean(1).numpy() * (sx + sy) / 2
        return RegressedFaces(params=params.numpy(), rois=rois, points=np.stack([u, v, z], -1).astype(np.float32),
                              rotation=rotation.float().numpy(), scale=scale)

    def __call__(self, image: np.ndarray, boxes: Union[np.ndarray, Sequence[Sequence[float]]],
                 passes: int = 2) -> RegressedFaces:
        """Read the faces in ``boxes`` (N, 4) ``x0, y0, x1, y1`` (face boxes, continuous pixels).

        The first pass crops around the box (:func:`roi_from_box`); each further pass crops around
        the previous pass's 68 points (:func:`roi_from_points`), which no longer depends on how a
        detector draws its boxes (upstream's video mode does the same between frames).
        """
        return self.read_images([image], np.asarray(boxes, np.float64).reshape(1, -1, 4), passes)

    def read_images(self, images: Sequence[np.ndarray], boxes: np.ndarray, passes: int = 2) -> RegressedFaces:
        """:meth:`__call__` on ``boxes`` (I, N, 4), N faces in each of the I ``images``, every pass one batched
        network call (a video's frames: one call per pass instead of one per frame and pass). Returns the I x N
        faces image by image."""
        boxes = np.asarray(boxes, np.float64).reshape(len(images), -1, 4)
        shape = boxes.shape[:2]
        found = self.from_rois_of_images(images, (roi_from_box(boxes.reshape(-1, 4) - HALF_PIXEL)
                                                  + HALF_PIXEL).reshape(*shape, 4))
        for _ in range(passes - 1):
            found = self.from_rois_of_images(images, roi_from_points(found.points).reshape(*shape, 4))
        return found


__all__ = ["FaceRegressor", "MobileNetV1", "RegressedFaces", "N_KEYPOINTS", "roi_from_box", "roi_from_points",
           "crop_rois"]
