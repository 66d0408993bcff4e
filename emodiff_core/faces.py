"""Face images: conversion, the 68-landmark template, nose-tip alignment and paste-back (numpy / OpenCV only).

Finding faces (detection and the 68 landmarks, dlib and FAN backends, video tracking) is `landmarks`; this
module only works with landmarks it is given, so it never loads a model.

Coordinates
    Every point in this project uses *continuous pixel coordinates*: the centre of pixel (row r, col c)
    is at (x = c + 0.5, y = r + 0.5); the image covers [0, W] x [0, H]. OpenCV (warpAffine, drawing)
    and dlib put pixel centres at integers, so they are converted at the boundary (x_cv = x - 0.5).

Landmarks
    68 points in the iBUG-68 layout: jaw 0-16, brows 17-26, nose 27-35 (30 = nose tip), eyes 36-41 and
    42-47 (36 and 45 = outer corners), mouth 48-67. `landmarks.get_backend` picks a backend that finds them;
    `template_landmarks` places the canonical layout in an image (the centre-crop fallback).

Alignment (shared by training-data preparation and inference; section 4.2 of the paper)
    The crop is centred on the nose tip (landmark 30): it lands exactly at (size/2, size/2). The crop side
    is ALIGN_CROP_EYE_RATIO (2.6) times the distance between the outer eye corners (36, 45), the same
    convention as the procedural corpus (training/corpus/render.py). With ``rotate=True`` the crop is
    rotated so that the outer-eye line is horizontal. Outside the image the border pixels are replicated.
    `AlignedCrop` keeps the forward affine (original -> crop) and its inverse, so generated crops can be
    pasted back into the full-resolution original with `paste_back`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

NUM_LANDMARKS = 68
NOSE_TIP = 30
EYE_OUTER_LEFT = 36    # outer corner of the eye on the image's left
EYE_OUTER_RIGHT = 45   # outer corner of the eye on the image's right
# Crop side = ALIGN_CROP_EYE_RATIO x outer-eye-corner distance (facemodel.CROP_EYE_RATIO).
ALIGN_CROP_EYE_RATIO = 2.6
MIN_IMAGE_SIDE = 32            # smaller images cannot hold a detectable face
RGBA_BACKGROUND = 128          # RGBA input is composited over this neutral grey

# The mean 68-point layout (iBUG order) in units of the outer-eye-corner distance, nose tip at the origin,
# x to the image right, y down. Derived from the procedural corpus' face template (its numbers are copied
# here so that core never imports training/). Used for the centre-crop fallback of `landmarks.detect_portrait`.
TEMPLATE_68 = np.array([
    (-0.8167, -0.2833), (-0.8049, -0.1760), (-0.7696, -0.0167), (-0.7111, 0.1576), (-0.6297, 0.3273),
    (-0.5255, 0.4766), (-0.3974, 0.5928), (-0.2397, 0.6665), (0.0000, 0.6917), (0.2397, 0.6665),
    (0.3974, 0.5928), (0.5255, 0.4766), (0.6297, 0.3273), (0.7111, 0.1576), (0.7696, -0.0167),
    (0.8049, -0.1760), (0.8167, -0.2833), (-0.6667, -0.5502), (-0.5375, -0.5583), (-0.4083, -0.5473),
    (-0.2792, -0.5200), (-0.1500, -0.4833), (0.1500, -0.4833), (0.2792, -0.5200), (0.4083, -0.5473),
    (0.5375, -0.5583), (0.6667, -0.5502), (0.0000, -0.3333), (0.0000, -0.2222), (0.0000, -0.1111),
    (0.0000, 0.0000), (-0.1583, 0.0750), (-0.0833, 0.1042), (0.0000, 0.1167), (0.0833, 0.1042),
    (0.1583, 0.0750), (-0.5000, -0.3083), (-0.4083, -0.3583), (-0.3000, -0.3583), (-0.2083, -0.3083),
    (-0.3000, -0.2708), (-0.4083, -0.2708), (0.2083, -0.3083), (0.3000, -0.3583), (0.4083, -0.3583),
    (0.5000, -0.3083), (0.4083, -0.2708), (0.3000, -0.2708), (-0.3000, 0.3167), (-0.2000, 0.2792),
    (-0.0833, 0.2583), (0.0000, 0.2708), (0.0833, 0.2583), (0.2000, 0.2792), (0.3000, 0.3167),
    (0.2000, 0.3792), (0.1000, 0.4083), (0.0000, 0.4167), (-0.1000, 0.4083), (-0.2000, 0.3792),
    (-0.2500, 0.3167), (-0.1000, 0.3083), (0.0000, 0.3125), (0.1000, 0.3083), (0.2500, 0.3167),
    (0.1000, 0.3208), (0.0000, 0.3250), (-0.1000, 0.3208),
], dtype=np.float64)


# --------------------------------------------------------------------------- errors
class FaceError(ValueError):
    """A face-processing problem the user can fix (bad image, missing model files, ...)."""


# --------------------------------------------------------------------------- images
def to_rgb_uint8(image) -> np.ndarray:
    """Normalise an image to contiguous uint8 RGB [H, W, 3].

    Accepts numpy arrays or torch tensors of shape [H, W], [H, W, 1] (grey), [H, W, 2] (grey + alpha),
    [H, W, 3] (RGB) or [H, W, 4] (RGBA), as uint8 (0..255), uint16 (0..65535) or float (0..1; values a
    little outside are clipped). Images with alpha are *composited over neutral grey* (RGBA_BACKGROUND =
    128), so a transparent background becomes mid-grey rather than black. A leading batch dimension of 1
    is dropped. Raises FaceError for other shapes, dtypes, float ranges or non-finite values.
    """
    if hasattr(image, "detach"):  # torch tensor (ComfyUI IMAGE is float [B, H, W, C] in 0..1)
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise FaceError(f"expected an image [H, W], [H, W, 1|2|3|4] (grey, grey+alpha, RGB, RGBA), got shape "
                        f"{tuple(np.shape(image))}; pass one image at a time")
    channels = arr.shape[2]
    if arr.dtype == np.uint8 and channels in (1, 3):
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if channels == 1 else arr)
    if arr.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif arr.dtype == np.uint16:
        scale = 1.0 / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = None
    else:
        raise FaceError(f"unsupported image dtype {arr.dtype}; use uint8 (0..255) or float (0..1)")
    h, w = arr.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (1 << 22) // max(1, w * channels))      # ~4M values per chunk: bounded memory for huge images
    for y in range(0, h, step):
        data = arr[y:y + step].astype(np.float32)
        if scale is None:
            if not np.isfinite(data).all():
                raise FaceError("the image contains NaN or infinite values; pass a normal 0..1 float image")
            if data.size and (data.max() > 1.5 or data.min() < -0.5):
                raise FaceError(f"float images must hold values in 0..1, got {data.min():.3g}..{data.max():.3g}; "
                                "divide 0..255 images by 255 or pass them as uint8")
            np.clip(data, 0.0, 1.0, out=data)
        else:
            data *= scale
        if channels in (2, 4):
            alpha = data[..., -1:]
            data = data[..., :-1] * alpha + (RGBA_BACKGROUND / 255.0) * (1.0 - alpha)
        out[y:y + step] = (data * 255.0 + 0.5).astype(np.uint8)   # broadcasts grey to 3 channels
    return out


def check_face_image(image: np.ndarray, min_side: int = MIN_IMAGE_SIDE) -> None:
    """Raise FaceError when an image is too small to hold a detectable face."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise FaceError(f"the image is {w}x{h} px, too small to hold a face; use a photo at least "
                        f"{min_side}x{min_side} px (ideally 256 px or more with the face filling a good part of it)")


