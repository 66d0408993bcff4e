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

from emodiff_core.faces import ALIGN_CROP_EYE_RATIO

from .facemodel import COMPONENT, TEMPLATE, teeth_colour

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
    # ``origin`` (x, y) draws into a window of the canvas that starts at that canvas pixel; an integer shift,
    # so a window gets exactly the pixels the full canvas would.
    def _canvas(self, pts, origin=(0, 0)) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) * self.ss - 0.5 - np.asarray(origin, dtype=np.float64)

    def _pts(self, pts: np.ndarray, origin=(0, 0)) -> np.ndarray:
        return np.round(self._canvas(pts, origin) * 16).astype(np.int32).reshape(-1, 1, 2)

    def _fill(self, img, pts, colour, origin=(0, 0)):
        cv2.fillPoly(img, [self._pts(pts, origin)], tuple(float(c) for c in colour), lineType=cv2.LINE_AA, shift=4)

    def _line(self, img, pts, colour, thickness, closed=False, origin=(0, 0)):
        t = max(1, int(round(thickness * self.ss)))
        cv2.polylines(img, [self._pts(pts, origin)], closed, tuple(float(c) for c in colour), t,
                      lineType=cv2.LINE_AA, shift=4)

    def _circle(self, img, centre, radius, colour, origin=(0, 0)):
        c = tuple(int(v) for v in np.round(self._canvas(centre, origin) * 16))
        cv2.circle(img, c, int(round(radius * self.ss * 16)), tuple(float(v) for v in colour), -1,
                   lineType=cv2.LINE_AA, shift=4)

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
            self._fill(img, _band(brow, app.brow_thickness * unit * np.array([0.55, 0.85, 1.0, 1.0, 0.9])), app.brow)
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

    def _shading(self, marks: "ShadingMarks", window) -> np.ndarray:
        """Multiplicative skin shading [h, w, 1] of a canvas window (0 = none) from folds (thin lines) and soft
        bulges/shadows."""
        y0, y1, x0, x1 = window
        unit = self.size / (CROP_EYE_RATIO * EYE_DISTANCE)
        shade = np.zeros((y1 - y0, x1 - x0), np.float32)
        for layer, sigma in ((marks.lines, LINE_BLUR), (marks.blobs, BLOB_BLUR)):
            if not layer:
                continue
            acc = np.zeros_like(shade)
            for weight, draw in layer:
                canvas = np.zeros_like(shade)
                draw(self, canvas, (x0, y0))
                acc += weight * canvas
            # the blur treats the window's edge as a mirror; the face mask hides what is outside the face anyway
            shade += cv2.GaussianBlur(acc, (0, 0), sigma * unit * self.ss)
        return shade[..., None]


# Expression shading, in face units (1 = the outer-eye-corner distance / 1.2): folds are soft lines, bulges and
# shadows soft ellipses. Each mark's strength is a linear function of the positive parts of named psi components
# ("-name": of the negative part), so k = 0.5 shows half the fold and psi alone decides the pixels. Strength s
# multiplies the skin by (1 - s) along a fold before the blur (1 + s for a highlight).
MARK_STRENGTH = {
    "nasolabial": {"lip_corner_up": 0.30, "cheek_raise": 0.25, "upper_lip_raise": 0.30, "nose_wrinkle": 0.15},
    "crows_feet": {"cheek_raise": 0.30},                    # AU6
    "lower_lid_bulge": {"cheek_raise": 0.22},               # AU6
    "cheek_highlight": {"cheek_raise": 0.16},               # AU6 (lightens)
    "glabella": {"brow_lower": 0.45},                       # AU4: vertical furrows between the brows
    "brow_shadow": {"brow_lower": 0.22},                    # AU4: the lowered brow shades the eye
    "forehead": {"outer_brow_raise": 0.22},                 # AU2: wrinkles across the forehead
    "forehead_middle": {"inner_brow_raise": 0.24},          # AU1: wrinkles over the inner brows
    "nose_lines": {"nose_wrinkle": 0.45},                   # AU9
    "mouth_corner_lines": {"-lip_corner_up": 0.35},         # AU15
    "contempt_dimple": {"contempt": 0.5},                   # AU14 (one side)
    "chin_boss": {"lip_press": 0.2},                        # AU17/24
}
LINE_BLUR = 0.02      # Gaussian sigma of fold lines
BLOB_BLUR = 0.05      # Gaussian sigma of bulges and shadows
FOLD_WIDTH = 0.045


@dataclass
class ShadingMarks:
    lines: list   # (weight, draw(renderer, canvas, unit)) ; weight < 0 darkens, > 0 lightens
    blobs: list


def mark_strengths(psi: np.ndarray) -> Dict[str, float]:
    """The strength of every shading mark for expression psi (named components first)."""
    out = {}
    for mark, terms in MARK_STRENGTH.items():
        total = 0.0
        for name, coef in terms.items():
            value = float(psi[COMPONENT[name.lstrip("-")]])
            total += coef * max(0.0, -value if name.startswith("-") else value)
        out[mark] = total
    return out


def _band(points: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """A closed polygon around a polyline [K, 2] with the given full widths per point."""
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) * (widths[:, None] / 2)
    return np.concatenate([points + normal, (points - normal)[::-1]])


