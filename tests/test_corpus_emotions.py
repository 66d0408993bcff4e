"""The procedural corpus' emotions: counterfactual twins rendered from a stored clip, what an emotion changes in
the picture (only the face, growing with k, by a measured margin), expression shading driven by psi, and clips
whose emotion changes mid-clip."""
import cv2
import numpy as np
import pytest
from emodiff_core.emotions import EMOTIONS
from emodiff_core.facemodel import COMPONENT, HeadPose, apply_pose, canonical_to_pixels
from emodiff_core.shading import mark_strengths

from training.clips import ClipDataset, write_clip, write_index
from training.corpus import clip_emotion_plan, emotion_psi, render_clip, render_twin_frames
from training.corpus.generate import (CORPUS_VERSION, EMOTION_CHANGE_SHARE, EMOTION_DIRECTIONS_VERSION, identity_rig,
                                     render_frames)
from training.corpus.render import OUTLINE_DEPTH

SEED, IDENTITIES = 5, 8


@pytest.fixture(scope="module")
def stored_clip(tmp_path_factory):
    """An angry clip at k = 1 written to disk and read back, as a data loader sees it."""
    root = str(tmp_path_factory.mktemp("emotion_corpus"))
    clip = render_clip(SEED, 3, IDENTITIES, 64, max_seconds=1.0, emotion="angry", emotion_change=False)
    write_clip(root, clip)
    write_index(root, fps=30, sample_rate=16000, size=64, source="procedural")
    ds = ClipDataset(root)
    return ds.load(ds.metas()[0], with_audio=False)


def _frontal(n=1):
    return HeadPose(np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n), np.zeros(n))


def test_twin_with_the_clips_own_psi_reproduces_its_frames_exactly(stored_clip):
    clip = stored_clip
    for idx in ([0, 7, len(clip.frames) - 1], [12], list(range(len(clip.frames)))):
        frames, landmarks = render_twin_frames(clip.meta, clip.extras, clip.psi[idx], idx)
        assert np.abs(frames.astype(int) - clip.frames[idx]).max() == 0
        assert np.array_equal(landmarks.astype(np.float32), clip.landmarks[idx])
    identity_rig.cache_clear()                  # a fresh renderer (another process) gives the same pixels
    frames, _ = render_twin_frames(clip.meta, clip.extras, clip.psi[[5]], [5])
    assert np.array_equal(frames[0], clip.frames[5])


def test_twin_needs_a_corpus_clip_with_its_identity_in_the_meta(stored_clip):
    meta = {k: v for k, v in stored_clip.meta.items() if k != "corpus_seed"}
    with pytest.raises(ValueError, match="corpus_seed"):
        render_twin_frames(meta, stored_clip.extras, stored_clip.psi[:1], [0])


def test_other_emotion_twins_are_refused_for_clips_of_older_emotion_directions(stored_clip):
    sad = np.eye(len(EMOTIONS))[[EMOTIONS.index("sad")]]
    assert stored_clip.meta["corpus_version"] == CORPUS_VERSION >= EMOTION_DIRECTIONS_VERSION
    assert np.abs(emotion_psi(stored_clip.meta, sad)).max() > 0.5
    old = {**stored_clip.meta, "corpus_version": EMOTION_DIRECTIONS_VERSION - 1}
    with pytest.raises(ValueError, match="regenerate the corpus"):
        emotion_psi(old, sad)
    # its own psi still renders (what a loader without twins of another emotion needs)
    frames, _ = render_twin_frames(old, stored_clip.extras, stored_clip.psi[[3]], [3])
    assert np.array_equal(frames[0], stored_clip.frames[3])


