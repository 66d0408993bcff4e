"""Emotion judge: which of the eight MEAD emotions a face crop shows, and how strongly.

Used to measure generated videos (training/evaluate.py `emotion_control_report`): a classifier trained on the
corpus' ground-truth frames of training identities, with augmentation (shifts, scale, blur, brightness) so
that the slightly blurry 64 px frames of the denoiser are judged like real ones.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import JudgeConfig
from ..emotions import EMOTIONS

LEVEL_WIDTHS = (1, 2, 4, 4)     # channel multipliers of the four stride-2 levels


class JudgeOutput(NamedTuple):
    logits: torch.Tensor                  # [B, len(EMOTIONS)]
    intensity: Optional[torch.Tensor]     # [B] in [0, 1], or None without the intensity head


class EmotionJudge(nn.Module):
    """[B, 3, H, W] RGB in [0, 1] (resized to the configured size) -> `JudgeOutput` (logits over
    `EMOTIONS`, intensity k)."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        layers, in_ch = [], 3
        for mult in LEVEL_WIDTHS:
            width = cfg.channels * mult
            layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.GroupNorm(width // 4, width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(width // 4, width), nn.SiLU()]
            in_ch = width
        self.features = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(LEVEL_WIDTHS)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout),
                                   nn.Linear(in_ch * side * side, cfg.hidden_dim), nn.SiLU())
        self.classifier = nn.Linear(cfg.hidden_dim, len(EMOTIONS))
        self.intensity = nn.Linear(cfg.hidden_dim, 1) if cfg.intensity_head else None

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the emotion judge takes RGB images [B, 3, H, W] in [0, 1], got shape "
                             f"{list(images.shape)}")
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images * 2.0 - 1.0       # the network works on [-1, 1], centred

    def forward(self, images: torch.Tensor) -> JudgeOutput:
        hidden = self.trunk(self.features(self._prepare(images)))
        intensity = torch.sigmoid(self.intensity(hidden)[:, 0]) if self.intensity is not None else None
        return JudgeOutput(self.classifier(hidden), intensity)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax over `EMOTIONS` [B, 8] for any number of images, in batches (eval mode expected)."""
        if len(images) == 0:
            return torch.zeros(0, len(EMOTIONS))
        device = next(self.parameters()).device
        out = [torch.softmax(self(images[i: i + batch_size].to(device).float()).logits.float(), dim=1).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)
