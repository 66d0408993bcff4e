"""The portrait the network is given as the person (`pipeline.identity_crops`): the photo's face re-rendered at a
neutral expression by the face rig (`emodiff_core.face_rig`), or the crop as it is."""
import numpy as np
import pytest
import torch

from emodiff_core import faces
from emodiff_core import pipeline as pl
from emodiff_core.face_rig import render_rig_frames, rig_from_photo
from emodiff_core.facemodel import COMPONENT, EXPRESSION_DIM, HeadPose

MOUTH = (slice(None), slice(40, 56), slice(16, 48))      # rows, columns of the mouth in a 64 px crop


def _still(n=1):
    return HeadPose(np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n), np.zeros(n))


@pytest.fixture(scope="module")
def photos():
    """A procedural corpus face at rest and smiling, 128 px, with its exact landmarks, as portraits."""
    from training.corpus.generate import identity_rig, render_frames

    rig = identity_rig(0, 3, 128)
    smiling = rig.identity.rest.copy()
    smiling[COMPONENT["lip_corner_up"]] += 1.5
    out = {}
    for name, psi in (("rest", rig.identity.rest.copy()), ("smile", smiling)):
        image, landmarks = render_frames(rig, psi[None], _still())
        crop, aligned = faces.align_face(image[0], landmarks[0], 64)
        out[name] = pl.Portrait(image[0], landmarks[0], crop, aligned)
    return out


def test_the_neutral_identity_takes_the_photos_own_smile_out(photos):
    neutral = torch.zeros(2, 4, EXPRESSION_DIM)
    out = {k: pl.neutral_identity(p, neutral, 64) for k, p in photos.items()}
    assert out["smile"].shape == (2, 3, 64, 64) and float(out["smile"].min()) >= 0 and float(out["smile"].max()) <= 1
    assert torch.equal(out["smile"][0], out["smile"][1])           # both videos' neutral first frames are alike here
    # the photo at its own (fitted) expression still smiles; the neutral identity has most of the smile's change at
    # the mouth taken out (what is left is the smile's shading in the texture, which a warp does not move)
    rig = rig_from_photo(photos["smile"].image, photos["smile"].landmarks)
    assert rig.source_psi[COMPONENT["lip_corner_up"]] > 0.8
    own = torch.from_numpy(render_rig_frames(rig, rig.source_psi[None], _still(), 64)[0][0]).permute(2, 0, 1) / 255.0
    smile_left = float((own - out["rest"][0])[MOUTH].abs().mean())
    assert float((out["smile"][0] - out["rest"][0])[MOUTH].abs().mean()) < 0.7 * smile_left
    # rendered at the photo's own expression the rig lines up with prepare_portrait's crop (same crop convention)
    assert float((own - photos["smile"].crop_tensor()).abs().mean()) < 0.05


def test_the_neutral_identity_is_the_first_neutral_frame_with_the_mouth_closed(photos):
    portrait = photos["rest"]
    neutral = torch.zeros(2, 3, EXPRESSION_DIM)
    neutral[1, 0, COMPONENT["inner_brow_raise"]] = 1.0             # video 1's neutral starts with raised brows
    neutral[:, 0, COMPONENT["jaw_open"]] = 0.8                     # and both with the mouth open: speech, not identity
    neutral[:, 0, COMPONENT["lip_press"]] = 0.5
    neutral[:, 1:, COMPONENT["brow_lower"]] = 1.0                  # later frames do not count
    out = pl.neutral_identity(portrait, neutral, 64)
    rest = pl.neutral_identity(portrait, None, 64)                 # no neutral sequence: psi = 0
    assert torch.equal(out[0], rest[0])                            # speech components at 0, later frames ignored
    assert float((out[1] - out[0]).abs().max()) > 0.1              # the first frame's brows are in
    assert torch.equal(pl.neutral_identity(portrait, neutral[1], 64)[0], out[1])     # [N, D]: one video
    with pytest.raises(pl.PipelineError, match="neutral sequence must be"):
        pl.neutral_identity(portrait, torch.zeros(3, 7), 64)


