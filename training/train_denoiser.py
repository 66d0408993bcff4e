"""Train the denoiser (backbone + ReferenceNet + audio encoder) with the hybrid, lip and eye losses (Eq. 16).

Each example is frame i of a clip with an identity frame drawn from the same clip (section 3.2.2), the
motion frames x(i-2), x(i-1) (identity copies before the clip starts), and the audio and expression
windows i-n .. i+n. Periodically: a CSV row, EMA weights exported to <out>/denoiser.safetensors, and a
sample image (identity | motion x(i-1) | ground truth | sample) with the validation PSNR of single-frame
samples given ground-truth motion frames.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
import torch

from emodiff_core import config as config_mod
from emodiff_core.checkpoint import load_components
from emodiff_core.diffusion import GaussianDiffusion, LossWeights, hybrid_loss, respace, sample
from emodiff_core.models import EMOdiffheadDenoiser

from .configfile import TrainingConfigError, load_config
from .data import DenoiserData
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, unwrap, wrap_ddp

SCHEMA = {
    "model": {"preset": "demo", "overrides": {}},
    "loss": {"vlb": 0.001, "lip": 0.2, "eye": 0.1},
    "optim": {"lr": 2e-4, "batch_size": 8, "steps": 20000, "warmup": 200, "grad_clip": 1.0, "ema_decay": 0.999},
    "data": {"split": "train", "motion_noise": 0.0, "identity_from": "same_clip", "motion_dropout": 0.0,
             "val_split": "val", "val_examples": 8},
    "schedule": {"log_every": 25, "checkpoint_every": 500, "sample_every": 1000, "sample_spacing": "ddim10"},
    "seed": 0,
    "threads": 2,
}

LOG_FIELDS = ["step", "seconds", "loss", "simple", "vlb", "lip", "eye", "lr", "grad_norm", "val_psnr", "val_loss"]


def build_config(model_section: dict, where: str) -> config_mod.DenoiserConfig:
    base = config_mod.preset("denoiser", model_section["preset"])
    merged = config_mod.to_dict(base)
    for key, value in model_section["overrides"].items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return config_mod.from_dict(config_mod.DenoiserConfig, merged, where=f"{where}: model")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (computed on the [0, 1] scale)."""
    mse = (((a - b) / 2.0) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def make_cond(model: EMOdiffheadDenoiser, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {"identity": batch["identity"], "motion": batch["motion"],
            "audio_emb": unwrap(model).encode_audio(batch["audio"]), "expression": batch["expression"]}


def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None,
          max_steps: int = None, stop_after: int = None, init_from: str = None) -> str:
    """Train the denoiser; ``init_from`` starts from the weights of an exported checkpoint's denoiser (fine-tuning;
    same model config required; a fresh optimizer and schedule), ``resume`` from the run folder's own state."""
    cfg_file = load_config(config_path, SCHEMA)
    torch.set_num_threads(int(cfg_file["threads"]))
    info = setup_distributed(device)
    model_cfg = build_config(cfg_file["model"], config_path)
    optim_cfg, sched = cfg_file["optim"], cfg_file["schedule"]
    seed = int(cfg_file["seed"])
    total = int(max_steps or optim_cfg["steps"])
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(seed)   # identical initial weights on every rank
    model = EMOdiffheadDenoiser(model_cfg).to(info.device)
    if init_from:
        start = load_components(init_from, ["denoiser"])["denoiser"]
        if start.config != model_cfg:
            raise TrainingConfigError(f"{init_from}: its denoiser was built from another model config than "
                                      f"{config_path}'s model section; fine-tune with the same preset and overrides")
        model.load_state_dict(start.state_dict())
    ema = EMA(model, optim_cfg["ema_decay"])
    ddp_model = wrap_ddp(model, info)
    opt = torch.optim.AdamW(model.parameters(), lr=optim_cfg["lr"], weight_decay=0.0)
    diffusion = GaussianDiffusion.from_config(model_cfg.diffusion)
    weights = LossWeights(**cfg_file["loss"])
    d = cfg_file["data"]
    data = DenoiserData(data_dir, model_cfg, d["split"], identity_from=d["identity_from"],
                        motion_dropout=float(d["motion_dropout"]))
    val = _validation_set(data_dir, model_cfg, cfg_file["data"], seed)
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)
    motion_noise = float(cfg_file["data"]["motion_noise"])

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        batch = {k: v.to(info.device) for k, v in data.batch(rng, optim_cfg["batch_size"]).items()}
        if motion_noise > 0:   # robustness to the drift of autoregressive inference
            batch["motion"] = batch["motion"] + motion_noise * torch.randn(batch["motion"].shape, generator=gen).to(info.device)
        t = diffusion.sample_timesteps(len(batch["x0"]), info.device, gen)
        noise = torch.randn(batch["x0"].shape, generator=gen).to(info.device)
        lr = lr_at(step, optim_cfg["lr"], optim_cfg["warmup"], total)
        model.train()
        with autocast(info.device):
            terms = hybrid_loss(diffusion, ddp_model, batch["x0"], t, make_cond(ddp_model, batch), weights,
                                landmarks=batch["landmarks"], noise=noise)
            loss = terms["loss"].mean()
        grad_norm = optimizer_step(opt, loss, lr, model.parameters(), optim_cfg["grad_clip"])
        ema.update(model, step)
        out = {k: float(v.detach().mean()) for k, v in terms.items()}
        out.update(lr=lr, grad_norm=grad_norm)
        return out

    def on_sample(done: int) -> Dict[str, float]:
        return _validate(ema.shadow, diffusion, val, sched["sample_spacing"], out_dir, done, seed, weights)

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "denoiser", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn,
              modules={"model": model, "ema": ema.shadow}, optimizers={"opt": opt}, info=info, log=log,
              resume=resume, checkpoint_every=sched["checkpoint_every"], log_every=sched["log_every"],
              on_checkpoint=on_checkpoint, sample_every=sched["sample_every"], on_sample=on_sample,
              desc="denoiser", stop_after=stop_after)
    return os.path.join(out_dir, "denoiser.safetensors")


