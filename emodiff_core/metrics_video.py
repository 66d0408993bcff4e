"""Metrics of generated VIDEOS (section 4.3 of the paper), built on the per-signal metrics of `metrics`.

Every function takes plain tensors/arrays and never downloads anything; the networks some metrics need
(LPIPS, Inception, I3D, DECA, dlib's face descriptor) are loaded only from files the user supplies (or,
for dlib, from the installed face_recognition_models package), with ``torch.load(weights_only=True)`` or
safetensors. A missing file raises `MetricWeightsError`, which says which file is needed and where.

Frames are [N, 3, H, W] float in [0, 1] (torch or numpy), [N, 1, 3, H, W] (what
`pipeline.generate_frames` returns for one video), or uint8 [N, H, W, 3].

Metrics and their formulas
    psi from frames (`PsiExtractor`)
        psi_n = R(frame_n): the corpus' `ExpressionRegressor` R, or DECA's encoder when a DECA file is given
        (`PsiExtractor.from_files`).
    FLIE of generated videos (`video_flie`, `flie_from_videos`)
        For one identity, one audio and one emotion y, videos at intensities k_i = i / L, i = 0..L (Eq. 14:
        e_n + k_i (e_y - e_n), the same generator noise for every level); psi regressed from every frame;
        m_i = mean over frames of psi at level i; FLIE = `metrics.flie`([m_0 .. m_L]) = sum_j sigma_i(d_ij) /
        |mu_i(d_ij)| with d_ij = m_ij - m_(i-1)j (dimensions that barely move are left out, see `metrics.flie`).
    LIE (`lie`, `LPIPS`)
        LIE = mean over i = 1..L and frames n of LPIPS(video_i[n], video_(i-1)[n]), the perceptual distance
        between frames of adjacent intensity levels. LPIPS(x, y) = sum_l mean_hw w_l . (f_l(x) - f_l(y))^2
        with f_l the channel-unit-normalised activations of AlexNet/VGG16 layer l and w_l the learned
        non-negative per-channel weights (the official ``lin0..lin4``). The standard deviation of the
        adjacent distances and their coefficient of variation are returned too (a linear edit has equal
        perceptual steps, so a small CV is the other reading of "linearity").
    Emotion accuracy (`video_emotion_accuracy`)
        psi regressed from frames -> non-overlapping windows of ``window`` frames -> `metrics.EmotionClassifier`
        (fit on the training split's corpus psi, e.g. `training.evaluate.fit_emotion_classifier`) -> share of
        windows classified as the emotion asked for.
    Lip sync (`video_lip_sync`)
        `metrics.lip_sync`(mouth opening, `metrics.audio_envelope`(speech)): Pearson correlation of the two
        per-frame signals at offsets -max_offset..max_offset. The mouth opening is the inner-lip gap of 68
        landmarks (`metrics.mouth_opening_from_landmarks`) when a landmark backend finds the face in the
        frames, psi[:, 0] (jaw_open on the corpus' scale) from a `PsiExtractor` otherwise.
    Identity (`identity_similarity`, `FaceDescriptor`)
        cos(d(reference), d(frame_n)) averaged over frames, d = dlib's 128-d face descriptor
        (dlib_face_recognition_resnet_model_v1.dat of face_recognition_models).
    FID / FVD (`frechet_distance`, `fid`, `fvd`)
        d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussians fitted to two feature
        sets: Inception-v3 pool features of frames (FID) or I3D features of clips (FVD). The networks
        (`InceptionV3Features`, `I3DFeatures`) load only from user-supplied weights.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .metrics import EmotionClassifier, FlieResult, LipSync, audio_envelope, flie, lip_sync, mouth_opening_from_landmarks

PathLike = Union[str, os.PathLike]


class MetricWeightsError(ValueError):
    """A metric needs a network whose weights were not supplied or cannot be used (says which and what to do)."""


class MetricInputError(ValueError):
    """Bad input to a video metric (shapes, too few frames, no face ...), with what to do about it."""


# --------------------------------------------------------------------------- frames
def frames_to_tensor(frames) -> torch.Tensor:
    """Normalise frames to float32 [N, 3, H, W] in [0, 1] on the CPU.

    Accepts [N, 3, H, W] / [N, 1, 3, H, W] / [3, H, W] float in [0, 1] (torch or numpy; the pipeline's output)
    and uint8 [N, H, W, 3] / [H, W, 3] arrays.
    """
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames]) if not torch.is_tensor(frames[0]) else torch.stack(list(frames))
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
            if x.dim() == 3:
                x = x[None]
            if x.dim() != 4 or x.shape[-1] != 3:
                raise MetricInputError(f"uint8 frames must be [N, H, W, 3], got {tuple(frames.shape)}")
            return x.permute(0, 3, 1, 2).contiguous()
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not torch.is_tensor(frames):
        raise MetricInputError(f"frames must be a tensor or an array, got {type(frames).__name__}")
    x = frames.detach().float().cpu()
    if x.dim() == 5 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise MetricInputError(f"frames must be [N, 3, H, W] (or [N, 1, 3, H, W]) in [0, 1], got {tuple(frames.shape)}; "
                               "for several videos call the metric once per video")
    return x


def frames_to_uint8(frames) -> np.ndarray:
    """Frames (anything `frames_to_tensor` accepts) as uint8 [N, H, W, 3]."""
    x = frames_to_tensor(frames)
    return (x.clamp(0, 1) * 255.0 + 0.5).byte().permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- weight files
def load_weight_file(path: Optional[PathLike], what: str, hint: str = "") -> Dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file loaded with ``weights_only=True`` (no pickled code).

    Nested dicts ({"state_dict": {...}}, {"model": {...}}) are unwrapped. Raises MetricWeightsError when
    ``path`` is None, missing, or not a plain tensor file; ``what`` and ``hint`` go into the message.
    """
    if path is None or str(path) == "":
        raise MetricWeightsError(f"{what}: no weight file given. {hint}".strip())
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MetricWeightsError(f"{what}: weight file {path} does not exist. {hint}".strip())
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(path, device="cpu"))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
            raise MetricWeightsError(f"{what}: cannot read {path} as safetensors ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise MetricWeightsError(
            f"{what}: {os.path.basename(path)} cannot be loaded with torch.load(weights_only=True) ({str(exc)[:200]}). "
            "Only plain tensor state dicts are accepted (pickled code is never run); re-save it with "
            "torch.save(model.state_dict(), path) or as .safetensors") from None
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = [obj[k] for k in ("state_dict", "model", "net", "params") if isinstance(obj.get(k), Mapping)]
            if not inner:
                break
            obj = inner[0]
    if not isinstance(obj, Mapping) or not any(torch.is_tensor(v) for v in obj.values()):
        raise MetricWeightsError(f"{what}: {os.path.basename(path)} does not hold a state dict of tensors")
    return {str(k): v for k, v in obj.items() if torch.is_tensor(v)}


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, path: PathLike) -> None:
    """Copy ``state`` into ``module``: every parameter and buffer must be present with the right shape
    (``num_batches_tracked`` may be absent); extra keys are ignored. Names the first mismatch."""
    own = module.state_dict()
    for key, value in own.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise MetricWeightsError(f"{what}: {os.path.basename(str(path))} lacks {key!r} (expected {tuple(value.shape)}); "
                                     "it is not a weight file for this network")
        if tuple(state[key].shape) != tuple(value.shape):
            raise MetricWeightsError(f"{what}: {os.path.basename(str(path))} has {key!r} of shape {tuple(state[key].shape)}, "
                                     f"expected {tuple(value.shape)}; it is a weight file for another network variant")
    module.load_state_dict({k: state[k].to(own[k].dtype) for k in own if k in state}, strict=False)


