"""Training configuration files (JSON), read strictly into frozen dataclasses.

Each trainer declares its file as a frozen dataclass (nested sections are dataclasses too) and `load_config`
reads the JSON with the core's strict `emodiff_core.config.from_dict`, the same reader the model configs
and checkpoints use: a missing or unknown key, or a value of the wrong type, is an error that names the file
and the dotted key. The ``model`` section (`ModelSection`) names a preset of `emodiff_core.config` and
overrides of its fields, turned into a model config by `emodiff_core.config.build`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Type, TypeVar

from emodiff_core import config as config_mod

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
EXAMPLES_HINT = f"the shipped files in {CONFIG_DIR} show every key of each trainer's file"

T = TypeVar("T")


class TrainingConfigError(config_mod.ConfigError):
    """A training file is missing, unreadable, or does not match its trainer's schema."""


@dataclass(frozen=True)
class ModelSection:
    """``preset``: a preset name of `emodiff_core.config` for the trainer's model kind; ``overrides``: fields
    to change, deep-merged (``{"diffusion": {"steps": 100}}`` changes only the step count)."""

    preset: str
    overrides: Dict[str, Any]

    def build(self, kind: str, path: str):
        """The model config this section describes; errors name ``path`` and the key."""
        try:
            return config_mod.build(kind, self.preset, self.overrides, where=f"{path}: model")
        except TrainingConfigError:
            raise
        except config_mod.ConfigError as exc:
            raise TrainingConfigError(f"{exc} (model.preset picks a preset of emodiff_core/config.py; "
                                      "model.overrides changes its fields)") from None


def resolve_path(path: str) -> str:
    """``path`` itself, or the shipped config of that name in training/configs/."""
    if os.path.isfile(path):
        return path
    shipped = os.path.join(CONFIG_DIR, path)
    if os.path.isfile(shipped):
        return shipped
    raise TrainingConfigError(f"config file not found: {path} (the shipped ones are in {CONFIG_DIR})")


def load_config(path: str, schema: Type[T]) -> T:
    """Read ``path`` (JSON; a bare name is looked up in training/configs/) into the frozen dataclass
    ``schema``. Every key is required and none may be unknown."""
    path = resolve_path(path)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TrainingConfigError(f"{path}: not valid JSON ({exc})") from None
    try:
        return config_mod.from_dict(schema, data, where=path)
    except config_mod.ConfigError as exc:
        raise TrainingConfigError(f"{exc}; {EXAMPLES_HINT}") from None


def require(condition: bool, message: str) -> None:
    """For the sections' ``validate``: `from_dict` prefixes the file name to the message."""
    if not condition:
        raise config_mod.ConfigError(message)


def require_positive(section: str, **values) -> None:
    for key, value in values.items():
        require(value > 0, f"{section + '.' if section else ''}{key} must be positive, got {value}")


@dataclass(frozen=True)
class ScheduleSection:
    """The ``schedule`` section of the per-frame trainers (superres, regressor, judge): log every
    ``log_every`` steps; export the EMA weights and measure the validation set every ``checkpoint_every``."""

    log_every: int
    checkpoint_every: int

    def validate(self) -> None:
        require_positive("schedule", log_every=self.log_every, checkpoint_every=self.checkpoint_every)
