"""Train the expression regressor (image -> psi), the corpus' stand-in for DECA when measuring generated
frames (FLIE, emotion accuracy). The loss is the squared error of standardised psi, with the named
(meaningful) components weighted 1 and the low-energy rest 0.1."""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from emodiff_core.metrics import r2_per_component
from emodiff_core.models import ExpressionRegressor

from .configfile import ModelSection, ScheduleSection, load_config, require, require_positive
from .clips import DataFolders
from .data import FrameData, blur_frames, half_blurred_sigmas, optional_validation_data
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, wrap_ddp

NAMED_COMPONENTS = 13   # emodiff_core/facemodel.py EXPRESSION_COMPONENTS
VAL_FRAMES = 2000       # validation frames drawn once per evaluation


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
    """``augment``: brightness/contrast jitter and noise on the training images. ``blur``: the largest Gaussian
    blur (sigma, pixels of the 64 px frame) laid on half of the training images (`data.half_blurred_sigmas`): the
    regressor reads generated frames, which are softer than the corpus' renders, and an expression should read the
    same through that softness (0 = off, the files written before it existed)."""

    split: str
    val_split: str
    augment: bool
    blur: float

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"blur": 0.0}

    def validate(self) -> None:
        require(self.blur >= 0.0, f"data.blur must be >= 0, got {self.blur}")


@dataclass(frozen=True)
class RegressorTrainingConfig:
    """An expression-regressor training file (training/configs/regressor_*.json)."""

    model: ModelSection
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int

    def validate(self) -> None:
        require_positive("", threads=self.threads)


LOG_FIELDS = ["step", "seconds", "loss", "lr", "val_r2_named"]


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter and a little noise (generated frames are not exactly like renders)."""
    b = images.shape[0]
    gain = 1.0 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 0.05 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    noise = 0.02 * torch.randn(images.shape, generator=gen)
    return (images * gain + bias + noise).clamp(0, 1)


def train(config_path: str, data_dir: DataFolders, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None) -> str:
    cfg_file = load_config(config_path, RegressorTrainingConfig)
    torch.set_num_threads(cfg_file.threads)
    info = setup_distributed(device)
    cfg = cfg_file.model.build("regressor", config_path)
    o, d, sched = cfg_file.optim, cfg_file.data, cfg_file.schedule
    seed, total = cfg_file.seed, int(max_steps or o.steps)
    os.makedirs(out_dir, exist_ok=True)
    data = FrameData(data_dir, d.split, size=cfg.image_size, need_psi=True)
    val = _validation_set(data_dir, d.val_split, cfg.image_size, announce=info.main)
    torch.manual_seed(seed)
    model = ExpressionRegressor(cfg).to(info.device)
    model.psi_mean.copy_(data.psi.mean(0))
    model.psi_std.copy_(data.psi.std(0).clamp(min=1e-4))
    ema = EMA(model, o.ema_decay)
    ddp = wrap_ddp(model, info)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=1e-4)
    weights = torch.full((cfg.expression_dim,), 0.1, device=info.device)
    weights[:NAMED_COMPONENTS] = 1.0
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        images, psi = data.batch(rng, o.batch_size)
        if d.blur > 0:
            images = blur_frames(images[:, None], half_blurred_sigmas(rng, len(images), d.blur))[:, 0]
        if d.augment:
            images = _augment(images, gen)
        images, psi = images.to(info.device) * 2 - 1, psi.to(info.device)
        lr = lr_at(step, o.lr, o.warmup, total)
        model.train()
        with autocast(info.device):
            pred = ddp(images)
        err = ((pred.float() - psi) / model.psi_std) ** 2
        loss = (err * weights).mean()
        optimizer_step(opt, loss, lr)
        ema.update(model, step)
        return {"loss": float(loss.detach()), "lr": lr}

    @torch.no_grad()
    def on_sample(done: int) -> Dict[str, float]:
        if val is None:
            return {}
        rng = np.random.default_rng([seed, 12345])
        idx = torch.from_numpy(rng.choice(len(val), size=min(VAL_FRAMES, len(val)), replace=False))
        images = val.frames[idx].float().to(info.device) / 127.5 - 1
        pred = torch.cat([ema.shadow(images[i: i + 256]) for i in range(0, len(images), 256)]).cpu()
        r2 = r2_per_component(pred.float().numpy(), val.psi[idx].numpy())[:NAMED_COMPONENTS]
        return {"val_r2_named": float(r2.mean())}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "regressor", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn, modules={"model": model, "ema": ema.shadow},
              optimizers={"opt": opt}, info=info, log=log, resume=resume,
              checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.checkpoint_every, on_sample=on_sample,
              desc="regressor", stop_after=stop_after)
    return os.path.join(out_dir, "regressor.safetensors")


def _validation_set(data_dir: DataFolders, split: str, size: int, announce: bool) -> Optional[FrameData]:
    """The frames and psi of the validation split, or None when the dataset has no clips in it."""
    return optional_validation_data(lambda: FrameData(data_dir, split, size=size, need_psi=True), split, announce)