# --------------------------------------------------------------------------- psi from frames
class PsiExtractor:
    """psi [N, 50] from frames, with the corpus' `ExpressionRegressor` or DECA's encoder.

    :param regressor: an ``ExpressionRegressor`` (input [-1, 1], resizes itself), or None.
    :param deca: a ``deca.DecaExpressionEncoder`` (used instead of the regressor when given), or None.
    :param landmark_backend: for DECA only: the backend whose landmarks place DECA's crop; when None (or
        when it finds no face) the frames are taken to be aligned crops (nose tip at the centre, the
        training alignment) and the canonical template gives the landmarks.
    """

    def __init__(self, regressor: Optional[nn.Module] = None, deca=None, landmark_backend=None, batch_size: int = 64):
        if regressor is None and deca is None:
            raise MetricWeightsError("psi from frames needs the expression regressor (a checkpoint with a 'regressor' "
                                     "component, trained with `python -m training train regressor`) or DECA's "
                                     "deca_model.tar; pass one of them")
        self.regressor = regressor.eval() if regressor is not None else None
        self.deca = deca
        self.landmark_backend = landmark_backend
        self.batch_size = max(1, int(batch_size))

    @property
    def source(self) -> str:
        """'deca' or 'regressor'."""
        return "deca" if self.deca is not None else "regressor"

    @classmethod
    def from_files(cls, regressor_path: Optional[PathLike] = None, deca_path: Optional[PathLike] = None,
                   device="cpu", landmark_backend=None) -> "PsiExtractor":
        """Load the regressor from an EMOdiffhead checkpoint holding a 'regressor' component, or DECA's encoder
        from deca_model.tar (user-supplied; non-commercial licence, see `deca`). DECA wins when both are given."""
        if deca_path:
            from .deca import DecaExpressionEncoder

            return cls(deca=DecaExpressionEncoder(deca_path, device=device), landmark_backend=landmark_backend)
        if regressor_path:
            from .checkpoint import load_components, read_checkpoint

            if "regressor" not in read_checkpoint(os.fspath(regressor_path)).components:
                raise MetricWeightsError(f"{os.path.basename(os.fspath(regressor_path))} holds no 'regressor' component; "
                                         "pass a checkpoint exported from `python -m training train regressor`")
            return cls(load_components(os.fspath(regressor_path), ["regressor"], device=device)["regressor"])
        return cls()   # raises the explanation

    @torch.no_grad()
    def __call__(self, frames) -> np.ndarray:
        """psi [N, D] float32 for frames (anything `frames_to_tensor` accepts)."""
        x = frames_to_tensor(frames)
        if self.deca is not None:
            return self._deca(x)
        device = next(self.regressor.parameters()).device
        out = [self.regressor(x[i:i + self.batch_size].to(device) * 2.0 - 1.0).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy().astype(np.float32)

    def _deca(self, x: torch.Tensor) -> np.ndarray:
        from .faces import template_landmarks

        images = frames_to_uint8(x)
        landmarks = []
        for img in images:
            lm = None
            if self.landmark_backend is not None:
                dets = self.landmark_backend.detect(img)
                lm = dets[0].landmarks if dets else None
            landmarks.append(lm if lm is not None else template_landmarks(img.shape))
        return self.deca.encode(list(images), np.stack(landmarks))


# --------------------------------------------------------------------------- FLIE of generated videos
@dataclass
class VideoFlie:
    """FLIE of videos at increasing intensity, with what it was computed from."""

    result: FlieResult                 # flie, per_dimension, kept, steps (see metrics.flie)
    intensities: np.ndarray            # k of each level, [L + 1]
    mean_psi: np.ndarray               # [L + 1, D] mean psi per level (after ``dims`` selection)
    dims: Optional[List[int]] = None   # the psi dimensions used (None = all)

    @property
    def flie(self) -> float:
        return self.result.flie


def flie_from_psi(psi_per_level: Sequence[np.ndarray], dims: Optional[Sequence[int]] = None,
                  intensities: Optional[Sequence[float]] = None, relative_floor: float = 0.01) -> VideoFlie:
    """FLIE from per-frame psi of each intensity level ([N_i, D] each, level 0 = neutral first).

    m_i = mean over frames of psi at level i (restricted to ``dims`` when given), then `metrics.flie`.
    """
    if len(psi_per_level) < 3:
        raise MetricInputError(f"FLIE needs videos at 3 or more intensity levels (neutral + 2), got {len(psi_per_level)}")
    means = []
    for i, psi in enumerate(psi_per_level):
        p = np.asarray(psi, np.float64)
        if p.ndim != 2 or len(p) == 0:
            raise MetricInputError(f"psi of level {i} must be a non-empty [frames, dims] array, got shape {p.shape}")
        means.append(p.mean(axis=0))
    m = np.stack(means)
    if dims is not None:
        m = m[:, list(dims)]
    ks = np.asarray(intensities if intensities is not None else np.linspace(0.0, 1.0, len(m)), np.float64)
    return VideoFlie(flie(m, relative_floor=relative_floor), ks, m, None if dims is None else [int(d) for d in dims])


def flie_from_videos(videos_per_level: Sequence, extractor: Callable[[object], np.ndarray],
                     dims: Optional[Sequence[int]] = None, intensities: Optional[Sequence[float]] = None) -> VideoFlie:
    """FLIE of videos at increasing intensity (level 0 = k 0 first): psi = ``extractor(frames)`` per video."""
    return flie_from_psi([extractor(v) for v in videos_per_level], dims=dims, intensities=intensities)


def intensity_levels(levels: int) -> np.ndarray:
    """k_i = i / L for i = 0..L (``levels`` = L >= 2)."""
    if int(levels) < 2:
        raise MetricInputError("use at least 2 intensity levels above neutral (L >= 2)")
    return np.linspace(0.0, 1.0, int(levels) + 1)


@torch.no_grad()
def generate_intensity_videos(denoiser, generator, identity: torch.Tensor, audio, emotion: str, levels: int, *,
                              spacing="ddim10", sampler: str = "ddim", seed: int = 0, expression_seed: int = 0,
                              start_noise: Optional[float] = None,
                              cache_reference: bool = True, device=None) -> List[torch.Tensor]:
    """Videos [N, 3, S, S] of one identity speaking ``audio`` with ``emotion`` at k = 0, 1/L, .., 1.

    The expression conditions follow Eq. 14 with the same generator noise (``expression_seed``) at every
    level, and every video is sampled with the same ``seed`` (common random numbers), so the videos differ
    only by the intensity. ``start_noise`` None = the pipeline's default.
    """
    from .pipeline import DEFAULT_START_NOISE, EmotionSpec, emotion_expressions, generate_frames

    start_noise = DEFAULT_START_NOISE if start_noise is None else start_noise
    videos = []
    for k in intensity_levels(levels):
        psi = emotion_expressions(generator, audio.num_frames, EmotionSpec(emotion, float(k)), fps=audio.fps,
                                  seed=expression_seed)
        frames = generate_frames(denoiser, identity, audio, psi, spacing=spacing, sampler=sampler, seed=seed,
                                 cache_reference=cache_reference, device=device, start_noise=start_noise)
        videos.append(frames[:, 0])
    return videos


def video_flie(denoiser, generator, identity: torch.Tensor, audio, emotion: str, extractor: Callable,
               levels: int = 15, dims: Optional[Sequence[int]] = None, **generation) -> Tuple[VideoFlie, List[torch.Tensor]]:
    """Generate the intensity videos (`generate_intensity_videos`, keyword arguments go there) and compute
    their FLIE with psi from ``extractor`` (a `PsiExtractor`). Returns (VideoFlie, videos)."""
    videos = generate_intensity_videos(denoiser, generator, identity, audio, emotion, levels, **generation)
    return flie_from_videos(videos, extractor, dims=dims, intensities=intensity_levels(levels)), videos


# --------------------------------------------------------------------------- LPIPS and LIE
# Backbone layer lists in torchvision's order, so that a torchvision state dict (``features.N.weight``)
# loads as it is. Each entry: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride).
_ALEXNET_LAYERS = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
                   ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
                   ("conv", 192, 384, 3, 1, 1), ("relu",),
                   ("conv", 384, 256, 3, 1, 1), ("relu",),
                   ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2)]
