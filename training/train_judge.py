"""Train the emotion judge (face crop -> one of the eight MEAD emotions, and the intensity k), the classifier
that measures which emotion generated videos show (training/evaluate.py).

Targets per frame (`frame_targets`): what a frame shows is its *effective* intensity, k x onset(t) (the corpus
renders psi_emotion = k * onset(t) * direction), not the clip's k alone: a clip that ramps up from neutral
starts with neutral frames. Frames whose effective intensity is below ``data.neutral_below`` (0.1) are labelled
neutral (they look neutral), frames from ``data.emotion_from`` (0.4) up are labelled with the clip's emotion, and
the frames in between are left out of the classification loss (neither clearly neutral nor clearly the emotion:
a label either way is noise) but still train the intensity head. That band holds MEAD's level 1 (k = 1/3): on
the current corpus such faces can hardly be told from the resting faces of unseen people, and labelled as the
emotion (``emotion_from`` 0.25) they taught the judge to call neutral faces of held-out identities emotional. Clips whose emotion changes
(``meta["emotion_change"]``) take the per-frame weights ``extras["emotion_weights"]`` [N, 8] (the neutral
column is ignored): a frame is labelled with its strongest emotion when that one holds at least
``data.dominant_share`` of the total weight, else (a blend) it is left out of the classification; such clips
without the weights are skipped entirely.

Graded targets (``data.labels.graded``, `judge_graded.json`): instead of hard labels, every frame's target is
its mix, the probability of its emotion equal to its effective intensity and neutral the rest
(`graded_targets`). Such a judge's probability of the asked emotion measures *how much* of it a face shows,
which the intensity curves of `evaluate` need: a hard-label judge reads every ground-truth face from k = 0.4 up
at ~0.96, so its probability cannot rank intensities (Spearman 0.77 on ground-truth clips).

Augmentation (``data.augment``): small shifts, scale and rotation, a random amount of blur, brightness,
contrast and colour jitter, and noise, so that generated frames (a little blurry, 64 px, slightly off the
alignment) are judged like ground-truth ones. Classes are drawn balanced (neutral frames are common: neutral
clips and every onset); the skipped band is drawn as often as one class, for the intensity head.
"""
from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from emodiff_core.emotions import EMOTIONS, NEUTRAL, emotion_index
from emodiff_core.models import EmotionJudge

from .clips import ClipDataset, EmptySplitError
from .configfile import ModelSection, ScheduleSection, load_config, require, require_positive
from .data import optional_validation_data, resize_clip_frames
from .export import export_component
from .loop import EMA, CsvLog, autocast, lr_at, optimizer_step, run_steps, setup_distributed, wrap_ddp

SKIPPED = -1                    # label of frames left out of the classification loss
NEUTRAL_INDEX = EMOTIONS.index(NEUTRAL)
MEAD_LEVELS = (1.0 / 3.0, 2.0 / 3.0, 1.0)
REPORT_MIN_ONSET = 0.9          # held-out report: frames where the emotion has (almost) fully set in


