"""The emotion judge: the network and its config, checkpoints, frame targets, the trainer, the Spearman helper
and the emotion-control report of training/evaluate.py."""
import math
import os

import numpy as np
import pytest
import torch
from emodiff_core import config as core
from emodiff_core.checkpoint import CheckpointError, load_components, save_checkpoint
from emodiff_core.emotions import EMOTIONS
from emodiff_core.models import EmotionJudge

from training.train_judge import (DEFAULT_RULE, SKIPPED, JudgeFrames, LabelRule, emotion_weights, frame_targets,
                                  graded_cross_entropy, graded_targets, judge_report, spearman)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "training", "configs")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 corpus clips of 8 identities, plus: a neutral clip of the test identity (its portrait), an
    emotion-change clip without per-frame weights (to be skipped) and one with them (to be used)."""
    from training.clips import write_clip, write_index
    from training.corpus import generate_corpus, render_clip

    out = str(tmp_path_factory.mktemp("judge_corpus"))
    generate_corpus(out, clips=10, seed=3, size=64, identities=8)
    write_clip(out, render_clip(3, 15, 8, 64, emotion="neutral"))            # identity 7: the test split
    unweighted = render_clip(3, 16, 8, 64, emotion="happy")
    unweighted.meta["emotion_change"] = True
    unweighted.extras.pop("emotion_weights", None)
    write_clip(out, unweighted)
    weighted = render_clip(3, 17, 8, 64, emotion="sad")
    n = len(weighted.frames)
    w = np.zeros((n, len(EMOTIONS)), np.float32)
    w[: n // 2, EMOTIONS.index("sad")] = 1.0                                  # sad, then angry
    w[n // 2:, EMOTIONS.index("angry")] = 1.0
    weighted.meta["emotion_change"] = True
    weighted.extras["emotion_weights"] = w
    write_clip(out, weighted)
    write_index(out, 30, 16000, 64, "procedural")
    return out


# --------------------------------------------------------------------------- network and config
def test_judge_shapes_and_input_checks():
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    for size in (32, 64):                                    # other sizes are resized to the configured one
        out = judge(torch.rand(3, 3, size, size))
        assert out.logits.shape == (3, len(EMOTIONS)) and out.intensity.shape == (3,)
        assert ((out.intensity > 0) & (out.intensity < 1)).all()
    probs = judge.probabilities(torch.rand(5, 3, 32, 32), batch_size=2)
    assert probs.shape == (5, 8) and torch.allclose(probs.sum(1), torch.ones(5))
    assert judge.probabilities(torch.zeros(0, 3, 32, 32)).shape == (0, 8)
    no_head = EmotionJudge(core.build("judge", "tiny", {"intensity_head": False}))
    assert no_head(torch.rand(1, 3, 32, 32)).intensity is None
    with pytest.raises(ValueError, match=r"RGB images \[B, 3, H, W\]"):
        judge(torch.rand(2, 1, 32, 32))


def test_judge_config_is_strict():
    assert core.preset("judge", "demo").image_size == 64
    assert core.build("judge", "tiny", {"hidden_dim": 32}).hidden_dim == 32
    data = core.to_dict(core.preset("judge", "tiny"))
    with pytest.raises(core.ConfigError, match="unknown key 'width' for JudgeConfig"):
        core.from_dict(core.JudgeConfig, dict(data, width=3))
    del data["dropout"]
    with pytest.raises(core.ConfigError, match="missing key 'dropout'"):
        core.from_dict(core.JudgeConfig, data)
    with pytest.raises(core.ConfigError, match="multiple of 4"):
        core.build("judge", "tiny", {"channels": 6})
    with pytest.raises(core.ConfigError, match="multiple of 16"):
        core.build("judge", "tiny", {"image_size": 40})
    with pytest.raises(core.ConfigError, match="unknown judge preset 'huge'"):
        core.preset("judge", "huge")


def test_judge_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    path = save_checkpoint(str(tmp_path / "judge.safetensors"), {"emotion_judge": judge})
    loaded = load_components(path, ["emotion_judge"])["emotion_judge"]
    assert loaded.config == judge.config
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x).logits, judge(x).logits)
    from emodiff_core.models import ExpressionRegressor

    with pytest.raises(CheckpointError, match="has a RegressorConfig, expected JudgeConfig"):
        save_checkpoint(str(tmp_path / "bad.safetensors"),
                        {"emotion_judge": ExpressionRegressor(core.preset("regressor", "tiny"))})


# --------------------------------------------------------------------------- targets
def test_frame_targets_follow_the_effective_intensity():
    sad = EMOTIONS.index("sad")
    onset = np.array([0.0, 0.05, 0.2, 0.5, 1.0])
    w = emotion_weights({"clip_id": "x", "emotion": "sad", "intensity": 1.0}, {"onset": onset}, 5)
    labels, k = frame_targets(w, DEFAULT_RULE)
    # below 0.1 neutral, 0.1 .. 0.4 left out, from 0.4 the emotion
    assert labels.tolist() == [0, 0, SKIPPED, sad, sad]
    assert np.allclose(k, onset)
    level1 = emotion_weights({"clip_id": "x", "emotion": "sad", "intensity": 1 / 3}, {"onset": np.ones(3)}, 3)
    assert frame_targets(level1)[0].tolist() == [SKIPPED] * 3               # MEAD level 1: too faint to label
    assert frame_targets(level1, LabelRule(0.1, 0.25, 0.75))[0].tolist() == [sad] * 3
    neutral = emotion_weights({"clip_id": "x", "emotion": "neutral", "intensity": 0.0}, {}, 2)
    assert frame_targets(neutral)[0].tolist() == [0, 0]
    assert emotion_weights({"clip_id": "x", "emotion": None}, {}, 2) is None
    # emotion changes: the per-frame weights, a blend without a dominant emotion is left out
    change = {"clip_id": "x", "emotion": "sad", "emotion_change": True}
    assert emotion_weights(change, {}, 3) is None
    blend = np.zeros((3, 8))
    blend[0, sad] = 0.9
    blend[1, [sad, 1]] = 0.5
    blend[2, 0] = 1.0                                       # the neutral column is ignored
    labels, k = frame_targets(emotion_weights(change, {"emotion_weights": blend}, 3))
    assert labels.tolist() == [sad, SKIPPED, 0] and np.allclose(k, [0.9, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"emotion_weights'\] must be \[4, 8\]"):
        emotion_weights(change, {"emotion_weights": blend}, 4)
    with pytest.raises(core.ConfigError, match="neutral_below <= emotion_from"):
        core.from_dict(LabelRule, {"neutral_below": 0.5, "emotion_from": 0.2, "dominant_share": 0.8})


def test_graded_targets_are_the_frames_mix_and_the_loss_is_least_there():
    sad, angry = EMOTIONS.index("sad"), EMOTIONS.index("angry")
    w = np.zeros((4, 8))
    w[0, sad] = 0.3                             # 30 % sad, 70 % neutral
    w[1, [sad, angry]] = [0.9, 0.6]             # a blend stronger than 1: scaled to sum 1, no neutral left
    w[2, 0] = 1.0                               # the neutral column is ignored: a neutral frame
    w[3, sad] = 1.0
    q = graded_targets(w)
    assert q.dtype == np.float32 and np.allclose(q.sum(1), 1.0)
    assert q[0, sad] == pytest.approx(0.3) and q[0, 0] == pytest.approx(0.7)
    assert q[1, sad] == pytest.approx(0.6) and q[1, angry] == pytest.approx(0.4) and q[1, 0] == pytest.approx(0.0)
    assert q[2, 0] == 1.0 and q[3, sad] == 1.0 and q[3, 0] == 0.0
    target = torch.from_numpy(q)
    # the cross-entropy against a distribution is least (its entropy) where the softmax is that distribution
    at_target = graded_cross_entropy(torch.log(target.clamp_min(1e-12)), target)
    entropy = -(target * torch.log(target.clamp_min(1e-12))).sum(1).mean()
    assert float(at_target) == pytest.approx(float(entropy), abs=1e-5)
    logits = torch.log(target.clamp_min(1e-12)).clone().requires_grad_(True)
    graded_cross_entropy(logits, target).backward()
    assert float(logits.grad.abs().max()) < 1e-6
    other = torch.randn(4, 8)
    assert float(graded_cross_entropy(other, target)) > float(at_target)
    # one-hot targets give F.cross_entropy's value, label smoothing included
    hard = torch.tensor([sad, 0])
    assert float(graded_cross_entropy(other[:2], torch.eye(8)[hard], 0.1)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(other[:2], hard, label_smoothing=0.1)), abs=1e-6)


def test_spearman_on_known_inputs():
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)          # 1 - 6 * 4 / (5 * 24)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))   # tied ranks 2.5
    assert spearman([0, 0.5, 1.0], [0.9, 0.5, 0.1]) == pytest.approx(-1.0)
    assert spearman([1, 10, 100], [1, 2, 3]) == pytest.approx(1.0)                   # ranks, not values
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------- trainer
def test_trainer_exports_a_loadable_judge_and_skips_unweighted_changes(corpus, tmp_path):
    from training.__main__ import main

    frames = JudgeFrames(corpus, "train", 32, stride=4)
    assert frames.skipped_clips == ["c000016"]
    change = frames.clip_id == "c000017"
    assert change.any() and set(frames.labels[torch.from_numpy(change)].tolist()) <= {
        EMOTIONS.index("sad"), EMOTIONS.index("angry"), SKIPPED}
    assert frames.frames.shape[1:] == (3, 32, 32) and frames.frames.dtype == torch.uint8
    drawn = frames.labels[frames.draw(np.random.default_rng(0), 6000)]          # every class equally often
    share = np.bincount(np.where(drawn.numpy() == SKIPPED, len(EMOTIONS), drawn.numpy()))
    share = share[share > 0] / len(drawn)
    assert len(share) == len(frames.class_counts) and np.allclose(share, 1 / len(share), atol=0.03)

    run = str(tmp_path / "judge")
    assert main(["train", "judge", "--config", os.path.join(CONFIGS, "judge_tiny.json"), "--data", corpus,
                 "--out", run]) == 0
    judge = load_components(os.path.join(run, "emotion_judge.safetensors"))["emotion_judge"]
    assert isinstance(judge, EmotionJudge) and judge.config == core.preset("judge", "tiny")
    log = open(os.path.join(run, "log.csv")).read()
    assert "val_accuracy_k1" in log.splitlines()[0] and len(log.splitlines()) >= 5
    report = judge_report(judge, JudgeFrames(corpus, "train", 32, stride=4))
    assert 0 <= report["accuracy_labelled"] <= 1 and set(report["per_emotion_k1"]) == set(EMOTIONS)
    assert np.asarray(report["confusion_k1"]).sum() == report["frames_k1"]
    assert 0 <= report["intensity_mae"] <= 1

    from training.evaluate import evaluate

    only_judge = evaluate(run, corpus, split="train")        # a folder with a judge alone: its accuracy only
    assert set(only_judge) >= {"judge"} and "emotion_control" not in only_judge
    assert report["probability_spearman"] is None or -1 <= report["probability_spearman"] <= 1


def test_trainer_with_graded_targets(corpus, tmp_path):
    """``data.labels.graded`` trains on every frame's mix; older files without the key train hard labels."""
    import json

    from training.__main__ import main
    from training.configfile import load_config
    from training.train_judge import JudgeTrainingConfig

    frames = JudgeFrames(corpus, "train", 32, stride=4)
    assert frames.graded.shape == (len(frames), 8) and torch.allclose(frames.graded.sum(1), torch.ones(len(frames)))
    steady = (frames.clip_emotion > 0) & (frames.clip_emotion < 8)
    rows = torch.from_numpy(np.flatnonzero(steady))
    took = frames.graded[rows, torch.from_numpy(frames.clip_emotion[steady])]
    assert torch.allclose(took, frames.intensity[rows].clamp(0, 1))      # its emotion's share = k x onset
    cfg = json.load(open(os.path.join(CONFIGS, "judge_tiny.json")))
    assert "graded" not in cfg["data"]["labels"]
    assert load_config(os.path.join(CONFIGS, "judge_tiny.json"), JudgeTrainingConfig).data.labels.graded is False
    assert load_config("judge_graded.json", JudgeTrainingConfig).data.labels.graded is True
    cfg["data"]["labels"]["graded"] = True
    path = tmp_path / "graded.json"
    path.write_text(json.dumps(cfg))
    run = str(tmp_path / "graded")
    assert main(["train", "judge", "--config", str(path), "--data", corpus, "--out", run]) == 0
    rows = [line.split(",") for line in open(os.path.join(run, "log.csv")).read().splitlines()]
    ce = [float(r[rows[0].index("ce")]) for r in rows[1:] if r[rows[0].index("ce")]]
    assert ce and all(math.isfinite(v) and v > 0 for v in ce)