_ALEXNET_TAPS = (1, 4, 7, 9, 11)                 # relu1 .. relu5


def _vgg16_layers() -> List[tuple]:
    layers: List[tuple] = []
    prev = 3
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            layers += [("conv", prev, width, 3, 1, 1), ("relu",)]
            prev = width
        layers.append(("pool", 2, 2))
    return layers


_VGG16_LAYERS = _vgg16_layers()
_VGG16_TAPS = (3, 8, 15, 22, 29)                 # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_BACKBONES = {"alex": (_ALEXNET_LAYERS, _ALEXNET_TAPS), "vgg": (_VGG16_LAYERS, _VGG16_TAPS)}
LPIPS_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
# LPIPS' input scaling (x in [-1, 1]): (x - shift) / scale, per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class BackboneFeatures(nn.Module):
    """AlexNet or VGG16 ``features`` stack (torchvision key names ``features.N.weight``) returning the
    activations LPIPS compares (after the ReLUs listed in LPIPS_BACKBONES)."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise MetricWeightsError(f"unknown LPIPS backbone {net!r}; choose 'alex' or 'vgg'")
        layers, self.taps = LPIPS_BACKBONES[net]
        mods: List[nn.Module] = []
        for spec in layers:
            if spec[0] == "conv":
                mods.append(nn.Conv2d(spec[1], spec[2], spec[3], stride=spec[4], padding=spec[5]))
            elif spec[0] == "relu":
                mods.append(nn.ReLU(inplace=False))
            else:
                mods.append(nn.MaxPool2d(spec[1], spec[2]))
        self.features = nn.Sequential(*mods[: max(self.taps) + 1])
        self.net = net

    @property
    def channels(self) -> List[int]:
        """Channels of each tapped activation."""
        out, ch = [], 3
        for i, m in enumerate(self.features):
            if isinstance(m, nn.Conv2d):
                ch = m.out_channels
            if i in self.taps:
                out.append(ch)
        return out

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.taps:
                feats.append(x)
        return feats


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018), LPIPS v0.1 ("lin" variant).

    d(x, y) = sum_l mean_{h,w} sum_c w_lc (u_l(x) - u_l(y))_chw^2, where u_l is the layer-l activation divided
    by its L2 norm over channels (+1e-10) and w_lc >= 0 the learned weights (official ``lin{l}.model.1.weight``,
    [1, C_l, 1, 1]). Inputs are images in [0, 1] (mapped to [-1, 1], then LPIPS' per-channel scaling).
    Build it with `load_lpips`; this class alone has random backbone weights.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.backbone = BackboneFeatures(net)
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in self.backbone.channels])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances [N] between image batches x, y: [N, 3, H, W] in [0, 1]."""
        if x.shape != y.shape:
            raise MetricInputError(f"LPIPS compares images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.backbone(((x * 2 - 1) - self.shift) / self.scale)
        fy = self.backbone(((y * 2 - 1) - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], device=x.device)
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


LPIPS_HINT = ("LPIPS needs two files you supply: the official linear-layer weights (lpips' weights/v0.1/alex.pth or "
              "vgg.pth: keys lin0.model.1.weight .. lin4.model.1.weight) and the backbone's ImageNet weights "
              "(torchvision's AlexNet or VGG16 state dict: keys features.N.weight). Nothing is downloaded.")


def _lin_index(key: str) -> Optional[int]:
    m = re.fullmatch(r"(?:module\.)?(?:net\.)?lins?\.?(\d)\.(?:model\.1\.)?weight", key)
    return int(m.group(1)) if m else None


def load_lpips(lin_weights: Optional[PathLike], backbone_weights: Optional[PathLike], net: Optional[str] = None,
               device="cpu") -> LPIPS:
    """LPIPS from user-supplied files (see LPIPS_HINT); ``net`` ('alex' | 'vgg') is read from the linear
    weights' channel counts when None. Both files are loaded with weights_only=True or as safetensors."""
    lin_state = load_weight_file(lin_weights, "LPIPS linear layers", LPIPS_HINT)
    lins: Dict[int, torch.Tensor] = {}
    for key, value in lin_state.items():
        idx = _lin_index(key)
        if idx is not None:
            lins[idx] = value
    if sorted(lins) != [0, 1, 2, 3, 4]:
        raise MetricWeightsError(f"LPIPS linear layers: {os.path.basename(os.fspath(lin_weights))} must hold lin0..lin4 "
                                 f"weights (keys like lin0.model.1.weight), found {sorted(lins) or 'none'}. {LPIPS_HINT}")
    channels = [int(lins[i].shape[1]) for i in range(5)]
    inferred = {tuple(c): n for n, c in LPIPS_CHANNELS.items()}.get(tuple(channels))
    if inferred is None:
        raise MetricWeightsError(f"LPIPS linear layers have channels {channels}, which match neither AlexNet "
                                 "[64, 192, 384, 256, 256] nor VGG16 [64, 128, 256, 512, 512] (SqueezeNet is not supported)")
    if net is not None and net != inferred:
        raise MetricWeightsError(f"the LPIPS linear weights are for {inferred!r}, but net={net!r} was asked for")
    model = LPIPS(inferred)
    for i, lin in enumerate(model.lins):
        w = lins[i].float().reshape(lin.weight.shape)
        lin.weight.data.copy_(w)
    backbone_state = load_weight_file(backbone_weights, f"LPIPS backbone ({inferred})", LPIPS_HINT)
    if not any(k.startswith("features.") for k in backbone_state):
        backbone_state = {f"features.{k}": v for k, v in backbone_state.items() if re.match(r"\d+\.", k)}
    _load_strict(model.backbone, backbone_state, f"LPIPS backbone ({inferred})", backbone_weights)
    return model.eval().to(device)


@torch.no_grad()
def lpips_distance(model: LPIPS, a, b, batch_size: int = 32) -> np.ndarray:
    """Per-frame LPIPS distances [N] between two equally long frame sequences (any `frames_to_tensor` input)."""
    x, y = frames_to_tensor(a), frames_to_tensor(b)
    if x.shape != y.shape:
        raise MetricInputError(f"the two videos must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    device = model.shift.device
    out = [model(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


@dataclass
class LieResult:
    """LIE: the mean LPIPS distance between frames of adjacent intensity levels (lower = smaller steps)."""

    lie: float                 # mean over levels and frames
    per_step: np.ndarray       # [L] mean distance between level i and i-1
    std: float                 # standard deviation of per_step
    cv: float                  # std / mean of per_step (0 for perfectly even perceptual steps)


def lie(videos_per_level: Sequence, model: Optional[LPIPS]) -> LieResult:
    """LIE of videos at increasing intensity (level 0 first, equal lengths): mean over i = 1..L and frames n of
    LPIPS(video_i[n], video_(i-1)[n]). ``model`` comes from `load_lpips` (required: there is no default)."""
    if model is None:
        raise MetricWeightsError(f"LIE needs LPIPS. {LPIPS_HINT} Load it with load_lpips(lin_path, backbone_path)")
    if len(videos_per_level) < 2:
        raise MetricInputError("LIE needs videos at 2 or more intensity levels")
    steps = np.array([lpips_distance(model, videos_per_level[i], videos_per_level[i - 1]).mean()
                      for i in range(1, len(videos_per_level))])
    mean = float(steps.mean())
    std = float(steps.std())
    return LieResult(mean, steps, std, std / mean if mean > 0 else 0.0)


# --------------------------------------------------------------------------- emotion accuracy
def psi_windows(psi: np.ndarray, window: int) -> np.ndarray:
    """Non-overlapping windows [M, window, D] of a psi sequence [N, D]; the whole sequence ([1, N, D]) when
    it is shorter than ``window`` (the classifier uses the window's time mean, so any length works)."""
    p = np.asarray(psi, np.float32)
    if p.ndim != 2 or len(p) == 0:
        raise MetricInputError(f"psi must be a non-empty [frames, dims] array, got shape {p.shape}")
    if len(p) < window:
        return p[None]
    m = len(p) // window
    return p[: m * window].reshape(m, window, p.shape[1])


@dataclass
class EmotionAccuracy:
    accuracy: float                     # share of windows assigned the asked-for emotion
    per_emotion: Dict[str, float]       # accuracy per asked-for emotion
    windows: int


def video_emotion_accuracy(psi_per_video: Sequence[np.ndarray], labels: Sequence[Union[str, int]],
                           classifier: EmotionClassifier, window: int = 48) -> EmotionAccuracy:
    """Emotion accuracy of generated videos: psi regressed from each video's frames ([N, D] each, e.g.
    from a `PsiExtractor`) -> windows of ``window`` frames -> ``classifier`` (a `metrics.EmotionClassifier`
    fit on the training split's corpus psi) -> share of windows classified as the video's label."""
    from .emotions import EMOTIONS, emotion_index

    if len(psi_per_video) != len(labels) or not labels:
        raise MetricInputError("give one label per video (and at least one video)")
    xs, ys = [], []
    for psi, label in zip(psi_per_video, labels):
        w = psi_windows(psi, window)
        xs.append(w)   # classified video by video: short videos give windows of their own length
        ys += [emotion_index(label) if isinstance(label, str) else int(label)] * len(w)
    correct = []
    with torch.no_grad():
        for w in xs:
            correct.append(classifier(torch.from_numpy(w)).argmax(1).numpy())
    pred = np.concatenate(correct)
    y = np.array(ys)
    per = {EMOTIONS[j]: float((pred[y == j] == j).mean()) for j in sorted(set(ys))}
    return EmotionAccuracy(float((pred == y).mean()), per, int(len(y)))


# --------------------------------------------------------------------------- lip sync
@dataclass
class VideoLipSync:
    """`metrics.LipSync` of a video plus where its mouth signal came from."""

    sync: LipSync
    source: str                 # "landmarks" or "psi"
    mouth: np.ndarray           # the per-frame mouth-opening signal used
    envelope: np.ndarray        # the per-frame audio envelope

    @property
    def correlation(self) -> float:
        return self.sync.correlation


def mouth_opening_from_frames(frames, extractor: Optional[Callable] = None, landmark_backend=None,
                              detect_size: int = 256, min_detected: float = 0.9) -> Tuple[np.ndarray, str]:
    """Per-frame mouth opening of a video and its source ('landmarks' or 'psi').

    With a landmark backend the frames are upscaled to ``detect_size`` (small generated crops are below
    the detectors' face size) and the inner-lip gap is measured (`metrics.mouth_opening_from_landmarks`);
    frames where no face is found are filled by linear interpolation. When faces are found in fewer than
    ``min_detected`` of the frames (or there is no backend), psi[:, 0] (jaw_open on the corpus' scale) from
    ``extractor`` is used (the corpus' regressor only: DECA's psi[:, 0] is not the jaw).
    """
    import cv2

    images = frames_to_uint8(frames)
    if landmark_backend is not None:
        h, w = images.shape[1:3]
        scale = max(1.0, detect_size / max(h, w))
        lms, found = [], []
        for img in images:
            big = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC) \
                if scale > 1 else img
            dets = landmark_backend.detect(big)
            found.append(bool(dets))
            lms.append(dets[0].landmarks if dets else np.zeros((68, 2), np.float32))
        found_arr = np.array(found)
        if found_arr.mean() >= min_detected and found_arr.sum() >= 2:
            opening = mouth_opening_from_landmarks(np.stack(lms))
            idx = np.arange(len(opening))
            opening = np.interp(idx, idx[found_arr], opening[found_arr])
            return opening, "landmarks"
    if extractor is None:
        raise MetricInputError("no mouth signal: the landmark backend found no face in enough frames and no psi "
                               "extractor (expression regressor) was given")
    if getattr(extractor, "source", "regressor") == "deca":
        raise MetricInputError("DECA's psi[:, 0] is not the jaw opening (DECA puts the jaw in its pose parameters); "
                               "measure lip sync with a landmark backend, or with the corpus' expression regressor")
    return np.asarray(extractor(images), np.float64)[:, 0], "psi"


def video_lip_sync(frames, waveform: np.ndarray, fps: float, sample_rate: int, extractor: Optional[Callable] = None,
                   landmark_backend=None, max_offset: int = 8, mouth: Optional[np.ndarray] = None) -> VideoLipSync:
    """Lip sync of a generated video: `metrics.lip_sync`(mouth opening, `metrics.audio_envelope`(waveform)).

    ``waveform`` is the speech the video was generated from (mono, ``sample_rate``), covering the frames from
    the first; a precomputed ``mouth`` signal skips the extraction. A positive best offset means the mouth
    lags the audio. Needs at least 2 * max_offset + 4 frames.
    """
    if mouth is None and frames is None:
        raise MetricInputError("give the frames (or a precomputed mouth signal)")
    n = len(frames_to_tensor(frames)) if mouth is None else len(mouth)
    if n < 2 * max_offset + 4:
        raise MetricInputError(f"lip sync needs at least {2 * max_offset + 4} frames for offsets up to +-{max_offset}, "
                               f"got {n}; generate a longer video or lower max_offset")
    source = "given"
    if mouth is None:
        mouth, source = mouth_opening_from_frames(frames, extractor, landmark_backend)
    env = audio_envelope(waveform, n, fps, sample_rate)
    return VideoLipSync(lip_sync(mouth, env, max_offset=max_offset), source, np.asarray(mouth, np.float64), env)


# --------------------------------------------------------------------------- identity
def dlib_face_recognition_path() -> str:
    """Path of face_recognition_models' dlib_face_recognition_resnet_model_v1.dat, found without importing the
    package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricWeightsError("the identity metric needs dlib's face recognition model from the "
                                 "face_recognition_models package: `pip install face-recognition-models`, or pass "
                                 "model_path= pointing at dlib_face_recognition_resnet_model_v1.dat")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "dlib_face_recognition_resnet_model_v1.dat")
    if not os.path.isfile(path):
        raise MetricWeightsError(f"dlib's face recognition model {path} is missing; reinstall face-recognition-models")
    return path


class FaceDescriptor:
    """dlib's 128-d face descriptor (ResNet of dlib_face_recognition_resnet_model_v1.dat) of the largest face.

    Faces are found with the project's dlib backend (HOG detector + 68-point predictor, `faces.DlibBackend`);
    images smaller than ``detect_size`` are upscaled first. With ``assume_aligned=True`` an image without
    a detected face is treated as an aligned crop (the training alignment) and the canonical landmark
    template gives the face box.
    """

    def __init__(self, model_path: Optional[PathLike] = None, backend=None, detect_size: int = 256):
        try:
            import dlib
        except ImportError:
            raise MetricWeightsError("the identity metric needs dlib: `pip install dlib-bin`") from None
        from .faces import get_backend

        path = os.fspath(model_path) if model_path else dlib_face_recognition_path()
        if not os.path.isfile(path):
            raise MetricWeightsError(f"dlib face recognition model not found at {path}")
        self._dlib = dlib
        self.model = dlib.face_recognition_model_v1(path)
        self.backend = backend if backend is not None else get_backend("dlib")
        if not hasattr(self.backend, "predictor"):
            raise MetricWeightsError("FaceDescriptor needs the dlib landmark backend (its 68-point predictor)")
        self.detect_size = detect_size

    def __call__(self, image, assume_aligned: bool = False) -> np.ndarray:
        """The descriptor [128] float64 of the largest face; MetricInputError when there is none."""
        return self.describe(image, assume_aligned)[0]

    def describe(self, image, assume_aligned: bool = False) -> Tuple[np.ndarray, bool]:
        """(descriptor [128], whether the detector found the face) - see the class docstring."""
        import cv2

        from .faces import FaceError, landmarks_box, template_landmarks, to_rgb_uint8

        img = to_rgb_uint8(image)
        h, w = img.shape[:2]
        scale = max(1.0, self.detect_size / max(h, w))
        if scale > 1:
            img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC)
        try:
            dets = self.backend.detect(img)
        except FaceError:
            dets = []
        if dets:
            box = dets[0].box
        elif assume_aligned:
            box = landmarks_box(template_landmarks(img.shape))
        else:
            raise MetricInputError(f"no face found in the image ({w}x{h} px); identity similarity needs a visible "
                                   "frontal face (or assume_aligned=True for aligned crops)")
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)
        shape = self.backend.predictor(img, rect)
        return np.asarray(self.model.compute_face_descriptor(img, shape), np.float64), bool(dets)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """a . b / (|a| |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@dataclass
class IdentityResult:
    similarity: float               # mean cosine similarity over the frames that were measured
    per_frame: np.ndarray
    frames_with_face: int           # frames where the detector found the face (others: aligned fallback)


def identity_similarity(reference, frames, descriptor: Optional[FaceDescriptor] = None,
                        assume_aligned: bool = False) -> IdentityResult:
    """Identity consistency: mean cosine similarity of dlib face descriptors between a real portrait
    ``reference`` (any image `faces.to_rgb_uint8` takes) and every frame (anything `frames_to_tensor` takes, or
    a single image). ``assume_aligned`` treats images without a detected face (the reference too) as aligned
    crops."""
    desc = descriptor or FaceDescriptor()
    ref = desc(reference, assume_aligned=assume_aligned)
    sims, found = [], 0
    for img in frames_to_uint8(frames):
        d, detected = desc.describe(img, assume_aligned=assume_aligned)
        found += int(detected)
        sims.append(cosine_similarity(ref, d))
    sims_arr = np.array(sims)
    return IdentityResult(float(sims_arr.mean()), sims_arr, found)


# --------------------------------------------------------------------------- Frechet distance (FID / FVD)
def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D] (N >= 2; unbiased covariance, as FID uses)."""
    f = np.asarray(features.detach().cpu().numpy() if torch.is_tensor(features) else features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise MetricInputError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as sum_k sqrt(lambda_k) of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2),
    which has the same eigenvalues as S1 S2 (no complex square roots, no eps fudge).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricInputError("means must be [D] and covariances [D, D] with the same D")
    r = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def frechet_distance_from_features(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N_a, D] and [N_b, D]."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


class _BasicConv(nn.Module):
    """conv (no bias) + batch norm (eps 1e-3) + ReLU; key names ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, three_d: bool = False):
        super().__init__()
        conv, bn = (nn.Conv3d, nn.BatchNorm3d) if three_d else (nn.Conv2d, nn.BatchNorm2d)
        self.conv = conv(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = bn(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x, fid: bool):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=not fid)


class _InceptionA(nn.Module):
    def __init__(self, cin, pool, fid):
        super().__init__()
        self.fid = fid
        self.branch1x1 = _BasicConv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _BasicConv(cin, 48, 1), _BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _BasicConv(64, 96, 3, padding=1), _BasicConv(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv(cin, pool, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x, self.fid))], 1)


