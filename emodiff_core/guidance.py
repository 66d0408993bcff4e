"""Classifier-free guidance on the expression and on the audio condition (additions to the paper).

Expression (issue 9):

The denoiser is trained with its expression window replaced, for a share of the examples, by the window of
the clip's neutral twin (the same psi with the emotion part removed: mouth, blinks and resting face kept).
At sampling time the emotion can then be amplified:

    eps_guided = eps(x_t | neutral psi) + w * (eps(x_t | psi) - eps(x_t | neutral psi))

w = 1 is the conditional model alone; w > 1 pushes the frame further along what the emotion changes. The
null condition is the NEUTRAL psi (not zeros) so that guidance amplifies the emotion only, never the mouth
motion that psi also carries. The learned variance (the v channels) is taken from the conditional pass.

Guidance may be limited to the noisier steps (``min_timestep``, from `SamplingSettings.guidance_min_noise`):
below it the conditional model runs alone, one network evaluation instead of two.

Audio (`AudioGuidance`, issue 10's lip sync): the null condition is digital silence, whose features the model saw
in every training sentence's padding and pauses with the mouth closed and still, so no dropout in training is
needed for it:

    eps_guided = eps(x_t | silence) + w * (eps(x_t | audio) - eps(x_t | silence))

On photographs the denoiser opens the mouth far less than it learned to on its training faces (the inner-lip gap
moves by a third of the ground truth's spread on the demo portrait, by a tenth on Grace Hopper); w > 1 scales up
what the voice does to the frame. Every other condition (psi, its mouth included) is the same in both passes.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch


class ExpressionGuidance:
    """Wraps a denoiser ``model(x, t, **cond)``; ``cond`` must also hold ``neutral_expression`` (the null
    condition's expression window, shaped like ``expression``). Both passes run as one batch. Rows whose
    (original) timestep is below ``min_timestep`` get the conditional prediction alone; a batch that lies wholly
    below it runs one pass."""

    def __init__(self, model: Callable, scale: float, image_channels: int = 3, min_timestep: int = 0):
        self.model = model
        self.scale = float(scale)
        self.image_channels = image_channels
        self.min_timestep = int(min_timestep)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        neutral = cond.pop("neutral_expression")
        unguided = t < self.min_timestep
        if bool(unguided.all()):
            return self.model(x, t, **cond)
        with_emotion, without = _paired_passes(self.model, x, t, cond, "expression", neutral)
        out = _combine(with_emotion, without, self.scale, self.image_channels)
        if bool(unguided.any()):        # a batch straddling the floor (videos at different noise levels)
            c = self.image_channels
            out[:, :c] = torch.where(unguided.view(-1, 1, 1, 1).to(out.device), with_emotion[:, :c], out[:, :c])
        return out


class AudioGuidance:
    """Wraps a denoiser ``model(x, t, **cond)``: guidance of scale ``scale`` on ``cond["audio_emb"]`` against
    ``silent_embedding`` ([D], the audio encoder's embedding of digital silence, `pipeline.silent_audio_embedding`).
    Both passes run as one batch; the learned variance comes from the conditional pass. Composes with
    `ExpressionGuidance` (which wraps this), four passes in one batch then."""

    def __init__(self, model: Callable, scale: float, silent_embedding: torch.Tensor, image_channels: int = 3):
        self.model = model
        self.scale = float(scale)
        self.silent_embedding = silent_embedding
        self.image_channels = image_channels

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        silent = self.silent_embedding.expand_as(cond["audio_emb"])
        with_voice, silence = _paired_passes(self.model, x, t, cond, "audio_emb", silent)
        return _combine(with_voice, silence, self.scale, self.image_channels)


def _paired_passes(model: Callable, x: torch.Tensor, t: torch.Tensor, cond: dict, key: str, null: torch.Tensor):
    """The model's outputs with ``cond`` as given and with ``cond[key]`` replaced by ``null``, run as one batch."""
    b = x.shape[0]
    doubled = {name: _double(value, b) for name, value in cond.items() if name != key}
    doubled[key] = torch.cat([cond[key], null.to(cond[key])], dim=0)
    out = model(torch.cat([x, x]), torch.cat([t, t]), **doubled)
    return out[:b], out[b:]


def _combine(conditional: torch.Tensor, null: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """eps(null) + scale (eps(conditional) - eps(null)) on the first ``channels``; the rest (the learned
    variance) from the conditional pass."""
    eps = null[:, :channels] + scale * (conditional[:, :channels] - null[:, :channels])
    return torch.cat([eps, conditional[:, channels:]], dim=1)


def _double(value, batch: int):
    """A condition repeated for the second (neutral) pass; per-video tensors of batch 1 broadcast as they are."""
    if value is None:
        return None
    if isinstance(value, Mapping):          # ReferenceNet features
        return {k: _double(v, batch) for k, v in value.items()}
    if torch.is_tensor(value) and value.shape[0] == batch:
        return torch.cat([value, value], dim=0)
    if torch.is_tensor(value) and value.shape[0] == 1:
        return value
    raise ValueError(f"cannot pair a condition of batch {value.shape[0]} with a batch of {batch}")
