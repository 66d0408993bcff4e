"""The inference pipeline on a tiny random model: audio framing, Eq. 14 sequences, autoregressive sampling."""
import numpy as np
import pytest
import torch

from emodiff_core import pipeline as pl
from emodiff_core.config import DENOISER_PRESETS, EXPRESSION_PRESETS
from emodiff_core.emotions import EMOTIONS, EmotionError
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
from emodiff_core.sampling import SamplingSettings


def _tiny_models(seed=0):
    torch.manual_seed(seed)
    den = EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"]).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"]).eval()
    return den, gen


def _speech(seconds=0.5, sr=22050):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_encode_audio_counts_frames_and_trims():
    cfg = DENOISER_PRESETS["tiny"].audio
    stereo = np.stack([_speech(1.0, 44100), _speech(1.0, 44100)])
    a = pl.encode_audio(stereo, 44100, 30, cfg)
    assert a.num_frames == 30 and a.features.shape == (30, cfg.n_mels, cfg.context)
    assert len(a.waveform) == 16000 and a.seconds == pytest.approx(1.0)
    short = pl.encode_audio(_speech(0.1), 22050, 25, cfg)
    assert short.num_frames == 2
    with pytest.raises(pl.PipelineError, match="shorter than one"):      # silence is valid: see test_silence.py
        pl.encode_audio(np.zeros(100, np.float32), 22050, 30, cfg)
    with pytest.raises(pl.PipelineError, match="minutes"):
        pl.encode_audio(_speech(2.0), 22050, 30, cfg, max_seconds=1.0)


def test_emotion_expressions_follow_eq14():
    _, gen = _tiny_models()
    e_n = pl.emotion_expressions(gen, 20, pl.EmotionSpec("neutral"), seed=3)
    e_y = pl.emotion_expressions(gen, 20, pl.EmotionSpec("happy", 1.0), seed=3)
    half = pl.emotion_expressions(gen, 20, pl.EmotionSpec("happy", 0.5), seed=3)
    assert e_n.shape == (20, 50)
    assert torch.allclose(half, (e_n + e_y) / 2, atol=1e-5)
    zero = pl.emotion_expressions(gen, 20, pl.EmotionSpec("sad", 0.0), seed=3)
    assert torch.allclose(zero, e_n, atol=1e-6)
    blend = pl.emotion_expressions(gen, 20, pl.EmotionSpec(blend={"happy": 0.5, "sad": 0.5}), seed=3)
    e_s = pl.emotion_expressions(gen, 20, pl.EmotionSpec("sad", 1.0), seed=3)
    assert torch.allclose(blend, e_n + 0.5 * (e_y - e_n) + 0.5 * (e_s - e_n), atol=1e-5)
    timeline = pl.emotion_expressions(gen, 60, pl.EmotionSpec(keyframes="0:neutral:0, 1:happy:1"), fps=30, seed=3)
    e_y60 = pl.emotion_expressions(gen, 60, pl.EmotionSpec("happy", 1.0), seed=3)
    e_n60 = pl.emotion_expressions(gen, 60, pl.EmotionSpec("neutral"), seed=3)
    assert torch.allclose(timeline[0], e_n60[0], atol=1e-5) and torch.allclose(timeline[45], e_y60[45], atol=1e-5)
    for spec in (pl.EmotionSpec("joy"), pl.EmotionSpec("happy", 2.5), pl.EmotionSpec("happy", -0.1)):
        with pytest.raises(EmotionError):
            pl.emotion_expressions(gen, 5, spec)


def _denoiser_with_statistics(level: torch.Tensor) -> EMOdiffheadDenoiser:
    """The tiny denoiser storing training statistics: mean psi ``level`` (the level the mouth is held at), scale 1."""
    import dataclasses

    return EMOdiffheadDenoiser(dataclasses.replace(DENOISER_PRESETS["tiny"], expression_mean=tuple(level.tolist()),
                                                   expression_scale=(1.0,) * 50))