def _validation_set(data_dir, model_cfg, data_cfg, seed):
    try:
        val = DenoiserData(data_dir, model_cfg, data_cfg["val_split"], identity_from=data_cfg["identity_from"])
    except Exception:
        return None
    rng = np.random.default_rng([seed, 999_999])
    return {k: v for k, v in val.batch(rng, data_cfg["val_examples"]).items()}


@torch.no_grad()
def _validate(model, diffusion, val, spacing, out_dir, step, seed, weights) -> Dict[str, float]:
    if val is None:
        return {}
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in val.items()}
    cond = make_cond(model, batch)
    gen = torch.Generator().manual_seed(seed + 7)
    t = diffusion.sample_timesteps(len(batch["x0"]), device, gen)
    noise = torch.randn(batch["x0"].shape, generator=gen).to(device)
    val_loss = float(hybrid_loss(diffusion, model, batch["x0"], t, cond, weights, landmarks=batch["landmarks"],
                                 noise=noise)["loss"].mean())
    cond["reference"] = model.reference_features(batch["identity"])
    x = sample("ddim", respace(diffusion, spacing), model, batch["x0"].shape, cond,
               generator=torch.Generator().manual_seed(seed), device=device)
    value = float(psnr(x, batch["x0"]).mean())
    _save_grid(os.path.join(out_dir, "samples", f"step{step:07d}.png"),
               [batch["identity"], batch["motion"][:, -1], batch["x0"], x])
    return {"val_psnr": value, "val_loss": val_loss}


def _save_grid(path, columns):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = []
    for i in range(columns[0].shape[0]):
        rows.append(np.concatenate([((c[i].clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).cpu().numpy()
                                    for c in columns], axis=1))
    cv2.imwrite(path, np.concatenate(rows, axis=0)[..., ::-1])
