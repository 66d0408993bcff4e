"""Rendering a procedural face from its 68 landmarks: anti-aliased polygons on a supersampled canvas.

Identities differ in skin, hair (colour and style), eye colour, lips, background, lighting and skin
texture. Everything an expression changes (brows, lids, lips, jaw) is drawn from the landmarks, so the
pixels follow psi exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import cv2
import numpy as np

from emodiff_core.faces import ALIGN_CROP_EYE_RATIO

from .facemodel import TEMPLATE

SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.92, 0.74, 0.62], [0.84, 0.63, 0.50], [0.74, 0.53, 0.39],
                       [0.60, 0.42, 0.30], [0.45, 0.31, 0.22], [0.34, 0.23, 0.17]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.80, 0.66, 0.40],
                         [0.55, 0.22, 0.10], [0.62, 0.62, 0.62], [0.90, 0.88, 0.84]])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.20, 0.35, 0.60], [0.25, 0.45, 0.30], [0.45, 0.48, 0.50],
                         [0.12, 0.08, 0.05]])
HAIR_STYLES = ("short", "fringe", "long", "side_part", "bald")
CANONICAL_NOSE_TIP = np.array([0.0, 0.12])
EYE_DISTANCE = float(np.linalg.norm(TEMPLATE[45] - TEMPLATE[36]))
# The crop convention shared with real data and inference (one definition, in the core): nose tip at the
# crop centre, the crop side is ALIGN_CROP_EYE_RATIO times the outer-eye-corner distance.
CROP_EYE_RATIO = ALIGN_CROP_EYE_RATIO


@dataclass
class Appearance:
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    hairline: float          # canonical y of the hairline
    iris: np.ndarray
    lips: np.ndarray
    brow: np.ndarray
    brow_thickness: float
    clothes: np.ndarray
    background: np.ndarray   # two colours [2, 3]
    background_pattern: int
    light_angle: float
    light_strength: float
    texture_amplitude: float
    texture_seed: int
    ear_size: float


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.1)
    lips = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-0.05, 0.08), 0, 1)
    background = rng.uniform(0.1, 0.95, (2, 3))
    # keep the background distinguishable from the skin
    while np.abs(background.mean(0) - skin).sum() < 0.35:
        background = rng.uniform(0.1, 0.95, (2, 3))
    return Appearance(
        skin=np.clip(skin, 0, 1), hair=np.clip(hair, 0, 1), hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        hairline=float(rng.uniform(-0.95, -0.72)), iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        lips=lips, brow=np.clip(hair * 0.7 + skin * 0.1, 0, 1), brow_thickness=float(rng.uniform(0.035, 0.07)),
        clothes=rng.uniform(0.05, 0.9, 3), background=background, background_pattern=int(rng.integers(3)),
        light_angle=float(rng.uniform(0, 2 * np.pi)), light_strength=float(rng.uniform(0.05, 0.3)),
        texture_amplitude=float(rng.uniform(0.005, 0.025)), texture_seed=int(rng.integers(2 ** 31)),
        ear_size=float(rng.uniform(0.13, 0.2)),
    )


def outline_points(shape: np.ndarray, app: Appearance) -> Dict[str, np.ndarray]:
    """Canonical outlines beyond the 68 landmarks (forehead, hair, ears, neck, shoulders) for one identity.

    ``shape`` is the identity's neutral landmark set [68, 2]; the outlines are posed with the landmarks.
    """
    left, right = shape[0], shape[16]
    half_w = (right[0] - left[0]) / 2
    cx, top_y = (left[0] + right[0]) / 2, shape[19, 1] - 0.62
    a = np.linspace(np.pi, 2 * np.pi, 15)[1:-1]
    forehead = np.stack([cx + half_w * 1.01 * np.cos(a), left[1] + (left[1] - top_y) * np.sin(a)], 1)
    hair_top = top_y - 0.13
    b = np.linspace(np.pi * 0.92, np.pi * 2.08, 25)
    hair_back = np.stack([cx + half_w * 1.16 * np.cos(b), left[1] + 0.1 + (left[1] + 0.1 - hair_top) * np.sin(b)], 1)
    if app.hair_style == "long":
        hair_back = np.concatenate([[[cx - half_w * 1.25, 1.35]], hair_back, [[cx + half_w * 1.25, 1.35]]])
    # the hair over the forehead, down to the hairline, shaped by style
    c = np.linspace(np.pi, 2 * np.pi, 17)
    cap = np.stack([cx + half_w * 1.06 * np.cos(c), left[1] + 0.02 + (left[1] + 0.02 - hair_top) * np.sin(c)], 1)
    xs = np.linspace(cap[-1, 0], cap[0, 0], 9)
    if app.hair_style == "fringe":
        line = np.stack([xs, app.hairline + 0.12 + 0.05 * (np.arange(9) % 2)], 1)
    elif app.hair_style == "side_part":
        line = np.stack([xs, app.hairline + 0.18 * np.linspace(0, 1, 9) ** 2], 1)
    else:
        line = np.stack([xs, app.hairline - 0.04 * np.cos(np.linspace(-1.2, 1.2, 9))], 1)
    hair_front = np.concatenate([cap, line])
    ears = []
    for side, p in ((-1, shape[1]), (1, shape[15])):
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ears.append(np.stack([p[0] + side * 0.05 + app.ear_size * 0.45 * np.cos(t),
                              p[1] - 0.05 + app.ear_size * np.sin(t)], 1))
    neck = np.array([[shape[4, 0] + 0.05, shape[4, 1] - 0.1], [shape[12, 0] - 0.05, shape[12, 1] - 0.1],
                     [shape[12, 0] - 0.02, 1.45], [shape[4, 0] + 0.02, 1.45]])
    t = np.linspace(np.pi, 2 * np.pi, 21)
    shoulders = np.stack([cx + 1.75 * np.cos(t), 2.05 + 0.8 * np.sin(t)], 1)
    shoulders = np.concatenate([shoulders, [[cx + 1.75, 2.6], [cx - 1.75, 2.6]]])
    return {"forehead": forehead, "hair_back": hair_back, "hair_front": hair_front, "ear_a": ears[0],
            "ear_b": ears[1], "neck": neck, "shoulders": shoulders}


OUTLINE_DEPTH = {"forehead": 0.0, "hair_back": -0.3, "hair_front": 0.05, "ear_a": -0.35, "ear_b": -0.35,
                 "neck": -0.2, "shoulders": -0.3}


def canonical_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Canonical units -> pixel coordinates of a ``size`` crop (nose tip at the centre)."""
    unit = size / (CROP_EYE_RATIO * EYE_DISTANCE)
    return size / 2.0 + (points - CANONICAL_NOSE_TIP) * unit


