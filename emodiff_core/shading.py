"""Drawing on a supersampled canvas, and the expression shading of psi: the folds, wrinkles, bulges and shadows
that psi's named components put on skin (FACS cues).

Both the corpus' procedural renderer (`training.corpus.render.Renderer`) and the photo rig
(`emodiff_core.face_rig`) draw with `Canvas` and shade with `expression_shading`, so the same psi gives the
same marks on a drawn face and on a real one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import cv2
import numpy as np

from .facemodel import COMPONENT, CROP_EYE_RATIO, EYE_DISTANCE


class Canvas:
    """Drawing helpers on a canvas of ``size * ss`` pixels (an output of side ``size`` supersampled ``ss`` times)."""

    def __init__(self, size: int, ss: int):
        self.size, self.ss = size, ss

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


def band(points: np.ndarray, widths: np.ndarray) -> np.ndarray:
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
