"""training.prepare: real-video preparation, exercised on procedural-corpus clips written as mp4 files.

Landmark accuracy: dlib's landmarks of a rendered corpus clip (128 px, written as H.264), mapped into the
64 px crop, against the corpus' exact landmarks mapped by the same crop transform. Measured on the clip used
here: mean error 0.76 px over all 68 points, 0.59 px over the inner face (27-67), at most ~3 px (jaw and brow
points, where dlib's convention differs from the procedural face). The asserted tolerances leave headroom.
"""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")
pytest.importorskip("av")

from emodiff_core.audio import samples_for_frames
from emodiff_core.emotions import MEAD_LEVEL_INTENSITY
from emodiff_core.faces import apply_affine
from emodiff_core.video import write_mp4
from training.clips import ClipDataset
from training.prepare import PrepareError, parse_labels, prepare

SR = 16000
# corpus clip 2 of seed 0 (8 identities): a face dlib's HOG detector finds in every frame at 128 px
# (some procedural identities are too cartoon-like for HOG at this size).
CLIP_INDEX = 2


@pytest.fixture(scope="module")
def corpus_clip():
    from training.corpus.generate import render_clip

    return render_clip(0, CLIP_INDEX, 8, 128, max_seconds=1.0)


@pytest.fixture(scope="module")
def prepared(corpus_clip, tmp_path_factory):
    videos = tmp_path_factory.mktemp("videos")
    mead = videos / "M003" / "video" / "front" / "angry" / "level_2"
    mead.mkdir(parents=True)
    write_mp4(str(mead / "001.mp4"), corpus_clip.frames, 30, corpus_clip.audio, SR)
    n_short = 10
    write_mp4(str(videos / "WDA_BarackObama_000.mp4"), corpus_clip.frames[:n_short], 30,
              corpus_clip.audio[:samples_for_frames(n_short, 30, SR)], SR)
    out = str(tmp_path_factory.mktemp("prepared"))
    stats = prepare(str(videos), out, landmarks="dlib", size=64, split="train", fps=30.0)
    return out, stats


def test_parse_labels():
    folder = parse_labels("/data/MEAD/M003/video/front/angry/level_1/001.mp4", "/data/MEAD")
    assert folder == {"identity": "M003", "emotion": "angry", "level": 1, "intensity": MEAD_LEVEL_INTENSITY[1],
                      "view": "front", "dataset": "mead"}
    flat = parse_labels("W015_left_30_surprised_level_3_012.mp4")
    assert (flat["identity"], flat["emotion"], flat["level"], flat["view"]) == ("W015", "surprised", 3, "left_30")
    assert flat["intensity"] == MEAD_LEVEL_INTENSITY[3]
    neutral = parse_labels("M030_front_neutral_level_1_001.mp4")
    assert neutral["emotion"] == "neutral" and neutral["intensity"] == 0.0
    for name, label in (("contempt", "contempt"), ("disgusted", "disgusted"), ("fear", "fear"), ("sad", "sad"),
                        ("happy", "happy")):
        assert parse_labels(f"M003_front_{name}_level_2_001.mp4")["emotion"] == label
    hdtf = parse_labels("/x/HDTF/WDA_BarackObama_000.mp4", "/x/HDTF")
    assert hdtf == {"identity": "WDA_BarackObama", "emotion": None, "level": None, "intensity": None, "view": None,
                    "dataset": "hdtf"}
    other = parse_labels("interview_sadie_03.mp4")
    assert other["identity"] == "interview_sadie" and other["emotion"] is None


