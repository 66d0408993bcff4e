"""Train the denoiser (backbone + ReferenceNet + audio encoder) with the hybrid, lip and eye losses (Eq. 16).

Each example is frame i of a clip with an identity frame drawn from the same clip (section 3.2.2), the
motion frames x(i-2), x(i-1) (identity copies before the clip starts), and the audio and expression
windows i-n .. i+n. Periodically: a CSV row, EMA weights exported to <out>/denoiser.safetensors, and a
sample image (identity | motion x(i-1) | ground truth | sample) with the validation PSNR of single-frame
samples given ground-truth motion frames (sampled from pure noise with ``schedule.sample_steps`` steps of the
core's default sampler, `emodiff_core.sampling.SamplingSettings`).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from emodiff_core.checkpoint import load_components
from emodiff_core.diffusion import GaussianDiffusion, LossWeights, hybrid_loss
from emodiff_core.models import EMOdiffheadDenoiser
from emodiff_core.sampling import DEFAULT as DEFAULT_SAMPLING, SamplingError, SamplingSettings

from .configfile import ModelSection, TrainingConfigError, load_config, require, require_positive
from .clips import DataFolders
from .data import (EXAMPLE_SOURCES, IDENTITY_SOURCES, DenoiserData, TwinOptions, blur_frames,
                   examples_from, expression_statistics, mean_psnr, model_range_to_01, motion_blur_sigmas,
                   optional_validation_data)
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, unwrap, wrap_ddp
from .probes import PROBE_DRAW_SEED, emotion_probes, half_intensity_probe


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
    """``motion_noise``: std of Gaussian noise on the motion frames; ``motion_blur``: the largest Gaussian blur
    (sigma, pixels of the model's size) laid on the motion frames of half the examples (`blur_frames`), so that
    detail lost in generated previous frames is taken back from the identity frame instead of copied on
    (identity drift on real faces, issue 10); 0 = off, the value of files written before the key existed.
    ``motion_blur_sources``: whose motion frames may be blurred, "all" (the value of files written before the key
    existed) or "real_texture" (only clips of the real-texture corpus, `DenoiserData`'s ``real_texture``): the
    procedural faces' flat shading and thin edges are what their rollouts' SSIM measures, and a network trained to
    take detail from the identity frame rather than the previous ones renders them less faithfully.
    ``anchored_start_share``: share of examples whose x_t is the newest motion frame diffused to the default
    sampler's first step (`SamplingSettings.start_timestep`: t = 500 of 1000) instead of the target diffused
    (`anchored_start_noise`), the state every frame starts from at sampling (`sampling.anchored_start`); 0 = off,
    the value of files written before the key existed. Trained only on x_t made from its own target, the network
    takes from x_t whatever it shows at that noise level, and at sampling x_t shows the previous frame's
    expression: the asked emotion has to come from psi against it, which no example asked for.
    ``anchored_start_sources``: which clips' examples may start so (`examples_from`): "all" (the value of files
    written before the key existed), "real_texture" or "procedural"; the share is drawn over every example, so
    "procedural" starts that share of the procedural examples and none of the others."""

    split: str
    motion_noise: float
    identity_from: str
    motion_dropout: float
    val_split: str
    val_examples: int
    motion_blur: float
    motion_blur_sources: str
    anchored_start_share: float
    anchored_start_sources: str

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"motion_blur": 0.0, "motion_blur_sources": "all",
                                                      "anchored_start_share": 0.0, "anchored_start_sources": "all"}

    def validate(self) -> None:
        require(self.identity_from in IDENTITY_SOURCES,
                f"data.identity_from must be one of {', '.join(IDENTITY_SOURCES)}, got {self.identity_from!r}")
        require(0.0 <= self.motion_dropout <= 1.0, f"data.motion_dropout must be in [0, 1], got {self.motion_dropout}")
        require(self.motion_noise >= 0.0, f"data.motion_noise must be >= 0, got {self.motion_noise}")
        require(self.motion_blur >= 0.0, f"data.motion_blur must be >= 0, got {self.motion_blur}")
        require(0.0 <= self.anchored_start_share <= 1.0,
                f"data.anchored_start_share must be in [0, 1], got {self.anchored_start_share}")
        require(self.motion_blur_sources in EXAMPLE_SOURCES, f"data.motion_blur_sources must be one of "
                f"{', '.join(EXAMPLE_SOURCES)}, got {self.motion_blur_sources!r}")
        require(self.anchored_start_sources in EXAMPLE_SOURCES, f"data.anchored_start_sources must be one of "
                f"{', '.join(EXAMPLE_SOURCES)}, got {self.anchored_start_sources!r}")
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
class EmotionSection:
    """What makes the denoiser read psi (issue 9; all off in files written before this section existed).

    ``twin_share``: share of examples built from counterfactual twins (corpus clips only): identity frame from
    the clip's neutral twin, motion frames from its neutral twin or a twin with another emotion, so the
    target's emotion is only in psi. ``twin_target_share``: of those, the share whose target is itself a twin
    (neutral or another emotion, with that twin's psi). ``expression_dropout``: share of examples whose
    expression window is the neutral twin's (classifier-free guidance's null condition).
    ``standardise_expression``: fit per-component psi statistics on the training split and store them in the
    model config (`DenoiserConfig.expression_mean/scale`), keeping the first ``expression_components``; a
    fine-tune (--init-from) of a model that has statistics keeps its statistics unless the path is reset.
    ``expression_lr_mult``: learning-rate multiplier of the expression path (its MLPs and FiLM projections).
    ``reset_expression_path``: with --init-from, re-initialise the expression MLPs and zero their FiLM
    projections (the input's scale changes when psi becomes standardised). ``probe_examples``: twin examples
    of the x0-response / swap probes logged at every sample step (0 = off; `training.probes`).
    ``twin_same_emotion_share``: of the emotional twins (motion frames, twin targets) of an emotional clip, the
    share showing the clip's own emotion at another intensity instead of another emotion (`ClipTwins.
    counterfactual`): examples that differ only in k, so the response learns to follow k.
    ``twin_neutral_oldest_share``: of the twin examples, the share whose oldest motion frame is the neutral twin's
    and the rest the clip's own (`TwinOptions.neutral_oldest_share`: re-injected sampling's state).
    ``twin_photo_anchor_share``: of the twin examples of real-texture clips, the share whose identity and oldest
    motion frame are the clip's source photo at its own expression (`TwinOptions.photo_anchor_share`: that state
    on a user's photo). ``twin_photo_still_share``: of those, the share whose motion frames are all the photo
    (`TwinOptions.photo_still_share`). ``twin_photo_oldest_own_pose``: the oldest slot's photo at frame t-2's pose,
    never the identity image itself (`TwinOptions.photo_oldest_own_pose`).
    ``real_texture_emotion_mult``: the emotion-region term's weight on examples of the real-texture corpus, as a
    multiple of ``loss.emotion`` (1 = the same as on procedural faces; `real_texture_emotion_scale`): the photos'
    emotions are the ones users see, and the procedural faces already render theirs.
    ``intensity_pair_share``: the probability that a drawn emotional clip with twins gives an intensity pair
    (`TwinOptions.intensity_pair_share`, `DenoiserData.intensity_pair_samples`): two rows with one context and one
    x_t (the newest motion frame diffused to sampling's first step, as ``data.anchored_start_share`` makes it) and
    targets at two intensities of the clip's emotion, for ``loss.intensity_pair`` (`intensity_pair_error`). FLIE
    finds the rendered expression uneven in k (small k under-drawn, large k saturating); a pair asks for the
    change between two k directly, with the error both rows share (texture, mouth) taken out."""

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"twin_same_emotion_share": 0.0, "twin_neutral_oldest_share": 0.0,
                                                      "twin_photo_anchor_share": 0.0, "twin_photo_still_share": 0.0,
                                                      "twin_photo_oldest_own_pose": False,
                                                      "real_texture_emotion_mult": 1.0, "intensity_pair_share": 0.0}

    twin_share: float
    twin_target_share: float
    expression_dropout: float
    standardise_expression: bool
    expression_components: int
    expression_lr_mult: float
    reset_expression_path: bool
    probe_examples: int
    twin_same_emotion_share: float
    twin_neutral_oldest_share: float
    twin_photo_anchor_share: float
    twin_photo_still_share: float
    twin_photo_oldest_own_pose: bool
    real_texture_emotion_mult: float
    intensity_pair_share: float

    def validate(self) -> None:
        for name in ("twin_share", "twin_target_share", "expression_dropout", "twin_same_emotion_share",
                     "twin_neutral_oldest_share", "twin_photo_anchor_share", "twin_photo_still_share",
                     "intensity_pair_share"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"emotion.{name} must be in [0, 1], got {value}")
        require(1 <= self.expression_components <= 50,
                f"emotion.expression_components must be in [1, 50], got {self.expression_components}")
        require(self.expression_lr_mult > 0, f"emotion.expression_lr_mult must be positive, got {self.expression_lr_mult}")
        require(self.probe_examples >= 0, f"emotion.probe_examples must be >= 0, got {self.probe_examples}")
        require(self.real_texture_emotion_mult >= 0,
                f"emotion.real_texture_emotion_mult must be >= 0, got {self.real_texture_emotion_mult}")


EMOTION_OFF = {"twin_share": 0.0, "twin_target_share": 0.0, "expression_dropout": 0.0,
               "standardise_expression": False, "expression_components": 50, "expression_lr_mult": 1.0,
               "reset_expression_path": False, "probe_examples": 0, "twin_same_emotion_share": 0.0,
               "twin_neutral_oldest_share": 0.0, "twin_photo_anchor_share": 0.0, "twin_photo_still_share": 0.0,
               "twin_photo_oldest_own_pose": False, "real_texture_emotion_mult": 1.0, "intensity_pair_share": 0.0}


@dataclass(frozen=True)
class DenoiserTrainingConfig:
    """A denoiser training file (training/configs/denoiser_*.json). ``loss`` holds the weights of Eq. 16 (and
    the emotion-region and texture weights, `LossWeights`), ``emotion`` the recipe that makes the network read psi."""

    model: ModelSection
    loss: LossWeights
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int
    emotion: EmotionSection

    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"emotion": EMOTION_OFF}

    def validate(self) -> None:
        require_positive("", threads=self.threads)
        for field in dataclasses.fields(self.loss):
            value = getattr(self.loss, field.name)
            require(value >= 0.0, f"loss.{field.name} must be >= 0, got {value}")


LOG_FIELDS = ["step", "seconds", "loss", "simple", "vlb", "lip", "eye", "emotion", "lr", "grad_norm", "val_psnr",
              "val_loss", "x0_response_0.2", "x0_response_0.4", "x0_response_0.6", "swap_loss", "swap_loss_mask",
              "x0_response_half_0.6"]
EXPRESSION_PATH = ("unet.expression_frame_embed.", "unet.expression_embed.", "unet.expression_spatial",
                   ".film.expression.")


def anchored_start_noise(diffusion: GaussianDiffusion, x0: torch.Tensor, previous: torch.Tensor, t: torch.Tensor,
                         noise: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """`hybrid_loss`'s ``noise`` for examples whose x_t is ``previous`` diffused rather than ``x0``: on the
    ``chosen`` rows [B] (bool), the noise that leads from the target ``x0`` to x_t = q_sample(previous, t, noise)
    (noise + sqrt(abar_t) / sqrt(1 - abar_t) (previous - x0)), so that hybrid_loss's q_sample(x0, t, ·) is that
    x_t and the loss asks the network for the target from it; the other rows keep ``noise``."""
    from_previous = diffusion.predict_eps_from_xstart(diffusion.q_sample(previous, t, noise), t, x0)
    return torch.where(chosen[:, None, None, None], from_previous, noise)


def pair_partners(pair: torch.Tensor) -> torch.Tensor:
    """`DenoiserData`'s ``pair`` column [B] (+1 first row of a pair, -1 second, 0 none) -> each row's partner
    row index, -1 for rows without one."""
    rows = torch.arange(len(pair), device=pair.device)
    return torch.where(pair == 0, torch.full_like(rows, -1), rows + pair.long())


def share_pair_inputs(partner: torch.Tensor, *tensors: torch.Tensor):
    """``tensors`` (indexed by row) with each pair's second row a copy of its first, so the two rows have one
    motion frame, timestep and noise, hence one x_t; rows without a partner unchanged."""
    rows = torch.arange(len(partner), device=partner.device)
    source = torch.where((partner >= 0) & (partner < rows), partner, rows)
    return tuple(x[source] for x in tensors)


def real_texture_emotion_scale(real_texture: torch.Tensor, mult: float) -> Optional[torch.Tensor]:
    """`hybrid_loss`'s ``emotion_scale``: ``mult`` for the real-texture examples, 1 for the procedural ones; None
    (no scaling) when ``mult`` is 1."""
    return None if mult == 1.0 else 1.0 + (mult - 1.0) * real_texture.float()


def make_cond(model: EMOdiffheadDenoiser, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {"identity": batch["identity"], "motion": batch["motion"],
            "audio_emb": unwrap(model).encode_audio(batch["audio"]), "expression": batch["expression"]}


def train(config_path: str, data_dir: DataFolders, out_dir: str, resume: bool = False, device=None,
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

    emotion = cfg_file.emotion
    twins = TwinOptions(emotion.twin_share, emotion.twin_target_share, emotion.twin_same_emotion_share,
                        emotion.twin_neutral_oldest_share, emotion.twin_photo_anchor_share,
                        emotion.twin_photo_still_share, emotion.twin_photo_oldest_own_pose,
                        emotion.intensity_pair_share)
    data = DenoiserData(data_dir, model_cfg, data_cfg.split, identity_from=data_cfg.identity_from,
                        motion_dropout=data_cfg.motion_dropout, twins=twins)
    start = load_components(init_from, ["denoiser"])["denoiser"] if init_from else None
    keep_statistics = (start is not None and not emotion.reset_expression_path
                       and bool(start.config.expression_scale))
    if keep_statistics:   # its expression path reads psi through them: new statistics would change its meaning
        model_cfg = dataclasses.replace(model_cfg, expression_mean=start.config.expression_mean,
                                        expression_scale=start.config.expression_scale)
        data.cfg = model_cfg
    elif emotion.standardise_expression:   # statistics of the condition as the network sees it (smoothed psi)
        mean, scale = expression_statistics(torch.cat([c.expression for c in data.clips]).numpy(),
                                            keep=emotion.expression_components)
        model_cfg = dataclasses.replace(model_cfg, expression_mean=mean, expression_scale=scale)
        data.cfg = model_cfg
    if emotion.expression_dropout > 0:   # recorded: guidance at sampling time needs it (config.DenoiserConfig)
        model_cfg = dataclasses.replace(model_cfg, expression_dropout=emotion.expression_dropout)
        data.cfg = model_cfg
    torch.manual_seed(seed)   # identical initial weights on every rank
    model = EMOdiffheadDenoiser(model_cfg).to(info.device)
    if start is not None:
        # what a fine-tune may add to the model it starts from: psi statistics and the spatial expression map
        added = dict(expression_mean=(), expression_scale=(), expression_spatial=0, expression_dropout=0.0)
        if dataclasses.replace(start.config, **added) != dataclasses.replace(model_cfg, **added):
            raise TrainingConfigError(f"{init_from}: its denoiser was built from another model config than "
                                      f"{config_path}'s model section; fine-tune with the same preset and overrides")
        result = model.load_state_dict(start.state_dict(), strict=False)
        new = [k for k in result.missing_keys if not k.startswith("unet.expression_spatial")]
        if new or result.unexpected_keys:
            raise TrainingConfigError(f"{init_from}: its denoiser's weights do not fit {config_path}'s model "
                                      f"(missing {new[:3]}, unexpected {result.unexpected_keys[:3]})")
        if emotion.reset_expression_path:
            reset_expression_path(model)
    ema = EMA(model, optim_cfg.ema_decay)
    ddp_model = wrap_ddp(model, info)
    opt = torch.optim.AdamW(parameter_groups(model, emotion.expression_lr_mult), lr=optim_cfg.lr, weight_decay=0.0)
    diffusion = GaussianDiffusion.from_config(model_cfg.diffusion)
    weights = cfg_file.loss
    val = _validation_set(data_dir, model_cfg, data_cfg, seed, announce=info.main)
    probe = (_probe_set(data_dir, model_cfg, data_cfg, emotion.probe_examples, seed, announce=info.main)
             if emotion.probe_examples else None)
    # the texture column only where the term is on, so that the logs of every earlier recipe keep their columns
    pairs = emotion.intensity_pair_share > 0
    log = CsvLog(os.path.join(out_dir, "log.csv"),
                 LOG_FIELDS + (["texture"] if weights.texture > 0 else []) + (["pair"] if pairs else []))
    motion_noise = data_cfg.motion_noise
    if data_cfg.anchored_start_share > 0 and not model_cfg.n_motion_frames:
        raise TrainingConfigError(f"{config_path}: data.anchored_start_share needs motion frames (the model has none)")
    if pairs and not model_cfg.n_motion_frames:
        raise TrainingConfigError(f"{config_path}: emotion.intensity_pair_share needs motion frames (a pair's x_t "
                                  "is the newest one diffused; the model has none)")
    if pairs and not data.has_twins:
        raise TrainingConfigError(f"{config_path}: emotion.intensity_pair_share needs corpus clips with "
                                  "counterfactual twins (corpus version 2 or later); the training data has none")
    start_timestep = DEFAULT_SAMPLING.start_timestep(diffusion.num_timesteps)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        batch = {k: v.to(info.device) for k, v in data.batch(rng, optim_cfg.batch_size).items()}
        partner = pair_partners(batch["pair"]) if pairs else None
        if emotion.expression_dropout > 0 and "neutral_expression" in batch:   # the null condition of guidance
            drop = torch.from_numpy(rng.random(len(batch["x0"])) < emotion.expression_dropout).to(info.device)
            if partner is not None:   # a pair's rows differ in psi alone: keep it
                drop &= partner < 0
            batch["expression"] = torch.where(drop[:, None, None], batch["neutral_expression"], batch["expression"])
        if data_cfg.motion_blur > 0:   # generated previous frames are softer than the clip's
            sigmas = motion_blur_sigmas(rng, batch["real_texture"].cpu().numpy(), data_cfg.motion_blur,
                                        data_cfg.motion_blur_sources)
            batch["motion"] = blur_frames(batch["motion"], sigmas)
        if motion_noise > 0:   # robustness to the drift of autoregressive inference
            batch["motion"] = batch["motion"] + motion_noise * torch.randn(batch["motion"].shape, generator=gen).to(info.device)
        t = diffusion.sample_timesteps(len(batch["x0"]), info.device, gen)
        noise = torch.randn(batch["x0"].shape, generator=gen).to(info.device)
        # sampling's first step, x_t the previous frame diffused: the anchored-start share, and every pair's rows
        if data_cfg.anchored_start_share > 0 or partner is not None:
            chosen = torch.zeros(len(t), dtype=torch.bool, device=info.device)
            if data_cfg.anchored_start_share > 0:
                sources = examples_from(batch["real_texture"].cpu().numpy(), data_cfg.anchored_start_sources)
                chosen = torch.from_numpy((rng.random(len(t)) < data_cfg.anchored_start_share) & sources).to(info.device)
            if partner is not None:   # a pair's rows: one previous frame, one timestep, one noise, so one x_t
                chosen = chosen | (partner >= 0)
                batch["motion"], t, noise = share_pair_inputs(partner, batch["motion"], t, noise)
            t = torch.where(chosen, torch.full_like(t, start_timestep), t)
            noise = anchored_start_noise(diffusion, batch["x0"], batch["motion"][:, -1], t, noise, chosen)
        lr = lr_at(step, optim_cfg.lr, optim_cfg.warmup, total)
        model.train()
        with autocast(info.device):
            terms = hybrid_loss(diffusion, ddp_model, batch["x0"], t, make_cond(ddp_model, batch), weights,
                                landmarks=batch["landmarks"], noise=noise,
                                emotion_mask=batch.get("emotion_mask") if weights.emotion > 0 else None,
                                emotion_scale=real_texture_emotion_scale(batch["real_texture"],
                                                                         emotion.real_texture_emotion_mult),
                                pair_partner=partner, pair_mask=batch.get("pair_mask"))
            loss = terms["loss"].mean()
        grad_norm = optimizer_step(opt, loss, lr, model.parameters(), optim_cfg.grad_clip)
        ema.update(model, step)
        out = {k: float(v.detach().mean()) for k, v in terms.items()}
        out.update(lr=lr, grad_norm=grad_norm)
        return out

    def on_sample(done: int) -> Dict[str, float]:
        out = _validate(ema.shadow, diffusion, val, sampling, out_dir, done, seed, weights)
        if probe is not None:
            out.update(emotion_probes(ema.shadow, diffusion, probe["full"], seed=seed))
            out.update(half_intensity_probe(ema.shadow, diffusion, probe["half"], seed=seed))
        return out

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "denoiser", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn,
              modules={"model": model, "ema": ema.shadow}, optimizers={"opt": opt}, info=info, log=log,
              resume=resume, checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.sample_every, on_sample=on_sample,
              desc="denoiser", stop_after=stop_after)
    return os.path.join(out_dir, "denoiser.safetensors")


def _validation_set(data_dir: DataFolders, model_cfg, data_cfg: DataSection, seed: int,
                    announce: bool) -> Optional[Dict[str, torch.Tensor]]:
    """A fixed batch of ``data.val_examples`` validation examples, or None when the split has no clips."""
    val = optional_validation_data(
        lambda: DenoiserData(data_dir, model_cfg, data_cfg.val_split, identity_from=data_cfg.identity_from),
        data_cfg.val_split, announce)
    if val is None:
        return None
    rng = np.random.default_rng([seed, 999_999])
    return val.batch(rng, data_cfg.val_examples)


def _probe_set(data_dir: DataFolders, model_cfg, data_cfg: DataSection, examples: int, seed: int,
               announce: bool) -> Optional[Dict[str, Dict[str, torch.Tensor]]]:
    """Fixed batches of twin examples of the validation split for `training.probes`, "full" (the clips' frames)
    and "half" (the same frames' twins at half the intensity), or None without twins."""
    val = optional_validation_data(lambda: DenoiserData(data_dir, model_cfg, data_cfg.val_split,
                                                        twins=TwinOptions(share=1.0)),
                                   data_cfg.val_split, announce)
    if val is None:
        return None
    if not val.has_twins:
        if announce:
            print("emotion probes are off: the validation clips have no counterfactual twins (corpus clips only)",
                  flush=True)
        return None
    return {name: val.probe_batch(np.random.default_rng([seed, PROBE_DRAW_SEED]), examples, emotion_scale=scale)
            for name, scale in (("full", 1.0), ("half", 0.5))}


def expression_path(model: EMOdiffheadDenoiser):
    """(name, parameter) of the expression condition's path: its MLPs and every FiLM projection it drives."""
    return [(n, p) for n, p in model.named_parameters() if any(key in n for key in EXPRESSION_PATH)]


def parameter_groups(model: EMOdiffheadDenoiser, expression_lr_mult: float):
    """Optimizer groups: the expression path with its learning-rate multiplier (`optimizer_step`), the rest."""
    names = {n for n, _ in expression_path(model)}
    rest = [p for n, p in model.named_parameters() if n not in names]
    return [{"params": rest}, {"params": [p for _, p in expression_path(model)], "lr_mult": expression_lr_mult}]


@torch.no_grad()
def reset_expression_path(model: EMOdiffheadDenoiser) -> None:
    """Fresh expression MLPs and zeroed expression FiLM projections (the condition starts as a no-op again),
    for fine-tuning a model whose psi input changes meaning (standardised psi)."""
    for module in list(model.unet.expression_frame_embed.modules()) + list(model.unet.expression_embed.modules()):
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    for name, p in expression_path(model):
        if ".film.expression." in name:
            p.zero_()


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