class _InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _BasicConv(64, 96, 3, padding=1), _BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class _InceptionC(nn.Module):
    def __init__(self, cin, c7, fid):
        super().__init__()
        self.fid = fid
        self.branch1x1 = _BasicConv(cin, 192, 1)
        self.branch7x7_1 = _BasicConv(cin, c7, 1)
        self.branch7x7_2 = _BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv(cin, c7, 1)
        self.branch7x7dbl_2 = _BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x, self.fid))], 1)


class _InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _BasicConv(cin, 192, 1), _BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = _BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class _InceptionE(nn.Module):
    def __init__(self, cin, pool: str):
        super().__init__()
        self.pool = pool     # "avg" (torchvision), "avg_nopad" (FID Mixed_7b), "max" (FID Mixed_7c)
        self.branch1x1 = _BasicConv(cin, 320, 1)
        self.branch3x3_1 = _BasicConv(cin, 384, 1)
        self.branch3x3_2a = _BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = _BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            p = F.max_pool2d(x, 3, 1, 1)
        else:
            p = F.avg_pool2d(x, 3, 1, 1, count_include_pad=self.pool == "avg")
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(p)], 1)


class InceptionV3Features(nn.Module):
    """Inception-v3 up to the 2048-d average pool: the FID feature extractor.

    Parameter names follow torchvision's ``inception_v3`` (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1
    .bn.running_mean`` ...), which pytorch-fid's FID weights (pt_inception-2015-12-05-*.pth, a port of the
    TensorFlow graph that defines FID) also use. ``fid=True`` (default) applies that graph's differences:
    average pools that exclude padding and a max pool in the last block's pool branch. Input: [N, 3, H, W]
    in [0, 1], resized bilinearly to 299x299 and mapped to [-1, 1]. Load weights with `load_inception`.
    """

    def __init__(self, fid: bool = True):
        super().__init__()
        self.fid = fid
        self.Conv2d_1a_3x3 = _BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _InceptionA(192, 32, fid), _InceptionA(256, 64, fid), _InceptionA(288, 64, fid)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, 128, fid)
        self.Mixed_6c, self.Mixed_6d = _InceptionC(768, 160, fid), _InceptionC(768, 160, fid)
        self.Mixed_6e = _InceptionC(768, 192, fid)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, "avg_nopad" if fid else "avg")
        self.Mixed_7c = _InceptionE(2048, "max" if fid else "avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 2048]."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
        x = F.max_pool2d(x, 3, 2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))