@dataclass(frozen=True)
class OptimSection:
    """``intensity_weight``: weight of the intensity head's squared error next to the cross-entropy."""

    lr: float
    batch_size: int
    steps: int
    warmup: int
    ema_decay: float
    label_smoothing: float
    intensity_weight: float

    def validate(self) -> None:
        require(self.lr >= 0 and self.warmup >= 0, "optim.lr and optim.warmup must be >= 0")
        require_positive("optim", batch_size=self.batch_size, steps=self.steps)
        require(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        require(0.0 <= self.label_smoothing < 1.0, "optim.label_smoothing must be in [0, 1)")
        require(self.intensity_weight >= 0, "optim.intensity_weight must be >= 0")


@dataclass(frozen=True)
class LabelRule:
    """How a frame's effective intensity becomes a class label (see the module docstring).

    ``graded``: the classification target is the frame's mix (`graded_targets`: the probability of each
    emotion is its effective intensity, neutral the rest) instead of a hard label, for every frame (the band
    between ``neutral_below`` and ``emotion_from`` included); the thresholds then only shape the balanced
    draws and the reports. A hard-label judge's probability saturates from k = 0.4 on (ground-truth clips at
    k = 0.25 and 1 both read ~0.96), so it cannot rank intensities; a graded judge's probability can."""

    ADDED_KEYS: typing.ClassVar[Mapping[str, bool]] = {"graded": False}   # older files: hard labels

    neutral_below: float
    emotion_from: float
    dominant_share: float
    graded: bool = False

    def validate(self) -> None:
        require(0.0 <= self.neutral_below <= self.emotion_from <= 1.0,
                "data: need 0 <= neutral_below <= emotion_from <= 1")
        require(0.5 < self.dominant_share <= 1.0, "data.dominant_share must be in (0.5, 1]")


@dataclass(frozen=True)
class DataSection:
    """``frame_stride``: every n-th frame of each clip is kept (neighbouring frames are nearly identical; this
    keeps the split in memory small). ``labels``: the `LabelRule`."""

    split: str
    val_split: str
    frame_stride: int
    augment: bool
    labels: LabelRule

    def validate(self) -> None:
        require_positive("data", frame_stride=self.frame_stride)


@dataclass(frozen=True)
class JudgeTrainingConfig:
    """An emotion-judge training file (training/configs/judge_*.json)."""

    model: ModelSection
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int

    def validate(self) -> None:
        require_positive("", threads=self.threads)


DEFAULT_RULE = LabelRule(neutral_below=0.1, emotion_from=0.4, dominant_share=0.75)     # judge_demo.json's
LOG_FIELDS = ["step", "seconds", "loss", "ce", "intensity_mse", "lr", "val_accuracy", "val_accuracy_k1",
              "val_intensity_mae", "val_probability_spearman"]


# --------------------------------------------------------------------------- targets and data
def emotion_weights(meta: dict, extras: Dict[str, np.ndarray], n: int) -> Optional[np.ndarray]:
    """Per-frame weight of each emotion [n, 8] as the clip shows it (neutral column 0), or None when the clip
    cannot be labelled (no emotion label; an emotion change without ``extras["emotion_weights"]``).

    ``extras["emotion_weights"]``, where a clip has them, are used as they are (they are what was rendered);
    otherwise a steady clip's emotion has weight k x onset(t)."""
    if "emotion_weights" in extras:
        w = np.array(extras["emotion_weights"], dtype=np.float64)
        if w.shape != (n, len(EMOTIONS)):
            raise ValueError(f"clip {meta['clip_id']}: extras['emotion_weights'] must be [{n}, {len(EMOTIONS)}], "
                             f"got {list(w.shape)}")
        w[:, NEUTRAL_INDEX] = 0.0
        return w
    if meta.get("emotion_change") or meta.get("emotion") is None:
        return None
    w = np.zeros((n, len(EMOTIONS)))
    j = emotion_index(meta["emotion"])
    if j != NEUTRAL_INDEX:
        k = float(meta.get("intensity") if meta.get("intensity") is not None else 1.0)
        onset = np.asarray(extras["onset"], np.float64) if "onset" in extras else np.ones(n)
        w[:, j] = k * onset
    return w


def frame_targets(weights: np.ndarray, rule: LabelRule = DEFAULT_RULE):
    """(labels int64 [n] with SKIPPED for left-out frames, effective intensity float32 [n] in [0, 1]) from the
    per-frame emotion weights (`emotion_weights`)."""
    total = weights.sum(axis=1)
    strongest = weights.argmax(axis=1)
    share = np.divide(weights.max(axis=1), total, out=np.zeros_like(total), where=total > 0)
    labels = np.full(len(weights), SKIPPED, dtype=np.int64)
    labels[total < rule.neutral_below] = NEUTRAL_INDEX
    clear = (total >= rule.emotion_from) & (share >= rule.dominant_share)
    labels[clear] = strongest[clear]
    return labels, np.clip(total, 0.0, 1.0).astype(np.float32)


def graded_targets(weights: np.ndarray) -> np.ndarray:
    """The graded classification target of each frame [n, 8] (rows sum to 1) from its emotion weights
    (`emotion_weights`): emotion j gets its weight, scaled down when the weights add up to more than 1, and
    neutral the remainder. A steady clip at k x onset = 0.3 is 30 % its emotion, 70 % neutral."""
    w = np.clip(np.asarray(weights, np.float64), 0.0, None)
    w[:, NEUTRAL_INDEX] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = w / np.maximum(total, 1.0)
    w[:, NEUTRAL_INDEX] = 1.0 - w.sum(axis=1)
    return w.astype(np.float32)


class JudgeFrames:
    """Every ``stride``-th frame of a split's labelled clips (uint8 [M, 3, S, S], in memory) with its targets.

    Per frame: ``labels`` (SKIPPED = left out), ``intensity`` (effective k x onset), ``graded`` (the graded
    target [M, 8], `graded_targets`), and for the reports the
    clip's ``clip_emotion`` (index), ``clip_k`` (NaN for emotion changes), ``onset``, ``identity`` and
    ``clip_id``."""

    def __init__(self, root: str, split: str, size: int, rule: LabelRule = DEFAULT_RULE, stride: int = 1,
                 limit: Optional[int] = None, identities: Optional[Sequence[str]] = None):
        ds = ClipDataset(root)
        metas = ds.metas(split)
        if identities is not None:
            metas = [m for m in metas if m["identity"] in set(identities)]
        metas = metas[:limit] if limit else metas
        if not metas:
            raise EmptySplitError(root, split)
        parts: Dict[str, List[np.ndarray]] = {k: [] for k in ("frames", "labels", "intensity", "graded", "clip_emotion",
                                                             "clip_k", "onset", "identity", "clip_id")}
        self.skipped_clips: List[str] = []
        for meta in metas:
            clip = ds.load(meta, with_audio=False)
            n = len(clip.frames)
            weights = emotion_weights(meta, clip.extras, n)
            if weights is None:
                self.skipped_clips.append(meta["clip_id"])
                continue
            labels, intensity = frame_targets(weights, rule)
            keep = np.arange(0, n, stride)
            frames = np.asarray(clip.frames[keep])
            if frames.shape[1] != size:
                frames, _ = resize_clip_frames(frames, np.zeros((len(frames), 68, 2)), size)
            change = bool(meta.get("emotion_change"))
            parts["frames"].append(frames)
            parts["labels"].append(labels[keep])
            parts["intensity"].append(intensity[keep])
            parts["graded"].append(graded_targets(weights)[keep])
            parts["clip_emotion"].append(np.full(len(keep), -1 if change else emotion_index(meta["emotion"])))
            k = np.nan if change else float(meta.get("intensity") or 0.0)
            parts["clip_k"].append(np.full(len(keep), k, np.float32))
            onset = np.asarray(clip.extras["onset"])[keep] if "onset" in clip.extras else np.ones(len(keep))
            parts["onset"].append(onset.astype(np.float32))
            parts["identity"].append(np.full(len(keep), meta["identity"], dtype=object))
            parts["clip_id"].append(np.full(len(keep), meta["clip_id"], dtype=object))
        if not parts["frames"]:
            raise EmptySplitError(root, split)
        self.frames = torch.from_numpy(np.concatenate(parts["frames"])).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.concatenate(parts["labels"]))
        self.intensity = torch.from_numpy(np.concatenate(parts["intensity"]))
        self.graded = torch.from_numpy(np.concatenate(parts["graded"]))
        self.clip_emotion = np.concatenate(parts["clip_emotion"]).astype(np.int64)
        self.clip_k = np.concatenate(parts["clip_k"])
        self.onset = np.concatenate(parts["onset"])
        self.identity = np.concatenate(parts["identity"])
        self.clip_id = np.concatenate(parts["clip_id"])
        # balanced draws: every class (and the skipped band) equally often
        counts = {int(c): int(n) for c, n in zip(*np.unique(self.labels.numpy(), return_counts=True))}
        w = np.array([1.0 / counts[int(c)] for c in self.labels.numpy()])
        self.draw_p = w / w.sum()
        self.class_counts = {("skipped" if c == SKIPPED else EMOTIONS[c]): n for c, n in sorted(counts.items())}

    def __len__(self) -> int:
        return len(self.frames)

    def draw(self, rng: np.random.Generator, batch_size: int) -> torch.Tensor:
        """Indices of ``batch_size`` frames, classes (and the skipped band) drawn equally often."""
        return torch.from_numpy(rng.choice(len(self.frames), size=batch_size, p=self.draw_p))


