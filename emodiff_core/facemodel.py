"""A FLAME-like linear face model in 2D: 68 iBUG landmarks = template + identity basis . beta +
expression basis . psi, then a head pose.

Canonical coordinates: x to the image right, y down, the outer eye corners 1.2 units apart, the nose
tip (landmark 30) near (0, 0.12). psi is 50-dimensional like DECA's expression vector. Its leading
components carry meaning (``EXPRESSION_COMPONENTS``, one unit is a clearly visible full-strength action);
components 13..49 are small smooth displacement fields (a few thousandths of a unit), like the many
low-energy components of a real expression space.

It defines what psi means for every model of the pack (the expression generator and the denoiser were trained
on psi of this model) and the crop convention of its pixels, so it lives in the core: the corpus renders with it
(`training.corpus`), and sampling re-renders a user's photo with it (`emodiff_core.face_rig`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from .config import EXPRESSION_DIM
from .faces import ALIGN_CROP_EYE_RATIO

NUM_LANDMARKS = 68
JAW = np.arange(0, 17)
BROW_R_IMG = np.arange(17, 22)      # the brow on the image's left
BROW_L_IMG = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BOTTOM = np.arange(31, 36)
EYE_A = np.arange(36, 42)           # image-left eye: 36 outer corner, 37-38 upper lid, 39 inner, 40-41 lower
EYE_B = np.arange(42, 48)           # image-right eye: 42 inner, 43-44 upper, 45 outer, 46-47 lower
OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([40, 41, 46, 47])

EXPRESSION_COMPONENTS = (
    "jaw_open", "mouth_width", "lip_corner_up", "upper_lip_raise", "inner_brow_raise", "outer_brow_raise",
    "brow_lower", "eye_openness", "cheek_raise", "nose_wrinkle", "lip_press", "contempt", "lower_lip_depress",
)
NUM_NAMED = len(EXPRESSION_COMPONENTS)
COMPONENT = {name: i for i, name in enumerate(EXPRESSION_COMPONENTS)}
# the components the corpus drives from the voice (`audio.mouth_drive`)
SPEECH_COMPONENTS = ("jaw_open", "mouth_width", "lip_press")
# the components speech moves in psi: those, and the lower lip that opens with them (`pipeline.hold_voice_mouth`)
SPEECH_MOUTH_COMPONENTS = tuple(COMPONENT[name] for name in SPEECH_COMPONENTS + ("lower_lip_depress",))
IDENTITY_DIM = 10


def speech_psi(drive: Dict[str, np.ndarray]) -> np.ndarray:
    """psi's speech part [N, D] from a voice's mouth drive (`audio.mouth_drive`): its tracks in the
    `SPEECH_COMPONENTS`, zero elsewhere. The one mapping of a voice onto psi: the corpora drive their faces with it
    (`training.corpus`), sampling follows a recording with it (`pipeline.speech_mouth_motion`)."""
    psi = np.zeros((len(drive[SPEECH_COMPONENTS[0]]), EXPRESSION_DIM))
    for name in SPEECH_COMPONENTS:
        psi[:, COMPONENT[name]] = drive[name]
    return psi


def _template() -> np.ndarray:
    pts = np.zeros((NUM_LANDMARKS, 2))
    a = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(a), np.sin(a)
    pts[JAW, 0] = -np.sign(c) * np.abs(c) ** 0.75 * 0.98
    pts[JAW, 1] = -0.22 + 1.17 * np.abs(s) ** 1.35
    u = np.linspace(0.0, 1.0, 5)
    pts[BROW_R_IMG, 0] = -0.80 + 0.62 * u
    pts[BROW_R_IMG, 1] = -0.46 - 0.09 * np.sin(np.pi * (0.35 + 0.65 * u))
    pts[BROW_L_IMG] = pts[BROW_R_IMG][::-1] * [-1, 1]
    pts[NOSE_BRIDGE, 0] = 0.0
    pts[NOSE_BRIDGE, 1] = np.linspace(-0.28, 0.12, 4)
    pts[NOSE_BOTTOM] = [[-0.19, 0.21], [-0.1, 0.245], [0.0, 0.26], [0.1, 0.245], [0.19, 0.21]]
    pts[EYE_A] = [[-0.60, -0.25], [-0.49, -0.31], [-0.36, -0.31], [-0.25, -0.25], [-0.36, -0.205], [-0.49, -0.205]]
    pts[EYE_B] = [[0.25, -0.25], [0.36, -0.31], [0.49, -0.31], [0.60, -0.25], [0.49, -0.205], [0.36, -0.205]]
    pts[OUTER_LIP] = [[-0.36, 0.50], [-0.24, 0.455], [-0.10, 0.43], [0.0, 0.445], [0.10, 0.43], [0.24, 0.455],
                      [0.36, 0.50], [0.24, 0.575], [0.12, 0.61], [0.0, 0.62], [-0.12, 0.61], [-0.24, 0.575]]
    pts[INNER_LIP] = [[-0.30, 0.50], [-0.12, 0.49], [0.0, 0.495], [0.12, 0.49], [0.30, 0.50],
                      [0.12, 0.505], [0.0, 0.51], [-0.12, 0.505]]
    return pts


TEMPLATE = _template()


def _side(idx) -> np.ndarray:
    """-1 for image-left points, +1 for image-right ones, 0 on the midline."""
    return np.sign(TEMPLATE[idx, 0])


def _expression_basis(rng: np.random.Generator) -> np.ndarray:
    """[50, 68, 2] displacement per unit of each psi component."""
    B = np.zeros((EXPRESSION_DIM, NUM_LANDMARKS, 2))
    T = TEMPLATE
    corners = np.array([48, 54, 60, 64])
    near_corner = np.array([49, 53, 55, 59, 61, 63, 65, 67])
    upper_outer, lower_outer = np.arange(49, 54), np.arange(55, 60)
    upper_inner, lower_inner = np.array([61, 62, 63]), np.array([65, 66, 67])

    j = B[COMPONENT["jaw_open"]]
    chin_weight = np.abs(np.sin(np.linspace(0.0, np.pi, 17))) ** 1.5
    j[JAW, 1] = 0.26 * chin_weight
    j[lower_outer, 1] = 0.26
    j[lower_inner, 1] = 0.25
    j[corners, 1] = 0.09
    j[lower_outer, 0] = -0.03 * _side(lower_outer)
    j[[49, 53], 1] = 0.01

    w = B[COMPONENT["mouth_width"]]
    w[corners, 0] = 0.12 * _side(corners)
    w[near_corner, 0] = 0.06 * _side(near_corner)
    w[upper_outer, 1] = 0.012
    w[lower_outer, 1] = -0.012

    s = B[COMPONENT["lip_corner_up"]]
    s[corners, 1] = -0.13
    s[corners, 0] = 0.05 * _side(corners)
    s[[49, 53, 55, 59, 61, 63, 65, 67], 1] = -0.055
    s[[57, 66], 1] = 0.015

    u = B[COMPONENT["upper_lip_raise"]]
    u[upper_outer, 1] = -0.11 * np.array([0.6, 0.9, 1.0, 0.9, 0.6])
    u[upper_inner, 1] = -0.10          # the upper lip leaves the lower one: upper teeth show
    u[NOSE_BOTTOM, 1] = -0.025

    ib = B[COMPONENT["inner_brow_raise"]]
    ib[[21, 22], 1] = -0.17
    ib[[20, 23], 1] = -0.12
    ib[[19, 24], 1] = -0.06
    ib[[18, 25], 1] = -0.02

    ob = B[COMPONENT["outer_brow_raise"]]
    ob[[17, 26], 1] = -0.16
    ob[[18, 25], 1] = -0.13
    ob[[19, 24], 1] = -0.08
    ob[[20, 23], 1] = -0.03

    bl = B[COMPONENT["brow_lower"]]
    bl[np.r_[BROW_R_IMG, BROW_L_IMG], 1] = 0.10
    bl[[20, 23], 1] = 0.13
    bl[[21, 22], 1] = 0.16             # the inner ends most: the brows slant down towards the nose
    bl[[20, 21, 22, 23], 0] = -0.06 * _side([20, 21, 22, 23])
    bl[UPPER_LIDS, 1] = 0.012           # the lowered brow presses on the upper lids
    bl[[27], 1] = 0.02

    eo = B[COMPONENT["eye_openness"]]
    eo[UPPER_LIDS, 1] = -0.055
    eo[LOWER_LIDS, 1] = 0.018

    cr = B[COMPONENT["cheek_raise"]]
    cr[LOWER_LIDS, 1] = -0.045
    cr[corners, 1] = -0.03
    cr[[31, 35], 1] = -0.012
    cr[[2, 3, 13, 14], 0] = 0.015 * _side([2, 3, 13, 14])

    nw = B[COMPONENT["nose_wrinkle"]]
    nw[NOSE_BOTTOM, 1] = -0.045
    nw[[31, 35], 0] = 0.03 * _side([31, 35])
    nw[[21, 22], 1] = 0.06
    nw[[20, 23], 1] = 0.03
    nw[upper_outer, 1] = -0.035
    nw[LOWER_LIDS, 1] = -0.015
    nw[[28, 29], 1] = -0.01

    lp = B[COMPONENT["lip_press"]]
    lp[upper_outer, 1] = 0.028
    lp[lower_outer, 1] = -0.035
    lp[corners, 0] = -0.02 * _side(corners)
    lp[lower_inner, 1] = -0.008

    ct = B[COMPONENT["contempt"]]
    ct[[54, 64], 1] = -0.11
    ct[[54, 64], 0] = 0.05
    ct[[53, 55, 63, 65], 1] = -0.05

    ld = B[COMPONENT["lower_lip_depress"]]
    ld[lower_outer, 1] = 0.08 * np.array([0.6, 0.9, 1.0, 0.9, 0.6])
    ld[lower_inner, 1] = 0.07          # the lower lip leaves the upper one: lower teeth show

    # Components 13..49: smooth low-energy fields (a random combination of the named actions' shapes and
    # a global smooth warp), scaled to a few thousandths of a unit.
    for k in range(NUM_NAMED, EXPRESSION_DIM):
        mix = rng.normal(size=NUM_NAMED) @ B[:NUM_NAMED].reshape(NUM_NAMED, -1)
        mix = mix.reshape(NUM_LANDMARKS, 2)
        warp = np.stack([np.sin(T[:, 1] * rng.uniform(1, 4) + rng.uniform(0, 6)),
                         np.cos(T[:, 0] * rng.uniform(1, 4) + rng.uniform(0, 6))], axis=1)
        field = mix / (np.abs(mix).max() + 1e-9) + 0.5 * warp
        B[k] = 0.004 * field / np.abs(field).max()
    return B


def _identity_basis() -> np.ndarray:
    """[10, 68, 2] identity shape directions (face width, jaw, eye size/spacing, nose, mouth, brows)."""
    B = np.zeros((IDENTITY_DIM, NUM_LANDMARKS, 2))
    T = TEMPLATE
    B[0, :, 0] = 0.12 * T[:, 0]                              # face width
    B[1, JAW, 1] = 0.10 * np.clip(T[JAW, 1] + 0.22, 0, None)  # face length (jaw)
    B[1, np.r_[OUTER_LIP, INNER_LIP], 1] = 0.05
    B[2, JAW, 0] = 0.08 * np.sign(T[JAW, 0]) * np.clip(T[JAW, 1], 0, None)   # square vs pointed jaw
    for eye in (EYE_A, EYE_B):
        centre = T[eye].mean(axis=0)
        B[3, eye] = 0.18 * (T[eye] - centre)                  # eye size
        B[4, eye, 0] = 0.05 * np.sign(centre[0])              # eye spacing
    B[5, NOSE_BOTTOM, 1] = 0.06                               # nose length
    B[5, [30], 1] = 0.06
    B[6, NOSE_BOTTOM, 0] = 0.25 * T[NOSE_BOTTOM, 0]          # nose width
    B[7, np.r_[OUTER_LIP, INNER_LIP], 0] = 0.15 * T[np.r_[OUTER_LIP, INNER_LIP], 0]   # mouth width
    B[8, np.arange(49, 54), 1] = -0.025                       # lip fullness
    B[8, np.arange(55, 60), 1] = 0.03
    B[9, np.r_[BROW_R_IMG, BROW_L_IMG], 1] = -0.06            # brow height
    return B


EXPRESSION_BASIS = _expression_basis(np.random.default_rng(20240911))
IDENTITY_BASIS = _identity_basis()

# The crop convention shared by the corpus, real data and inference: nose tip at the crop centre, the crop side
# ALIGN_CROP_EYE_RATIO times the outer-eye-corner distance (`faces.align_face` crops photos so).
CANONICAL_NOSE_TIP = np.array([0.0, 0.12])
EYE_DISTANCE = float(np.linalg.norm(TEMPLATE[45] - TEMPLATE[36]))
CROP_EYE_RATIO = ALIGN_CROP_EYE_RATIO


def canonical_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Canonical units -> pixel coordinates of a ``size`` crop (nose tip at the centre)."""
    unit = size / (CROP_EYE_RATIO * EYE_DISTANCE)
    return size / 2.0 + (points - CANONICAL_NOSE_TIP) * unit