INCEPTION_HINT = ("FID needs Inception-v3 weights you supply: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (the "
                  "FID-standard port) or a torchvision inception_v3 state dict (fid=False). Nothing is downloaded.")
I3D_HINT = ("FVD needs I3D weights you supply: a state dict of the PyTorch I3D port with keys like "
            "Conv3d_1a_7x7.conv3d.weight and Mixed_5c.b3b.bn.running_var (e.g. rgb_imagenet.pt of the pytorch-i3d "
            "port). Nothing is downloaded.")


def load_inception(path: Optional[PathLike], fid: bool = True, device="cpu") -> InceptionV3Features:
    """`InceptionV3Features` with the user's weights (weights_only / safetensors); extra keys (fc, AuxLogits)
    are ignored, missing ones are an error."""
    state = load_weight_file(path, "Inception-v3 (FID)", INCEPTION_HINT)
    model = InceptionV3Features(fid=fid)
    _load_strict(model, state, "Inception-v3 (FID)", path)
    return model.eval().to(device)


class _Unit3D(nn.Module):
    """3-D conv + batch norm + ReLU with TensorFlow 'SAME' padding; keys ``conv3d.*``, ``bn.*``."""

    def __init__(self, cin, cout, kernel=1, stride=1, activation=True, bn=True, bias=False):
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None
        self.activation = activation

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