# --------------------------------------------------------------------------- landmark geometry
def template_landmarks(image_shape: Sequence[int], fill: float = 1.0) -> np.ndarray:
    """The canonical 68-point template placed at the image centre, sized so that its alignment crop is the
    central square of side ``fill`` x min(H, W). Returns float32 [68, 2]."""
    h, w = int(image_shape[0]), int(image_shape[1])
    eye = fill * min(h, w) / ALIGN_CROP_EYE_RATIO
    return (TEMPLATE_68 * eye + np.array([w / 2.0, h / 2.0])).astype(np.float32)


def mouth_region_weight(height: int, width: int) -> np.ndarray:
    """float32 [H, W] in [0, 1]: 1 around the mouth of an aligned crop of that size (the template's mouth, the
    layout `align_face` puts every face in), fading to 0 over a margin. An ellipse on the template's 20 mouth
    points: 1.6 x their half-width across, 2.9 x their half-height down and up (room for an open jaw), its
    centre lowered by 0.15 of that height; the weight falls linearly from squared radius 1 to 1.6."""
    points = template_landmarks((height, width))[48:68].astype(np.float64)
    centre = points.mean(axis=0)
    half = (points.max(axis=0) - points.min(axis=0)) / 2.0
    radius_x, radius_y = 1.6 * half[0], 2.88 * half[1]
    # pixel centres, in the module's continuous coordinates, at (c + 0.5, r + 0.5)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    squared = ((x - centre[0]) / radius_x) ** 2 + ((y - centre[1] - 0.15 * radius_y) / radius_y) ** 2
    return np.clip((1.6 - squared) / 0.6, 0.0, 1.0).astype(np.float32)


