"""Training state on disk: modules, EMA copies, optimizer states and the step in ONE safetensors file, so a
save is committed by a single rename and a run killed at any moment resumes from a consistent state (the
weights always belong to the step stored beside them). Nothing is pickled.

    <run>/state.safetensors   tensors: "module.<name>.<param>", "optim.<name>.<path>"
                              metadata "training_state": JSON {"format", "version", "step",
                              "optim": {<name>: skeleton with tensor references}, "extra": {...}}

A save writes a temporary file beside it (flushed to disk) and renames it over ``state.safetensors``; a kill
before the rename leaves the previous state, a kill after it the new one. Temporary files of a killed save
are removed by the next save.

Run folders of earlier versions (version 1: the tensors in ``state.safetensors`` and the step and optimizer
skeleton in a ``state.json`` sidecar) still load; the first new save replaces both.

This module imports only absolute names, so that tests can load another version of it by file path.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, Mapping, Tuple

import torch

from emodiff_core.atomic import atomic_output

STATE_FILE = "state.safetensors"
LEGACY_JSON = "state.json"          # version 1's sidecar
METADATA_KEY = "training_state"
FORMAT = "emodiffhead-training-state"
VERSION = 2
PARTIAL_SUFFIX = ".partial"         # atomic_output's temporary files: .state.safetensors.<random>.partial


class TrainingStateError(ValueError):
    """A run folder's state cannot be read back."""


class NoStepError(TrainingStateError):
    """A state file without its step: a version-1 tensor file whose sidecar was never written."""


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
               optimizers: Mapping[str, torch.optim.Optimizer], extra: Mapping[str, Any] = None) -> str:
    """Write the whole state atomically; returns the state file's path."""
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    skeleton = {name: _flatten(opt.state_dict(), f"optim.{name}", tensors) for name, opt in optimizers.items()}
    record = {"format": FORMAT, "version": VERSION, "step": int(step), "optim": skeleton, "extra": dict(extra or {})}
    os.makedirs(run_dir, exist_ok=True)
    _remove_partials(run_dir)
    path = os.path.join(run_dir, STATE_FILE)
    with atomic_output(path, suffix=PARTIAL_SUFFIX) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(record)})
        _fsync(tmp)     # the data must be on disk before the rename is: else a power cut can commit an empty file
    _fsync_dir(run_dir)
    legacy = os.path.join(run_dir, LEGACY_JSON)
    if os.path.exists(legacy):   # stale now: the new file carries its own step (and is read first)
        os.remove(legacy)
    return path


def has_state(run_dir: str) -> bool:
    """Whether the run folder holds a state to resume from (a version-1 state file without its sidecar, as a
    killed first save of that version left it, does not count)."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        return False
    try:
        _read_record(run_dir)
    except NoStepError:
        return False
    return True


def read_step(run_dir: str) -> int:
    """The step of the run folder's saved state."""
    return int(_read_record(run_dir)[0]["step"])


def load_state(run_dir: str, modules: Mapping[str, torch.nn.Module],
               optimizers: Mapping[str, torch.optim.Optimizer], map_location="cpu") -> Tuple[int, dict]:
    """Restore modules and optimizers in place; returns (step, extra)."""
    record, tensors = _read_record(run_dir, with_tensors=True, map_location=map_location)
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    for name, opt in optimizers.items():
        if name not in record["optim"]:
            raise TrainingStateError(f"{run_dir}: the saved state has no optimizer {name!r} (it has "
                                     f"{', '.join(record['optim']) or 'none'}); resume with the same trainer")
        opt.load_state_dict(_unflatten(record["optim"][name], tensors))
    return int(record["step"]), record.get("extra", {})


def _read_record(run_dir: str, with_tensors: bool = False, map_location="cpu"):
    from safetensors import SafetensorError, safe_open

    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise TrainingStateError(f"{run_dir} holds no saved training state ({STATE_FILE}); start without --resume")
    try:
        with safe_open(path, framework="pt", device=str(map_location)) as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as exc:
        raise TrainingStateError(f"{path} cannot be read ({exc}); start the run again without --resume") from None
    if METADATA_KEY in metadata:
        record = json.loads(metadata[METADATA_KEY])
        if record.get("format") != FORMAT or int(record.get("version", 0)) > VERSION:
            raise TrainingStateError(f"{path}: a training state of another format or a newer version "
                                     f"({record.get('format')} v{record.get('version')}); update the code")
        return record, tensors
    legacy = os.path.join(run_dir, LEGACY_JSON)
    if os.path.isfile(legacy):   # version 1: step and optimizer skeleton in the sidecar
        with open(legacy) as fh:
            return json.load(fh), tensors
    raise NoStepError(f"{path} carries no step ({METADATA_KEY} metadata or {LEGACY_JSON}); "
                             "start the run again without --resume")


def _remove_partials(run_dir: str) -> None:
    """Temporary files of saves that were killed (only the main rank saves, so none is in progress)."""
    leftovers = glob.glob(os.path.join(run_dir, "." + STATE_FILE + ".*" + PARTIAL_SUFFIX))
    leftovers += [os.path.join(run_dir, ".partial-" + n) for n in (STATE_FILE, LEGACY_JSON)]   # version 1's
    for path in leftovers:
        if os.path.exists(path):
            os.remove(path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:      # not every platform opens folders (Windows); the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
