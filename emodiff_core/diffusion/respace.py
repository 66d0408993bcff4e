"""Timestep respacing: sample with a subset of the training steps.

Which steps a sampler keeps for a given step count (DDIM's integer stride, say) is the sampling policy's
decision (`emodiff_core.sampling`); this module only turns a spacing into a new process.

`respace` never touches its argument: it returns a NEW `GaussianDiffusion` whose betas are recomputed
over the kept steps (1 - abar_k / abar_prev_kept) and whose ``timestep_map`` sends each new step index to
the original timestep, which is what the network is called with. Respacing a respaced process composes
the maps, so the network still sees original timesteps.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Set, Union

import numpy as np

from .process import GaussianDiffusion

Spacing = Union[str, int, Sequence[int]]


def space_timesteps(num_timesteps: int, spacing: Spacing) -> List[int]:
    """The sorted step indices to keep out of ``num_timesteps``.

    :param spacing: one of
        - an int or a string of digits, "250": that many steps at an even (fractional) stride, first and
          last step included;
        - comma-separated counts, "10,15,20": the range is cut into equal sections and each section is
          spaced with its own count;
        - a sequence of ints: exactly those steps.
    """
    if isinstance(spacing, (list, tuple, np.ndarray)):
        steps = sorted({int(s) for s in spacing})
        if not steps or steps[0] < 0 or steps[-1] >= num_timesteps:
            raise ValueError(f"explicit timesteps must lie in [0, {num_timesteps - 1}] and not be empty")
        return steps
    if isinstance(spacing, (int, np.integer)):
        spacing = str(int(spacing))
    if not isinstance(spacing, str) or not spacing.strip():
        raise ValueError(f"cannot read timestep spacing {spacing!r}: use e.g. '250', '10,15' or a list")
    text = spacing.strip().lower()
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise ValueError(f"cannot read timestep spacing {spacing!r}: use e.g. '250' or '10,15,20'") from None
    return _sectioned(num_timesteps, counts)


def _sectioned(num_timesteps: int, counts: List[int]) -> List[int]:
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: Set[int] = set()
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        if count == 1:
            kept.add(start)
        else:
            stride = (size - 1) / (count - 1)
            kept.update(start + int(round(k * stride)) for k in range(count))
        start += size
    return sorted(kept)


def respace(diffusion: GaussianDiffusion, spacing: Spacing) -> GaussianDiffusion:
    """A new process that keeps ``space_timesteps(diffusion.num_timesteps, spacing)``; ``diffusion`` is
    left as it was."""
    keep = space_timesteps(diffusion.num_timesteps, spacing)
    return keep_timesteps(diffusion, keep)


def keep_timesteps(diffusion: GaussianDiffusion, keep: Iterable[int]) -> GaussianDiffusion:
    keep = sorted(set(int(k) for k in keep))
    new_betas = []
    previous = 1.0
    for index in keep:
        abar = float(diffusion.alphas_cumprod[index])
        new_betas.append(1.0 - abar / previous)
        previous = abar
    timestep_map = diffusion.timestep_map[np.asarray(keep, dtype=np.int64)].copy()
    return GaussianDiffusion(np.asarray(new_betas, dtype=np.float64), timestep_map)


def truncate(diffusion: GaussianDiffusion, max_timestep: int) -> GaussianDiffusion:
    """A new process with only the steps whose ORIGINAL timestep is <= ``max_timestep`` (for sampling that
    starts from a partly noised image instead of pure noise). At least the first step is kept."""
    keep = [i for i, t in enumerate(diffusion.timestep_map.tolist()) if t <= max_timestep] or [0]
    return keep_timesteps(diffusion, keep)
