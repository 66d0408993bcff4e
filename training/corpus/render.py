"""Rendering a procedural face from its 68 landmarks and its expression psi: anti-aliased polygons on a
supersampled canvas, with expression shading.

Identities differ in skin, hair (colour and style), eye colour, lips, background, lighting and skin
texture. Everything an expression changes is drawn from the landmarks (brows, lids, lips, jaw, teeth) and
from psi's named components (folds and wrinkles as soft darker lines, cheek bulges as soft highlights, the
lower teeth bared by lower_lip_depress; ``MARK_STRENGTH``), so the pixels are a function of the identity,
psi and the head pose, continuous in psi.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import cv2
import numpy as np

from emodiff_core.facemodel import COMPONENT, CROP_EYE_RATIO, EYE_DISTANCE, teeth_colour
from emodiff_core.shading import BLOB_BLUR, Canvas, band, expression_shading

SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.92, 0.74, 0.62], [0.84, 0.63, 0.50], [0.74, 0.53, 0.39],
                       [0.60, 0.42, 0.30], [0.45, 0.31, 0.22], [0.34, 0.23, 0.17]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.80, 0.66, 0.40],
                         [0.55, 0.22, 0.10], [0.62, 0.62, 0.62], [0.90, 0.88, 0.84]])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.20, 0.35, 0.60], [0.25, 0.45, 0.30], [0.45, 0.48, 0.50],
                         [0.12, 0.08, 0.05]])
HAIR_STYLES = ("short", "fringe", "long", "side_part", "bald")


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
        lips=lips, brow=np.clip(np.minimum(hair * 0.7 + skin * 0.1, skin * 0.5), 0, 1),   # brows always read darker
        brow_thickness=float(rng.uniform(0.06, 0.09)),
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


class Renderer(Canvas):
    """Draws frames of one identity at one size; caches the background, lighting and texture images."""

    def __init__(self, app: Appearance, size: int, supersample: int = 4):
        super().__init__(size, supersample)
        self.app = app
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

    def _window(self, pts, margin: float):
        """(y0, y1, x0, x1) canvas window around points (output pixels) plus ``margin`` output pixels."""
        c = self._canvas(pts)
        m = margin * self.ss + 2
        n = self.size * self.ss
        x0, y0 = (int(np.clip(np.floor(v - m), 0, n)) for v in c.min(0))
        x1, y1 = (int(np.clip(np.ceil(v + m) + 1, 0, n)) for v in c.max(0))
        return y0, max(y0, y1), x0, max(x0, x1)

    def render(self, lm: np.ndarray, outlines: Dict[str, np.ndarray], psi: np.ndarray) -> np.ndarray:
        """uint8 RGB [size, size, 3] from landmarks [68, 2] and outlines, both in output pixel coordinates, and
        the frame's expression vector psi (its named components drive the folds and wrinkles)."""
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
        factor = self.texture * fg
        factor += 1
        factor *= np.where(fg > 0, self.light, np.float32(1))
        img *= factor
        # expression folds, wrinkles and bulges on the face (inside its outline, under brows, eyes and mouth)
        y0, y1, x0, x1 = self._window(face, 3 * BLOB_BLUR * unit)   # the blur's edge stays off the face
        face_mask = np.zeros((y1 - y0, x1 - x0, 1), np.float32)
        self._fill(face_mask, face, (1.0,), origin=(x0, y0))
        face_mask *= self._shading(expression_shading(lm, psi), (y0, y1, x0, x1))
        face_mask += 1
        img[y0:y1, x0:x1] *= face_mask
        if app.hair_style != "bald":
            self._fill(img, outlines["hair_front"], app.hair)
        # brows: tapered bands, thickest a little inside the middle
        for brow in (lm[17:22], lm[22:27][::-1]):        # both from the outer end to the inner end
            self._fill(img, band(brow, app.brow_thickness * unit * np.array([0.55, 0.85, 1.0, 1.0, 0.9])), app.brow)
        # eyes: white, iris clipped to the lids, lash line on the upper lid
        for eye in (lm[36:42], lm[42:48]):
            centre = (eye[0] + eye[3]) / 2

            def draw_eye(layer, origin, centre=centre, eye=eye):
                self._fill(layer, eye, (0.93, 0.92, 0.9), origin)
                self._circle(layer, centre, 0.062 * unit, app.iris, origin)
                self._circle(layer, centre, 0.028 * unit, (0.02, 0.02, 0.02), origin)
            self._composite(img, eye, draw_eye)
            self._line(img, eye[[0, 1, 2, 3]], skin * 0.3, 0.03 * unit)
            self._line(img, eye[[3, 4, 5, 0]], skin * 0.6, 0.014 * unit)
        # nose: bottom curve and nostrils
        self._line(img, lm[31:36], skin * 0.6, 0.02 * unit)
        for k in (32, 34):
            self._circle(img, lm[k] + np.array([0, -0.015 * unit]), 0.022 * unit, skin * 0.35)
        shade_x = -np.sign(np.cos(app.light_angle)) * 0.03 * unit
        self._line(img, lm[27:31] + np.array([shade_x, 0]), skin * 0.8, 0.02 * unit)
        # mouth: lips, cavity, upper and lower teeth, the line between the lips
        self._fill(img, lm[48:60], app.lips)
        # the lower teeth show as far as the lower lip is pulled down off them (lower_lip_depress, AU16/20)
        bare = 0.05 * float(np.clip(psi[COMPONENT["lower_lip_depress"]], 0, 1))
        cavity = (0.18, 0.05, 0.06)     # rounded lips cover the teeth: they fade into it (teeth_colour)

        def draw_mouth(layer, origin):
            self._fill(layer, lm[60:68], cavity, origin)
            upper = lm[[60, 61, 62, 63, 64]]
            self._fill(layer, np.concatenate([upper, upper[::-1] + np.array([0, 0.06 * unit])]),
                       teeth_colour((0.92, 0.9, 0.85), cavity, psi), origin)
            if bare > 0:
                lower = lm[[64, 65, 66, 67, 60]]
                self._fill(layer, np.concatenate([lower, lower[::-1] - np.array([0, bare * unit])]),
                           teeth_colour((0.85, 0.83, 0.78), cavity, psi), origin)
        self._composite(img, lm[60:68], draw_mouth)
        self._line(img, lm[[60, 61, 62, 63, 64]], app.lips * 0.45, 0.022 * unit)
        out = cv2.resize(np.clip(img, 0, 1), (self.size, self.size), interpolation=cv2.INTER_AREA)
        return (out * 255.0 + 0.5).astype(np.uint8)

    def _composite(self, img, outline, draw):
        """Replace the inside of polygon ``outline`` by what ``draw(layer, origin)`` paints (e.g. an eye clipped
        to its lids), working in the polygon's window only."""
        y0, y1, x0, x1 = self._window(outline, 1)
        mask = np.zeros((y1 - y0, x1 - x0, 1), np.float32)
        self._fill(mask, outline, (1.0,), origin=(x0, y0))
        layer = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        draw(layer, (x0, y0))
        view = img[y0:y1, x0:x1]
        view *= 1 - mask
        view += layer * mask
