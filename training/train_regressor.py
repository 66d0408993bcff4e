"""Train the expression regressor (image -> psi), the corpus' stand-in for DECA when measuring generated
frames (FLIE, emotion accuracy). The loss is the squared error of standardised psi, with the named
(meaningful) components weighted 1 and the low-energy rest 0.1."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
import torch

from emodiff_core import config as config_mod
from emodiff_core.models import ExpressionRegressor

from .configfile import load_config
from .data import FrameData
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, wrap_ddp

NAMED_COMPONENTS = 13   # training/corpus/facemodel.py EXPRESSION_COMPONENTS
SCHEMA = {
    "model": {"image_size": 64, "channels": 32},
    "optim": {"lr": 1e-3, "batch_size": 64, "steps": 4000, "warmup": 100, "ema_decay": 0.998},
    "data": {"split": "train", "val_split": "val", "augment": True},
    "schedule": {"log_every": 50, "checkpoint_every": 500},
    "seed": 0,
    "threads": 2,
}
LOG_FIELDS = ["step", "seconds", "loss", "lr", "val_r2_named"]


def r2_per_component(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination of each column."""
    ss_res = ((pred - target) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0).clamp(min=1e-12)
    return 1.0 - ss_res / ss_tot


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter and a little noise (generated frames are not exactly like renders)."""
    b = images.shape[0]
    gain = 1.0 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 0.05 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    noise = 0.02 * torch.randn(images.shape, generator=gen)
    return (images * gain + bias + noise).clamp(0, 1)


def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None) -> str:
    cfg_file = load_config(config_path, SCHEMA)
    torch.set_num_threads(int(cfg_file["threads"]))
    info = setup_distributed(device)
    cfg = config_mod.from_dict(config_mod.RegressorConfig, dict(cfg_file["model"], expression_dim=50),
                               where=f"{config_path}: model")
    o, d = cfg_file["optim"], cfg_file["data"]
    seed, total = int(cfg_file["seed"]), int(max_steps or o["steps"])
    os.makedirs(out_dir, exist_ok=True)
    data = FrameData(data_dir, d["split"], size=cfg.image_size, need_psi=True)
    try:
        val = FrameData(data_dir, d["val_split"], size=cfg.image_size, need_psi=True)
    except Exception:
        val = None
    torch.manual_seed(seed)
    model = ExpressionRegressor(cfg).to(info.device)
    model.psi_mean.copy_(data.psi.mean(0))
    model.psi_std.copy_(data.psi.std(0).clamp(min=1e-4))
    ema = EMA(model, o["ema_decay"])
    ddp = wrap_ddp(model, info)
    opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], weight_decay=1e-4)
    weights = torch.full((50,), 0.1, device=info.device)
    weights[:NAMED_COMPONENTS] = 1.0
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        images, psi = data.batch(rng, o["batch_size"])
        if d["augment"]:
            images = _augment(images, gen)
        images, psi = images.to(info.device) * 2 - 1, psi.to(info.device)
        lr = lr_at(step, o["lr"], o["warmup"], total)
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
        idx = torch.from_numpy(rng.choice(len(val), size=min(2000, len(val)), replace=False))
        images = val.frames[idx].float().to(info.device) / 127.5 - 1
        pred = torch.cat([ema.shadow(images[i: i + 256]) for i in range(0, len(images), 256)]).cpu()
        r2 = r2_per_component(pred, val.psi[idx])[:NAMED_COMPONENTS]
        return {"val_r2_named": float(r2.mean())}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "regressor", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn, modules={"model": model, "ema": ema.shadow},
              optimizers={"opt": opt}, info=info, log=log, resume=resume,
              checkpoint_every=cfg_file["schedule"]["checkpoint_every"], log_every=cfg_file["schedule"]["log_every"],
              on_checkpoint=on_checkpoint, sample_every=cfg_file["schedule"]["checkpoint_every"], on_sample=on_sample,
              desc="regressor", stop_after=stop_after)
    return os.path.join(out_dir, "regressor.safetensors")
