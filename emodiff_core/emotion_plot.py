"""A picture of the emotion timeline, to check before sampling: the per-frame weight of each emotion
(`pipeline.EmotionSpec.weights`, the k of Eq. 14 per emotion) against time in seconds, one line per
emotion, keyframes marked by dashed vertical lines with a dot at their intensity, silent stretches of the
audio shaded. Drawn with OpenCV (a runtime dependency); matplotlib is not needed at run time.

    image = emotion_plot(spec, num_frames, fps, silent=audio.silent)      uint8 RGB [H, W, 3]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .editing import MAX_INTENSITY, Keyframe, parse_keyframes
from .emotions import EMOTIONS, NEUTRAL, emotion_index

# One fixed colour per emotion (RGB), so an emotion looks the same in every plot.
EMOTION_COLOURS = {
    "neutral": (128, 128, 128), "angry": (214, 39, 40), "contempt": (148, 103, 189), "disgusted": (140, 86, 75),
    "fear": (23, 190, 207), "happy": (255, 127, 14), "sad": (31, 119, 180), "surprised": (44, 160, 44),
}
KEYFRAME_COLOUR = (96, 96, 96)        # drawn without anti-aliasing: exactly this colour (tests look for it)
SILENCE_COLOUR = (226, 234, 246)
GRID_COLOUR = (222, 222, 222)
AXIS_COLOUR = (0, 0, 0)
BACKGROUND = (255, 255, 255)
TICK_STEPS = (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120)
MIN_SIZE = (240, 120)                 # (width, height) below which the labels do not fit


@dataclass(frozen=True)
class PlotLayout:
    """Where the plot area lies in the image and how time and intensity map to pixels."""

    width: int
    height: int
    left: int
    right: int            # x of the plot area's right edge
    top: int
    bottom: int           # y of the plot area's bottom edge (intensity 0)
    duration: float       # seconds shown (0 .. duration)
    max_intensity: float  # intensity at the top edge

    def x_of(self, seconds: float) -> int:
        return int(round(self.left + (self.right - self.left) * float(seconds) / self.duration))

    def y_of(self, intensity: float) -> int:
        return int(round(self.bottom - (self.bottom - self.top) * float(intensity) / self.max_intensity))


def plot_layout(duration: float, max_intensity: float, width: int = 640, height: int = 240) -> PlotLayout:
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"the emotion plot must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]} px, got {width}x{height}")
    if not duration > 0:
        raise ValueError(f"the emotion plot needs a positive duration, got {duration}")
    return PlotLayout(int(width), int(height), left=44, right=int(width) - 96, top=22, bottom=int(height) - 30,
                      duration=float(duration), max_intensity=float(max_intensity))


def _tick_step(duration: float, max_ticks: int = 10) -> float:
    for step in TICK_STEPS:
        if duration / step <= max_ticks:
            return step
    return 60.0 * math.ceil(duration / (60.0 * max_ticks))


def _text(image, text, origin, colour=AXIS_COLOUR, scale=0.38):
    import cv2

    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def draw_emotion_plot(weights, fps: float, keyframes: Sequence[Keyframe] = (), silent=None, width: int = 640,
                      height: int = 240, title: str = "emotion timeline") -> np.ndarray:
    """uint8 RGB [height, width, 3]: ``weights`` [N, len(EMOTIONS)] (per-frame intensity of each emotion; frame
    i at i / fps s) as one line per emotion that is ever non-zero, ``keyframes`` as dashed vertical lines with a
    dot at (time, intensity), ``silent`` (bool [N], optional) as shaded stretches. The x axis covers the whole
    video, 0 .. N / fps s; the y axis 0 .. 1 (0 .. MAX_INTENSITY when some weight exceeds 1)."""
    import cv2

    w = np.asarray(weights, np.float64)
    if w.ndim != 2 or w.shape[1] != len(EMOTIONS) or len(w) < 1:
        raise ValueError(f"emotion weights must be [frames >= 1, {len(EMOTIONS)}], got shape {w.shape}")
    n = len(w)
    duration = n / float(fps)
    top_value = 1.0 if w.max() <= 1.0 + 1e-9 and all(kf.intensity <= 1.0 for kf in keyframes) else MAX_INTENSITY
    lay = plot_layout(duration, top_value, width, height)
    image = np.full((lay.height, lay.width, 3), BACKGROUND, np.uint8)
    frame_x = [lay.x_of(i / fps) for i in range(n + 1)]     # frame i covers [x_i, x_{i+1})

    if silent is not None:
        silent = np.asarray(silent, bool).reshape(-1)[:n]
        for i in np.flatnonzero(silent):
            cv2.rectangle(image, (frame_x[i], lay.top), (max(frame_x[i], frame_x[i + 1] - 1), lay.bottom - 1),
                          SILENCE_COLOUR, -1)
    # grid: intensity every 0.5, time at a round step
    for level in np.arange(0.0, top_value + 1e-9, 0.5):
        y = lay.y_of(level)
        cv2.line(image, (lay.left, y), (lay.right, y), GRID_COLOUR, 1)
        _text(image, f"{level:g}", (lay.left - 26, y + 4))
    step = _tick_step(duration)
    for k in range(int(math.floor(duration / step + 1e-9)) + 1):
        t = k * step
        x = lay.x_of(t)
        cv2.line(image, (x, lay.top), (x, lay.bottom), GRID_COLOUR, 1)
        _text(image, f"{t:g}", (x - 6, lay.bottom + 14))
    _text(image, "time (s)", (lay.right - 44, lay.height - 3))
    _text(image, "intensity", (2, 14))
    _text(image, title, (lay.left + 60, 14))
    # keyframes under the curves, dashed, exact colour (no anti-aliasing)
    for kf in keyframes:
        if kf.time > duration:
            continue
        x = min(lay.x_of(kf.time), lay.right)
        for y in range(lay.top, lay.bottom, 8):
            cv2.line(image, (x, y), (x, min(y + 4, lay.bottom)), KEYFRAME_COLOUR, 1, cv2.LINE_8)
    cv2.line(image, (lay.left, lay.top), (lay.left, lay.bottom), AXIS_COLOUR, 1)
    cv2.line(image, (lay.left, lay.bottom), (lay.right, lay.bottom), AXIS_COLOUR, 1)

    shown = [j for j in range(len(EMOTIONS)) if EMOTIONS[j] != NEUTRAL and w[:, j].max() > 0]
    for j in shown:
        ys = [lay.y_of(v) for v in w[:, j]] + [lay.y_of(w[-1, j])]
        points = np.array(list(zip(frame_x, ys)), np.int32)
        cv2.polylines(image, [points], False, EMOTION_COLOURS[EMOTIONS[j]], 2, cv2.LINE_AA)
    for kf in keyframes:
        if kf.time <= duration:
            label = EMOTIONS[emotion_index(kf.emotion)]
            value = 0.0 if label == NEUTRAL else kf.intensity
            cv2.circle(image, (min(lay.x_of(kf.time), lay.right), lay.y_of(value)), 4, EMOTION_COLOURS[label], -1,
                       cv2.LINE_AA)
    # legend
    entries = [(EMOTIONS[j], EMOTION_COLOURS[EMOTIONS[j]]) for j in shown] or [(NEUTRAL, EMOTION_COLOURS[NEUTRAL])]
    if silent is not None and silent.any():
        entries.append(("silence", SILENCE_COLOUR))
    if keyframes:
        entries.append(("keyframe", KEYFRAME_COLOUR))
    for row, (name, colour) in enumerate(entries):
        y = lay.top + 6 + 16 * row
        cv2.rectangle(image, (lay.right + 8, y - 5), (lay.right + 22, y + 5), colour, -1)
        _text(image, name, (lay.right + 26, y + 4))
    return image


def emotion_plot(spec, num_frames: int, fps: float, silent=None, width: int = 640, height: int = 240) -> np.ndarray:
    """The plot of a `pipeline.EmotionSpec` over ``num_frames`` frames at ``fps`` (its keyframes marked)."""
    keyframes: Sequence[Keyframe] = ()
    if spec.keyframes:
        keyframes = parse_keyframes(spec.keyframes) if isinstance(spec.keyframes, str) else list(spec.keyframes)
    title = "emotion timeline" if keyframes else ("emotion blend" if spec.blend else
                                                  f"{EMOTIONS[emotion_index(spec.emotion)]} {spec.intensity:g}")
    return draw_emotion_plot(spec.weights(num_frames, fps).numpy(), fps, keyframes, silent, width, height, title)


def save_plot(path: str, image: np.ndarray) -> str:
    """Write the plot as PNG atomically (a failed write leaves nothing behind)."""
    import os

    import cv2

    from .atomic import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with atomic_output(path) as tmp:
        ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
        if not ok:
            raise ValueError(f"cannot encode the emotion plot for {path}")
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
    return path
