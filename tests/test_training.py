"""Training: the corpus, configs, every trainer, resume after a kill, DDP on two CPU processes, export,
evaluation and plots."""
import csv
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from emodiff_core.emotions import EMOTIONS
from emodiff_core.sampling import SamplingSettings

from training.clips import ClipDataset
from training.configfile import TrainingConfigError, load_config
from training.corpus import generate_corpus, render_clip
from emodiff_core.facemodel import COMPONENT, EXPRESSION_COMPONENTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "training", "configs")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    stats = generate_corpus(out, clips=10, seed=3, size=64, identities=8)
    assert stats["clips_total"] == 10
    return out


def test_corpus_is_deterministic_and_split_by_identity(corpus):
    a = render_clip(3, 1, 8, 64)
    b = render_clip(3, 1, 8, 64)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.psi, b.psi) and np.array_equal(a.audio, b.audio)
    ds = ClipDataset(corpus)
    by_identity = {}
    for meta in ds:
        by_identity.setdefault(meta["identity"], set()).add(meta["split"])
        assert meta["emotion"] is not None and meta["n_frames"] >= 30
    assert all(len(s) == 1 for s in by_identity.values())          # no identity in two splits
    assert {"train", "val", "test"} <= set.union(*by_identity.values())
    clip = ds.load(ds.metas()[0])
    assert clip.frames.shape[1:] == (64, 64, 3) and clip.psi.shape == (len(clip.frames), 50)
    assert len(clip.audio) == round(len(clip.frames) * 16000 / 30)


def test_mouth_follows_the_audio_and_emotions_follow_their_directions(corpus):
    ds = ClipDataset(corpus)
    for meta in ds.metas()[:4]:
        clip = ds.load(meta)
        speech = clip.extras["psi_speech"][:, COMPONENT["jaw_open"]]
        corr = np.corrcoef(speech, clip.extras["envelope"])[0, 1]
        assert corr > 0.9
        # the rendered mouth opens with psi's jaw component: inner-lip gap vs jaw_open
        gap = clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]
        assert np.corrcoef(gap, clip.psi[:, COMPONENT["jaw_open"]])[0, 1] > 0.8
    assert len(EXPRESSION_COMPONENTS) == 13


def test_contact_sheet(tmp_path):
    from training.corpus import corpus_contact_sheet

    sheet = corpus_contact_sheet(str(tmp_path / "sheet.png"), seed=0, size=64, identity_indices=(7,), intensities=(0.5, 1.0))
    assert sheet.shape == (18 + 2 * 64, 8 * 64, 3) and os.path.isfile(tmp_path / "sheet.png")


def test_denoiser_data_identity_from_a_neutral_clip_and_motion_dropout(corpus, tiny_config):
    from training.data import DenoiserData

    same = DenoiserData(corpus, tiny_config, "train")
    assert list(same.identity_clip) == list(range(len(same)))
    data = DenoiserData(corpus, tiny_config, "train", identity_from="neutral_clip", motion_dropout=1.0)
    neutral = {c.meta["identity"]: i for i, c in enumerate(data.clips) if c.meta["emotion"] == "neutral"}
    assert neutral, "the test corpus should hold a neutral clip"
    for i, c in enumerate(data.clips):
        j = data.identity_clip[i]
        assert data.clips[j].meta["identity"] == c.meta["identity"]
        assert j == neutral.get(c.meta["identity"], i)
    emotional = [i for i, c in enumerate(data.clips) if data.identity_clip[i] != i]
    assert emotional, "the test corpus should hold an emotional clip of an identity with a neutral clip"
    i = emotional[0]                   # its identity frame is the neutral clip's frame, not its own
    ex = data.sample(i, 5, 3)
    want = data.clips[data.identity_clip[i]].frames[3].float() / 127.5 - 1
    assert torch.equal(ex["identity"], want)
    ex = data.sample(0, 7, 2, motion_from_identity=True)
    assert torch.equal(ex["motion"], ex["identity"][None].expand_as(ex["motion"]))
    kept = data.sample(0, 7, 2)
    assert not torch.equal(kept["motion"], ex["motion"])       # otherwise the previous frames
    batch = data.batch(np.random.default_rng(0), 4)             # motion_dropout 1: every example
    assert torch.equal(batch["motion"], batch["identity"][:, None].expand_as(batch["motion"]))
    with pytest.raises(ValueError, match="identity_from"):
        DenoiserData(corpus, tiny_config, "train", identity_from="random")


