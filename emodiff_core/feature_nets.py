"""The feature networks of the video metrics, and their weight loaders (pure PyTorch, nothing downloaded).

- `LPIPS` (Zhang et al. 2018, v0.1 "lin") on an AlexNet or VGG16 `BackboneFeatures` stack: `load_lpips`.
  LPIPS(x, y) = sum_l mean_hw w_l . (f_l(x) - f_l(y))^2 with f_l the channel-unit-normalised activations of
  backbone layer l and w_l the learned non-negative per-channel weights (the official ``lin0..lin4``).
- `InceptionV3Features`, the FID feature extractor (2048-d pool features): `load_inception`.
- `I3DFeatures`, the FVD feature extractor (Kinetics logits or 1024-d pool features of clips): `load_i3d`.

Every network loads only from files the user supplies, with ``torch.load(weights_only=True)`` or safetensors
(`load_weight_file`); its class alone has random weights. A missing or unusable file raises
`MetricWeightsError`, which says which file is needed and where (the ``*_HINT`` texts). The metrics computed
with these networks (LIE, FID, FVD) are in `metrics_video`.

`MetricWeightsError` and `MetricInputError` are the errors of every metric module (this one, `metrics_video`
and `evaluation`); they live here, at the bottom of the stack.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- errors
class MetricWeightsError(ValueError):
    """A metric needs a network whose weights were not supplied or cannot be used (says which and what to do)."""


class MetricInputError(ValueError):
    """Bad input to a video metric (shapes, too few frames, no face ...), with what to do about it."""


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


# --------------------------------------------------------------------------- LPIPS
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


# --------------------------------------------------------------------------- Inception-v3 (FID)
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


def load_inception(path: Optional[PathLike], fid: bool = True, device="cpu") -> InceptionV3Features:
    """`InceptionV3Features` with the user's weights (weights_only / safetensors); extra keys (fc, AuxLogits)
    are ignored, missing ones are an error."""
    state = load_weight_file(path, "Inception-v3 (FID)", INCEPTION_HINT)
    model = InceptionV3Features(fid=fid)
    _load_strict(model, state, "Inception-v3 (FID)", path)
    return model.eval().to(device)


# --------------------------------------------------------------------------- I3D (FVD)
I3D_HINT = ("FVD needs I3D weights you supply: a state dict of the PyTorch I3D port with keys like "
            "Conv3d_1a_7x7.conv3d.weight and Mixed_5c.b3b.bn.running_var (e.g. rgb_imagenet.pt of the pytorch-i3d "
            "port). Nothing is downloaded.")


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
