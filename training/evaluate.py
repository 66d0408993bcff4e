"""`python -m training evaluate`: measure a set of exported checkpoints on a data split.

- regressor: R^2 and RMSE of psi on the split's frames (named, meaningful components 0..12);
- expression generator: the share of its samples that an emotion classifier trained on the TRAIN split's
  psi assigns to the emotion asked for (and the same classifier's accuracy on real psi of the split);
- denoiser: single-frame PSNR / SSIM of samples given ground-truth motion frames, audio and expression
  (identity = the clip's first frame), on held-out identities when the split is "test".
"""
from __future__ import annotations

import glob
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from emodiffhead_core.checkpoint import load_components, read_checkpoint
from emodiffhead_core.diffusion import sample
from emodiffhead_core.emotions import EMOTIONS, emotion_index
from emodiffhead_core.metrics import EmotionClassifier, psnr, r2_per_component, r2_within_groups, ssim
from emodiffhead_core.pipeline import anchored_start, sampling_process

from .clips import ClipDataset
from .data import DenoiserData, FrameData

NAMED = 13
WINDOW = 48


def find_components(folder: str) -> Dict[str, str]:
    """component name -> the checkpoint file in ``folder`` that holds it (first found, sorted by name)."""
    found: Dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        try:
            ckpt = read_checkpoint(path)
        except ValueError:
            continue
        for name in ckpt.components:
            found.setdefault(name, path)
    if not found:
        raise FileNotFoundError(f"no EMOdiffhead checkpoints in {folder}")
    return found


def psi_windows(data_dir: str, split: str, min_intensity: float = 0.6, window: int = WINDOW, per_clip: int = 2,
                seed: int = 0):
    """Labelled psi windows [M, window, 50] for the emotion classifier (neutral + clips at k >= min_intensity)."""
    ds = ClipDataset(data_dir)
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for meta in ds.metas(split, labelled=True):
        if meta["emotion"] != "neutral" and (meta.get("intensity") or 0) < min_intensity:
            continue
        psi = ds.load(meta, with_audio=False).psi
        if psi is None or len(psi) < window:
            continue
        for _ in range(per_clip):
            start = int(rng.integers(len(psi) - window + 1))
            seqs.append(np.asarray(psi[start: start + window], np.float32))
            labels.append(emotion_index(meta["emotion"]))
    return torch.from_numpy(np.stack(seqs)), torch.tensor(labels)


def fit_emotion_classifier(data_dir: str, seed: int = 0) -> EmotionClassifier:
    x, y = psi_windows(data_dir, "train", seed=seed)
    return EmotionClassifier.fit(x, y, len(EMOTIONS))


@torch.no_grad()
def evaluate_regressor(regressor, data_dir: str, split: str, max_frames: int = 4000, seed: int = 0) -> dict:
    frames = FrameData(data_dir, split, size=regressor.config.image_size, need_psi=True)
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.choice(len(frames), size=min(max_frames, len(frames)), replace=False))
    images = frames.frames[idx].float() / 127.5 - 1
    pred = torch.cat([regressor(images[i: i + 256]) for i in range(0, len(images), 256)]).numpy()
    target = frames.psi[idx].numpy()
    r2 = r2_per_component(pred[:, :NAMED], target[:, :NAMED])
    within = r2_within_groups(pred[:, :NAMED], target[:, :NAMED], frames.identity[idx.numpy()])
    rmse = np.sqrt(((pred[:, :NAMED] - target[:, :NAMED]) ** 2).mean(0))
    return {"frames": int(len(idx)), "identities": int(len(set(frames.identity[idx.numpy()]))),
            "r2_named_mean": float(r2.mean()), "r2_named_min": float(r2.min()),
            "r2_named": [round(float(v), 4) for v in r2],
            "r2_within_identity_named_mean": float(within.mean()),
            "r2_within_identity_named": [round(float(v), 4) for v in within],
            "rmse_named_mean": float(rmse.mean())}