def test_config_files_are_strict(tmp_path):
    from training.train_denoiser import DenoiserTrainingConfig

    good = json.load(open(os.path.join(CONFIGS, "denoiser_tiny.json")))
    cfg = load_config(os.path.join(CONFIGS, "denoiser_tiny.json"), DenoiserTrainingConfig)
    assert cfg.schedule.sample_steps == 3 and cfg.loss.lip == 0.2 and cfg.data.identity_from == "same_clip"
    path = tmp_path / "bad.json"

    def refused(edit, pattern):
        bad = json.loads(json.dumps(good))
        edit(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(TrainingConfigError, match=pattern):
            load_config(str(path), DenoiserTrainingConfig)

    refused(lambda c: c.pop("loss"), r"bad.json: missing key 'loss'")
    refused(lambda c: c["optim"].update(learning_rate=1), r"bad.json: unknown key 'optim.learning_rate'")
    refused(lambda c: c["loss"].pop("eye"), r"missing key 'loss.eye'")
    refused(lambda c: c["schedule"].update(sample_steps="3"), r"schedule.sample_steps: expected an integer")
    refused(lambda c: c["data"].update(identity_from="random"), r"bad.json: data.identity_from must be one of")
    refused(lambda c: c["optim"].update(batch_size=0), r"optim.batch_size must be positive")
    refused(lambda c: c["loss"].update(texture=-1.0), r"bad.json: loss.texture must be >= 0, got -1.0")
    path.write_text("{not json")
    with pytest.raises(TrainingConfigError, match="not valid JSON"):
        load_config(str(path), DenoiserTrainingConfig)
    with pytest.raises(TrainingConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.json"), DenoiserTrainingConfig)


def test_every_shipped_config_loads_and_builds_its_model(tmp_path):
    from emodiff_core import config as core
    from training.configfile import ModelSection
    from training.train_denoiser import DenoiserTrainingConfig
    from training.train_generator import GeneratorTrainingConfig
    from training.train_judge import JudgeTrainingConfig
    from training.train_regressor import RegressorTrainingConfig
    from training.train_superres import SuperResTrainingConfig

    schemas = {"denoiser": (DenoiserTrainingConfig, "denoiser"), "generator": (GeneratorTrainingConfig, "expression"),
               "regressor": (RegressorTrainingConfig, "regressor"), "superres": (SuperResTrainingConfig, "superres"),
               "judge": (JudgeTrainingConfig, "judge")}
    names = sorted(os.listdir(CONFIGS))
    assert {n.split("_")[0] for n in names} == set(schemas) and len(names) == 65
    for name in names:
        schema, kind = schemas[name.split("_")[0]]
        cfg = load_config(name, schema)                       # a bare name is found in training/configs
        model = cfg.model.build(kind, name)
        if name.startswith("denoiser_") and name not in ("denoiser_demo.json", "denoiser_tiny.json"):
            # the emotion fine-tunes (every other denoiser file) add the spatial map
            assert model == dataclasses.replace(core.preset(kind, "demo"), expression_spatial=8)
            assert cfg.emotion.twin_share > 0 and cfg.loss.emotion > 0
            # files written before the same-emotion twins read as without them; real-texture mixes blur motion
            assert (cfg.emotion.twin_same_emotion_share > 0) == name.startswith(("denoiser_emotion_k",
                                                                                  "denoiser_emotion_real"))
            assert (cfg.data.motion_blur > 0) == ("real" in name)
            # the demo's denoiser and the arms from it (every version-4 arm after the first version-4 fine-tune)
            # keep the blur to the real-texture clips (the procedural faces' motion frames stay sharp)
            from_demo = name.startswith("denoiser_emotion_real_v4_")
            assert (cfg.data.motion_blur_sources == "real_texture") == from_demo
            # only the re-injection-state fine-tunes (real-only, mixed, from two demos) hold neutral-oldest examples
            assert (cfg.emotion.twin_neutral_oldest_share > 0) == (name.startswith("denoiser_emotion_real_anchor")
                                                                   or name.endswith(("_v4_anchor.json",
                                                                                     "_nodrop_no50.json")))
            # the emphasis arms (and every arm from them) double the emotion region's weight and raise the share of
            # twin examples; two split it, t6 keeps the first demo's share, tw10 makes every example of a clip with
            # twins a twin example
            split_or_other = {"_v4_w8.json": (8.0, 0.6), "_v4_twin8.json": (4.0, 0.8), "_nodrop_t6.json": (8.0, 0.6),
                              "_nodrop_tw10.json": (8.0, 1.0)}
            emphasis = next((v for k, v in split_or_other.items() if name.endswith(k)),
                            (8.0, 0.8) if "_v4_emph" in name else (4.0, 0.6))
            assert (cfg.loss.emotion, cfg.emotion.twin_share) == emphasis, name
            # and the texture arms ask the predicted x0 for the target's fine detail (weight 2, then 4 from tex4 on)
            texture = 4.0 if "_emph_tex4" in name else 2.0 if name.endswith("_emph_tex.json") else 0.0
            assert cfg.loss.texture == texture, name
            # a twin is the target in half of the twin examples (the first recipes: 40 %)
            first = ("denoiser_emotion.json", "denoiser_emotion_v3.json", "denoiser_emotion_v3b.json",
                     "denoiser_real.json", "denoiser_real_v3.json")
            assert cfg.emotion.twin_target_share == (0.4 if name in first else 0.5), name
            # the no-dropout arms train without the null condition of guidance (its neutral psi would otherwise also
            # stand for "any emotion"); the demo samples without guidance on the emotion
            assert (cfg.emotion.expression_dropout == 0.0) == ("_nodrop" in name), name
            # the photo-anchor arms hold the source photo there instead (the last with neutral-oldest examples too),
            # the second also in every slot at times, the third and the last at another pose than the identity's
            photo_pose = ("denoiser_emotion_real_photo_pose.json", "denoiser_emotion_real_anchor_photo.json")
            assert (cfg.emotion.twin_photo_anchor_share > 0) == (name.startswith("denoiser_emotion_real_photo")
                                                                 or name in photo_pose)
            assert (cfg.emotion.twin_photo_still_share > 0) == (name == "denoiser_emotion_real_photo_still.json")
            assert cfg.emotion.twin_photo_oldest_own_pose == (name in photo_pose)
            # one arm weights the emotion region three times more on the real-texture examples
            assert cfg.emotion.real_texture_emotion_mult == (3.0 if name.endswith("_nodrop_rt3.json") else 1.0)
            # and four start 30 % or 15 % of their examples from the previous frame diffused, as sampling does
            # (asp30 only the procedural clips' examples)
            anchored = {"_nodrop_as30.json": 0.3, "_nodrop_asp30.json": 0.3, "_nodrop_as15.json": 0.15,
                        "_nodrop_as30_pairs.json": 0.3}
            assert cfg.data.anchored_start_share == next((v for k, v in anchored.items() if name.endswith(k)), 0.0)
            assert cfg.data.anchored_start_sources == ("procedural" if name.endswith("_nodrop_asp30.json") else "all")
            # the last of them adds intensity pairs (the dropped probe of 2026-12-07) to the demo's last recipe
            pairs = name.endswith("_nodrop_as30_pairs.json")
            assert (cfg.emotion.intensity_pair_share, cfg.loss.intensity_pair) == ((0.5, 8.0) if pairs else (0.0, 0.0))
            continue
        if name.startswith("superres"):                      # the real-texture head learns to restore detail
            assert (cfg.data.input_blur > 0) == (name != "superres_demo.json")
            # the heads that invent texture; the second over sliding windows (no grid of its own)
            assert (cfg.loss.texture > 0) == name.startswith("superres_texture")
            assert (cfg.loss.texture_stride == 1) == name.startswith(("superres_texture_sliding",
                                                                      "superres_texture_lips"))
            # the last keeps the texture term off the lips
            assert (cfg.loss.texture_mouth == 0) == (name == "superres_texture_lips.json")
        if name.startswith("generator"):     # four files add the term toward the data's emotion directions
            weights = {"generator_direction.json": 10.0, "generator_direction30.json": 30.0,
                       "generator_direction_anchor.json": 10.0, "generator_direction_start_magnitudes.json": 10.0}
            assert cfg.loss.lambda_direction == weights.get(name, 0.0)
            # eleven hold the sequences to the generator they start from, without the GAN's terms, one moving only
            # each noise's time-mean d_y, one taking the directions' magnitudes from that generator, eight keeping
            # its emotional sequences on the data's support (one its speaking mouth too, one its whole mouth, one
            # its whole mouth and its brow lowering, two its whole mouth and, in happy, sad and surprised, every
            # component but the brow lowering, one of them over 300 frames, and two as that last but for happy's
            # upper-lip raise, with the data's window weighed again, one of them with sad's brow lowering)
            window = "generator_support_course_detail_long_window.json"
            sad_brow = "generator_support_course_detail_long_window_sad_brow.json"
            cosine = "generator_support_course_detail_long_window_sad_brow_cosine.json"     # sad_brow, rates decayed
            rows = "generator_support_course_detail_long_window_sad_brow_rows.json"  # sad_brow, the moved rows alone
            anchored = name in ("generator_direction_anchor.json", "generator_mean_direction.json",
                                "generator_direction_start_magnitudes.json", "generator_support_course.json",
                                "generator_support_speech_course.json", "generator_support_course_mouth.json",
                                "generator_support_course_mouth_brow.json",
                                "generator_support_course_mouth_detail.json",
                                "generator_support_course_mouth_detail_long.json", window, sad_brow, cosine, rows)
            assert (cfg.loss.lambda_anchor, cfg.loss.lambda_adversarial) == ((10.0, 0.0) if anchored else (0.0, 1.0))
            assert cfg.loss.anchor_mean_direction == (name == "generator_mean_direction.json")
            assert cfg.loss.anchor_support_course == name.startswith("generator_support")
            assert cfg.loss.anchor_speech_course == (name == "generator_support_speech_course.json")
            assert cfg.loss.direction_magnitudes == ("start" if name == "generator_direction_start_magnitudes.json"
                                                     else "data")
            mouth = ("jaw_open", "mouth_width", "upper_lip_raise", "lip_press", "lower_lip_depress")
            detail = ("generator_support_course_mouth_detail.json", "generator_support_course_mouth_detail_long.json")
            speaking = tuple(c for c in mouth if c != "upper_lip_raise")
            kept = {"generator_support_course_mouth.json": mouth, detail[0]: mouth, detail[1]: mouth,
                    "generator_support_course_mouth_brow.json": mouth + ("brow_lower",), window: speaking,
                    sad_brow: speaking, cosine: speaking, rows: speaking}
            assert cfg.loss.support_kept == kept.get(name, ())
            small = [c for c in EXPRESSION_COMPONENTS if c not in mouth + ("brow_lower",)]
            detailed = {e: small for e in ("happy", "sad", "surprised")}
            lip = ["upper_lip_raise"]          # every emotion but happy keeps the upper-lip raise support_kept lost
            windowed = dict({e: lip for e in ("angry", "contempt", "disgusted", "fear")}, happy=small, sad=lip + small,
                            surprised=lip + small)
            by_emotion = {detail[0]: detailed, detail[1]: detailed, window: windowed,
                          sad_brow: dict(windowed, sad=lip + small + ["brow_lower"])}
            by_emotion[cosine] = by_emotion[rows] = by_emotion[sad_brow]
            assert cfg.loss.support_kept_by_emotion == by_emotion.get(name, {})
            assert cfg.loss.anchor_frames == (300 if name in (detail[1], window, sad_brow, cosine, rows) else 0)
            assert cfg.loss.anchor_window_weight == (1.0 if name in (window, sad_brow, cosine, rows) else 0.0)
            assert cfg.optim.lr_decay == ("cosine" if name == cosine else "constant")
            assert cfg.optim.trainable == ("moved_emotion_rows" if name == rows else "all")
            if name in (window, sad_brow, cosine, rows):  # the embedding's rows alone at a hundred times the rate
                assert cfg.optim.lr_g == (0.02 if name == rows else 0.0002)
        if name.startswith("regressor"):                     # the version-3 regressor reads softened frames too
            assert (cfg.data.blur > 0) == (name == "regressor_v3.json")
        assert model == core.preset(kind, cfg.model.preset)   # the shipped files change nothing
    # the shipped sizes of the former literal model sections are the presets now
    assert core.preset("superres", "demo") == core.SuperResConfig(scale=2, channels=32, num_blocks=4)
    assert core.preset("regressor", "tiny") == core.RegressorConfig(image_size=32, channels=8, expression_dim=50)
    # overrides merge deeply and are checked by the core's strict reader, naming the file and the key
    section = ModelSection("tiny", {"diffusion": {"steps": 50}, "audio": {"n_mels": 8}})
    built = section.build("denoiser", "my.json")
    assert built.diffusion.steps == 50 and built.diffusion.schedule == "cosine"
    assert built.audio.n_mels == 8 and built.audio.context == core.DENOISER_PRESETS["tiny"].audio.context
    with pytest.raises(TrainingConfigError, match=r"my.json: model .*unknown key 'audio.n_melz'"):
        ModelSection("tiny", {"audio": {"n_melz": 8}}).build("denoiser", "my.json")
    with pytest.raises(TrainingConfigError, match=r"my.json: model: unknown regressor preset 'huge'"):
        ModelSection("huge", {}).build("regressor", "my.json")


def test_sample_steps_beyond_the_schedule_is_refused_before_training(corpus, tmp_path):
    from training.train_denoiser import train

    cfg = json.load(open(os.path.join(CONFIGS, "denoiser_tiny.json")))
    cfg["schedule"]["sample_steps"] = 101                       # the tiny preset has 100 diffusion steps
    path = tmp_path / "steps.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match=r"steps.json: schedule.sample_steps: .*use at most 100"):
        train(str(path), corpus, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "state.safetensors")


def test_validation_is_off_only_for_an_empty_split(corpus, tiny_config, tmp_path, capsys):
    from training import train_denoiser, train_regressor, train_superres
    from training.clips import ClipFormatError

    data = load_config("denoiser_tiny.json", train_denoiser.DenoiserTrainingConfig).data
    val = train_denoiser._validation_set(corpus, tiny_config, data, seed=0, announce=True)
    assert val["x0"].shape == (data.val_examples, 3, 32, 32)
    nothing = dataclasses.replace(data, val_split="nosuchsplit")
    assert train_denoiser._validation_set(corpus, tiny_config, nothing, seed=0, announce=True) is None
    assert train_regressor._validation_set(corpus, "nosuchsplit", 32, announce=True) is None
    assert train_superres._validation_set(corpus, "nosuchsplit", 64, announce=False) is None
    said = capsys.readouterr().out
    assert said.count("validation is off") == 2 and "no clips in split 'nosuchsplit'" in said
    # anything else is an error, not a silent "no validation": here a dataset folder without its index
    with pytest.raises(ClipFormatError, match="not a clip dataset"):
        train_regressor._validation_set(str(tmp_path), "val", 32, announce=True)


def test_metrics_and_ranges_of_the_trainers():
    from training.data import frames_to_model_range, mean_psnr, model_range_to_01

    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[1] = 255
    x = frames_to_model_range(frames)
    assert x.shape == (2, 3, 4, 4) and x[0].eq(-1).all() and x[1].eq(1).all()
    assert torch.equal(model_range_to_01(x), torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    b[1] = 0.01                                           # per image: 20 dB and 40 dB
    assert mean_psnr(a, b) == pytest.approx(30.0)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path)


def test_a_killed_run_resumes_with_the_same_optimizer_state(corpus, tmp_path):
    from training.state import read_step
    from training.train_denoiser import train

    cfg = os.path.join(CONFIGS, "denoiser_tiny.json")
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train(cfg, corpus, straight)
    train(cfg, corpus, killed, stop_after=3)            # killed after step 3; last saved state is step 2
    assert read_step(killed) == 2
    train(cfg, corpus, killed, resume=True)              # resumes at step 2, runs 3 and 4
    assert read_step(killed) == 4 and sorted(os.listdir(killed)) == sorted(os.listdir(straight))
    a, b = _weights(os.path.join(straight, "state.safetensors")), _weights(os.path.join(killed, "state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)       # model, EMA and Adam moments all identical


def test_init_from_fine_tunes_from_an_exported_denoiser(corpus, tmp_path):
    from training.configfile import TrainingConfigError
    from training.train_denoiser import train

    cfg = os.path.join(CONFIGS, "denoiser_tiny.json")
    first = train(cfg, corpus, str(tmp_path / "first"))
    frozen = json.load(open(cfg))
    frozen["optim"]["lr"] = 0.0                   # with lr 0 the fine-tuned weights are the initial ones
    frozen_path = tmp_path / "frozen.json"
    frozen_path.write_text(json.dumps(frozen))
    second = train(str(frozen_path), corpus, str(tmp_path / "second"), init_from=first)
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = dict(frozen, model={"preset": "tiny", "overrides": {"model_channels": 32}})
    frozen_path.write_text(json.dumps(other))
    with pytest.raises(TrainingConfigError, match="another model config"):
        train(str(frozen_path), corpus, str(tmp_path / "third"), init_from=first)


def test_ddp_on_two_cpu_processes_keeps_ranks_identical(corpus, tmp_path):
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    with socket.socket() as probe:          # a free port: a fixed one may be taken on a shared machine
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port,
           "-m", "training", "train", "denoiser", "--config", os.path.join(CONFIGS, "denoiser_tiny.json"),
           "--data", corpus, "--out", out, "--device", "cpu"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.load(open(os.path.join(out, "ddp_check.json")))
    assert check["world_size"] == 2 and check["identical"] is True
    # and the two ranks trained on different examples (otherwise DDP would be trivially in sync)
    single = str(tmp_path / "single")
    from training.train_denoiser import train

    train(os.path.join(CONFIGS, "denoiser_tiny.json"), corpus, single)
    a, b = _weights(os.path.join(out, "state.safetensors")), _weights(os.path.join(single, "state.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("module.model."))


def test_regressor_blur_option_and_evaluate_with_another_regressor(corpus, tmp_path):
    """The regressor file's ``data.blur`` (missing = 0, the older files) softens half of the training images; evaluate's
    ``regressor`` replaces the bundle's as the instrument, by file."""
    from emodiff_core.checkpoint import CheckpointError, load_components
    from training.configfile import TrainingConfigError, load_config
    from training.evaluate import evaluate, evaluate_regressor
    from training.train_regressor import RegressorTrainingConfig, train

    with open(os.path.join(CONFIGS, "regressor_tiny.json")) as fh:
        base = json.load(fh)
    assert load_config(os.path.join(CONFIGS, "regressor_tiny.json"), RegressorTrainingConfig).data.blur == 0.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(base, data=dict(base["data"], blur=-1.0))))
    with pytest.raises(TrainingConfigError, match=r"data.blur must be >= 0"):
        load_config(str(bad), RegressorTrainingConfig)
    blurred = tmp_path / "blurred.json"
    blurred.write_text(json.dumps(dict(base, data=dict(base["data"], blur=1.5))))
    plain = train(os.path.join(CONFIGS, "regressor_tiny.json"), corpus, str(tmp_path / "plain"))
    soft = train(str(blurred), corpus, str(tmp_path / "soft"))
    a, b = (load_components(p, ["regressor"])["regressor"].state_dict() for p in (plain, soft))
    assert any(not torch.equal(a[k], b[k]) for k in a)          # same seed and draws but the blur: other weights

    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copy(plain, folder / "bundle.safetensors")
    report = evaluate(str(folder), corpus, split="train", regressor=soft)
    assert report["checkpoints"]["regressor"] == "regressor.safetensors" and soft.endswith("soft/regressor.safetensors")
    expected = evaluate_regressor(load_components(soft, ["regressor"])["regressor"], corpus, "train")
    assert report["regressor"] == expected
    assert report["regressor"] != evaluate(str(folder), corpus, split="train")["regressor"]    # the bundle's own
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.safetensors"):
        evaluate(str(folder), corpus, split="train", regressor=str(tmp_path / "missing.safetensors"))


def test_every_trainer_exports_a_loadable_checkpoint_and_bundle(corpus, tmp_path):
    from emodiff_core.checkpoint import load_components, read_checkpoint
    from emodiff_core.pipeline import load_bundle
    from training import train_generator, train_regressor, train_superres
    from training.export import export
    from training.plots import plot_run

    parts = {}
    for name, module, cfg in (("generator", train_generator, "generator_tiny.json"),
                              ("regressor", train_regressor, "regressor_tiny.json"),
                              ("superres", train_superres, "superres_tiny.json"),
                              ("denoiser", __import__("training.train_denoiser", fromlist=["train"]), "denoiser_tiny.json")):
        run = str(tmp_path / name)
        parts[name] = module.train(os.path.join(CONFIGS, cfg), corpus, run)
        assert os.path.isfile(parts[name]) and os.path.isfile(os.path.join(run, "log.csv"))
        assert os.path.isfile(plot_run(run))
        load_components(parts[name])
    assert os.listdir(tmp_path / "generator" / "samples") and os.listdir(tmp_path / "denoiser" / "samples")
    card = tmp_path / "card.md"
    card.write_text("# test card\n")
    bundle = export(str(tmp_path / "bundle.safetensors"), list(parts.values()), card=str(card))
    ckpt = read_checkpoint(bundle)
    assert set(ckpt.components) == {"expression_generator", "regressor", "superres", "denoiser"}
    assert ckpt.info["card"] == "# test card\n" and ckpt.info["denoiser.steps"] == "4"
    models = load_bundle(bundle)
    assert models.superres is not None and models.image_size == 32
    with pytest.raises(ValueError, match="in two of the parts"):
        export(str(tmp_path / "twice.safetensors"), [parts["generator"], parts["generator"]])
    # --base: one new part, the bundle's other components (and their training info) kept
    rebased_path = export(str(tmp_path / "rebased.safetensors"), [parts["denoiser"]], base=bundle)
    rebased = read_checkpoint(rebased_path)
    assert set(rebased.components) == set(ckpt.components) and rebased.info["regressor.steps"] == ckpt.info["regressor.steps"]
    new, old = load_components(rebased_path)["denoiser"], load_components(parts["denoiser"])["denoiser"]
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    with pytest.raises(ValueError, match="drop --base"):
        export(str(tmp_path / "all.safetensors"), list(parts.values()), base=bundle)
    # no parts: the base re-exported whole with a new recommendation; a recommendation stays with its denoiser
    from emodiff_core.pipeline import REINJECT_INFO_KEY

    recommends = read_checkpoint(export(str(tmp_path / "r2.safetensors"), [], base=bundle, reinject_identity_every=2))
    assert recommends.info[REINJECT_INFO_KEY] == "2" and recommends.info["denoiser.steps"] == "4"
    assert "card" not in recommends.info                                        # a card comes only from --card
    same = load_components(recommends.path)
    assert all(torch.equal(a, b) for name, module in load_components(bundle).items()
               for a, b in zip(module.state_dict().values(), same[name].state_dict().values()))
    assert read_checkpoint(export(str(tmp_path / "kept.safetensors"), [], base=recommends.path)).info[REINJECT_INFO_KEY] == "2"
    new_denoiser = read_checkpoint(export(str(tmp_path / "nd.safetensors"), [parts["denoiser"]], base=recommends.path))
    assert REINJECT_INFO_KEY not in new_denoiser.info                           # not the new denoiser's to inherit
    with pytest.raises(ValueError, match="nothing to export"):
        export(str(tmp_path / "none.safetensors"), [])


def test_ground_truth_flie_reads_the_corpus_own_intensity_edit(corpus):
    """The FLIE floor: the clip re-rendered by the corpus at k = 0, 1/L, .., 1, psi read back by the extractor.
    An extractor that reads psi exactly finds the edit linear (FLIE 0); one that adds noise on every dimension
    blows FLIE up over all dimensions, much less over the dimensions the edit moves."""
    from emodiff_core import metrics_video as mv
    from training.clips import ClipDataset
    from training.evaluate import ground_truth_flie
    from training.twins import ClipTwins

    data = ClipDataset(corpus)
    meta = sorted(data.metas("train"), key=lambda m: m["clip_id"])[0]
    clip = data.load(meta)
    twins = ClipTwins.of(meta, clip.extras, clip.psi, 32, root=corpus)
    asked = [twins.with_emotion("happy", float(k))[:5] for k in (0, 1 / 3, 2 / 3, 1)]
    seen = []

    def reader(noise):                          # "reads" the psi each level was rendered with, plus noise
        rng = np.random.default_rng(0)

        def extractor(frames):
            seen.append(frames.clone())
            return asked[(len(seen) - 1) % 4] + noise * rng.normal(size=asked[0].shape)
        return extractor

    exact = ground_truth_flie(meta, clip, corpus, 32, "happy", 3, 5, reader(0.0))
    assert len(seen) == 4 and all(v.shape == (5, 3, 32, 32) for v in seen)
    assert all(0.0 <= float(v.min()) and float(v.max()) <= 1.0 for v in seen)
    assert float((seen[3] - seen[0]).abs().mean()) > float((seen[1] - seen[0]).abs().mean()) > 0   # k grows
    assert exact["flie"] == pytest.approx(0.0, abs=1e-4) and exact["flie_edit_dims"] == pytest.approx(0.0, abs=1e-4)
    # its level means, as a generated set reports them, so that several clips pool as a model's sets do
    assert np.allclose(exact["level_psi_means"], [a.mean(axis=0) for a in asked], atol=1e-6)
    assert np.allclose(exact["level_condition_means"], exact["level_psi_means"], atol=1e-6)
    moved = exact["edit_dims"]              # what the corpus' happy edit moves: among the leading components
    assert moved == mv.edit_dims(asked) and max(moved) < 13
    noisy = ground_truth_flie(meta, clip, corpus, 32, "happy", 3, 5, reader(0.02))
    assert noisy["flie"] > 5 * noisy["flie_edit_dims"] > 0
    without_twins = dict(meta)
    del without_twins["corpus_seed"]
    assert ground_truth_flie(without_twins, clip, corpus, 32, "happy", 3, 5, reader(0.0)) is None


def test_ground_truth_flie_over_pools_clips_and_emotions_as_a_models_flie(corpus, monkeypatch):
    """benchmarks.flie_ground_truth's pooling: each FLIE clip's ground-truth set per emotion pooled by
    `flie_over_clips` and averaged by `flie_over_emotions`; an exact linear reading scores 0, one that under-draws
    small k scores above 0, and a clip without a ground truth is an error, not a smaller pool."""
    from training import evaluate as ev

    calls = []

    def fake(meta, clip, data_dir, size, emotion, levels, frames, extractor):
        calls.append((meta["identity"], emotion, levels, frames, size))
        k = np.linspace(0, 1, levels + 1)
        direction = np.zeros(50)
        direction[:3] = (1.0, -0.5, 0.25) if emotion == "happy" else (0.0, 0.8, -0.4)
        read = k ** 2 if emotion == "sad" and extractor == "convex" else k
        return {"level_psi_means": (read[:, None] * direction).tolist(),
                "level_condition_means": (k[:, None] * direction).tolist()}

    monkeypatch.setattr(ev, "ground_truth_flie", fake)
    out = ev.ground_truth_flie_over(corpus, "train", 3, ["happy", "sad"], 4, 7, 32, "exact", list(range(13)))
    over = out["flie_over_emotions"]
    assert over["emotions"] == ["happy", "sad"] and len(set(over["identities"])) == 3
    assert over["flie_edit_dims_pooled_mean"] == pytest.approx(0.0, abs=1e-9)
    assert calls[0][1:] == ("happy", 4, 7, 32) and len(calls) == 6
    convex = ev.ground_truth_flie_over(corpus, "train", 3, ["happy", "sad"], 4, 7, 32, "convex", list(range(13)))
    assert convex["flie_per_emotion"]["happy"]["flie_edit_dims_pooled"] == pytest.approx(0.0, abs=1e-9)
    assert convex["flie_per_emotion"]["sad"]["flie_edit_dims_pooled"] > 0.1
    monkeypatch.setattr(ev, "ground_truth_flie", lambda *a: None)
    with pytest.raises(ValueError, match="no ground-truth FLIE"):
        ev.ground_truth_flie_over(corpus, "train", 3, ["happy"], 4, 7, 32, "exact", list(range(13)))


def test_flie_over_clips_pools_identities_whose_offsets_drop_out_and_leaves_one_identity_out():
    """Three identities' runs of one linear edit, each shifted by its own psi offset at every level: the pooled
    FLIE and each clip's are 0 (an offset is no step). One identity that bends the edit: the leave-one-identity-out
    SE is above 0 and its own pooled FLIE is the largest. The FLIE clips are the first clip of each identity."""
    from training.evaluate import flie_clip_metas, flie_over_clips

    asked = np.linspace(0.0, 1.0, 5)[:, None] * np.array([[1.0, 0.5, 0.0]])

    def run(offset, bend=0.0):
        measured = asked + offset
        measured[2] += bend
        return {"level_psi_means": measured.tolist(), "level_condition_means": asked.tolist()}

    metas = [{"clip_id": f"c{i}", "identity": f"id{i}"} for i in range(3)]
    flat = flie_over_clips([[run(o), run(o)] for o in (0.0, 0.7, -1.3)], metas, read_dims=[0, 1, 2])
    assert flat["flie_edit_dims_pooled"] == pytest.approx(0.0, abs=1e-9) and flat["edit_dims_pooled"] == [0, 1]
    assert flat["flie_edit_dims_pooled_per_clip"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert flat["flie_edit_dims_pooled_jackknife_se"] == pytest.approx(0.0, abs=1e-9)
    assert flat["leave_one_identity_out"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert flat["pooled_runs"] == 6 and flat["identities"] == ["id0", "id1", "id2"]
    assert np.array(flat["level_psi_means_per_clip_seed"]).shape == (3, 2, 5, 3)
    bent = flie_over_clips([[run(0.0), run(0.0)], [run(0.7, 0.3), run(0.7, 0.3)], [run(-1.3), run(-1.3)]],
                           metas, read_dims=[0, 1, 2])
    assert bent["flie_edit_dims_pooled_jackknife_se"] > 0.05
    assert bent["leave_one_identity_out"][1] == pytest.approx(0.0, abs=1e-9)       # the bent identity left out
    assert min(bent["leave_one_identity_out"][0], bent["leave_one_identity_out"][2]) > 0.05
    assert int(np.argmax(bent["flie_edit_dims_pooled_per_clip"])) == 1
    two = flie_over_clips([[run(0.0)], [run(0.7)]], metas[:2], read_dims=[0, 1])
    assert "flie_edit_dims_pooled_jackknife_se" not in two and len(two["flie_edit_dims_pooled_per_clip"]) == 2
    assert "leave_one_identity_out" not in two
    clips = [{"clip_id": "a", "identity": "x"}, {"clip_id": "b", "identity": "x"}, {"clip_id": "c", "identity": "y"}]
    assert [m["clip_id"] for m in flie_clip_metas(clips, 2)] == ["a", "c"]
    assert [m["clip_id"] for m in flie_clip_metas(clips, 1)] == ["a"]
    with pytest.raises(ValueError, match="flie_clips=3 asks for that many identities; the split has 2"):
        flie_clip_metas(clips, 3)


def test_flie_over_emotions_means_each_emotions_pooled_flie_and_pairs_two_models_by_identity():
    from emodiff_core.evaluation import jackknife_se, pooled_flie
    from training.evaluate import flie_emotions, flie_over_clips, flie_over_emotions, paired_flie_difference

    assert flie_emotions("sad, happy") == ("sad", "happy") and flie_emotions(["fear"]) == ("fear",)
    assert flie_emotions("all") == tuple(e for e in EMOTIONS if e != "neutral")
    for bad, why in (("neutral", "got 'neutral'"), ("sad,glad", "got 'glad'"), ("", "got ''"),
                     ("sad,sad", "names an emotion twice: sad, sad")):
        with pytest.raises(ValueError, match=why):
            flie_emotions(bad)
    rng = np.random.default_rng(0)
    levels = np.linspace(0, 1, 7)[:, None]
    direction = {"sad": np.array([1.0, 0.5, 0.0]), "happy": np.array([0.0, 1.0, 2.0])}

    def runs(gain: float) -> dict:       # [emotion][clip][seed]: psi follows the asked steps, unevenly, with noise
        return {e: [[{"level_condition_means": (levels * d).tolist(),
                      "level_psi_means": (gain * levels ** 1.3 * d + 0.02 * rng.standard_normal((7, 3))).tolist()}
                     for _seed in range(2)] for _clip in range(4)] for e, d in direction.items()}

    metas = [{"clip_id": f"c{i}", "identity": f"id{i}"} for i in range(4)]

    def over_emotions(runs_by_emotion, clips=4):
        return flie_over_emotions({e: flie_over_clips(r[:clips], metas[:clips], [0, 1, 2])
                                   for e, r in runs_by_emotion.items()})

    before, after = runs(1.0), runs(0.8)
    a, b = over_emotions(before), over_emotions(after)
    pooled = [pooled_flie([r for clip in before[e] for r in clip], among=[0, 1, 2])["flie_edit_dims_pooled"]
              for e in direction]
    assert a["emotions"] == ["sad", "happy"] and a["identities"] == ["id0", "id1", "id2", "id3"]
    assert a["flie_edit_dims_pooled_mean"] == pytest.approx(np.mean(pooled))
    without_first = np.mean([pooled_flie([r for clip in before[e][1:] for r in clip], among=[0, 1, 2])
                             ["flie_edit_dims_pooled"] for e in direction])
    assert a["leave_one_identity_out"][0] == pytest.approx(without_first)
    assert a["jackknife_se"] == pytest.approx(jackknife_se(np.array(a["leave_one_identity_out"])))
    paired = paired_flie_difference(a, b)
    assert paired["difference"] == pytest.approx(b["flie_edit_dims_pooled_mean"] - a["flie_edit_dims_pooled_mean"])
    assert paired["paired_jackknife_se"] == pytest.approx(jackknife_se(
        np.array(b["leave_one_identity_out"]) - np.array(a["leave_one_identity_out"])))
    assert paired_flie_difference(a, a)["difference"] == 0 == paired_flie_difference(a, a)["paired_jackknife_se"]
    with pytest.raises(ValueError, match="differ in identities"):
        paired_flie_difference(a, dict(b, identities=["id1", "id0", "id2", "id3"]))
    two = over_emotions(before, clips=2)
    assert "leave_one_identity_out" not in two and two["flie_edit_dims_pooled_mean"] > 0
    still = {"level_condition_means": np.zeros((7, 3)).tolist(), "level_psi_means": np.zeros((7, 3)).tolist()}
    undefined = flie_over_emotions({"sad": flie_over_clips(before["sad"], metas, [0, 1, 2]),
                                    "happy": flie_over_clips([[still]] * 4, metas, [0, 1, 2])})
    assert undefined["flie_pooled_error"].startswith("happy: the asked psi does not change")
    assert "flie_edit_dims_pooled_mean" not in undefined
    with pytest.raises(ValueError, match="the same clips"):
        flie_over_emotions({"sad": flie_over_clips(before["sad"], metas, [0, 1, 2]),
                            "happy": flie_over_clips(before["happy"][:3], metas[1:], [0, 1, 2])})
    with pytest.raises(ValueError, match="needs leave-one-identity-out values"):
        paired_flie_difference(two, dict(two))


def test_evaluate_reports_every_component(corpus, tmp_path):
    from training.evaluate import FLIE_LEVELS, evaluate
    from training.export import export
    from training import train_generator, train_regressor
    from training.train_denoiser import train as train_denoiser

    parts = [train_generator.train(os.path.join(CONFIGS, "generator_tiny.json"), corpus, str(tmp_path / "g")),
             train_regressor.train(os.path.join(CONFIGS, "regressor_tiny.json"), corpus, str(tmp_path / "r")),
             train_denoiser(os.path.join(CONFIGS, "denoiser_tiny.json"), corpus, str(tmp_path / "d"))]
    folder = tmp_path / "ckpts"
    folder.mkdir()
    export(str(folder / "all.safetensors"), parts)
    with pytest.raises(ValueError, match="audio_guidance must be >= 0"):
        evaluate(str(folder), corpus, audio_guidance=-2.0)
    with pytest.raises(ValueError, match="flie_emotion must be one of angry, .*got 'neutral'"):
        evaluate(str(folder), corpus, flie_emotion="neutral")
    with pytest.raises(ValueError, match="flie_clips must be >= 1, got 0"):
        evaluate(str(folder), corpus, flie_clips=0)
    with pytest.raises(ValueError, match="flie_clips=99 asks for that many identities; the split has [1-8]$"):
        evaluate(str(folder), corpus, split="train", videos=1, flie_clips=99)
    with pytest.raises(ValueError, match="flie_start_mouth must be one of previous, rig; got 'warp'"):
        evaluate(str(folder), corpus, flie_start_mouth="warp")
    # FLIE's videos start as the pack starts a portrait's: each FLIE clip's first frame with the corpus' landmarks
    report = evaluate(str(folder), corpus, split="train", settings=SamplingSettings(steps=2, start_noise=1.0), videos=1,
                      video_frames=24, flie_seeds=2, audio_guidance=2.0, flie_emotion="sad,happy", flie_clips=2,
                      flie_start_mouth="rig")
    assert set(report) >= {"regressor", "generator", "denoiser", "videos"}
    videos = report["videos"]
    assert report["audio_guidance"] == 2.0 == videos["audio_guidance"]      # the rollouts sampled with it
    assert len(videos["flie_per_seed"]) == 2 and videos["flie_per_seed"][0] == videos.get("flie")   # seed 0 first
    assert report["reinject_identity_every"] == 0 == videos["reinject_identity_every"]    # the bundle names none
    assert len(videos["clips"]) == 1 and videos["psnr"] > 0 and 0 < videos["ssim"] <= 1
    assert -1 <= videos["lipsync"] <= 1 and 0 <= videos["emotion_accuracy"] <= 1
    assert set(videos["emotion_accuracy_per_emotion"]) == set(EMOTIONS)
    assert "flie" in videos or "flie_error" in videos
    assert videos["flie_ground_truth"] >= 0              # corpus clips have twins: the extractor's FLIE floor
    assert videos["flie_edit_dims_ground_truth"] >= 0 and videos["edit_dims_ground_truth"]
    assert len(videos["flie_edit_dims_per_seed"]) == 2 and videos["edit_dims"]
    # each edit dimension's term, per seed too, and the seeds pooled as Eq. 20 averages over videos
    assert set(videos["flie_edit_dims_per_dim"]) <= {str(d) for d in videos["edit_dims"]}
    assert len(videos["flie_edit_dims_per_dim_per_seed"]) == 2
    assert ("flie_edit_dims_pooled" in videos and videos["pooled_runs"] == 2) or "flie_pooled_error" in videos
    assert "flie_edit_dims_pooled_jackknife_se" not in videos   # two seeds: too few to leave one out
    # what the pooling used, per seed, so evaluations at other seeds can be pooled with this one
    assert videos["flie_seeds"] == [0, 1]
    assert len(videos["flie_level_psi_means_per_seed"]) == 2 == len(videos["flie_level_condition_means_per_seed"])
    assert np.array(videos["flie_level_psi_means_per_seed"]).shape[:2] == (2, FLIE_LEVELS + 1)   # + neutral
    assert not any(k.startswith("level_") for k in videos)          # the per-level rows are not reported
    # a second identity at the same seeds: its first clip, pooled with the first clip's runs (kept as they were)
    over = videos["flie_over_clips"]
    assert over["clips"][0] == videos["clips"][0] and len(set(over["identities"])) == 2
    assert over["level_psi_means_per_clip_seed"][0] == videos["flie_level_psi_means_per_seed"]
    if "flie_pooled_error" not in over:
        assert over["pooled_runs"] == 4 and len(over["flie_edit_dims_pooled_per_clip"]) == 2
        if "flie_edit_dims_pooled" in videos:
            assert over["flie_edit_dims_pooled_per_clip"][0] == pytest.approx(videos["flie_edit_dims_pooled"])
    assert videos["flie_guidance"] == 1.0                # the bundle recommends no guidance
    assert videos["flie_start_mouth"] == "rig"
    assert videos["flie_emotion"] == "sad"                 # the first asked; the second's videos beside it
    assert list(videos["flie_per_emotion"]) == ["sad", "happy"] and videos["flie_per_emotion"]["sad"] == over
    happy = videos["flie_per_emotion"]["happy"]
    assert happy["identities"] == over["identities"] and np.shape(happy["level_psi_means_per_clip_seed"])[:2] == (2, 2)
    assert happy["level_psi_means_per_clip_seed"] != over["level_psi_means_per_clip_seed"]
    both = videos["flie_over_emotions"]
    assert both["emotions"] == ["sad", "happy"] and "leave_one_identity_out" not in both    # two faces: no jackknife
    if "flie_pooled_error" not in both:
        assert both["flie_edit_dims_pooled_mean"] == pytest.approx(
            np.mean([happy["flie_edit_dims_pooled"], over["flie_edit_dims_pooled"]]))
    assert set(videos["skipped"]) >= {"lie", "fid", "fvd"}          # no user weights given
    assert "identity" in videos or "identity" in videos["skipped"]
    assert -10 < report["regressor"]["r2_named_mean"] <= 1.0
    assert 0.0 <= report["generator"]["sample_emotion_accuracy"] <= 1.0
    assert report["denoiser"]["frames"] == 48 and report["denoiser"]["psnr"] > 0
    sens = report["denoiser"]["condition_sensitivity"]
    assert set(sens["loss"]) == {"true", "expression_shuffled", "audio_shuffled"}
    assert all(v > 0 for v in sens["loss"].values())
    assert sens["expression_relative_increase"] == pytest.approx(
        sens["loss"]["expression_shuffled"] / sens["loss"]["true"] - 1)
    probes = report["denoiser"]["emotion_probes"]            # the corpus has twins: the training log's probes
    assert probes["examples"] == 32 and {"x0_response_0.2", "x0_response_0.6", "swap_loss", "swap_loss_mask"} <= set(probes)
    assert all(np.isfinite(v) for v in probes.values())
    # anchored evaluation: the previous real frame diffused to 2% of T and denoised by the (barely trained)
    # model stays close to the next real frame; from pure noise it cannot be
    from emodiff_core.checkpoint import load_components
    from training.evaluate import evaluate_denoiser

    den = load_components(parts[2], ["denoiser"])["denoiser"]
    anchored = evaluate_denoiser(den, corpus, "train", SamplingSettings(steps=10, start_noise=0.02), frames=8)
    assert anchored["start_noise"] == 0.02 and anchored["psnr"] > report["denoiser"]["psnr"] + 5


def test_blur_frames_blurs_each_example_by_its_own_sigma():
    import cv2
    from training.data import blur_frames

    rng = np.random.default_rng(0)
    motion = torch.from_numpy(rng.uniform(-1, 1, (3, 2, 3, 32, 32)).astype(np.float32))
    out = blur_frames(motion, [0.0, 1.0, 2.0])
    assert out.shape == motion.shape and torch.equal(out[0], motion[0])     # sigma 0: untouched
    want = cv2.GaussianBlur(motion[1, 0, 0].numpy(), (7, 7), 1.0, borderType=cv2.BORDER_REPLICATE)
    assert np.allclose(out[1, 0, 0].numpy(), want, atol=1e-5)                 # a Gaussian of that sigma
    energy = [float((x[..., 1:] - x[..., :-1]).abs().mean()) for x in out]   # detail falls with sigma
    assert energy[0] > energy[1] > energy[2]
    flat = torch.full((1, 1, 3, 16, 16), 0.25)
    assert torch.allclose(blur_frames(flat, [1.5]), flat)                   # edges replicated, mean kept


def test_several_data_folders_are_read_as_one_dataset(corpus, tmp_path, tiny_config):
    from training.clips import data_label
    from training.data import DenoiserData, FrameData

    other = str(tmp_path / "other")
    generate_corpus(other, clips=4, seed=4, size=64, identities=4)
    one, two = FrameData(corpus, "train"), FrameData(other, "train")
    both = FrameData([corpus, other], "train")
    assert len(both) == len(one) + len(two) and torch.equal(both.frames[len(one):], two.frames)
    assert len(FrameData([corpus, other], "train", limit=1)) == len(FrameData(corpus, "train", limit=1)) + \
        len(FrameData(other, "train", limit=1))                               # the limit is per folder
    data = DenoiserData([corpus, other], tiny_config, "train")
    assert len(data) == len(DenoiserData(corpus, tiny_config, "train")) + len(DenoiserData(other, tiny_config, "train"))
    assert data_label([corpus, other]) == f"{os.path.basename(corpus)}+other"
    with pytest.raises(ValueError, match="twice"):
        FrameData([corpus, corpus + os.sep], "train")
    cli = subprocess.run([sys.executable, "-m", "training", "train", "generator", "--config", "generator_tiny.json",
                          "--data", corpus, other, "--out", str(tmp_path / "g")], cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode != 0 and "reads one --data folder" in cli.stderr


def test_generator_direction_term_reads_the_corpus_emotion_parts_and_init_from_starts_from_a_checkpoint(corpus,
                                                                                                         tmp_path):
    from emodiff_core.checkpoint import load_components
    from emodiff_core.emotions import NEUTRAL
    from training import train_generator
    from training.corpus.generate import emotion_psi

    directions = train_generator.corpus_emotion_directions(corpus, "train")
    assert directions.shape == (len(EMOTIONS), 50) and not directions[EMOTIONS.index(NEUTRAL)].any()
    metas = ClipDataset(corpus).metas("train")
    for j, emotion in enumerate(EMOTIONS):      # each row: the identities' emotion part at k = 1, from the corpus
        if emotion != NEUTRAL:
            onehot = np.eye(len(EMOTIONS), dtype=np.float32)[j:j + 1]
            np.testing.assert_allclose(directions[j], np.mean([emotion_psi(m, onehot)[0] for m in metas], axis=0),
                                       atol=1e-5)
    cfg = json.load(open(os.path.join(CONFIGS, "generator_tiny.json")))

    def config_file(name):         # ``cfg`` as it is now, as a training file
        (tmp_path / name).write_text(json.dumps(cfg))
        return str(tmp_path / name)

    def train(name, run, **kwargs):  # -> (the exported generator, the rows of the run's log)
        path = train_generator.train(config_file(name), corpus, str(tmp_path / run), **kwargs)
        return path, list(csv.DictReader(open(tmp_path / run / "log.csv")))

    cfg["loss"]["lambda_direction"] = 5.0
    first, rows = train("direction.json", "a")
    assert np.isfinite(float(rows[0]["g_direction"])) and float(rows[0]["g_direction"]) > 0
    # without the term (the paper's recipe, every earlier file) no column
    plain = train_generator.train(os.path.join(CONFIGS, "generator_tiny.json"), corpus, str(tmp_path / "b"))
    assert "g_direction" not in open(tmp_path / "b" / "log.csv").readline()
    # init_from: with the generator's learning rate at 0 the exported weights are the start's, bit for bit
    cfg["optim"]["lr_g"] = 0.0
    kept, _ = train("still.json", "c", init_from=first)
    start, end = (load_components(p)["expression_generator"].state_dict() for p in (first, kept))
    assert all(torch.equal(start[k], end[k]) for k in start)
    assert not all(torch.equal(start[k], v) for k, v in load_components(plain)["expression_generator"]
                   .state_dict().items())
    # the anchor holds G(neutral, z) to the starting generator's: 0 at the first step, and it needs a start
    cfg["optim"]["lr_g"] = 0.001
    cfg["loss"].update(lambda_anchor=1.0, lambda_adversarial=0.0)
    _, rows = train("anchor.json", "e", init_from=first)
    assert float(rows[0]["g_anchor"]) == 0 and float(rows[1]["g_anchor"]) > 0
    with pytest.raises(TrainingConfigError, match="lambda_anchor .* give --init-from"):
        train("anchor.json", "f")
    # with the time-mean d_y moved to the data's, the emotional rows start away from their targets
    cfg["loss"].update(anchor_mean_direction=True)
    _, rows = train("moved.json", "g", init_from=first)
    assert float(rows[0]["g_anchor"]) > 0
    cfg["loss"].update(lambda_anchor=0.0)
    with pytest.raises(TrainingConfigError, match="anchor_mean_direction .* needs loss.lambda_anchor > 0"):
        load_config(config_file("moved.json"), train_generator.GeneratorTrainingConfig)
    cfg["loss"]["anchor_mean_direction"] = False
    cfg["model"]["overrides"] = {"hidden_dim": 24}
    with pytest.raises(TrainingConfigError, match="another model config"):
        train("other.json", "d", init_from=first)


@pytest.fixture(scope="module")
def tiny_generator(corpus, tmp_path_factory):
    """A generator file to fine-tune from: the tiny recipe, two steps."""
    from training import train_generator

    return train_generator.train(os.path.join(CONFIGS, "generator_tiny.json"), corpus,
                                 str(tmp_path_factory.mktemp("generator")), max_steps=2)


def support_course_config(**loss) -> dict:
    """The tiny generator recipe as the support-course fine-tunes run it (the anchor alone, no GAN terms), with
    ``loss`` keys on top."""
    cfg = json.load(open(os.path.join(CONFIGS, "generator_tiny.json")))
    cfg["loss"].update(lambda_anchor=1.0, lambda_adversarial=0.0, anchor_support_course=True, **loss)
    return cfg


def test_start_magnitudes_keep_the_data_support_and_take_the_start_d_y_there(corpus, tiny_generator, tmp_path,
                                                                             monkeypatch):
    """``loss.direction_magnitudes`` "start": on the named components an emotion's data part moves (10 % of its largest
    move), the target is the starting generator's mean d_y; elsewhere the data's. The run writes its targets."""
    from emodiff_core.checkpoint import load_components
    from emodiff_core.emotions import emotion_index
    from emodiff_core.pipeline import mean_emotion_directions
    from training import train_generator

    start = load_components(tiny_generator, ["expression_generator"])["expression_generator"].eval()
    data = np.zeros((len(EMOTIONS), 50), np.float32)
    data[:, 0], data[:, 1], data[:, 2], data[:, 20] = 1.0, -0.5, 0.09, 0.7     # 2: under the share; 20: unnamed
    data[emotion_index("neutral")] = 0
    targets = train_generator.start_magnitude_directions(data, start, frames=5, seeds=2)
    steps = mean_emotion_directions(start, ["sad"], 5, 2, 13)["sad"]
    sad = targets[emotion_index("sad")]
    np.testing.assert_allclose(sad[:2], steps[:2], atol=1e-6)
    assert sad[2] == np.float32(0.09) and sad[20] == np.float32(0.7) and not sad[3:13].any()
    assert not targets[emotion_index("neutral")].any()
    # a run: its direction_targets.json holds those targets, made from the corpus' parts and the start
    monkeypatch.setattr(train_generator, "START_MAGNITUDE_FRAMES", 5)
    monkeypatch.setattr(train_generator, "START_MAGNITUDE_SEEDS", 2)
    cfg = json.load(open(os.path.join(CONFIGS, "generator_tiny.json")))
    cfg["loss"].update(lambda_direction=1.0, direction_magnitudes="start")
    (tmp_path / "start.json").write_text(json.dumps(cfg))
    train_generator.train(str(tmp_path / "start.json"), corpus, str(tmp_path / "b"), max_steps=1,
                          init_from=tiny_generator)
    written = json.load(open(tmp_path / "b" / "direction_targets.json"))
    expected = train_generator.start_magnitude_directions(train_generator.corpus_emotion_directions(corpus, "train"),
                                                          start)
    assert list(written) == list(EMOTIONS)
    np.testing.assert_allclose(np.array([written[e] for e in EMOTIONS]), expected, atol=1e-5)
    with pytest.raises(TrainingConfigError, match="direction_magnitudes 'start' .* give --init-from"):
        train_generator.train(str(tmp_path / "start.json"), corpus, str(tmp_path / "c"), max_steps=1)
    cfg["loss"]["direction_magnitudes"] = "largest"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match="must be 'data' or 'start', got 'largest'"):
        load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)
    cfg["loss"].update(lambda_direction=0.0, direction_magnitudes="start")
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match="'start' sets the targets .* turn one of them on"):
        load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)


def test_support_course_holds_the_start_on_the_data_support_and_the_data_part_elsewhere(corpus, tiny_generator,
                                                                                       tmp_path):
    from emodiff_core.emotions import emotion_index
    from training import train_generator
    from training.train_generator import (anchor_error, data_support, support_course_targets, support_with_kept,
                                          windowed_anchor_error)

    directions = np.zeros((len(EMOTIONS), 50), np.float32)
    sad, happy = emotion_index("sad"), emotion_index("happy")
    directions[sad, [0, 4, 7, 20]] = [1.0, -0.2, 0.05, 3.0]      # 7: under the 10 % share; 20: not a named component
    directions[happy, 2] = 0.5
    support = data_support(directions)
    assert np.flatnonzero(support[sad]).tolist() == [0, 4] and np.flatnonzero(support[happy]).tolist() == [2]
    assert not support[emotion_index("neutral")].any()
    g = torch.Generator().manual_seed(0)
    start_n = torch.randn(3, 6, 50, generator=g)
    start_y = torch.randn(3, 6, 50, generator=g)
    labels = torch.tensor([sad, happy, emotion_index("neutral")])
    start_y[2] = start_n[2]
    held = support_course_targets(start_y, start_n, torch.from_numpy(directions), torch.from_numpy(support), labels)
    torch.testing.assert_close(held[0, :, [0, 4]], start_y[0, :, [0, 4]])           # the start's own course
    torch.testing.assert_close(held[0, :, 7], start_n[0, :, 7] + 0.05)              # the data's part on e_n
    torch.testing.assert_close(held[0, :, 20], start_n[0, :, 20] + 3.0)
    torch.testing.assert_close(held[1, :, 2], start_y[1, :, 2])
    torch.testing.assert_close(held[1, :, 0], start_n[1, :, 0])
    torch.testing.assert_close(held[2], start_n[2])                                  # a neutral row: e_n itself
    # with the speech components' course: outside the support they keep the start's own G(y, z), their time-mean
    # d_y the data's; on the support and elsewhere nothing changes
    speech = torch.zeros(50, dtype=torch.bool)
    speech[[0, 1]] = True
    spoken = support_course_targets(start_y, start_n, torch.from_numpy(directions), torch.from_numpy(support), labels,
                                    speech)
    torch.testing.assert_close(spoken[0, :, 0], start_y[0, :, 0])                   # sad's jaw: on its support
    moved = spoken[0, :, 1] - start_y[0, :, 1]                         # sad's mouth width: the start's course, shifted
    torch.testing.assert_close(moved, moved[:1].expand_as(moved))
    assert float((spoken[0, :, 1] - start_n[0, :, 1]).mean()) == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close((spoken[1, :, 0] - start_n[1, :, 0]).mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(spoken[:, :, 2:], held[:, :, 2:])
    torch.testing.assert_close(spoken[2], start_n[2])
    # named components kept: they join every emotion's support (neutral's stays empty) and hold the start's course
    kept = support_with_kept(support, ("mouth_width", "upper_lip_raise"))
    assert np.flatnonzero(kept[sad]).tolist() == [0, 1, 3, 4] and np.flatnonzero(kept[happy]).tolist() == [1, 2, 3]
    assert not kept[emotion_index("neutral")].any() and (support_with_kept(support, ()) == support).all()
    # and one emotion's own: only its row widens, on top of every emotion's
    own = support_with_kept(support, ("mouth_width",), {"happy": ["nose_wrinkle", "contempt"]})
    assert np.flatnonzero(own[happy]).tolist() == [1, 2, 9, 11] and np.flatnonzero(own[sad]).tolist() == [0, 1, 4]
    assert (support_with_kept(support, (), {}) == support).all()
    widened = support_course_targets(start_y, start_n, torch.from_numpy(directions), torch.from_numpy(kept), labels)
    torch.testing.assert_close(widened[:2, :, [1, 3]], start_y[:2, :, [1, 3]])
    torch.testing.assert_close(widened[:, :, 4:], held[:, :, 4:])
    # a run: at its first step the generator is the start, so the anchor's error is what the start asks beside
    # the data's support
    cfg = support_course_config()
    (tmp_path / "course.json").write_text(json.dumps(cfg))
    train_generator.train(str(tmp_path / "course.json"), corpus, str(tmp_path / "b"), max_steps=2,
                          init_from=tiny_generator)
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert float(rows[0]["g_anchor"]) > 0 and "g_direction" not in rows[0]
    cfg["loss"]["anchor_speech_course"] = True
    (tmp_path / "spoken.json").write_text(json.dumps(cfg))
    train_generator.train(str(tmp_path / "spoken.json"), corpus, str(tmp_path / "c"), max_steps=2,
                          init_from=tiny_generator)
    assert float(next(csv.DictReader(open(tmp_path / "c" / "log.csv")))["g_anchor"]) > 0
    # every named component kept: the start's own sequences there too, so less of it asked to move at that step
    kept_cfg = json.loads(json.dumps(cfg))
    kept_cfg["loss"].update(anchor_speech_course=False, support_kept=list(EXPRESSION_COMPONENTS))
    (tmp_path / "kept.json").write_text(json.dumps(kept_cfg))
    train_generator.train(str(tmp_path / "kept.json"), corpus, str(tmp_path / "d"), max_steps=1,
                          init_from=tiny_generator)
    assert float(next(csv.DictReader(open(tmp_path / "d" / "log.csv")))["g_anchor"]) < float(rows[0]["g_anchor"])
    # the anchor rolled out past the data's windows (12 frames): the same first step, a longer rollout to hold
    long_cfg = json.loads(json.dumps(cfg))
    long_cfg["loss"]["anchor_frames"] = 36
    (tmp_path / "long.json").write_text(json.dumps(long_cfg))
    train_generator.train(str(tmp_path / "long.json"), corpus, str(tmp_path / "e"), max_steps=2,
                          init_from=tiny_generator)
    short, long = (next(csv.DictReader(open(tmp_path / run / "log.csv"))) for run in ("c", "e"))
    assert float(long["g_anchor"]) > 0 and float(long["g_anchor"]) != pytest.approx(float(short["g_anchor"]))
    assert float(long["d_total"]) == pytest.approx(float(short["d_total"]))     # the discriminators' window alike
    # the data's window counted again inside the long rollout: the error over the first frames added at the weight
    seqs, held_seqs = torch.randn(3, 36, 5, generator=torch.Generator().manual_seed(1)), torch.zeros(3, 36, 5)
    window_error = float((seqs[:, :12] ** 2).sum(2).mean())
    assert float(windowed_anchor_error(seqs, held_seqs, 12, 0.0)) == pytest.approx(float(anchor_error(seqs, held_seqs)))
    assert float(windowed_anchor_error(seqs, held_seqs, 12, 2.0)) == pytest.approx(
        float(anchor_error(seqs, held_seqs)) + 2.0 * window_error)
    # and in a run, the first step's error grows by the window's share
    long_cfg["loss"]["anchor_window_weight"] = 1.0
    (tmp_path / "window.json").write_text(json.dumps(long_cfg))
    train_generator.train(str(tmp_path / "window.json"), corpus, str(tmp_path / "f"), max_steps=1,
                          init_from=tiny_generator)
    windowed = next(csv.DictReader(open(tmp_path / "f" / "log.csv")))
    assert float(windowed["g_anchor"]) > float(long["g_anchor"])
    assert float(windowed["d_total"]) == pytest.approx(float(short["d_total"]))
    widens = "support_kept_by_emotion widen loss.anchor_support_course's support"
    for change, message in (({"lambda_anchor": 0.0}, "anchor_support_course sets the anchor's targets"),
                            ({"anchor_mean_direction": True}, "two targets for the same rows: choose one"),
                            ({"anchor_support_course": False}, "anchor_speech_course is a part of"),
                            ({"anchor_speech_course": False, "anchor_support_course": False,
                              "support_kept": ["jaw_open"]}, widens),
                            ({"support_kept": ["smile"]}, r"names \['smile'\], not components of psi"),
                            ({"anchor_speech_course": False, "anchor_support_course": False,
                              "support_kept_by_emotion": {"sad": ["jaw_open"]}}, widens),
                            ({"support_kept_by_emotion": {"neutral": ["jaw_open"]}},
                             r"names \['neutral'\], not emotions with a support"),
                            ({"support_kept_by_emotion": {"sad": "jaw_open"}}, "must be a list of component names"),
                            ({"support_kept_by_emotion": {"sad": ["smile"]}},
                             r"support_kept_by_emotion.sad names \['smile'\]"),
                            ({"anchor_frames": -1}, "anchor_frames must be >= 0"),
                            ({"anchor_frames": 6}, r"anchor_frames \(6\) is shorter than data.length \(12\)"),
                            ({"lambda_anchor": 0.0, "anchor_support_course": False, "anchor_speech_course": False,
                              "anchor_frames": 24}, "anchor_frames sets the rollout"),
                            ({"anchor_window_weight": -1.0}, "anchor_window_weight must be >= 0"),
                            ({"lambda_anchor": 0.0, "anchor_support_course": False, "anchor_speech_course": False,
                              "anchor_window_weight": 1.0}, "anchor_window_weight weighs the anchor.s error"),
                            ({"anchor_window_weight": 1.0},
                             r"only a different loss.lambda_anchor when loss.anchor_frames \(0\) is not longer"),
                            ({"anchor_window_weight": 1.0, "anchor_frames": 12},
                             r"only a different loss.lambda_anchor when loss.anchor_frames \(12\) is not longer")):
        bad = json.loads(json.dumps(cfg))
        bad["loss"].update(change)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(TrainingConfigError, match=message):
            load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)


def test_generator_cosine_lr_decay_changes_later_steps_only_resumes_alike_and_refuses_other_names(corpus,
                                                                                                   tiny_generator,
                                                                                                   tmp_path):
    from safetensors.torch import load_file

    from training import train_generator
    from training.configfile import TrainingConfigError, load_config

    cfg = support_course_config()
    assert "lr_decay" not in cfg["optim"]              # older files: constant rates, as before the option
    (tmp_path / "constant.json").write_text(json.dumps(cfg))
    cfg["optim"]["lr_decay"] = "cosine"
    (tmp_path / "cosine.json").write_text(json.dumps(cfg))
    for name in ("constant", "cosine"):
        train_generator.train(str(tmp_path / f"{name}.json"), corpus, str(tmp_path / name), max_steps=3,
                              init_from=tiny_generator)
    # per step's row (the last row, the run's time, has no losses)
    constant, cosine = ([float(r["g_anchor"]) for r in csv.DictReader(open(tmp_path / name / "log.csv"))
                         if r["g_anchor"]] for name in ("constant", "cosine"))
    # the schedule's first step is the base rate (the losses of steps 1 and 2 alike); the second is lower
    assert cosine[:2] == pytest.approx(constant[:2], rel=1e-6) and cosine[2] != pytest.approx(constant[2], rel=1e-6)
    # a run stopped after its saved state and resumed follows the same schedule as one never stopped
    train_generator.train(str(tmp_path / "cosine.json"), corpus, str(tmp_path / "split"), max_steps=3,
                          init_from=tiny_generator, stop_after=2)
    train_generator.train(str(tmp_path / "cosine.json"), corpus, str(tmp_path / "split"), max_steps=3,
                          init_from=tiny_generator, resume=True)
    whole, split = (load_file(str(tmp_path / run / "expression_generator.safetensors")) for run in ("cosine", "split"))
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    cfg["optim"]["lr_decay"] = "linear"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match="optim.lr_decay must be one of constant, cosine, got 'linear'"):
        load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)


def test_generator_moved_emotion_rows_keeps_every_other_weight_and_a_whole_kept_emotion_bit_for_bit(corpus,
                                                                                                      tiny_generator,
                                                                                                      tmp_path):
    from emodiff_core.checkpoint import load_components
    from emodiff_core.emotions import emotion_index
    from training import train_generator
    from training.configfile import TrainingConfigError, load_config
    from training.train_generator import moved_emotion_rows

    support = np.zeros((8, 50), bool)
    support[emotion_index("sad"), :13] = True                    # kept whole: not moved
    support[emotion_index("happy"), [2, 8]] = True               # moved
    support[emotion_index("angry"), 20] = True                   # only an unnamed component: nothing named kept
    assert np.flatnonzero(moved_emotion_rows(support)).tolist() == [emotion_index("happy")]

    cfg = support_course_config(support_kept_by_emotion={"sad": list(EXPRESSION_COMPONENTS)})
    cfg["optim"]["trainable"] = "moved_emotion_rows"
    (tmp_path / "rows.json").write_text(json.dumps(cfg))
    path = train_generator.train(str(tmp_path / "rows.json"), corpus, str(tmp_path / "rows"), max_steps=3,
                                 init_from=tiny_generator)
    start, tuned = (load_components(p, ["expression_generator"])["expression_generator"].eval()
                    for p in (tiny_generator, path))
    before, after = start.state_dict(), tuned.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "emotion_embed.weight")
    rows = before["emotion_embed.weight"], after["emotion_embed.weight"]
    moved = [i for i in range(8) if not torch.equal(rows[0][i], rows[1][i])]
    kept = [emotion_index("neutral"), emotion_index("sad")]
    assert moved and not set(moved) & set(kept)
    labels, z = torch.tensor(kept), torch.randn(2, start.config.noise_dim, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():                                       # at a noise the training never drew, too
        assert torch.equal(start(labels, 20, z=z), tuned(labels, 20, z=z))
    cfg["loss"].update(anchor_support_course=False, support_kept_by_emotion={})
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match="trains the rows the support course moves"):
        load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)
    cfg["optim"]["trainable"] = "embedding"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingConfigError, match="optim.trainable must be one of all, moved_emotion_rows"):
        load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)


