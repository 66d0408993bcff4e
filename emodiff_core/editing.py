"""Emotion editing (Eq. 14), blends of several emotions and keyframed emotion timelines.

Eq. 14: e_o = e_n + k * d_y. The paper's Eq. 15 writes d_y = e_n - e_y, which points from the target
emotion back to neutral, so e_n + k * d_y would move AWAY from emotion y as k grows. We implement
d_y = e_y - e_n (target minus neutral): k = 0 gives e_n, k = 1 gives e_y, and e_o is affine in k.

k may exceed 1 to exaggerate, up to MAX_INTENSITY = 2.0: beyond that the expression vector leaves the
range the denoiser was trained on and faces break up. A blend e_n + sum_j k_j d_j accepts per-emotion
weights in [0, MAX_INTENSITY] whose sum is at most MAX_INTENSITY.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch

from .emotions import EMOTIONS, EmotionError, emotion_index

MAX_INTENSITY = 2.0


def check_intensity(k: Union[float, torch.Tensor], what: str = "intensity") -> None:
    values = torch.as_tensor(k, dtype=torch.float64)
    if not torch.isfinite(values).all():
        raise EmotionError(f"{what} must be a finite number")
    if (values < 0).any() or (values > MAX_INTENSITY).any():
        raise EmotionError(f"{what} {values.min().item():g}..{values.max().item():g} is out of range: use 0 (neutral) "
                           f"to 1 (the emotion as trained), up to {MAX_INTENSITY:g} to exaggerate")


def emotion_direction(e_neutral: torch.Tensor, e_target: torch.Tensor) -> torch.Tensor:
    """d_y = e_y - e_n (Eq. 15 with its sign corrected, see the module docstring)."""
    return e_target - e_neutral


def edit_expression(e_neutral: torch.Tensor, e_target: torch.Tensor, k: Union[float, torch.Tensor]) -> torch.Tensor:
    """Eq. 14: e_o = e_n + k * (e_y - e_n). ``k`` is a number or a per-frame tensor [N] for [N, D] inputs."""
    check_intensity(k)
    k = torch.as_tensor(k, dtype=e_neutral.dtype, device=e_neutral.device)
    if k.dim() == 1:
        k = k[:, None]
    return e_neutral + k * emotion_direction(e_neutral, e_target)


def blend_from_weights(e_neutral: torch.Tensor, e_targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """e_n + sum_j w_j (e_j - e_n).

    :param e_neutral: [N, D] neutral sequence.
    :param e_targets: [J, N, D] one sequence per emotion.
    :param weights: [J] or per-frame [N, J].
    """
    if weights.dim() == 1:
        weights = weights[None].expand(e_neutral.shape[0], -1)
    check_intensity(weights, "blend weight")
    check_intensity(weights.sum(dim=1), "sum of blend weights")
    directions = e_targets - e_neutral[None]                   # [J, N, D]
    return e_neutral + torch.einsum("nj,jnd->nd", weights.to(e_neutral.dtype), directions)


def blend_expressions(e_neutral: torch.Tensor, e_targets: Mapping[str, torch.Tensor],
                      weights: Mapping[str, float]) -> torch.Tensor:
    """e_n + sum_j k_j d_j for named emotions (``e_targets`` and ``weights`` keyed by label)."""
    sequences = {EMOTIONS[emotion_index(label)]: seq for label, seq in e_targets.items()}
    names = [EMOTIONS[emotion_index(label)] for label in weights]
    missing = [name for name in names if name not in sequences]
    if missing:
        raise EmotionError(f"no expression sequence was given for {missing[0]!r}")
    stacked = torch.stack([sequences[name] for name in names], dim=0)
    w = torch.tensor([float(k) for k in weights.values()], dtype=e_neutral.dtype)
    return blend_from_weights(e_neutral, stacked, w)


def parse_blend(text: Optional[str]) -> Optional[Dict[str, float]]:
    """"happy:0.6, surprised:0.3" -> {"happy": 0.6, "surprised": 0.3}; empty -> None. Labels are checked."""
    if not text or not text.strip():
        return None
    out: Dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        label, sep, value = part.partition(":")
        try:
            k = float(value)
        except ValueError:
            k = None
        if not sep or k is None:
            raise EmotionError(f"cannot read blend entry {part.strip()!r}; write label:intensity, e.g. happy:0.6")
        out[EMOTIONS[emotion_index(label)]] = k
    return out


# --------------------------------------------------------------------------- keyframes
@dataclass(frozen=True)
class Keyframe:
    time: float       # seconds
    emotion: str
    intensity: float


def parse_keyframes(text: str) -> List[Keyframe]:
    """Keyframes from "0:neutral:0, 1.5:happy:1, 3:sad:0.8" or a JSON list of
    {"time": s, "emotion": label, "intensity": k}. Sorted by time; times must be distinct and >= 0."""
    text = (text or "").strip()
    if not text:
        raise EmotionError("no keyframes given; write e.g. '0:neutral:0, 1.5:happy:1'")
    frames: List[Keyframe] = []
    if text.startswith("["):
        try:
            items = json.loads(text)
            frames = [Keyframe(float(i["time"]), str(i["emotion"]), float(i["intensity"])) for i in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmotionError(f"cannot read keyframes JSON ({exc}); expected a list of "
                               '{"time": seconds, "emotion": label, "intensity": k}') from None
    else:
        for part in text.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            fields = part.split(":")
            if len(fields) != 3:
                raise EmotionError(f"cannot read keyframe {part!r}; write time:emotion:intensity, e.g. 1.5:happy:0.8")
            try:
                frames.append(Keyframe(float(fields[0]), fields[1].strip(), float(fields[2])))
            except ValueError:
                raise EmotionError(f"cannot read keyframe {part!r}: time and intensity must be numbers") from None
    for kf in frames:
        emotion_index(kf.emotion)
        check_intensity(kf.intensity, f"keyframe intensity at {kf.time:g} s")
        if not math.isfinite(kf.time) or kf.time < 0:
            raise EmotionError(f"keyframe time {kf.time} must be a finite number of seconds >= 0")
    frames.sort(key=lambda kf: kf.time)
    times = [kf.time for kf in frames]
    if len(set(times)) != len(times):
        raise EmotionError("two keyframes share a time; give each keyframe its own time")
    return frames


def _weight_vector(kf: Keyframe) -> torch.Tensor:
    w = torch.zeros(len(EMOTIONS), dtype=torch.float64)
    idx = emotion_index(kf.emotion)
    if EMOTIONS[idx] != "neutral":
        w[idx] = kf.intensity
    return w


def keyframe_weights(keyframes: Sequence[Keyframe], num_frames: int, fps: float) -> torch.Tensor:
    """Per-frame emotion weights [N, len(EMOTIONS)] (the neutral column stays 0).

    Between two keyframes the weights are eased with smoothstep s = 3u^2 - 2u^3 (u the fraction of the
    interval elapsed); before the first and after the last keyframe they hold. Frame i is at i / fps s.
    """
    if not keyframes:
        raise EmotionError("a keyframe timeline needs at least one keyframe")
    times = torch.tensor([kf.time for kf in keyframes], dtype=torch.float64)
    vectors = torch.stack([_weight_vector(kf) for kf in keyframes])
    t = torch.arange(num_frames, dtype=torch.float64) / float(fps)
    right = torch.searchsorted(times, t, right=True).clamp(1, len(keyframes) - 1) if len(keyframes) > 1 else None
    if right is None:
        return vectors[0][None].expand(num_frames, -1).clone()
    left = right - 1
    span = (times[right] - times[left])
    u = ((t - times[left]) / span).clamp(0.0, 1.0)
    s = u * u * (3.0 - 2.0 * u)
    return vectors[left] * (1.0 - s)[:, None] + vectors[right] * s[:, None]
