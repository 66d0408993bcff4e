"""DECA's expression encoder only: psi (FLAME expression, 50 numbers) from face images.

LICENCE - read before use
    DECA (github.com/yfeng95/DECA) and the FLAME model are released by the Max Planck Institute for
    Intelligent Systems under a licence for NON-COMMERCIAL scientific research, education or artistic
    use only. It forbids redistributing the code or the weights, using them to create fake, libelous,
    misleading or defamatory content, and training networks for commercial use. This module contains NO
    DECA code and NO weights: it is an independent PyTorch implementation of the encoder's architecture
    (a ResNet-50 and two linear layers) whose parameter names match DECA's checkpoint so that a user who
    obtained ``deca_model.tar`` from DECA under its licence can load it. Expression vectors computed with
    those weights, and anything trained on them, fall under the same non-commercial terms.

What is loaded
    Only the ``E_flame`` entry of ``deca_model.tar`` (DECA's coarse encoder ``ResnetEncoder(outsize=236)``),
    with ``torch.load(..., weights_only=True)``. Its 236 outputs are [shape 100, tex 50, exp 50, pose 6,
    cam 3, light 27]; psi = outputs[:, 150:200]. Jaw opening is in pose[3:6], not in psi.

Input preprocessing (from DECA's decalib/datasets/datasets.py TestData with its defaults)
    1. the bounding box of the 68 landmarks (left, right, top, bottom);
    2. old_size = (right - left + bottom - top) / 2 * 1.1, centre = box centre  (``bbox2point``, 'kpt68');
    3. size = int(old_size * 1.25)  (``scale=1.25``);
    4. a similarity transform maps the square [centre - size/2, centre + size/2] to [0, 223] (crop 224),
       sampled bilinearly with a black (zero) border, as skimage's ``warp``;
    5. RGB scaled to [0, 1]; no mean/std normalisation; tensor [N, 3, 224, 224].
    DECA's coordinates put pixel centres at integers; this project's continuous coordinates are shifted by
    0.5 before the crop. DECA found its landmarks with face-alignment's FAN; dlib landmarks give a
    slightly different box (dlib's jaw line differs a little), so psi from dlib-cropped faces is close to,
    not identical with, DECA's own pipeline.
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn

DECA_INPUT_SIZE = 224
DECA_KPT_BOX_SCALE = 1.1       # bbox2point(type='kpt68')
DECA_CROP_SCALE = 1.25         # TestData(scale=1.25)
DECA_PARAM_SIZES = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
DECA_NUM_PARAMS = sum(n for _, n in DECA_PARAM_SIZES)   # 236
PSI_SLICE = slice(150, 200)
FEATURE_SIZE = 2048


class DecaWeightsError(ValueError):
    """A DECA weight file that is missing, unsafe to load, or not DECA's encoder."""


# --------------------------------------------------------------------------- network (own implementation)
class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1 reduce, 3x3 with the stride, 1x1 expand x4) with an optional projection
    shortcut named ``downsample`` (conv, batch norm), matching the usual ResNet parameter names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50Features(nn.Module):
    """ResNet-50 trunk without the classifier: [N, 3, 224, 224] -> globally averaged features [N, 2048]."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(channels, width, stride=2 if (j == 0 and i > 0) else 1))
                channels = width * Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features [N, 2048] (mean over the final 7x7 map, i.e. DECA's AvgPool2d(7) at 224 px)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


class DecaFlameEncoder(nn.Module):
    """DECA's coarse encoder architecture: ResNet-50 features -> Linear(2048, 1024) -> ReLU ->
    Linear(1024, 236). Parameter names: ``encoder.*`` and ``layers.0.*`` / ``layers.2.*``."""

    def __init__(self, outsize: int = DECA_NUM_PARAMS):
        super().__init__()
        self.encoder = ResNet50Features()
        self.layers = nn.Sequential(nn.Linear(FEATURE_SIZE, 1024), nn.ReLU(), nn.Linear(1024, outsize))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, 224, 224] RGB in [0, 1] -> parameters [N, 236]."""
        return self.layers(self.encoder(images))