def test_anchor_emotion_weight_weighs_rows_by_label_in_numbers_and_in_a_run(corpus, tiny_generator, tmp_path):
    from emodiff_core.emotions import emotion_index
    from training import train_generator
    from training.configfile import TrainingConfigError, load_config
    from training.train_generator import anchor_error, anchor_row_weights, anchor_weight_table, windowed_anchor_error

    labels = torch.tensor([emotion_index("sad"), emotion_index("happy"), emotion_index("neutral")])
    weights = anchor_row_weights(anchor_weight_table({"sad": 4.0, "neutral": 0.5}), labels)
    assert weights.tolist() == [4.0, 1.0, 0.5]
    assert anchor_weight_table({}) is None and anchor_row_weights(None, labels) is None
    seqs, held = torch.randn(3, 10, 5, generator=torch.Generator().manual_seed(2)), torch.zeros(3, 10, 5)
    rows = (seqs ** 2).sum(2).mean(1)                                   # each row's mean error
    assert float(anchor_error(seqs, held, weights)) == pytest.approx(float((rows * weights).mean()))
    assert float(anchor_error(seqs, held, torch.ones(3))) == pytest.approx(float(anchor_error(seqs, held)))
    window_rows = (seqs[:, :4] ** 2).sum(2).mean(1)
    assert float(windowed_anchor_error(seqs, held, 4, 1.0, weights)) == pytest.approx(
        float((rows * weights).mean() + (window_rows * weights).mean()))
    # in a run: the first step's anchor error is the start's, so only the weights change it
    cfg = support_course_config()
    (tmp_path / "plain.json").write_text(json.dumps(cfg))
    cfg["loss"]["anchor_emotion_weight"] = {e: 3.0 for e in ("angry", "contempt", "disgusted", "fear", "happy",
                                                             "sad", "surprised")}
    (tmp_path / "weighed.json").write_text(json.dumps(cfg))
    for name in ("plain", "weighed"):
        train_generator.train(str(tmp_path / f"{name}.json"), corpus, str(tmp_path / name), max_steps=1,
                              init_from=tiny_generator)
    plain, weighed = (float(next(csv.DictReader(open(tmp_path / n / "log.csv")))["g_anchor"])
                      for n in ("plain", "weighed"))
    assert weighed == pytest.approx(3.0 * plain, rel=1e-5)      # e_n is the start's at step 1: only the rows' term
    for change, message in (({"anchor_emotion_weight": {"joy": 2.0}}, r"names \['joy'\], not emotions"),
                            ({"anchor_emotion_weight": {"sad": -1.0}}, "weights must be numbers >= 0"),
                            ({"anchor_emotion_weight": {"sad": "4"}}, "weights must be numbers >= 0"),
                            ({"anchor_emotion_weight": {"sad": 4.0}, "lambda_anchor": 0.0,
                              "anchor_support_course": False}, "anchor_emotion_weight weighs the anchor's rows")):
        bad = json.loads(json.dumps(cfg))
        bad["loss"].update(change)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(TrainingConfigError, match=message):
            load_config(str(tmp_path / "bad.json"), train_generator.GeneratorTrainingConfig)