# --------------------------------------------------------------------------- emotion control
def test_emotion_control_report_keys_and_ranges(corpus):
    from emodiff_core.fer_net import load_fer_classifier
    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
    from emodiff_core.sampling import SamplingSettings

    from training.evaluate import emotion_control_report

    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(core.preset("denoiser", "tiny")).eval()
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    levels = (0.0, 0.5, 1.0)
    report = emotion_control_report(denoiser, generator, judge, corpus, "test", identities=4, intensities=levels,
                                    frames=6, settle_frames=2, settings=SamplingSettings(steps=2, start_noise=1.0),
                                    fer=load_fer_classifier(), extra_judges={"same.safetensors": judge},
                                    neutral_seeds=3)
    assert [u["identity"] for u in report["identities"]] == ["id0007"]        # the one test identity
    # another judge reads the same videos: the same judge again gives the same measures
    again = report["by_judge"]["same.safetensors"]
    for key in ("video_accuracy_k1", "frame_accuracy_k1", "spearman_mean", "asked_probability", "confusion_k1"):
        assert again[key] == report[key], key
    assert "fer" not in again and again["ground_truth"]["clips"] == report["ground_truth"]["clips"]
    assert report["videos_per_identity"] == 1 + 7 * 2 and report["videos"] == 15
    for key in ("video_accuracy_k1", "frame_accuracy_k1", "neutral_share_k0", "neutral_frame_share_k0"):
        assert 0.0 <= report[key] <= 1.0, key
    assert set(report["per_emotion_k1"]) == set(EMOTIONS)
    assert np.asarray(report["confusion_k1"]).sum() == 8                       # 8 videos at k = 1
    judged_k0 = report["judged_k0_per_identity"]                               # the neutral video, as judged
    assert list(judged_k0) == ["id0007"] and len(judged_k0["id0007"]) == 1 and judged_k0["id0007"][0] in EMOTIONS
    assert report["neutral_share_k0"] == float(judged_k0["id0007"][0] == "neutral")
    seeds = report["neutral_k0_seeds"]               # the grid's neutral video first, then two more seeds
    assert report["neutral_seeds"] == 3 and seeds["videos"] == 3 and list(seeds["per_identity"]) == ["id0007"]
    assert len(seeds["per_identity"]["id0007"]) == 3 and seeds["per_identity"]["id0007"][0] == judged_k0["id0007"][0]
    assert seeds["neutral_share"] == pytest.approx(np.mean([x == "neutral" for x in seeds["per_identity"]["id0007"]]))
    assert again["neutral_k0_seeds"] == seeds
    assert set(report["asked_probability"]) == set(EMOTIONS) - {"neutral"}
    for curve in report["asked_probability"].values():
        assert list(curve) == ["0.000", "0.500", "1.000"] and all(0 <= p <= 1 for p in curve.values())
    for rho in report["spearman_per_emotion"].values():
        assert rho is None or -1 - 1e-9 <= rho <= 1 + 1e-9
    assert report["spearman_mean"] is None or -1 <= report["spearman_mean"] <= 1
    assert set(report["video_accuracy_per_intensity"]) == {"0.000", "0.500", "1.000"}
    assert report["video_accuracy_per_intensity"]["0.000"] is None                 # k = 0 is only neutral
    assert set(report["judged_intensity"]) == set(report["asked_probability"])
    fer = report["fer"]
    assert 0 <= fer["shared_emotion_frame_accuracy_k1"] <= 1 and fer["chance"] == pytest.approx(1 / 6)
    assert fer["frames"] == 8 * 4                            # 8 videos at k = 1, 4 judged frames each
    truth = report["ground_truth"]
    assert truth["clips"] >= 2 and truth["per_emotion_k1"]["neutral"]["videos"] >= 1
    grid = report["ground_truth_levels"]          # the corpus' rendering of every generated video's condition
    assert grid["clips"] == 15 and set(grid["asked_probability"]) == set(report["asked_probability"])
    assert grid["fer"]["frames"] == fer["frames"] and again["ground_truth_levels"]["clips"] == 15
    assert report["seconds"] > 0 and report["chance"] == pytest.approx(1 / 8)
    assert again["ground_truth_levels"]["asked_probability"] == grid["asked_probability"]
    with pytest.raises(ValueError, match="must exceed settle_frames"):
        emotion_control_report(denoiser, generator, judge, corpus, "test", frames=4, settle_frames=4)
    with pytest.raises(ValueError, match="may not be named 'judge'"):      # the report's own judge's name
        emotion_control_report(denoiser, generator, judge, corpus, "test", extra_judges={"judge": judge})
    with pytest.raises(ValueError, match="neutral_seeds must be at least 1"):
        emotion_control_report(denoiser, generator, judge, corpus, "test", neutral_seeds=0)


