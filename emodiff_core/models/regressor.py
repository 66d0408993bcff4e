"""Image -> expression vector psi: the corpus' stand-in for DECA's encoder when measuring generated frames.

(DECA's own encoder is used instead whenever the user supplies its weights.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RegressorConfig


class ExpressionRegressor(nn.Module):
    """[B, 3, S, S] in [-1, 1] (resized to the configured size) -> psi [B, expression_dim]."""

    def __init__(self, cfg: RegressorConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        c = cfg.channels
        layers = []
        in_ch = 3
        size = cfg.image_size
        width = c
        while size > 4:
            layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.GroupNorm(min(8, width // 4) or 1, width),
                       nn.SiLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU()]
            in_ch = width
            width = min(width * 2, 8 * c)
            size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * size * size, 256), nn.SiLU(),
                                  nn.Linear(256, cfg.expression_dim))
        # The network predicts standardised psi; these buffers (set from the training data) map it back.
        self.register_buffer("psi_mean", torch.zeros(cfg.expression_dim))
        self.register_buffer("psi_std", torch.ones(cfg.expression_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.head(self.features(images)) * self.psi_std + self.psi_mean

    def standardised(self, images: torch.Tensor) -> torch.Tensor:
        """The raw output: psi standardised with the training statistics (what the loss compares)."""
        return (self.forward(images) - self.psi_mean) / self.psi_std
