"""MEAD's eight emotion categories and its three intensity levels."""
from __future__ import annotations

from typing import Sequence

EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
NEUTRAL = "neutral"
# MEAD's levels 1-3 as intensities on Eq. 14's k scale.
MEAD_LEVEL_INTENSITY = {1: 1.0 / 3.0, 2: 2.0 / 3.0, 3: 1.0}


class EmotionError(ValueError):
    """An unknown emotion label or an out-of-range intensity."""


def emotion_index(label: str) -> int:
    """Index of ``label`` in EMOTIONS (case-insensitive; MEAD spellings like 'disgust' and 'surprise' too)."""
    key = str(label).strip().lower()
    key = {"disgust": "disgusted", "surprise": "surprised", "anger": "angry", "happiness": "happy",
           "sadness": "sad", "fearful": "fear"}.get(key, key)
    if key not in EMOTIONS:
        raise EmotionError(f"unknown emotion {label!r}; choose one of: {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)


def emotion_indices(labels: Sequence[str]):
    return [emotion_index(label) for label in labels]