def test_extra_neutral_videos_do_not_depend_on_how_many_are_asked():
    # each extra neutral video has its own seed and its own sampling call: asking for more seeds adds videos
    # and leaves the earlier ones as they were (one batch drew noise for all of them together)
    from emodiff_core import pipeline as pl
    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
    from emodiff_core.sampling import SamplingSettings

    from training.evaluate import extra_neutral_videos

    torch.manual_seed(0)
    tiny = core.preset("denoiser", "tiny")
    denoiser = EMOdiffheadDenoiser(tiny).eval()
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    t = np.arange(16000 * 4 // 30) / 16000
    audio = pl.encode_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, 30, tiny.audio)
    face = torch.rand(3, tiny.image_size, tiny.image_size)
    settings = SamplingSettings(steps=2, start_noise=1.0)
    one = extra_neutral_videos(denoiser, generator, face, audio, settings, seed=5, count=1)
    three = extra_neutral_videos(denoiser, generator, face, audio, settings, seed=5, count=3)
    assert one.shape == (audio.num_frames, 1, 3, tiny.image_size, tiny.image_size)
    assert three.shape[1] == 3
    assert torch.equal(three[:, :1], one)
    assert not torch.equal(three[:, 1], three[:, 0]) and not torch.equal(three[:, 2], three[:, 1])