def test_identity_crops_gives_one_crop_per_video(photos):
    portrait = photos["smile"]
    crop = portrait.crop_tensor()
    photo = pl.identity_crops(portrait, "photo", videos=3)
    assert photo.shape == (3, 3, 64, 64) and torch.equal(photo[2], crop)
    both = pl.identity_crops(portrait, "photo", torch.zeros(2, 4, EXPRESSION_DIM))    # one crop per video either way
    assert both.shape == (2, 3, 64, 64) and torch.equal(both[1], crop)
    neutral = pl.identity_crops(portrait, "neutral", torch.zeros(4, EXPRESSION_DIM), videos=2)
    assert neutral.shape == (2, 3, 64, 64) and not torch.equal(neutral[0], crop)
    assert pl.identity_crops(portrait, "neutral", torch.zeros(2, 4, EXPRESSION_DIM)).shape[0] == 2
    for how in ("neutral", "photo"):
        with pytest.raises(pl.PipelineError, match="2 neutral sequences for 3 videos"):
            pl.identity_crops(portrait, how, torch.zeros(2, 4, EXPRESSION_DIM), videos=3)
    with pytest.raises(pl.PipelineError, match="portrait identity must be one of neutral, photo, expression"):
        pl.identity_crops(portrait, "smiling")
    assert pl.DEFAULT_PORTRAIT_IDENTITY == "neutral"


def _voice(n, fps=30.0, rate=16000):
    samples = int(rate * n / fps)
    return (0.3 * np.sin(np.arange(samples) * 0.05) * np.linspace(0, 1, samples)).astype(np.float32)


def test_the_expression_anchors_psi_is_the_emotion_with_the_voices_mouth():
    """expression_anchor_psi: e_n + s (e_y - e_n), its speech components the emotion's own part plus the voice's
    drive (or nothing, closed); scaled_emotion is the network's psi at part strength."""
    from emodiff_core.audio import mouth_drive
    from emodiff_core.facemodel import SPEECH_COMPONENTS

    n, rate, fps = 12, 16000, 30.0
    rng = np.random.default_rng(0)
    e_y, e_n = rng.normal(0, 0.3, (n, EXPRESSION_DIM)), rng.normal(0, 0.3, (n, EXPRESSION_DIM))
    wave = _voice(n, fps, rate)
    closed = pl.expression_anchor_psi(e_y, e_n, wave, fps, rate, 1.0, "closed")
    voice = pl.expression_anchor_psi(e_y, e_n, wave, fps, rate, 1.0, "voice")
    drive = mouth_drive(wave, fps, n, rate)
    speech = [COMPONENT[c] for c in SPEECH_COMPONENTS]
    others = [c for c in range(EXPRESSION_DIM) if c not in speech]
    assert np.allclose(closed[:, others], e_y[:, others]) and np.allclose(voice[:, others], e_y[:, others])
    assert np.allclose(closed[:, speech], e_y[:, speech] - e_n[:, speech])      # the emotion's own part only
    for name in SPEECH_COMPONENTS:
        c = COMPONENT[name]
        assert np.allclose(voice[:, c], e_y[:, c] - e_n[:, c] + drive[name])
    assert drive["jaw_open"].std() > 0.05                                        # the voice does move the jaw
    half = pl.expression_anchor_psi(e_y, e_n, wave, fps, rate, 0.5, "closed")
    assert np.allclose(half[:, others], (e_n + 0.5 * (e_y - e_n))[:, others])
    assert np.allclose(half[:, speech], 0.5 * (e_y - e_n)[:, speech])
    default = pl.expression_anchor_psi(e_y, e_n, wave, fps, rate)                # the pack's: 0.75, voice
    assert np.allclose(default[:, others], (e_n + pl.EXPRESSION_ANCHOR_STRENGTH * (e_y - e_n))[:, others])
    with pytest.raises(pl.PipelineError, match="the anchor's mouth must be one of voice, closed"):
        pl.expression_anchor_psi(e_y, e_n, wave, fps, rate, 1.0, "open")
    t_y, t_n = torch.from_numpy(e_y), torch.from_numpy(e_n)
    assert torch.allclose(pl.scaled_emotion(t_y, t_n, 0.5), t_n + 0.5 * (t_y - t_n))
    assert pl.scaled_emotion(t_y, t_n, 1.0) is t_y and torch.equal(pl.scaled_emotion(t_y, t_n, 0.0), t_n)


