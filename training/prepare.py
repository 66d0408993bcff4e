"""Real videos (MEAD / HDTF style folders) -> the clip format (training/clips.py).

For every video found (mp4, avi, mov, mkv, webm; searched recursively):
    1. the audio track is decoded, mixed to mono and resampled to 16 kHz (emodiff_core.audio);
    2. frames are decoded at ``fps`` (nearest source frame per output time) and 68 landmarks are found per
       frame with the chosen backend (`emodiff_core.landmarks.track_landmarks`: one face is followed, short
       detector misses are bridged);
    3. the crop is centred on the nose tip with side 2.6 x the outer-eye distance (section 4.2 of the paper,
       the corpus convention), smoothed over time, and every frame is cropped to ``size`` x ``size``;
    4. landmarks are mapped into crop coordinates; with ``deca`` the expression psi [N, 50] of every frame
       is computed by DECA's encoder on the full-resolution frame (psi_source "deca"), else no psi.npy is
       written (psi_source "none");
    5. labels are parsed from the path (`parse_labels`) and the clip is written atomically; the video is
       decoded twice (landmarks, then crops) so memory stays bounded for long videos.
A video that fails is recorded in the returned stats (``failures``, with the file and what to do) and
leaves nothing behind; ``strict=True`` raises instead. A bad DECA file fails before any video is read.
extras.npz holds ``crop_affine`` [N, 2, 3] (original continuous pixel coordinates -> crop coordinates)
and ``source_landmarks`` [N, 68, 2] (landmarks in the original frames).
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Callable, Iterable, List, Optional, Sequence, Union

import numpy as np

from emodiff_core.audio import AudioError, as_fraction, num_video_frames, prepare_waveform, samples_for_frames
from emodiff_core.emotions import EMOTIONS, MEAD_LEVEL_INTENSITY
from emodiff_core.faces import FaceError, video_alignments, warp_to_crop
from emodiff_core.landmarks import FaceNotFoundError, LandmarkBackend, fan_available, get_backend, track_landmarks
from emodiff_core.video import (NoAudioStreamError, VideoError, iter_frames, probe_video, read_audio_track)

from .clips import Clip, write_clip, write_index

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
SAMPLE_RATE = 16000
MIN_FRAMES = 2
MEAD_VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
_SPEAKER = re.compile(r"^[MW]\d{3}$", re.IGNORECASE)
_LEVEL = re.compile(r"(?:^|[/_\-])level[_\-]?([1-3])(?=$|[/_\-.])", re.IGNORECASE)


class PrepareError(ValueError):
    """A video (or option) that cannot be prepared; the message names the file and the fix."""


# --------------------------------------------------------------------------- labels
def parse_labels(path: str, root: Optional[str] = None) -> dict:
    """Identity, emotion, level, intensity, view and dataset parsed from a video path.

    MEAD, folder style ``M003/video/front/angry/level_1/001.mp4`` or flat ``M003_front_angry_level_1_001.mp4``:
    identity = the speaker id (M/W + 3 digits), emotion = one of MEAD's eight labels (angry, contempt,
    disgusted, fear, happy, neutral, sad, surprised), level 1..3 -> intensity via MEAD_LEVEL_INTENSITY
    (neutral gets intensity 0.0, as in the corpus). HDTF style ``WDA_BarackObama_000.mp4``: identity = the
    name without the trailing index, emotion/level/intensity null. Other names: identity = the file name
    without a trailing ``_<digits>`` index.
    """
    rel = os.path.relpath(path, root) if root else path
    rel = rel.replace(os.sep, "/")
    if not root:   # a lone file: MEAD's folder layout is at most 6 levels deep; ignore folders above that
        rel = "/".join(rel.split("/")[-6:])
    stem = os.path.splitext(os.path.basename(rel))[0]
    parts = [p for p in os.path.splitext(rel)[0].split("/") if p not in ("", ".", "..")]
    tokens = [t.lower() for p in parts for t in re.split(r"[_\-\s.]+", p) if t]
    speaker = next((p.upper() for p in parts if _SPEAKER.match(p)), None)
    if speaker is None:
        speaker = next((t.upper() for t in tokens if _SPEAKER.match(t)), None)
    emotion = next((t for t in tokens if t in EMOTIONS), None)
    level = None
    m = _LEVEL.search("/".join(parts))
    if m and emotion is not None:
        level = int(m.group(1))
    joined = "/".join(parts).lower()
    view = next((v for v in MEAD_VIEWS if re.search(rf"(?:^|[/_]){v}(?=$|[/_])", joined)), None)
    if speaker is not None and emotion is not None:
        intensity = 0.0 if emotion == "neutral" else (MEAD_LEVEL_INTENSITY[level] if level else None)
        return {"identity": speaker, "emotion": emotion, "level": level, "intensity": intensity, "view": view,
                "dataset": "mead"}
    hdtf = re.match(r"^(.+?)_(\d+)$", stem)
    if hdtf and re.match(r"^(WDA|WRA|RD)_", stem, re.IGNORECASE):
        return {"identity": hdtf.group(1), "emotion": None, "level": None, "intensity": None, "view": None,
                "dataset": "hdtf"}
    identity = speaker or (hdtf.group(1) if hdtf else stem)
    return {"identity": identity, "emotion": None, "level": None, "intensity": None, "view": view,
            "dataset": "video"}


def find_videos(videos: Union[str, Sequence[str]]) -> List[str]:
    """Video files (mp4, avi, mov, mkv, webm; case-insensitive) under a folder (recursive, sorted), a single
    file, or a list of either."""
    items = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
    found: List[str] = []
    for item in items:
        item = os.fspath(item)
        if os.path.isfile(item):
            found.append(item)
        elif os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                        found.append(os.path.join(folder, name))
        else:
            raise FileNotFoundError(f"--videos: {item} does not exist; pass a folder of videos or a video file")
    return found


def clip_id_for(path: str, root: Optional[str], taken: set) -> str:
    """A clip id from the video's path relative to the root (separators -> '_', other symbols removed)."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    base = re.sub(r"[^A-Za-z0-9_\-]+", "_", os.path.splitext(rel)[0].replace(os.sep, "_")).strip("_") or "clip"
    cid, n = base, 1
    while cid in taken:
        n += 1
        cid = f"{base}_{n}"
    taken.add(cid)
    return cid


