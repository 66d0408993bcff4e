"""The real-texture corpus (training/corpus/realface.py): warp mechanics, mouth, blinks, emotions, clip format,
determinism, held-out material. Faces: a procedural corpus face (exact landmarks) and scikit-image's astronaut,
a held-out TEST portrait used here only to check mechanics (the corpus itself refuses it)."""
import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import torch

from emodiff_core import config as C
from emodiff_core import face_rig
from emodiff_core.facemodel import (COMPONENT, CROP_EYE_RATIO, EXPRESSION_DIM, EYE_DISTANCE, TEMPLATE, HeadPose,
                                    teeth_showing)

from training.clips import ClipDataset
from training.corpus import realface as rf
from training.corpus.generate import identity_rig, render_frames

FRONTAL = HeadPose(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))


def _procedural_face(index=3):
    rig = identity_rig(0, index, 128)
    psi = rig.identity.rest.copy()[None]
    frames, lm = render_frames(rig, psi, FRONTAL)
    return frames[0], lm[0]


@pytest.fixture(scope="module")
def sources():
    a_img, a_lm = _procedural_face(3)
    b_img, b_lm = _procedural_face(12)
    faces = [face_rig.source_from_image(a_img, a_lm, "a.png"), face_rig.source_from_image(b_img, b_lm, "b.png")]
    return rf.RealSources(faces, {"a.png": "train", "b.png": "train"}, [])


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    from emodiff_core.landmarks import detect_portrait

    img = data.astronaut()
    face = face_rig.source_from_image(img, detect_portrait(img, backend="dlib"), "test_only")
    return rf.RealSources([face], {"test_only": "train"}, [])


def _rig(sources, index=0):
    rig = rf.real_identity(sources, 0, index)
    # no crop offset, so the expected geometry is the plain model's
    return dataclasses.replace(rig, pose_offset=np.zeros(5))


def _psi(rig, **parts):
    psi = rig.identity.rest.copy()
    for name, value in parts.items():
        psi[COMPONENT[name]] += value
    return psi[None]