def test_summarise_neutral_videos_reads_each_video_by_its_mean_probability():
    from training.evaluate import JudgedVideo, summarise_neutral_videos

    neutral_j, fear_j = EMOTIONS.index("neutral"), EMOTIONS.index("fear")

    def video(identity, neutral_frames, fear_frames):
        probs = torch.full((neutral_frames + fear_frames, len(EMOTIONS)), 0.01)
        probs[:neutral_frames, neutral_j] = 0.9
        probs[neutral_frames:, fear_j] = 0.9
        return JudgedVideo(identity, "neutral", 0.0, probs)

    out = summarise_neutral_videos([video("a", 3, 1), video("b", 1, 3), video("a", 4, 0)])
    assert out["videos"] == 3 and out["per_identity"] == {"a": ["neutral", "neutral"], "b": ["fear"]}
    assert out["neutral_share"] == pytest.approx(2 / 3) and out["neutral_frame_share"] == pytest.approx(8 / 12)
    assert summarise_neutral_videos([]) is None


def test_rendered_truth_is_the_corpus_clip_at_each_asked_intensity(corpus):
    """The fair ceiling of the control measures: the audio clip re-rendered with each asked (emotion, k). At
    a frame's own emotion and weight it is that frame exactly; at k = 0 its neutral twin; the change from
    neutral grows with k."""
    from training.clips import ClipDataset
    from training.evaluate import rendered_truth

    data = ClipDataset(corpus)
    meta = next(m for m in sorted(data.metas("train", labelled=True), key=lambda m: m["clip_id"])
                if m["emotion"] != "neutral" and not m.get("emotion_change"))
    clip = data.load(meta, with_audio=False)
    last = len(clip.frames) - 1
    k = float(clip.extras["emotion_weights"][last, EMOTIONS.index(meta["emotion"])])   # the corpus jitters k
    own, neutral, half = rendered_truth(meta, clip, corpus, 64, [(meta["emotion"], k), ("neutral", 0.0),
                                                                (meta["emotion"], k / 2)], [last - 1, last, last + 5])
    assert own.shape == (2, 3, 64, 64) and 0.0 <= float(own.min()) and float(own.max()) <= 1.0   # past the end: cut
    truth = torch.from_numpy(np.array(clip.frames[last])).permute(2, 0, 1).float() / 255.0
    assert float((own[1] - truth).abs().max()) < 1e-6
    assert float((own - neutral).abs().mean()) > float((half - neutral).abs().mean()) > 0
    no_twins = dict(meta)
    del no_twins["corpus_seed"]
    assert rendered_truth(no_twins, clip, corpus, 64, [("happy", 1.0)], [0]) is None


