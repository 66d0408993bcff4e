"""Audio framing, features and the shared window helper."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from emodiff_core import audio
from emodiff_core.config import AudioFeatureConfig
from emodiff_core.windows import (gather_windows, motion_centre, motion_offsets, motion_source,
                                      smooth_sequence, window_indices, window_offsets)


def test_frame_positions_stay_exact_over_ten_minutes_at_30fps():
    sr, fps = 16000, 30
    n = 10 * 60 * fps + 1
    pos = audio.frame_sample_positions(n, fps, sr)
    exact = np.array([int((Fraction(i * sr, fps) + Fraction(1, 2)).__floor__()) for i in range(n)])
    assert np.array_equal(pos, exact)
    assert pos[-1] == 9_600_000                      # frame 18000 starts exactly at 600 s
    drift = np.abs(pos - np.arange(n) * sr / fps)
    assert drift.max() <= 0.5
    naive = np.arange(n) * (sr // fps)               # 533 samples a frame
    assert pos[-1] - naive[-1] == 6000               # what integer framing would lose: 375 ms
    # NTSC and decimal rates are exact too
    ntsc = audio.frame_sample_positions(30001, Fraction(30000, 1001), sr)
    assert ntsc[30000] == 16016000                   # 30000 frames = 1001 s
    assert audio.frame_sample_positions(2998, 29.97, sr)[2997] == 1_600_000
    assert audio.num_video_frames(55015, 30, sr) == 103
    assert audio.samples_for_frames(103, 30, sr) == 54933


def test_frame_features_shape_and_alignment():
    cfg = AudioFeatureConfig(n_mels=20, context=6)
    sr = cfg.sample_rate
    t = np.arange(2 * sr) / sr
    # a 1 kHz tone only in the second half: the features of early frames are quiet, late frames loud
    wave = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
    feats = audio.frame_features(wave, 25, cfg)
    assert feats.shape == (50, 20, 6) and feats.dtype == np.float32
    energy = feats.mean(axis=(1, 2))
    assert energy[:20].max() < energy[30:].min()
    onset = int(np.argmax(np.diff(energy))) + 1
    assert onset in (24, 25)                         # the step sits at frame 25 (1.0 s at 25 fps)
    with pytest.raises(audio.AudioError, match="shorter than one video frame"):
        audio.frame_features(wave[:100], 25, cfg)


def test_prepare_waveform_downmixes_and_resamples():
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t) * 0.5]).astype(np.float32)
    mono = audio.prepare_waveform(stereo, sr, 16000)
    assert mono.shape == (16000,) and abs(np.abs(mono).max() - 0.75) < 0.02
    for bad, message in ((np.zeros((2, 0)), "empty"), (np.full(100, np.nan), "NaN")):
        with pytest.raises(audio.AudioError, match=message):
            audio.prepare_waveform(bad, sr)
    assert audio.is_silent(np.zeros(1000)) and not audio.is_silent(mono)


def test_window_helper_replicates_at_both_ends():
    seq = torch.arange(5).float()[:, None] * 10         # [5, 1]
    win = gather_windows(seq, torch.arange(5), window_offsets(2))
    assert win.shape == (5, 5, 1)
    assert win[0, :, 0].tolist() == [0, 0, 0, 10, 20]
    assert win[4, :, 0].tolist() == [20, 30, 40, 40, 40]
    assert win[2, :, 0].tolist() == [0, 10, 20, 30, 40]
    assert window_indices([0], window_offsets(3), 1).tolist() == [[0] * 7]


def test_motion_frames_start_from_the_identity():
    frames = torch.arange(1, 6).float()[:, None]         # frames 1..5
    identity = torch.tensor([-1.0])
    src = motion_source(frames, identity, 2)
    motion = gather_windows(src, motion_centre(torch.arange(5), 2), motion_offsets(2))[..., 0]
    assert motion.tolist() == [[-1, -1], [-1, 1], [1, 2], [2, 3], [3, 4]]


def test_smoothing_is_a_replicate_padded_moving_average():
    seq = torch.tensor([[0.0], [0.0], [3.0], [0.0], [0.0]])
    assert smooth_sequence(seq, 1) is seq
    out = smooth_sequence(seq, 3)[:, 0].tolist()
    assert out == pytest.approx([0, 1, 1, 1, 0])
    with pytest.raises(ValueError):
        smooth_sequence(seq, 4)


def test_mouth_drive_follows_the_voice_one_value_per_frame_at_any_length():
    """audio.mouth_drive (the corpora's and the warp ablations' mouth from a voice): the jaw opens with the
    loudness, the lips press in pauses, and every output has one value per video frame, even under 3 frames
    (the lip press is a centred 3-frame mean)."""
    from emodiff_core.audio import mouth_drive

    rate, fps = 16000, 30.0
    frames = 30
    wave = np.zeros(int(rate * frames / fps), np.float32)
    loud = slice(int(rate * 0.5), int(rate * 0.8))                     # speech in frames 15-23, silence around
    wave[loud] = 0.4 * np.sin(np.arange(loud.stop - loud.start) * 2 * np.pi * 220 / rate)
    drive = mouth_drive(wave, fps, frames, rate)
    assert all(len(v) == frames for v in drive.values())
    assert drive["jaw_open"][18] > 0.5 and drive["jaw_open"][5] < 0.05
    assert drive["lip_press"][5] == pytest.approx(0.3) and drive["lip_press"][18] == 0.0
    for n in (1, 2, 3):
        short = mouth_drive(wave[: int(rate * n / fps)], fps, n, rate)
        assert all(len(v) == n for v in short.values()), n
