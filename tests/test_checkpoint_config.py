"""Checkpoint format and config strictness."""
import dataclasses
import json
import os
import pickle

import pytest
import torch

from emodiff_core import checkpoint as ckpt
from emodiff_core.config import (DENOISER_PRESETS, EXPRESSION_PRESETS, ConfigError, DenoiserConfig,
                                     SuperResConfig, from_dict, from_json, preset, to_dict, to_json)
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator, SuperResolver


def _randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def test_checkpoint_round_trips_bit_exactly(tmp_path, tiny_config):
    den = _randomised(EMOdiffheadDenoiser(tiny_config))
    gen = _randomised(ExpressionGenerator(EXPRESSION_PRESETS["tiny"]), 1)
    path = ckpt.save_checkpoint(str(tmp_path / "m.safetensors"), {"denoiser": den, "expression_generator": gen},
                                info={"steps": 12, "note": "unit test"})
    loaded = ckpt.load_components(path)
    assert set(loaded) == {"denoiser", "expression_generator"}
    for name, original in (("denoiser", den), ("expression_generator", gen)):
        a, b = original.state_dict(), loaded[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
        assert loaded[name].config == original.config and not loaded[name].training
    info = ckpt.checkpoint_info(path)
    assert info == {"steps": "12", "note": "unit test"}
    assert os.listdir(tmp_path) == ["m.safetensors"]                  # no temporary file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask            # not mkstemp's private 0600


def test_atomic_output_leaves_the_old_file_when_writing_fails(tmp_path):
    from emodiff_core.atomic import atomic_output

    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as tmp, open(tmp, "w") as fh:
            fh.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with atomic_output(str(target)) as tmp, open(tmp, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_missing_component_and_unknown_component(tmp_path):
    sr = SuperResolver(SuperResConfig(scale=2, channels=8, num_blocks=1))
    path = ckpt.save_checkpoint(str(tmp_path / "sr.safetensors"), {"superres": sr})
    with pytest.raises(ckpt.CheckpointError, match="holds superres but not 'denoiser'"):
        ckpt.load_components(path, ["denoiser"])
    with pytest.raises(ckpt.CheckpointError, match="unknown component"):
        ckpt.save_checkpoint(str(tmp_path / "x.safetensors"), {"banana": sr})


def _rewrite_metadata(src, dst, edit):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(src, framework="pt") as fh:
        meta = dict(fh.metadata())
    edit(meta)
    save_file(load_file(src), dst, metadata=meta)


def test_mismatched_config_names_the_first_mismatch(tmp_path, tiny_config):
    path = ckpt.save_checkpoint(str(tmp_path / "m.safetensors"), {"denoiser": EMOdiffheadDenoiser(tiny_config)})
    bad = str(tmp_path / "bad.safetensors")

    def wider(meta):
        cfg = json.loads(meta["config.denoiser"])
        cfg["model_channels"] = 32
        meta["config.denoiser"] = json.dumps(cfg)

    _rewrite_metadata(path, bad, wider)
    with pytest.raises(ckpt.CheckpointError, match=r"tensor '.*' has shape \[.*\] but the model built from"):
        ckpt.load_components(bad)

    def unknown_key(meta):
        cfg = json.loads(meta["config.denoiser"])
        cfg["colour"] = "blue"
        meta["config.denoiser"] = json.dumps(cfg)

    _rewrite_metadata(path, bad, unknown_key)
    with pytest.raises(ckpt.CheckpointError, match="unknown key 'colour'"):
        ckpt.load_components(bad)

    def newer(meta):
        meta["format_version"] = "99"

    _rewrite_metadata(path, bad, newer)
    with pytest.raises(ckpt.CheckpointError, match="format version 99"):
        ckpt.read_checkpoint(bad)


def test_truncated_pickled_empty_and_foreign_files_are_refused(tmp_path, tiny_config):
    path = ckpt.save_checkpoint(str(tmp_path / "m.safetensors"), {"denoiser": EMOdiffheadDenoiser(tiny_config)})
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 5):
        trunc = tmp_path / f"cut{cut}.safetensors"
        trunc.write_bytes(data[:cut])
        with pytest.raises(ckpt.CheckpointError, match="truncated"):
            ckpt.load_components(str(trunc))
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ckpt.CheckpointError, match="pickle"):
        ckpt.load_components(str(pickled))
    torch_zip = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, torch_zip)
    with pytest.raises(ckpt.CheckpointError, match="zip archive"):
        ckpt.load_components(str(torch_zip))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="empty"):
        ckpt.read_checkpoint(str(empty))
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ckpt.CheckpointError, match="not an EMOdiffhead checkpoint"):
        ckpt.read_checkpoint(str(foreign))
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.read_checkpoint(str(tmp_path / "nope.safetensors"))


