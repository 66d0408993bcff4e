"""Super-resolution head behind the Super-Resolve node: residual CNN on a bilinear upsample.

out = bilinear_upsample(x) + residual(x): the network only learns the missing detail, so an untrained
(zero-initialised last layer) head is exactly bilinear upsampling. With ``mouth_branch`` a second such network
super-resolves the mouth region of the aligned crop (`SuperResConfig`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

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
    """[B, 3, H, W] in [0, 1] -> [B, 3, s*H, s*W] in [0, 1]."""

    def __init__(self, cfg: SuperResConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        c = cfg.channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*[_Block(c) for _ in range(cfg.num_blocks)])
        self.upsample = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                                      nn.LeakyReLU(0.1))
                                        for _ in range({2: 1, 4: 2}[cfg.scale])])
        self.tail = zero_module(nn.Conv2d(c, 3, 3, padding=1))
        self.mouth = SuperResolver(dataclasses.replace(cfg, mouth_branch=False)) if cfg.mouth_branch else None
        self._weights: Dict[Tuple[int, int], torch.Tensor] = {}     # mouth weight per output size (CPU)

    @property
    def scale(self) -> int:
        return self.config.scale

    def mouth_weight(self, height: int, width: int) -> torch.Tensor:
        """[H, W] weight of the mouth branch at that output size (`faces.mouth_region_weight`)."""
        if (height, width) not in self._weights:
            from ..faces import mouth_region_weight

            self._weights[(height, width)] = torch.from_numpy(mouth_region_weight(height, width))
        return self._weights[(height, width)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.config.scale, mode="bilinear", align_corners=False)
        h = self.head(x)
        h = h + self.blocks(h)
        out = (base + self.tail(self.upsample(h))).clamp(0.0, 1.0)
        if self.mouth is None:
            return out
        weight = self.mouth_weight(*out.shape[-2:]).to(out)
        return torch.lerp(out, self.mouth(x), weight)