# Relative depth of each landmark (nose tip forward), used to fake a yaw rotation in 2D.
DEPTH = np.zeros(NUM_LANDMARKS)
DEPTH[NOSE_BRIDGE] = np.linspace(0.15, 0.4, 4)
DEPTH[NOSE_BOTTOM] = [0.2, 0.28, 0.32, 0.28, 0.2]
DEPTH[np.r_[OUTER_LIP, INNER_LIP]] = 0.18
DEPTH[JAW] = -0.25 * np.abs(np.cos(np.linspace(0, np.pi, 17)))


@dataclass
class HeadPose:
    """Per-frame head pose: yaw (radians, faked in 2D), roll (radians), scale, translation (units)."""

    yaw: np.ndarray
    roll: np.ndarray
    scale: np.ndarray
    tx: np.ndarray
    ty: np.ndarray


def landmarks_canonical(beta: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """[N, 68, 2] canonical landmarks for identity beta [10] and expressions psi [N, 50]."""
    shape = TEMPLATE + np.tensordot(beta, IDENTITY_BASIS, axes=1)
    pts = shape[None] + np.tensordot(psi, EXPRESSION_BASIS, axes=1)
    # Eyelids never cross: the upper lid stops at the lower one (a blink closes the eye, no further).
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        pts[:, upper, 1] = np.minimum(pts[:, upper, 1], pts[:, lower, 1])
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        pts[:, lower, 1] = np.maximum(pts[:, lower, 1], pts[:, upper, 1])
    return pts


def apply_pose(points: np.ndarray, pose: HeadPose, depth: np.ndarray = DEPTH) -> np.ndarray:
    """Pose [N, K, 2] canonical points (K may exceed 68 with ``depth`` extended accordingly)."""
    x, y = points[..., 0], points[..., 1]
    yaw = pose.yaw[:, None]
    x = x * np.cos(yaw) + depth[None] * np.sin(yaw)
    roll = pose.roll[:, None]
    xr = x * np.cos(roll) - y * np.sin(roll)
    yr = x * np.sin(roll) + y * np.cos(roll)
    return np.stack([xr * pose.scale[:, None] + pose.tx[:, None], yr * pose.scale[:, None] + pose.ty[:, None]], -1)


def emotion_directions() -> Dict[str, np.ndarray]:
    """The population-mean direction of each MEAD emotion in psi (before per-identity variation)."""
    # FACS action units per emotion (the amplitudes were tuned so that a FER2013 classifier reads the rendered
    # faces, within what each emotion's AUs allow; training/fer_confusion.py measures it)
    spec = {
        "neutral": {},
        # AU4 brows lowered and drawn together, AU5 upper lids raised, AU7 lids tightened (brow_lower presses the
        # upper lid), AU10/16/25 upper lip raised and teeth bared, AU23/24 lips pressed
        "angry": {"brow_lower": 1.25, "eye_openness": 0.3, "lip_press": 0.6, "upper_lip_raise": 0.4,
                  "lip_corner_up": -0.55, "nose_wrinkle": 0.2, "lower_lip_depress": 0.15, "jaw_open": 0.12},
        # AU14 one lip corner tightened and raised
        "contempt": {"contempt": 1.3, "eye_openness": -0.25, "brow_lower": 0.15, "lip_press": 0.35},
        # AU9 nose wrinkled, AU10 upper lip raised, AU6/7 cheeks up and eyes narrowed, AU4 brows lowered
        "disgusted": {"nose_wrinkle": 0.9, "upper_lip_raise": 0.7, "cheek_raise": 0.7, "eye_openness": -0.8,
                      "brow_lower": 0.4, "lip_corner_up": -0.3, "lip_press": -0.3},
        # AU1+2+4 brows raised and drawn together, AU5 upper lids raised far, AU20 lips stretched, AU25/26 mouth
        # open, AU16 lower lip down
        "fear": {"inner_brow_raise": 1.0, "outer_brow_raise": 0.1, "brow_lower": 0.4, "eye_openness": 1.55,
                 "mouth_width": 0.42, "lip_corner_up": -0.35, "jaw_open": 0.22, "lower_lip_depress": 0.17},
        # AU6 cheeks raised, AU12 lip corners pulled up and out, AU25 lips apart
        "happy": {"lip_corner_up": 1.2, "cheek_raise": 1.0, "mouth_width": 0.5, "eye_openness": -0.3,
                  "jaw_open": 0.1},
        # AU1 (+4) inner brows raised while the outer ends fall (the oblique sad brow), AU15 lip corners down,
        # AU17 chin raised (lips pressed up, closed), upper lids drooping. Corpus v3: the outer brows lowered and
        # the lids dropped further, and no lower-lip depression (it parted the lips, which FER reads as fear):
        # FER reads sad on ground-truth k = 1 frames of the corpora 24 -> 33 % (procedural) and 23 -> 32 % (real
        # texture), on frontal closed-mouth real-texture faces 10 -> 47 % (training/README.md sections 1, 1b)
        "sad": {"inner_brow_raise": 0.85, "outer_brow_raise": -0.4, "brow_lower": 0.05, "lip_corner_up": -0.87,
                "eye_openness": -0.95, "lip_press": 0.36, "cheek_raise": 0.15},
        # AU1+2 brows raised high, AU5 upper lids raised, AU26/27 jaw dropped with relaxed, rounded lips that cover
        # the teeth (`teeth_showing`). Corpus v4: the mouth narrower and the lip corners and cheeks down (where a
        # smiling photo keeps them up); FER reads surprised on frontal real-texture faces of 40 training identities
        # 50 -> 75 % (smiling sources 34 -> 66 %), most of it from the hidden teeth. Raising brows, lids and jaw
        # further read 95 %, but the real checkpoint lost held-out photos' person under it (training/README.md 1)
        "surprised": {"outer_brow_raise": 1.1, "inner_brow_raise": 0.9, "eye_openness": 1.2, "jaw_open": 0.8,
                      "mouth_width": -0.7, "lip_press": -0.3, "lip_corner_up": -0.3, "cheek_raise": -0.3},
    }
    out = {}
    for emotion, parts in spec.items():
        d = np.zeros(EXPRESSION_DIM)
        for name, value in parts.items():
            d[COMPONENT[name]] = value
        out[emotion] = d
    return out


EMOTION_DIRECTIONS = emotion_directions()


def teeth_showing(psi: np.ndarray) -> float:
    """How much of the teeth an open mouth shows, 0..1: lips drawn together and rounded (mouth_width below 0, as
    in surprise or an "oo") cover them, fully at mouth_width = -1. Both renderers fade the teeth into the cavity by
    it; a drawn teeth bar under an open, narrow mouth reads as a grin to a real-face classifier."""
    return float(1.0 - np.clip(-psi[COMPONENT["mouth_width"]], 0.0, 1.0))


def teeth_colour(teeth, cavity, psi: np.ndarray) -> tuple:
    """The colour both renderers draw teeth with: ``teeth`` faded into the ``cavity`` colour as far as rounded lips
    cover them (`teeth_showing`)."""
    show = teeth_showing(psi)
    return tuple(float(v) for v in show * np.asarray(teeth) + (1 - show) * np.asarray(cavity))