def test_configs_round_trip_and_are_strict():
    for name, cfg in DENOISER_PRESETS.items():
        cfg.validate()
        assert from_json(DenoiserConfig, to_json(cfg)) == cfg
        assert preset("denoiser", name) == cfg
    data = to_dict(DENOISER_PRESETS["tiny"])
    missing = dict(data)
    del missing["num_res_blocks"]
    with pytest.raises(ConfigError, match="missing key 'num_res_blocks'"):
        from_dict(DenoiserConfig, missing, where="my.json")
    nested = json.loads(json.dumps(data))
    nested["audio"]["n_mels"] = "forty"
    with pytest.raises(ConfigError, match=r"audio\.n_mels: expected an integer"):
        from_dict(DenoiserConfig, nested)
    bad_res = dict(data, attention_resolutions=[7])
    with pytest.raises(ConfigError, match="not UNet levels"):
        from_dict(DenoiserConfig, bad_res)
    with pytest.raises(ConfigError, match="unknown denoiser preset"):
        preset("denoiser", "huge")


def test_build_deep_merges_overrides_into_a_preset_and_reads_them_strictly():
    from emodiff_core.config import KINDS, build

    tiny = DENOISER_PRESETS["tiny"]
    assert build("denoiser", "tiny", {}, where="x") == tiny
    merged = build("denoiser", "tiny", {"diffusion": {"steps": 50}, "channel_mult": [1, 2], "dropout": 0})
    assert merged.diffusion.steps == 50 and merged.diffusion.schedule == tiny.diffusion.schedule
    assert merged.channel_mult == (1, 2) and merged.dropout == 0.0 and merged.audio == tiny.audio
    assert tiny.diffusion.steps == 100                          # the preset itself is untouched
    with pytest.raises(ConfigError, match=r"f.json: model .*unknown key 'diffusion.stepz' for DiffusionConfig"):
        build("denoiser", "tiny", {"diffusion": {"stepz": 50}}, where="f.json: model")
    with pytest.raises(ConfigError, match=r"unknown key 'colour' for ExpressionConfig; remove it"):
        build("expression", "demo", {"colour": 1})
    with pytest.raises(ConfigError, match=r"scale: expected an integer, got '2'"):
        build("superres", "demo", {"scale": "2"})
    with pytest.raises(ConfigError, match=r"superres.scale must be 2 or 4"):
        build("superres", "demo", {"scale": 3})
    with pytest.raises(ConfigError, match=r"f.json: unknown regressor preset 'paper'; choose one of \['demo', 'tiny'\]"):
        build("regressor", "paper", where="f.json")
    with pytest.raises(ConfigError, match="unknown config kind 'vae'"):
        build("vae", "demo")
    for kind, (cls, presets) in KINDS.items():                 # every preset is valid and round-trips
        for name, cfg in presets.items():
            assert build(kind, name) == cfg and from_json(cls, to_json(cfg)) == cfg


# What training recipes set on top of the presets' network sizes: the emotion recipe's psi statistics, spatial map
# and dropout (the denoiser), the SR head's mouth branch. Any other difference is a network the presets do not build.
RECIPE_FIELDS = {"denoiser": {"expression_mean", "expression_scale", "expression_spatial", "expression_dropout"},
                 "superres": {"mouth_branch"}}


@pytest.mark.parametrize("bundle", ["emodiffhead_demo", "emodiffhead_emotion", "emodiffhead_real",
                                    "emodiffhead_procedural"])
def test_demo_presets_are_the_shipped_checkpoints_networks(bundle):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                        f"{bundle}.safetensors")
    if not os.path.isfile(path) or os.path.getsize(path) < 1024:
        pytest.skip(f"{bundle} is not in this checkout")
    shipped = ckpt.read_checkpoint(path).configs
    for component, kind in (("denoiser", "denoiser"), ("expression_generator", "expression"),
                            ("superres", "superres"), ("regressor", "regressor")):
        built = preset(kind, "demo")
        differ = {f.name for f in dataclasses.fields(built) if getattr(built, f.name) != getattr(shipped[component], f.name)}
        assert differ <= RECIPE_FIELDS.get(component, set()), (component, differ)
        if bundle == "emodiffhead_procedural":          # the first demo: the presets exactly
            assert shipped[component] == built, component