def test_mean_direction_targets_keep_the_start_time_course_and_move_its_mean_d_y_to_the_data():
    from emodiff_core.emotions import emotion_index
    from training.train_generator import mean_direction_targets

    g = torch.Generator().manual_seed(0)
    directions = torch.randn(len(EMOTIONS), 50, generator=g)
    directions[emotion_index("neutral")] = 0
    labels = torch.tensor([emotion_index("neutral"), emotion_index("sad"), emotion_index("fear")])
    start_n = torch.randn(3, 9, 50, generator=g)
    start_y = start_n + torch.randn(3, 9, 50, generator=g)      # a d_y that moves over time
    start_y[0] = start_n[0]                                      # G(neutral, z) is e_n itself
    moved = mean_direction_targets(start_y, start_n, directions, labels)
    torch.testing.assert_close((moved - start_n).mean(dim=1), directions[labels], atol=1e-5, rtol=0)
    shift = moved - start_y                                      # the same at every frame: the time course is kept
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=1e-6, rtol=0)
    torch.testing.assert_close(moved[0], start_n[0], atol=1e-6, rtol=0)


def test_superres_detail_loss_is_the_laplacians_l1_and_optional_in_configs(tmp_path):
    from training.train_superres import SuperResTrainingConfig, laplacian, superres_loss

    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(2, 3, 16, 16)
    assert laplacian(ramp)[..., 1:-1, 1:-1].abs().max() < 1e-6            # a linear ramp has no fine detail
    delta = torch.zeros(1, 1, 5, 5)
    delta[0, 0, 2, 2] = 1.0
    lap = laplacian(delta)[0, 0]
    assert lap[2, 2] == -4 and lap[1, 2] == lap[2, 1] == 1 and lap.sum() == 0
    target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    smooth = torch.nn.functional.avg_pool2d(target, 3, 1, 1, count_include_pad=False)
    assert superres_loss(smooth, target, 0.0) == torch.nn.functional.l1_loss(smooth, target)
    extra = superres_loss(smooth, target, 0.5) - superres_loss(smooth, target, 0.0)
    assert extra == pytest.approx(0.5 * float((laplacian(smooth) - laplacian(target)).abs().mean()), rel=1e-5)
    assert superres_loss(target, target, 2.0) == 0
    # files written before the loss section get detail 0; a negative weight is refused by name
    assert load_config("superres_demo.json", SuperResTrainingConfig).loss.detail == 0.0
    data = json.load(open(os.path.join(CONFIGS, "superres_real.json")))
    data["loss"] = {"detail": -1.0}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(TrainingConfigError, match="loss.detail must be >= 0"):
        load_config(str(tmp_path / "bad.json"), SuperResTrainingConfig)


