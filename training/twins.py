"""Counterfactual twins of a corpus clip, for the denoiser's data loader and the emotion probes.

A twin is the same clip (identity, head pose, speech mouth, blinks) rendered with another emotion part of psi:
the neutral twin (psi - the clip's emotion part) or a twin showing another emotion at another intensity. Given
identity and motion frames from twins, the only way to get the target's expression right is to read psi.
Rendering is the corpus' own (`training.corpus.render_twin_frames`), so twins are exact, not approximations.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from emodiff_core.emotions import EMOTIONS, NEUTRAL

OTHER_INTENSITY = (0.3, 1.0)     # intensity range of the "another emotion" twins
SAME_INTENSITY = (0.1, 1.0)      # intensity range of the "same emotion, another intensity" twins


class ClipTwins:
    """Twins of one corpus clip at the model's image size. Build with `of` (None for clips without twins)."""

    def __init__(self, meta: Mapping, extras: Mapping[str, np.ndarray], psi: np.ndarray, size: int,
                 root: Optional[str] = None):
        self.meta = dict(meta)
        self.root = root          # the dataset folder (real-texture clips rebuild their identity from it)
        self.extras = {k: np.asarray(extras[k]) for k in ("pose", "psi_emotion")}
        self.size = int(size)
        self.neutral_psi = (np.asarray(psi, np.float32) - self.extras["psi_emotion"]).astype(np.float32)
        onset = extras.get("onset")
        self.onset = np.asarray(onset, np.float32) if onset is not None else np.ones(len(self.neutral_psi), np.float32)
        self.emotion = meta.get("emotion")

    @classmethod
    def of(cls, meta: Mapping, extras: Mapping[str, np.ndarray], psi: Optional[np.ndarray],
           size: int, root: Optional[str] = None) -> Optional["ClipTwins"]:
        """Twins of a procedural clip that carries what rendering them needs (corpus version >= 2), or of a
        real-texture clip of the dataset ``root`` (which holds its prepared sources), else None."""
        if psi is None or "corpus_seed" not in meta or not {"pose", "psi_emotion"} <= set(extras):
            return None
        if meta.get("source") == "real_texture":
            from .corpus.realface import SOURCES_CACHE

            if root is None or not os.path.isfile(os.path.join(root, SOURCES_CACHE)):
                return None
        elif meta.get("source") != "procedural":
            return None
        return cls(meta, extras, psi, size, root)

    def render(self, psi_rows: np.ndarray, frame_indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frames ``frame_indices`` rendered with ``psi_rows`` [K, 50]: images [K, 3, S, S] in [-1, 1] and their
        landmarks [K, 68, 2] in pixels of the model's size S."""
        native = int(self.meta["size"])
        if self.meta.get("source") == "real_texture":
            from .corpus.realface import render_real_twin_frames

            frames, landmarks = render_real_twin_frames(self.root, self.meta, self.extras,
                                                        np.asarray(psi_rows, np.float32), list(frame_indices), native)
        else:
            from .corpus.generate import render_twin_frames

            frames, landmarks = render_twin_frames(self.meta, self.extras, np.asarray(psi_rows, np.float32),
                                                   list(frame_indices), native)
        return self._as_model_images(frames, landmarks)

    def _as_model_images(self, frames, landmarks) -> Tuple[torch.Tensor, torch.Tensor]:
        native = int(self.meta["size"])
        frames = np.asarray(frames)
        if native != self.size:
            frames = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA) for f in frames])
            landmarks = np.asarray(landmarks) * (self.size / native)
        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return images, torch.from_numpy(np.asarray(landmarks, np.float32))

    @property
    def has_source(self) -> bool:
        """Whether the clip was animated from a photo (real-texture clips), so `render_source` can show it."""
        return self.meta.get("source") == "real_texture"

    def render_source(self, frame_indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The photo the clip was animated from, at its own expression and the clip's pose at ``frame_indices``
        (`realface.render_real_source_frames`): images [K, 3, S, S] in [-1, 1] and landmarks [K, 68, 2]."""
        if not self.has_source:
            raise ValueError(f"clip {self.meta.get('clip_id')!r} was not animated from a photo")
        from .corpus.realface import render_real_source_frames

        frames, landmarks = render_real_source_frames(self.root, self.meta, self.extras, list(frame_indices),
                                                      int(self.meta["size"]))
        return self._as_model_images(frames, landmarks)

    def with_emotion(self, emotion: str, intensity: float) -> np.ndarray:
        """psi [N, 50] of the twin showing ``emotion`` at ``intensity`` over the whole clip."""
        if self.meta.get("source") == "real_texture":
            from .corpus.realface import real_emotion_psi as emotion_psi
        else:
            from .corpus.generate import emotion_psi

        weights = np.zeros((1, len(EMOTIONS)), np.float32)
        weights[0, EMOTIONS.index(emotion)] = float(intensity)
        return (self.neutral_psi + emotion_psi(self.meta, weights)[0][None]).astype(np.float32)

    def with_scaled_emotion(self, scale: float) -> np.ndarray:
        """psi [N, 50] of the clip with its emotion part times ``scale`` (0 = the neutral twin, 1 = the clip)."""
        return (self.neutral_psi + float(scale) * self.extras["psi_emotion"]).astype(np.float32)

    def with_same_emotion(self, rng: np.random.Generator) -> np.ndarray:
        """psi of a twin showing the clip's own emotion at a random intensity (``SAME_INTENSITY``): the same
        face, mouth and pose with only the emotion's strength changed, which teaches the response to k."""
        if self.emotion in (None, NEUTRAL):
            raise ValueError("a neutral clip has no emotion to show at another intensity")
        return self.with_emotion(self.emotion, float(rng.uniform(*SAME_INTENSITY)))

    def counterfactual(self, rng: np.random.Generator, same_emotion_share: float = 0.0) -> np.ndarray:
        """psi of a twin for motion frames or a twin target: the neutral twin half the time, otherwise the
        clip's own emotion at another intensity (probability ``same_emotion_share``, emotional clips only) or
        another emotion. With a share of 0 it draws exactly what recipes before the option drew (no extra draw)."""
        if rng.random() < 0.5:
            return self.neutral_psi
        if same_emotion_share > 0 and self.emotion not in (None, NEUTRAL) and rng.random() < same_emotion_share:
            return self.with_same_emotion(rng)
        return self.with_other_emotion(rng)

    def with_other_emotion(self, rng: np.random.Generator) -> np.ndarray:
        """psi of a twin with an emotion other than the clip's (and not neutral), at a random intensity."""
        choices = [e for e in EMOTIONS if e not in (NEUTRAL, self.emotion)]
        return self.with_emotion(choices[int(rng.integers(len(choices)))], float(rng.uniform(*OTHER_INTENSITY)))


def load_clip_twins(data_dir: str, metas: Sequence[Mapping]) -> List[Optional[ClipTwins]]:
    """The twins of each clip of ``metas`` in the dataset ``data_dir``, at the clip's own size (None for a clip
    without: `ClipTwins.of`); the clips are read without their audio, which twins do not use."""
    from .clips import ClipDataset

    data = ClipDataset(data_dir)
    twins = []
    for meta in metas:
        clip = data.load(meta, with_audio=False)
        twins.append(ClipTwins.of(meta, clip.extras, clip.psi, int(meta["size"]), root=data_dir))
    return twins


def mean_emotion_parts(twins: Sequence[ClipTwins], emotions: Sequence[str]) -> Dict[str, np.ndarray]:
    """Per emotion [50]: the emotion part of psi at k = 1 (`ClipTwins.with_emotion` less the neutral twin, at frame
    0: the corpus adds the same part at every frame), averaged over the clips of ``twins``: the data's direction of
    each emotion, as an intensity edit would ask for it (benchmarks.generator_directions, the generator's
    ``loss.lambda_direction``)."""
    if not twins:
        raise ValueError("no clips with counterfactual twins to average emotion parts over")
    return {e: np.mean([(t.with_emotion(e, 1.0) - t.neutral_psi)[0] for t in twins], axis=0) for e in emotions}
