"""The checkpoint format: safetensors with the configs and a format version in the metadata.

A file holds one or more named components (``denoiser``, ``expression_generator``, ``superres``,
``regressor``, ``emotion_judge``). Tensor names are ``<component>.<parameter>``; the metadata holds

    format = "emodiffhead", format_version = "1", components = JSON list of names,
    config.<component> = the component's config as JSON, info.<key> = free text (model card, steps...).

Loading rebuilds each component from its config, then checks the tensors' names and shapes against the
built model and names the first mismatch. Nothing is ever unpickled: a pickled file (a renamed .pt/.ckpt)
is recognised by its first bytes and refused with an explanation. Saving writes a temporary file and
renames it, so a crash never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
from torch import nn

from . import config as config_mod
from .atomic import atomic_output

FORMAT = "emodiffhead"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what is wrong and what to do."""


@dataclass(frozen=True)
class ComponentType:
    config_cls: type
    build: Callable[[object], nn.Module]


_REGISTRY: Dict[str, ComponentType] = {}


def register_component(name: str, config_cls: type, build: Callable[[object], nn.Module]) -> None:
    """Make a component kind loadable: ``build(config)`` must return the module with ``.config``."""
    _REGISTRY[name] = ComponentType(config_cls, build)


def _registry() -> Dict[str, ComponentType]:
    if not _REGISTRY:
        from .models import EmotionJudge, ExpressionGenerator, EMOdiffheadDenoiser, ExpressionRegressor, SuperResolver

        register_component("denoiser", config_mod.DenoiserConfig, EMOdiffheadDenoiser)
        register_component("expression_generator", config_mod.ExpressionConfig, ExpressionGenerator)
        register_component("superres", config_mod.SuperResConfig, SuperResolver)
        register_component("regressor", config_mod.RegressorConfig, ExpressionRegressor)
        register_component("emotion_judge", config_mod.JudgeConfig, EmotionJudge)
    return _REGISTRY


@dataclass
class Checkpoint:
    path: str
    components: Tuple[str, ...]
    configs: Dict[str, object]
    info: Dict[str, str]
    tensors: Dict[str, Dict[str, torch.Tensor]] = field(repr=False)


# --------------------------------------------------------------------------- saving
def save_checkpoint(path: str, components: Mapping[str, nn.Module], info: Optional[Mapping[str, str]] = None) -> str:
    """Write ``components`` (modules with a ``.config``) to ``path`` atomically; returns the path."""
    if not components:
        raise CheckpointError("nothing to save: no components given")
    registry = _registry()
    tensors: Dict[str, torch.Tensor] = {}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "components": json.dumps(list(components))}
    for name, module in components.items():
        if name not in registry:
            raise CheckpointError(f"unknown component {name!r}; known: {', '.join(sorted(registry))}")
        if not isinstance(module.config, registry[name].config_cls):
            raise CheckpointError(f"component {name!r} has a {type(module.config).__name__}, "
                                  f"expected {registry[name].config_cls.__name__}")
        metadata[f"config.{name}"] = config_mod.to_json(module.config)
        for key, value in module.state_dict().items():
            # clone: safetensors refuses tensors that share storage
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    for key, value in (info or {}).items():
        metadata[f"info.{key}"] = str(value)
    from safetensors.torch import save_file

    with atomic_output(path, suffix=".partial.safetensors") as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