def _polygon_mask(points, size):
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round((points - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def test_triangulation_keeps_mouth_and_eyes_apart():
    assert face_rig.region_is_own(face_rig.TRIANGLES, face_rig.INNER_LIP_POLY)
    assert all(face_rig.region_is_own(face_rig.TRIANGLES, eye) for eye in face_rig.EYE_POLYS)
    assert rf.folded_triangles(TEMPLATE) == 0
    # the contour midpoints lie on smooth curves through the landmarks, and follow any similarity exactly
    dense = face_rig.densify(TEMPLATE)
    assert dense.shape == (face_rig.NUM_CONTROL, 2) and np.array_equal(dense[:68], TEMPLATE)
    rot = np.array([[0.8, -0.6], [0.6, 0.8]]) * 1.7
    np.testing.assert_allclose(face_rig.densify(TEMPLATE @ rot.T + 3.0), dense @ rot.T + 3.0, atol=1e-12)
    # the mirror map is an involution and maps the (symmetric) template onto itself
    assert (rf.MIRROR_68[rf.MIRROR_68] == np.arange(68)).all()
    mirrored = TEMPLATE[rf.MIRROR_68] * [-1, 1]
    assert np.abs(mirrored - TEMPLATE).max() < 1e-9


def test_warp_with_equal_points_is_the_identity():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((96, 96, 3)).astype(np.float32), (0, 0), 2)
    pts = face_rig.canon_to_canvas(face_rig.control_points(TEMPLATE, face_rig.ANCHORS)) * 96 / face_rig.CANVAS
    out = face_rig.warp_piecewise(img, pts, pts, 96)
    assert np.abs(out - img).max() < 1e-4


def test_jaw_open_opens_the_inner_lips_as_psi_says(sources):
    rig = _rig(sources)
    size = 128
    closed, lm_c = face_rig.render_rig_frames(rig, _psi(rig), FRONTAL, size)
    opened, lm_o = face_rig.render_rig_frames(rig, _psi(rig, jaw_open=1.0), FRONTAL, size)
    unit = size / (CROP_EYE_RATIO * EYE_DISTANCE)
    gap = lambda lm: lm[0, [65, 66, 67], 1].mean() - lm[0, [61, 62, 63], 1].mean()
    # jaw_open moves the lower inner lip 0.25 face units down (facemodel's basis), the upper one not at all
    # (from a slightly open mouth, so the lips' no-crossing clamp is not involved)
    a = face_rig.render_rig_frames(rig, _psi(rig, jaw_open=0.3), FRONTAL, size)[1]
    b = face_rig.render_rig_frames(rig, _psi(rig, jaw_open=0.8), FRONTAL, size)[1]
    assert gap(b) - gap(a) == pytest.approx(0.5 * 0.25 * unit, rel=1e-3)
    assert gap(lm_o) > gap(lm_c) + 0.2 * unit
    # the pixels follow: inside the open inner lips the mouth interior is dark (cavity) where it was lips/skin
    inside = _polygon_mask(lm_o[0, 60:68], size)
    assert inside.sum() > 30
    lum_open = opened[0][inside].mean()
    lum_closed = closed[0][inside].mean()
    assert lum_open < lum_closed - 15
    # and the chin went down with the jaw: the landmarks are where the warp put them (frame differs below the lips)
    assert np.abs(opened[0].astype(int) - closed[0].astype(int))[int(lm_c[0, 57, 1]):].mean() > 3


def test_rounded_lips_cover_the_teeth_in_both_renderers(sources):
    """An open mouth drawn narrow (surprise, an "oo") shows cavity where a wide one shows the upper teeth: a teeth
    bar under raised brows reads as a grin to a real-face classifier (corpus version 4)."""
    assert [teeth_showing(np.eye(EXPRESSION_DIM)[COMPONENT["mouth_width"]] * w) for w in (0.4, 0.0, -0.5, -1.0, -2.0)] \
        == [1.0, 1.0, 0.5, 0.0, 0.0]
    real = _rig(sources)
    procedural = identity_rig(0, 3, 128)
    renderers = {"real texture": (real, lambda psi: face_rig.render_rig_frames(real, psi, FRONTAL, 128)),
                 "procedural": (procedural, lambda psi: render_frames(procedural, psi, FRONTAL))}
    for name, (rig, render) in renderers.items():
        bright = {}
        for width in (0.0, -1.0):
            psi = rig.identity.rest.copy()
            psi[COMPONENT["jaw_open"]] += 1.0
            psi[COMPONENT["mouth_width"]] = width
            frames, lm = render(psi[None])
            inside = _polygon_mask(lm[0, 60:68], 128)
            assert inside.sum() > 60
            bright[width] = np.percentile(frames[0][inside].astype(float).mean(-1), 90)   # the teeth, if any
        assert bright[0.0] > bright[-1.0] + 40, (name, bright)


def test_blink_closes_the_eyes(astronaut):
    rig = _rig(astronaut)
    size = 128
    open_, lm = face_rig.render_rig_frames(rig, _psi(rig), FRONTAL, size)
    shut, lm_s = face_rig.render_rig_frames(rig, _psi(rig, eye_openness=-2.2), FRONTAL, size)
    assert np.abs(lm_s[0, [37, 38], 1] - lm_s[0, [41, 40], 1]).max() < 0.05   # upper lid on the lower one
    for upper, lower in (([36, 37, 38, 39], [40, 41]), ([42, 43, 44, 45], [46, 47])):
        # the upper half of the open eye (white, iris, pupil: the most varied patch of the face) is lid skin once
        # the eye is closed (the lid comes down to the lower lid, where its lash line is)
        half = np.concatenate([lm[0, upper], (lm[0, upper[2:0:-1]] + lm[0, lower]) / 2])
        inside = _polygon_mask(half, size)
        std_open = open_[0][inside].astype(float).mean(-1).std()
        std_shut = shut[0][inside].astype(float).mean(-1).std()
        assert inside.sum() >= 10 and std_shut < 0.5 * std_open, (std_open, std_shut)


def test_emotion_directions_change_brows_and_mouth(sources):
    rig = _rig(sources)
    size = 64
    neutral, lm = face_rig.render_rig_frames(rig, rig.identity.rest[None], FRONTAL, size)
    brows = (slice(int(lm[0, 17:27, 1].min()) - 4, int(lm[0, 37:39, 1].max()) + 1), slice(8, 56))
    mouth = (slice(int(lm[0, 50, 1]) - 3, int(lm[0, 57, 1]) + 4), slice(int(lm[0, 48, 0]) - 4, int(lm[0, 54, 0]) + 5))
    for emotion in ("angry", "disgusted", "fear", "happy", "sad", "surprised"):
        psi = (rig.identity.rest + rig.identity.directions[emotion])[None]
        frame = face_rig.render_rig_frames(rig, psi, FRONTAL, size)[0]
        diff = np.abs(frame[0].astype(float) - neutral[0].astype(float)).mean(-1)
        assert max(diff[brows].mean(), diff[mouth].mean()) > 4.0, emotion


def _write_faces(folder):
    os.makedirs(folder, exist_ok=True)
    for name, index in (("a.png", 3), ("b.png", 12)):
        img, _ = _procedural_face(index)
        cv2.imwrite(os.path.join(folder, name), cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC)[..., ::-1])