def test_superres_texture_loss_asks_for_the_amount_of_detail_not_its_place(tmp_path):
    from training.train_superres import SuperResTrainingConfig, laplacian, local_detail, superres_loss

    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2      # the finest possible texture
    checker = checker.float().view(1, 1, 8, 8).expand(1, 3, 8, 8).contiguous()
    shifted = 1.0 - checker                                                        # same texture, opposite phase
    flat = torch.full_like(checker, 0.5)                                           # what pixel L1 settles for
    detail = local_detail(checker, 4)
    assert detail.shape == (1, 3, 2, 2) and torch.allclose(detail, local_detail(shifted, 4))
    assert torch.allclose(detail, laplacian(checker).abs().view(1, 3, 2, 4, 2, 4).mean((3, 5)))
    assert local_detail(flat, 4).abs().max() == 0
    # a sliding window (stride 1): every 4-pixel square, so the loss has no grid of its own
    sliding = local_detail(checker, 4, stride=1)
    every_square = laplacian(checker).abs().unfold(2, 4, 1).unfold(3, 4, 1).mean((4, 5))
    assert sliding.shape == (1, 3, 5, 5) and torch.allclose(sliding, every_square)
    assert torch.equal(local_detail(checker, 4, stride=4), detail) and local_detail(checker, 4, 2).shape[-1] == 3
    # the pixel terms prefer the flat patch to the shifted texture; the texture term prefers the texture,
    # and with enough weight the whole loss does
    assert superres_loss(flat, checker, 0.0) < superres_loss(shifted, checker, 0.0)
    assert superres_loss(shifted, checker, 0.0, texture=1.0) == superres_loss(shifted, checker, 0.0)
    gap = superres_loss(flat, checker, 0.0, texture=1.0) - superres_loss(flat, checker, 0.0)
    assert gap == pytest.approx(float(detail.mean()), rel=1e-5)
    assert superres_loss(flat, checker, 0.0, texture=1.0) > superres_loss(shifted, checker, 0.0, texture=1.0)
    # off in older files; a negative weight or a zero window is refused by name
    assert load_config("superres_real.json", SuperResTrainingConfig).loss.texture == 0.0
    assert load_config("superres_real.json", SuperResTrainingConfig).loss.texture_window == 4
    assert load_config("superres_texture.json", SuperResTrainingConfig).loss.texture_stride == 0   # side by side
    data = json.load(open(os.path.join(CONFIGS, "superres_real.json")))
    for loss, message in [({"detail": 0.0, "texture": -1.0}, "loss.texture must be >= 0"),
                          ({"detail": 0.0, "texture": 1.0, "texture_window": 0}, "loss.texture_window must be positive"),
                          ({"detail": 0.0, "texture": 1.0, "texture_stride": 5}, "loss.texture_stride must be 0"),
                          ({"detail": 0.0, "texture": 1.0, "texture_mouth": 1.5}, "loss.texture_mouth must be in")]:
        data["loss"] = loss
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(TrainingConfigError, match=message):
            load_config(str(tmp_path / "bad.json"), SuperResTrainingConfig)