def landmarks_box(landmarks: np.ndarray) -> Tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of a landmark set."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max()))


# --------------------------------------------------------------------------- alignment
def _as_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise FaceError(f"expected 68 landmarks [68, 2], got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise FaceError("the landmarks contain NaN or infinite values")
    return lm


def alignment_params(landmarks, rotate: bool = True) -> Tuple[np.ndarray, float, float]:
    """(centre = nose tip [2], crop side in original pixels, angle in radians of the outer-eye line) for one
    landmark set; angle is 0 when ``rotate`` is False."""
    lm = _as_landmarks(landmarks)
    eye = lm[EYE_OUTER_RIGHT] - lm[EYE_OUTER_LEFT]
    dist = float(np.hypot(*eye))
    if dist < 1e-3:
        raise FaceError("degenerate landmarks: the outer eye corners coincide")
    angle = float(math.atan2(eye[1], eye[0])) if rotate else 0.0
    return lm[NOSE_TIP].copy(), ALIGN_CROP_EYE_RATIO * dist, angle


def alignment_matrix(centre: Sequence[float], side: float, angle: float, size: int) -> np.ndarray:
    """2x3 affine (float64) mapping original continuous coordinates to crop continuous coordinates: ``centre``
    goes to (size/2, size/2), a length ``side`` becomes ``size`` and the direction ``angle`` becomes +x."""
    s = size / float(side)
    c, n = math.cos(angle), math.sin(angle)
    lin = np.array([[s * c, s * n], [-s * n, s * c]])
    t = np.array([size / 2.0, size / 2.0]) - lin @ np.asarray(centre, dtype=np.float64)
    return np.concatenate([lin, t[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    m = np.asarray(matrix, dtype=np.float64)
    lin_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([lin_inv, (-lin_inv @ m[:, 2])[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 2x3 affine to points [..., 2] (float64 result)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def to_cv2_affine(matrix: np.ndarray) -> np.ndarray:
    """Convert a continuous-coordinate affine to OpenCV's integer-pixel-centre convention:
    x_cv' = A (x_cv + 0.5) + t - 0.5."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.concatenate([m[:, :2], (m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


@dataclass
class AlignedCrop:
    """Geometry of one aligned crop.

    matrix: 2x3 forward affine, original continuous coordinates -> crop continuous coordinates;
    inverse: its inverse; size: crop side in pixels; image_shape: (H, W) of the original;
    landmarks: float32 [68, 2] in crop coordinates (None when unknown).
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int
    image_shape: Tuple[int, int]
    landmarks: Optional[np.ndarray] = None

    @classmethod
    def from_params(cls, centre, side: float, angle: float, size: int, image_shape: Sequence[int],
                    landmarks: Optional[np.ndarray] = None) -> "AlignedCrop":
        """Build from a crop centre, side (original pixels) and angle; ``landmarks`` are original coordinates."""
        m = alignment_matrix(centre, side, angle, size)
        lm = None if landmarks is None else apply_affine(m, landmarks).astype(np.float32)
        return cls(m, invert_affine(m), int(size), (int(image_shape[0]), int(image_shape[1])), lm)

    def to_crop(self, points) -> np.ndarray:
        """Original coordinates -> crop coordinates."""
        return apply_affine(self.matrix, points)

    def to_original(self, points) -> np.ndarray:
        """Crop coordinates -> original coordinates."""
        return apply_affine(self.inverse, points)

    def for_resized_image(self, height: int, width: int) -> "AlignedCrop":
        """The same crop of the original resized to ``width`` x ``height`` (e.g. a smaller paste-back output):
        original coordinates scale by (width / W, height / H); crop coordinates and landmarks are unchanged."""
        h, w = self.image_shape
        to_image = np.diag([w / float(width), h / float(height)])          # resized -> original coordinates
        m = np.concatenate([self.matrix[:, :2] @ to_image, self.matrix[:, 2:]], axis=1)
        return AlignedCrop(m, invert_affine(m), self.size, (int(height), int(width)), self.landmarks)

    def resized(self, size: int) -> "AlignedCrop":
        """The same crop region at another crop resolution (e.g. a model output at 64 px of a 256 px crop)."""
        k = size / float(self.size)
        m = self.matrix * k
        lm = None if self.landmarks is None else (self.landmarks * k).astype(np.float32)
        return AlignedCrop(m, invert_affine(m), int(size), self.image_shape, lm)


def warp_to_crop(image, aligned: AlignedCrop) -> np.ndarray:
    """The crop (uint8 [size, size, 3]) of an image under ``aligned``. Bilinear, border pixels replicated;
    when the crop shrinks the image by more than 2x, the needed region is first reduced with area
    averaging so that the crop is not aliased."""
    img = to_rgb_uint8(image)
    m = aligned.matrix
    size = aligned.size
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))  # crop pixels per original pixel
    if scale < 0.5:
        # region of the original the crop reads from (+ margin), clamped to the image
        corners = apply_affine(aligned.inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
        margin = 2.0 / scale + 2
        h, w = img.shape[:2]
        x0 = int(np.clip(math.floor(corners[:, 0].min() - margin), 0, w - 1))
        y0 = int(np.clip(math.floor(corners[:, 1].min() - margin), 0, h - 1))
        x1 = int(np.clip(math.ceil(corners[:, 0].max() + margin), x0 + 1, w))
        y1 = int(np.clip(math.ceil(corners[:, 1].max() + margin), y0 + 1, h))
        roi = img[y0:y1, x0:x1]
        f = min(1.0, 2.0 * scale)           # area-reduce to ~2 pixels per crop pixel, then bilinear
        rw, rh = max(1, int(round(roi.shape[1] * f))), max(1, int(round(roi.shape[0] * f)))
        fx, fy = rw / roi.shape[1], rh / roi.shape[0]
        small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
        # small continuous coords = ((x - x0) * fx, (y - y0) * fy)  =>  crop = m o (small -> original)
        to_orig = np.array([[1.0 / fx, 0.0, x0], [0.0, 1.0 / fy, y0]])
        m_small = np.concatenate([m[:, :2] @ to_orig[:, :2], (m[:, :2] @ to_orig[:, 2] + m[:, 2])[:, None]], axis=1)
        return cv2.warpAffine(small, to_cv2_affine(m_small), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(img, to_cv2_affine(m), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def align_face(image, landmarks, size: int, rotate: bool = True) -> Tuple[np.ndarray, AlignedCrop]:
    """Crop a face: nose tip (landmark 30) at the crop centre, side = ALIGN_CROP_EYE_RATIO x outer-eye
    distance, rotated so that the eye line is horizontal when ``rotate``. Returns (uint8 [size, size, 3],
    AlignedCrop with the transforms and the landmarks in crop coordinates)."""
    if int(size) < 8:
        raise FaceError(f"crop size must be at least 8 px, got {size}")
    img = to_rgb_uint8(image)
    centre, side, angle = alignment_params(landmarks, rotate)
    aligned = AlignedCrop.from_params(centre, side, angle, int(size), img.shape[:2], _as_landmarks(landmarks))
    return warp_to_crop(img, aligned), aligned


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with replicate padding (sigma in samples; 0 = unchanged)."""
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    radius = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    idx = np.clip(np.arange(len(x))[:, None] + np.arange(-radius, radius + 1)[None], 0, len(x) - 1)
    return np.tensordot(k, x[idx].swapaxes(0, 1), axes=1) if x.ndim > 1 else (x[idx] * k).sum(axis=1)


def video_alignments(landmarks_per_frame, size: int, image_shape: Sequence[int], rotate: bool = True,
                     smoothing: float = 2.0) -> List[AlignedCrop]:
    """One AlignedCrop per frame from landmarks [N, 68, 2]: the nose-tip centre, log crop side and eye-line
    angle are smoothed over time with a Gaussian of ``smoothing`` frames (0 = per-frame alignment), which
    removes landmark jitter while still following head motion."""
    lms = np.asarray(landmarks_per_frame, dtype=np.float64)
    if lms.ndim != 3 or lms.shape[1:] != (NUM_LANDMARKS, 2) or len(lms) == 0:
        raise FaceError(f"expected landmarks [N, 68, 2] with N >= 1, got shape {lms.shape}")
    params = [alignment_params(lm, rotate) for lm in lms]
    centres = np.stack([p[0] for p in params])
    log_sides = np.log([p[1] for p in params])
    angles = np.unwrap([p[2] for p in params])
    centres = _gaussian_smooth(centres, smoothing)
    log_sides = _gaussian_smooth(log_sides, smoothing)
    angles = _gaussian_smooth(angles, smoothing)
    return [AlignedCrop.from_params(c, float(np.exp(s)), float(a), size, image_shape, lm)
            for c, s, a, lm in zip(centres, log_sides, angles, lms)]


def align_video(frames: Iterable, landmarks_per_frame, size: int, rotate: bool = True,
                smoothing: float = 2.0) -> Tuple[np.ndarray, List[AlignedCrop]]:
    """Aligned crops (uint8 [N, size, size, 3]) of a video with temporally smoothed alignment (see
    `video_alignments`); ``frames`` is an array [N, H, W, 3] or an iterable of frames (consumed once)."""
    lms = np.asarray(landmarks_per_frame, dtype=np.float64)
    out = np.empty((len(lms), size, size, 3), np.uint8)
    aligned: Optional[List[AlignedCrop]] = None
    count = 0
    for i, frame in enumerate(frames):
        if i >= len(lms):
            raise FaceError(f"more frames than landmark sets ({len(lms)})")
        img = to_rgb_uint8(frame)
        if aligned is None:
            aligned = video_alignments(lms, size, img.shape[:2], rotate, smoothing)
        out[i] = warp_to_crop(img, aligned[i])
        count += 1
    if count != len(lms) or aligned is None:
        raise FaceError(f"got {count} frames for {len(lms)} landmark sets")
    return out, aligned


# --------------------------------------------------------------------------- paste-back
def _paste_mask(aligned: AlignedCrop, crop_size: int, feather: float, region: str) -> np.ndarray:
    """Float32 [crop_size, crop_size] blend mask in crop space."""
    feather_px = max(1.0, feather * crop_size)
    ys, xs = np.mgrid[0:crop_size, 0:crop_size].astype(np.float32) + 0.5
    edge = np.minimum.reduce([xs, ys, crop_size - xs, crop_size - ys])
    border = np.clip(edge / feather_px, 0.0, 1.0)
    if region == "crop":
        return border
    if region != "face":
        raise FaceError(f"paste region must be 'face' or 'crop', got {region!r}")
    if aligned.landmarks is None:
        raise FaceError("the AlignedCrop carries no landmarks; paste with region='crop'")
    k = crop_size / float(aligned.size)
    lm = aligned.landmarks.astype(np.float64) * k
    nose = lm[NOSE_TIP]
    eye = float(np.hypot(*(lm[EYE_OUTER_RIGHT] - lm[EYE_OUTER_LEFT])))
    up = lm[EYE_OUTER_RIGHT] - lm[EYE_OUTER_LEFT]
    up = np.array([up[1], -up[0]]) / max(eye, 1e-6)      # perpendicular to the eye line, towards the forehead
    outline = np.concatenate([lm[0:17], lm[17:27] + 0.55 * eye * up])
    # generous margin: the generated face moves (jaw opens, head turns) within the crop
    outline = nose + (outline - nose) * 1.12
    chin = lm[8] - nose
    outline = np.concatenate([outline, [lm[8] + 0.15 * chin]])
    hull = cv2.convexHull(np.round((outline - 0.5) * 16).astype(np.int32))
    mask = np.zeros((crop_size, crop_size), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=4)
    sigma = feather_px / 2.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.minimum(mask, border)


class _PastePlan:
    """Precomputed ROI, warp matrix and mask for pasting crops of one size with one alignment."""

    def __init__(self, aligned: AlignedCrop, crop_size: int, feather: float, region: str):
        h, w = aligned.image_shape
        crop_aligned = aligned if crop_size == aligned.size else aligned.resized(crop_size)
        corners = crop_aligned.to_original(np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]],
                                                    float))
        self.x0 = int(np.clip(math.floor(corners[:, 0].min()) - 1, 0, w))
        self.y0 = int(np.clip(math.floor(corners[:, 1].min()) - 1, 0, h))
        self.x1 = int(np.clip(math.ceil(corners[:, 0].max()) + 1, 0, w))
        self.y1 = int(np.clip(math.ceil(corners[:, 1].max()) + 1, 0, h))
        self.empty = self.x1 <= self.x0 or self.y1 <= self.y0
        inv = crop_aligned.inverse.copy()
        inv[:, 2] -= (self.x0, self.y0)     # crop -> ROI coordinates
        self.matrix = to_cv2_affine(inv)
        self.dsize = (self.x1 - self.x0, self.y1 - self.y0)
        self.image_shape = (h, w)
        if not self.empty:
            mask = _paste_mask(aligned, crop_size, feather, region)
            self.mask = cv2.warpAffine(mask, self.matrix, self.dsize, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]

    def paste(self, crop: np.ndarray, original: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        if out is None:
            out = original.copy()
        elif out is not original:
            out[...] = original
        if self.empty:
            return out
        warped = cv2.warpAffine(crop, self.matrix, self.dsize, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        roi = original[self.y0:self.y1, self.x0:self.x1].astype(np.float32)
        blended = roi + (warped - roi) * self.mask
        out[self.y0:self.y1, self.x0:self.x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out


def paste_back_frame(crop, original_image, aligned: AlignedCrop, feather: float = 0.08,
                     region: str = "face") -> np.ndarray:
    """Paste one crop (uint8/float [S, S, 3]; S may differ from aligned.size) into a copy of the original
    (uint8 [H, W, 3]) with a feathered mask. See `paste_back`."""
    return next(paste_back([crop], original_image, aligned, feather=feather, region=region))


def paste_back(crop_frames: Iterable, original_image, aligned: AlignedCrop, feather: float = 0.08,
               region: str = "face") -> Iterator[np.ndarray]:
    """Warp generated crops back into the full-resolution original, one frame at a time (a generator, so a
    long video at full resolution never sits in memory at once).

    crop_frames: [N, S, S, 3] array or an iterable of [S, S, 3] frames (uint8 or float 0..1; S may differ
    from aligned.size, the crop region is the same). feather: width of the soft mask edge as a fraction of
    the crop side. region: "face" blends only the face (jaw, cheeks and forehead from the crop landmarks,
    with a margin for mouth and head motion), "crop" blends the whole crop square. Pixels outside the mask
    are the original's. Yields uint8 [H, W, 3].
    """
    original = to_rgb_uint8(original_image)
    if tuple(original.shape[:2]) != tuple(aligned.image_shape):
        raise FaceError(f"the original image is {original.shape[1]}x{original.shape[0]} but the alignment was "
                        f"made on a {aligned.image_shape[1]}x{aligned.image_shape[0]} image; paste into the image "
                        "the crop came from")
    plan: Optional[_PastePlan] = None
    plan_size = -1
    orig_per_aligned_px = math.sqrt(abs(np.linalg.det(aligned.inverse[:, :2])))
    for crop in crop_frames:
        c = to_rgb_uint8(crop)
        if c.shape[0] != c.shape[1]:
            raise FaceError(f"crops must be square, got {c.shape[1]}x{c.shape[0]}")
        # a crop much finer than the original (e.g. a 512 px crop of a 150 px face) is area-reduced first,
        # so that the bilinear warp does not alias
        orig_per_px = orig_per_aligned_px * aligned.size / c.shape[0]
        if orig_per_px < 0.5:
            target = max(8, int(round(c.shape[0] * orig_per_px * 2)))
            c = cv2.resize(c, (target, target), interpolation=cv2.INTER_AREA)
        if plan is None or plan_size != c.shape[0]:
            plan = _PastePlan(aligned, c.shape[0], feather, region)
            plan_size = c.shape[0]
        yield plan.paste(c, original)


def paste_mask(aligned: AlignedCrop, feather: float = 0.08, region: str = "face",
               crop_size: Optional[int] = None) -> np.ndarray:
    """The blend mask of `paste_back` in original-image coordinates, float32 [H, W] in 0..1 (for tests,
    previews and custom compositing)."""
    plan = _PastePlan(aligned, crop_size or aligned.size, feather, region)
    full = np.zeros(aligned.image_shape, np.float32)
    if not plan.empty:
        full[plan.y0:plan.y1, plan.x0:plan.x1] = plan.mask[..., 0]
    return full