def _write_speech(folder):
    """Two 'speakers' of syllable-like tone bursts at 8 kHz; 'held' is kept out of training."""
    import soundfile

    rng = np.random.default_rng(0)
    for speaker, f0 in (("voice_a", 140.0), ("held", 220.0)):
        os.makedirs(os.path.join(folder, speaker), exist_ok=True)
        for k in range(3):
            t = np.arange(int(8000 * 1.2)) / 8000
            env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t), 0, None)
            soundfile.write(os.path.join(folder, speaker, f"p{k}.wav"), (0.3 * env * np.sin(2 * np.pi * f0 * t)), 8000)
    # a recording whose pauses are as loud as its speech (radio noise) is skipped
    t = np.arange(8000 * 2) / 8000
    soundfile.write(os.path.join(folder, "voice_a", "noisy.wav"), 0.2 * np.sin(2 * np.pi * 140 * t)
                    + 0.2 * rng.normal(size=len(t)), 8000)
    with open(os.path.join(folder, "speech.json"), "w") as f:
        json.dump({"splits": {"held": "test"}}, f)


def test_real_corpus_clip_format_and_determinism(tmp_path):
    faces = str(tmp_path / "faces")
    _write_faces(faces)
    from skimage import data

    # held-out test portraits in the folder are refused: by name (also prefixed), and by content when renamed
    cv2.imwrite(os.path.join(faces, "multi_face.jpg"), data.astronaut()[..., ::-1])
    import shutil

    import skimage

    shutil.copyfile(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"),
                    os.path.join(faces, "zz_renamed.png"))
    cv2.imwrite(os.path.join(faces, "2_astronaut.png"), data.astronaut()[..., ::-1])
    speech = str(tmp_path / "speech")
    _write_speech(speech)
    out = str(tmp_path / "corpus")
    stats = rf.generate_real_corpus(out, faces, clips=2, seed=0, size=64, identities=8, speech_dir=speech,
                                    speech_share=1.0)
    assert stats["clips_total"] == 2
    assert stats["speech"]["speakers"]["held"]["split"] == "test"
    assert any(s.startswith("voice_a/noisy.wav: noise") for s in stats["speech"]["skipped"])
    from training.corpus.realspeech import read_speech, speaker_of

    bank = read_speech(os.path.join(out, "real_speech.npz"))
    assert speaker_of(bank, 0, 7, "test") == "held" and speaker_of(bank, 0, 0, "train") == "voice_a"
    for name in ("multi_face.jpg", "zz_renamed.png", "2_astronaut.png"):
        assert any(s.startswith(f"{name}: held-out") for s in stats["sources"]["skipped"]), name
    assert stats["sources"]["faces"] == 2
    ds = ClipDataset(out)
    metas = ds.metas()
    assert len(metas) == 2
    clip = ds.load(metas[0]["clip_id"], mmap=False)
    n = len(clip.frames)
    assert clip.frames.shape == (n, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.psi.shape == (n, EXPRESSION_DIM) and clip.landmarks.shape == (n, 68, 2)
    assert clip.meta["source"] == "real_texture" and clip.meta["psi_source"] == "ground_truth"
    assert clip.meta["identity"].startswith("real")
    # the train identity speaks with the train voice, a real recording resampled to 16 kHz, and its mouth follows it
    assert clip.meta["speech"] == "real" and clip.meta["voice"] == "voice_a"
    assert clip.extras["psi_speech"][:, COMPONENT["jaw_open"]].max() > 0.3
    for key in ("psi_emotion", "psi_speech", "emotion_weights", "pose", "envelope"):
        assert len(clip.extras[key]) == n
    # nothing machine-specific in the meta: sources are file names
    assert "/" not in json.dumps(clip.meta["real"]["sources"])
    # deterministic: the same clip rendered again from the stored sources is identical
    again = rf.render_real_clip(os.path.join(out, rf.SOURCES_CACHE), 0, 0, 8, 64,
                                speech_path=os.path.join(out, "real_speech.npz"), speech_share=1.0)
    np.testing.assert_array_equal(again.frames, clip.frames)
    np.testing.assert_array_equal(again.psi, clip.psi)
    np.testing.assert_array_equal(again.landmarks, clip.landmarks)
    np.testing.assert_allclose(again.audio, clip.audio, atol=2 / 32767)
    # the landmarks are the model's for the stored psi and pose
    rig = rf._cached_rig(os.path.join(out, rf.SOURCES_CACHE), 0, 0)
    pose = clip.extras["pose"].astype(np.float64)
    off = rig.pose_offset
    posed = HeadPose(pose[:, 0] + off[0], pose[:, 1] + off[1], pose[:, 2] * (1 + off[2]), pose[:, 3] + off[3],
                     pose[:, 4] + off[4])
    lm, _ = face_rig.target_landmarks(rig, clip.psi.astype(np.float64), posed, 64)
    assert np.abs(lm - clip.landmarks).max() < 1e-3
    # counterfactual twins: the clip's own psi reproduces its frames; the neutral twin differs where the emotion is
    rows = [0, n // 2, n - 1]
    twin, twin_lm = rf.render_real_twin_frames(out, clip.meta, clip.extras, clip.psi[rows], rows)
    np.testing.assert_array_equal(twin, clip.frames[rows])
    np.testing.assert_array_equal(twin_lm.astype(np.float32), clip.landmarks[rows])
    # the denoiser's twins (training.twins) work on real-texture clips of a dataset folder
    from training.twins import ClipTwins

    assert ClipTwins.of(clip.meta, clip.extras, clip.psi, 64) is None          # without the folder: no twins
    tw = ClipTwins.of(clip.meta, clip.extras, clip.psi, 64, root=out)
    images, _ = tw.render(clip.psi[rows], rows)
    np.testing.assert_allclose(images.numpy(), clip.frames[rows].transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)
    neutral = tw.neutral_psi
    happy = tw.with_emotion("happy", 1.0)
    # the source photo at its own expression (photo-anchor examples): the rig at the fitted psi, the clip's pose
    photo, photo_lm = tw.render_source([0, n - 1])
    frames, lm_src = rf.render_real_source_frames(out, clip.meta, clip.extras, [0, n - 1])
    np.testing.assert_allclose(photo.numpy(), frames.transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)
    ends = HeadPose(*(v[[0, n - 1]] for v in (posed.yaw, posed.roll, posed.scale, posed.tx, posed.ty)))
    expected, _ = face_rig.target_landmarks(rig, np.stack([rig.source_psi] * 2), ends, 64)
    np.testing.assert_allclose(lm_src, expected, atol=1e-6)
    np.testing.assert_allclose(photo_lm.numpy(), expected, atol=1e-4)
    assert not np.array_equal(frames[0], clip.frames[0])          # the clip's psi is not the photo's expression
    from training.data import DenoiserData, TwinOptions

    cfg = dataclasses.replace(C.DENOISER_PRESETS["demo"])
    assert cfg.n_motion_frames == 2
    data = DenoiserData(out, cfg, "train", twins=TwinOptions(share=1.0, photo_anchor_share=1.0))
    ci = next(i for i, c in enumerate(data.clips) if c.twins is not None and len(c.frames) > 3)
    c = data.clips[ci]
    item = data.photo_anchor_sample(ci, 3, 1)
    source, _ = c.twins.render_source([1])
    assert torch.equal(item["identity"], source[0])                           # identity: the photo
    assert torch.equal(item["motion"][0], source[0])                          # oldest slot: the same image
    assert torch.equal(item["motion"][1], c.frames[2].float() / 127.5 - 1.0)  # newest: the clip's t-1
    assert torch.equal(item["x0"], c.frames[3].float() / 127.5 - 1.0)         # target: the clip's own frame
    for first in (data.photo_anchor_sample(ci, 0, 1),                          # no previous frame: identity copies
                  data.photo_anchor_sample(ci, 3, 1, still=True)):            # photo_still_share: the photo only
        assert torch.equal(first["motion"], first["identity"][None].expand_as(first["motion"]))
    assert torch.equal(data.photo_anchor_sample(ci, 3, 1, still=True)["x0"], item["x0"])
    # photo_oldest_own_pose: the oldest slot is the photo at frame t-2's pose, not the identity image itself
    posed = DenoiserData(out, cfg, "train", twins=TwinOptions(share=1.0, photo_anchor_share=1.0,
                                                              photo_oldest_own_pose=True))
    moved = posed.photo_anchor_sample(ci, 3, 0)
    at_poses, _ = posed.clips[ci].twins.render_source([0, 1])
    assert torch.equal(moved["identity"], at_poses[0]) and torch.equal(moved["motion"][0], at_poses[1])
    assert not torch.equal(moved["motion"][0], moved["identity"])
    assert torch.equal(moved["motion"][1], item["motion"][1]) and torch.equal(moved["x0"], item["x0"])
    drawn = data.batch(np.random.default_rng(5), 3)
    assert drawn["motion"].shape == (3, 2, 3, 64, 64)
    assert drawn["real_texture"].dtype == torch.bool and drawn["real_texture"].all()   # motion_blur_sources' flag
    assert happy[:, COMPONENT["lip_corner_up"]].mean() > neutral[:, COMPONENT["lip_corner_up"]].mean() + 0.8
    # the contact sheet: a label column + 8 emotions, (1 intensity + 1 mechanics row) per identity
    sheet = rf.real_contact_sheet(str(tmp_path / "sheet.png"), os.path.join(out, rf.SOURCES_CACHE), 0, 64,
                                  identity_indices=(0, 7), intensities=(1.0,))
    assert sheet.shape[0] == 18 + 4 * 64 and sheet.shape[1] > 8 * 64 and os.path.isfile(str(tmp_path / "sheet.png"))
    # resuming with the same folders renders nothing new; with other faces it refuses (the clips would not match)
    again = rf.generate_real_corpus(out, faces, clips=2, seed=0, size=64, identities=8, speech_dir=speech,
                                    speech_share=1.0)
    assert again["clips_rendered"] == 0
    os.remove(os.path.join(faces, "b.png"))
    with pytest.raises(ValueError, match="other source faces"):
        rf.generate_real_corpus(out, faces, clips=3, seed=0, size=64, identities=8)
    # another seed gives other identities
    other = rf.real_identity(rf.read_sources(os.path.join(out, rf.SOURCES_CACHE)), 1, 0)
    assert not np.array_equal(other.canvas, rig.canvas)


def test_fit_on_a_real_photo_and_mouth_follows_psi(astronaut):
    """On a real photo (the astronaut, test-only): dlib's landmarks, the model fit, and a jaw that opens."""
    face = astronaut.faces[0]
    assert rf.folded_triangles(face.landmarks) == 0
    fit = face_rig.fit_face(face.landmarks, fix_similarity=np.eye(2, 3))
    assert np.abs(fit.residual).mean() < 0.05            # the model explains the photo's landmarks to ~3 % of a face
    rig = _rig(astronaut, 0)
    closed, lm_c = face_rig.render_rig_frames(rig, _psi(rig), FRONTAL, 64)
    opened, lm_o = face_rig.render_rig_frames(rig, _psi(rig, jaw_open=0.8), FRONTAL, 64)
    inside = _polygon_mask(lm_o[0, 60:68], 64)
    assert opened[0][inside].mean() < closed[0][inside].mean() - 20
    # the photo's own expression is recorded: the astronaut smiles, so her mouth corners sit higher (relative to
    # the lip line's centre) when the rig is rendered at it than at psi = 0
    assert rig.source_psi[COMPONENT["lip_corner_up"]] > 0.4
    _, lm_own = face_rig.render_rig_frames(rig, rig.source_psi[None], FRONTAL, 64)
    _, lm_zero = face_rig.render_rig_frames(rig, np.zeros((1, EXPRESSION_DIM)), FRONTAL, 64)

    def corner_lift(lm):
        return float(lm[0, [51, 57], 1].mean() - lm[0, [48, 54], 1].mean())
    assert corner_lift(lm_own) > corner_lift(lm_zero) + 0.5
