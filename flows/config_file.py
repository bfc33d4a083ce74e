"""Sweep configuration files: a YAML or JSON mapping of :class:`flows.config.SweepConfig` fields.

One format for every way a sweep starts: ``tensorllm sweep --config FILE`` (flags given on the command line
override the file), the served deployments (``TENSORLLM_SERVE_CONFIG``) and ``--print-config``, which writes
the effective configuration (file, flags and defaults) back in the same format, so a run can be repeated
from the file it printed. The file is validated by the same pydantic model as every other entry point
(:func:`flows.validate.validate_sweep`): an unknown key or a bad value is one line naming it.

Usage::

    tensorllm sweep --config deployments/sweep.yaml --val-limit 200
    tensorllm sweep --config deployments/sweep.yaml --print-config > repeat.yaml

The JSON schema of the file is ``docs/sweep-config.schema.json`` (``SweepConfig.model_json_schema()``).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .config import SweepConfig
from .validate import SweepInputError

SUFFIXES = (".yaml", ".yml", ".json")


def read_config_file(path: str | Path) -> dict:
    """The parameters a configuration file holds (not yet validated: :func:`validate_sweep` does that)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SweepInputError(f"config: {path} is not a file; allowed: a YAML or JSON file ({', '.join(SUFFIXES)})")
    if path.suffix.lower() not in SUFFIXES:
        raise SweepInputError(f"config: {path} has suffix {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SweepInputError(f"config: {path} is not valid {path.suffix[1:].upper()} ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SweepInputError(f"config: {path} holds a {type(data).__name__}; allowed: a mapping of parameter "
                              f"names to values ({', '.join(SweepConfig.model_fields)})")
    return data


def config_yaml(config: SweepConfig) -> str:
    """The effective configuration as YAML, every field included, in the config's field order."""
    header = "# tensorllm sweep configuration: `tensorllm sweep --config THIS_FILE` repeats the run\n"
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def config_schema() -> dict:
    """The JSON schema of a configuration file (published as docs/sweep-config.schema.json)."""
    return SweepConfig.model_json_schema()