@torch.no_grad()
def evaluate_generator(generator, classifier: EmotionClassifier, data_dir: str, split: str, samples: int = 32,
                       seed: int = 0) -> dict:
    per_emotion = {}
    total_correct = 0
    g = torch.Generator().manual_seed(seed)
    for j, emotion in enumerate(EMOTIONS):
        labels = torch.full((samples,), j, dtype=torch.long)
        seqs = generator(labels, WINDOW, generator=g)
        acc = classifier.accuracy(seqs, labels)
        per_emotion[emotion] = round(acc, 4)
        total_correct += acc * samples
    real_x, real_y = psi_windows(data_dir, split, min_intensity=0.99, seed=seed)
    return {"samples_per_emotion": samples, "sample_emotion_accuracy": total_correct / (samples * len(EMOTIONS)),
            "per_emotion": per_emotion, "classifier_accuracy_on_real_psi": classifier.accuracy(real_x, real_y),
            "real_windows": int(len(real_y))}


@torch.no_grad()
def evaluate_denoiser(denoiser, data_dir: str, split: str, spacing: str = "ddim25", frames: int = 48,
                      max_clips: Optional[int] = None, seed: int = 0, batch: int = 16,
                      start_noise: float = 1.0) -> dict:
    """PSNR/SSIM of single frames generated with ground-truth motion frames (one autoregressive step, no
    drift); start_noise < 1 starts from the previous real frame diffused to that level, as inference does."""
    cfg = denoiser.config
    data = DenoiserData(data_dir, cfg, split, limit=max_clips)
    rng = np.random.default_rng([seed, 77])
    picks = [(int(c), int(rng.integers(data.lengths[c]))) for c in rng.choice(len(data), size=frames)]
    process = sampling_process(cfg.diffusion, spacing, start_noise)
    gen = torch.Generator().manual_seed(seed)
    psnrs, ssims = [], []
    start = time.perf_counter()
    for b in range(0, len(picks), batch):
        items = [data.sample(c, f, 0) for c, f in picks[b: b + batch]]
        x = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        cond = {"identity": x["identity"], "motion": x["motion"], "audio_emb": denoiser.encode_audio(x["audio"]),
                "expression": x["expression"], "reference": denoiser.reference_features(x["identity"])}
        x_first = anchored_start(process, x["motion"][:, -1], gen) if start_noise < 1.0 else None
        out = sample("ddim", process, denoiser, x["x0"].shape, cond, generator=gen, noise=x_first)
        for pred, target in zip(out, x["x0"]):
            p = ((pred.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            t = ((target + 1) / 2).permute(1, 2, 0).numpy()
            psnrs.append(psnr(p, t))
            ssims.append(ssim(p, t))
    return {"frames": len(picks), "spacing": spacing, "start_noise": start_noise, "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "psnr_std": float(np.std(psnrs)), "seconds": round(time.perf_counter() - start, 1)}


def evaluate(checkpoints: str, data: str, split: str = "test", max_clips: Optional[int] = None,
             steps: str = "ddim25", seed: int = 0, start_noise: float = 1.0) -> dict:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    found = find_components(checkpoints)
    report = {"checkpoints": {k: os.path.basename(v) for k, v in found.items()}, "data": os.path.abspath(data),
              "split": split}
    if "regressor" in found:
        reg = load_components(found["regressor"], ["regressor"])["regressor"]
        report["regressor"] = evaluate_regressor(reg, data, split, seed=seed)
    if "expression_generator" in found:
        gen = load_components(found["expression_generator"], ["expression_generator"])["expression_generator"]
        report["generator"] = evaluate_generator(gen, fit_emotion_classifier(data, seed), data, split, seed=seed)
    if "denoiser" in found:
        den = load_components(found["denoiser"], ["denoiser"])["denoiser"]
        report["denoiser"] = evaluate_denoiser(den, data, split, spacing=steps, max_clips=max_clips, seed=seed,
                                               start_noise=start_noise)
    return report