def test_superres_texture_term_can_keep_off_the_lips():
    from emodiff_core.faces import TEMPLATE_68
    from training.train_superres import local_detail, mouth_mask, superres_loss, texture_weights

    size = 32
    landmarks = torch.from_numpy(TEMPLATE_68 * 20.0 + size / 2).float()[None]        # one face filling the frame
    lips = landmarks[0, 48:68]
    mask = mouth_mask(landmarks, size)
    assert mask.shape == (1, 1, size, size)
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    width = float(lips[:, 0].max() - lips[:, 0].min())
    # the lip box grown by a quarter of its width on every side (pixel centres inside it)
    assert float(xs.min()) + 0.5 >= float(lips[:, 0].min()) - 0.25 * width - 1e-4
    assert float(xs.min()) - 0.5 < float(lips[:, 0].min()) - 0.25 * width
    assert float(ys.max()) + 0.5 < float(lips[:, 1].max()) + 0.25 * width + 1
    assert mask[0, 0, :8].sum() == 0 and mask.sum() == len(ys)       # nothing at the eyes
    # the weight of every 4-pixel square: 0 where it touches the box, 1 elsewhere; 0.5 halfway
    weight = texture_weights(landmarks, size, 4, 1, 0.0)
    assert weight.shape == (1, 1, 29, 29) and set(weight.unique().tolist()) == {0.0, 1.0}
    touching = mask[0, 0].unfold(0, 4, 1).unfold(1, 4, 1).amax((2, 3))
    assert torch.equal(weight[0, 0], 1.0 - touching)
    assert torch.equal(texture_weights(landmarks, size, 4, 1, 0.5), 1.0 - 0.5 * touching[None, None])
    # a target with texture only on the lips (one pixel inside the box, so that its Laplacian stays in it): the
    # term pays it with weight 1, not at all with weight 0
    inner = -torch.nn.functional.max_pool2d(-mask, 3, 1, 1)
    target = torch.full((1, 3, size, size), 0.5)
    checker = ((torch.arange(size).view(1, size) + torch.arange(size).view(size, 1)) % 2).float()
    target = torch.where(inner.bool().expand(1, 3, size, size), checker.expand(1, 3, size, size), target)
    flat = torch.full_like(target, 0.5)
    pixels = superres_loss(flat, target, 0.0)
    assert superres_loss(flat, target, 0.0, 1.0, 4, 1, texture_weights(landmarks, size, 4, 1, 0.0)) == pixels
    everywhere = superres_loss(flat, target, 0.0, 1.0, 4, 1, torch.ones(1, 1, 29, 29))
    assert everywhere == pytest.approx(float(superres_loss(flat, target, 0.0, 1.0, 4, 1)), rel=1e-6)
    assert everywhere - pixels == pytest.approx(float(local_detail(target, 4, 1).mean()), rel=1e-5)


