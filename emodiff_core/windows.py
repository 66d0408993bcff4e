"""The one window-gathering helper that training and inference share.

Frame i of a video is conditioned on the audio and expression embeddings of frames i-n .. i+n and on the
motion frames x(i-2), x(i-1). Every such window is gathered with `window_indices`, which pads by
replication at both ends (indices are clamped into [0, length-1]).

Motion frames before the first frame are the identity image (section 3.4 at inference; the same at
training so the two agree): the motion source is the frame sequence with ``n_motion`` copies of the
identity frame prepended (`motion_source`), and frame i reads offsets -n_motion .. -1 around position
i + n_motion of it (`motion_centre`).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

IntsLike = Union[int, Sequence[int], torch.Tensor]


def window_offsets(radius: int) -> torch.Tensor:
    """Offsets -n .. n of a centred window of 2n+1 frames."""
    if radius < 0:
        raise ValueError("window radius must be >= 0")
    return torch.arange(-radius, radius + 1)


def motion_offsets(n_motion: int) -> torch.Tensor:
    """Offsets -n_motion .. -1: the previous frames, oldest first (x(i-2), x(i-1) for n_motion = 2)."""
    return torch.arange(-n_motion, 0)


def window_indices(centres: IntsLike, offsets: torch.Tensor, length: int) -> torch.Tensor:
    """[M, K] indices centres[:, None] + offsets[None, :], clamped to [0, length-1] (replicate padding)."""
    if length < 1:
        raise ValueError("cannot gather windows from an empty sequence")
    centres = torch.as_tensor(centres, dtype=torch.long).reshape(-1)
    return (centres[:, None] + offsets.to(torch.long)[None, :]).clamp(0, length - 1)


def gather_windows(sequence: torch.Tensor, centres: IntsLike, offsets: torch.Tensor) -> torch.Tensor:
    """sequence [N, ...] -> windows [M, K, ...] around ``centres`` (replicate-padded)."""
    idx = window_indices(centres, offsets, sequence.shape[0]).to(sequence.device)
    return sequence[idx]


def motion_source(frames: torch.Tensor, identity: torch.Tensor, n_motion: int) -> torch.Tensor:
    """[n_motion + N, ...]: ``n_motion`` copies of the identity frame, then the frames."""
    return torch.cat([identity[None].expand(n_motion, *identity.shape), frames], dim=0)


def motion_centre(frame_index: IntsLike, n_motion: int):
    """Position of frame i in `motion_source`'s sequence."""
    return torch.as_tensor(frame_index, dtype=torch.long) + n_motion


def smooth_sequence(sequence: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average over ``width`` frames (odd; 1 = unchanged) of [N, D], replicate-padded.

    Used on expression sequences before they condition the denoiser (``DenoiserConfig.expression_smoothing``).
    """
    if width < 1 or width % 2 == 0:
        raise ValueError("smoothing width must be an odd number >= 1")
    if width == 1:
        return sequence
    n = sequence.shape[0]
    return gather_windows(sequence, torch.arange(n), window_offsets(width // 2)).mean(dim=1)
