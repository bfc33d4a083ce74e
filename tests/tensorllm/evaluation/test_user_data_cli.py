"""Your own data on the command line: ``evaluate`` and ``compress`` take a data file or a spec as ``--dataset``;
a bad one is one stderr line and exit code 2, before any model is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tensorllm.cli import main
from tensorllm.tiny_models import save_tiny_with_tokenizer

CAPITALS = Path(__file__).resolve().parents[3] / "examples" / "capitals.jsonl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_with_tokenizer("llama", tmp_path_factory.mktemp("cli") / "llama")[0]


BAD = [
    ("missing field", '{"prompt": "a"}\n', None, r"bad\.jsonl:1: missing field\(s\) \['answer'\]"),
    ("empty file", "", None, r"bad\.jsonl: no usable record"),
    ("wrong type", '{"prompt": 3, "answer": "b"}\n', None, r"bad\.jsonl:1: field 'prompt' must be str, got int 3"),
    ("unknown format", None, None, r"Unknown dataset '.*bad\.txt'; allowed: \['qa_wikidata'.*a spec file"),
    ("unknown spec field", '{"prompt": "a", "answer": "b"}\n', "path: bad.jsonl\nanswer: x\n",
     r"bad\.yaml: unknown field 'answer'; allowed: name, path, hub, hub_config"),
]


@pytest.mark.parametrize("command", ["evaluate", "compress"])
@pytest.mark.parametrize("what, data, spec, match", BAD, ids=[b[0] for b in BAD])
def test_a_bad_dataset_is_one_line_and_exit_2(tmp_path, capsys, command, what, data, spec, match):
    ref = tmp_path / ("bad.txt" if data is None else "bad.jsonl")
    ref.write_text("x" if data is None else data)
    if spec is not None:
        ref = tmp_path / "bad.yaml"
        ref.write_text(spec)
    # the model does not exist: the dataset is checked first, so its error is the one printed
    extra = ["--target-ratio", "2"] if command == "compress" else []
    code = main([command, str(tmp_path / "no-model"), "--dataset", str(ref), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"tensorllm {command}: error: ")
    import re

    assert re.search(match, err), err


def test_evaluate_command_on_the_example_file(tiny, tmp_path, capsys):
    code = main(["evaluate", str(tiny), "--dataset", str(CAPITALS), "--split", "test", "--limit", "6",
                 "--out", str(tmp_path), "--device", "cpu", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["n"] == 6 and payload["accuracy_kind"] == "generation" and payload["task_counts"]["items"] == 50
    # the per-example rows are named by the dataset's name, never by its path
    assert Path(payload["examples_path"]).name == "base-capitals-test-limit6.jsonl"


def test_compress_calibrates_and_verifies_on_your_own_data(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compress", str(tiny), "--target-ratio", "1.5", "--out", str(out), "--dataset", str(CAPITALS),
                 "--prompts", "4", "--val-limit", "4", "--ranks", "0.5,1.0,1.0", "--ranks", "0.25,0.5,1.0",
                 "--layers", "0,1", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    calibration = payload["calibration"]
    assert calibration["dataset"] == str(CAPITALS) and calibration["n_prompts"] == 4 and calibration["skip"] == 4
    verification = payload["verification"]
    assert verification["n"] == 4 and verification["dataset"] == str(CAPITALS)  # the same file, other val items
    assert list(tmp_path.rglob("base-capitals-val-n4-*.jsonl"))  # rows named by the dataset's name, not its path
