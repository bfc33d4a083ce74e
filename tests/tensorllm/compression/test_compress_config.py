"""``tensorllm compress --config FILE`` (tensorllm.compression.config): a YAML or JSON file of CompressConfig's
fields, options override it, ``--print-config`` writes back a file that repeats the run, bad files are one line,
and the published schema is the config's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tensorllm.cli import main
from tensorllm.compression.config import CompressConfig, config_schema
from tensorllm.tiny_models import save_tiny_with_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def printed(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(["compress", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_file_sets_the_parameters_and_options_override_it(tmp_path, capsys, suffix):
    file = write(tmp_path / f"compress{suffix}", {"model": "m", "target_ratio": 3, "out": "o", "layers": [20, 21],
                                                  "ranks": [[64, 32, 4], [0.5, 0.5, 1.0]], "verify": False})
    effective = printed(["--config", str(file), "--target-ratio", "2.5", "--verify", "--prompts", "8"], capsys)
    assert effective["target_ratio"] == 2.5 and effective["verify"] is True and effective["prompts"] == 8  # options win
    assert effective["model"] == "m" and effective["layers"] == [20, 21]
    assert effective["ranks"] == [[64, 32, 4], [0.5, 0.5, 1.0]]  # integers stay integers, fractions fractions
    assert effective["val_limit"] == CompressConfig.model_fields["val_limit"].default  # defaults are filled in
    assert list(effective) == list(CompressConfig.model_fields)  # every field, in the config's order


def test_the_printed_configuration_repeats_the_run(tmp_path, capsys):
    first = printed(["m", "--target-ratio", "2", "--out", "o", "--ranks", "4,2,1", "--no-verify", "--generate"], capsys)
    assert first["verify"] is False and first["generate"] is True and first["ranks"] == [[4, 2, 1]]
    file = write(tmp_path / "repeat.yaml", first)
    assert printed(["--config", str(file)], capsys) == first


@pytest.mark.parametrize("content, suffix, message", [
    ("rank: [[4, 2, 1]]\n", ".yaml", "config: unknown parameter(s) ['rank']; allowed: model, target_ratio, out"),
    ("- model\n- out\n", ".yaml", "config: {file} holds a list; allowed: a mapping of parameter names"),
    ("model: [unclosed\n", ".yaml", "config: {file} is not valid YAML ("),
    ("{\"model\": }", ".json", "config: {file} is not valid JSON ("),
    ("model: x\n", ".toml", "config: {file} has suffix '.toml'; allowed: .yaml, .yml, .json"),
    ("target_ratio: 0.5\nout: o\n", ".yaml", "target_ratio: input should be greater than 1 (got 0.5)"),
    ("target_ratio: 2\n", ".yaml", "out: required; give --out on the command line or out: in the --config file"),
    ("target_ratio: 2\nout: o\nranks: [[4, 2]]\n", ".yaml", "ranks: each rank configuration is [R1, R2, R3] (integers or fractions); got [4, 2]"),
    ("target_ratio: 2\nout: o\ngrouping: heads\n", ".yaml", "grouping: input should be 'kv', 'replicate' or"),
])
def test_a_bad_file_is_one_line(tmp_path, capsys, content, suffix, message):
    file = tmp_path / f"bad{suffix}"
    file.write_text(content)
    capsys.readouterr()
    assert main(["compress", "m", "--config", str(file), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorllm compress: error: " + message.format(file=file)) and "\n" not in err, err


def test_your_own_data_file_is_printed_as_an_absolute_path(tmp_path, capsys, monkeypatch):
    """A data file named relative to the working folder is written absolute, so the printed file repeats the
    run from another folder; a built-in name stays a name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text('{"prompt": "The capital of France is", "answer": "Paris"}\n' * 5)
    assert printed(["m", "--target-ratio", "2", "--out", "o", "--dataset", "mine.jsonl"], capsys)["dataset"] == \
        str(tmp_path / "mine.jsonl")
    assert printed(["m", "--target-ratio", "2", "--out", "o"], capsys)["dataset"] == "qa_wikidata"


def test_a_missing_file_and_a_missing_model_are_named(tmp_path, capsys):
    assert main(["compress", "--config", str(tmp_path / "nope.yaml"), "--print-config"]) == 2
    assert f"config: {tmp_path / 'nope.yaml'} is not a file" in capsys.readouterr().err
    assert main(["compress", "--target-ratio", "2", "--out", "o"]) == 2
    assert "model: required; give MODEL on the command line or model: in the --config file" in capsys.readouterr().err


def test_compress_runs_from_a_file(tmp_path, capsys):
    """The file's values reach the compression: its layers are the only ones changed, its ratio is met."""
    folder, _ = save_tiny_with_tokenizer("llama", tmp_path / "llama")
    out = tmp_path / "out"
    file = write(tmp_path / "compress.yaml", {"model": str(folder), "target_ratio": 1.5, "out": str(out), "prompts": 4,
                                              "verify": False, "ranks": [[0.5, 1.0, 1.0], [0.25, 0.5, 1.0]],
                                              "layers": [1]})
    assert main(["compress", "--config", str(file), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["attention_ratio"] >= 1.5 and payload["verification"] is None
    changed = json.loads((out / "config.json").read_text())["tensorllm_compression"]
    assert set(map(int, changed["layers"])) == {1}, changed


def test_the_published_schema_is_the_configs():
    published = json.loads((ROOT / "docs" / "compress-config.schema.json").read_text())
    assert published == config_schema(), "regenerate docs/compress-config.schema.json (docs/compress.md says how)"