def test_emotion_control_with_guidance_needs_a_model_trained_for_it(corpus):
    import dataclasses

    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
    from emodiff_core.pipeline import PipelineError
    from emodiff_core.sampling import SamplingSettings

    from training.evaluate import emotion_control_report

    torch.manual_seed(0)
    cfg = core.preset("denoiser", "tiny")
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    options = dict(identities=1, intensities=(0.0, 1.0), frames=4, settle_frames=2, ground_truth=False)
    guided = SamplingSettings(steps=2, start_noise=1.0, guidance=3.0)
    trained = EMOdiffheadDenoiser(dataclasses.replace(cfg, expression_dropout=0.1)).eval()
    report = emotion_control_report(trained, generator, judge, corpus, "test", settings=guided, **options)
    assert report["guidance"] == 3.0 and report["videos"] == 8 and "ground_truth" not in report
    assert "lipsync" not in report and "identity" not in report                # measured only when asked
    with pytest.raises(PipelineError, match="not trained with expression dropout"):
        emotion_control_report(EMOdiffheadDenoiser(cfg).eval(), generator, judge, corpus, "test", settings=guided,
                               **options)


def test_emotion_control_measures_what_the_emotion_costs_lip_sync_and_identity(corpus):
    """Every generated video's lip sync (psi[0] by the regressor against the speech envelope) and identity
    (dlib cosine to the portrait), averaged: what a guidance sweep trades for its emotion."""
    from emodiff_core import metrics_video as mv
    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator, ExpressionRegressor
    from emodiff_core.sampling import SamplingSettings

    from training.evaluate import emotion_control_report

    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(core.preset("denoiser", "tiny")).eval()
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    extractor = mv.PsiExtractor(ExpressionRegressor(core.preset("regressor", "tiny")))
    report = emotion_control_report(denoiser, generator, judge, corpus, "test", identities=1, intensities=(0.0, 1.0),
                                    frames=20, settle_frames=2, ground_truth=False, extractor=extractor,
                                    descriptor=mv.FaceDescriptor(), settings=SamplingSettings(steps=2, start_noise=1.0))
    assert report["videos"] == 8
    assert -1.0 <= report["lipsync"] <= 1.0 and -1.0 <= report["identity"] <= 1.0
    short = emotion_control_report(denoiser, generator, judge, corpus, "test", identities=1, intensities=(0.0, 1.0),
                                   frames=6, settle_frames=2, ground_truth=False, extractor=extractor,
                                   settings=SamplingSettings(steps=2, start_noise=1.0))
    assert "lipsync" not in short and "identity" not in short          # too short for lip sync; no descriptor