def test_superres_trains_with_the_texture_term_off_the_lips(corpus, tmp_path):
    from emodiff_core.checkpoint import load_components
    from training import train_superres
    from training.data import FrameData

    # the frames' own landmarks, scaled with the frames when the model's size differs from the corpus'
    native, doubled = FrameData(corpus, "train", need_landmarks=True), FrameData(corpus, "train", size=128,
                                                                                  need_landmarks=True)
    assert native.landmarks.shape == (len(native), 68, 2) and FrameData(corpus, "train").landmarks is None
    assert native.frames.shape[-1] == 64 and doubled.frames.shape[-1] == 128
    assert torch.allclose(doubled.landmarks, native.landmarks * 2)
    lips = native.landmarks[:, 48:68]
    assert lips.min() > 0 and lips.max() < native.frames.shape[-1]          # the lips lie inside the frame
    data = json.load(open(os.path.join(CONFIGS, "superres_tiny.json")))
    data["loss"] = {"detail": 0.0, "texture": 1.0, "texture_stride": 1, "texture_mouth": 0.0}
    (tmp_path / "lips.json").write_text(json.dumps(data))
    out = train_superres.train(str(tmp_path / "lips.json"), corpus, str(tmp_path / "run"), max_steps=3)
    assert set(load_components(out)) == {"superres"}