def test_voice_mouth_holds_the_generated_mouth_and_keeps_each_emotions_own():
    """mouth 'voice' (`hold_voice_mouth`): e_n's speech-mouth components are the level in every frame; an emotion
    adds its time-mean mouth offset, scaled by its weight frame by frame; every other component is Eq. 14's."""
    _, gen = _tiny_models()
    mouth = list(pl.SPEECH_MOUTH_COMPONENTS)
    others = [c for c in range(50) if c not in mouth]
    level = torch.linspace(-0.5, 0.5, 50)
    voice = pl.Mouth(tuple(level.tolist()))
    e_y, e_n = pl.emotion_expression_pair(gen, 60, pl.EmotionSpec("happy", 1.0), seed=3)
    assert e_n[:, mouth].std(dim=0).min() > 0           # the generator's own mouth moves (what is held)
    held_y, held_n = pl.emotion_expression_pair(gen, 60, pl.EmotionSpec("happy", 1.0), seed=3, mouth=voice)
    assert torch.equal(held_n[:, mouth], level[mouth].expand(60, -1))
    assert torch.equal(held_n[:, others], e_n[:, others]) and torch.allclose(held_y[:, others], e_y[:, others])
    offset = (e_y - e_n)[:, mouth].mean(dim=0)
    assert torch.allclose(held_y[:, mouth], (level[mouth] + offset).expand(60, -1), atol=1e-6)
    half, _ = pl.emotion_expression_pair(gen, 60, pl.EmotionSpec("happy", 0.5), seed=3, mouth=voice)
    assert torch.allclose(half[:, mouth], (level[mouth] + 0.5 * offset).expand(60, -1), atol=1e-6)
    # a timeline: neutral at 0 s to happy at 1 s, the emotion's mouth offset follows the weight
    spec = pl.EmotionSpec(keyframes="0:neutral:0, 1:happy:1")
    timeline, _ = pl.emotion_expression_pair(gen, 60, spec, fps=30, seed=3, mouth=voice)
    happy = EMOTIONS.index("happy")
    w = spec.weights(60, 30)[:, happy:happy + 1].float()
    assert w[0] == 0 and w[45] == 1
    assert torch.allclose(timeline[:, mouth], level[mouth] + w * offset, atol=1e-6)
    neutral, neutral_n = pl.emotion_expression_pair(gen, 60, pl.EmotionSpec("neutral"), seed=3, mouth=voice)
    assert torch.equal(neutral, neutral_n) and torch.allclose(neutral, held_n, atol=1e-6)
    with pytest.raises(pl.PipelineError, match="49 values"):
        pl.emotion_expression_pair(gen, 60, pl.EmotionSpec("happy"), seed=3, mouth=pl.Mouth(voice.level[:49]))
    # which level a denoiser gives: its training mean; none for one trained on raw psi
    raw = EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"])
    stats = _denoiser_with_statistics(level)
    assert pl.voice_mouth_level(raw) is None
    assert pl.resolve_mouth("voice", stats) == voice and voice.name == "voice"
    # auto is the bundle's recommendation (`recommended_mouth`), the generator's mouth without one
    assert pl.resolve_mouth("auto", stats) == pl.GENERATOR_MOUTH == pl.resolve_mouth("generator", stats)
    assert pl.resolve_mouth("auto", stats, "voice") == voice
    assert pl.resolve_mouth("generator", stats, "voice") == pl.GENERATOR_MOUTH
    assert pl.GENERATOR_MOUTH.name == "generator" and pl.GENERATOR_MOUTH.level is None
    with pytest.raises(pl.PipelineError, match="training statistics.*'generator'"):
        pl.resolve_mouth("voice", raw, name="demo.safetensors")
    with pytest.raises(pl.PipelineError, match="one of auto, voice, generator, speech"):
        pl.resolve_mouth("lips", stats)


