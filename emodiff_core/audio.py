"""Audio: any rate and channel count -> 16 kHz mono -> log-mel features aligned to video frames.

Frame alignment is exact at any fps: video frame i starts at sample round(i * sr / fps), computed with
rational arithmetic (fps 29.97 is 2997/100, 30000/1001 stays 30000/1001). Integer samples-per-frame
(sr // fps = 533 at 30 fps) would drift by 1/3 sample per frame, 10 ms per second of video.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Optional, Tuple, Union

import numpy as np

from .config import AudioFeatureConfig

Number = Union[int, float, Fraction]

# Log-mel normalisation: natural log of mel power (floor 1e-6), then (x - OFFSET) / SCALE, which maps
# speech at about -20 dBFS RMS to roughly zero mean and unit spread.
LOGMEL_FLOOR = 1e-6
LOGMEL_OFFSET = -8.0
LOGMEL_SCALE = 4.5
# Loudness normalisation target: the 95th percentile of 20 ms frame RMS is set to this (about -18 dBFS).
TARGET_LOUD_RMS = 0.125
SILENCE_PEAK = 1e-4  # below this peak amplitude (-80 dBFS) a recording counts as silent
# Silent video frames (`silent_frames`): the frame's RMS is below SILENCE_FLOOR_DB (dBFS), or more than
# SILENCE_BELOW_LOUD_DB under the recording's loud passages (so room noise in the pauses of a normal
# recording counts as silence). A silent stretch ends only when the level rises SILENCE_HYSTERESIS_DB above
# the threshold (no flicker on a noise floor near it), and stretches shorter than MIN_SILENCE_SECONDS stay
# speech: gaps between words and stop consonants are part of lip motion, which the model renders itself.
SILENCE_FLOOR_DB = -60.0
SILENCE_BELOW_LOUD_DB = 35.0
SILENCE_HYSTERESIS_DB = 6.0
MIN_SILENCE_SECONDS = 0.25


class AudioError(ValueError):
    """Audio that cannot be used (empty, silent, unreadable, too short)."""


def as_fraction(fps: Number) -> Fraction:
    """fps as an exact fraction: decimal input is read as written (29.97 -> 2997/100)."""
    if isinstance(fps, Fraction):
        value = fps
    elif isinstance(fps, int):
        value = Fraction(fps)
    else:
        if not math.isfinite(float(fps)):
            raise AudioError(f"fps must be a finite number, got {fps}")
        value = Fraction(repr(float(fps)))
    if value <= 0:
        raise AudioError(f"fps must be positive, got {fps}")
    return value


def _round_half_up(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """round(numerator / denominator) for non-negative integers, halves rounded up, exactly."""
    return (2 * numerator + denominator) // (2 * denominator)


def frame_sample_positions(num_frames: int, fps: Number, sample_rate: int) -> np.ndarray:
    """First sample of each video frame: round(i * sample_rate / fps), exact, as int64 [num_frames]."""
    f = as_fraction(fps)
    i = np.arange(num_frames, dtype=object)
    # i * sr / fps = i * sr * f.denominator / f.numerator; object dtype keeps Python's exact integers.
    positions = _round_half_up(i * (sample_rate * f.denominator), f.numerator)
    return positions.astype(np.int64)


def frame_centre_samples(num_frames: int, fps: Number, sample_rate: int) -> np.ndarray:
    """Centre sample of each video frame: round((i + 1/2) * sample_rate / fps), exact."""
    f = as_fraction(fps)
    i = np.arange(num_frames, dtype=object)
    positions = _round_half_up((2 * i + 1) * (sample_rate * f.denominator), 2 * f.numerator)
    return positions.astype(np.int64)


def num_video_frames(num_samples: int, fps: Number, sample_rate: int) -> int:
    """Whole video frames that fit in the audio: floor(num_samples * fps / sample_rate)."""
    f = as_fraction(fps)
    return int((num_samples * f.numerator) // (sample_rate * f.denominator))


def samples_for_frames(num_frames: int, fps: Number, sample_rate: int) -> int:
    """Audio samples spanned by ``num_frames`` video frames: round(num_frames * sr / fps)."""
    return int(frame_sample_positions(num_frames + 1, fps, sample_rate)[-1])


# --------------------------------------------------------------------------- waveform preparation
def to_mono(waveform: np.ndarray) -> np.ndarray:
    """[T] or [C, T] -> [T] float32 (channel mean)."""
    w = np.asarray(waveform, dtype=np.float32)
    if w.ndim == 1:
        return w
    if w.ndim == 2:
        return w.mean(axis=0)
    raise AudioError(f"audio must be [samples] or [channels, samples], got shape {w.shape}")


def resample(waveform: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    if sample_rate == target_rate:
        return waveform.astype(np.float32, copy=False)
    import librosa

    return librosa.resample(waveform.astype(np.float32), orig_sr=sample_rate, target_sr=target_rate,
                            res_type="soxr_hq").astype(np.float32)


def prepare_waveform(waveform: np.ndarray, sample_rate: int, target_rate: int = 16000) -> np.ndarray:
    """Any channel count and rate -> mono float32 at ``target_rate``. Raises AudioError for empty or
    non-finite audio."""
    if sample_rate <= 0:
        raise AudioError(f"sample rate must be positive, got {sample_rate}")
    mono = to_mono(waveform)
    if mono.size == 0:
        raise AudioError("the audio is empty (0 samples); load a recording with speech in it")
    if not np.isfinite(mono).all():
        raise AudioError("the audio contains NaN or infinite samples; re-export it as a normal WAV/FLAC file")
    return resample(mono, sample_rate, target_rate)


def is_silent(waveform: np.ndarray) -> bool:
    return waveform.size == 0 or float(np.abs(waveform).max()) < SILENCE_PEAK


def _loud_rms(waveform: np.ndarray, sample_rate: int) -> float:
    """RMS of the loud passages: the 95th percentile of 20 ms frame RMS."""
    hop = max(1, sample_rate // 50)
    n = len(waveform) // hop
    if n == 0:
        return float(np.sqrt(np.mean(waveform ** 2))) if waveform.size else 0.0
    frames = waveform[: n * hop].reshape(n, hop)
    return float(np.percentile(np.sqrt((frames ** 2).mean(axis=1)), 95))


def silent_frames(waveform: np.ndarray, fps: Number, sample_rate: int, num_frames: Optional[int] = None) -> np.ndarray:
    """bool [N]: which video frames of mono ``waveform`` are silence (a pause, or no sound at all).

    Frame i spans samples [round(i sr / fps), round((i + 1) sr / fps)). It is silent when its RMS is below the
    threshold max(SILENCE_FLOOR_DB, loud - SILENCE_BELOW_LOUD_DB) (loud = `normalise_loudness`'s measure of
    the loud passages), with SILENCE_HYSTERESIS_DB of hysteresis; silent stretches shorter than
    MIN_SILENCE_SECONDS are not counted, unless they are the whole clip.
    """
    if num_frames is None:
        num_frames = num_video_frames(len(waveform), fps, sample_rate)
    if num_frames < 1:
        return np.zeros(0, bool)
    bounds = frame_sample_positions(num_frames + 1, fps, sample_rate).clip(0, len(waveform))
    energy = np.concatenate([[0.0], np.cumsum(np.square(waveform, dtype=np.float64))])
    length = np.maximum(bounds[1:] - bounds[:-1], 1)
    rms = np.sqrt(np.maximum(energy[bounds[1:]] - energy[bounds[:-1]], 0.0) / length)
    level = 20.0 * np.log10(np.maximum(rms, 1e-10))
    loud = 20.0 * np.log10(max(_loud_rms(waveform, sample_rate), 1e-10))
    threshold = max(SILENCE_FLOOR_DB, loud - SILENCE_BELOW_LOUD_DB)
    silent = np.zeros(num_frames, bool)
    state = bool(level[0] < threshold)
    for i, db in enumerate(level):
        if state and db > threshold + SILENCE_HYSTERESIS_DB:
            state = False
        elif not state and db < threshold:
            state = True
        silent[i] = state
    min_frames = max(1, int(math.ceil(MIN_SILENCE_SECONDS * float(as_fraction(fps)))))
    start = None
    for i in range(num_frames + 1):           # drop silent runs shorter than min_frames
        if i < num_frames and silent[i]:
            start = i if start is None else start
        elif start is not None:
            if i - start < min_frames and not (start == 0 and i == num_frames):    # a silent clip stays silent
                silent[start:i] = False
            start = None
    return silent


def silence_feature_value() -> float:
    """The normalised log-mel value of digital silence (every mel bin at the floor): what the model saw in the
    silent padding before and after every training sentence, where the mouth is closed and still."""
    return float((math.log(LOGMEL_FLOOR) - LOGMEL_OFFSET) / LOGMEL_SCALE)


def normalise_loudness(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Scale so that loud passages (95th percentile of 20 ms RMS) sit at TARGET_LOUD_RMS; silence stays."""
    if is_silent(waveform):
        return waveform
    rms = _loud_rms(waveform, sample_rate)
    if rms <= 0:
        return waveform
    out = waveform * (TARGET_LOUD_RMS / rms)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- features