def test_prepared_clips_follow_the_format(prepared, corpus_clip):
    out, stats = prepared
    assert stats["videos"] == 2 and stats["clips_written"] == 2 and stats["failures"] == []
    assert stats["frames"] == len(corpus_clip.frames) + 10
    json.dumps(stats)
    ds = ClipDataset(out)
    assert ds.size == 64 and ds.fps == 30 and ds.sample_rate == SR and len(ds) == 2
    metas = {m["identity"]: m for m in ds.metas()}
    mead, hdtf = metas["M003"], metas["WDA_BarackObama"]
    assert (mead["emotion"], mead["level"], mead["view"], mead["source"]) == ("angry", 2, "front", "mead")
    assert mead["intensity"] == pytest.approx(2 / 3)
    assert mead["psi_source"] == "none" and mead["split"] == "train"
    assert hdtf["emotion"] is None and hdtf["level"] is None and hdtf["intensity"] is None
    clip = ds.load(mead)
    n = len(corpus_clip.frames)
    assert clip.frames.shape == (n, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.landmarks.shape == (n, 68, 2) and clip.psi is None
    assert len(clip.audio) == samples_for_frames(n, 30, SR)
    assert not os.path.exists(os.path.join(ds.clip_dir(mead["clip_id"]), "psi.npy"))
    assert np.corrcoef(clip.audio, corpus_clip.audio)[0, 1] > 0.95
    assert clip.extras["crop_affine"].shape == (n, 2, 3)
    assert len(ds.load(hdtf).frames) == 10


def test_landmarks_match_the_corpus_ground_truth(prepared, corpus_clip):
    out, _ = prepared
    ds = ClipDataset(out)
    clip = ds.load([m for m in ds.metas() if m["identity"] == "M003"][0])
    truth = np.stack([apply_affine(a, lm) for a, lm in zip(clip.extras["crop_affine"],
                                                           corpus_clip.landmarks.astype(np.float64))])
    err = np.linalg.norm(truth - clip.landmarks, axis=-1)      # pixels of the 64 px crop
    assert err.mean() < 1.5
    assert err[:, 27:].mean() < 1.0
    assert err[:, 30].mean() < 1.0
    # the smoothed crop keeps the nose tip near the centre
    assert np.abs(clip.landmarks[:, 30] - 32).max() < 2.0


def test_bad_videos_fail_clearly_and_leave_nothing(corpus_clip, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "M001_front_happy_level_1_001.mp4").write_bytes(b"")
    write_mp4(str(videos / "M001_front_happy_level_1_002.mp4"), corpus_clip.frames[:8], 30)   # no audio
    blank = np.full((12, 128, 128, 3), 120, np.uint8)
    write_mp4(str(videos / "M001_front_happy_level_1_003.mp4"), blank, 30,
              corpus_clip.audio[:samples_for_frames(12, 30, SR)], SR)
    out = tmp_path / "out"
    stats = prepare(str(videos), str(out), landmarks="dlib", size=64)
    assert stats["clips_written"] == 0 and len(stats["failures"]) == 3
    errors = {os.path.basename(f["video"]): f["error"] for f in stats["failures"]}
    assert "empty" in errors["M001_front_happy_level_1_001.mp4"]
    assert "no audio stream" in errors["M001_front_happy_level_1_002.mp4"]
    assert "no face found in frame" in errors["M001_front_happy_level_1_003.mp4"]
    for name, msg in errors.items():
        assert name in msg                         # every message names its file
    assert os.listdir(out / "clips") == []         # no clip, no .partial folder
    assert ClipDataset(str(out)).index["clips"] == []
    with pytest.raises(PrepareError, match=r"003\.mp4: no face found"):
        prepare(str(videos / "M001_front_happy_level_1_003.mp4"), str(out), strict=True)


def test_bad_deca_file_fails_before_any_work(corpus_clip, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_mp4(str(videos / "M002_front_sad_level_3_001.mp4"), corpus_clip.frames[:4], 30,
              corpus_clip.audio[:samples_for_frames(4, 30, SR)], SR)
    bad = tmp_path / "deca_model.tar"
    bad.write_text("not weights")
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="--deca: .*deca_model.tar"):
        prepare(str(videos), str(out), deca=str(bad))
    with pytest.raises(PrepareError, match="--deca: DECA weights not found"):
        prepare(str(videos), str(out), deca=str(tmp_path / "missing.tar"))
    assert not out.exists()


def test_deca_psi_with_random_weights(corpus_clip, tmp_path):
    from emodiff_core.deca import DecaFlameEncoder

    torch.manual_seed(0)
    deca = tmp_path / "deca_model.tar"
    torch.save({"E_flame": DecaFlameEncoder().state_dict()}, str(deca))
    videos = tmp_path / "videos"
    videos.mkdir()
    n = 3
    write_mp4(str(videos / "M004_front_fear_level_2_001.mp4"), corpus_clip.frames[:n], 30,
              corpus_clip.audio[:samples_for_frames(n, 30, SR)], SR)
    out = tmp_path / "out"
    stats = prepare(str(videos), str(out), deca=str(deca), size=64)
    assert stats["clips_written"] == 1 and stats["psi_source"] == "deca", stats
    ds = ClipDataset(str(out))
    clip = ds.load(ds.metas()[0])
    assert clip.meta["psi_source"] == "deca"
    assert clip.psi.shape == (n, 50) and clip.psi.dtype == np.float32 and np.isfinite(clip.psi).all()
