"""Video files with PyAV: H.264 + AAC mp4 writing and decoding with frame-rate resampling.

Writing (`write_mp4`) is atomic: the file is encoded under a temporary name in the target folder and
renamed when complete, so an error never leaves a half-written mp4. The movie timescale is chosen so
that the container reports the video duration as exactly N / fps and the audio duration as exactly the
number of samples given (AAC's encoder delay and last-frame padding are hidden by the mp4 edit list).

Reading (`read_video`, `iter_frames`, `read_audio_track`) decodes RGB frames and float32 audio [C, T] at
the file's own rate. With ``fps`` given, output frame k (time k / fps from the first frame) is the source
frame whose timestamp is nearest. The audio returned starts at the first video frame's time and ends at
the audio stream's declared duration (the decoder's padding is trimmed).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from .atomic import atomic_output
from .audio import as_fraction, frame_sample_positions

AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
# x264 keeps rc-lookahead frames (40 at preset medium) in memory, about 3 bytes per pixel each (measured:
# 70 MB per lookahead frame at 6000x4000; 4.2 GB of encoder memory at the default lookahead). Large frames
# get a shorter lookahead so that those buffers stay near this budget; frames up to ~6 MP keep the default.
ENCODER_LOOKAHEAD_BYTES = 768 * 1024 ** 2
LOOKAHEAD_BYTES_PER_PIXEL = 3
DEFAULT_LOOKAHEAD = 40
MIN_LOOKAHEAD = 2
REENCODE_HINT = ("re-encode it, e.g. `ffmpeg -i input -c:v libx264 -pix_fmt yuv420p -c:a aac output.mp4`")


class VideoError(ValueError):
    """A video file that cannot be read or written as asked."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video file does not exist."""


class CorruptVideoError(VideoError):
    """The file is empty, not a video, or damaged."""


class NoVideoStreamError(VideoError):
    """The file holds no video stream (e.g. an audio-only file)."""


class NoAudioStreamError(VideoError):
    """The file holds no (usable) audio stream but audio is required."""


@dataclass
class VideoInfo:
    """Container facts read without decoding."""

    path: str
    width: int
    height: int
    fps: float
    frames: Optional[int]
    duration: Optional[float]
    has_audio: bool
    audio_rate: Optional[int]
    audio_channels: Optional[int]


@dataclass
class VideoData:
    """Decoded video: frames uint8 [N, H, W, 3] RGB at ``fps``; audio float32 [C, T] at ``sample_rate``
    (None when the file has no audio or it was not requested); ``source_fps`` is the file's own rate."""

    frames: np.ndarray
    fps: float
    audio: Optional[np.ndarray]
    sample_rate: Optional[int]
    source_fps: float

    @property
    def duration(self) -> float:
        """Video duration in seconds (frames / fps)."""
        return len(self.frames) / float(self.fps)


# --------------------------------------------------------------------------- reading
def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError("PyAV is not installed; install it with `pip install av`") from None
    return av


