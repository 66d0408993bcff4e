"""Train the super-resolution head behind the Super-Resolve node on corpus frames: the input is the frame
downsampled by the scale (area filter, as a smaller render would be), the target the frame itself. Loss: L1
(sharper than L2 for SR), plus ``loss.detail`` x L1 between the outputs' and the targets' Laplacians (the
finest detail, what `evaluate-portraits`' sharpness measures; an L1 on pixels alone leaves it blurred where
the input cannot say where an edge lies), plus ``loss.texture`` x L1 between their local detail maps (the mean
absolute Laplacian over ``texture_window``-pixel squares: how much fine texture a patch holds, not where its
ripples lie). Both pixel terms pay the mean where the input cannot place the detail, which is a smooth patch;
the texture term asks for as much detail as the photo had there, so the head learns to invent skin and hair
texture of the right strength where a 64 px input has lost its layout (what adversarial SR heads learn, without
a discriminator)."""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from emodiff_core.diffusion.losses import laplacian, local_detail
from emodiff_core.models import SuperResolver

from .configfile import ModelSection, ScheduleSection, load_config, require, require_positive
from .clips import DataFolders
from .data import FrameData, blur_frames, half_blurred_sigmas, mean_psnr, optional_validation_data
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, wrap_ddp

VAL_CLIPS = 8   # validation clips loaded (frames are drawn from them)


@dataclass(frozen=True)
class OptimSection:
    lr: float
    batch_size: int
    steps: int
    warmup: int
    ema_decay: float

    def validate(self) -> None:
        require(self.lr >= 0 and self.warmup >= 0, "optim.lr and optim.warmup must be >= 0")
        require_positive("optim", batch_size=self.batch_size, steps=self.steps)
        require(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class DataSection:
    """``target_size``: the frames are resized to it (the output size); the input is that / model.scale.
    ``input_blur``: the largest Gaussian blur (sigma, input pixels) laid on the input of half the examples: the
    denoiser's frames are softer than a downsampled photo, so the head learns to restore detail, not only to
    upscale (0 = off, the value of files written before the key existed; validation inputs are never blurred)."""

    split: str
    val_split: str
    target_size: int
    input_blur: float

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"input_blur": 0.0}

    def validate(self) -> None:
        require_positive("data", target_size=self.target_size)
        require(self.input_blur >= 0.0, f"data.input_blur must be >= 0, got {self.input_blur}")


@dataclass(frozen=True)
class LossSection:
    """``detail``: weight of the Laplacian L1 term (0 = pixels only, the value of files without a loss section).
    ``texture``: weight of the local-detail L1 term, over ``texture_window`` x ``texture_window`` output pixels
    (module docstring; 0 = off, the value of files written before the key existed), placed every
    ``texture_stride`` pixels: 0 = the window (side by side squares, the value of files written before the key
    existed), 1 = at every pixel (the loss no longer has a grid of its own for the texture to follow).
    ``texture_mouth``: the texture term's weight on the squares that touch the lips (`mouth_mask`), relative to the
    rest of the face: 1 = the same (the value of files written before the key existed), 0 = off the lips, where
    the pixel terms alone decide, so that invented texture cannot move the lip edges a landmark fit reads."""

    detail: float
    texture: float
    texture_window: int
    texture_stride: int
    texture_mouth: float

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"texture": 0.0, "texture_window": 4, "texture_stride": 0,
                                                      "texture_mouth": 1.0}

    def validate(self) -> None:
        require(self.detail >= 0.0, f"loss.detail must be >= 0, got {self.detail}")
        require(self.texture >= 0.0, f"loss.texture must be >= 0, got {self.texture}")
        require_positive("loss", texture_window=self.texture_window)
        require(0 <= self.texture_stride <= self.texture_window,
                f"loss.texture_stride must be 0 (the window) or 1..texture_window ({self.texture_window}), "
                f"got {self.texture_stride}")
        require(0.0 <= self.texture_mouth <= 1.0, f"loss.texture_mouth must be in [0, 1], got {self.texture_mouth}")


@dataclass(frozen=True)
class SuperResTrainingConfig:
    """A super-resolution training file (training/configs/superres_*.json)."""

    model: ModelSection
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int
    loss: LossSection

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"loss": {"detail": 0.0}}   # LossSection adds its own keys

    def validate(self) -> None:
        require_positive("", threads=self.threads)


LOG_FIELDS = ["step", "seconds", "loss", "lr", "val_psnr", "val_psnr_bilinear"]


