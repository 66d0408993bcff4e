"""Super-resolution head behind the Super-Resolve node: residual CNN on a bilinear upsample.

out = bilinear_upsample(x) + residual(x): the network only learns the missing detail, so an untrained
(zero-initialised last layer) head is exactly bilinear upsampling.

A head with ``config.reference`` also reads the portrait's aligned crop at the output size: a 64 px frame has
lost the photo's skin, hair and glasses texture, but where the generated face still lies where the portrait's
does (most of a talking head, most of the time), that texture is there to be put back. The reference enters
twice: folded to the input's grid (pixel-unshuffle, so the residual blocks can see where it matches the frame)
and as its high-pass at the output's grid (the detail itself, gated by the features there). Trained with the
reference missing in a share of the examples (`training/train_superres.py`), so without one (`reference=None`,
read as zeros) it still works as a plain head.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SuperResConfig
from .layers import zero_module


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class SuperResolver(nn.Module):
    """[B, 3, H, W] in [0, 1] (and, for a reference head, the portrait's crop [B or 1, 3, s*H, s*W]) ->
    [B, 3, s*H, s*W] in [0, 1]."""

    def __init__(self, cfg: SuperResConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        c, s = cfg.channels, cfg.scale
        self.head = nn.Conv2d(3 + (3 * s * s if cfg.reference else 0), c, 3, padding=1)
        self.blocks = nn.Sequential(*[_Block(c) for _ in range(cfg.num_blocks)])
        self.upsample = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                                      nn.LeakyReLU(0.1))
                                        for _ in range({2: 1, 4: 2}[cfg.scale])])
        # the reference's high-pass joins the upsampled features before the last layer
        self.fuse = (nn.Sequential(nn.Conv2d(c + 3, c, 3, padding=1), nn.LeakyReLU(0.1))
                     if cfg.reference else None)
        self.tail = zero_module(nn.Conv2d(c, 3, 3, padding=1))

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def uses_reference(self) -> bool:
        return self.config.reference

    def forward(self, x: torch.Tensor, reference: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.config.scale
        base = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        if self.config.reference:
            ref = self._reference(x, reference)
            smooth = F.interpolate(F.interpolate(ref, scale_factor=1.0 / s, mode="area"), scale_factor=s,
                                   mode="bilinear", align_corners=False)
            h = self.head(torch.cat([x, F.pixel_unshuffle(ref, s)], 1))
        else:
            h = self.head(x)
        h = h + self.blocks(h)
        up = self.upsample(h)
        if self.fuse is not None:
            up = self.fuse(torch.cat([up, ref - smooth], 1))
        return (base + self.tail(up)).clamp(0.0, 1.0)

    def _reference(self, x: torch.Tensor, reference: Optional[torch.Tensor]) -> torch.Tensor:
        """The reference as [B, 3, s*H, s*W] on x's device and dtype: zeros when None (the head was trained
        with it missing in a share of the examples), one crop broadcast over the batch."""
        b, _, h, w = x.shape
        size = (self.config.scale * h, self.config.scale * w)
        if reference is None:
            return x.new_zeros(b, 3, *size)
        if reference.dim() == 3:
            reference = reference[None]
        if reference.dim() != 4 or reference.shape[1] != 3 or tuple(reference.shape[-2:]) != size \
                or reference.shape[0] not in (1, b):
            raise ValueError(f"the SR head's reference must be [1 or {b}, 3, {size[0]}, {size[1]}] (the portrait's "
                             f"aligned crop at the output size), got {list(reference.shape)}")
        return reference.to(x).expand(b, -1, -1, -1)
