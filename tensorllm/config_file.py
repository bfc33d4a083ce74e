"""Configuration files of the commands: a YAML or JSON mapping of a pydantic model's fields, read and written.

``tensorllm compress --config FILE`` (:mod:`tensorllm.compression.config`) and ``tensorllm sweep --config
FILE`` (``flows.config_file``) read their files here, and ``--print-config`` writes the effective
configuration back in the same format, so that a printed file repeats the run. Validation is the caller's:
each command checks the mapping with its own pydantic model.

Usage::

    data = read_mapping("compress.yaml", allowed=CompressConfig.model_fields)
    print(dump_yaml(config.model_dump(mode="json"), "# tensorllm compress configuration"))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


def read_mapping(path: str | Path, *, allowed: Iterable[str] = (), error: type[Exception] = ValueError) -> dict:
    """The mapping a YAML or JSON file holds (an empty file: ``{}``); anything else raises ``error`` in one line.

    ``allowed`` (the field names) only completes the message of a file that holds no mapping.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"config: {path} is not a file; allowed: a YAML or JSON file ({', '.join(SUFFIXES)})")
    if path.suffix.lower() not in SUFFIXES:
        raise error(f"config: {path} has suffix {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise error(f"config: {path} is not valid {path.suffix[1:].upper()} ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"config: {path} holds a {type(data).__name__}; allowed: a mapping of parameter "
                    f"names to values ({', '.join(allowed)})")
    return data


def dump_yaml(data: dict, header: str) -> str:
    """``data`` as block YAML in its own key order (lists of numbers inline), after a ``header`` comment line."""
    return header.rstrip("\n") + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
