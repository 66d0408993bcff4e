"""python -m training average: two denoisers averaged parameter by parameter (training/average.py)."""
import os

import pytest
import torch

from training.__main__ import main as training_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, perturbed_tiny_denoiser):
    """A tiny denoiser with every parameter non-zero (its output head starts at zero), in a bundle."""
    from emodiff_core.checkpoint import save_checkpoint

    den = perturbed_tiny_denoiser()
    path = str(tmp_path_factory.mktemp("average") / "tiny.safetensors")
    save_checkpoint(path, {"denoiser": den}, info={"steps": "3"})
    return path


def test_average_interpolates_parameters_and_refuses_other_shapes(tiny_bundle, tmp_path, perturbed_tiny_denoiser):
    import dataclasses

    from training import average as da
    from emodiff_core.checkpoint import CheckpointError, load_components, save_checkpoint
    from emodiff_core.config import DENOISER_PRESETS
    from emodiff_core.models import EMOdiffheadDenoiser

    other = perturbed_tiny_denoiser(seed=1, scale=0.05)
    other_path = str(tmp_path / "other.safetensors")
    save_checkpoint(other_path, {"denoiser": other}, info={"kind": "denoiser", "steps": 7})
    first = load_components(tiny_bundle, ["denoiser"])["denoiser"].state_dict()
    second = other.state_dict()
    out = str(tmp_path / "avg.safetensors")
    assert training_main(["average", tiny_bundle, other_path, "--weight", "0.25", "--out", out]) == 0
    avg = load_components(out, ["denoiser"])["denoiser"].state_dict()
    key = next(k for k, v in first.items() if v.is_floating_point() and not torch.equal(v, second[k]))
    assert torch.allclose(avg[key], 0.75 * first[key] + 0.25 * second[key], atol=1e-6)
    for k in first:                                   # every tensor interpolated, none left behind
        assert torch.allclose(avg[k].double(), 0.75 * first[k].double() + 0.25 * second[k].double(), atol=1e-6)
    assert torch.equal(da.average_denoisers(tiny_bundle, other_path, 0.0).state_dict()[key], first[key])
    assert torch.equal(da.average_denoisers(tiny_bundle, other_path, 1.0).state_dict()[key], second[key])
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        da.average_denoisers(tiny_bundle, other_path, 1.5)
    tiny = DENOISER_PRESETS["tiny"]
    wider = EMOdiffheadDenoiser(dataclasses.replace(tiny, model_channels=tiny.model_channels * 2))
    wider_path = str(tmp_path / "wider.safetensors")
    save_checkpoint(wider_path, {"denoiser": wider}, info={"kind": "denoiser"})
    with pytest.raises(CheckpointError, match="same shape"):
        da.average_denoisers(tiny_bundle, wider_path, 0.5)
    assert training_main(["average", tiny_bundle, wider_path, "--weight", "0.5", "--out",
                          str(tmp_path / "bad.safetensors")]) == 2
    assert not os.path.exists(tmp_path / "bad.safetensors")
    # trained with expression dropout (the null condition learned) and without: they average, and the average
    # claims the null condition only as far as both learned it
    dropped = EMOdiffheadDenoiser(dataclasses.replace(DENOISER_PRESETS["tiny"], expression_dropout=0.1))
    dropped.load_state_dict(second)
    dropped_path = str(tmp_path / "dropped.safetensors")
    save_checkpoint(dropped_path, {"denoiser": dropped}, info={"kind": "denoiser"})
    mixed = da.average_denoisers(dropped_path, tiny_bundle, 0.5)
    assert mixed.config.expression_dropout == 0.0
    assert torch.allclose(mixed.state_dict()[key], 0.5 * first[key] + 0.5 * second[key], atol=1e-6)
