"""The FER2013 mini-Xception port (emodiff_core.fer_net) and its Keras conversion (training/convert_fer.py)."""
import json
import os

import numpy as np
import pytest
import torch

from emodiff_core import fer_net as FN
from emodiff_core.emotions import EMOTIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the network
def test_network_shapes_and_size():
    net = FN.MiniXception().eval()
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
             for m in (net.conv1, net.conv2, *net.blocks)]
    with torch.no_grad():
        logits = net(torch.zeros(3, 1, 64, 64))
        for h in hooks:
            h.remove()
        probs = net.probabilities(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (3, 7) and probs.shape == (2, 7)
    assert torch.allclose(probs.sum(1), torch.ones(2))
    assert sizes == [(62, 62), (60, 60), (30, 30), (15, 15), (8, 8), (4, 4)]
    # Keras reports 58,423 parameters (56,951 trainable + the BN moving statistics)
    assert sum(t.numel() for t in net.state_dict().values()) == 58423


def test_same_padding_follows_tensorflow():
    assert FN.same_padding(60, 3, 2) == (0, 1)      # the odd pixel goes bottom/right
    assert FN.same_padding(15, 3, 2) == (1, 1)
    assert FN.same_padding(8, 3, 2) == (0, 1)
    assert FN.same_padding(15, 1, 2) == (0, 0)
    x = -torch.rand(1, 2, 8, 8) - 1.0              # all negative: zero padding would win the max
    y = FN.max_pool_same(x)
    assert y.shape == (1, 2, 4, 4) and (y < -1.0).all()
    assert torch.equal(y[..., -1, -1], x[..., 6:, 6:].amax(dim=(-2, -1)))


# --------------------------------------------------------------------------- loader errors
def test_loader_rejects_a_missing_file(tmp_path):
    with pytest.raises(FN.FerWeightsNotFoundError, match="no FER classifier weights"):
        FN.load_fer_classifier(str(tmp_path / "absent.safetensors"))
    assert issubclass(FN.FerWeightsNotFoundError, FileNotFoundError)


def test_loader_rejects_wrong_files(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a weights file at all")
    with pytest.raises(FN.FerWeightsError, match="not a safetensors file"):
        FN.load_fer_classifier(str(junk))

    pickle = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle)
    with pytest.raises(FN.FerWeightsError, match="pickle"):
        FN.load_fer_classifier(str(pickle))

    other = tmp_path / "other.safetensors"
    save_file({"denoiser.w": torch.zeros(2)}, str(other), metadata={"format": "emodiffhead"})
    with pytest.raises(FN.FerWeightsError, match="not FER mini-Xception weights.*EMOdiffhead generation"):
        FN.load_fer_classifier(str(other))

    good = tmp_path / "good.safetensors"
    FN.save_fer_net(FN.MiniXception(), str(good))
    assert isinstance(FN.load_fer_classifier(str(good)), FN.FerClassifier)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["head.weight"] = tensors["head.weight"][:, :, :2].contiguous()
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(FN.FerWeightsError, match="head.weight has shape"):
        FN.load_fer_classifier(str(bad))
    del tensors["head.weight"]
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(FN.FerWeightsError, match="missing.*head.weight"):
        FN.load_fer_classifier(str(bad))


# --------------------------------------------------------------------------- preprocessing
def test_frames_layouts_agree_and_grey_is_bt601():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    a = FN.preprocess(rgb)
    b = FN.preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0)
    c = FN.preprocess(list(rgb))
    assert a.shape == (2, 1, 64, 64) and -1.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c)
    grey = FN.frames_to_grey(rgb)[:, 0] * 255.0
    try:
        import cv2
    except ImportError:
        cv2 = None
    want = (np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]) if cv2 else
            rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(grey.numpy() - want).max() <= 0.51        # cv2 rounds to uint8


def test_resize_matches_fers_opencv_preprocessing():
    cv2 = pytest.importorskip("cv2")
    skdata = pytest.importorskip("skimage.data")
    face = np.ascontiguousarray(skdata.astronaut()[77:189, 170:282])          # 112 px -> 64 px
    fer = cv2.resize(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), (64, 64)).astype(np.float32) / 255.0 * 2 - 1
    ours = FN.preprocess(face)[0, 0].numpy()
    assert np.abs(ours - fer).max() < 2.5 * 2 / 255           # cv2 works in 8-bit fixed point
    assert np.abs(FN.preprocess(face, antialias=True)[0, 0].numpy() - fer).max() > 4 * 2 / 255