def _same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class _Inception3D(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.b0 = _Unit3D(cin, c[0])
        self.b1a, self.b1b = _Unit3D(cin, c[1]), _Unit3D(c[1], c[2], 3)
        self.b2a, self.b2b = _Unit3D(cin, c[3]), _Unit3D(c[3], c[4], 3)
        self.b3a, self.b3b = _MaxPool3dSame((3, 3, 3), (1, 1, 1)), _Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3DFeatures(nn.Module):
    """Inflated Inception-v1 (I3D, Carreira & Zisserman 2017), RGB stream: the FVD feature extractor.

    Parameter names follow the common PyTorch port (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.weight``,
    ``logits.conv3d.weight``/``bias``). Input: clips [N, 3, T, H, W] (T >= 9; FVD uses 16) in [0, 1], resized
    to 224x224 and mapped to [-1, 1]. Output: the 400 Kinetics logits averaged over time (the feature FVD
    uses) or, with ``pooled=True``, the 1024-d pooled features. Load weights with `load_i3d`.
    """

    def __init__(self, num_classes: int = 400, input_size: int = 224):
        super().__init__()
        self.input_size = int(input_size)      # 224 for FVD; smaller only for quick checks
        self.Conv3d_1a_7x7 = _Unit3D(3, 64, 7, stride=2)
        self.MaxPool3d_2a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3D(64, 64, 1)
        self.Conv3d_2c_3x3 = _Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = _Inception3D(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = _Inception3D(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = _MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = _Inception3D(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = _Inception3D(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = _Inception3D(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = _Inception3D(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = _Inception3D(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = _MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = _Inception3D(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = _Inception3D(832, (384, 192, 384, 48, 128, 128))
        self.logits = _Unit3D(1024, num_classes, 1, activation=False, bn=False, bias=True)

    _ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
              "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
              "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

    def forward(self, x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """[N, 3, T, H, W] in [0, 1] -> [N, 400] (time-averaged logits) or [N, 1024] (``pooled``)."""
        n, c, t, h, w = x.shape
        s = self.input_size
        if (h, w) != (s, s):
            x = F.interpolate(x.transpose(1, 2).reshape(n * t, c, h, w), size=(s, s), mode="bilinear",
                              align_corners=False).reshape(n, t, c, s, s).transpose(1, 2)
        x = x * 2 - 1
        for name in self._ORDER:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4])), stride=1)
        if pooled:
            return x.mean(dim=(2, 3, 4))
        return self.logits(x).mean(dim=(2, 3, 4))


def load_i3d(path: Optional[PathLike], device="cpu") -> I3DFeatures:
    """`I3DFeatures` with the user's weights (weights_only / safetensors); missing keys are an error."""
    state = load_weight_file(path, "I3D (FVD)", I3D_HINT)
    classes = state.get("logits.conv3d.weight")
    model = I3DFeatures(num_classes=int(classes.shape[0]) if classes is not None else 400)
    _load_strict(model, state, "I3D (FVD)", path)
    return model.eval().to(device)


@torch.no_grad()
def extract_features(extractor: Optional[Callable], batches: Sequence[torch.Tensor], what: str, hint: str) -> np.ndarray:
    """Run ``extractor`` over ``batches`` and stack the features [N, D] (float64)."""
    if extractor is None:
        raise MetricWeightsError(f"{what} needs a feature network and none was given. {hint}")
    device = next(extractor.parameters()).device if isinstance(extractor, nn.Module) else torch.device("cpu")
    return np.concatenate([np.asarray(extractor(b.to(device)).float().cpu(), np.float64) for b in batches])


def fid(real_frames, fake_frames, extractor: Optional[nn.Module], batch_size: int = 32) -> float:
    """FID between two frame sets (anything `frames_to_tensor` takes): Frechet distance of the Inception
    pool features (``extractor`` = `load_inception`(...); required). Needs >= 2 frames per set (thousands for
    a stable value)."""
    feats = []
    for frames in (real_frames, fake_frames):
        x = frames_to_tensor(frames)
        feats.append(extract_features(extractor, [x[i:i + batch_size] for i in range(0, len(x), batch_size)],
                                      "FID", INCEPTION_HINT))
    return frechet_distance_from_features(*feats)


def video_clips(frames, length: int = 16, stride: Optional[int] = None) -> torch.Tensor:
    """Clips [M, 3, length, H, W] cut from one video (``stride`` frames apart; default non-overlapping)."""
    x = frames_to_tensor(frames)
    stride = stride or length
    if len(x) < length:
        raise MetricInputError(f"the video has {len(x)} frames, fewer than the clip length {length}")
    starts = range(0, len(x) - length + 1, stride)
    return torch.stack([x[s:s + length].transpose(0, 1) for s in starts])


def fvd(real_videos: Sequence, fake_videos: Sequence, extractor: Optional[nn.Module], length: int = 16,
        batch_size: int = 4) -> float:
    """FVD between two sets of videos: Frechet distance of I3D features (``extractor`` = `load_i3d`(...);
    required) of non-overlapping ``length``-frame clips of every video. Needs >= 2 clips per set."""
    feats = []
    for videos in (real_videos, fake_videos):
        clips = torch.cat([video_clips(v, length) for v in videos])
        feats.append(extract_features(extractor, [clips[i:i + batch_size] for i in range(0, len(clips), batch_size)],
                                      "FVD", I3D_HINT))
    return frechet_distance_from_features(*feats)


# --------------------------------------------------------------------------- one call for evaluation scripts
def measure_video(frames: torch.Tensor, audio, *, emotion: Optional[str] = None, truth_frames=None,
                  extractor: Optional[Callable] = None, classifier: Optional[EmotionClassifier] = None,
                  descriptor: Optional[FaceDescriptor] = None, reference_image=None, landmark_backend=None,
                  window: int = 48, max_offset: int = 8) -> Dict[str, float]:
    """Measure one generated video ([N, 3, S, S] in [0, 1]) with every metric whose inputs are given.

    ``psnr``/``ssim`` against ``truth_frames``; ``lipsync`` (+ offset, confidence, source) against ``audio``'s
    waveform when there are >= 2 max_offset + 4 frames and a mouth signal (``landmark_backend`` or
    ``extractor``); ``emotion_accuracy`` for ``emotion`` with ``extractor`` + ``classifier``; ``identity`` with
    ``descriptor`` against ``reference_image`` (the frames are aligned crops). Keys are absent when their
    inputs are missing.
    """
    from .metrics import psnr, ssim

    n = len(frames)
    report: Dict[str, float] = {}
    if truth_frames is not None:
        truth = frames_to_tensor(truth_frames)[:n]
        pairs = [(f.permute(1, 2, 0).numpy().astype(np.float64), t.permute(1, 2, 0).numpy().astype(np.float64))
                 for f, t in zip(frames, truth)]
        report["psnr"] = float(np.mean([psnr(a, b) for a, b in pairs]))
        report["ssim"] = float(np.mean([ssim(a, b) for a, b in pairs]))
    psi = extractor(frames) if extractor is not None else None
    if n >= 2 * max_offset + 4 and (psi is not None or landmark_backend is not None):
        mouth = None
        if landmark_backend is None:
            mouth = np.asarray(psi, np.float64)[:, 0]
        ls = video_lip_sync(frames, audio.waveform, audio.fps, audio.config.sample_rate, extractor=extractor,
                            landmark_backend=landmark_backend, max_offset=max_offset, mouth=mouth)
        report.update({"lipsync": ls.sync.correlation, "lipsync_best_offset": ls.sync.best_offset,
                       "lipsync_confidence": ls.sync.confidence,
                       "lipsync_source": "psi" if mouth is not None else ls.source})
    if psi is not None and classifier is not None and emotion is not None:
        report["emotion_accuracy"] = video_emotion_accuracy([psi], [emotion], classifier, min(window, n)).accuracy
    if descriptor is not None and reference_image is not None:
        report["identity"] = identity_similarity(reference_image, frames, descriptor, assume_aligned=True).similarity
    return report


def generated_video_report(denoiser, generator, identity: torch.Tensor, audio, emotion: str = "neutral",
                           intensity: float = 1.0, *, expression: Optional[torch.Tensor] = None,
                           extractor: Optional[Callable] = None, classifier: Optional[EmotionClassifier] = None,
                           truth_frames=None, descriptor: Optional[FaceDescriptor] = None, reference_image=None,
                           landmark_backend=None, flie_levels: int = 0, lpips: Optional[LPIPS] = None,
                           spacing="ddim10", sampler: str = "ddim", seed: int = 0, window: int = 48,
                           max_offset: int = 8, max_frames: Optional[int] = None, device=None,
                           start_noise: Optional[float] = None) -> Dict[str, object]:
    """Generate one video and measure it (`measure_video`) with every metric whose inputs are available.

    The condition is ``expression`` ([N, 50], e.g. a clip's ground-truth psi) or, when None, Eq. 14 from
    ``generator`` for ``emotion`` at ``intensity``. The identity reference defaults to the identity crop.
    ``flie`` (and ``lie`` with ``lpips``) over ``flie_levels`` intensity levels of ``emotion`` when
    flie_levels >= 2 and an extractor is given. ``max_frames`` keeps only the first frames of the audio
    (and of ``expression``); ``start_noise`` None = the pipeline's default.
    Returns a flat dict of numbers (plus 'frames' and the settings).
    """
    from .pipeline import DEFAULT_START_NOISE, EmotionSpec, emotion_expressions, generate_frames

    start_noise = DEFAULT_START_NOISE if start_noise is None else start_noise
    if max_frames is not None and max_frames < audio.num_frames:
        audio = audio.first(max_frames)
        expression = expression[:max_frames] if expression is not None else None
    n = audio.num_frames
    psi_cond = expression if expression is not None else emotion_expressions(
        generator, n, EmotionSpec(emotion, float(intensity)), fps=audio.fps, seed=seed)
    frames = generate_frames(denoiser, identity, audio, psi_cond, spacing=spacing, sampler=sampler, seed=seed,
                             device=device, start_noise=start_noise)[:, 0]
    report: Dict[str, object] = {"frames": int(n), "spacing": str(spacing), "sampler": sampler,
                                 "start_noise": float(start_noise), "emotion": emotion, "intensity": float(intensity)}
    if descriptor is not None and reference_image is None:
        reference_image = frames_to_uint8(identity)[0]
    report.update(measure_video(frames, audio, emotion=emotion, truth_frames=truth_frames, extractor=extractor,
                                classifier=classifier, descriptor=descriptor, reference_image=reference_image,
                                landmark_backend=landmark_backend, window=window, max_offset=max_offset))
    if flie_levels >= 2 and extractor is not None and emotion != "neutral":
        report.update(intensity_metrics(denoiser, generator, identity, audio, emotion, flie_levels, extractor, lpips,
                                        spacing=spacing, sampler=sampler, seed=seed, expression_seed=seed,
                                        device=device, start_noise=start_noise))
    return report


def intensity_metrics(denoiser, generator, identity: torch.Tensor, audio, emotion: str, levels: int,
                      extractor: Callable, lpips: Optional[LPIPS] = None, **generation) -> Dict[str, object]:
    """``flie`` (or ``flie_error`` when FLIE is undefined) and, with ``lpips``, ``lie`` of the intensity videos
    of ``emotion`` (`generate_intensity_videos`; keyword arguments go there)."""
    videos = generate_intensity_videos(denoiser, generator, identity, audio, emotion, levels, **generation)
    out: Dict[str, object] = {}
    try:
        out["flie"] = flie_from_videos(videos, extractor).flie
    except ValueError as exc:
        out["flie_error"] = str(exc)
    if lpips is not None:
        out["lie"] = lie(videos, lpips).lie
    return out

