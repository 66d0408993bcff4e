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
    with pytest.raises(pl.PipelineError, match="portrait identity must be one of neutral, photo"):
        pl.identity_crops(portrait, "smiling")
    assert pl.DEFAULT_PORTRAIT_IDENTITY == "neutral"
