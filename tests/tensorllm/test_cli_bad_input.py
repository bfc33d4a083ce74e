"""Bad input to every command: one line, exit code 2, before any work, and nothing created.

The cases are tests/bad_inputs.py's CLI_CASES (the sweep's parameters, SWEEP_CASES, run in tests/flows/test_validate.py),
each run in-process through ``tensorllm.cli.main``; together they are the table in docs/operations.md, which a case
whose real message differs from its row fails (regenerate with ``PYTHONPATH=. python tests/bad_inputs.py``).

Read-only registry commands on a store that is not there: one line, exit code 2, and nothing created.

MLflow opens a sqlite URI by creating the database (and ``runs/mlflow`` by our default), so ``models list`` on a
mistyped path used to say "No registered models" and leave a new empty store behind.
"""

from __future__ import annotations

import time

import pytest
from bad_inputs import CASES, CLI_CASES, COMMANDS, REGENERATE, Workspace, documented, make_tiny, message_of, run_case

from tensorllm.cli import main


@pytest.fixture(scope="module")
def tiny_and_artifact(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("bad-input"))


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_bad_command_line_is_one_line_exit_2(case, tiny_and_artifact, tmp_path):
    ws = Workspace(*tiny_and_artifact, tmp_path)
    start = time.perf_counter()
    code, err = run_case(case, ws)
    seconds = time.perf_counter() - start
    prog = "tensorllm " + case.argv[0]
    assert code == 2 and err.startswith(prog) and err.count("\n") == 1, err  # one line, and nothing before it
    message = message_of(case, err)
    assert message.startswith(ws.fill(case.message)), message
    assert (tmp_path / "file").read_text() == "not a folder"  # no case writes into a file it was given
    assert seconds < 30  # before any compute: measured 0.1-2 s, a new MLflow store's tables ~5 s on 2 busy cores
    assert documented().get((case.command, case.input)) == ws.shown(message), f"docs/operations.md is stale: {REGENERATE}"


def test_the_cases_cover_every_command_and_the_table_lists_exactly_them():
    assert len(CASES) >= 45
    assert {case.command for case in CASES} == set(COMMANDS)
    assert len({case.id for case in CASES}) == len(CASES)
    rows = {(case.command, case.input) for case in CASES}
    assert len(rows) == len(CASES), "two cases show the same input in the table"
    assert set(documented()) == rows, f"docs/operations.md's bad-input table is stale: {REGENERATE}"


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


def test_a_command_run_in_process_leaves_the_loggers_as_it_found_them(capsys):
    """``main`` configures our loggers for one command only: no handler piles up and INFO records still reach
    other code's log capture afterwards (a leftover WARNING level once hid them from a later test)."""
    import logging

    logger = logging.getLogger("tensorllm")
    before = (list(logger.handlers), logger.level)
    assert main(["models", "--mlflow-tracking-uri", "ftp://h/x", "list"]) == 2
    assert (list(logger.handlers), logger.level) == before


@pytest.mark.parametrize("argv, message", [(["nope"], "argument command: invalid choice: 'nope'"),
                                           ([], "the following arguments are required: command")])
def test_a_bad_sub_command_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.startswith(f"tensorllm: error: {message}")
