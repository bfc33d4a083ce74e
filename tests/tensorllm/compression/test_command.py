"""``tensorllm compress`` on the command line: bad input in one line, and a tiny model end to end."""

from __future__ import annotations

import json

import pytest

from tensorllm.cli import main
from tensorllm.tiny_models import save_tiny_with_tokenizer


@pytest.mark.parametrize("argv,match", [
    (["compress", "m", "--target-ratio", "1", "--out", "x"], "--target-ratio must be a number > 1"),
    (["compress", "m", "--target-ratio", "two", "--out", "x"], "--target-ratio must be a number > 1; got 'two'"),
    (["compress", "m", "--target-ratio", "2", "--out", "x", "--layers", "a,b"], "--layers takes comma-separated"),
])
def test_bad_arguments(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_unknown_model_is_one_line(tmp_path, capsys):
    code = main(["compress", str(tmp_path / "nope"), "--target-ratio", "2", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "tensorllm compress: error:" in capsys.readouterr().err


def test_compress_command_on_a_tiny_llama(tmp_path, capsys):
    folder, _ = save_tiny_with_tokenizer("llama", tmp_path / "llama")
    out = tmp_path / "out"
    code = main(["compress", str(folder), "--target-ratio", "1.5", "--out", str(out), "--prompts", "4",
                 "--no-verify", "--ranks", "0.5,1.0,1.0", "--ranks", "0.25,0.5,1.0", "--layers", "0,1", "--json"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(printed[-1])
    assert payload["attention_ratio"] >= 1.5 and payload["verification"] is None
    assert any("attention" in line and "smaller (target 1.5x)" in line for line in printed)
    assert (out / "compress_report.json").is_file() and (out / "config.json").is_file()