def test_evaluate_guides_the_emotion_control_as_the_denoiser_file_recommends(corpus, tmp_path, monkeypatch):
    import dataclasses

    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
    from emodiff_core.pipeline import GUIDANCE_INFO_KEY
    from emodiff_core.sampling import SamplingSettings

    import training.evaluate as ev
    from training.evaluate import evaluate

    # dlib's descriptor on every control frame was 3/4 of this test's 7 minutes; what it measures is
    # test_emotion_control_measures_what_the_emotion_costs_lip_sync_and_identity's
    monkeypatch.setattr(ev, "_face_descriptor", lambda: None)
    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(dataclasses.replace(core.preset("denoiser", "tiny"), expression_dropout=0.1)).eval()
    folder = tmp_path / "recommends2"
    folder.mkdir()
    save_checkpoint(str(folder / "bundle.safetensors"),
                    {"denoiser": denoiser, "expression_generator": ExpressionGenerator(core.preset("expression", "tiny")),
                     "emotion_judge": EmotionJudge(core.preset("judge", "tiny"))}, info={GUIDANCE_INFO_KEY: "2"})
    options = dict(split="test", max_clips=1, videos=0, control_identities=1, control_frames=10,
                   control_intensities=(0.0, 1.0), settings=SamplingSettings(steps=2, start_noise=1.0))
    report = evaluate(str(folder), corpus, **options)
    assert report["emotion_control"]["guidance"] == 2.0                          # as `generate` samples it
    assert report["emotion_control"]["intensities"] == [0.0, 1.0] and report["emotion_control"]["videos"] == 8
    for bad in ((0.0,), (-0.5, 1.0)):                   # refused before the slow work
        with pytest.raises(ValueError, match="control intensities must be >= 0"):
            evaluate(str(folder), corpus, **dict(options, control_intensities=bad))
    with pytest.raises(ValueError, match="flie_levels must be >= 2"):
        evaluate(str(folder), corpus, flie_levels=1, **options)
    with pytest.raises(ValueError, match="probe_examples must be >= 1"):
        evaluate(str(folder), corpus, probe_examples=0, **options)
    other = tmp_path / "other_judge.safetensors"          # a second judge reads the same videos
    save_checkpoint(str(other), {"emotion_judge": EmotionJudge(core.preset("judge", "tiny"))})
    given = both = evaluate(str(folder), corpus, guidance=(1.0, 3.0), also_judges=[str(other)], **options)
    assert given["emotion_control"]["guidance"] == 1.0
    assert [scale["guidance"] for scale in given["guidance_sweep"].values()] == [1.0, 3.0]
    assert set(both["also_judged"]) == {"other_judge.safetensors"}
    assert 0 <= both["also_judged"]["other_judge.safetensors"]["accuracy_k1"] <= 1
    assert set(both["emotion_control"]["by_judge"]) == {"other_judge.safetensors"}
    for scale in both["guidance_sweep"].values():
        assert set(scale["by_judge"]["other_judge.safetensors"]) >= {"video_accuracy_k1", "spearman_mean"}
    with pytest.raises(ValueError, match="two judges named"):
        evaluate(str(folder), corpus, also_judges=[str(other), str(other)], **options)


