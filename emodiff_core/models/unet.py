"""The denoising backbone, the ReferenceNet and the full denoiser (section 3.2.2).

Both UNets come from one layout (`_layout`), so the ReferenceNet's feature map at a fusion point has the
channels and resolution of the backbone's at the same point. The ReferenceNet has no conditional blocks
(no time, audio or expression) and no output head; its features depend only on the identity frame, so
`EMOdiffheadDenoiser.reference_features` is computed once per video and passed to every step and frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenoiserConfig
from .audio_encoder import AudioEncoder
from .layers import (Downsample, ReferenceFusion, ResBlock, SelfAttention, Upsample, mlp, normalization,
                     timestep_embedding, zero_module)

ReferenceFeatures = Dict[str, torch.Tensor]


@dataclass
class _StageSpec:
    name: str
    kind: str               # "conv_in", "res", "down", "up_res" (res followed by an upsample)
    in_ch: int
    out_ch: int
    resolution: int         # resolution at which the stage's attention/fusion run
    attention: bool = False
    fusion: bool = False


def _layout(cfg: DenoiserConfig, stem_channels: int) -> Dict[str, List[_StageSpec]]:
    """Stage specs of the input path, middle and output path (ADM topology)."""
    mc = cfg.model_channels
    res = cfg.image_size
    inputs = [_StageSpec("in0", "conv_in", stem_channels, mc, res)]
    skip_channels = [mc]
    ch = mc
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            out = mc * mult
            inputs.append(_StageSpec(f"in{len(inputs)}", "res", ch, out, res,
                                     attention=res in cfg.attention_resolutions,
                                     fusion=res in cfg.reference_resolutions))
            ch = out
            skip_channels.append(ch)
        if level != len(cfg.channel_mult) - 1:
            inputs.append(_StageSpec(f"in{len(inputs)}", "down", ch, ch, res))
            res //= 2
            skip_channels.append(ch)
    middle = [_StageSpec("mid", "middle", ch, ch, res, attention=True, fusion=res in cfg.reference_resolutions)]
    outputs = []
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            skip = skip_channels.pop()
            out = mc * mult
            kind = "up_res" if (level and i == cfg.num_res_blocks) else "res"
            outputs.append(_StageSpec(f"out{len(outputs)}", kind, ch + skip, out, res,
                                      attention=res in cfg.attention_resolutions,
                                      fusion=res in cfg.reference_resolutions))
            ch = out
            if kind == "up_res":
                res *= 2
    return {"input": inputs, "middle": middle, "output": outputs}


class _Stage(nn.Module):
    """One stage: a residual block (or a resampler), optional self-attention, optional reference fusion."""

    def __init__(self, spec: _StageSpec, cfg: DenoiserConfig, emb_dim: Optional[int], fuse: bool,
                 build_tail: bool = True):
        super().__init__()
        self.spec = spec
        self.res2 = None
        self.down = self.up = self.conv = None
        self.res = self.attention = self.fusion = None
        if spec.kind == "conv_in":
            self.conv = nn.Conv2d(spec.in_ch, spec.out_ch, 3, padding=1)
            return
        if spec.kind == "down":
            if cfg.resblock_updown:
                self.res = ResBlock(spec.in_ch, spec.out_ch, emb_dim, cfg.dropout, updown="down")
            else:
                self.down = Downsample(spec.in_ch)
            return
        self.res = ResBlock(spec.in_ch, spec.out_ch, emb_dim, cfg.dropout)
        if spec.attention:
            self.attention = SelfAttention(spec.out_ch, cfg.num_head_channels)
        if fuse and spec.fusion:
            self.fusion = ReferenceFusion(spec.out_ch, cfg.num_head_channels)
        if not build_tail:   # a truncated ReferenceNet stops at this stage's recorded features
            return
        if spec.kind == "middle":
            self.res2 = ResBlock(spec.out_ch, spec.out_ch, emb_dim, cfg.dropout)
        if spec.kind == "up_res":
            if cfg.resblock_updown:
                self.res2 = ResBlock(spec.out_ch, spec.out_ch, emb_dim, cfg.dropout, updown="up")
            else:
                self.up = Upsample(spec.out_ch)

    def forward(self, h, cond=None, reference: Optional[torch.Tensor] = None, record: Optional[dict] = None):
        if self.conv is not None:
            return self.conv(h)
        if self.down is not None:
            return self.down(h)
        h = self.res(h, cond)
        if self.spec.kind == "down":
            return h
        if self.attention is not None:
            h = self.attention(h)
        if record is not None and self.spec.fusion:
            record[self.spec.name] = h
        if self.fusion is not None:
            if reference is None:
                raise ValueError(f"reference features for stage {self.spec.name} are missing")
            h = self.fusion(h, reference)
        if self.res2 is not None:
            h = self.res2(h, cond)
        if self.up is not None:
            h = self.up(h)
        return h


class _UNetBody(nn.Module):
    def __init__(self, cfg: DenoiserConfig, stem_channels: int, emb_dim: Optional[int], fuse: bool,
                 truncate_after_last_fusion: bool = False):
        super().__init__()
        layout = _layout(cfg, stem_channels)
        self.fusion_points = [s.name for part in layout.values() for s in part if s.fusion]
        order = [s.name for part in layout.values() for s in part]
        keep, last_stage = set(order), None
        if truncate_after_last_fusion:
            # The ReferenceNet never runs past its last fusion point: build nothing beyond it, not even the
            # second block or upsampler of that stage (DDP requires every parameter to receive a gradient).
            last = order.index(self.fusion_points[-1]) if self.fusion_points else -1
            keep = set(order[:last + 1])
            last_stage = order[last] if last >= 0 else None

        def stage(s):
            return _Stage(s, cfg, emb_dim, fuse, build_tail=s.name != last_stage)

        self.input_stages = nn.ModuleList(stage(s) for s in layout["input"] if s.name in keep)
        self.middle = stage(layout["middle"][0]) if "mid" in keep else None
        self.output_stages = nn.ModuleList(stage(s) for s in layout["output"] if s.name in keep)

    def run(self, x, cond=None, reference: Optional[ReferenceFeatures] = None, record: Optional[dict] = None,
            stop_after: Optional[str] = None, input_bias: Optional[torch.Tensor] = None):
        """``input_bias`` is added to the first feature map (the spatial expression map)."""
        reference = reference or {}
        skips = []
        h = x
        for stage in self.input_stages:
            h = stage(h, cond, reference.get(stage.spec.name), record)
            if input_bias is not None and stage.spec.kind == "conv_in":
                h = h + input_bias
            skips.append(h)
            if stage.spec.name == stop_after:
                return h
        h = self.middle(h, cond, reference.get("mid"), record)
        if stop_after == "mid":
            return h
        for stage in self.output_stages:
            h = stage(torch.cat([h, skips.pop()], dim=1), cond, reference.get(stage.spec.name), record)
            if stage.spec.name == stop_after:
                return h
        return h


class ReferenceNet(nn.Module):
    """The backbone's UNet without conditional blocks; returns its feature maps at the fusion points."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.body = _UNetBody(cfg, stem_channels=3, emb_dim=None, fuse=False, truncate_after_last_fusion=True)

    def forward(self, identity: torch.Tensor) -> ReferenceFeatures:
        features: ReferenceFeatures = {}
        if self.body.fusion_points:
            self.body.run(identity, record=features, stop_after=self.body.fusion_points[-1])
        return features


