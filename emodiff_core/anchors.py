"""What each frame's denoising starts from: `pipeline.generate_frames`' ``anchor_source``.

At start noise below 1 every frame starts from an anchor diffused to the start timestep, by default the previous
frame. At the default 0.5 the network keeps the layout of what it starts from (how far the mouth and the eyes are
open) and redraws the fine lines from its conditions (benchmarks/README.md, "Every frame started from the warp"),
so what the anchor shows leads the video. Two policies (`START_MOUTHS`):

- ``rig`` (the default since 2026-12-07): the previous frame with its mouth region (`faces.mouth_region_weight`,
  the aligned crop's mouth) replaced by the portrait's rig (`face_rig.rig_from_photo`, the warp the real-texture
  corpus animates photos with) rendered at the frame's expression, its mouth driven by the voice as the corpora
  drive their faces (`audio.mouth_drive`) plus the emotion's own part of the mouth. The lips follow the recording;
  the eyes, brows and the rest of the face stay what the video has rendered. Measured on the demo checkpoint, 3
  held-out photos x 4 emotions x 10 s x 2 voices x 2 seeds, paired per video (benchmarks/README.md, "`--start-mouth
  rig` as the default, over two seeds"): lip sync r 0.645 -> 0.805 (higher in 45 of 48), same person 95.4 -> 95.1 %,
  FER sad 20.9 -> 20.8 %, surprised 73.1 -> 77.4 %.
- ``previous``: the previous frame as it is (the pack until 2026-12-07).

The rig needs a portrait with landmarks (`pipeline.Portrait`); a frame of the video is rendered on the CPU per
sampled frame (a few milliseconds at 64 px), so memory does not grow with the video. The corpus evaluation
(`training.evaluate`: issue 9's measures) starts from the previous frame unless asked for the rig
(`--flie-start-mouth`, `--control-start-mouth`), whose portrait is then a corpus frame with its exact landmarks.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .facemodel import COMPONENT, SPEECH_COMPONENTS, speech_psi
from .pipeline import PipelineError, _per_video, rig_crops

START_MOUTHS = ("previous", "rig")
DEFAULT_START_MOUTH = "rig"
RIG_MOUTHS = ("voice", "closed")


def check_start_mouth(how: str, option: str = "start mouth") -> None:
    """Refuse a policy outside `START_MOUTHS` (before slow work)."""
    if how not in START_MOUTHS:
        raise PipelineError(f"{option} must be one of {', '.join(START_MOUTHS)}; got {how!r}")


def rig_psi(expression: np.ndarray, neutral: Optional[np.ndarray], waveform: np.ndarray, fps: float,
            sample_rate: int, mouth: str = "voice", strength: float = 1.0) -> np.ndarray:
    """psi [N, D] to render the portrait's rig with: e_n + strength (e_y - e_n), its speech components (which the
    corpora drive from the voice) replaced by the emotion's own part of them, strength (e_y - e_n), plus the
    voice's drive (``voice``) or nothing (``closed``). ``neutral`` None (an expression without its neutral
    sequence): e_y as it is, the speech components the voice's drive alone (the emotion's part of the mouth is not
    known without e_n)."""
    from .audio import mouth_drive

    if mouth not in RIG_MOUTHS:
        raise PipelineError(f"the rig's mouth must be one of {', '.join(RIG_MOUTHS)}, got {mouth!r}")
    expression = np.asarray(expression, np.float64)
    if neutral is None:
        psi, emotion = expression.copy(), np.zeros_like(expression)
    else:
        neutral = np.asarray(neutral, np.float64)
        emotion = float(strength) * (expression - neutral)
        psi = neutral + emotion
    speech = (speech_psi(mouth_drive(waveform, fps, len(psi), sample_rate)) if mouth == "voice"
              else np.zeros_like(psi))
    driven = [COMPONENT[name] for name in SPEECH_COMPONENTS]
    psi[:, driven] = emotion[:, driven] + speech[:, driven]
    return psi


def rig_source(portraits, audio, expression, neutral, size: int, mouth: str = "voice",
               strength: float = 1.0) -> Callable[[int], torch.Tensor]:
    """A function of the video frame index -> [B, 3, S, S] in [0, 1]: each video's portrait rig rendered at its
    `rig_psi` row (rendered on demand, so memory does not grow with the video). ``portraits``: one
    `pipeline.Portrait` for every video or one per video; ``audio``: the `pipeline.AudioFeatures` the video is
    sampled with; ``expression``, ``neutral``: e_y and e_n, [N, D] or [B, N, D] (``neutral`` may be None). The rigs
    are fitted when the first frame is asked for (`generate_frames` asks only when frames start below pure noise)."""
    from .face_rig import rig_from_photo

    portraits = list(portraits) if isinstance(portraits, (list, tuple)) else [portraits]
    if any(p is None for p in portraits):       # here, not at the first frame, deep in sampling
        raise PipelineError("the rig's start renders the portrait's rig: give the portrait (its image and landmarks) "
                            "the identity crop was made from")
    e_y = torch.as_tensor(expression).detach().cpu().double()
    batch = max(len(portraits), e_y.shape[0] if e_y.dim() == 3 else 1)
    if len(portraits) not in (1, batch):
        raise PipelineError(f"{len(portraits)} portraits for {batch} videos")
    frames, dims = e_y.shape[-2:]
    e_y = _per_video(e_y, batch, frames, dims, "the expression").numpy()
    e_n = (None if neutral is None else
           _per_video(torch.as_tensor(neutral).detach().cpu().double(), batch, frames, dims, "the neutral sequence")
           .numpy())
    psi = np.stack([rig_psi(e_y[b], None if e_n is None else e_n[b], audio.waveform, audio.fps,
                            audio.config.sample_rate, mouth, strength) for b in range(batch)])
    rigs: list = []         # fitted at the first frame asked for: a video sampled from pure noise never asks

    def frame(index: int) -> torch.Tensor:
        if not rigs:
            rigs.extend(rig_from_photo(p.image, p.landmarks) for p in portraits)
        if len(rigs) == 1:
            return rig_crops(rigs[0], psi[:, index], size)
        return torch.cat([rig_crops(rig, psi[b:b + 1, index], size) for b, rig in enumerate(rigs)])

    return frame


def mouth_from(source: Callable[[int], torch.Tensor], size: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """``anchor_source``: the previous frame with ``source``'s frame inside the aligned crop's mouth region."""
    from .faces import mouth_region_weight

    weight = torch.from_numpy(mouth_region_weight(size, size))
    return lambda index, previous: previous + weight * (source(index) - previous)


def start_anchor(how: str, portraits, audio, expression, neutral,
                 size: int) -> Optional[Callable[[int, torch.Tensor], torch.Tensor]]:
    """`generate_frames`' ``anchor_source`` for a `START_MOUTHS` policy (None for ``previous``: the default
    anchor). Arguments as `rig_source`'s."""
    check_start_mouth(how)
    if how == "previous":
        return None
    return mouth_from(rig_source(portraits, audio, expression, neutral, size), size)