def test_emotion_control_re_injects_the_portrait_when_asked(corpus, monkeypatch):
    from emodiff_core import metrics_video as mv
    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
    from emodiff_core.sampling import SamplingSettings

    import training.evaluate as ev

    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(core.preset("denoiser", "tiny")).eval()
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    generate, periods = ev.generate_frames, []

    def spy(*args, **kwargs):       # what re-injection does to frames is pipeline's (tests/test_pipeline.py)
        periods.append(kwargs.get("reinject_identity_every", 0))
        return generate(*args, **kwargs)

    monkeypatch.setattr(ev, "generate_frames", spy)
    options = dict(identities=1, intensities=(0.0, 1.0), frames=5, settle_frames=2, ground_truth=False,
                   settings=SamplingSettings(steps=2, start_noise=1.0))
    assert ev.emotion_control_report(denoiser, generator, judge, corpus, "test", **options)["reinject_identity_every"] == 0
    anchored = ev.emotion_control_report(denoiser, generator, judge, corpus, "test", reinject_identity_every=2, **options)
    assert anchored["reinject_identity_every"] == 2 and periods == [0, 2]
    periods.clear()
    descriptor = mv.FaceDescriptor()
    videos = ev.evaluate_videos(denoiser, generator, corpus, "test", clips=2, frames=6, flie_levels=0,
                                settings=options["settings"], reinject_identity_every=3, descriptor=descriptor)
    assert videos["reinject_identity_every"] == 3 and periods == [3, 3]
    # each clip's own figures, in the clips' order, average to the report's (paired comparisons of checkpoints)
    assert len(videos["per_clip"]) == len(videos["clips"]) == 2
    for key in ("psnr", "ssim", "identity", "identity_ground_truth"):
        assert videos[key] == pytest.approx(np.mean([clip[key] for clip in videos["per_clip"]]))
    # the reference for identity: the clip's own first 6 frames against its first, by the same descriptor
    data = ev.ClipDataset(corpus)
    clip = data.load(next(m for m in data.metas("test") if m["clip_id"] == videos["clips"][0]))
    truth, _ = ev.resize_clip_frames(np.asarray(clip.frames[:6]), np.asarray(clip.landmarks[:6]),
                                     denoiser.config.image_size)
    expected = mv.identity_similarity(truth[0], np.array(truth), descriptor, assume_aligned=True).similarity
    assert videos["per_clip"][0]["identity_ground_truth"] == pytest.approx(expected)
    assert 0.8 < expected <= 1.0 + 1e-6      # the first frame itself is among the six