# --------------------------------------------------------------------------- augmentation
def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Geometry (mirroring, shift up to ~6 % of the side, scale 0.92..1.08, rotation up to 5 degrees), a random
    share of a blurred copy (generated frames are softer than renders), brightness/contrast/colour jitter and
    noise. Images [B, 3, S, S] in [0, 1]."""
    b = images.shape[0]

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*(shape or (b,)), generator=gen)

    angle = uniform(-5, 5) * math.pi / 180
    scale = uniform(0.92, 1.08)
    mirror = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)   # a mirrored face shows the same emotion
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, uniform(-0.12, 0.12)], 1),
                         torch.stack([sin * mirror, cos, uniform(-0.12, 0.12)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blur_amount = uniform(0, 1) * (torch.rand(b, generator=gen) < 0.7)
    out = torch.lerp(out, _gaussian_blur(out, 1.2), blur_amount[:, None, None, None])
    gain = uniform(0.8, 1.2)[:, None, None, None] * uniform(0.95, 1.05, b, 3)[:, :, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(0.85, 1.15)[:, None, None, None]
    out = ((out - mean) * contrast + mean) * gain + uniform(-0.06, 0.06)[:, None, None, None]
    out = out + 0.02 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(out.shape, generator=gen)
    return out.clamp(0, 1)


def graded_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [B, C] against target distributions [B, C], smoothed towards uniform
    as `F.cross_entropy`'s ``label_smoothing`` does. Its minimum is where softmax(logits) = the target."""
    targets = targets * (1.0 - label_smoothing) + label_smoothing / logits.shape[1]
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


