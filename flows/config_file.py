"""Sweep configuration files: a YAML or JSON mapping of :class:`flows.config.SweepConfig` fields.

One format for every way a sweep starts: ``tensorllm sweep --config FILE`` (flags given on the command line
override the file), the served deployments (``TENSORLLM_SERVE_CONFIG``) and ``--print-config``, which writes
the effective configuration (file, flags and defaults) back in the same format, so a run can be repeated
from the file it printed (the reading and writing are the library's, :mod:`tensorllm.config_file`, which
``tensorllm compress --config`` shares). The file is validated by the same pydantic model as every other entry point
(:func:`flows.validate.validate_sweep`): an unknown key or a bad value is one line naming it.

Usage::

    tensorllm sweep --config deployments/sweep.yaml --val-limit 200
    tensorllm sweep --config deployments/sweep.yaml --print-config > repeat.yaml

The JSON schema of the file is ``docs/sweep-config.schema.json`` (``SweepConfig.model_json_schema()``).
"""

from __future__ import annotations

from pathlib import Path

from tensorllm.config_file import SUFFIXES, dump_yaml, read_mapping  # the file format, shared with `compress`

from .config import SweepConfig
from .validate import SweepInputError

__all__ = ["SUFFIXES", "config_schema", "config_yaml", "read_config_file"]


def read_config_file(path: str | Path) -> dict:
    """The parameters a configuration file holds (not yet validated: :func:`validate_sweep` does that)."""
    return read_mapping(path, allowed=SweepConfig.model_fields, error=SweepInputError)


def config_yaml(config: SweepConfig) -> str:
    """The effective configuration as YAML, every field included, in the config's field order."""
    header = "# tensorllm sweep configuration: `tensorllm sweep --config THIS_FILE` repeats the run\n"
    return dump_yaml(config.model_dump(mode="json"), header)


def config_schema() -> dict:
    """The JSON schema of a configuration file (published as docs/sweep-config.schema.json)."""
    return SweepConfig.model_json_schema()