class Renderer:
    """Draws frames of one identity at one size; caches the background, lighting and texture images."""

    def __init__(self, app: Appearance, size: int, supersample: int = 4):
        self.app = app
        self.size = size
        self.ss = supersample
        n = size * supersample
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        bg0, bg1 = app.background.astype(np.float32)
        ramp = yy[..., None]
        if app.background_pattern == 1:
            ramp = (0.5 + 0.5 * np.sin(xx * 9.0))[..., None] * 0.4 + yy[..., None] * 0.6
        elif app.background_pattern == 2:
            ramp = np.clip(np.hypot(xx - 0.3, yy - 0.2), 0, 1)[..., None]
        self.background = bg0 * (1 - ramp) + bg1 * ramp
        direction = np.array([np.cos(app.light_angle), np.sin(app.light_angle)], np.float32)
        self.light = (1.0 + app.light_strength * ((xx - 0.5) * direction[0] + (yy - 0.5) * direction[1]) * 2)[..., None]
        rng = np.random.default_rng(app.texture_seed)
        coarse = rng.normal(size=(n // 8 + 1, n // 8 + 1)).astype(np.float32)
        fine = rng.normal(size=(n // 2, n // 2)).astype(np.float32)
        texture = cv2.resize(coarse, (n, n), interpolation=cv2.INTER_CUBIC) * 0.6 + \
            cv2.resize(fine, (n, n), interpolation=cv2.INTER_LINEAR) * 0.4
        self.texture = (texture * app.texture_amplitude)[..., None]

    # -- drawing helpers (pixel coordinates of the output size; scaled by the supersampling factor)
    # Landmarks use continuous pixel coordinates: the centre of pixel (row r, col c) is (c + 0.5, r + 0.5).
    # OpenCV draws with pixel centres at integers, so a point p lands on the canvas at p * ss - 0.5.
    def _canvas(self, pts) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) * self.ss - 0.5

    def _pts(self, pts: np.ndarray) -> np.ndarray:
        return np.round(self._canvas(pts) * 16).astype(np.int32).reshape(-1, 1, 2)

    def _fill(self, img, pts, colour):
        cv2.fillPoly(img, [self._pts(pts)], tuple(float(c) for c in colour), lineType=cv2.LINE_AA, shift=4)

    def _line(self, img, pts, colour, thickness, closed=False):
        t = max(1, int(round(thickness * self.ss)))
        cv2.polylines(img, [self._pts(pts)], closed, tuple(float(c) for c in colour), t, lineType=cv2.LINE_AA, shift=4)

    def _circle(self, img, centre, radius, colour):
        c = tuple(int(v) for v in np.round(self._canvas(centre) * 16))
        cv2.circle(img, c, int(round(radius * self.ss * 16)), tuple(float(v) for v in colour), -1,
                   lineType=cv2.LINE_AA, shift=4)

    def render(self, lm: np.ndarray, outlines: Dict[str, np.ndarray]) -> np.ndarray:
        """uint8 RGB [size, size, 3] from landmarks [68, 2] and outlines, both in output pixel coordinates."""
        app = self.app
        n = self.size * self.ss
        unit = self.size / (CROP_EYE_RATIO * EYE_DISTANCE)
        img = self.background.copy()
        fg = np.zeros((n, n, 1), np.float32)
        skin = app.skin
        for name, colour in (("shoulders", app.clothes), ("hair_back", app.hair if app.hair_style != "bald" else None),
                             ("neck", skin * 0.82), ("ear_a", skin * 0.93), ("ear_b", skin * 0.93)):
            if colour is None:
                continue
            self._fill(img, outlines[name], colour)
            self._fill(fg, outlines[name], (1.0,))
        face = np.concatenate([lm[0:17], outlines["forehead"][::-1]])
        self._fill(img, face, skin)
        self._fill(fg, face, (1.0,))
        # skin texture and lighting on everything in front of the background
        img = img * (1 + self.texture * fg) * np.where(fg > 0, self.light, 1.0)
        if app.hair_style != "bald":
            self._fill(img, outlines["hair_front"], app.hair)
        # brows
        for brow in (lm[17:22], lm[22:27]):
            self._line(img, brow, app.brow, app.brow_thickness * unit)
        # eyes: white, iris clipped to the lids, lid line
        for eye in (lm[36:42], lm[42:48]):
            mask = np.zeros((n, n, 1), np.float32)
            self._fill(mask, eye, (1.0,))
            layer = np.zeros((n, n, 3), np.float32)
            self._fill(layer, eye, (0.93, 0.92, 0.9))
            centre = (eye[0] + eye[3]) / 2
            self._circle(layer, centre, 0.062 * unit, app.iris)
            self._circle(layer, centre, 0.028 * unit, (0.02, 0.02, 0.02))
            img = img * (1 - mask) + layer * mask
            self._line(img, eye[[0, 1, 2, 3]], skin * 0.35, 0.022 * unit)
        # nose: bottom curve and nostrils
        self._line(img, lm[31:36], skin * 0.6, 0.02 * unit)
        for k in (32, 34):
            self._circle(img, lm[k] + np.array([0, -0.015 * unit]), 0.022 * unit, skin * 0.35)
        shade = -np.sign(np.cos(app.light_angle)) * 0.03 * unit
        self._line(img, lm[27:31] + np.array([shade, 0]), skin * 0.8, 0.02 * unit)
        # mouth: lips, cavity, teeth
        self._fill(img, lm[48:60], app.lips)
        inner = lm[60:68]
        mask = np.zeros((n, n, 1), np.float32)
        self._fill(mask, inner, (1.0,))
        layer = np.zeros((n, n, 3), np.float32)
        self._fill(layer, inner, (0.18, 0.05, 0.06))
        upper = lm[[60, 61, 62, 63, 64]]
        teeth = np.concatenate([upper, upper[::-1] + np.array([0, 0.06 * unit])])
        self._fill(layer, teeth, (0.92, 0.9, 0.85))
        img = img * (1 - mask) + layer * mask
        self._line(img, lm[[60, 61, 62, 63, 64]], app.lips * 0.55, 0.018 * unit)
        out = cv2.resize(np.clip(img, 0, 1), (self.size, self.size), interpolation=cv2.INTER_AREA)
        return (out * 255.0 + 0.5).astype(np.uint8)