# --------------------------------------------------------------------------- measuring
@torch.no_grad()
def judge_frames(judge: EmotionJudge, frames_u8: torch.Tensor, batch_size: int = 256):
    """(probabilities [M, 8], intensity [M] or None) of uint8 frames [M, 3, S, S]."""
    device = next(judge.parameters()).device
    probs, intensity = [], []
    for i in range(0, len(frames_u8), batch_size):
        out = judge(frames_u8[i: i + batch_size].to(device).float() / 255.0)
        probs.append(torch.softmax(out.logits.float(), dim=1).cpu())
        if out.intensity is not None:
            intensity.append(out.intensity.float().cpu())
    return torch.cat(probs), (torch.cat(intensity) if intensity else None)


def _accuracy(pred: np.ndarray, target: np.ndarray) -> Optional[float]:
    return float((pred == target).mean()) if len(target) else None


def judge_report(judge: EmotionJudge, data: JudgeFrames, min_onset: float = REPORT_MIN_ONSET) -> dict:
    """The judge on ground-truth frames (``data``, typically held-out identities):

    - ``accuracy_k1``: frames of neutral clips and of clips at k = 1 where onset >= ``min_onset``, target = the
      clip's emotion (the headline); ``per_emotion_k1`` the same per emotion; ``confusion_k1`` [asked, judged];
    - ``accuracy_per_level``: the same at MEAD's k = 1/3, 2/3, 1 (non-neutral clips only);
    - ``accuracy_labelled``: every frame with a training label (`frame_targets`; continuous k, onsets, changes);
    - ``probability_spearman`` (+ ``_per_emotion``): the Spearman correlation of k x onset with the probability
      of the clip's emotion, per emotion over its clips' frames and the neutral clips' (k = 0), averaged;
    - intensity head: mean absolute error against k x onset and the Spearman correlation with it.
    """
    judge.eval()
    probs, intensity = judge_frames(judge, data.frames)
    pred = probs.argmax(1).numpy()
    settled = data.onset >= min_onset
    neutral_clip = data.clip_emotion == NEUTRAL_INDEX

    def at_level(level: float) -> np.ndarray:
        return (~neutral_clip) & (data.clip_emotion >= 0) & (np.abs(data.clip_k - level) < 1e-3) & settled

    k1 = at_level(1.0) | neutral_clip
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    np.add.at(confusion, (data.clip_emotion[k1], pred[k1]), 1)
    per_emotion = {e: _accuracy(pred[k1 & (data.clip_emotion == j)], data.clip_emotion[k1 & (data.clip_emotion == j)])
                   for j, e in enumerate(EMOTIONS)}
    labelled = data.labels.numpy() != SKIPPED
    report = {
        "frames": int(len(pred)), "identities": int(len(set(data.identity))), "min_onset": min_onset,
        "accuracy_k1": _accuracy(pred[k1], data.clip_emotion[k1]), "frames_k1": int(k1.sum()),
        "per_emotion_k1": per_emotion,
        "frames_per_emotion_k1": {e: int((k1 & (data.clip_emotion == j)).sum()) for j, e in enumerate(EMOTIONS)},
        "accuracy_per_level": {f"{level:.3f}": _accuracy(pred[at_level(level)], data.clip_emotion[at_level(level)])
                               for level in MEAD_LEVELS},
        "frames_per_level": {f"{level:.3f}": int(at_level(level).sum()) for level in MEAD_LEVELS},
        "per_emotion_per_level": {
            e: {f"{level:.3f}": _accuracy(pred[at_level(level) & (data.clip_emotion == j)],
                                          data.clip_emotion[at_level(level) & (data.clip_emotion == j)])
                for level in MEAD_LEVELS} for j, e in enumerate(EMOTIONS) if e != NEUTRAL},
        "accuracy_labelled": _accuracy(pred[labelled], data.labels.numpy()[labelled]),
        "confusion_k1": confusion.tolist(), "labels": list(EMOTIONS),
    }
    # does the probability of a clip's emotion rank its frames by intensity? (per emotion: its steady clips'
    # frames, with the neutral clips' frames as k = 0; the mean over emotions; `evaluate`'s Spearman per frame)
    per_emotion_rank = {}
    for j, e in enumerate(EMOTIONS):
        frames = ((data.clip_emotion == j) | neutral_clip) if j != NEUTRAL_INDEX else None
        if frames is not None and (data.clip_emotion == j).any():
            per_emotion_rank[e] = spearman(data.intensity.numpy()[frames], probs[:, j].numpy()[frames])
    valid = [v for v in per_emotion_rank.values() if v is not None]
    report["probability_spearman_per_emotion"] = per_emotion_rank
    report["probability_spearman"] = float(np.mean(valid)) if valid else None
    if intensity is not None:
        truth = data.intensity.numpy()
        report["intensity_mae"] = float(np.abs(intensity.numpy() - truth).mean())
        report["intensity_spearman"] = spearman(intensity.numpy(), truth)
    return report


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Spearman's rank correlation (ties get their average rank); None when either side is constant or there
    are fewer than two pairs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two sequences of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else None


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0      # tied values share the mean of their positions
        i = j + 1
    return ranks