class DenoisingUNet(nn.Module):
    """The backbone: input (Eq. 11) noisy ⊕ identity ⊕ motion frames (oldest first); conditional residual
    blocks driven by time, the audio window and the expression window (Eq. 12-13); ReferenceNet features
    fused at the configured resolutions. Output: epsilon (3 channels) and v (3 channels)."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.config = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        self.time_embed = mlp([mc, emb_dim, emb_dim])
        audio_frames = 2 * cfg.audio_window + 1
        expr_frames = 2 * cfg.expression_window + 1
        self.audio_embed = mlp([audio_frames * cfg.audio_dim, emb_dim, emb_dim])
        # e^(i)' = per-frame expression embedding; the 2n+1 embeddings of the window are then combined.
        self.expression_frame_embed = mlp([cfg.expression_dim, cfg.expression_embed_dim, cfg.expression_embed_dim])
        self.expression_embed = mlp([expr_frames * cfg.expression_embed_dim, emb_dim, emb_dim])
        # psi standardisation from the config (not weights: non-persistent, so state dicts are unchanged)
        self.standardise_expression = bool(cfg.expression_scale)
        if self.standardise_expression:
            self.register_buffer("expression_mean", torch.tensor(cfg.expression_mean, dtype=torch.float32), persistent=False)
            self.register_buffer("expression_scale", torch.tensor(cfg.expression_scale, dtype=torch.float32), persistent=False)
        if cfg.expression_spatial:
            side = cfg.image_size // 8
            self.expression_spatial_map = nn.Linear(expr_frames * cfg.expression_embed_dim,
                                                    cfg.expression_spatial * side * side)
            self.expression_spatial_proj = zero_module(nn.Conv2d(cfg.expression_spatial, mc, 3, padding=1))
        self.body = _UNetBody(cfg, stem_channels=cfg.in_channels, emb_dim=emb_dim, fuse=True)
        self.out = nn.Sequential(normalization(mc), nn.SiLU(), zero_module(nn.Conv2d(mc, cfg.out_channels, 3, padding=1)))

    def embed_conditions(self, t, audio_emb, expression) -> Dict[str, torch.Tensor]:
        cfg = self.config
        b = t.shape[0]
        want_a = (b, 2 * cfg.audio_window + 1, cfg.audio_dim)
        want_e = (b, 2 * cfg.expression_window + 1, cfg.expression_dim)
        if tuple(audio_emb.shape) != want_a:
            raise ValueError(f"audio_emb must be [batch, 2n+1, audio_dim] = {list(want_a)}, got {list(audio_emb.shape)}")
        if tuple(expression.shape) != want_e:
            raise ValueError(f"expression must be [batch, 2n+1, {cfg.expression_dim}] = {list(want_e)}, "
                             f"got {list(expression.shape)}")
        dtype = self.time_embed[0].weight.dtype
        t_emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(dtype))
        a_emb = self.audio_embed(audio_emb.to(dtype).flatten(1))
        e_frames = self.expression_frame_embed(self.condition_expression(expression).to(dtype)).flatten(1)
        cond = {"time": t_emb, "audio": a_emb, "expression": self.expression_embed(e_frames)}
        if cfg.expression_spatial:
            side = cfg.image_size // 8
            grid = self.expression_spatial_map(e_frames).view(b, cfg.expression_spatial, side, side)
            grid = F.interpolate(grid, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
            cond["expression_map"] = self.expression_spatial_proj(grid)
        return cond

    def condition_expression(self, expression: torch.Tensor) -> torch.Tensor:
        """psi as the condition sees it: standardised per component when the config carries statistics."""
        if not self.standardise_expression:
            return expression
        return (expression - self.expression_mean.to(expression)) * self.expression_scale.to(expression)

    def forward(self, x_t, t, identity, motion, audio_emb, expression, reference: ReferenceFeatures):
        cfg = self.config
        b, _, h, w = x_t.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"this model works on {cfg.image_size}x{cfg.image_size} frames, got {h}x{w}")
        if motion.shape[1:] != (cfg.n_motion_frames, 3, h, w):
            raise ValueError(f"motion must be [batch, {cfg.n_motion_frames}, 3, {h}, {w}], got {list(motion.shape)}")
        x = torch.cat([x_t, identity.expand(b, -1, -1, -1), motion.reshape(b, -1, h, w)], dim=1)
        cond = self.embed_conditions(t, audio_emb, expression)
        return self.out(self.body.run(x, cond, reference, input_bias=cond.pop("expression_map", None)))


class EMOdiffheadDenoiser(nn.Module):
    """Backbone + ReferenceNet + learned audio encoder: the network a `GaussianDiffusion` calls.

    Call ``denoiser(x_t, t, identity=..., motion=..., audio_emb=..., expression=..., reference=None)``:
    - identity [B or 1, 3, H, W], motion [B, n_motion, 3, H, W] (x(i-2), x(i-1)), frames in [-1, 1];
    - audio_emb [B, 2n+1, audio_dim] from `encode_audio` of the window's per-frame features;
    - expression [B, 2n+1, 50], the expression window (already smoothed, see windows.smooth_sequence);
    - reference: `reference_features(identity)`, computed once and reused; None recomputes it.
    """

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.audio_encoder = AudioEncoder(cfg.audio, cfg.audio_dim)
        self.reference_net = ReferenceNet(cfg)
        self.unet = DenoisingUNet(cfg)

    def encode_audio(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame audio features [..., n_mels, context] -> embeddings [..., audio_dim]."""
        return self.audio_encoder(features)

    def reference_features(self, identity: torch.Tensor) -> ReferenceFeatures:
        return self.reference_net(identity)

    def forward(self, x_t, t, *, identity, motion, audio_emb, expression,
                reference: Optional[ReferenceFeatures] = None):
        if reference is None:
            reference = self.reference_features(identity)
        return self.unet(x_t, t, identity, motion, audio_emb, expression, reference)
