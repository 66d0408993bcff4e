"""Silence and pauses: which frames are silent, what the model is given there, and the lead-in before a
silent start (core only; the CLI and node cases are in test_cli.py and test_nodes.py)."""
import numpy as np
import pytest
import torch

from emodiff_core import audio as am
from emodiff_core import pipeline as pl
from emodiff_core.config import DENOISER_PRESETS, EXPRESSION_PRESETS
from emodiff_core.models import ExpressionGenerator
from emodiff_core.sampling import SamplingSettings

SR = 16000


def _tone(seconds, level=0.3, f=220.0):
    t = np.arange(int(round(seconds * SR))) / SR
    return (level * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def _noise(seconds, dbfs, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(round(seconds * SR))) * 10 ** (dbfs / 20)).astype(np.float32)


def test_silent_frames_finds_pauses_and_ignores_short_gaps():
    wave = np.concatenate([_tone(1.0), np.zeros(SR // 2, np.float32), _tone(1.0)])     # 30 + 15 + 30 frames
    silent = am.silent_frames(wave, 30, SR)
    assert len(silent) == 75 and not silent[:30].any() and not silent[45:].any()
    assert silent[31:44].all()                          # the pause (a frame of margin for the tone's edges)
    gap = np.concatenate([_tone(1.0), np.zeros(SR // 10, np.float32), _tone(1.0)])   # 0.1 s: a gap between words
    assert not am.silent_frames(gap, 30, SR).any()
    assert am.silent_frames(np.zeros(SR, np.float32), 30, SR).all()
    # room tone at -65 dBFS is silence on its own and in the pauses of speech at normal level
    assert am.silent_frames(_noise(1.0, -65), 30, SR).all()
    roomy = np.concatenate([_tone(1.0), np.zeros(SR, np.float32), _tone(1.0)]) + _noise(3.0, -50)
    assert am.silent_frames(roomy, 30, SR)[32:58].all() and not am.silent_frames(roomy, 30, SR)[:30].any()
    # a quiet voice alone is not silence (it sets its own loudness reference)
    assert not am.silent_frames(_tone(1.0, level=0.003), 30, SR).any()


def test_hysteresis_keeps_a_level_near_the_threshold_from_flickering():
    # after silence, a level alternating 3 dB either side of the -60 dBFS floor never rises 6 dB above it
    chunks = [np.zeros(SR // 2, np.float32)]
    for k in range(10):
        chunks.append(_noise(1 / 30, -60 + (3 if k % 2 else -3), seed=k))
    wave = np.concatenate(chunks)
    assert am.silent_frames(wave, 30, SR).all()


def test_encode_audio_accepts_silence_and_gives_it_the_silence_features():
    cfg = DENOISER_PRESETS["tiny"].audio
    digital = pl.encode_audio(np.zeros(SR, np.float32), SR, 30, cfg)
    assert digital.num_frames == 30 and bool(digital.silent.all()) and digital.silent_seconds == pytest.approx(1.0)
    assert torch.allclose(digital.features, torch.full_like(digital.features, am.silence_feature_value()))
    # digital silence through the normal feature path is exactly that value (what the corpus padding gave)
    raw = am.frame_features(np.zeros(SR, np.float32), 30, cfg)
    assert np.allclose(raw, am.silence_feature_value())
    # room tone would be normalised up to speech level; its silent frames get the silence features instead
    room = pl.encode_audio(_noise(1.0, -65), SR, 30, cfg)
    assert torch.equal(room.features, digital.features)
    speech = pl.encode_audio(np.concatenate([_tone(1.0), np.zeros(SR, np.float32)]), SR, 30, cfg)
    assert not speech.silent[:30].any() and speech.silent[32:].all()
    assert not torch.allclose(speech.features[:30], digital.features[:30])
    assert speech.first(10).silent.shape == (10,)
    for bad, message in ((np.zeros(0, np.float32), "empty"), (np.zeros(100, np.float32), "shorter than one")):
        with pytest.raises(ValueError, match=message):
            pl.encode_audio(bad, SR, 30, cfg)


def test_lead_in_only_for_a_silent_start():
    cfg = DENOISER_PRESETS["tiny"].audio
    quiet_start = pl.encode_audio(np.concatenate([np.zeros(SR, np.float32), _tone(1.0)]), SR, 30, cfg)
    loud_start = pl.encode_audio(np.concatenate([_tone(1.0), np.zeros(SR, np.float32)]), SR, 30, cfg)
    assert pl.silent_start_lead_in(quiet_start) == 30 and pl.silent_start_lead_in(loud_start) == 0
    assert pl.silent_start_lead_in(pl.encode_audio(np.zeros(SR, np.float32), SR, 25, cfg)) == 25


def test_lead_in_frames_are_generated_then_dropped(perturbed_tiny_denoiser):
    den = perturbed_tiny_denoiser()
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"]).eval()
    audio = pl.encode_audio(np.zeros(SR // 5, np.float32), SR, 30, den.config.audio)       # 6 frames
    psi = pl.emotion_expressions(gen, audio.num_frames, pl.EmotionSpec("happy"))
    identity = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    motions = []
    original = den.unet.forward

    def spy(x_t, t, identity, motion, *rest):
        motions.append(motion.clone())
        return original(x_t, t, identity, motion, *rest)

    den.unet.forward = spy
    settings = SamplingSettings(steps=2, start_noise=1.0)
    events = []
    led = pl.generate_frames(den, identity, audio, psi, settings=settings, seed=0, lead_in=4, callback=events.append)
    plain = pl.generate_frames(den, identity, audio, psi, settings=settings, seed=0)
    assert led.shape == plain.shape == (6, 1, 3, 32, 32) and not torch.allclose(led, plain)
    finished = [e for e in events if e.image is not None]
    assert [e.frame for e in finished] == list(range(6))
    steps = [e for e in events if e.image is None]               # one per frame here (the last step finishes it)
    assert len(steps) == 4 + 6 and all(e.frame == 0 for e in events[:4])
    # frame 0 of the led-in video is conditioned on the last lead-in frames, not on copies of the portrait
    ident = identity * 2 - 1
    first_kept = motions[4 * 2]
    assert not torch.allclose(first_kept[0, 1], ident, atol=1e-3)
    assert torch.allclose(motions[0][0, 1], ident)


def test_hold_frames_skip_the_settling_of_a_pause():
    cfg = DENOISER_PRESETS["tiny"].audio
    wave = np.concatenate([_tone(1.0), np.zeros(SR, np.float32), _tone(0.5)])          # 30 + 30 + 15 frames
    audio = pl.encode_audio(wave, SR, 30, cfg)
    hold = pl.silent_hold_frames(audio).numpy()
    silent = audio.silent.numpy()
    first = int(np.flatnonzero(silent)[0])
    settle = int(round(pl.PAUSE_SETTLE_SECONDS * 30))
    assert not hold[:first + settle].any() and hold[first + settle:np.flatnonzero(silent)[-1] + 1].all()
    assert not hold[silent.nonzero()[0][-1] + 1:].any()
    start_silent = pl.encode_audio(np.concatenate([np.zeros(SR, np.float32), _tone(1.0)]), SR, 30, cfg)
    assert pl.silent_hold_frames(start_silent)[:30].all()          # a silent start is held from frame 0
    options = pl.silence_handling(start_silent)
    assert options["lead_in"] == 30 and torch.equal(options["hold"], pl.silent_hold_frames(start_silent))


def test_held_frames_change_only_with_their_conditions(perturbed_tiny_denoiser):
    den = perturbed_tiny_denoiser()
    audio = pl.encode_audio(np.zeros(SR // 3, np.float32), SR, 30, den.config.audio)      # 10 silent frames
    still = torch.zeros(audio.num_frames, den.config.expression_dim)
    identity = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings(steps=4)
    held = pl.generate_frames(den, identity, audio, still, settings=settings, seed=0, **pl.silence_handling(audio))
    free = pl.generate_frames(den, identity, audio, still, settings=settings, seed=0)
    # same rest state, same noise, same (silent) audio and expression: every held frame is the same picture
    assert all(torch.equal(held[k], held[0]) for k in range(1, len(held)))
    assert not all(torch.allclose(free[k], free[0], atol=1e-3) for k in range(1, len(free)))
    # a different expression on one frame changes that frame (the condition still acts)
    bump = still.clone()
    bump[5:] = 3.0
    changed = pl.generate_frames(den, identity, audio, bump, settings=settings, seed=0, **pl.silence_handling(audio))
    assert torch.equal(changed[0], held[0]) and not torch.allclose(changed[8], held[8], atol=1e-4)
    with pytest.raises(pl.PipelineError, match="one entry per video frame"):
        pl.generate_frames(den, identity, audio, still, settings=settings, hold=torch.ones(3, dtype=torch.bool))
