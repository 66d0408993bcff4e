"""The SR head's mouth branch (`SuperResConfig.mouth_branch`) and its assembly by `training export`."""
import json

import numpy as np
import pytest
import torch

from emodiff_core import faces
from emodiff_core.checkpoint import CheckpointError, load_components, read_checkpoint, save_checkpoint
from emodiff_core.config import EXPRESSION_PRESETS, SuperResConfig, from_json
from emodiff_core.models import ExpressionGenerator, SuperResolver


def _head(seed, channels=8):
    head = SuperResolver(SuperResConfig(scale=2, channels=channels, num_blocks=1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():                    # small weights: outputs stay inside [0, 1], not clamped flat
        for p in head.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return head.eval()


def test_mouth_region_weight_covers_the_template_mouth_and_nothing_above_or_below():
    w = faces.mouth_region_weight(128, 128)
    assert w.shape == (128, 128) and w.dtype == np.float32 and w.min() == 0.0 and w.max() == 1.0
    mouth = faces.template_landmarks((128, 128))[48:68]

    def at(point):
        return w[int(point[1]), int(point[0])]

    assert at(mouth.mean(axis=0)) == 1.0
    assert all(at(p) > 0.9 for p in mouth)                               # every lip point (closed mouth)
    template = faces.template_landmarks((128, 128))
    for index in (8, 30, 36, 45, 19, 0, 16):                              # chin, nose tip, eyes, brow, jaw ends
        assert at(template[index]) == 0.0, index
    assert np.allclose(w, w[:, ::-1], atol=1e-6)                          # the face's left-right symmetry
    # a wider frame centres the same layout on its shorter side
    assert np.allclose(faces.mouth_region_weight(128, 192)[:, 32:160], w, atol=1e-5)


def test_mouth_branch_replaces_the_main_head_around_the_mouth_only():
    from training.export import with_mouth_branch

    detail, mouth = _head(0), _head(1)
    assert detail.mouth is None and not detail.config.mouth_branch
    combined = with_mouth_branch(detail, mouth)
    assert combined.config.mouth_branch and combined.config.channels == 8
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out, main, branch = combined(x), detail(x), mouth(x)
    w = torch.from_numpy(faces.mouth_region_weight(64, 64))
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(out, w * branch + (1 - w) * main, atol=1e-6)
    assert torch.equal(out[..., w == 0], main[..., w == 0])               # the main head's pixels untouched
    assert torch.allclose(out[..., w == 1], branch[..., w == 1], atol=1e-6)
    assert (w == 1).sum() > 20 and (w == 0).float().mean() > 0.8         # a mouth-sized region
    assert not torch.allclose(main, branch, atol=1e-3)                     # the two heads differ: the test can fail


def test_mouth_branch_round_trips_and_old_configs_read_as_plain_heads(tmp_path):
    from training.export import with_mouth_branch

    combined = with_mouth_branch(_head(0), _head(1))
    path = save_checkpoint(str(tmp_path / "sr.safetensors"), {"superres": combined})
    loaded = load_components(path)["superres"]
    assert loaded.config.mouth_branch and loaded.mouth is not None
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), combined(x))
    old = from_json(SuperResConfig, json.dumps({"scale": 2, "channels": 8, "num_blocks": 1}))  # before the branch
    assert old.mouth_branch is False and SuperResolver(old).mouth is None


def test_export_assembles_the_mouth_branch_and_refuses_what_cannot_be_one(tmp_path):
    from training.export import export

    detail = save_checkpoint(str(tmp_path / "detail.safetensors"), {"superres": _head(0)},
                             info={"kind": "superres", "steps": 7})
    mouth = save_checkpoint(str(tmp_path / "mouth.safetensors"), {"superres": _head(1)},
                            info={"kind": "superres", "steps": 3})
    bundle = export(str(tmp_path / "b.safetensors"), [detail], superres_mouth_from=mouth)
    ckpt = read_checkpoint(bundle)
    assert ckpt.configs["superres"].mouth_branch
    assert ckpt.info["superres.steps"] == "7" and ckpt.info["superres.mouth.steps"] == "3"
    assert ckpt.info["superres.mouth_branch"] == "mouth.safetensors"
    head = load_components(bundle)["superres"]
    assert all(torch.equal(a, b) for a, b in zip(head.mouth.state_dict().values(), _head(1).state_dict().values()))

    narrow = save_checkpoint(str(tmp_path / "narrow.safetensors"), {"superres": _head(1, channels=4)})
    with pytest.raises(CheckpointError, match="differs in shape"):
        export(str(tmp_path / "x.safetensors"), [detail], superres_mouth_from=narrow)
    with pytest.raises(CheckpointError, match="already has a mouth branch"):
        export(str(tmp_path / "x.safetensors"), [detail], superres_mouth_from=bundle)
    generator = save_checkpoint(str(tmp_path / "g.safetensors"),
                                {"expression_generator": ExpressionGenerator(EXPRESSION_PRESETS["tiny"])})
    with pytest.raises(CheckpointError, match="neither the parts nor the base"):
        export(str(tmp_path / "x.safetensors"), [generator], superres_mouth_from=mouth)
    with pytest.raises(FileNotFoundError, match="superres-mouth-from"):
        export(str(tmp_path / "x.safetensors"), [detail], superres_mouth_from=str(tmp_path / "none.safetensors"))
    assert not (tmp_path / "x.safetensors").exists()                     # nothing half-written


def test_export_sets_the_generators_warmup_and_keeps_its_weights(tmp_path):
    """`export --expression-warmup`: the bundle's generator rolls out W frames first (config), with the same
    weights; refused without a generator or with a negative count, leaving no file."""
    from training.export import export

    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"]).eval()
    part = save_checkpoint(str(tmp_path / "g.safetensors"), {"expression_generator": gen})
    bundle = export(str(tmp_path / "b.safetensors"), [part], expression_warmup=30)
    loaded = load_components(bundle)["expression_generator"]
    assert loaded.config.warmup_frames == 30
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), gen.state_dict().values()))
    again = export(str(tmp_path / "c.safetensors"), [], base=bundle, expression_warmup=0)   # re-export: undone
    assert load_components(again)["expression_generator"].config.warmup_frames == 0
    detail = save_checkpoint(str(tmp_path / "detail.safetensors"), {"superres": _head(0)})
    with pytest.raises(CheckpointError, match="expression-warmup.*neither the parts nor the base"):
        export(str(tmp_path / "x.safetensors"), [detail], expression_warmup=30)
    with pytest.raises(ValueError, match="must be >= 0"):
        export(str(tmp_path / "x.safetensors"), [part], expression_warmup=-3)
    assert not (tmp_path / "x.safetensors").exists()


def test_superres_training_refuses_a_mouth_branch_config(tmp_path):
    from training.train_superres import train

    config = tmp_path / "sr.json"
    config.write_text(json.dumps({
        "model": {"preset": "tiny", "overrides": {"mouth_branch": True}},
        "optim": {"lr": 0.001, "batch_size": 4, "steps": 4, "warmup": 1, "ema_decay": 0.9},
        "data": {"split": "train", "val_split": "val", "target_size": 64, "input_blur": 0.5},
        "schedule": {"log_every": 1, "checkpoint_every": 2}, "seed": 0, "threads": 1}))
    with pytest.raises(ValueError, match="export --superres-mouth-from"):
        train(str(config), str(tmp_path / "no_data"), str(tmp_path / "run"))