def test_bad_frames_are_refused():
    with pytest.raises(FN.FerInputError, match="0..1"):
        FN.preprocess(torch.full((1, 3, 32, 32), 200.0))
    with pytest.raises(FN.FerInputError, match="channel"):
        FN.preprocess(np.zeros((2, 32, 32, 5), np.uint8))
    with pytest.raises(FN.FerInputError, match="dimensions"):
        FN.preprocess(np.zeros((1, 1, 2, 32, 32), np.uint8))


def test_prediction_maps_to_the_project_emotions():
    pred = FN.FerPrediction(torch.tensor([[0.1, 0.0, 0.0, 0.2, 0.0, 0.6, 0.1]]), ["surprise"])
    assert pred.emotions == ["surprised"]
    p8 = pred.emotion_probs()
    assert p8.shape == (1, len(EMOTIONS)) and float(p8[0, EMOTIONS.index("contempt")]) == 0.0
    assert float(p8[0, EMOTIONS.index("surprised")]) == pytest.approx(0.6)
    assert float(p8[0, EMOTIONS.index("neutral")]) == pytest.approx(0.1)
    assert set(FN.SHARED_EMOTIONS) == {"angry", "disgusted", "fear", "happy", "sad", "surprised"}
    assert FN.shared_emotion_accuracy(["happy", "sad", "neutral"], ["happy", "angry", "neutral"]) == 0.5


# --------------------------------------------------------------------------- Keras conversion round trip
def _keras_layer(name, cls, inbound, **cfg):
    cfg.setdefault("name", name)
    nodes = [[[src, 0, 0, {}] for src in inbound]] if inbound else []
    return {"name": name, "class_name": cls, "config": cfg, "inbound_nodes": nodes}


