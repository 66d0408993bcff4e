"""Training configuration files (JSON), read strictly: a missing or unknown key is an error that names the
file and the key, and says what to do."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Mapping

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class TrainingConfigError(ValueError):
    pass


def load_config(path: str, schema: Mapping[str, Any]) -> Dict[str, Any]:
    """Read ``path`` (JSON) and check it against ``schema``, a nested dict of default values whose keys are
    all required. Returns the parsed dict."""
    if not os.path.isfile(path):
        alt = os.path.join(CONFIG_DIR, path)
        if os.path.isfile(alt):
            path = alt
        else:
            raise TrainingConfigError(f"config file not found: {path} (the shipped ones are in {CONFIG_DIR})")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TrainingConfigError(f"{path}: not valid JSON ({exc})") from None
    _check(data, schema, path, "")
    return data


def _check(data, schema, path, where):
    if not isinstance(data, dict):
        raise TrainingConfigError(f"{path}: {where or 'the top level'} must be an object")
    for key, default in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise TrainingConfigError(f"{path}: missing key '{name}' (add it; the default is {json.dumps(default)})")
        if isinstance(default, dict) and default:
            _check(data[key], default, path, name)
    for key in data:
        if key not in schema:
            name = f"{where}.{key}" if where else key
            raise TrainingConfigError(f"{path}: unknown key '{name}'; known keys here: {', '.join(schema)}")


def default_config(schema: Mapping[str, Any]) -> Dict[str, Any]:
    return copy.deepcopy(dict(schema))