def split_params(params: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Split DECA's [N, 236] parameters into shape, tex, exp, pose, cam, light (light as [N, 9, 3])."""
    out, start = {}, 0
    for name, n in DECA_PARAM_SIZES:
        out[name] = params[:, start:start + n]
        start += n
    out["light"] = out["light"].reshape(params.shape[0], 9, 3)
    return out


# --------------------------------------------------------------------------- loading
def _load_checkpoint(path: str):
    kwargs = dict(map_location="cpu", weights_only=True)
    try:
        try:
            return torch.load(path, mmap=True, **kwargs)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, **kwargs)   # legacy (non-zip) torch files cannot be memory-mapped
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg or "weights_only" in msg:
            raise DecaWeightsError(
                f"{path} cannot be loaded safely: it contains pickled Python objects, not only tensors, and this "
                "project never unpickles code (torch.load weights_only=True). Use DECA's original deca_model.tar, or "
                "re-save the encoder weights as torch.save({'E_flame': state_dict}, path)") from None
        raise DecaWeightsError(f"{path} is not a PyTorch checkpoint ({msg.splitlines()[0] if msg else exc!r}); "
                               "point to DECA's deca_model.tar") from None
    except Exception as exc:  # torch raises many types for non-checkpoints (KeyError, RuntimeError, EOFError...)
        raise DecaWeightsError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); the file may be truncated: download "
                               "DECA's deca_model.tar again") from None


def _normalise_state_dict(sd, path: str) -> Dict[str, torch.Tensor]:
    if not isinstance(sd, dict):
        raise DecaWeightsError(f"{path}: 'E_flame' is a {type(sd).__name__}, not a state dict; this is not DECA's "
                               "deca_model.tar")
    out = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise DecaWeightsError(f"{path}: E_flame entry {key!r} is a {type(value).__name__}, not a tensor")
        k = str(key)
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = value
    return out


