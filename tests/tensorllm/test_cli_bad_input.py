"""Bad input to the commands other than ``sweep`` (whose cases are in tests/flows/test_validate.py): one line,
exit code 2, before any work, and nothing created.

Read-only registry commands on a store that is not there: one line, exit code 2, and nothing created.

MLflow opens a sqlite URI by creating the database (and ``runs/mlflow`` by our default), so ``models list`` on a
mistyped path used to say "No registered models" and leave a new empty store behind.
"""

from __future__ import annotations

import pytest

from tensorllm.cli import main


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv", [["models", "list"], ["models", "show", "tensorllm-x@champion"],
                                  ["models", "load", "tensorllm-x/1", "--out", "out"],
                                  ["export", "tensorllm-x@champion", "--out", "out"]])
def test_a_store_that_does_not_exist_is_named_and_not_created(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, err = run(argv, capsys)
    assert code == 2 and "\n" not in err
    assert f"no MLflow store at {tmp_path}/runs/mlflow/mlflow.db" in err and "nothing was created" in err
    assert list(tmp_path.iterdir()) == []  # no runs/, no mlflow.db, no out/


def test_an_explicit_missing_sqlite_store_is_named(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    code, err = run(["models", "--mlflow-tracking-uri", uri, "list"], capsys)
    assert code == 2 and err.endswith("or pass --mlflow-tracking-uri (or set MLFLOW_TRACKING_URI)")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("uri, message", [
    ("ftp://h/x", "tracking URI 'ftp://h/x': unknown scheme 'ftp'; allowed: sqlite:////ABSOLUTE/PATH.db"),
    ("sqlite:relative.db", "tracking URI 'sqlite:relative.db': a sqlite URI starts with sqlite:///"),
])
def test_a_malformed_tracking_uri_is_one_line(uri, message, capsys):
    code, err = run(["models", "--mlflow-tracking-uri", uri, "list"], capsys)
    assert code == 2 and err.startswith(f"tensorllm models: error: {message}") and "\n" not in err


@pytest.mark.parametrize("argv", [["decompose", "smollm2-135m", "--layer", "0", "--ranks", "4,2,1", "--out", "afile/sub"],
                                  ["evaluate", "{tiny}", "--dataset", "fever", "--limit", "2", "--out", "afile/evals"]])
def test_an_output_folder_under_a_regular_file_is_one_line(argv, tmp_path, monkeypatch, capsys):
    from tensorllm.tiny_models import save_tiny_with_tokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder")
    tiny = save_tiny_with_tokenizer("llama_gqa", tmp_path / "tiny")[0] if "{tiny}" in argv else None
    capsys.readouterr()  # the saving's progress bars
    code, err = run([str(tiny) if a == "{tiny}" else a for a in argv], capsys)
    assert code == 2 and "\n" not in err and "afile" in err, err


def test_a_command_run_in_process_leaves_the_loggers_as_it_found_them(capsys):
    """``main`` configures our loggers for one command only: no handler piles up and INFO records still reach
    other code's log capture afterwards (a leftover WARNING level once hid them from a later test)."""
    import logging

    logger = logging.getLogger("tensorllm")
    before = (list(logger.handlers), logger.level)
    assert main(["models", "--mlflow-tracking-uri", "ftp://h/x", "list"]) == 2
    assert (list(logger.handlers), logger.level) == before
