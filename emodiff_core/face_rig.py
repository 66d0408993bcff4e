"""A face photo re-rendered at any expression psi: the face model (`facemodel`) fitted to the photo's 68 landmarks,
the photo warped piecewise-affinely to the model's landmarks at psi, with what a warp cannot make drawn in.

How a frame is made
    1. The model is fitted to the landmarks (``fit_face``): a similarity (canonical units -> photo pixels), the
       identity shape beta and the photo's own expression psi_src (13 named components), by ridge least squares;
       what the model cannot express is the residual R (person-specific shape). The photo is resampled into a
       canonical *canvas* (nose tip at the centre, a margin around the face): ``source_from_image``.
    2. ``rig_from_face`` keeps what renders any frame (`FaceRig`): the canvas, beta, R, the canvas' control points.
       The photo's own expression is left out of the geometry: rendered at psi = 0 the face is neutral.
    3. A frame for psi (``render_rig_frames``): target landmarks = model(beta, psi) + R, posed with a head pose
       (``apply_pose``) and placed with the crop convention (``canonical_to_pixels``). The canvas is warped
       piecewise-affinely (one fixed triangulation of the 68 points, contour midpoints and anchors around the face
       and far outside the frame) so jaw, lips, brows and lids follow psi. Inside the inner lips a mouth interior is
       drawn (cavity, teeth, tongue) as the mouth opens; eyes that close are covered with the skin around them and a
       lash line; the expression shading (`shading.expression_shading`: folds, furrows, wrinkles) is laid over the
       skin.

The real-texture corpus (`training.corpus.realface`) animates photos with it; sampling uses it to give the network a
user's portrait at a neutral expression (`pipeline.neutral_identity`), the state the corpus' identity frames show.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .facemodel import (CANONICAL_NOSE_TIP, COMPONENT, CROP_EYE_RATIO, EXPRESSION_BASIS, EXPRESSION_DIM,
                        EYE_DISTANCE, IDENTITY_BASIS, NUM_NAMED, TEMPLATE, HeadPose, apply_pose, canonical_to_pixels,
                        teeth_colour)
from .shading import Canvas, expression_shading

CANVAS = 384            # canvas side (pixels)
CANVAS_FACE = 256       # the output crop's side on the canvas (pixels): the canvas has a 1.5x margin
CANVAS_UNIT = CANVAS_FACE / (CROP_EYE_RATIO * EYE_DISTANCE)   # canvas pixels per canonical unit
SHADING_GAIN = 0.8      # the procedural folds and wrinkles on real skin (real skin has its own texture)


# --------------------------------------------------------------------------- geometry
def _anchors() -> Tuple[np.ndarray, np.ndarray]:
    """Canonical anchor points beyond the 68 landmarks and their depths (for the faked yaw): the hairline over
    the forehead (so raised brows do not drag the hair), a ring around the head, and far points outside any
    crop (so every output pixel lies in a triangle)."""
    forehead = np.array([[-0.62, -0.92], [-0.32, -1.0], [0.0, -1.03], [0.32, -1.0], [0.62, -0.92]])
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ring = np.stack([1.32 * np.cos(a), 0.05 + 1.5 * np.sin(a)], 1)
    ring = ring[np.linalg.norm(ring[:, None] - forehead[None], axis=2).min(1) > 0.3]
    far = np.array([[x, y] for x in (-4.0, 0.0, 4.0) for y in (-4.0, 0.12, 4.0) if (x, y) != (0.0, 0.12)])
    points = np.concatenate([forehead, ring, far])
    depth = np.concatenate([np.zeros(len(forehead)), np.full(len(ring) + len(far), -0.3)])
    return points, depth


ANCHORS, ANCHOR_DEPTH = _anchors()


# Contours (corner to corner) whose landmarks get Catmull-Rom midpoints as extra control points, so lips, lids and
# jaw bend smoothly instead of in straight pieces between the sparse 68 points.
CONTOURS = ([48, 49, 50, 51, 52, 53, 54], [54, 55, 56, 57, 58, 59, 48], [60, 61, 62, 63, 64], [64, 65, 66, 67, 60],
            [36, 37, 38, 39], [39, 40, 41, 36], [42, 43, 44, 45], [45, 46, 47, 42], list(range(17)))


def _contour_index():
    """(the contours' spans [E, 4] of landmark indices p0..p3 for each midpoint, the dense polygon of a contour
    list: landmark and midpoint indices in order)."""
    spans, dense, k = [], [], 68
    for c in CONTOURS:
        ext = [c[0]] + c + [c[-1]]
        poly = []
        for i in range(len(c) - 1):
            spans.append(ext[i:i + 4])
            poly += [c[i], k]
            k += 1
        dense.append(poly + [c[-1]])
    return np.array(spans), dense


SPANS, _DENSE = _contour_index()
NUM_CONTROL = 68 + len(SPANS)
# dense closed polygons (control-point indices): the inner lips, and each eye's opening
INNER_LIP_POLY = _DENSE[2][:-1] + _DENSE[3][:-1]
EYE_POLYS = (_DENSE[4][:-1] + _DENSE[5][:-1], _DENSE[6][:-1] + _DENSE[7][:-1])
UPPER_LID_DENSE = (_DENSE[4], _DENSE[6])


def densify(pts: np.ndarray) -> np.ndarray:
    """68 landmarks [..., 68, 2] -> control points [..., NUM_CONTROL, 2]: the landmarks and the Catmull-Rom
    midpoints of the lip, lid and jaw contours ((-p0 + 9 p1 + 9 p2 - p3) / 16; affine-invariant, so the midpoints of
    a mapped face are the mapped midpoints)."""
    pts = np.asarray(pts, np.float64)
    q = pts[..., SPANS, :]                                     # [..., E, 4, 2]
    mids = (-q[..., 0, :] + 9 * q[..., 1, :] + 9 * q[..., 2, :] - q[..., 3, :]) / 16
    return np.concatenate([pts, mids], axis=-2)


def control_points(pts68: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    return np.concatenate([densify(pts68), anchors], axis=-2)


def _triangulation() -> np.ndarray:
    """One triangulation [M, 3] of the control points (landmarks, contour midpoints, anchors), made on the template
    with the mouth half open so the inner-lip polygon is a region of its own (its triangles use inner-lip points
    only, like each eye's)."""
    from scipy.spatial import Delaunay

    ref = TEMPLATE + 0.5 * EXPRESSION_BASIS[COMPONENT["jaw_open"]] + 0.5 * EXPRESSION_BASIS[COMPONENT["eye_openness"]]
    return Delaunay(control_points(ref, ANCHORS)).simplices.astype(np.int64)


TRIANGLES = _triangulation()


def region_is_own(tris: np.ndarray, polygon: Sequence[int]) -> bool:
    """Whether every edge of ``polygon`` is an edge of the triangulation (the polygon is a region of its own)."""
    edges = {tuple(sorted((int(t[i]), int(t[(i + 1) % 3])))) for t in tris for i in range(3)}
    return all(tuple(sorted((polygon[i], polygon[(i + 1) % len(polygon)]))) in edges for i in range(len(polygon)))


def model_landmarks(beta: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """The linear model [..., 68, 2] without the lid/lip clamps (the clamps come after the residual is added)."""
    return (TEMPLATE + np.tensordot(beta, IDENTITY_BASIS, axes=1)) + np.tensordot(psi, EXPRESSION_BASIS, axes=1)


def clamp_lids_and_lips(pts: np.ndarray) -> np.ndarray:
    """Upper lids stop at the lower ones, lower inner lip never above the upper one (as landmarks_canonical)."""
    pts = np.array(pts, dtype=np.float64)
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        pts[..., upper, 1] = np.minimum(pts[..., upper, 1], pts[..., lower, 1])
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        pts[..., lower, 1] = np.maximum(pts[..., lower, 1], pts[..., upper, 1])
    return pts


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity 2x3 mapping points ``src`` onto ``dst`` (Umeyama, no reflection)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = (s * np.array([1.0, d])).sum() / (a ** 2).sum(1).mean()
    lin = scale * rot
    return np.concatenate([lin, (md - lin @ ms)[:, None]], 1)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(m[:, :2])
    return np.concatenate([lin, (-lin @ m[:, 2])[:, None]], 1)


@dataclass
class FaceFit:
    similarity: np.ndarray   # 2x3: canonical units -> source pixels
    beta: np.ndarray         # [10]
    psi: np.ndarray          # [50] (named components only are fitted)
    residual: np.ndarray     # [68, 2] canonical: landmarks minus the model


def fit_face(landmarks: np.ndarray, fix_similarity: Optional[np.ndarray] = None, ridge: float = 0.02,
             iterations: int = 4) -> FaceFit:
    """Fit the face model (`facemodel`) to 68 landmarks (pixels): similarity, beta and the named part of psi."""
    lm = np.asarray(landmarks, np.float64)
    basis = np.concatenate([IDENTITY_BASIS, EXPRESSION_BASIS[:NUM_NAMED]]).reshape(-1, 136)   # [23, 136]
    coef = np.zeros(len(basis))
    reg = ridge * np.eye(len(basis))
    model = TEMPLATE.copy()
    for _ in range(iterations):
        sim = fix_similarity if fix_similarity is not None else _similarity(model, lm)
        canon = _apply(_invert(sim), lm)
        target = (canon - TEMPLATE).reshape(-1)
        coef = np.linalg.solve(basis @ basis.T + reg, basis @ target)
        model = TEMPLATE + (coef @ basis).reshape(68, 2)
    beta = coef[:IDENTITY_BASIS.shape[0]]
    psi = np.zeros(EXPRESSION_DIM)
    psi[:NUM_NAMED] = coef[IDENTITY_BASIS.shape[0]:]
    return FaceFit(sim, beta, psi, canon - model_landmarks(beta, psi))


def canon_to_canvas(pts: np.ndarray) -> np.ndarray:
    return CANVAS / 2.0 + (np.asarray(pts, np.float64) - CANONICAL_NOSE_TIP) * CANVAS_UNIT


# --------------------------------------------------------------------------- piecewise-affine warp
def _cv_pts(pts: np.ndarray) -> np.ndarray:
    return np.round((np.asarray(pts, np.float64) - 0.5) * 16).astype(np.int32)


def warp_piecewise(image: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, out_size: int,
                   tris: np.ndarray = TRIANGLES) -> np.ndarray:
    """Warp ``image`` so that points ``src_pts`` (its continuous pixel coordinates) land on ``dst_pts`` (those of a
    square output of side ``out_size``), affinely inside each triangle of ``tris``. float32 output."""
    src = np.asarray(src_pts, np.float64)[tris]                # [M, 3, 2]
    dst = np.asarray(dst_pts, np.float64)[tris]
    dh = np.concatenate([dst, np.ones((len(tris), 3, 1))], 2)  # [M, 3, 3]
    area = np.abs(np.linalg.det(dh)) / 2
    affine = np.swapaxes(np.linalg.pinv(dh) @ src, 1, 2)       # [M, 2, 3]: dst -> src
    ids = np.zeros((out_size, out_size), np.int32)
    order = np.argsort(-area)                                  # big first: slivers of folded triangles on top
    poly = _cv_pts(dst)
    for m in order:
        if area[m] > 1e-3:
            cv2.fillConvexPoly(ids, poly[m], int(m), lineType=cv2.LINE_8, shift=4)
    for m in order:
        if area[m] > 1e-3:
            cv2.polylines(ids, [poly[m]], True, int(m), 1, lineType=cv2.LINE_8, shift=4)
    grid = np.arange(out_size, dtype=np.float64) + 0.5
    a = affine[ids]                                            # [S, S, 2, 3]
    sx = a[..., 0, 0] * grid[None, :] + a[..., 0, 1] * grid[:, None] + a[..., 0, 2] - 0.5
    sy = a[..., 1, 0] * grid[None, :] + a[..., 1, 1] * grid[:, None] + a[..., 1, 2] - 0.5
    img = image if image.dtype == np.float32 else image.astype(np.float32)
    return cv2.remap(img, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT101)


# --------------------------------------------------------------------------- source faces
@dataclass
class SourceFace:
    """One real face on its canonical canvas."""

    name: str              # file name (+ '#f<frame>' for a video frame, '#<k>' for the k-th face of a photo)
    person: str
    canvas: np.ndarray     # uint8 [CANVAS, CANVAS, 3] RGB
    landmarks: np.ndarray  # [68, 2] canonical units (the detected landmarks through the fitted similarity)
    eye_px: float          # outer-eye-corner distance in the original (its resolution)


def source_from_image(image: np.ndarray, landmarks: np.ndarray, name: str, person: Optional[str] = None) -> SourceFace:
    """A SourceFace from an RGB image and its 68 landmarks (continuous pixel coordinates)."""
    lm = np.asarray(landmarks, np.float64)
    fit = fit_face(lm)
    # canvas <- original: canvas = C(canon), canon = sim^-1(px)
    to_canvas = np.array([[CANVAS_UNIT, 0, CANVAS / 2.0 - CANONICAL_NOSE_TIP[0] * CANVAS_UNIT],
                          [0, CANVAS_UNIT, CANVAS / 2.0 - CANONICAL_NOSE_TIP[1] * CANVAS_UNIT]])
    px_to_canvas = np.concatenate([to_canvas[:, :2] @ _invert(fit.similarity)[:, :2],
                                   (to_canvas[:, :2] @ _invert(fit.similarity)[:, 2] + to_canvas[:, 2])[:, None]], 1)
    cvm = np.concatenate([px_to_canvas[:, :2], (px_to_canvas[:, 2] + px_to_canvas[:, :2] @ [0.5, 0.5] - 0.5)[:, None]], 1)
    scale = float(np.sqrt(abs(np.linalg.det(px_to_canvas[:, :2]))))
    img = np.ascontiguousarray(image[..., :3])
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    if scale < 0.7:   # downscale with area averaging first, then the exact affine
        f = scale / 0.9
        small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / img.shape[1], small.shape[0] / img.shape[0]
        px_small = np.concatenate([px_to_canvas[:, :2] @ np.diag([1 / sx, 1 / sy]), px_to_canvas[:, 2:]], 1)
        cvm = np.concatenate([px_small[:, :2], (px_small[:, 2] + px_small[:, :2] @ [0.5, 0.5] - 0.5)[:, None]], 1)
        img, flags = small, cv2.INTER_LINEAR
    # beyond the photo's edges: its border pixels replicated (a mirror would show shoulders upside down), then
    # smoothed into a blurred continuation of the photo, so no streaks run off its edges
    canvas = cv2.warpAffine(img, cvm, (CANVAS, CANVAS), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpAffine(np.ones(img.shape[:2], np.float32), cvm, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if valid.min() < 0.999:
        sigma = 0.3 * CANVAS_UNIT
        f = canvas.astype(np.float32)
        num = cv2.GaussianBlur(f * valid[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(valid, (0, 0), sigma)[..., None]
        smooth = cv2.GaussianBlur(f, (0, 0), sigma)
        filled = np.where(den > 0.05, num / np.maximum(den, 1e-6), smooth)
        keep = (cv2.GaussianBlur(valid, (0, 0), 2.0) * valid)[..., None]
        canvas = np.clip(keep * f + (1 - keep) * filled + 0.5, 0, 255).astype(np.uint8)
    canon = _apply(_invert(fit.similarity), lm)
    return SourceFace(name, person or name.split("#")[0], canvas, canon.astype(np.float64),
                      float(np.linalg.norm(lm[45] - lm[36])))


def source_points(canon68: np.ndarray) -> np.ndarray:
    """The canvas control points (landmarks, contour midpoints, anchors) of a face's canonical landmarks."""
    return canon_to_canvas(control_points(canon68, ANCHORS))


# --------------------------------------------------------------------------- rigs
@dataclass
class FaceRig:
    """What renders any frame of one face: its canvas, fitted shape and how it is placed."""

    beta: np.ndarray          # [10] the fitted identity shape
    canvas: np.ndarray        # float32 [CANVAS, CANVAS, 3] in [0, 1]
    residual: np.ndarray      # [68, 2] canonical
    src_points: np.ndarray    # [68 + anchors, 2] canvas pixels
    eye_ref: np.ndarray       # [2] each eye's opening at psi = 0 (canonical units)
    tone: float               # brightness of the skin (teeth and cavity follow it)
    skin: np.ndarray          # [3] skin colour
    pose_offset: np.ndarray   # [5] added to every frame's pose (yaw, roll, scale - 1, tx, ty): the corpus' crop jitter
    source_psi: np.ndarray    # [50] the photo's own expression as fitted
    info: dict = field(default_factory=dict)   # how the rig was made (the corpus keeps it in its metadata)


def eye_openings(pts: np.ndarray) -> np.ndarray:
    return np.array([(pts[..., 41, 1] + pts[..., 40, 1] - pts[..., 37, 1] - pts[..., 38, 1]) / 2,
                     (pts[..., 47, 1] + pts[..., 46, 1] - pts[..., 43, 1] - pts[..., 44, 1]) / 2])


def _skin_colour(canvas: np.ndarray, canon68: np.ndarray) -> np.ndarray:
    """Median colour of the cheeks (between the eyes' lower lids and the mouth corners' height)."""
    samples = []
    for lid, corner, wing in ((41, 48, 31), (46, 54, 35)):
        p = canon_to_canvas((canon68[lid] * 0.45 + canon68[corner] * 0.2 + canon68[wing] * 0.35))
        x, y = int(p[0]), int(p[1])
        r = max(2, int(0.05 * CANVAS_UNIT))
        samples.append(canvas[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3))
    return np.median(np.concatenate(samples), axis=0)


def rig_from_face(face: SourceFace, canvas: Optional[np.ndarray] = None, pose_offset: Optional[np.ndarray] = None,
                  info: Optional[dict] = None) -> FaceRig:
    """The rig of one source face on its canvas (``canvas``: float [CANVAS, CANVAS, 3] in [0, 1], e.g. an augmented
    copy; default the face's own), the face's own expression left out of its geometry (rendered at psi = 0 it is
    neutral). ``info`` gets the fitted expression's main components."""
    canvas = face.canvas.astype(np.float32) / 255.0 if canvas is None else canvas
    info = {} if info is None else info
    fit = fit_face(face.landmarks, fix_similarity=np.eye(2, 3))
    # lips that the model's jaw does not explain apart (a smile showing teeth) would stay apart at every psi: the
    # lower inner lip's residual follows the upper one's, so psi alone opens and closes the mouth
    residual = fit.residual.copy()
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        residual[lower, 1] = residual[upper, 1]
    info["source_psi"] = {name: round(float(fit.psi[COMPONENT[name]]), 3) for name in ("jaw_open", "lip_corner_up",
                                                                                       "eye_openness", "brow_lower")}
    neutral = model_landmarks(fit.beta, np.zeros(EXPRESSION_DIM)) + residual
    skin = _skin_colour(canvas, face.landmarks)
    tone = float(np.clip(skin.mean() / 0.55, 0.45, 1.15))
    return FaceRig(fit.beta, canvas, residual, source_points(face.landmarks), np.maximum(eye_openings(neutral), 0.02),
                   tone, skin.astype(np.float32), np.zeros(5) if pose_offset is None else np.asarray(pose_offset),
                   np.asarray(fit.psi, np.float64), info)


def rig_from_photo(image: np.ndarray, landmarks: np.ndarray) -> FaceRig:
    """The rig of a photo's face (its 68 landmarks in the photo's continuous pixel coordinates): no augmentation, no
    crop offset, so a frame rendered at the photo's own geometry lines up with `faces.align_face`'s crop."""
    return rig_from_face(source_from_image(np.asarray(image), np.asarray(landmarks, np.float64), "portrait"))


# --------------------------------------------------------------------------- frames
def _smooth01(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def target_landmarks(rig: FaceRig, psi: np.ndarray, pose: HeadPose, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(landmarks [n, 68, 2] in output pixels, canonical unposed landmarks [n, 68, 2]) for psi [n, 50]."""
    canon = clamp_lids_and_lips(model_landmarks(rig.beta, psi) + rig.residual[None])
    return canonical_to_pixels(apply_pose(canon, pose), size), canon


def render_rig_frames(rig: FaceRig, psi: np.ndarray, pose: HeadPose, size: int):
    """(frames uint8 [n, S, S, 3], landmarks float [n, 68, 2]) of one identity for psi [n, 50] and a pose of n
    frames (the rig's crop offset is added here). The pixels are a function of (identity, psi, pose) alone."""
    psi = np.atleast_2d(np.asarray(psi, np.float64))
    n = len(psi)
    off = rig.pose_offset
    pose = HeadPose(pose.yaw + off[0], pose.roll + off[1], pose.scale * (1 + off[2]), pose.tx + off[3], pose.ty + off[4])
    landmarks, canon = target_landmarks(rig, psi, pose, size)
    anchors = canonical_to_pixels(apply_pose(np.broadcast_to(ANCHORS, (n,) + ANCHORS.shape), pose, ANCHOR_DEPTH), size)
    ss = max(1, CANVAS_FACE // size)
    shader = Canvas(size, ss)
    work = size * ss
    unit = size / (CROP_EYE_RATIO * EYE_DISTANCE)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        lm = landmarks[i]
        dense = densify(lm)
        img = warp_piecewise(rig.canvas, rig.src_points, np.concatenate([dense, anchors[i]]) * ss, work)
        scale_i = float(pose.scale[i])
        _shade(shader, img, lm, psi[i], work)
        _eyes(shader, img, lm, dense, canon[i], rig, unit * scale_i)
        _mouth(shader, img, lm, dense, psi[i], rig, unit * scale_i)
        out = cv2.resize(np.clip(img, 0, 1), (size, size), interpolation=cv2.INTER_AREA)
        frames[i] = (out * 255.0 + 0.5).astype(np.uint8)
    return frames, landmarks


def _face_down(lm: np.ndarray) -> np.ndarray:
    ex = lm[45] - lm[36]
    ex = ex / (np.linalg.norm(ex) + 1e-9)
    return np.array([-ex[1], ex[0]])


def _shade(shader: Canvas, img: np.ndarray, lm: np.ndarray, psi: np.ndarray, work: int) -> None:
    marks = expression_shading(lm, psi)
    if not marks.lines and not marks.blobs:
        return
    shade = shader._shading(marks, (0, work, 0, work))
    ex = (lm[45] - lm[36]) / (np.linalg.norm(lm[45] - lm[36]) + 1e-9)
    up = np.array([ex[1], -ex[0]]) * np.linalg.norm(lm[45] - lm[36]) / EYE_DISTANCE   # one face unit up
    face = np.concatenate([lm[0:17], lm[26:21:-1] + 0.6 * up, lm[21:16:-1] + 0.6 * up])
    mask = np.zeros((work, work), np.float32)
    shader._fill(mask, face, (1.0,))
    unit = np.linalg.norm(lm[45] - lm[36]) / EYE_DISTANCE * shader.ss
    mask = cv2.GaussianBlur(mask, (0, 0), 0.06 * unit)[..., None]   # no edge where the mask crosses the forehead
    img *= 1 + SHADING_GAIN * shade * mask


def _eyes(shader: Canvas, img: np.ndarray, lm: np.ndarray, dense: np.ndarray, canon: np.ndarray, rig: FaceRig,
          unit: float) -> None:
    """Lids over eyes that close: the eye opening filled with the skin around it, a lash line on the upper lid."""
    closure = 1 - eye_openings(canon) / rig.eye_ref
    work = img.shape[0]
    for k, eye in enumerate((np.arange(36, 42), np.arange(42, 48))):
        alpha = float(_smooth01((closure[k] - 0.35) / 0.5))
        if alpha <= 0:
            continue
        pts = lm[eye]
        down = _face_down(lm)
        # skin: just above the upper lid and just below the lower lid
        probe = np.concatenate([pts[[1, 2]] - 0.08 * unit * down, pts[[4, 5]] + 0.07 * unit * down]) * shader.ss
        probe = np.clip(probe.astype(int), 0, work - 1)
        skin = np.median(img[probe[:, 1], probe[:, 0]], axis=0)
        layer = np.zeros_like(img)
        mask = np.zeros(img.shape[:2] + (1,), np.float32)
        lid = dense[UPPER_LID_DENSE[k]]
        shader._fill(mask, dense[EYE_POLYS[k]], (1.0,))
        shader._line(mask, lid, (1.0,), 0.02 * unit)
        layer[:] = skin
        shader._line(layer, lid, tuple(float(c) for c in skin * 0.45), 0.016 * unit)
        img *= 1 - alpha * mask
        img += alpha * mask * layer


def _mouth(shader: Canvas, img: np.ndarray, lm: np.ndarray, dense: np.ndarray, psi: np.ndarray, rig: FaceRig,
           unit: float) -> None:
    """The mouth interior inside the inner lips (the dense contour the warp bent them to), faded in as they part."""
    upper, lower = dense[_DENSE[2]], dense[_DENSE[3]]
    inner = dense[INNER_LIP_POLY]
    gap = float(np.linalg.norm(lm[[65, 66, 67]].mean(0) - lm[[61, 62, 63]].mean(0)))
    alpha = float(_smooth01(gap * shader.ss / 2.5))
    if alpha <= 0:
        return
    tone = rig.tone
    down = _face_down(lm)
    mask = np.zeros(img.shape[:2], np.float32)
    shader._fill(mask, inner, (1.0,))
    layer = np.zeros_like(img)
    cavity = np.array([0.11, 0.035, 0.04]) * tone
    shader._fill(layer, inner, tuple(float(c) for c in cavity))
    # tongue: low in the cavity
    width = float(np.linalg.norm(lm[64] - lm[60]))
    centre = lm[[65, 66, 67]].mean(0) - 0.15 * gap * down
    angle = float(np.degrees(np.arctan2(lm[64, 1] - lm[60, 1], lm[64, 0] - lm[60, 0])))
    c = tuple(int(v) for v in np.round(shader._canvas(centre) * 16))
    axes = (int(round(0.3 * width * shader.ss * 16)), int(round(0.35 * gap * shader.ss * 16)))
    cv2.ellipse(layer, c, axes, angle, 180, 360, tuple(float(v) for v in np.array([0.55, 0.22, 0.22]) * tone), -1,
                lineType=cv2.LINE_AA, shift=4)
    # teeth a little lighter than the skin, never brighter than off-white (they are in the mouth's shadow), faded
    # into the cavity where rounded lips cover them (facemodel.teeth_colour)
    teeth = np.array([1.0, 0.97, 0.9]) * min(0.8, float(rig.skin.mean()) * 1.3)
    height = min(0.06 * unit, 0.6 * gap)
    shader._fill(layer, np.concatenate([upper, upper[::-1] + height * down]), teeth_colour(teeth, cavity, psi))
    bare = 0.05 * float(np.clip(psi[COMPONENT["lower_lip_depress"]], 0, 1)) + 0.02 * float(np.clip(gap / unit - 0.2, 0, 1))
    if bare > 0.005:
        shader._fill(layer, np.concatenate([lower, lower[::-1] - bare * unit * down]),
                     teeth_colour(0.93 * teeth, cavity, psi))
    soft = 0.35 * shader.ss   # the interior's edges as soft as the photo's
    mask = cv2.GaussianBlur(mask, (0, 0), soft)[..., None]
    layer = cv2.GaussianBlur(layer, (0, 0), soft)
    img *= 1 - alpha * mask
    img += alpha * mask * layer