def _open(path) -> "object":
    """av container for reading, with clear errors for missing, empty, corrupt files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoNotFoundError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise VideoError(f"{path} is a folder, not a video file")
    if os.path.getsize(path) == 0:
        raise CorruptVideoError(f"{path} is empty (0 bytes); copy or export the video again")
    av = _import_av()
    try:
        container = av.open(path, "r")
    except Exception as exc:
        raise CorruptVideoError(f"cannot read {path}: not a video file or damaged ({exc}); {REENCODE_HINT}") from None
    return container


def _video_stream(container, path):
    if not container.streams.video:
        container.close()
        raise NoVideoStreamError(f"{path} has no video stream (audio-only or data file); pass a video file")
    return container.streams.video[0]


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if 0 < value < 1000:
                return value
    return 25.0


def probe_video(path) -> VideoInfo:
    """Size, frame rate, frame count, duration and audio presence of a video file (no decoding)."""
    path = os.fspath(path)
    container = _open(path)
    try:
        vs = _video_stream(container, path)
        duration = None
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        fps = _stream_fps(vs)
        frames = int(vs.frames) if vs.frames else (int(round(duration * fps)) if duration else None)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(path, int(vs.codec_context.width), int(vs.codec_context.height), fps, frames, duration,
                         audio is not None, int(audio.rate) if audio is not None and audio.rate else None,
                         int(audio.codec_context.channels) if audio is not None else None)
    finally:
        container.close()


def _frame_time(frame, index: int, fps: float) -> float:
    t = frame.time
    return float(t) if t is not None else index / fps


def iter_frames(path, fps: Union[None, float, Fraction] = None) -> Iterator[np.ndarray]:
    """Decode RGB frames (uint8 [H, W, 3], read-only arrays) one at a time.

    With ``fps``, output frame k shows the source frame nearest to time k / fps after the first frame, and
    frames are produced up to the end of the last source frame (so 2 s at 25 fps gives 60 frames at 30 fps).
    Raises VideoError subclasses for missing, empty, corrupt files and files without video.
    """
    path = os.fspath(path)
    container = _open(path)
    try:
        vs = _video_stream(container, path)
        vs.thread_type = "AUTO"
        src_fps = _stream_fps(vs)
        out_fps = None if fps is None else as_fraction(fps)
        k = 0
        t0 = None
        prev_frame = prev_arr = None
        prev_t = 0.0
        count = 0

        def array_of(frame):
            arr = frame.to_ndarray(format="rgb24")
            arr.flags.writeable = False
            return arr

        try:
            for i, frame in enumerate(container.decode(vs)):
                count += 1
                t = _frame_time(frame, i, src_fps)
                if t0 is None:
                    t0 = t
                t -= t0
                if out_fps is None:
                    yield array_of(frame)
                    continue
                if prev_frame is not None:
                    mid = 0.5 * (prev_t + t)
                    while float(k / out_fps) < mid - 1e-9:
                        if prev_arr is None:
                            prev_arr = array_of(prev_frame)
                        yield prev_arr
                        k += 1
                prev_frame, prev_arr, prev_t = frame, None, t
        except VideoError:
            raise
        except Exception as exc:
            if count == 0:
                raise CorruptVideoError(f"cannot decode {path} ({exc}); {REENCODE_HINT}") from None
            raise CorruptVideoError(f"{path} is damaged: decoding failed after {count} frames ({exc}); "
                                    f"{REENCODE_HINT}") from None
        if count == 0:
            raise CorruptVideoError(f"{path} contains no decodable video frames; {REENCODE_HINT}")
        if out_fps is not None and prev_frame is not None:
            end = prev_t + 1.0 / src_fps
            while float(k / out_fps) < end - 1e-6 or k == 0:
                if prev_arr is None:
                    prev_arr = array_of(prev_frame)
                yield prev_arr
                k += 1
    finally:
        container.close()


def read_audio_track(path, align_to_video: bool = True) -> Tuple[np.ndarray, int]:
    """(audio float32 [C, T], sample_rate) of the first audio stream, at its own rate and channel count.

    The decoder's end padding is trimmed to the stream's declared duration. With ``align_to_video`` the
    audio starts at the first video frame's timestamp (zero-padded or trimmed at the start).
    Raises NoAudioStreamError when the file has no audio stream or it holds no samples.
    """
    path = os.fspath(path)
    av = _import_av()
    container = _open(path)
    try:
        if not container.streams.audio:
            raise NoAudioStreamError(
                f"{path} has no audio stream; the speech track is needed: use the recording with its sound, or add "
                "one with `ffmpeg -i video.mp4 -i speech.wav -c:v copy -c:a aac out.mp4`")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        first_time = None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray())
            for f in resampler.resample(None):
                chunks.append(f.to_ndarray())
        except Exception as exc:
            if not chunks:
                raise CorruptVideoError(f"cannot decode the audio of {path} ({exc}); {REENCODE_HINT}") from None
        if not chunks:
            raise NoAudioStreamError(f"the audio stream of {path} holds no samples; use a recording with sound")
        audio = np.concatenate(chunks, axis=1).astype(np.float32)
        if stream.duration is not None and stream.time_base is not None:
            declared = int(round(float(stream.duration * stream.time_base) * sr))
            if 0 < declared < audio.shape[1]:
                audio = audio[:, :declared]
        if align_to_video and container.streams.video:
            vs = container.streams.video[0]
            v0 = float(vs.start_time * vs.time_base) if vs.start_time is not None and vs.time_base else 0.0
            a0 = first_time if first_time is not None else (
                float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0)
            shift = int(round((a0 - v0) * sr))
            if shift > 0:
                audio = np.concatenate([np.zeros((audio.shape[0], shift), np.float32), audio], axis=1)
            elif shift < 0:
                audio = audio[:, -shift:]
        return np.ascontiguousarray(audio), sr
    finally:
        container.close()


def read_video(path, fps: Union[None, float, Fraction] = None, require_audio: bool = False,
               with_audio: bool = True) -> VideoData:
    """Decode a whole video: frames (resampled to ``fps`` by nearest frame time when given), and audio
    float32 [C, T] with its rate (None if absent; NoAudioStreamError instead when ``require_audio``).
    For long videos use `iter_frames` to stream frames."""
    path = os.fspath(path)
    info = probe_video(path)
    if require_audio and not info.has_audio:
        raise NoAudioStreamError(
            f"{path} has no audio stream; the speech track is needed: use the recording with its sound, or add one "
            "with `ffmpeg -i video.mp4 -i speech.wav -c:v copy -c:a aac out.mp4`")
    frames = np.stack(list(iter_frames(path, fps)))
    audio = sr = None
    if with_audio and info.has_audio:
        try:
            audio, sr = read_audio_track(path)
        except NoAudioStreamError:
            if require_audio:
                raise
    return VideoData(frames, float(as_fraction(fps)) if fps is not None else info.fps, audio, sr, info.fps)


# --------------------------------------------------------------------------- writing
def _frame_uint8(frame) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise VideoError(f"video frames must be RGB [H, W, 3], got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise VideoError("a video frame contains NaN or infinite values")
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise VideoError(f"video frames must be uint8 (0..255) or float (0..1), got {a.dtype}")


def _audio_array(audio) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    a = np.asarray(audio)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    else:
        raise VideoError(f"audio must be float (-1..1) or int16, got {a.dtype}")
    if a.ndim == 1:
        a = a[None]
    elif a.ndim == 2 and a.shape[0] > 8 and a.shape[1] <= 8:
        a = a.T            # [T, C] -> [C, T]
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise VideoError(f"audio must be mono [T] or [C, T] with 1 or 2 channels, got shape {np.shape(audio)}; "
                         "mix it down to stereo or mono first")
    if a.shape[1] == 0:
        raise VideoError("the audio is empty (0 samples); pass audio=None for a silent video")
    if not np.isfinite(a).all():
        raise VideoError("the audio contains NaN or infinite samples")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))


def _movie_timescale(fps: Fraction, sample_rate: Optional[int]) -> int:
    base = fps.numerator
    ts = base * (sample_rate or 1000) // math.gcd(base, sample_rate or 1000)
    while ts < 1000:
        ts *= 10
    return ts if ts < 2 ** 31 else (sample_rate or 1000)


def encoder_lookahead(width: int, height: int) -> int:
    """x264 rc-lookahead for frames of this size: the default (40) unless that many frames would exceed
    ENCODER_LOOKAHEAD_BYTES, then as many as fit (at least MIN_LOOKAHEAD)."""
    fit = ENCODER_LOOKAHEAD_BYTES // max(1, LOOKAHEAD_BYTES_PER_PIXEL * int(width) * int(height))
    return int(min(DEFAULT_LOOKAHEAD, max(MIN_LOOKAHEAD, fit)))


def write_mp4(path, frames: Union[np.ndarray, Iterable], fps: Union[float, Fraction], audio=None,
              sample_rate: int = 16000, crf: int = 18, preset: str = "medium") -> str:
    """Write frames (uint8 [N, H, W, 3] RGB, or an iterable of frames; float 0..1 accepted) as H.264 yuv420p
    and optional audio (float32 mono [T] or [C, T], C = 1 or 2) as AAC into an mp4, atomically.

    Odd widths/heights are padded to even by repeating the last column/row. The video track lasts exactly
    N / fps and the audio track exactly T / sample_rate (audio longer than the video is kept). Returns the
    path. Raises VideoError for bad input; nothing is left at ``path`` (or beside it) on failure.
    Frames are encoded as they arrive: with an iterable, memory holds one frame plus the encoder's buffers,
    whose lookahead is shortened for very large frames (`encoder_lookahead`).
    """
    av = _import_av()
    path = os.fspath(path)
    rate = as_fraction(fps).limit_denominator(1_000_000)
    if sample_rate not in AAC_SAMPLE_RATES and audio is not None:
        raise VideoError(f"AAC cannot store {sample_rate} Hz audio; resample to one of {AAC_SAMPLE_RATES}")
    audio_arr = None if audio is None else _audio_array(audio)
    try:
        with atomic_output(path) as tmp:
            options = {"movie_timescale": str(_movie_timescale(rate, sample_rate if audio_arr is not None else None))}
            with av.open(tmp, "w", format="mp4", options=options) as container:
                vs = None
                astream = None
                n = 0
                fed = 0      # audio samples fed so far
                width = height = None
                for frame in frames:
                    img = _frame_uint8(frame)
                    if vs is None:
                        height, width = img.shape[:2]
                        for codec in ("libx264", "h264"):
                            try:
                                vs = container.add_stream(codec, rate=rate)
                                break
                            except Exception:
                                vs = None
                        if vs is None:
                            raise VideoError("this PyAV build has no H.264 encoder (libx264); install the PyPI `av` wheel")
                        vs.width, vs.height = width + width % 2, height + height % 2
                        vs.pix_fmt = "yuv420p"
                        vs.codec_context.time_base = Fraction(rate.denominator, rate.numerator)
                        vs.options = {"crf": str(int(crf)), "preset": str(preset),
                                      "rc-lookahead": str(encoder_lookahead(vs.width, vs.height))}
                        if audio_arr is not None:
                            astream = container.add_stream("aac", rate=sample_rate)
                            astream.layout = "mono" if audio_arr.shape[0] == 1 else "stereo"
                            astream.bit_rate = 96000 if audio_arr.shape[0] == 1 else 160000
                    elif img.shape[:2] != (height, width):
                        raise VideoError(f"frame {n} is {img.shape[1]}x{img.shape[0]} but frame 0 is {width}x{height}; "
                                         "all frames must have the same size")
                    if width % 2 or height % 2:
                        img = np.pad(img, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    vf.pts = n
                    vf.time_base = vs.codec_context.time_base
                    for packet in vs.encode(vf):
                        container.mux(packet)
                    n += 1
                    if astream is not None:   # interleave: audio up to the end of this frame
                        end = min(audio_arr.shape[1], int(frame_sample_positions(n + 1, rate, sample_rate)[-1]))
                        fed = _feed_audio(av, container, astream, audio_arr, fed, end, sample_rate)
                if vs is None:
                    raise VideoError("no frames to write; a video needs at least one frame")
                for packet in vs.encode():
                    container.mux(packet)
                if astream is not None:
                    fed = _feed_audio(av, container, astream, audio_arr, fed, audio_arr.shape[1], sample_rate)
                    for packet in astream.encode():
                        container.mux(packet)
    except getattr(av, "FFmpegError", ()) as exc:   # encoder/muxer failures; others keep their type
        raise VideoError(f"cannot write {path}: {exc}") from exc
    return path


def _feed_audio(av, container, stream, audio: np.ndarray, start: int, end: int, sample_rate: int) -> int:
    """Encode audio samples [start, end) in chunks of at most 4096; returns the new position."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    pos = start
    while pos < end:
        stop = min(end, pos + 4096)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, pos:stop]), format="fltp", layout=layout)
        af.sample_rate = sample_rate
        af.pts = pos
        af.time_base = Fraction(1, sample_rate)
        for packet in stream.encode(af):
            container.mux(packet)
        pos = stop
    return pos