def _bezier(p0, p1, p2, steps: int = 9) -> np.ndarray:
    t = np.linspace(0, 1, steps)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def expression_shading(lm: np.ndarray, psi: np.ndarray) -> ShadingMarks:
    """Folds, wrinkles, bulges and shadows of the expression (FACS cues) from landmarks [68, 2] (pixels) and psi.

    Positions follow the landmarks (so the head pose); strengths follow psi (``MARK_STRENGTH``): nasolabial
    folds, crow's feet, lower-lid bulge and cheek highlight (AU6/9/10/12), glabellar furrows and brow shadow
    (AU4), forehead wrinkles (AU1/2), nose-bridge lines (AU9), lines down from the lip corners (AU15), the
    contempt dimple (AU14, image-right corner) and the chin boss under pressed lips.
    """
    strength = mark_strengths(psi)
    ex = lm[45] - lm[36]
    eye_px = np.linalg.norm(ex)
    ex = ex / (eye_px + 1e-9)
    ey = np.array([-ex[1], ex[0]])                      # the face's down direction
    u = eye_px / EYE_DISTANCE                             # posed pixels per face unit

    def at(p, a, b):
        """p + a face units along the face's x axis + b units down."""
        return p + u * (a * ex + b * ey)

    def lines(polys, width=FOLD_WIDTH):
        def draw(r, canvas, origin):
            for poly in polys:
                r._line(canvas, poly, (1.0,), width * u, origin=origin)
        return draw

    def ellipses(centres, axes):
        def draw(r, canvas, origin):
            angle = float(np.degrees(np.arctan2(ex[1], ex[0])))
            for centre in centres:
                cv2.ellipse(canvas, tuple(int(v) for v in np.round(r._canvas(centre, origin) * 16)),
                            tuple(int(round(a * u * r.ss * 16)) for a in axes), angle, 0, 360, (1.0,), -1,
                            lineType=cv2.LINE_AA, shift=4)
        return draw

    out = ShadingMarks([], [])
    # per side: sign (image-left -1), nose wing, lip corner, outer eye corner, lower lid (outer, inner),
    # brow inner end, brow middle, upper lid
    sides = ((-1, 31, 48, 36, [41, 40], 21, 19, [37, 38]), (1, 35, 54, 45, [46, 47], 22, 24, [43, 44]))

    def add(mark, layer, draw, sign=-1.0):
        if strength[mark] > 0:                          # a zero-strength mark adds nothing: skip drawing it
            layer.append((sign * strength[mark], draw))

    polys = []
    for s, wing, corner, *_ in sides:
        p0, p2 = at(lm[wing], s * 0.05, -0.03), at(lm[corner], s * 0.07, 0.08)
        polys.append(_bezier(p0, at((p0 + p2) / 2, s * 0.05, 0), p2))
    add("nasolabial", out.lines, lines(polys))
    feet, lids, highlights = [], [], []
    for s, _, _, outer, lower, *_ in sides:
        for dy in (-0.035, 0.01, 0.055):
            feet.append(np.stack([at(lm[outer], s * 0.045, dy), at(lm[outer], s * 0.12, 1.7 * dy)]))
        lids.append(np.stack([at(lm[outer], -s * 0.02, 0.05), at(lm[lower[0]], 0, 0.045),
                              at(lm[lower[1]], 0, 0.045), at(lm[outer - s * 3], s * 0.02, 0.04)]))
        highlights.append(at(lm[lower].mean(0), s * 0.05, 0.17))
    add("crows_feet", out.lines, lines(feet, 0.035))
    add("lower_lid_bulge", out.lines, lines(lids))
    add("cheek_highlight", out.blobs, ellipses(highlights, (0.13, 0.08)), sign=1.0)
    add("glabella", out.lines, lines([np.stack([at(lm[inner], -s * 0.03, -0.06), at(lm[inner], -s * 0.035, 0.07)])
                                      for s, _, _, _, _, inner, _, _ in sides]))
    add("brow_shadow", out.blobs, ellipses([(lm[mid] + lm[lid].mean(0)) / 2 for s, *_, mid, lid in sides],
                                           (0.16, 0.06)))
    brows = np.concatenate([lm[17:22], lm[22:27]])
    add("forehead", out.lines, lines([brows - u * d * ey for d in (0.10, 0.185, 0.27)], 0.03))
    bump = np.array([0.0, 0.02, 0.035, 0.035, 0.02, 0.0])[:, None]
    add("forehead_middle", out.lines, lines([brows[2:8] - u * (d + bump) * ey for d in (0.10, 0.18, 0.26)], 0.03))
    polys = []
    for f in (0.25, 0.45, 0.65):
        centre = lm[27] + f * (lm[29] - lm[27])
        polys.append(np.stack([at(centre, -0.065, 0.015), at(centre, 0, 0), at(centre, 0.065, 0.015)]))
    for s, *_, inner, _, _ in sides:
        polys.append(np.stack([at(lm[28], s * 0.05, 0.0), at(lm[inner], s * 0.03, 0.14)]))
    add("nose_lines", out.lines, lines(polys, 0.035))
    add("mouth_corner_lines", out.lines, lines([_bezier(at(lm[corner], s * 0.02, 0.01), at(lm[corner], s * 0.045, 0.06),
                                                        at(lm[corner], s * 0.04, 0.14)) for s, _, corner, *_ in sides]))
    p = lm[54]
    add("contempt_dimple", out.lines, lines([_bezier(at(p, 0.03, -0.05), at(p, 0.075, 0.0), at(p, 0.03, 0.055))]))
    add("chin_boss", out.lines, lines([_bezier(at(lm[58], 0, 0.07), at(lm[57], 0, 0.1), at(lm[56], 0, 0.07))]))
    return out
