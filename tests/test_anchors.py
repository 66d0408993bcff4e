"""What each frame starts from (`emodiff_core.anchors`): the portrait's rig at the frame's expression with the
voice's mouth, and the previous frame with that rig's mouth region (the pack's default, ``rig``)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emodiff_core import anchors
from emodiff_core import faces
from emodiff_core import pipeline as pl
from emodiff_core.audio import mouth_drive
from emodiff_core.face_rig import rig_from_photo
from emodiff_core.facemodel import COMPONENT, EXPRESSION_DIM, SPEECH_COMPONENTS, HeadPose

RATE, FPS = 16000, 30.0
SPEECH = [COMPONENT[c] for c in SPEECH_COMPONENTS]
OTHERS = [c for c in range(EXPRESSION_DIM) if c not in SPEECH]


def _wave(frames, seed=0):
    n = int(RATE * frames / FPS)
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(np.arange(n) * 0.05) * np.linspace(0, 1, n) + 0.01 * rng.normal(size=n)).astype(np.float32)


def _audio(frames):
    return SimpleNamespace(waveform=_wave(frames), fps=FPS, config=SimpleNamespace(sample_rate=RATE))


@pytest.fixture(scope="module")
def photos():
    """A procedural corpus face at rest and smiling, 128 px, with its exact landmarks, as portraits."""
    from training.corpus.generate import identity_rig, render_frames

    rig = identity_rig(0, 3, 128)
    still = HeadPose(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))
    out = {}
    for name, bump in (("rest", 0.0), ("smile", 1.5)):
        psi = rig.identity.rest.copy()
        psi[COMPONENT["lip_corner_up"]] += bump
        image, landmarks = render_frames(rig, psi[None], still)
        crop, aligned = faces.align_face(image[0], landmarks[0], 64)
        out[name] = pl.Portrait(image[0], landmarks[0], crop, aligned)
    return out


def test_rig_psi_keeps_the_emotion_and_puts_the_voice_on_the_mouth():
    n = 12
    rng = np.random.default_rng(0)
    e_y, e_n = rng.normal(0, 0.3, (n, EXPRESSION_DIM)), rng.normal(0, 0.3, (n, EXPRESSION_DIM))
    wave = _wave(n)
    closed = anchors.rig_psi(e_y, e_n, wave, FPS, RATE, "closed")
    voice = anchors.rig_psi(e_y, e_n, wave, FPS, RATE, "voice")
    drive = mouth_drive(wave, FPS, n, RATE)
    assert np.allclose(closed[:, OTHERS], e_y[:, OTHERS]) and np.allclose(voice[:, OTHERS], e_y[:, OTHERS])
    assert np.allclose(closed[:, SPEECH], e_y[:, SPEECH] - e_n[:, SPEECH])      # the emotion's own part only
    for name in SPEECH_COMPONENTS:
        c = COMPONENT[name]
        assert np.allclose(voice[:, c], e_y[:, c] - e_n[:, c] + drive[name])
    half = anchors.rig_psi(e_y, e_n, wave, FPS, RATE, "closed", strength=0.5)
    assert np.allclose(half[:, OTHERS], (e_n + 0.5 * (e_y - e_n))[:, OTHERS])
    assert np.allclose(half[:, SPEECH], 0.5 * (e_y - e_n)[:, SPEECH])
    alone = anchors.rig_psi(e_y, None, wave, FPS, RATE)          # no neutral sequence: e_y, the voice on the mouth
    assert np.allclose(alone[:, OTHERS], e_y[:, OTHERS])
    assert np.allclose(alone[:, COMPONENT["jaw_open"]], drive["jaw_open"])
    with pytest.raises(pl.PipelineError, match="rig's mouth must be one of voice, closed"):
        anchors.rig_psi(e_y, e_n, wave, FPS, RATE, "open")


def test_rig_source_renders_each_videos_portrait_at_its_psi(photos):
    n = 6
    neutral = torch.zeros(2, n, EXPRESSION_DIM, dtype=torch.float64)
    asked = neutral.clone()
    asked[1, :, COMPONENT["lip_corner_up"]] = 1.5                  # video 1 smiles, video 0 stays neutral
    audio = _audio(n)
    source = anchors.rig_source(photos["rest"], audio, asked, neutral, 64)
    frames = source(3)
    assert frames.shape == (2, 3, 64, 64) and float(frames.min()) >= 0 and float(frames.max()) <= 1
    rig = rig_from_photo(photos["rest"].image, photos["rest"].landmarks)
    psi = anchors.rig_psi(asked[1].numpy(), neutral[1].numpy(), audio.waveform, FPS, RATE)
    assert torch.equal(frames[1:], pl.rig_crops(rig, psi[3:4], 64))            # frame 3 of video 1, nothing else
    diff = (frames[1] - frames[0]).abs().mean(0)
    assert float(diff[40:56, 16:48].mean()) > 4 * float(diff[4:20, :].mean())    # the smile moves the mouth
    # one portrait per video: each video is its own portrait's rig
    both = anchors.rig_source([photos["rest"], photos["smile"]], audio, neutral, neutral, 64)(3)
    assert torch.equal(both[0], anchors.rig_source(photos["rest"], audio, neutral[0], neutral[0], 64)(3)[0])
    assert not torch.allclose(both[0], both[1])
    with pytest.raises(pl.PipelineError, match="2 portraits for 3 videos"):
        anchors.rig_source([photos["rest"], photos["smile"]], audio, torch.zeros(3, n, EXPRESSION_DIM), None, 64)
    with pytest.raises(pl.PipelineError, match=r"the neutral sequence must be \[2, 6, 50\]"):
        anchors.rig_source(photos["rest"], audio, asked, neutral[:, :4], 64)


def test_the_rig_is_fitted_when_the_first_frame_asks_for_it(photos, monkeypatch):
    """A video sampled from pure noise (start noise 1) never asks `generate_frames`' anchor for a frame, so it pays
    nothing for the rig."""
    from emodiff_core import face_rig

    fitted, fit = [], face_rig.rig_from_photo
    monkeypatch.setattr(face_rig, "rig_from_photo", lambda image, landmarks: fitted.append(1) or fit(image, landmarks))
    e = torch.zeros(4, EXPRESSION_DIM)
    source = anchors.rig_source([photos["rest"], photos["smile"]], _audio(4), e, e, 64)
    assert fitted == []
    first = source(1)
    assert len(fitted) == 2 and torch.equal(source(1), first) and len(fitted) == 2      # once per portrait


def test_the_rig_start_is_the_previous_frame_with_the_rigs_mouth(photos):
    n = 4
    audio = _audio(n)
    e = torch.zeros(n, EXPRESSION_DIM)
    anchor = anchors.start_anchor("rig", photos["rest"], audio, e, e, 64)
    previous = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = anchor(2, previous)
    rig = anchors.rig_source(photos["rest"], audio, e, e, 64)(2)
    weight = torch.from_numpy(faces.mouth_region_weight(64, 64))
    outside, inside = weight == 0, weight == 1
    assert inside.any() and outside.any()
    assert torch.equal(got[..., outside], previous[..., outside])        # eyes, brows, hair: the video's own
    assert torch.allclose(got[..., inside], rig[..., inside])            # the mouth: the rig's
    # an expression without its neutral sequence (an expression file): the rig's mouth is the voice's drive alone
    alone = anchors.start_anchor("rig", photos["rest"], audio, e, None, 64)(2, previous)
    assert torch.allclose(alone, got)                                   # e_n = e_y = 0 here: the same start
    assert anchors.start_anchor("previous", photos["rest"], audio, e, e, 64) is None
    with pytest.raises(pl.PipelineError, match="start mouth must be one of previous, rig"):
        anchors.start_anchor("voice", photos["rest"], audio, e, e, 64)


def test_intensity_videos_start_each_level_from_the_rig_at_that_level(photos, monkeypatch):
    """FLIE's videos (`evaluation.generate_intensity_videos`) start as a user's video does: each level's rig at its
    own condition, against the k = 0 one (`training evaluate --flie-start-mouth rig`)."""
    from emodiff_core import evaluation

    n = 4
    audio = _audio(n)
    conditions = [torch.zeros(n, EXPRESSION_DIM), torch.zeros(n, EXPRESSION_DIM)]
    conditions[1][:, COMPONENT["lip_corner_up"]] = 1.5
    seen = []

    def spy(denoiser, identity, audio, psi, **options):
        seen.append((psi, options["anchor_source"]))
        return torch.zeros(n, 1, 3, 64, 64)

    monkeypatch.setattr(evaluation, "generate_frames", spy)
    identity = photos["rest"].crop_tensor()
    videos = evaluation.generate_intensity_videos(None, None, identity, audio, "happy", 1, conditions=conditions,
                                                  start_mouth="rig", portrait=photos["rest"])
    assert len(videos) == 2 and [psi for psi, _ in seen] == conditions
    previous = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for psi, anchor in seen:
        expected = anchors.start_anchor("rig", photos["rest"], audio, psi, conditions[0], 64)(2, previous)
        assert torch.equal(anchor(2, previous), expected)
    assert not torch.equal(seen[0][1](2, previous), seen[1][1](2, previous))      # the smile's level smiles
    seen.clear()
    evaluation.generate_intensity_videos(None, None, identity, audio, "happy", 1, conditions=conditions)
    assert [anchor for _, anchor in seen] == [None, None]                          # default: the previous frame
    with pytest.raises(pl.PipelineError, match="renders the portrait's rig: give the portrait"):
        evaluation.generate_intensity_videos(None, None, identity, audio, "happy", 1, conditions=conditions,
                                             start_mouth="rig")
    with pytest.raises(pl.PipelineError, match="start_mouth must be one of previous, rig"):
        evaluation.generate_intensity_videos(None, None, identity, audio, "happy", 1, conditions=conditions,
                                             start_mouth="warp", portrait=photos["rest"])
