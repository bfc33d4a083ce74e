"""Sweep configuration files (flows.config_file): the file, the command line and the deployments share one
format, validated by SweepConfig; ``--print-config`` writes back a file that repeats the run.

Everything runs ``tensorllm sweep ... --print-config`` in-process, which validates (the tiny model's folder,
its data) and exits before any service starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.config import SweepConfig
from flows.config_file import config_schema, read_config_file
from tensorllm.cli import main
from tensorllm.tiny_models import save_tiny_with_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_with_tokenizer("llama_gqa", tmp_path_factory.mktemp("config_file") / "llama_gqa")[0]


def printed(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(["sweep", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_file_sets_the_parameters_and_options_override_it(tiny, tmp_path, capsys, suffix):
    file = write(tmp_path / f"sweep{suffix}", {"model": str(tiny), "layers": [1], "ranks": [[4, 2, 1]],
                                               "datasets": ["fever"], "val_limit": 50, "objective": "denoise"})
    effective = printed(["--config", str(file), "--val-limit", "7"], capsys)
    assert effective["val_limit"] == 7  # the command line wins
    assert effective["objective"] == "denoise" and effective["layers"] == [1] and effective["ranks"] == [[4, 2, 1]]
    assert effective["test_limit"] == SweepConfig.model_fields["test_limit"].default  # defaults are filled in
    assert list(effective) == list(SweepConfig.model_fields)  # every field, in the config's order


def test_the_printed_configuration_repeats_the_run(tiny, tmp_path, capsys):
    first = printed(["--model", str(tiny), "--layers", "0,1", "--ranks", "4,2,1", "--datasets", "fever"], capsys)
    file = write(tmp_path / "repeat.yaml", first)
    assert printed(["--config", str(file)], capsys) == first


@pytest.mark.parametrize("content, suffix, message", [
    ("rank: [[4, 2, 1]]\n", ".yaml", "unknown parameter(s) ['rank']; allowed: model, datasets"),
    ("- model\n- layers\n", ".yaml", "config: {file} holds a list; allowed: a mapping of parameter names"),
    ("model: [unclosed\n", ".yaml", "config: {file} is not valid YAML ("),
    ("{\"model\": }", ".json", "config: {file} is not valid JSON ("),
    ("model: x\n", ".toml", "config: {file} has suffix '.toml'; allowed: .yaml, .yml, .json"),
    ("val_limit: 0\n", ".yaml", "val_limit: must be >= 1 (got 0)"),
])
def test_a_bad_file_is_one_line(tiny, tmp_path, capsys, content, suffix, message):
    file = tmp_path / f"bad{suffix}"
    file.write_text(content)
    capsys.readouterr()
    assert main(["sweep", "--config", str(file), "--model", str(tiny), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorllm sweep: error: " + message.format(file=file)) and "\n" not in err, err


def test_a_missing_file_is_named(tmp_path, capsys):
    assert main(["sweep", "--config", str(tmp_path / "nope.yaml"), "--print-config"]) == 2
    assert f"config: {tmp_path / 'nope.yaml'} is not a file" in capsys.readouterr().err


def test_the_published_schema_is_the_configs():
    published = json.loads((ROOT / "docs" / "sweep-config.schema.json").read_text())
    assert published == config_schema(), "regenerate docs/sweep-config.schema.json (docs/pipeline.md says how)"


def test_the_deployments_read_the_nightly_file():
    nightly = read_config_file(ROOT / "deployments" / "sweep.yaml")
    SweepConfig(**nightly)  # a valid configuration
    pool = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert next(d for d in pool if d["name"] == "pool-nightly")["parameters"] == nightly
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve", ROOT / "deployments" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    assert all(d.parameters == nightly for d in serve.deployments())