def log_mel(waveform: np.ndarray, cfg: AudioFeatureConfig) -> np.ndarray:
    """Normalised log-mel spectrogram [n_mels, M]; mel frame m is centred on sample m * hop_length."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=waveform.astype(np.float32), sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, power=2.0, center=True)
    return ((np.log(mel + LOGMEL_FLOOR) - LOGMEL_OFFSET) / LOGMEL_SCALE).astype(np.float32)


def frame_features(waveform: np.ndarray, fps: Number, cfg: AudioFeatureConfig,
                   num_frames: Optional[int] = None) -> np.ndarray:
    """Per-video-frame features [N, n_mels, context] from mono audio at cfg.sample_rate.

    Frame i takes the ``context`` mel frames nearest its centre sample (replicate-padded at the ends).
    ``num_frames`` defaults to the whole frames that fit in the audio.
    """
    if num_frames is None:
        num_frames = num_video_frames(len(waveform), fps, cfg.sample_rate)
    if num_frames < 1:
        raise AudioError("the audio is shorter than one video frame; use a longer recording")
    mel = log_mel(normalise_loudness(waveform, cfg.sample_rate), cfg)
    centres = frame_centre_samples(num_frames, fps, cfg.sample_rate)
    # Index of the mel frame whose centre is nearest the sample, then context frames around it.
    nearest = _round_half_up(centres.astype(object), cfg.hop_length).astype(np.int64)
    offsets = np.arange(cfg.context) - cfg.context // 2
    idx = np.clip(nearest[:, None] + offsets[None, :], 0, mel.shape[1] - 1)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2))


def mouth_drive(wave: np.ndarray, fps, num_frames: int, sample_rate: int) -> dict:
    """Per-frame mouth activity from the audio around each frame's centre (40 ms windows): how the procedural and
    real-texture corpora drive a face's speech components from a voice (`training.corpus`), and how the pack
    draws the voice's mouth on a portrait's rig (`anchors.rig_psi`).

    Returns ``jaw_open`` (loudness envelope), ``mouth_width`` (spectral centroid, z-scored on voiced
    frames: wide for bright vowels, rounded for dark ones) and ``lip_press`` (lips shut in pauses).
    """
    centres = frame_centre_samples(num_frames, fps, sample_rate)
    half = int(0.02 * sample_rate)
    padded = np.pad(wave.astype(np.float64), (half, half))
    window = np.hanning(2 * half)
    rms = np.empty(num_frames)
    centroid = np.empty(num_frames)
    freqs = np.fft.rfftfreq(2 * half, 1.0 / sample_rate)
    for i, c in enumerate(centres):
        seg = padded[c: c + 2 * half]
        rms[i] = np.sqrt(np.mean(seg ** 2))
        spec = np.abs(np.fft.rfft(seg * window)) ** 2
        centroid[i] = (spec * freqs).sum() / (spec.sum() + 1e-12)
    loud = np.percentile(rms, 95) + 1e-9
    env = np.clip(rms / loud, 0.0, 1.3)
    voiced = env > 0.15
    if voiced.sum() >= 3:
        z = (centroid - centroid[voiced].mean()) / (centroid[voiced].std() + 1e-9)
    else:
        z = np.zeros(num_frames)
    width = 0.35 * np.tanh(z) * voiced
    # a centred 3-frame mean, as long as the video even under 3 frames (where mode="same" would give 3 values)
    press = np.convolve((env < 0.08).astype(np.float64), np.ones(3) / 3, mode="full")[1:num_frames + 1] * 0.3
    return {"jaw_open": 0.85 * env ** 0.8, "mouth_width": width, "lip_press": press, "envelope": env}


# --------------------------------------------------------------------------- files
def load_audio_file(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, int]:
    """(waveform [C, T] float32, sample_rate) from a file: soundfile for WAV/FLAC/OGG, PyAV otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        import soundfile

        data, sr = soundfile.read(path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(sr)
    except Exception:  # not a format libsndfile reads (mp3, m4a, video containers): try PyAV
        pass
    try:
        import av

        with av.open(path) as container:
            if not container.streams.audio:
                raise AudioError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            sr = stream.rate or stream.codec_context.sample_rate
            to_float = av.AudioResampler(format="fltp")  # planar float: to_ndarray() is [channels, samples]
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
        if not chunks:
            raise AudioError(f"{path} contains no audio samples")
        data = np.concatenate(chunks, axis=1).astype(np.float32)
        return data, int(sr)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"cannot read audio from {path}: {exc}. Convert it to WAV (16-bit PCM) and try again") from None
