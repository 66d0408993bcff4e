"""emodiff_core.video: mp4 writing (H.264 + AAC, atomic, exact durations) and reading."""
import os

import numpy as np
import pytest

av = pytest.importorskip("av")

from emodiff_core.video import (CorruptVideoError, NoAudioStreamError, NoVideoStreamError, VideoError,
                                    VideoNotFoundError, iter_frames, probe_video, read_video, write_mp4)

SR = 16000


def _frames(n, h, w):
    """Frames whose grey level encodes the frame index (robust to chroma subsampling and compression)."""
    x = np.linspace(0, 60, w)[None, :, None]
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = np.clip(20 + 8 * i + x, 0, 255).astype(np.uint8)
    return out


def _tone(seconds=1.0, freq=440.0):
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _durations(path):
    with av.open(path) as c:
        v, a = c.streams.video[0], (c.streams.audio[0] if c.streams.audio else None)
        info = {"video": float(v.duration * v.time_base), "w": v.codec_context.width, "h": v.codec_context.height,
                "vcodec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt}
        if a is not None:
            info.update(audio=float(a.duration * a.time_base), acodec=a.codec_context.name, rate=a.rate)
        return info


@pytest.mark.parametrize("fps", [30, 25])
def test_round_trip_frames_and_tone(tmp_path, fps):
    frames = _frames(12, 48, 64)
    tone = _tone(1.0)
    path = str(tmp_path / f"clip{fps}.mp4")
    assert write_mp4(path, frames, fps, tone, SR) == path
    d = _durations(path)
    assert d["vcodec"] == "h264" and d["pix_fmt"] == "yuv420p" and d["acodec"] == "aac" and d["rate"] == SR
    assert d["video"] == pytest.approx(12 / fps, abs=1e-6)
    assert d["audio"] == pytest.approx(1.0, abs=1e-6)
    data = read_video(path, require_audio=True)
    assert data.frames.shape == (12, 48, 64, 3) and data.fps == pytest.approx(fps)
    assert np.abs(data.frames.astype(int) - frames).mean() < 3
    assert data.sample_rate == SR and data.audio.shape == (1, SR)
    corr = np.corrcoef(data.audio[0, 2000:-2000], tone[2000:-2000])[0, 1]
    assert corr > 0.99
    # no temporary files left beside the output
    assert os.listdir(tmp_path) == [f"clip{fps}.mp4"]


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = _frames(5, 33, 47)
    path = str(tmp_path / "odd.mp4")
    write_mp4(path, frames, 30, None)
    d = _durations(path)
    assert (d["w"], d["h"]) == (48, 34) and "audio" not in d
    data = read_video(path)
    assert data.frames.shape == (5, 34, 48, 3) and data.audio is None
    assert np.abs(data.frames[:, :33, :47].astype(int) - frames).mean() < 3
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        read_video(path, require_audio=True)


def test_stereo_audio_and_audio_longer_than_video(tmp_path):
    stereo = np.stack([_tone(0.7, 300), _tone(0.7, 500)])
    path = str(tmp_path / "stereo.mp4")
    write_mp4(path, _frames(6, 32, 32), 30, stereo, SR)
    d = _durations(path)
    assert d["video"] == pytest.approx(0.2, abs=1e-6) and d["audio"] == pytest.approx(0.7, abs=1e-6)
    data = read_video(path)
    assert data.audio.shape == (2, int(0.7 * SR))


def test_fps_resampling_picks_the_nearest_frame(tmp_path):
    frames = _frames(10, 32, 32)      # 10 frames at 25 fps = 0.4 s
    path = str(tmp_path / "r25.mp4")
    write_mp4(path, frames, 25, _tone(0.4), SR)
    data = read_video(path, fps=30)
    assert len(data.frames) == 12                # 0.4 s at 30 fps
    level = data.frames[:, :, 0, 0].mean(axis=1)
    index = np.round((level - 20) / 8).astype(int)
    expected = [int(round(k / 30 * 25 + 1e-9)) for k in range(12)]   # nearest source frame time
    expected = [min(e, 9) for e in expected]
    assert list(index) == expected
    assert len(list(iter_frames(path, fps=50))) == 20
    info = probe_video(path)
    assert info.fps == pytest.approx(25) and info.frames == 10 and info.has_audio


def test_errors_are_clear(tmp_path):
    with pytest.raises(VideoNotFoundError, match="not found"):
        read_video(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(CorruptVideoError, match="empty"):
        read_video(str(empty))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptVideoError, match="not a video file or damaged"):
        read_video(str(junk))
    sf = pytest.importorskip("soundfile")
    wav = str(tmp_path / "speech.wav")
    sf.write(wav, _tone(0.2), SR)
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        read_video(wav)


def test_failed_write_leaves_nothing_behind(tmp_path):
    frames = [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]
    path = str(tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match="same size"):
        write_mp4(path, frames, 30, _tone(0.1), SR)
    assert os.listdir(tmp_path) == []
    with pytest.raises(VideoError, match="no frames"):
        write_mp4(path, [], 30)
    with pytest.raises(VideoError, match="1 or 2 channels"):
        write_mp4(path, _frames(2, 16, 16), 30, np.zeros((3, 100), np.float32))
    assert os.listdir(tmp_path) == []
    # an existing file is only replaced by a complete new one
    write_mp4(path, _frames(3, 16, 16), 30)
    with pytest.raises(VideoError):
        write_mp4(path, frames, 30)
    assert len(read_video(path).frames) == 3


def test_encoder_lookahead_is_shortened_for_huge_frames():
    from emodiff_core.video import DEFAULT_LOOKAHEAD, MIN_LOOKAHEAD, encoder_lookahead

    assert encoder_lookahead(1920, 1080) == DEFAULT_LOOKAHEAD        # ordinary video: x264's own default
    assert encoder_lookahead(6000, 4000) == 11                       # 24 MP: ~768 MB of lookahead frames
    assert encoder_lookahead(20000, 20000) == MIN_LOOKAHEAD