def _face_region(clip, psis, idx, dilate_px=2):
    """Pixels inside the face outline (jaw + forehead) of any of the given psi versions, dilated a little."""
    rig = identity_rig(clip.meta["corpus_seed"], clip.meta["identity_index"], 64)
    pose = np.asarray(clip.extras["pose"][idx], np.float64)
    pose = HeadPose(*(pose[:, i] for i in range(5)))
    forehead = canonical_to_pixels(apply_pose(rig.outlines["forehead"][None].repeat(len(idx), 0), pose,
                                              np.full(len(rig.outlines["forehead"]), OUTLINE_DEPTH["forehead"])), 64)
    mask = np.zeros((len(idx), 64, 64), np.uint8)
    for psi in psis:
        _, lm = render_twin_frames(clip.meta, clip.extras, psi, idx)
        for i in range(len(idx)):
            face = np.concatenate([lm[i, 0:17], forehead[i][::-1]]) - 0.5
            cv2.fillPoly(mask[i], [np.round(face * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    kernel = np.ones((2 * dilate_px + 1, 2 * dilate_px + 1), np.uint8)
    return np.stack([cv2.dilate(m, kernel) for m in mask]).astype(bool)


def test_neutral_twin_differs_only_on_the_face_and_the_change_grows_with_k(stored_clip):
    clip = stored_clip
    idx = [4, 15, 25]
    psi, emotion_part = clip.psi[idx].astype(np.float64), clip.extras["psi_emotion"][idx].astype(np.float64)
    neutral_psi = psi - emotion_part
    neutral, _ = render_twin_frames(clip.meta, clip.extras, neutral_psi, idx)
    diff = np.abs(clip.frames[idx].astype(int) - neutral).max(-1)
    face = _face_region(clip, [psi, neutral_psi], idx)
    assert diff[~face].max() == 0                  # background, hair, ears, neck, clothes untouched
    assert diff[face].mean() > 1.0
    # the same speech and blinks: the inner-lip opening (jaw_open from the audio) is kept
    assert np.allclose(clip.psi[idx, COMPONENT["jaw_open"]] - clip.extras["psi_emotion"][idx, COMPONENT["jaw_open"]],
                       neutral_psi[:, COMPONENT["jaw_open"]])
    change = []
    for k in (0.25, 0.5, 0.75, 1.0):
        frames, _ = render_twin_frames(clip.meta, clip.extras, neutral_psi + k * emotion_part, idx)
        change.append(np.abs(frames.astype(float) - neutral).mean())
    assert all(a < b for a, b in zip(change, change[1:])), change
    assert 0.3 < change[1] / change[3] < 0.7, change        # k = 0.5 shows about half of k = 1


# Mean |frame - neutral twin| (0-255, whole 64 px frame, frontal, mouth closed) over identities 0-7 of corpus seed 0,
# measured: angry 2.38, contempt 0.84, disgusted 3.07, fear 2.29, happy 1.86, sad 1.91 (1.80 before corpus v3's
# sad), surprised 4.07; the renderer before issue 9 gave 1.16, 0.51, 1.60, 1.62, 0.98, 0.84, 2.62, below every
# margin here.
MIN_EMOTION_CHANGE = {"angry": 2.0, "contempt": 0.7, "disgusted": 2.6, "fear": 1.9, "happy": 1.55, "sad": 1.5,
                      "surprised": 3.4}


def test_every_emotion_at_full_intensity_changes_the_face_by_a_margin():
    pose = _frontal()
    change = {e: [] for e in EMOTIONS[1:]}
    for index in range(8):
        rig = identity_rig(0, index, 64)
        base = rig.identity.rest.copy()
        base[COMPONENT["lip_press"]] += 0.2          # mouth closed, as on the contact sheet
        neutral = render_frames(rig, base[None], pose)[0][0].astype(float)
        for e in EMOTIONS[1:]:
            frame = render_frames(rig, (base + rig.identity.directions[e])[None], pose)[0][0]
            change[e].append(np.abs(frame - neutral).mean())
    means = {e: float(np.mean(v)) for e, v in change.items()}
    assert all(means[e] >= MIN_EMOTION_CHANGE[e] for e in means), means


def test_expression_shading_is_driven_by_psi_and_scales_with_it():
    rig = identity_rig(0, 1, 64)
    for emotion, marks in (("happy", ("nasolabial", "crows_feet", "cheek_highlight")), ("angry", ("glabella",)),
                           ("surprised", ("forehead",)), ("disgusted", ("nose_lines",)),
                           ("sad", ("mouth_corner_lines", "forehead_middle")), ("contempt", ("contempt_dimple",))):
        direction = rig.identity.directions[emotion]
        full, half = mark_strengths(direction), mark_strengths(0.5 * direction)
        assert all(full[m] > 0.1 for m in marks), (emotion, full)
        assert all(half[m] == pytest.approx(0.5 * full[m]) for m in full)
    assert all(v == 0 for v in mark_strengths(np.zeros(50)).values())


def test_emotion_change_clips_store_per_frame_weights():
    clip = render_clip(SEED, 6, IDENTITIES, 64, max_seconds=2.0, emotion="sad", emotion_change=True)
    meta, w = clip.meta, clip.extras["emotion_weights"].astype(np.float64)
    assert meta["emotion_change"] is True and meta["emotion"] == "sad" and meta["emotion_from"] in EMOTIONS[1:]
    final, first = EMOTIONS.index("sad"), EMOTIONS.index(meta["emotion_from"])
    assert w.shape == (len(clip.frames), 8)
    wobble = (0.85, 1.15)                            # the weights carry the clip's slow intensity wobble
    lo, hi = meta["intensity_from"] * np.array(wobble)
    assert lo < w[0, first] < hi and (first == final or w[0, final] == 0)
    lo, hi = meta["intensity"] * np.array(wobble)
    assert lo < w[-1, final] < hi and (first == final or w[-1, first] == 0)
    # the change happens around emotion_change_time
    t = np.arange(len(w)) / meta["fps"]
    half = meta["emotion_change_time"]
    onset = clip.extras["onset"]
    assert onset[t < half - meta["emotion_change_seconds"] / 2].max(initial=0) == 0
    assert onset[t > half + meta["emotion_change_seconds"] / 2].min(initial=1) == 1
    # neutral takes the rest; psi's emotion part is the weights times the identity's directions
    others = np.delete(w, EMOTIONS.index("neutral"), axis=1).sum(1)
    assert np.allclose(w[:, 0], np.clip(1 - others, 0, 1), atol=1e-6)
    assert np.allclose(emotion_psi(meta, w), clip.extras["psi_emotion"], atol=1e-5)
    # a steady clip: one emotion, weights = k * onset * wobble, and the meta says so
    steady = render_clip(SEED, 6, IDENTITIES, 64, max_seconds=1.0, emotion="fear", emotion_change=False)
    ws = steady.extras["emotion_weights"]
    assert steady.meta["emotion_change"] is False and "emotion_from" not in steady.meta
    assert np.count_nonzero(np.delete(ws, [0, EMOTIONS.index("fear")], axis=1)) == 0


def test_emotion_change_share_and_plan_match_the_clip():
    plans = [clip_emotion_plan(0, c) for c in range(3000)]
    emotional = [p for p in plans if p.emotion != "neutral"]
    share = np.mean([p.changes for p in emotional])
    assert abs(share - EMOTION_CHANGE_SHARE) < 0.03
    assert not any(p.changes for p in plans if p.emotion == "neutral")    # a neutral label means neutral throughout
    assert {p.change_from for p in emotional if p.changes} == set(EMOTIONS[1:])
    c = next(i for i, p in enumerate(plans) if p.changes)
    clip = render_clip(0, c, 8, 64, max_seconds=1.0)
    assert clip.meta["emotion_change"] and clip.meta["emotion"] == plans[c].emotion
    assert clip.meta["emotion_from"] == plans[c].change_from


def test_corpus_clips_and_twins_are_deterministic():
    a = render_clip(SEED, 9, IDENTITIES, 64, max_seconds=1.0)
    b = render_clip(SEED, 9, IDENTITIES, 64, max_seconds=1.0)
    assert a.meta == b.meta and np.array_equal(a.frames, b.frames) and np.array_equal(a.psi, b.psi)
    assert all(np.array_equal(a.extras[k], b.extras[k]) for k in a.extras)
    idx = [2, 20]
    psi = a.psi[idx] - a.extras["psi_emotion"][idx]
    first, _ = render_twin_frames(a.meta, a.extras, psi, idx)
    identity_rig.cache_clear()
    second, _ = render_twin_frames(a.meta, a.extras, psi, idx)
    assert np.array_equal(first, second)