def test_speech_mouth_adds_the_recordings_mouth_motion_to_the_held_mouth():
    """mouth 'speech': psi and e_n are the 'voice' ones plus `speech_mouth_motion` of the recording (so Eq. 14's
    directions are unchanged); the motion is the corpus' drive (`audio.mouth_drive`) of the speech components less
    its time mean, zero elsewhere; the jaw opens with the voice's loudness."""
    from emodiff_core.audio import mouth_drive
    from emodiff_core.facemodel import COMPONENT, SPEECH_COMPONENTS

    _, gen = _tiny_models()
    stats = _denoiser_with_statistics(torch.linspace(-0.5, 0.5, 50))
    rate, seconds = 16000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    loudness = np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None)          # three syllables a second, pauses between
    audio = pl.encode_audio(0.3 * loudness * np.sin(2 * np.pi * 220 * t), rate, 30, stats.config.audio)
    n = audio.num_frames
    speech, voice = pl.resolve_mouth("speech", stats), pl.resolve_mouth("voice", stats)
    assert speech.name == "speech" and speech.follows_speech and speech.level == voice.level

    motion = pl.speech_mouth_motion(audio)
    assert motion.shape == (n, 50)
    driven = [COMPONENT[name] for name in SPEECH_COMPONENTS]
    assert torch.count_nonzero(motion[:, [c for c in range(50) if c not in driven]]) == 0
    assert motion[:, driven].mean(dim=0).abs().max() < 1e-6
    drive = mouth_drive(audio.waveform, audio.fps, n, audio.config.sample_rate)
    jaw = motion[:, COMPONENT["jaw_open"]].numpy()
    assert np.allclose(jaw, drive["jaw_open"] - drive["jaw_open"].mean(), atol=1e-6)
    assert np.corrcoef(jaw, drive["envelope"])[0, 1] > 0.9 and jaw.std() > 0.1

    for spec in (pl.EmotionSpec("surprised", 0.7), pl.EmotionSpec("neutral"),
                 pl.EmotionSpec(keyframes="0:neutral:0, 1:happy:1")):
        held_y, held_n = pl.emotion_expression_pair(gen, n, spec, seed=3, mouth=voice)
        moved_y, moved_n = pl.emotion_expression_pair(gen, n, spec, seed=3, mouth=speech, audio=audio)
        assert torch.allclose(moved_n, held_n + motion, atol=1e-6) and torch.allclose(moved_y, held_y + motion, atol=1e-6)
        assert torch.allclose(moved_y - moved_n, held_y - held_n, atol=1e-6)
    # the other mouths ignore the audio
    assert torch.equal(pl.emotion_expression_pair(gen, n, pl.EmotionSpec("sad"), seed=3, mouth=voice, audio=audio)[0],
                       pl.emotion_expression_pair(gen, n, pl.EmotionSpec("sad"), seed=3, mouth=voice)[0])

    with pytest.raises(pl.PipelineError, match="give the audio features"):
        pl.emotion_expression_pair(gen, n, pl.EmotionSpec("sad"), mouth=speech)
    with pytest.raises(pl.PipelineError, match=f"the audio has {n} frames"):
        pl.emotion_expression_pair(gen, n - 1, pl.EmotionSpec("sad"), mouth=speech, audio=audio)
    with pytest.raises(pl.PipelineError, match="held level"):
        pl.Mouth(None, follows_speech=True)
    with pytest.raises(pl.PipelineError, match="mouth 'speech' needs a denoiser that stores its training statistics"):
        pl.resolve_mouth("speech", EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"]))


def test_generate_frames_is_seeded_autoregressive_and_cancellable():
    den, gen = _tiny_models()
    cfg = den.config
    audio = pl.encode_audio(_speech(0.1), 22050, 30, cfg.audio)
    n = audio.num_frames
    psi = pl.emotion_expressions(gen, n, pl.EmotionSpec("angry", 0.7))
    identity = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    events = []   # from pure noise (start_noise 1): all three DDIM steps run for every frame
    a = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), seed=5, callback=events.append)
    b = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), seed=5)
    c = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), seed=6)
    assert a.shape == (n, 1, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(events) == n * 3 and sum(e.image is not None for e in events) == n
    assert [(e.frame, e.step) for e in events[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    # the paper-literal variant (ReferenceNet recomputed at every step) gives the same frames
    literal = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), seed=5, cache_reference=False)
    assert torch.allclose(literal, a, atol=1e-5)
    # a batch of identities renders independent videos
    two = pl.generate_frames(den, torch.stack([identity, identity.flip(2)]), audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), seed=5)
    assert two.shape == (n, 2, 3, 32, 32)

    def cancel(event):
        if event.frame == 1 and event.step == 1:
            raise pl.Cancelled()

    with pytest.raises(pl.Cancelled):
        pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, start_noise=1.0), callback=cancel)


