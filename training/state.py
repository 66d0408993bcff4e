"""Training state on disk: modules, EMA copies and optimizer states in one safetensors file plus a JSON
sidecar for the step and everything that is not a tensor. Nothing is pickled.

    <run>/state.safetensors   tensors: "module.<name>.<param>", "optim.<name>.<path>"
    <run>/state.json          {"step": int, "optim": {<name>: skeleton with tensor references}, "extra": {...}}

Both files are written to temporary names and renamed, the JSON last, so a run killed while saving resumes
from the previous complete state.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import torch

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def _flatten(obj: Any, prefix: str, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {"__dict__": [[_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def _unflatten(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(run_dir: str, step: int, modules: Mapping[str, torch.nn.Module],
               optimizers: Mapping[str, torch.optim.Optimizer], extra: Mapping[str, Any] = None) -> None:
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    skeleton = {name: _flatten(opt.state_dict(), f"optim.{name}", tensors) for name, opt in optimizers.items()}
    os.makedirs(run_dir, exist_ok=True)
    tmp_t = os.path.join(run_dir, ".partial-" + STATE_TENSORS)
    tmp_j = os.path.join(run_dir, ".partial-" + STATE_JSON)
    save_file(tensors, tmp_t)
    with open(tmp_j, "w") as fh:
        json.dump({"step": int(step), "optim": skeleton, "extra": dict(extra or {})}, fh)
    os.replace(tmp_t, os.path.join(run_dir, STATE_TENSORS))
    os.replace(tmp_j, os.path.join(run_dir, STATE_JSON))


def has_state(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, STATE_JSON)) and os.path.isfile(os.path.join(run_dir, STATE_TENSORS))


def load_state(run_dir: str, modules: Mapping[str, torch.nn.Module],
               optimizers: Mapping[str, torch.optim.Optimizer], map_location="cpu") -> Tuple[int, dict]:
    """Restore modules and optimizers in place; returns (step, extra)."""
    from safetensors.torch import load_file

    with open(os.path.join(run_dir, STATE_JSON)) as fh:
        meta = json.load(fh)
    tensors = load_file(os.path.join(run_dir, STATE_TENSORS), device=str(map_location))
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(_unflatten(meta["optim"][name], tensors))
    return int(meta["step"]), meta.get("extra", {})