class _StepGenerator(torch.nn.Module):
    """An expression generator whose mouth is known: component c of emotion j's sequence is 0.1 j + c, plus a
    noise part that the neutral and the emotion share when they share z (as `emotion_expression_pair` pairs them)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 1)

    def sample_noise(self, batch, generator=None, device=None):
        return torch.randn(batch, 3, generator=generator)

    def forward(self, labels, num_frames, z=None, generator=None):
        z = self.sample_noise(len(labels), generator) if z is None else z
        t = torch.arange(num_frames, dtype=torch.float32)
        seq = (0.1 * labels.float()[:, None, None] + torch.arange(50, dtype=torch.float32)
               + z[:, :1, None] * torch.sin(t)[None, :, None])
        return seq


def test_generator_mouth_offsets_against_the_corpus(corpus):
    from emodiff_core.emotions import emotion_index
    from emodiff_core.pipeline import SPEECH_MOUTH_COMPONENTS
    from training.evaluate import corpus_mouth_offsets, generator_mouth_offsets

    mouth = list(SPEECH_MOUTH_COMPONENTS)
    ref = corpus_mouth_offsets(corpus, "train", min_intensity=0.0)
    ds = ClipDataset(corpus)
    neutral = [ds.load(m, with_audio=False).psi[:, mouth].mean(0) for m in ds.metas("train", labelled=True)
               if m["emotion"] == "neutral"]
    assert len(neutral) == ref["clips"]["neutral"] > 0
    np.testing.assert_allclose(ref["neutral_level"], np.mean(neutral, axis=0), atol=1e-9)
    assert set(ref["offsets"]) == set(ref["clips"]) - {"neutral"}

    report = generator_mouth_offsets(_StepGenerator(), corpus, "train", samples=4, frames=12, min_intensity=0.0)
    assert report["components"] == ["jaw_open", "mouth_width", "lip_press", "lower_lip_depress"]
    n = emotion_index("neutral")
    np.testing.assert_allclose(report["neutral_level"]["generator"], [0.1 * n + c for c in mouth], atol=0.5)
    for emotion, entry in report["offsets"].items():      # the shared noise cancels: exactly the label step
        np.testing.assert_allclose(entry["generator"], [0.1 * (emotion_index(emotion) - n)] * 4, atol=1e-4)
    errors = [np.abs(np.subtract(e["generator"], e["corpus"])).max() for e in report["offsets"].values()
              if e["corpus"] is not None]
    assert errors and report["offset_error_max"] == pytest.approx(max(errors), abs=2e-4)
    worst_emotion, worst_component = report["offset_error_where"].split()
    worst = report["offsets"][worst_emotion]
    c = report["components"].index(worst_component)
    assert abs(worst["generator"][c] - worst["corpus"][c]) == pytest.approx(report["offset_error_max"], abs=2e-4)
    with pytest.raises(ValueError, match="no neutral clips"):
        corpus_mouth_offsets(corpus, "no-such-split")
    from training.evaluate import _mouth_or_why               # evaluate reports why instead of failing

    assert "no neutral clips" in _mouth_or_why(_StepGenerator(), corpus, "no-such-split", 4, 0)["skipped"]


def test_the_emotion_term_can_weigh_more_on_the_real_texture_examples(tmp_path):
    """emotion.real_texture_emotion_mult: the emotion-region term of real-texture examples counts mult times, the
    procedural examples' loss is unchanged; older files read 1 (no change); a negative multiple is refused."""
    from training.train_denoiser import DenoiserTrainingConfig, real_texture_emotion_scale

    real = torch.tensor([True, False, True])          # hybrid_loss's emotion_scale (test_emotion_conditioning.py)
    torch.testing.assert_close(real_texture_emotion_scale(real, 3.0), torch.tensor([3.0, 1.0, 3.0]))
    assert real_texture_emotion_scale(real, 1.0) is None
    assert load_config("denoiser_emotion_real_v4_emph_tex4_nodrop.json",
                       DenoiserTrainingConfig).emotion.real_texture_emotion_mult == 1.0
    recipe = json.load(open(os.path.join(CONFIGS, "denoiser_emotion_real_v4_emph_tex4_nodrop_rt3.json")))
    recipe["emotion"]["real_texture_emotion_mult"] = -1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(recipe))
    with pytest.raises(TrainingConfigError, match="emotion.real_texture_emotion_mult must be >= 0, got -1.0"):
        load_config(str(bad), DenoiserTrainingConfig)


def test_anchored_start_examples_diffuse_the_previous_frame_and_ask_for_the_target(tmp_path):
    """data.anchored_start_share: the chosen examples' x_t is the newest motion frame diffused (sampling's first
    step), their loss asks for the target; the others are untouched; older files read 0; out of range refused."""
    from emodiff_core.diffusion import GaussianDiffusion, beta_schedule
    from training.train_denoiser import DenoiserTrainingConfig, anchored_start_noise

    diffusion = GaussianDiffusion(beta_schedule("cosine", 1000))
    g = torch.Generator().manual_seed(0)
    x0, previous, noise = (torch.rand(3, 3, 8, 8, generator=g) * 2 - 1 for _ in range(3))
    t = torch.tensor([500, 500, 120])
    chosen = torch.tensor([True, False, True])
    shifted = anchored_start_noise(diffusion, x0, previous, t, noise, chosen)
    torch.testing.assert_close(diffusion.q_sample(x0, t, shifted)[chosen], diffusion.q_sample(previous, t, noise)[chosen])
    torch.testing.assert_close(shifted[1], noise[1])                                   # not chosen: unchanged
    # the predicted x0 of the network that outputs this noise is the target itself
    torch.testing.assert_close(diffusion.predict_xstart_from_eps(diffusion.q_sample(x0, t, shifted), t, shifted), x0,
                               atol=1e-4, rtol=0)
    assert not torch.allclose(shifted[0], noise[0])
    assert load_config("denoiser_emotion_real_v4_emph_tex4_nodrop.json",
                       DenoiserTrainingConfig).data.anchored_start_share == 0.0
    recipe = json.load(open(os.path.join(CONFIGS, "denoiser_emotion_real_v4_emph_tex4_nodrop.json")))
    recipe["data"]["anchored_start_share"] = 1.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(recipe))
    with pytest.raises(TrainingConfigError, match=r"data.anchored_start_share must be in \[0, 1\], got 1.5"):
        load_config(str(bad), DenoiserTrainingConfig)
    # which clips' examples may start so: any, or those of one corpus (the share is drawn over all of them)
    from training.data import examples_from

    real = np.array([True, False, False, True])
    np.testing.assert_array_equal(examples_from(real, "all"), [True] * 4)
    np.testing.assert_array_equal(examples_from(real, "procedural"), ~real)
    np.testing.assert_array_equal(examples_from(real, "real_texture"), real)
    assert load_config("denoiser_emotion_real_v4_emph_tex4_nodrop.json",
                       DenoiserTrainingConfig).data.anchored_start_sources == "all"
    recipe["data"].update(anchored_start_share=0.3, anchored_start_sources="photos")
    bad.write_text(json.dumps(recipe))
    with pytest.raises(TrainingConfigError, match="data.anchored_start_sources must be one of all, real_texture, "
                                                  "procedural, got 'photos'"):
        load_config(str(bad), DenoiserTrainingConfig)


def test_motion_blur_can_keep_to_the_real_texture_clips(corpus, tmp_path):
    from emodiff_core import config as C
    from training.data import DenoiserData, motion_blur_sigmas

    procedural = DenoiserData(corpus, C.DENOISER_PRESETS["tiny"], "train").batch(np.random.default_rng(0), 4)
    assert procedural["real_texture"].dtype == torch.bool and not procedural["real_texture"].any()
    real = np.array([True, False] * 20)
    every = motion_blur_sigmas(np.random.default_rng(3), real, 1.0)
    only = motion_blur_sigmas(np.random.default_rng(3), real, 1.0, "real_texture")
    assert (every[~real] > 0).any() and not only[~real].any()             # the procedural examples stay sharp
    np.testing.assert_array_equal(only[real], every[real])                # the same draws for the real ones
    assert 0 < (every > 0).mean() < 1 and every.max() <= 1.0
    others = motion_blur_sigmas(np.random.default_rng(3), real, 1.0, "procedural")
    assert not others[real].any()
    np.testing.assert_array_equal(others[~real], every[~real])
    with pytest.raises(ValueError, match="example sources must be one of all, real_texture, procedural"):
        motion_blur_sigmas(np.random.default_rng(3), real, 1.0, "photos")
    from training.train_denoiser import DenoiserTrainingConfig

    assert load_config("denoiser_emotion_real_v4_blur_real.json",
                       DenoiserTrainingConfig).data.motion_blur_sources == "real_texture"
    assert load_config("denoiser_emotion_real_v4.json", DenoiserTrainingConfig).data.motion_blur_sources == "all"
    recipe = json.load(open(os.path.join(CONFIGS, "denoiser_emotion_real_v4_blur_real.json")))
    recipe["data"]["motion_blur_sources"] = "photos"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(recipe))
    with pytest.raises(TrainingConfigError,
                       match="data.motion_blur_sources must be one of all, real_texture, procedural, got 'photos'"):
        load_config(str(bad), DenoiserTrainingConfig)