def _record_motion(den):
    """The motion frames of every denoiser call, in order (one call per sampling step)."""
    seen = []
    original = den.unet.forward

    def spy(x_t, t, identity, motion, audio_emb, expression, reference):
        seen.append(motion.clone())
        return original(x_t, t, identity, motion, audio_emb, expression, reference)

    den.unet.forward = spy
    return seen


def _motion_run(seconds):
    """A tiny model whose motion inputs are recorded, audio of ``seconds``, its expressions and an identity crop."""
    den, gen = _tiny_models()
    seen = _record_motion(den)
    audio = pl.encode_audio(_speech(seconds), 22050, 30, den.config.audio)
    psi = pl.emotion_expressions(gen, audio.num_frames, pl.EmotionSpec())
    return den, seen, audio, psi, torch.rand(3, 32, 32)


def test_motion_frames_come_from_identity_then_from_generated_frames():
    den, seen, audio, psi, identity = _motion_run(0.15)
    frames = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=2), seed=0)
    ident = identity * 2 - 1
    steps = 2
    first, second, third = seen[0], seen[steps], seen[2 * steps]
    assert torch.allclose(first[0, 0], ident) and torch.allclose(first[0, 1], ident)
    assert torch.allclose(second[0, 0], ident) and torch.allclose(second[0, 1], frames[0, 0] * 2 - 1, atol=1e-5)
    assert torch.allclose(third[0, 0], frames[0, 0] * 2 - 1, atol=1e-5)
    assert torch.allclose(third[0, 1], frames[1, 0] * 2 - 1, atol=1e-5)


def test_reinjection_makes_the_identity_the_oldest_motion_frame_every_nth_frame():
    den, seen, audio, psi, identity = _motion_run(0.25)
    steps = 2
    frames = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=steps), seed=0,
                                reinject_identity_every=2)
    assert len(frames) >= 6
    ident = identity * 2 - 1
    for j in range(2, len(frames)):
        oldest, newest = seen[j * steps][0, 0], seen[j * steps][0, 1]
        assert torch.allclose(newest, frames[j - 1, 0] * 2 - 1, atol=1e-5)      # the newest is never replaced
        want = ident if j % 2 == 0 else frames[j - 2, 0] * 2 - 1
        assert torch.allclose(oldest, want, atol=1e-5), j
    plain = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=steps), seed=0)
    assert torch.equal(plain[:2], frames[:2]) and not torch.allclose(plain[2:], frames[2:])


def test_reinject_source_stands_in_for_the_identity_in_the_motion_slots():
    den, seen, audio, psi, identity = _motion_run(0.25)
    asked = []

    def source(index):         # a different flat frame per video frame, so the slot says which was used
        asked.append(index)
        return torch.full((3, 32, 32), index / 100.0)

    steps = 2
    frames = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=steps), seed=0,
                                reinject_identity_every=1, reinject_source=source)
    n = len(frames)
    first = seen[0]
    assert torch.allclose(first[0, 0], torch.full((3, 32, 32), -1.0))     # before the video: frame 0's, in [-1, 1]
    assert torch.allclose(first[0, 1], torch.full((3, 32, 32), -1.0))
    for j in range(2, n):
        oldest, newest = seen[j * steps][0, 0], seen[j * steps][0, 1]
        assert torch.allclose(oldest, torch.full((3, 32, 32), (j - 2) / 50.0 - 1.0), atol=1e-6), j
        assert torch.allclose(newest, frames[j - 1, 0] * 2 - 1, atol=1e-5)      # the newest is never replaced
    assert max(asked) == n - 3 and min(asked) == 0
    with pytest.raises(pl.PipelineError, match=r"reinject_source\(0\) must give"):
        pl.generate_frames(den, identity, audio.first(3), psi[:3], settings=SamplingSettings(steps=1), seed=0,
                           reinject_identity_every=1, reinject_source=lambda i: torch.zeros(3, 16, 16))


