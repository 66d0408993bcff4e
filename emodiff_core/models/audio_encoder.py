"""The learned audio encoder: one video frame's log-mel block -> an embedding a^(i)'."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioFeatureConfig


class AudioEncoder(nn.Module):
    """Two 1-D convolutions over the mel frames of one video frame, then a linear map to ``out_dim``.

    Input [..., n_mels, context] (any leading dims), output [..., out_dim]. Trained jointly with the
    denoiser; it plays the role of the paper's pretrained audio encoder.
    """

    def __init__(self, features: AudioFeatureConfig, out_dim: int, hidden: int = 64):
        super().__init__()
        self.features = features
        self.conv1 = nn.Conv1d(features.n_mels, hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.proj = nn.Linear(hidden * features.context, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.features.n_mels, self.features.context)
        if tuple(x.shape[-2:]) != want:
            raise ValueError(f"audio features must end in [n_mels, context] = {list(want)}, got {list(x.shape)}; "
                             "they were made with another audio feature config than this model's")
        lead = x.shape[:-2]
        h = x.reshape(-1, *want).to(self.conv1.weight.dtype)
        h = F.silu(self.conv1(h))
        h = F.silu(self.conv2(h))
        return self.proj(h.flatten(1)).reshape(*lead, -1)
