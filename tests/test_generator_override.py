"""An expression generator of two networks (`ExpressionConfig.override_emotions`) and its assembly by `export`."""
import dataclasses
import json

import pytest
import torch

from emodiff_core import pipeline as pl
from emodiff_core.checkpoint import CheckpointError, load_components, read_checkpoint, save_checkpoint
from emodiff_core.config import EXPRESSION_PRESETS, ConfigError, ExpressionConfig, SuperResConfig, from_json
from emodiff_core.emotions import EMOTIONS
from emodiff_core.models import ExpressionGenerator, SuperResolver

SIX = ("angry", "contempt", "disgusted", "fear", "happy", "surprised")


def _generator(seed, cfg=None):
    gen = ExpressionGenerator(cfg or EXPRESSION_PRESETS["tiny"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return gen.eval()


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def _routed(emotions=SIX):
    from training.export import with_override

    return with_override(_generator(0), _generator(1), emotions)


def test_listed_emotions_come_from_the_override_and_the_rest_from_the_first_network_bit_for_bit():
    first, second, routed = _generator(0), _generator(1), _routed()
    labels = torch.arange(len(EMOTIONS))                      # every emotion in one batch, as the pipeline asks
    z = first.sample_noise(1, torch.Generator().manual_seed(4)).expand(len(labels), -1)
    with torch.no_grad():
        out, alone, other = routed(labels, 20, z=z), first(labels, 20, z=z), second(labels, 20, z=z)
    listed = torch.tensor([e in SIX for e in EMOTIONS])
    assert torch.equal(out[~listed], alone[~listed])         # neutral and sad: the first network's own rollout
    assert torch.equal(out[listed], other[listed])
    assert not torch.allclose(alone, other, atol=1e-3)        # the two networks differ: the test can fail
    # a batch without a listed emotion never runs the second network and is the first's output
    kept = torch.tensor([EMOTIONS.index("neutral"), EMOTIONS.index("sad")])
    with torch.no_grad():
        assert torch.equal(routed(kept, 20, z=z[:2]), first(kept, 20, z=z[:2]))
    # without z, one draw serves both networks: the same generator seed gives the same sequences
    with torch.no_grad():
        a = routed(labels, 6, generator=torch.Generator().manual_seed(9))
        b = routed(labels, 6, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_the_pipelines_pair_keeps_the_first_networks_neutral_and_sad_and_takes_the_overrides_happy():
    """What the photographs' protocol relies on: e_n and an unlisted emotion's psi are the first network's bit for
    bit; a listed emotion at k = 1 is the second network's sequence, measured from the first's e_n."""
    first, second, routed = _generator(0), _generator(1), _routed()
    for seed in (0, 7):
        psi, e_n = pl.emotion_expression_pair(routed, 24, pl.EmotionSpec("sad", 1.0), seed=seed)
        psi0, e_n0 = pl.emotion_expression_pair(first, 24, pl.EmotionSpec("sad", 1.0), seed=seed)
        assert torch.equal(psi, psi0) and torch.equal(e_n, e_n0)
        happy, e_n_h = pl.emotion_expression_pair(routed, 24, pl.EmotionSpec("happy", 1.0), seed=seed)
        other, _ = pl.emotion_expression_pair(second, 24, pl.EmotionSpec("happy", 1.0), seed=seed)
        assert torch.equal(e_n_h, e_n0)
        assert torch.allclose(happy, other, atol=1e-5)
        half, _ = pl.emotion_expression_pair(routed, 24, pl.EmotionSpec("happy", 0.5), seed=seed)
        assert torch.allclose(half, e_n0 + 0.5 * (other - e_n0), atol=1e-5)     # Eq. 14 from the first's e_n


def test_the_config_refuses_neutral_unknown_and_repeated_emotions_and_old_configs_have_no_override():
    cfg = EXPRESSION_PRESETS["tiny"]
    for emotions, message in ((("neutral",), "cannot hold neutral"), (("joy",), "unknown emotion 'joy'"),
                              (("sad", "sad"), "lists an emotion twice")):
        with pytest.raises(ConfigError, match=message):
            ExpressionGenerator(dataclasses.replace(cfg, override_emotions=emotions))
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "override_emotions"}
    loaded = from_json(ExpressionConfig, json.dumps(old))
    assert loaded.override_emotions == () and ExpressionGenerator(loaded).override is None
    routed = ExpressionGenerator(dataclasses.replace(cfg, override_emotions=("happy",)))
    assert routed.override is not None and routed.override.config.override_emotions == ()
    assert _parameters(routed) == 2 * _parameters(ExpressionGenerator(cfg))


def test_export_assembles_the_override_round_trips_it_and_refuses_what_cannot_be_one(tmp_path):
    from training.export import export

    first = save_checkpoint(str(tmp_path / "first.safetensors"), {"expression_generator": _generator(0)},
                            info={"kind": "expression_generator", "steps": 5})
    second = save_checkpoint(str(tmp_path / "second.safetensors"), {"expression_generator": _generator(1)},
                             info={"kind": "expression_generator", "steps": 2000})
    bundle = export(str(tmp_path / "b.safetensors"), [first], expression_override_from=second,
                    expression_override_emotions=["Happy", "surprise"], expression_warmup=3)
    ckpt = read_checkpoint(bundle)
    assert ckpt.configs["expression_generator"].override_emotions == ("happy", "surprised")     # MEAD spellings
    assert ckpt.info["expression_generator.steps"] == "5"
    assert ckpt.info["expression_generator.override"] == "second.safetensors"
    assert ckpt.info["expression_generator.override.steps"] == "2000"
    assert ckpt.info["expression_generator.override_emotions"] == "happy,surprised"
    loaded = load_components(bundle)["expression_generator"]
    warmed = dataclasses.replace(EXPRESSION_PRESETS["tiny"], warmup_frames=3)
    assert loaded.config.warmup_frames == 3 and loaded.override.config.warmup_frames == 3   # both roll out alike
    labels = torch.tensor([EMOTIONS.index(e) for e in ("neutral", "happy", "sad", "surprised")])
    z = loaded.sample_noise(1, torch.Generator().manual_seed(2)).expand(4, -1)
    a, b = _generator(0, warmed), _generator(1, warmed)        # the parts' weights rolled out with the warm-up
    with torch.no_grad():
        out, alone, other = loaded(labels, 8, z=z), a(labels, 8, z=z), b(labels, 8, z=z)
    assert torch.equal(out[[0, 2]], alone[[0, 2]]) and torch.equal(out[[1, 3]], other[[1, 3]])

    narrow = save_checkpoint(str(tmp_path / "narrow.safetensors"), {"expression_generator": _generator(
        1, dataclasses.replace(EXPRESSION_PRESETS["tiny"], hidden_dim=8))})
    refusals = [
        (dict(expression_override_from=narrow, expression_override_emotions=["happy"]), CheckpointError,
         "differs in shape"),
        (dict(expression_override_from=bundle, expression_override_emotions=["happy"]), CheckpointError,
         "already routes"),
        (dict(expression_override_from=second, expression_override_emotions=[]), CheckpointError,
         "at least one emotion"),
        (dict(expression_override_from=second, expression_override_emotions=["neutral"]), ConfigError,
         "cannot hold neutral"),
        (dict(expression_override_from=second, expression_override_emotions=["joy"]), ValueError,
         "unknown emotion"),
        (dict(expression_override_emotions=["happy"]), CheckpointError, "give the file too"),
        (dict(expression_override_from=str(tmp_path / "none.safetensors"), expression_override_emotions=["happy"]),
         FileNotFoundError, "expression-override-from"),
    ]
    for kwargs, error, message in refusals:
        with pytest.raises(error, match=message):
            export(str(tmp_path / "x.safetensors"), [first], **kwargs)
    sr = save_checkpoint(str(tmp_path / "sr.safetensors"),
                         {"superres": SuperResolver(SuperResConfig(scale=2, channels=8, num_blocks=1))})
    with pytest.raises(CheckpointError, match="neither the parts nor the base"):
        export(str(tmp_path / "x.safetensors"), [sr], expression_override_from=second,
               expression_override_emotions=["happy"])
    assert not (tmp_path / "x.safetensors").exists()                     # nothing half-written


def test_the_export_command_line_takes_the_override(tmp_path):
    from training.__main__ import main

    first = save_checkpoint(str(tmp_path / "first.safetensors"), {"expression_generator": _generator(0)})
    second = save_checkpoint(str(tmp_path / "second.safetensors"), {"expression_generator": _generator(1)})
    out = str(tmp_path / "b.safetensors")
    assert main(["export", first, "--expression-override-from", second, "--expression-override-emotions",
                 "angry, happy", "--out", out]) == 0
    assert read_checkpoint(out).configs["expression_generator"].override_emotions == ("angry", "happy")
    assert main(["export", first, "--expression-override-from", second, "--expression-override-emotions",
                 "neutral", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_generator_training_refuses_to_start_from_a_generator_of_two_networks(tmp_path):
    from training.train_generator import _load_start

    path = save_checkpoint(str(tmp_path / "routed.safetensors"), {"expression_generator": _routed()})
    with pytest.raises(ValueError, match="two networks.*export --expression-override-from"):
        _load_start(path, EXPRESSION_PRESETS["tiny"])