def _start_noise_run(seconds):
    """A tiny model, audio of ``seconds``, its expressions and a seeded random identity crop."""
    den, gen = _tiny_models()
    audio = pl.encode_audio(_speech(seconds), 22050, 30, den.config.audio)
    psi = pl.emotion_expressions(gen, audio.num_frames, pl.EmotionSpec())
    return den, audio, psi, torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_anchor_source_is_what_each_frame_starts_from():
    den, audio, psi, identity = _start_noise_run(0.15)
    calls = []

    def grey(index, previous):     # what generate_frames offers: the frame index and the default anchor in [0, 1]
        calls.append((index, previous.clone()))
        return torch.full((3, 32, 32), 0.8)

    near = SamplingSettings(steps=10, start_noise=0.05)       # with almost no noise a frame stays by its anchor
    frames = pl.generate_frames(den, identity, audio, psi, settings=near, seed=1, anchor_source=grey)
    assert float((frames - 0.8).abs().mean()) < 0.05
    assert [index for index, _ in calls] == list(range(len(frames)))
    assert calls[0][1].shape == (1, 3, 32, 32) and torch.allclose(calls[0][1][0], identity, atol=1e-6)
    for index, previous in calls[1:]:                                   # then the previous frame
        assert torch.allclose(previous[0], frames[index - 1, 0], atol=1e-5)
    plain = pl.generate_frames(den, identity, audio, psi, settings=near, seed=1)
    assert float((plain[0, 0] - identity).abs().mean()) < 0.05          # the default anchor: the identity, then
    kept = pl.generate_frames(den, identity, audio, psi, settings=near, seed=1,
                              anchor_source=lambda index, previous: previous)       # the previous frame offered back
    assert torch.allclose(kept, plain, atol=1e-4)
    with pytest.raises(pl.PipelineError, match=r"anchor_source\(0\) must give"):
        pl.generate_frames(den, identity, audio, psi, settings=near, seed=1,
                           anchor_source=lambda index, previous: torch.zeros(3, 16, 16))


def test_resolve_reinject_takes_the_given_period_or_the_checkpoints():
    assert pl.resolve_reinject(None, 2) == 2 and pl.resolve_reinject(None, 0) == 0    # unset: the recommendation
    assert pl.resolve_reinject(0, 2) == 0 and pl.resolve_reinject(5, 2) == 5          # given (0 = off) wins
    pl.check_reinject(None)
    with pytest.raises(pl.PipelineError, match=r"--every must be >= 0 \(0 = off; leave it unset.*got -1"):
        pl.resolve_reinject(-1, 2, "--every")
    with pytest.raises(pl.PipelineError, match="reinject_identity_every must be >= 0"):
        pl.check_reinject(-3)


def test_resolve_guidance_takes_the_given_scale_or_the_checkpoints():
    assert pl.resolve_guidance(None, 2.0) == 2.0 and pl.resolve_guidance(None, 1.0) == 1.0   # unset: the recommendation
    assert pl.resolve_guidance(1, 2.0) == 1.0 and pl.resolve_guidance(3.5, 2.0) == 3.5      # given (1 = off) wins
    assert pl.resolve_guidance(0, 2.0) == 0.0                                               # 0: the null condition only
    with pytest.raises(pl.PipelineError, match=r"--guidance must be >= 0 \(1 = off; unset.*got -0.5"):
        pl.resolve_guidance(-0.5, 2.0, "--guidance")


def test_super_resolve_lanczos_and_model():
    frames = torch.rand(3, 3, 16, 16)
    up = pl.super_resolve(frames, None, scale=2)
    assert up.shape == (3, 3, 32, 32)

    class Nearest(torch.nn.Module):
        scale = 4

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    assert pl.super_resolve(frames, Nearest()).shape == (3, 3, 64, 64)


def test_start_noise_starts_from_the_previous_frame_and_skips_high_noise_steps():
    den, audio, psi, identity = _start_noise_run(0.1)
    events = []
    frames = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=10, start_noise=0.45), seed=1,
                                callback=events.append)
    per_frame = [e for e in events if e.frame == 0]
    assert per_frame[-1].total_steps == 5                     # 10 DDIM steps keep 0,100,...,900: five are <= 450
    # with almost no noise the first frame stays next to its anchor, the identity
    near = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=10, start_noise=0.05), seed=1)
    assert (near[0, 0] - identity).abs().mean() < 0.05
    assert frames.shape == near.shape
    with pytest.raises(pl.PipelineError, match="SamplingSettings"):
        pl.generate_frames(den, identity, audio, psi, settings=10)