def write_tiny_keras_h5(path, stem=4, blocks=(4, 6), classes=7, size=19, seed=0, break_padding=False):
    """A mini-Xception in Keras 2's HDF5 layout (model_config JSON + model_weights/<layer>/<layer>_1/<w>:0)."""
    import h5py

    rng = np.random.default_rng(seed)
    layers, weights = [], {}
    conv = dict(strides=[1, 1], dilation_rate=[1, 1], activation="linear", data_format="channels_last")

    def add(name, cls, inbound, w=None, **cfg):
        layers.append(_keras_layer(name, cls, inbound, **cfg))
        if w:
            weights[name] = w
        return name

    def bn(name, src, c):
        return add(name, "BatchNormalization", [src], {
            "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.3, c),
            "moving_mean": rng.normal(0, 0.3, c), "moving_variance": rng.uniform(0.3, 2.0, c)},
            epsilon=0.001, momentum=0.99, axis=-1, center=True, scale=True)

    cur = add("input_1", "InputLayer", [], batch_input_shape=[None, size, size, 1])
    cin = 1
    for i in (1, 2):
        cur = add(f"conv2d_{i}", "Conv2D", [cur], {"kernel": rng.normal(0, 0.5, (3, 3, cin, stem))},
                  filters=stem, kernel_size=[3, 3], padding="valid", use_bias=False, **conv)
        cur = bn(f"bn_{i}", cur, stem)
        cur = add(f"relu_{i}", "Activation", [cur], activation="relu")
        cin = stem
    for b, cout in enumerate(blocks):
        s1 = add(f"sep_{b}a", "SeparableConv2D", [cur], {"depthwise_kernel": rng.normal(0, 0.5, (3, 3, cin, 1)),
                 "pointwise_kernel": rng.normal(0, 0.5, (1, 1, cin, cout))}, filters=cout, kernel_size=[3, 3],
                 padding="same", use_bias=False, depth_multiplier=1, **conv)
        x = add(f"relu_{b}a", "Activation", [bn(f"bn_{b}a", s1, cout)], activation="relu")
        s2 = add(f"sep_{b}b", "SeparableConv2D", [x], {"depthwise_kernel": rng.normal(0, 0.5, (3, 3, cout, 1)),
                 "pointwise_kernel": rng.normal(0, 0.5, (1, 1, cout, cout))}, filters=cout, kernel_size=[3, 3],
                 padding="same", use_bias=False, depth_multiplier=1, **conv)
        sc = add(f"shortcut_{b}", "Conv2D", [cur], {"kernel": rng.normal(0, 0.5, (1, 1, cin, cout))}, filters=cout,
                 kernel_size=[1, 1], padding="same", use_bias=False, **dict(conv, strides=[2, 2]))
        pool = add(f"pool_{b}", "MaxPooling2D", [bn(f"bn_{b}b", s2, cout)], pool_size=[3, 3], strides=[2, 2],
                   padding="valid" if (break_padding and b == 0) else "same", data_format="channels_last")
        cur = add(f"add_{b}", "Add", [pool, bn(f"bn_{b}s", sc, cout)])
        cin = cout
    head = add("conv2d_head", "Conv2D", [cur], {"kernel": rng.normal(0, 0.5, (3, 3, cin, classes)),
               "bias": rng.normal(0, 0.5, classes)}, filters=classes, kernel_size=[3, 3], padding="same",
               use_bias=True, **conv)
    gap = add("gap", "GlobalAveragePooling2D", [head], data_format="channels_last")
    add("predictions", "Activation", [gap], activation="softmax")
    config = {"class_name": "Model", "config": {"name": "model_1", "layers": layers,
                                                 "input_layers": [["input_1", 0, 0]],
                                                 "output_layers": [["predictions", 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [layer["name"].encode() for layer in layers]
        for layer in layers:
            lg = g.create_group(layer["name"])
            names = []
            for wname, arr in weights.get(layer["name"], {}).items():
                full = f"{layer['name']}_1/{wname}:0"
                lg.create_dataset(full, data=np.asarray(arr, np.float32))
                names.append(full.encode())
            lg.attrs["weight_names"] = names
    return {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in weights.items()}


def test_keras_conversion_round_trip(tmp_path):
    pytest.importorskip("h5py")
    from training import convert_fer as CF

    h5 = str(tmp_path / "tiny.hdf5")
    keras_w = write_tiny_keras_h5(h5)
    net = CF.convert(h5)
    assert net.config == FN.MiniXceptionConfig(stem_channels=4, block_channels=(4, 6))
    out = str(tmp_path / "tiny.safetensors")
    FN.save_fer_net(net, out, {"source": "tiny.hdf5", "license": "MIT"})
    loaded, meta = FN.load_fer_net(out)
    assert meta["info.source"] == "tiny.hdf5" and json.loads(meta["config"])["block_channels"] == [4, 6]

    sd = loaded.state_dict()
    k = keras_w["conv2d_1"]["kernel"]                                # [kh, kw, in, out]
    assert torch.equal(sd["conv1.weight"][3, 0, 0, 2], torch.tensor(k[0, 2, 0, 3]))
    dw = keras_w["sep_1a"]["depthwise_kernel"]                       # [kh, kw, C, 1]
    assert torch.equal(sd["blocks.1.sep1.depthwise.weight"][2, 0, 1, 0], torch.tensor(dw[1, 0, 2, 0]))
    pw = keras_w["sep_0b"]["pointwise_kernel"]
    assert torch.equal(sd["blocks.0.sep2.pointwise.weight"][:, :, 0, 0], torch.from_numpy(pw[0, 0].T))
    assert torch.equal(sd["blocks.1.shortcut_bn.running_var"], torch.from_numpy(keras_w["bn_1s"]["moving_variance"]))
    assert torch.equal(sd["head.bias"], torch.from_numpy(keras_w["conv2d_head"]["bias"]))

    # forward: the port against the NumPy interpreter of the Keras graph (19 px: odd sizes 15 -> 8, even 8 -> 4)
    config, weights = CF.read_keras_h5(h5)
    x = torch.rand(3, 1, 19, 19) * 2 - 1
    with torch.no_grad():
        port = loaded.probabilities(x).double().numpy()
    ref = CF.keras_reference_forward(config, weights, x.permute(0, 2, 3, 1).numpy())
    assert np.abs(port - ref).max() < 1e-5


def test_conversion_refuses_a_different_architecture(tmp_path):
    pytest.importorskip("h5py")
    from training import convert_fer as CF

    h5 = str(tmp_path / "odd.hdf5")
    write_tiny_keras_h5(h5, break_padding=True)
    with pytest.raises(CF.KerasModelError, match="padding"):
        CF.convert(h5)


def test_convert_cli_writes_checked_weights(tmp_path, capsys):
    pytest.importorskip("h5py")
    from training import convert_fer as CF

    h5 = str(tmp_path / "tiny.hdf5")
    write_tiny_keras_h5(h5, size=64)
    out = str(tmp_path / "fer.safetensors")
    assert CF.main([h5, "--out", out, "--source", "synthetic"]) == 0
    _, meta = FN.load_fer_net(out)
    assert meta["info.source"] == "synthetic" and len(meta["info.source_sha256"]) == 64
    assert meta["info.license"].startswith("MIT")
    assert json.loads(capsys.readouterr().out.splitlines()[0])["check_vs_numpy_keras_reference"]["argmax_agree"] == 8


# --------------------------------------------------------------------------- the shipped weights
shipped = pytest.mark.skipif(not os.path.isfile(FN.DEFAULT_FER_WEIGHTS), reason="FER weights not in checkpoints/")


@pytest.fixture(scope="module")
def classifier():
    return FN.load_fer_classifier()


@shipped
def test_shipped_weights_carry_their_source_and_licence(classifier):
    meta = classifier.metadata
    assert meta["format"] == FN.FORMAT and json.loads(meta["labels"]) == list(FN.FER_LABELS)
    assert meta["info.source_sha256"] == "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
    assert meta["info.license"].startswith("MIT")


@shipped
def test_astronaut_is_happy_on_a_fixed_crop(classifier):
    skdata = pytest.importorskip("skimage.data")
    face = skdata.astronaut()[77:189, 170:282]          # the face box (NASA portrait, public domain)
    pred = classifier.predict(face)
    assert pred.labels == ["happy"] and float(pred.probs[0, FN.FER_LABELS.index("happy")]) > 0.9
    chw = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float() / 255.0
    assert torch.allclose(classifier.predict(chw[None]).probs, pred.probs, atol=1e-4)


@shipped
def test_astronaut_is_happy_through_the_pipeline_alignment(classifier):
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    from emodiff_core.pipeline import prepare_portrait

    portrait = prepare_portrait(skdata.astronaut(), size=128, backend="dlib")
    pred = classifier.predict(portrait.crop_tensor()[None])
    assert pred.emotions == ["happy"] and float(pred.probs[0, FN.FER_LABELS.index("happy")]) > 0.9


def test_fer_reading_by_source_file_pools_frames_and_morphs(tmp_path):
    from training.clips import Clip, write_clip, write_index
    from training.fer_confusion import by_source
    from emodiff_core.audio import samples_for_frames

    root = str(tmp_path / "ds")
    clips = [("c0", ["smiler.jpg"], 0.5, "neutral"), ("c1", ["video.mp4#f10"], -0.1, "neutral"),
             ("c2", ["video.mp4#f40"], 0.3, "sad"), ("c3", ["smiler.jpg", "video.mp4#f10"], 0.0, "neutral"),
             ("c4", None, None, "happy"), ("c5", ["mirror.jpg"], 0.2, "sad"), ("c6", ["mirror.jpg"], 0.4, "sad")]
    for clip_id, sources, smile, emotion in clips:
        meta = {"clip_id": clip_id, "identity": clip_id, "split": "test", "fps": 30, "sample_rate": 16000, "size": 8,
                "source": "real_texture" if sources else "procedural", "emotion": emotion, "intensity": 1.0}
        if sources:
            meta["real"] = {"sources": sources, "source_psi": {"lip_corner_up": smile}, "flips": [clip_id == "c6"]}
        write_clip(root, Clip(meta, np.zeros((2, 8, 8, 3), np.uint8), np.zeros(samples_for_frames(2, 30, 16000), np.float32),
                              np.zeros((2, 68, 2), np.float32)))
    write_index(root, 30, 16000, 8, "test")
    ids = ["c0", "c0", "c1", "c2", "c2", "c3", "c4", "c5", "c6"]
    asked = ["neutral", "neutral", "neutral", "sad", "sad", "neutral", "happy", "sad", "sad"]
    read = ["happy", "neutral", "neutral", "sad", "fear", "happy", "happy", "sad", "sad"]
    out = by_source(root, ids, asked, read)
    assert list(out) == ["mirror.jpg", "smiler.jpg", "video.mp4", "morphs", "procedural"]
    assert out["mirror.jpg"]["smile"] == pytest.approx(0.3)     # the photo and its mirror image, fitted apart
    assert out["smiler.jpg"] == {"frames": 2, "smile": 0.5, "read": {"neutral": {"happy": 0.5, "neutral": 0.5}}}
    video = out["video.mp4"]            # frames of one video pooled, its faces' smiles averaged
    assert video["frames"] == 3 and video["smile"] == pytest.approx(0.1)
    assert video["read"] == {"neutral": {"neutral": 1.0}, "sad": {"sad": 0.5, "fear": 0.5}}
    assert out["morphs"]["smile"] is None and out["morphs"]["read"] == {"neutral": {"happy": 1.0}}
    assert out["procedural"]["read"] == {"happy": {"happy": 1.0}}
