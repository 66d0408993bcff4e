"""emodiff_core.deca: DECA-format loading (random weights made here; DECA's are never shipped) and psi."""
import collections

import numpy as np
import pytest
import torch

from emodiff_core import deca as D
from emodiff_core.faces import template_landmarks


@pytest.fixture(scope="module")
def deca_file(tmp_path_factory):
    torch.manual_seed(0)
    model = D.DecaFlameEncoder()
    path = str(tmp_path_factory.mktemp("deca") / "deca_model.tar")
    torch.save({"E_flame": model.state_dict(), "E_detail": {"dummy": torch.zeros(1)}}, path)
    return path, model


def test_state_dict_uses_decas_parameter_names():
    sd = D.DecaFlameEncoder().state_dict()
    for key, shape in (("encoder.conv1.weight", (64, 3, 7, 7)), ("encoder.bn1.running_var", (64,)),
                       ("encoder.layer1.0.downsample.0.weight", (256, 64, 1, 1)),
                       ("encoder.layer1.0.downsample.1.weight", (256,)),
                       ("encoder.layer3.5.conv2.weight", (256, 256, 3, 3)),
                       ("encoder.layer4.2.bn3.bias", (2048,)),
                       ("layers.0.weight", (1024, 2048)), ("layers.2.weight", (236, 1024)), ("layers.2.bias", (236,))):
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("encoder.fc") for k in sd)
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")
               and "running" not in k) == 23508032 + 2048 * 1024 + 1024 + 1024 * 236 + 236


def test_load_and_encode_a_crop(deca_file):
    path, model = deca_file
    enc = D.DecaExpressionEncoder(path)
    rng = np.random.default_rng(0)
    image = (rng.random((300, 260, 3)) * 255).astype(np.uint8)
    lm = template_landmarks(image.shape, fill=0.6)
    psi = enc.encode(image, lm)
    assert psi.shape == (1, 50) and psi.dtype == np.float32 and np.isfinite(psi).all()
    # psi is params[:, 150:200] of the loaded network on DECA's crop
    crop = D.deca_crop(image, lm)
    assert crop.shape == (224, 224, 3) and 0.0 <= crop.min() and crop.max() <= 1.0
    with torch.no_grad():
        params = model.eval()(torch.from_numpy(crop).permute(2, 0, 1)[None])
    assert params.shape == (1, 236)
    assert np.allclose(psi, params[:, 150:200].numpy(), atol=1e-4)
    assert set(D.split_params(params)) == {"shape", "tex", "exp", "pose", "cam", "light"}


def test_deca_crop_geometry():
    """The landmark box (x1.1, x1.25) maps onto the 224 crop as in DECA's TestData."""
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(100.5, 200.5, 68)     # box 100 x 100 in DECA's integer-centre coordinates
    lm[:, 1] = np.linspace(50.5, 150.5, 68)
    m = D.deca_crop_matrix(lm)
    size = int(100 * 1.1 * 1.25)
    centre = np.array([150.0, 100.0])
    corners = np.array([centre - size / 2, centre + size / 2])
    mapped = corners @ m[:, :2].T + m[:, 2]
    assert np.allclose(mapped, [[0, 0], [223, 223]], atol=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(D.DecaWeightsError, match="not found.*licence"):
        D.DecaExpressionEncoder(str(tmp_path / "deca_model.tar"))


class NotATensor:
    pass


def test_file_needing_code_is_refused(tmp_path):
    path = str(tmp_path / "deca_model.tar")
    torch.save({"E_flame": collections.OrderedDict(), "extra": NotATensor()}, path)
    with pytest.raises(D.DecaWeightsError, match="cannot be loaded safely"):
        D.load_deca_encoder(path)


def test_not_a_checkpoint_and_empty(tmp_path):
    path = tmp_path / "deca_model.tar"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(D.DecaWeightsError, match="not a (readable )?PyTorch checkpoint"):
        D.load_deca_encoder(str(path))
    path.write_bytes(b"")
    with pytest.raises(D.DecaWeightsError, match="empty"):
        D.load_deca_encoder(str(path))


def test_no_e_flame_key(tmp_path):
    path = str(tmp_path / "deca_model.tar")
    torch.save({"E_detail": {"w": torch.zeros(2)}, "D_detail": {}}, path)
    with pytest.raises(D.DecaWeightsError, match="no 'E_flame' entry"):
        D.load_deca_encoder(path)


def test_shape_mismatch_names_the_parameter(tmp_path):
    path = str(tmp_path / "deca_model.tar")
    sd = {"encoder.conv1.weight": torch.zeros(64, 3, 7, 7), "layers.2.weight": torch.zeros(100, 1024)}
    torch.save({"E_flame": sd}, path)
    with pytest.raises(D.DecaWeightsError, match=r"'layers.2.weight' has shape \(100, 1024\).*\(236, 1024\)"):
        D.load_deca_encoder(path)


def test_missing_parameters_are_reported(tmp_path):
    path = str(tmp_path / "deca_model.tar")
    torch.save({"E_flame": {"module.encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(D.DecaWeightsError, match="missing"):
        D.load_deca_encoder(path)