def degrade(images: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(images, scale_factor=1.0 / scale, mode="area")


LIPS = slice(48, 68)    # the outer and inner lip points of the 68-point layout
LIP_MARGIN = 0.25       # the lips' box grows by this fraction of its width on every side: the skin around them


def mouth_mask(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 1, size, size]: 1 inside each frame's lip box (its 68 points [B, 68, 2] in pixels, grown by
    ``LIP_MARGIN``), 0 elsewhere."""
    lips = landmarks[:, LIPS]
    low, high = lips.min(1).values, lips.max(1).values            # [B, 2] (x, y)
    grow = LIP_MARGIN * (high[:, :1] - low[:, :1])                 # [B, 1] of the box's width
    low, high = low - grow, high + grow
    centres = torch.arange(size, dtype=landmarks.dtype, device=landmarks.device) + 0.5
    inside_x = (centres >= low[:, :1]) & (centres < high[:, :1])   # [B, size]
    inside_y = (centres >= low[:, 1:]) & (centres < high[:, 1:])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]


def texture_weights(landmarks: torch.Tensor, size: int, window: int, stride: int, mouth: float) -> torch.Tensor:
    """The texture term's weight for every square of `local_detail` [B, 1, h, w]: ``mouth`` where the square
    touches the lip box, 1 elsewhere."""
    touches = F.max_pool2d(mouth_mask(landmarks, size), window, stride or window)
    return 1.0 - (1.0 - mouth) * touches


def superres_loss(out: torch.Tensor, target: torch.Tensor, detail: float, texture: float = 0.0,
                  texture_window: int = 4, texture_stride: int = 0,
                  texture_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L1 on pixels + ``detail`` x L1 on their Laplacians + ``texture`` x L1 on their local detail maps
    (module docstring), the last a mean weighted by ``texture_weight`` ([B, 1, h, w], `texture_weights`) when
    given."""
    loss = F.l1_loss(out, target)
    if detail > 0:
        loss = loss + detail * F.l1_loss(laplacian(out), laplacian(target))
    if texture > 0:
        gap = (local_detail(out, texture_window, texture_stride)
               - local_detail(target, texture_window, texture_stride)).abs()
        if texture_weight is None:
            loss = loss + texture * gap.mean()
        else:
            weighted = (gap * texture_weight).sum() / (texture_weight.sum() * gap.shape[1]).clamp_min(1e-8)
            loss = loss + texture * weighted
    return loss


def train(config_path: str, data_dir: DataFolders, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None) -> str:
    cfg_file = load_config(config_path, SuperResTrainingConfig)
    torch.set_num_threads(cfg_file.threads)
    info = setup_distributed(device)
    cfg = cfg_file.model.build("superres", config_path)
    if cfg.mouth_branch:
        raise ValueError(f"{config_path}: model.mouth_branch is assembled from two trained heads by "
                         "`training export --superres-mouth-from`, not trained; remove it from the config")
    o, d, sched, lw = cfg_file.optim, cfg_file.data, cfg_file.schedule, cfg_file.loss
    seed, total = cfg_file.seed, int(max_steps or o.steps)
    os.makedirs(out_dir, exist_ok=True)
    lips_weighted = lw.texture > 0 and lw.texture_mouth != 1.0
    data = FrameData(data_dir, d.split, size=d.target_size, need_landmarks=lips_weighted)
    val = _validation_set(data_dir, d.val_split, d.target_size, announce=info.main)
    torch.manual_seed(seed)
    model = SuperResolver(cfg).to(info.device)
    ema = EMA(model, o.ema_decay)
    ddp = wrap_ddp(model, info)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        idx = data.draw(rng, o.batch_size)
        target = data.images(idx).to(info.device)
        weight = None
        if lips_weighted:
            weight = texture_weights(data.landmarks[idx].to(info.device), d.target_size, lw.texture_window,
                                     lw.texture_stride, lw.texture_mouth)
        lr = lr_at(step, o.lr, o.warmup, total)
        model.train()
        low = degrade(target, cfg.scale)
        if d.input_blur > 0:
            low = blur_frames(low[:, None], half_blurred_sigmas(rng, len(low), d.input_blur))[:, 0]
        with autocast(info.device):
            out = ddp(low)
        loss = superres_loss(out.float(), target, lw.detail, lw.texture, lw.texture_window, lw.texture_stride,
                             weight)
        optimizer_step(opt, loss, lr)
        ema.update(model, step)
        return {"loss": float(loss.detach()), "lr": lr}

    @torch.no_grad()
    def on_sample(done: int) -> Dict[str, float]:
        if val is None:
            return {}
        rng = np.random.default_rng([seed, 4242])
        target, _ = val.batch(rng, 64)
        target = target.to(info.device)
        low = degrade(target, cfg.scale)
        out = ema.shadow(low)
        bilinear = F.interpolate(low, scale_factor=cfg.scale, mode="bilinear", align_corners=False)
        _save_strip(os.path.join(out_dir, "samples", f"step{done:07d}.png"), bilinear[:4], out[:4], target[:4])
        return {"val_psnr": mean_psnr(out, target), "val_psnr_bilinear": mean_psnr(bilinear, target)}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "superres", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn, modules={"model": model, "ema": ema.shadow},
              optimizers={"opt": opt}, info=info, log=log, resume=resume,
              checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.checkpoint_every, on_sample=on_sample,
              desc="superres", stop_after=stop_after)
    return os.path.join(out_dir, "superres.safetensors")


def _validation_set(data_dir: DataFolders, split: str, size: int, announce: bool) -> Optional[FrameData]:
    """Frames of the validation split's first clips, or None when the dataset has no clips in it."""
    return optional_validation_data(lambda: FrameData(data_dir, split, size=size, limit=VAL_CLIPS), split, announce)


def _save_strip(path, *columns):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = [np.concatenate([(c[i].clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy() for c in columns], 1)
            for i in range(columns[0].shape[0])]
    cv2.imwrite(path, np.concatenate(rows, 0)[..., ::-1])