# --------------------------------------------------------------------------- training
def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None) -> str:
    cfg_file = load_config(config_path, JudgeTrainingConfig)
    torch.set_num_threads(cfg_file.threads)
    info = setup_distributed(device)
    cfg = cfg_file.model.build("judge", config_path)
    o, d, sched = cfg_file.optim, cfg_file.data, cfg_file.schedule
    seed, total = cfg_file.seed, int(max_steps or o.steps)
    os.makedirs(out_dir, exist_ok=True)
    data = JudgeFrames(data_dir, d.split, cfg.image_size, d.labels, stride=d.frame_stride)
    val = optional_validation_data(
        lambda: JudgeFrames(data_dir, d.val_split, cfg.image_size, d.labels, stride=d.frame_stride),
        d.val_split, info.main)
    if info.main:
        print(f"judge: {len(data)} training frames {data.class_counts}; {len(data.skipped_clips)} clips skipped "
              "(emotion changes without per-frame weights)", flush=True)
    torch.manual_seed(seed)
    model = EmotionJudge(cfg).to(info.device)
    ema = EMA(model, o.ema_decay)
    ddp = wrap_ddp(model, info)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=1e-4)
    log = CsvLog(os.path.join(out_dir, "log.csv"), LOG_FIELDS)

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        idx = data.draw(rng, o.batch_size)
        images = data.frames[idx].float() / 255.0
        if d.augment:
            images = augment(images, gen)
        images, labels, intensity = images.to(info.device), data.labels[idx].to(info.device), \
            data.intensity[idx].to(info.device)
        lr = lr_at(step, o.lr, o.warmup, total)
        model.train()
        with autocast(info.device):
            out = ddp(images)
        if d.labels.graded:
            ce = graded_cross_entropy(out.logits.float(), data.graded[idx].to(info.device), o.label_smoothing)
        else:
            ce = F.cross_entropy(out.logits.float(), labels, ignore_index=SKIPPED, label_smoothing=o.label_smoothing)
        if not torch.isfinite(ce):          # a batch of skipped frames only
            ce = out.logits.sum() * 0.0
        mse = ((out.intensity.float() - intensity) ** 2).mean() if out.intensity is not None else ce * 0.0
        loss = ce + o.intensity_weight * mse
        optimizer_step(opt, loss, lr)
        ema.update(model, step)
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), "intensity_mse": float(mse.detach()),
                "lr": lr}

    def on_sample(done: int) -> Dict[str, float]:
        if val is None:
            return {}
        report = judge_report(ema.shadow, val)
        return {k: v for k, v in (("val_accuracy", report["accuracy_labelled"]),
                                  ("val_accuracy_k1", report["accuracy_k1"]),
                                  ("val_intensity_mae", report.get("intensity_mae")),
                                  ("val_probability_spearman", report["probability_spearman"])) if v is not None}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "emotion_judge", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn, modules={"model": model, "ema": ema.shadow},
              optimizers={"opt": opt}, info=info, log=log, resume=resume,
              checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.checkpoint_every, on_sample=on_sample,
              desc="judge", stop_after=stop_after)
    return os.path.join(out_dir, "emotion_judge.safetensors")