# --------------------------------------------------------------------------- reading
def _sniff(path: str) -> None:
    """Refuse files that are not safetensors before handing them to a parser, with a useful reason."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    name = os.path.basename(path)
    if len(head) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes); download or export it again")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        raise CheckpointError(f"{name} is a Python pickle (a PyTorch .pt/.ckpt file renamed), not safetensors. "
                              "Pickles can run code when loaded, so this pack never opens them; use an "
                              "EMOdiffhead .safetensors checkpoint (training/ exports them)")
    if head[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{name} is a zip archive (a PyTorch .pt/.pth file renamed?), not safetensors; "
                              "this pack never unpickles files. Use an EMOdiffhead .safetensors checkpoint")
    if len(head) < 8:
        raise CheckpointError(f"{name} is truncated ({size} bytes); download or export it again")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
        raise CheckpointError(f"{name} is truncated or not a safetensors file (its header claims {header_len} "
                              f"bytes but the file has {size}); download or export it again")


BUNDLE_COMPONENTS = ("denoiser", "expression_generator")    # what a checkpoint needs to make videos


def is_other_safetensors(path: str) -> bool:
    """True when ``path`` is a readable safetensors file that is plainly not a model bundle: another format
    (e.g. the FER classifier's weights) or an EMOdiffhead file without a denoiser and an expression generator
    (e.g. the emotion judge). Lists of checkpoints leave those out; a file that cannot be read is not judged
    here (False), so loading it reports what is wrong."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        if metadata.get("format") != FORMAT:
            return "format" in metadata
        return not set(BUNDLE_COMPONENTS) <= set(json.loads(metadata.get("components", "[]")))
    except Exception:       # unreadable or damaged: let the loader say why
        return False


def read_checkpoint(path: str) -> Checkpoint:
    """Open and validate a checkpoint file (format, version, configs); tensors are loaded on CPU."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    _sniff(path)
    name = os.path.basename(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
        flat = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{name} is truncated or corrupt ({exc}); download or export it again") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a safetensors file but not an EMOdiffhead checkpoint (no "
                              f"'format: {FORMAT}' in its metadata); pick a checkpoint exported by training/")
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{name} has checkpoint format version {version}; this pack reads version "
                              f"{FORMAT_VERSION}. Update the pack or re-export the checkpoint")
    try:
        components = tuple(json.loads(metadata["components"]))
    except (KeyError, ValueError):
        raise CheckpointError(f"{name}: its metadata lists no components; re-export the checkpoint") from None
    registry = _registry()
    configs: Dict[str, object] = {}
    tensors: Dict[str, Dict[str, torch.Tensor]] = {c: {} for c in components}
    for component in components:
        if component not in registry:
            raise CheckpointError(f"{name}: unknown component {component!r}; this pack knows "
                                  f"{', '.join(sorted(registry))}")
        text = metadata.get(f"config.{component}")
        if text is None:
            raise CheckpointError(f"{name}: no config for component {component!r}; re-export the checkpoint")
        try:
            configs[component] = config_mod.from_json(registry[component].config_cls, text,
                                                      where=f"{name}: config of {component!r}")
        except config_mod.ConfigError as exc:
            raise CheckpointError(str(exc)) from None
    for key, value in flat.items():
        component, _, param = key.partition(".")
        if component not in tensors:
            raise CheckpointError(f"{name}: tensor {key!r} belongs to no listed component")
        tensors[component][param] = value
    info = {k[5:]: v for k, v in metadata.items() if k.startswith("info.")}
    return Checkpoint(path, components, configs, info, tensors)


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``module`` after checking names and shapes; the first mismatch is the error."""
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{where}: tensor {key!r} is missing from the checkpoint; it does not match "
                                  "the model its config describes (re-export it)")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{where}: tensor {key!r} has shape {list(state[key].shape)} but the model "
                                  f"built from the checkpoint's config expects {list(value.shape)}; the config "
                                  "and the weights do not belong together")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{where}: unexpected tensor {key!r}; the checkpoint does not match the model "
                                  "its config describes")
    module.load_state_dict(dict(state), strict=True)


def load_components(path: str, names: Optional[Iterable[str]] = None, device="cpu",
                    dtype: Optional[torch.dtype] = None) -> Dict[str, nn.Module]:
    """Build and load components from a checkpoint file, in eval mode (see `build_components`)."""
    return build_components(read_checkpoint(path), names, device=device, dtype=dtype)


def build_components(ckpt: Checkpoint, names: Optional[Iterable[str]] = None, device="cpu",
                     dtype: Optional[torch.dtype] = None) -> Dict[str, nn.Module]:
    """Build and load components of an opened checkpoint (`read_checkpoint`), in eval mode.

    ``names``: components that must be present (an error names the missing one); default all.
    """
    wanted = list(names) if names is not None else list(ckpt.components)
    base = os.path.basename(ckpt.path)
    for component in wanted:
        if component not in ckpt.components:
            raise CheckpointError(f"{base} holds {', '.join(ckpt.components)} but not {component!r}; "
                                  f"pick a checkpoint that contains a {component}")
    registry = _registry()
    modules: Dict[str, nn.Module] = {}
    for component in wanted:
        module = registry[component].build(ckpt.configs[component])
        load_state_strict(module, ckpt.tensors[component], f"{base} [{component}]")
        module.eval()
        if dtype is not None:
            module.to(dtype=dtype)
        modules[component] = module.to(device)
    return modules


def checkpoint_info(path: str) -> Dict[str, str]:
    """The free-text info (model card fields) of a checkpoint."""
    return read_checkpoint(path).info
