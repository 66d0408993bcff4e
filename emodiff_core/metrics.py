"""Metrics of the paper (section 4.3) and of this project, each with its formula.

- PSNR: 10 log10(1 / MSE) on images in [0, 1].
- SSIM: Wang et al. 2004, Gaussian window (sigma 1.5), computed per channel and averaged (scikit-image).
- R^2 per component: 1 - SS_res / SS_tot.
- FLIE (Eq. 20), see `flie`.
- Emotion accuracy: a linear classifier on expression vectors (`EmotionClassifier`).
- Lip sync: correlation between mouth opening and the audio envelope over a range of offsets (`lip_sync`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn


# --------------------------------------------------------------------------- image quality
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images (or stacks) in [0, 1]: 10 log10(1 / mean squared error)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two HxWx3 images in [0, 1] (Gaussian-weighted, sigma 1.5, channel mean)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0,
                                       channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def r2_per_component(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R^2 of each column: 1 - sum (pred - target)^2 / sum (target - mean target)^2."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ss_res = ((pred - target) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.maximum(ss_tot, 1e-12)


def r2_within_groups(pred: np.ndarray, target: np.ndarray, groups: Sequence) -> np.ndarray:
    """R^2 of each column after removing each group's mean from prediction and target.

    With groups = identities this measures how well expression CHANGES are tracked, leaving out a constant
    per-person offset, which a single image cannot separate from the person's face shape (a face with
    high brows and a neutral face with raised brows can look the same).
    """
    pred, target = np.asarray(pred, np.float64).copy(), np.asarray(target, np.float64).copy()
    groups = np.asarray(groups)
    for g in np.unique(groups):
        sel = groups == g
        pred[sel] -= pred[sel].mean(0)
        target[sel] -= target[sel].mean(0)
    return r2_per_component(pred, target)


# --------------------------------------------------------------------------- FLIE (Eq. 20)
@dataclass
class FlieResult:
    flie: float
    per_dimension: np.ndarray      # CV of each kept dimension
    kept: np.ndarray               # indices of the dimensions that entered the sum
    steps: np.ndarray              # d_{i,j}: [levels, dims]


def flie(mean_psi_per_level: np.ndarray, relative_floor: float = 0.01) -> FlieResult:
    """FLIE (Eq. 20) from the mean expression vector of each intensity level.

    :param mean_psi_per_level: [L + 1, D]: row 0 is intensity 0 (neutral), rows 1..L the increasing levels.

    d_{i,j} = mean psi_j at level i - mean psi_j at level i-1 (i = 1..L, j = 1..D). Our reading of Eq. 20:
    for each dimension j, the coefficient of variation over the levels, CV_j = sigma_i(d_{i,j}) / |mu_i(d_{i,j})|,
    and FLIE = sum_j CV_j. This is the reading under which perfectly linear edits (equal steps at every level)
    give 0, as the paper says they should; taking the CV over dimensions instead would not be 0 for a linear
    edit, because the step has different sizes in different dimensions.
    Guard: a dimension whose mean step |mu_j| is below ``relative_floor`` times the largest |mu_j| barely moves
    with intensity; its CV is noise divided by nearly zero (the paper's 335 for one ablation is likely such a
    blow-up), so it is left out of the sum. ``kept`` says which dimensions counted.
    """
    levels = np.asarray(mean_psi_per_level, np.float64)
    if levels.ndim != 2 or levels.shape[0] < 3:
        raise ValueError("FLIE needs the mean psi of neutral plus at least 2 intensity levels: [L+1 >= 3, D]")
    steps = np.diff(levels, axis=0)                   # [L, D]
    mu = steps.mean(axis=0)
    sigma = steps.std(axis=0)
    scale = np.abs(mu).max()
    if scale == 0:
        raise ValueError("the expression does not change with intensity at all; FLIE is undefined")
    kept = np.nonzero(np.abs(mu) >= relative_floor * scale)[0]
    cv = sigma[kept] / np.abs(mu[kept])
    return FlieResult(float(cv.sum()), cv, kept, steps)


# --------------------------------------------------------------------------- emotion accuracy
class EmotionClassifier(nn.Module):
    """Multinomial logistic regression on the time-mean of a psi window (standardised).

    Trained on corpus (or DECA) psi with labels; used to score generated sequences and psi regressed
    from generated frames.
    """

    def __init__(self, dims: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dims, num_classes)
        self.register_buffer("mean", torch.zeros(dims))
        self.register_buffer("std", torch.ones(dims))

    @staticmethod
    def features(sequences: torch.Tensor) -> torch.Tensor:
        """[B, N, D] sequences -> [B, D] time means."""
        return sequences.float().mean(dim=1)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.linear((self.features(sequences) - self.mean) / self.std)

    @classmethod
    def fit(cls, sequences: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300,
            weight_decay: float = 1e-3) -> "EmotionClassifier":
        feats = cls.features(sequences)
        model = cls(feats.shape[1], num_classes)
        model.mean.copy_(feats.mean(0))
        model.std.copy_(feats.std(0).clamp(min=1e-6))
        opt = torch.optim.LBFGS(model.linear.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
        x = (feats - model.mean) / model.std

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model.linear(x), labels) + weight_decay * model.linear.weight.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        return model.eval()

    @torch.no_grad()
    def accuracy(self, sequences: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self(sequences).argmax(1) == labels).float().mean())


# --------------------------------------------------------------------------- lip sync
@dataclass
class LipSync:
    correlation: float        # Pearson r at offset 0
    best_offset: int          # frames; positive = the mouth lags the audio
    best_correlation: float
    confidence: float         # best correlation minus the median over all offsets (SyncNet-like)


def lip_sync(mouth_opening: Sequence[float], audio_envelope: Sequence[float], max_offset: int = 8) -> LipSync:
    """Correlation of a per-frame mouth-opening signal with the per-frame audio envelope at offsets
    -max_offset .. max_offset frames (mouth[t + offset] against audio[t]).

    In the spirit of SyncNet's offset and confidence: a synchronised video peaks at offset 0, and the peak
    stands out above the correlations at wrong offsets.
    """
    m = np.asarray(mouth_opening, np.float64)
    a = np.asarray(audio_envelope, np.float64)
    if m.shape != a.shape or m.ndim != 1:
        raise ValueError("mouth opening and audio envelope must be 1-D and of equal length")
    if len(m) < 2 * max_offset + 4:
        raise ValueError(f"need at least {2 * max_offset + 4} frames to measure lip sync")

    def corr(offset: int) -> float:
        if offset >= 0:
            x, y = m[offset:], a[: len(a) - offset]
        else:
            x, y = m[: len(m) + offset], a[-offset:]
        if x.std() < 1e-12 or y.std() < 1e-12:
            return 0.0
        return float(np.corrcoef(x, y)[0, 1])

    offsets = list(range(-max_offset, max_offset + 1))
    values = np.array([corr(o) for o in offsets])
    best = int(np.argmax(values))
    return LipSync(correlation=corr(0), best_offset=offsets[best], best_correlation=float(values[best]),
                   confidence=float(values[best] - np.median(values)))


def audio_envelope(waveform: np.ndarray, num_frames: int, fps: float, sample_rate: int, window_s: float = 0.04) -> np.ndarray:
    """Per-frame RMS of the audio around each frame's centre (the same framing as the features)."""
    from .audio import frame_centre_samples

    centres = frame_centre_samples(num_frames, fps, sample_rate)
    half = int(window_s * sample_rate / 2)
    padded = np.pad(np.asarray(waveform, np.float64), (half, half))
    return np.array([np.sqrt(np.mean(padded[c: c + 2 * half] ** 2)) for c in centres])


def mouth_opening_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap (landmarks 62-66 and 61-67, 63-65) over the outer-eye-corner distance, per frame."""
    lm = np.asarray(landmarks, np.float64)
    gap = (np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1) + np.linalg.norm(lm[:, 67] - lm[:, 61], axis=1)
           + np.linalg.norm(lm[:, 65] - lm[:, 63], axis=1)) / 3.0
    return gap / np.maximum(np.linalg.norm(lm[:, 45] - lm[:, 36], axis=1), 1e-6)
