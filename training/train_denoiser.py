"""Train the denoiser (backbone + ReferenceNet + audio encoder) with the hybrid, lip and eye losses (Eq. 16).

Each example is frame i of a clip with an identity frame drawn from the same clip (section 3.2.2), the
motion frames x(i-2), x(i-1) (identity copies before the clip starts), and the audio and expression
windows i-n .. i+n. Periodically: a CSV row, EMA weights exported to <out>/denoiser.safetensors, and a
sample image (identity | motion x(i-1) | ground truth | sample) with the validation PSNR of single-frame
samples given ground-truth motion frames (sampled from pure noise with ``schedule.sample_steps`` steps of the
core's default sampler, `emodiff_core.sampling.SamplingSettings`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from emodiff_core.checkpoint import load_components
from emodiff_core.diffusion import GaussianDiffusion, LossWeights, hybrid_loss
from emodiff_core.models import EMOdiffheadDenoiser
from emodiff_core.sampling import SamplingError, SamplingSettings

from .configfile import ModelSection, TrainingConfigError, load_config, require, require_positive
from .data import IDENTITY_SOURCES, DenoiserData, mean_psnr, model_range_to_01, optional_validation_data
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, unwrap, wrap_ddp


@dataclass(frozen=True)
class OptimSection:
    lr: float
    batch_size: int
    steps: int
    warmup: int
    grad_clip: float
    ema_decay: float

    def validate(self) -> None:
        require(self.lr >= 0 and self.warmup >= 0, "optim.lr and optim.warmup must be >= 0")
        require_positive("optim", batch_size=self.batch_size, steps=self.steps, grad_clip=self.grad_clip)
        require(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class DataSection:
    split: str
    motion_noise: float
    identity_from: str
    motion_dropout: float
    val_split: str
    val_examples: int

    def validate(self) -> None:
        require(self.identity_from in IDENTITY_SOURCES,
                f"data.identity_from must be one of {', '.join(IDENTITY_SOURCES)}, got {self.identity_from!r}")
        require(0.0 <= self.motion_dropout <= 1.0, f"data.motion_dropout must be in [0, 1], got {self.motion_dropout}")
        require(self.motion_noise >= 0.0, f"data.motion_noise must be >= 0, got {self.motion_noise}")
        require_positive("data", val_examples=self.val_examples)


@dataclass(frozen=True)
class ScheduleSection:
    """Every ``*_every`` counts optimisation steps; ``sample_every`` 0 turns validation samples off.
    ``sample_steps``: denoising steps of the validation samples (from pure noise)."""

    log_every: int
    checkpoint_every: int
    sample_every: int
    sample_steps: int

    def validate(self) -> None:
        require_positive("schedule", log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                         sample_steps=self.sample_steps)
        require(self.sample_every >= 0, f"schedule.sample_every must be >= 0, got {self.sample_every}")


@dataclass(frozen=True)
class DenoiserTrainingConfig:
    """A denoiser training file (training/configs/denoiser_*.json). ``loss`` holds the weights of Eq. 16."""

    model: ModelSection
    loss: LossWeights
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int

    def validate(self) -> None:
        require_positive("", threads=self.threads)


LOG_FIELDS = ["step", "seconds", "loss", "simple", "vlb", "lip", "eye", "lr", "grad_norm", "val_psnr", "val_loss"]


def make_cond(model: EMOdiffheadDenoiser, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {"identity": batch["identity"], "motion": batch["motion"],
            "audio_emb": unwrap(model).encode_audio(batch["audio"]), "expression": batch["expression"]}


def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None,
          max_steps: int = None, stop_after: int = None, init_from: str = None) -> str:
    """Train the denoiser; ``init_from`` starts from the weights of an exported checkpoint's denoiser (fine-tuning;
    same model config required; a fresh optimizer and schedule), ``resume`` from the run folder's own state."""
    cfg_file = load_config(config_path, DenoiserTrainingConfig)
    torch.set_num_threads(cfg_file.threads)
    info = setup_distributed(device)
    model_cfg = cfg_file.model.build("denoiser", config_path)
    optim_cfg, sched, data_cfg = cfg_file.optim, cfg_file.schedule, cfg_file.data
    seed = cfg_file.seed
    total = int(max_steps or optim_cfg.steps)
    # validation samples start from pure noise: the single-frame quality, not the rollout's anchoring
    sampling = SamplingSettings(steps=sched.sample_steps, start_noise=1.0)
    try:
        sampling.timesteps(model_cfg.diffusion.steps)
    except SamplingError as exc:
        raise TrainingConfigError(f"{config_path}: schedule.sample_steps: {exc}; use at most "
                                  f"{model_cfg.diffusion.steps}") from None
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(seed)   # identical initial weights on every rank
    model = EMOdiffheadDenoiser(model_cfg).to(info.device)
    if init_from:
        start = load_components(init_from, ["denoiser"])["denoiser"]
        if start.config != model_cfg:
            raise TrainingConfigError(f"{init_from}: its denoiser was built from another model config than "
                                      f"{config_path}'s model section; fine-tune with the same preset and overrides")
        model.load_state_dict(start.state_dict())
    ema = EMA(model, optim_cfg.ema_decay)
    ddp_model = wrap_ddp(model, info)
    opt = torch.optim.AdamW(model.parameters(), lr=optim_cfg.lr, weight_decay=0.0)
    diffusion = GaussianDiffusion.from_config(model_cfg.diffusion)
    weights = cfg_file.loss
    data = DenoiserData(data_dir, model_cfg, data_cfg.split, identity_from=data_cfg.identity_from,
                        motion_dropout=data_cfg.motion_dropout)
    val = _validation_set(data_dir, model_cfg, data_cfg, seed, announce=info.main)
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)
    motion_noise = data_cfg.motion_noise

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        batch = {k: v.to(info.device) for k, v in data.batch(rng, optim_cfg.batch_size).items()}
        if motion_noise > 0:   # robustness to the drift of autoregressive inference
            batch["motion"] = batch["motion"] + motion_noise * torch.randn(batch["motion"].shape, generator=gen).to(info.device)
        t = diffusion.sample_timesteps(len(batch["x0"]), info.device, gen)
        noise = torch.randn(batch["x0"].shape, generator=gen).to(info.device)
        lr = lr_at(step, optim_cfg.lr, optim_cfg.warmup, total)
        model.train()
        with autocast(info.device):
            terms = hybrid_loss(diffusion, ddp_model, batch["x0"], t, make_cond(ddp_model, batch), weights,
                                landmarks=batch["landmarks"], noise=noise)
            loss = terms["loss"].mean()
        grad_norm = optimizer_step(opt, loss, lr, model.parameters(), optim_cfg.grad_clip)
        ema.update(model, step)
        out = {k: float(v.detach().mean()) for k, v in terms.items()}
        out.update(lr=lr, grad_norm=grad_norm)
        return out

    def on_sample(done: int) -> Dict[str, float]:
        return _validate(ema.shadow, diffusion, val, sampling, out_dir, done, seed, weights)

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "denoiser", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn,
              modules={"model": model, "ema": ema.shadow}, optimizers={"opt": opt}, info=info, log=log,
              resume=resume, checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.sample_every, on_sample=on_sample,
              desc="denoiser", stop_after=stop_after)
    return os.path.join(out_dir, "denoiser.safetensors")


def _validation_set(data_dir: str, model_cfg, data_cfg: DataSection, seed: int,
                    announce: bool) -> Optional[Dict[str, torch.Tensor]]:
    """A fixed batch of ``data.val_examples`` validation examples, or None when the split has no clips."""
    val = optional_validation_data(
        lambda: DenoiserData(data_dir, model_cfg, data_cfg.val_split, identity_from=data_cfg.identity_from),
        data_cfg.val_split, announce)
    if val is None:
        return None
    rng = np.random.default_rng([seed, 999_999])
    return val.batch(rng, data_cfg.val_examples)


@torch.no_grad()
def _validate(model, diffusion, val, sampling: SamplingSettings, out_dir, step, seed,
              weights: LossWeights) -> Dict[str, float]:
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
    x = sampling.run(sampling.process(diffusion), model, batch["x0"].shape, cond,
                     generator=torch.Generator().manual_seed(seed), device=device)
    value = mean_psnr(model_range_to_01(x), model_range_to_01(batch["x0"]))
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
