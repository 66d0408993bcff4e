"""Train the super-resolution head behind the Super-Resolve node on corpus frames: the input is the frame
downsampled by the scale (area filter, as a smaller render would be), the target the frame itself. Loss: L1
(sharper than L2 for SR)."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from emodiff_core import config as config_mod
from emodiff_core.models import SuperResolver

from .configfile import load_config
from .data import FrameData
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, wrap_ddp

SCHEMA = {
    "model": {"scale": 2, "channels": 48, "num_blocks": 6},
    "optim": {"lr": 5e-4, "batch_size": 16, "steps": 3000, "warmup": 100, "ema_decay": 0.998},
    "data": {"split": "train", "val_split": "val", "target_size": 128},
    "schedule": {"log_every": 50, "checkpoint_every": 500},
    "seed": 0,
    "threads": 2,
}
LOG_FIELDS = ["step", "seconds", "loss", "lr", "val_psnr", "val_psnr_bilinear"]


def degrade(images: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(images, scale_factor=1.0 / scale, mode="area")


def psnr01(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((10 * torch.log10(1.0 / ((a - b) ** 2).flatten(1).mean(1).clamp(min=1e-10))).mean())


def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None) -> str:
    cfg_file = load_config(config_path, SCHEMA)
    torch.set_num_threads(int(cfg_file["threads"]))
    info = setup_distributed(device)
    cfg = config_mod.from_dict(config_mod.SuperResConfig, cfg_file["model"], where=f"{config_path}: model")
    o, d = cfg_file["optim"], cfg_file["data"]
    seed, total = int(cfg_file["seed"]), int(max_steps or o["steps"])
    os.makedirs(out_dir, exist_ok=True)
    data = FrameData(data_dir, d["split"], size=d["target_size"])
    try:
        val = FrameData(data_dir, d["val_split"], size=d["target_size"], limit=8)
    except Exception:
        val = None
    torch.manual_seed(seed)
    model = SuperResolver(cfg).to(info.device)
    ema = EMA(model, o["ema_decay"])
    ddp = wrap_ddp(model, info)
    opt = torch.optim.Adam(model.parameters(), lr=o["lr"])
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        target, _ = data.batch(rng, o["batch_size"])
        target = target.to(info.device)
        lr = lr_at(step, o["lr"], o["warmup"], total)
        model.train()
        with autocast(info.device):
            out = ddp(degrade(target, cfg.scale))
        loss = F.l1_loss(out.float(), target)
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
        return {"val_psnr": psnr01(out, target), "val_psnr_bilinear": psnr01(bilinear.clamp(0, 1), target)}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "superres", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn, modules={"model": model, "ema": ema.shadow},
              optimizers={"opt": opt}, info=info, log=log, resume=resume,
              checkpoint_every=cfg_file["schedule"]["checkpoint_every"], log_every=cfg_file["schedule"]["log_every"],
              on_checkpoint=on_checkpoint, sample_every=cfg_file["schedule"]["checkpoint_every"], on_sample=on_sample,
              desc="superres", stop_after=stop_after)
    return os.path.join(out_dir, "superres.safetensors")


def _save_strip(path, *columns):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = [np.concatenate([(c[i].clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy() for c in columns], 1)
            for i in range(columns[0].shape[0])]
    cv2.imwrite(path, np.concatenate(rows, 0)[..., ::-1])
