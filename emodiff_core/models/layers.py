"""Network building blocks in the style of ADM (Dhariwal & Nichol), written for this project."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (fp16/bf16 statistics are too coarse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def group_count(channels: int) -> int:
    """Up to 32 groups of at least 4 channels each (ADM's 32 groups at 128+ channels)."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(group_count(channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class FiLM(nn.Module):
    """(scale, shift) = Linear(SiLU(emb)); applied as (1 + scale) * h + shift.

    The paper's t_s GN(h) + t_b (Eq. 12-13) with t_s = 1 + scale: a zero-initialised projection makes the
    condition start as a no-op. ``zero_init`` is used for the audio and expression conditions.
    """

    def __init__(self, emb_dim: int, channels: int, zero_init: bool = False):
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)
        if zero_init:
            zero_module(self.proj)

    def scale_shift(self, emb: torch.Tensor):
        scale, shift = self.proj(F.silu(emb)).chunk(2, dim=1)
        return 1.0 + scale[..., None, None], shift[..., None, None]


CONDITIONS = ("time", "audio", "expression")


class ResBlock(nn.Module):
    """Residual block; with ``conditioned`` it is Eq. 13's conditional residual block:

        h = e_s * (a_s * (t_s * GN(h) + t_b) + a_b) + e_b

    applied to the output GroupNorm, with (t_s, t_b), (a_s, a_b), (e_s, e_b) from the time, audio-window and
    expression-window embeddings. Without conditions (ReferenceNet) it is a plain pre-norm residual block.
    ``updown`` = 'up' or 'down' resamples inside the block (ADM's resblock_updown).
    """

    def __init__(self, channels: int, out_channels: int, emb_dim: Optional[int], dropout: float,
                 updown: Optional[str] = None):
        super().__init__()
        self.conditioned = emb_dim is not None
        self.in_norm = normalization(channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.updown = updown
        if updown == "up":
            self.h_resample, self.x_resample = _Resample2x("up"), _Resample2x("up")
        elif updown == "down":
            self.h_resample, self.x_resample = _Resample2x("down"), _Resample2x("down")
        elif updown is None:
            self.h_resample = self.x_resample = nn.Identity()
        else:
            raise ValueError(f"updown must be 'up', 'down' or None, got {updown!r}")
        if self.conditioned:
            self.film = nn.ModuleDict({
                "time": FiLM(emb_dim, out_channels),
                "audio": FiLM(emb_dim, out_channels, zero_init=True),
                "expression": FiLM(emb_dim, out_channels, zero_init=True),
            })
        self.out_norm = normalization(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def modulate(self, h: torch.Tensor, cond) -> torch.Tensor:
        """Eq. 13 on an already group-normalised h; ``cond`` maps 'time'/'audio'/'expression' to [B, emb]."""
        for name in CONDITIONS:  # innermost first: time, then audio (Eq. 12), then expression (Eq. 13)
            scale, shift = self.film[name].scale_shift(cond[name])
            h = scale * h + shift
        return h

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self.h_resample(h))
        x = self.x_resample(x)
        h = self.out_norm(h)
        if self.conditioned:
            h = self.modulate(h, cond)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Resample2x(nn.Module):
    def __init__(self, direction: str):
        super().__init__()
        self.direction = direction

    def forward(self, x):
        if self.direction == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2)


def _heads_split(x: torch.Tensor, heads: int) -> torch.Tensor:
    # [B, C, N] -> [B, heads, N, C/heads]
    b, c, n = x.shape
    return x.reshape(b, heads, c // heads, n).transpose(2, 3)


def _heads_merge(x: torch.Tensor) -> torch.Tensor:
    # [B, heads, N, d] -> [B, heads*d, N]
    b, h, n, d = x.shape
    return x.transpose(2, 3).reshape(b, h * d, n)


class SelfAttention(nn.Module):
    """Spatial self-attention over the H*W positions (ADM's AttentionBlock) via SDPA."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).reshape(b, c, h * w)).chunk(3, dim=1)
        out = F.scaled_dot_product_attention(_heads_split(q, self.heads), _heads_split(k, self.heads),
                                             _heads_split(v, self.heads))
        return x + self.proj(_heads_merge(out)).reshape(b, c, h, w)


class ReferenceFusion(nn.Module):
    """Fuses a ReferenceNet feature map into the backbone: cross-attention, then spatial attention.

    Cross-attention: queries from the backbone positions, keys and values from the reference positions
    (same layer, same resolution), added residually through a zero-initialised projection.
    Spatial attention (the paper gives no formula; we read it as a CBAM-style spatial gate): a 7x7
    convolution over the channel-wise mean and max of h gives a per-position weight
    2*sigmoid(.) that rescales h, emphasising the regions that matter. Zero-initialised, so the gate
    starts at exactly 1 and the whole block starts as the identity.
    """

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = normalization(channels)
        self.ref_norm = normalization(channels)
        self.q = nn.Conv1d(channels, channels, 1)
        self.kv = nn.Conv1d(channels, 2 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))
        self.gate = zero_module(nn.Conv2d(2, 1, 7, padding=3))

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if reference.shape[0] != b:
            if reference.shape[0] != 1:
                raise ValueError(f"reference features have batch {reference.shape[0]}, expected 1 or {b}")
            reference = reference.expand(b, *reference.shape[1:])
        q = self.q(self.norm(x).reshape(b, c, h * w))
        k, v = self.kv(self.ref_norm(reference).reshape(b, c, -1)).chunk(2, dim=1)
        out = F.scaled_dot_product_attention(_heads_split(q, self.heads), _heads_split(k, self.heads),
                                             _heads_split(v, self.heads))
        x = x + self.proj(_heads_merge(out)).reshape(b, c, h, w)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * (2.0 * torch.sigmoid(self.gate(pooled)))


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers with SiLU between them (not after the last)."""
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)