def test_evaluate_re_injects_the_identity_as_the_denoiser_file_recommends(corpus, tmp_path):
    from emodiff_core.models import EMOdiffheadDenoiser
    from emodiff_core.pipeline import REINJECT_INFO_KEY
    from emodiff_core.sampling import SamplingSettings

    from training.evaluate import evaluate

    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(core.preset("denoiser", "tiny")).eval()
    folder = tmp_path / "recommends3"
    folder.mkdir()
    save_checkpoint(str(folder / "denoiser.safetensors"), {"denoiser": denoiser}, info={REINJECT_INFO_KEY: "3"})
    options = dict(split="test", max_clips=1, videos=0, settings=SamplingSettings(steps=2, start_noise=1.0),
                   probe_examples=8)
    report = evaluate(str(folder), corpus, **options)
    assert report["reinject_identity_every"] == 3                                          # as `generate` does
    assert report["denoiser"]["emotion_probes"]["examples"] == 8
    assert evaluate(str(folder), corpus, reinject_identity_every=0, **options)["reinject_identity_every"] == 0
    with pytest.raises(ValueError, match="must be >= 0"):
        evaluate(str(folder), corpus, reinject_identity_every=-1, **options)
    broken = tmp_path / "broken"
    broken.mkdir()
    save_checkpoint(str(broken / "denoiser.safetensors"), {"denoiser": denoiser}, info={REINJECT_INFO_KEY: "two"})
    with pytest.raises(CheckpointError, match="not a whole number"):
        evaluate(str(broken), corpus, **options)


def test_emotion_control_starts_from_the_rig_of_each_identitys_portrait(corpus, monkeypatch):
    """``start_mouth="rig"`` (`evaluate --control-start-mouth rig`): every video of the grid and of the extra neutral
    seeds starts as the pack starts a portrait's video, the identity's portrait rendered by its rig (the corpus'
    landmarks) in the mouth region, the video's own previous frame elsewhere."""
    from emodiff_core import faces
    from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator

    import training.evaluate as ev

    torch.manual_seed(0)
    denoiser = EMOdiffheadDenoiser(core.preset("denoiser", "tiny")).eval()
    generator = ExpressionGenerator(core.preset("expression", "tiny")).eval()
    judge = EmotionJudge(core.preset("judge", "tiny")).eval()
    generate, anchors_seen = ev.generate_frames, []

    def spy(*args, **kwargs):
        anchors_seen.append((len(args[1]) if args[1].dim() == 4 else 1, kwargs.get("anchor_source")))
        return generate(*args, **kwargs)

    monkeypatch.setattr(ev, "generate_frames", spy)
    options = dict(identities=1, intensities=(0.0, 1.0), frames=5, settle_frames=2, ground_truth=False,
                   neutral_seeds=2)
    assert ev.emotion_control_report(denoiser, generator, judge, corpus, "test", **options)["start_mouth"] == "previous"
    assert [anchor for _, anchor in anchors_seen] == [None, None]
    anchors_seen.clear()
    assert ev.emotion_control_report(denoiser, generator, judge, corpus, "test", start_mouth="rig",
                                     **options)["start_mouth"] == "rig"
    assert [videos for videos, _ in anchors_seen] == [8, 1]            # the grid (neutral + 7 emotions), one more seed
    size = denoiser.config.image_size
    weight = torch.from_numpy(faces.mouth_region_weight(size, size))
    for videos, anchor in anchors_seen:
        previous = torch.rand(videos, 3, size, size, generator=torch.Generator().manual_seed(2))
        start = anchor(1, previous)
        assert start.shape == previous.shape
        assert torch.equal(start[..., weight == 0], previous[..., weight == 0])     # the video's own frame
        assert not torch.allclose(start[..., weight == 1], previous[..., weight == 1])   # the rig's mouth
    # the portrait's landmarks are the corpus' own for that frame
    identity, portrait, landmarks, audio_meta = ev.control_portraits(corpus, "test", 1, 5)[0]
    data = ev.ClipDataset(corpus)
    meta = next(m for m in sorted(data.metas("test"), key=lambda m: m["clip_id"])
                if m["identity"] == identity and m.get("emotion") == "neutral")
    assert np.array_equal(landmarks, data.load(meta, with_audio=False).landmarks[0])
    with pytest.raises(ValueError, match="start_mouth must be one of previous, rig; got 'voice'"):
        ev.emotion_control_report(denoiser, generator, judge, corpus, "test", start_mouth="voice", **options)