# --------------------------------------------------------------------------- one video
def _fps_meta(fps) -> Union[int, float]:
    f = as_fraction(fps)
    return int(f) if f.denominator == 1 else float(f)


def prepare_video(path: str, clip_id: str, labels: dict, backend: LandmarkBackend, size: int, split: str,
                  fps, deca=None, smoothing: float = 2.0, max_gap: int = 5) -> Clip:
    """Everything for one video except writing: returns the Clip. Raises PrepareError naming the file."""
    try:
        info = probe_video(path)
        if not info.has_audio:
            raise NoAudioStreamError("it has no audio stream")
        raw, sr = read_audio_track(path)
        try:
            wave = prepare_waveform(raw, sr, SAMPLE_RATE)
        except AudioError as exc:
            raise PrepareError(f"{path}: unusable audio ({exc})") from None
        # the most frames whose audio span (samples_for_frames rounds to the nearest sample) the track covers
        n_audio = num_video_frames(len(wave) + 1, fps, SAMPLE_RATE)
        while n_audio > 0 and samples_for_frames(n_audio, fps, SAMPLE_RATE) > len(wave):
            n_audio -= 1
        if n_audio < MIN_FRAMES:
            raise PrepareError(f"{path}: the audio lasts {len(wave) / SAMPLE_RATE:.3f} s, shorter than {MIN_FRAMES} "
                               "video frames; use a longer recording")
        # pass 1: landmarks (frames beyond the audio are not needed)
        def limited(it: Iterable) -> Iterable:
            for i, frame in enumerate(it):
                if i >= n_audio:
                    break
                yield frame

        lm_src, detected = track_landmarks(limited(iter_frames(path, fps)), backend, max_gap=max_gap)
        n = len(lm_src)
        if n < MIN_FRAMES:
            raise PrepareError(f"{path}: only {n} frame(s) with audio; a clip needs at least {MIN_FRAMES}")
        # pass 2: crops (and DECA on the full frames)
        aligned = None
        crops = np.empty((n, size, size, 3), np.uint8)
        psi = np.empty((n, 50), np.float32) if deca is not None else None
        batch_frames: List[np.ndarray] = []
        batch_idx: List[int] = []
        for i, frame in enumerate(limited(iter_frames(path, fps))):
            if aligned is None:
                aligned = video_alignments(lm_src, size, frame.shape[:2], rotate=True, smoothing=smoothing)
            crops[i] = warp_to_crop(frame, aligned[i])
            if deca is not None:
                batch_frames.append(frame)
                batch_idx.append(i)
                if len(batch_frames) == deca.batch_size:
                    psi[batch_idx] = deca.encode(batch_frames, lm_src[batch_idx])
                    batch_frames, batch_idx = [], []
        if deca is not None and batch_frames:
            psi[batch_idx] = deca.encode(batch_frames, lm_src[batch_idx])
        if aligned is None or i + 1 != n:
            raise PrepareError(f"{path}: the second decoding pass gave a different number of frames; the file may be "
                               "damaged, re-encode it")
    except PrepareError:
        raise
    except NoAudioStreamError:
        raise PrepareError(f"{path}: the video has no audio stream; training needs the speech track. Use the "
                           "original recording with sound (MEAD/HDTF videos include it)") from None
    except FaceNotFoundError as exc:
        raise PrepareError(f"{path}: {exc}; use videos where one frontal face is visible throughout (at least "
                           f"{backend.min_face_px} px wide), or trim the video") from None
    except (VideoError, FaceError) as exc:
        raise PrepareError(f"{path}: {exc}") from None
    lm_crop = np.stack([a.landmarks for a in aligned]).astype(np.float32)
    matrices = np.stack([a.matrix for a in aligned]).astype(np.float32)
    meta = {"clip_id": clip_id, "identity": labels["identity"], "split": split, "emotion": labels["emotion"],
            "level": labels["level"], "intensity": labels["intensity"], "fps": _fps_meta(fps),
            "sample_rate": SAMPLE_RATE, "size": int(size), "source": labels["dataset"],
            "psi_source": "deca" if psi is not None else "none", "video": path, "view": labels.get("view"),
            "landmark_backend": backend.name, "source_fps": info.fps, "source_size": [info.height, info.width],
            "frames_detected": int(detected.sum())}
    audio = wave[: samples_for_frames(n, fps, SAMPLE_RATE)].astype(np.float32)
    extras = {"crop_affine": matrices, "source_landmarks": lm_src.astype(np.float32)}
    return Clip(meta, crops, audio, lm_crop, psi, extras)