def _features(n, fps=30.0):
    from emodiff_core.config import AudioFeatureConfig

    cfg = AudioFeatureConfig()
    return pl.encode_audio(_voice(n, fps, cfg.sample_rate), cfg.sample_rate, fps, cfg)


def test_the_expression_anchor_renders_each_videos_expression_on_demand(photos):
    portrait = photos["rest"]
    audio = _features(6)
    n = audio.num_frames
    neutral = torch.zeros(2, n, EXPRESSION_DIM)
    asked = neutral.clone()
    asked[1, :, COMPONENT["lip_corner_up"]] = 1.5                  # video 1 smiles, video 0 stays neutral
    source = pl.expression_anchor(portrait, audio, asked, neutral, 1.0, "closed")
    frames = source(3)
    assert frames.shape == (2, 3, 64, 64) and float(frames.min()) >= 0 and float(frames.max()) <= 1
    diff = (frames[1] - frames[0]).abs().mean(0)
    assert float(diff[40:56, 16:48].mean()) > 4 * float(diff[4:20, :].mean())    # the smile is at the mouth
    # each frame is the rig at that row of the anchor's psi; one video's [N, D] sequences give one frame
    rig = rig_from_photo(portrait.image, portrait.landmarks)
    psi = pl.expression_anchor_psi(asked[1].numpy(), neutral[1].numpy(), audio.waveform, audio.fps,
                                   audio.config.sample_rate, 0.75, "voice")
    one = pl.expression_anchor(portrait, audio, asked[1], neutral[1])
    assert one(2).shape == (1, 3, 64, 64) and torch.allclose(one(2), pl.rig_crops(rig, psi[[2]], 64))
    assert pl.expression_anchor(portrait, audio, asked, neutral, size=32)(0).shape == (2, 3, 32, 32)
    with pytest.raises(pl.PipelineError, match="must both be"):
        pl.expression_anchor(portrait, audio, asked, neutral[:, :3])


def test_portrait_conditions_scale_psi_and_reinject_the_anchor_only_for_expression(photos):
    portrait = photos["smile"]
    audio = _features(5)
    n = audio.num_frames
    neutral = torch.zeros(2, n, EXPRESSION_DIM)
    asked = neutral.clone()
    asked[:, :, COMPONENT["inner_brow_raise"]] = 1.0
    for how in ("neutral", "photo"):
        cond = pl.portrait_conditions(portrait, how, asked, neutral, audio)
        assert cond.reinject_source is None and cond.expression is asked
        assert torch.equal(cond.identity, pl.identity_crops(portrait, how, neutral))
    cond = pl.portrait_conditions(portrait, "expression", asked, neutral, audio)
    assert torch.equal(cond.identity, pl.identity_crops(portrait, "neutral", neutral))     # the neutral face
    assert torch.allclose(cond.expression, neutral + pl.EXPRESSION_ANCHOR_PSI * (asked - neutral))
    anchor = pl.expression_anchor(portrait, audio, asked, neutral)
    last = n - 1
    assert torch.equal(cond.reinject_source(last), anchor(last)) and anchor(last).shape == (2, 3, 64, 64)
    with pytest.raises(pl.PipelineError, match="'expression' needs the neutral sequence"):
        pl.portrait_conditions(portrait, "expression", asked, None, audio)
    with pytest.raises(pl.PipelineError, match="portrait identity must be one of neutral, photo, expression"):
        pl.portrait_conditions(portrait, "smiling", asked, neutral, audio)