def load_deca_encoder(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> DecaFlameEncoder:
    """Build `DecaFlameEncoder` and load ONLY the ``E_flame`` entry of a user-supplied ``deca_model.tar``
    (torch.load with weights_only=True). Raises DecaWeightsError with the cause and the fix for: a missing
    file, a file that needs code to unpickle, a non-checkpoint, no ``E_flame`` key, missing/unexpected
    parameters, or mismatched shapes (the first mismatch is named)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecaWeightsError(
            f"DECA weights not found at {path}. deca_model.tar is not shipped with this project (DECA's licence "
            "forbids redistribution): get it from DECA (github.com/yfeng95/DECA, see its README / fetch_data.sh; "
            "non-commercial licence) and pass its path")
    if os.path.getsize(path) == 0:
        raise DecaWeightsError(f"{path} is empty (0 bytes); download DECA's deca_model.tar again")
    ckpt = _load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise DecaWeightsError(f"{path} holds a {type(ckpt).__name__}, not DECA's checkpoint dict "
                               "{'E_flame', 'E_detail', 'D_detail'}; point to deca_model.tar")
    if "E_flame" not in ckpt:
        keys = ", ".join(sorted(map(str, ckpt.keys()))[:6])
        raise DecaWeightsError(
            f"{path} has no 'E_flame' entry (found: {keys or 'nothing'}); this is not DECA's deca_model.tar. If it is a "
            "bare encoder state dict, wrap it: torch.save({'E_flame': state_dict}, 'deca_model.tar')")
    sd = _normalise_state_dict(ckpt["E_flame"], path)
    model = DecaFlameEncoder()
    expected = model.state_dict()
    for key, value in sd.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise DecaWeightsError(
                f"{path}: E_flame parameter {key!r} has shape {tuple(value.shape)}, DECA's encoder needs "
                f"{tuple(expected[key].shape)}; the file is from a different model (e.g. EMOCA or a changed DECA "
                "config), use DECA's deca_model.tar")
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]!r})")
        raise DecaWeightsError(f"{path}: E_flame does not match DECA's encoder: {', '.join(parts)} parameters; "
                               "use DECA's deca_model.tar")
    for key, value in expected.items():
        if key not in sd:
            sd[key] = value      # num_batches_tracked only
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------- preprocessing
def deca_crop_matrix(landmarks, crop_size: int = DECA_INPUT_SIZE) -> np.ndarray:
    """2x3 affine (OpenCV convention: pixel centres at integers) from the image to DECA's crop, computed from
    68 landmarks in this project's continuous coordinates (see the module docstring)."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2] - 0.5
    left, right = lm[:, 0].min(), lm[:, 0].max()
    top, bottom = lm[:, 1].min(), lm[:, 1].max()
    old_size = (right - left + bottom - top) / 2.0 * DECA_KPT_BOX_SCALE
    cx, cy = right - (right - left) / 2.0, bottom - (bottom - top) / 2.0
    size = int(old_size * DECA_CROP_SCALE)
    if size < 1:
        raise ValueError("degenerate landmarks: the face box is empty")
    k = (crop_size - 1) / float(size)
    return np.array([[k, 0.0, -k * (cx - size / 2.0)], [0.0, k, -k * (cy - size / 2.0)]])


def deca_crop(image, landmarks, crop_size: int = DECA_INPUT_SIZE) -> np.ndarray:
    """DECA's input crop of one image: float32 [crop_size, crop_size, 3] RGB in [0, 1], black outside."""
    from .faces import to_rgb_uint8

    img = to_rgb_uint8(image)
    m = deca_crop_matrix(landmarks, crop_size)
    crop = cv2.warpAffine(img, m, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return crop.astype(np.float32) / 255.0


class DecaExpressionEncoder:
    """psi [N, 50] from face images with DECA's coarse encoder (user-supplied weights; see the licence in the
    module docstring).

    ``encode(images, landmarks)``: images [H, W, 3] or [N, H, W, 3] (or a list; uint8 or float 0..1, any
    size, e.g. full video frames or aligned crops) and their 68 landmarks [68, 2] / [N, 68, 2] in continuous
    pixel coordinates; each face is cropped like DECA does and encoded in batches of ``batch_size``.
    """

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 batch_size: int = 8):
        self.path = os.fspath(path)
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.model = load_deca_encoder(self.path, self.device)

    @torch.inference_mode()
    def encode_crops(self, crops) -> torch.Tensor:
        """DECA's 236 parameters for crops already preprocessed: [N, 3, 224, 224] or [N, 224, 224, 3] in
        [0, 1] (torch or numpy). Returns float32 [N, 236] on the CPU."""
        x = torch.as_tensor(np.asarray(crops) if not isinstance(crops, torch.Tensor) else crops, dtype=torch.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, DECA_INPUT_SIZE, DECA_INPUT_SIZE):
            raise ValueError(f"DECA needs crops [N, 3, {DECA_INPUT_SIZE}, {DECA_INPUT_SIZE}], got {tuple(x.shape)}")
        outs = [self.model(x[i:i + self.batch_size].to(self.device)).float().cpu()
                for i in range(0, len(x), self.batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, DECA_NUM_PARAMS)

    def encode_params(self, images, landmarks) -> np.ndarray:
        """All 236 DECA parameters [N, 236] (float32) for images + landmarks (see the class docstring)."""
        imgs, lms = _as_batch(images, landmarks)
        out: List[torch.Tensor] = []
        for i in range(0, len(imgs), self.batch_size):
            crops = np.stack([deca_crop(im, lm) for im, lm in zip(imgs[i:i + self.batch_size],
                                                                   lms[i:i + self.batch_size])])
            out.append(self.encode_crops(crops.transpose(0, 3, 1, 2)))
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, DECA_NUM_PARAMS), np.float32)

    def encode(self, images, landmarks) -> np.ndarray:
        """psi [N, 50] float32 (FLAME expression; DECA's params[:, 150:200])."""
        return np.ascontiguousarray(self.encode_params(images, landmarks)[:, PSI_SLICE])


def _as_batch(images, landmarks) -> Tuple[list, np.ndarray]:
    lms = np.asarray(landmarks, dtype=np.float64)
    if lms.ndim == 2:
        lms = lms[None]
    if lms.ndim != 3 or lms.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be [68, 2] or [N, 68, 2], got {lms.shape}")
    if isinstance(images, (list, tuple)):
        imgs = list(images)
    else:
        arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        imgs = [arr] if arr.ndim in (2, 3) else list(arr)
    if len(imgs) != len(lms):
        raise ValueError(f"{len(imgs)} images but {len(lms)} landmark sets")
    return imgs, lms