# --------------------------------------------------------------------------- the command
def _check_existing(out: str, fps, size: int) -> None:
    path = os.path.join(out, "dataset.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as fh:
            index = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return
    if index.get("size") != size or as_fraction(index.get("fps", fps)) != as_fraction(fps):
        raise PrepareError(f"{out} already holds a dataset at size {index.get('size')} and {index.get('fps')} fps; "
                           f"write size {size} / {fps} fps into a new folder")


def prepare(videos: Union[str, Sequence[str]], out: str, landmarks: Union[str, LandmarkBackend] = "dlib",
            deca: Optional[str] = None, size: int = 64, split: str = "train", fps: float = 30.0,
            smoothing: float = 2.0, max_gap: int = 5, strict: bool = False, overwrite: bool = False,
            device: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Prepare every video under ``videos`` into the clip dataset ``out`` and return JSON-able stats:
    videos, clips_written, clips_skipped (already complete in ``out``; ``overwrite`` redoes them), frames,
    seconds (of clips written), elapsed_seconds, failures [{video, error}], plus the settings used.

    landmarks: "dlib", "fan", "auto" or a backend instance. deca: path of DECA's deca_model.tar (psi per
    frame; non-commercial licence) or None. size: crop side. split: train/val/test for every clip.
    fps: output frame rate. smoothing: temporal smoothing (frames) of the crop. max_gap: longest run of
    frames without a detected face that is bridged. strict: raise on the first failing video.
    device: where DECA and FAN run (default: cuda when available, else cpu; dlib always uses the CPU).
    """
    start = time.perf_counter()
    if split not in ("train", "val", "test"):
        raise PrepareError(f"split must be train, val or test, got {split!r}")
    if int(size) < 16:
        raise PrepareError(f"--size must be at least 16 px, got {size}")
    size = int(size)
    fps_f = as_fraction(fps)
    paths = find_videos(videos)
    root = os.fspath(videos) if isinstance(videos, (str, os.PathLike)) and os.path.isdir(videos) else None
    if not paths:
        raise PrepareError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {videos}")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = None
    if deca is not None:
        from emodiff_core.deca import DecaExpressionEncoder, DecaWeightsError

        try:
            encoder = DecaExpressionEncoder(deca, device=device)
        except DecaWeightsError as exc:
            raise PrepareError(f"--deca: {exc}") from None
    try:
        name = landmarks
        if isinstance(name, str) and name.strip().lower() == "auto":
            name = "fan" if fan_available() else "dlib"
        if isinstance(name, str) and name.strip().lower() == "fan" and device != "cpu":
            backend = get_backend("fan", device=device)
        else:
            backend = get_backend(name)
    except FaceError as exc:
        raise PrepareError(f"--landmarks {landmarks}: {exc}") from None
    os.makedirs(os.path.join(out, "clips"), exist_ok=True)
    _check_existing(out, fps_f, size)
    stats = {"videos": len(paths), "clips_written": 0, "clips_skipped": 0, "frames": 0, "seconds": 0.0,
             "failures": [], "out": out, "landmarks": backend.name, "psi_source": "deca" if encoder else "none",
             "size": size, "fps": _fps_meta(fps_f), "split": split}
    taken: set = set()
    for path in paths:
        cid = clip_id_for(path, root, taken)
        final = os.path.join(out, "clips", cid)
        if not overwrite and os.path.isfile(os.path.join(final, "meta.json")):
            stats["clips_skipped"] += 1
            continue
        if progress:
            progress(path)
        try:
            clip = prepare_video(path, cid, parse_labels(path, root), backend, size, split, fps_f, encoder,
                                 smoothing=smoothing, max_gap=max_gap)
            write_clip(out, clip)            # cleans up its own temporary folder on failure
        except PrepareError as exc:
            if strict:
                raise
            stats["failures"].append({"video": path, "error": str(exc)})
            continue
        except OSError as exc:
            msg = f"{path}: cannot write the clip ({exc}); check free disk space and permissions of {out}"
            if strict:
                raise PrepareError(msg) from None
            stats["failures"].append({"video": path, "error": msg})
            continue
        stats["clips_written"] += 1
        stats["frames"] += len(clip.frames)
        stats["seconds"] += len(clip.frames) / float(fps_f)
    write_index(out, fps=_fps_meta(fps_f), sample_rate=SAMPLE_RATE, size=size, source="prepared")
    stats["elapsed_seconds"] = round(time.perf_counter() - start, 3)
    stats["seconds"] = round(stats["seconds"], 3)
    return stats
