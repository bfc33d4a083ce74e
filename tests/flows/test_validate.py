"""Sweep input validation (flows.validate): every bad input is one line naming the value and what is allowed.

The cases are tests/bad_inputs.py's SWEEP_CASES (with the other commands' cases, the source of the table in
docs/operations.md). The model is a saved tiny GQA Llama (2 layers, 6 query heads, 2 KV heads, d_head 8, d_model
48; its kv tensor is (48, 8, 8, 2)), so only its config.json and safetensors headers are read. The CLI test runs
``tensorllm sweep`` in a subprocess: exit code 2, one stderr line, no traceback, before any Prefect or Ray.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from bad_inputs import GOOD, REGENERATE, SWEEP_CASES, Workspace, documented, make_tiny, run_case
from flows.config import SweepConfig
from flows.validate import SweepInputError, validate_sweep


@pytest.fixture(scope="module")
def tiny_and_artifact(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("validate"))


@pytest.fixture(scope="module")
def tiny(tiny_and_artifact):
    return tiny_and_artifact[0]


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[case.id for case in SWEEP_CASES])
def test_bad_input_is_one_line(case, tiny_and_artifact, tmp_path):
    """Each case of tests/bad_inputs.py's SWEEP_CASES: its line, at once, and as docs/operations.md shows it."""
    ws = Workspace(*tiny_and_artifact, tmp_path)
    start = time.perf_counter()
    code, message = run_case(case, ws)
    seconds = time.perf_counter() - start
    assert code is None and message.startswith(ws.fill(case.message)), message
    assert "\n" not in message
    assert seconds < 10  # closed ports are refused at once (the connect timeout is 5 s); reading a dataset whole ~1-7 s
    assert documented().get((case.command, case.input)) == ws.shown(message), f"docs/operations.md is stale: {REGENERATE}"


def test_good_input_gives_the_config(tiny):
    config = validate_sweep({"model": str(tiny), **GOOD, "laser": [{"matrix": "fc_up", "rho": 0.5}],
                             "mlflow_tracking_uri": "sqlite:////tmp/runs-not-created/mlflow.db", "ray_address": "local"})
    assert isinstance(config, SweepConfig) and config.resolve_layers(2) == [0, 1]


def test_an_error_is_a_value_error():
    assert issubclass(SweepInputError, ValueError)  # the CLI's one-line handler catches ValueError
    assert str(SweepInputError("a\n  b")) == "a b"  # one line, whatever it wraps


def test_flow_validates_its_parameters_first(tiny):
    """The flow's body (``.fn``: no Prefect API needed) raises the same line before it builds a Ray runner."""
    from flows.compress_sweep import compress_sweep

    with pytest.raises(SweepInputError, match=r"^layers: \[99\] out of range"):
        compress_sweep.fn(model=str(tiny), layers=[99])


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_bad_sweep_is_one_line_exit_2_fast(tiny, tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "sweep", "--layers", "99", "--model", str(tiny)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    print(f"tensorllm sweep --layers 99: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("tensorllm sweep: error: layers: [99] out of range")
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
    # the target is 10 s; measured 6-8 s on 2 busy cores (~5 s of it importing torch and transformers)
    assert seconds < 30


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_debug_shows_the_traceback(tiny, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "--debug", "sweep", "--layers", "99",
                           "--model", str(tiny)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr and "SweepInputError: layers: [99]" in done.stderr


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_bad_option_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "sweep", "--grouping", "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("tensorllm sweep: error: argument --grouping")


def test_ray_address_falls_back_to_the_ray_address_variable(tiny, tmp_path, monkeypatch):
    """No ``ray_address``: ``$RAY_ADDRESS`` names the cluster (checked like the parameter); "local" overrides it."""
    from flows.runtime.ray_runner import ray_address

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    assert ray_address(None) == "127.0.0.1:9" and ray_address("local") is None and ray_address("h:1") == "h:1"
    with pytest.raises(SweepInputError, match=r"^ray_address: 127\.0\.0\.1:9 is not reachable \(connection refused\)"):
        validate_sweep({"model": str(tiny), **GOOD})
    validate_sweep({"model": str(tiny), **GOOD, "ray_address": "local"})  # a private local Ray: nothing to reach
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address(None) is None


#: your own data in the sweep's datasets: (id, records of the file, spec or None, the start of the message)
USER_BAD = [
    ("malformed line", ['{"prompt": "a", "answer": "b"}', '{"prompt": "c"}'], None,
     "datasets: '{path}' cannot be read: {path}:2: missing field(s) ['answer']; required: ['answer', 'prompt']"),
    ("empty file", [], None, "datasets: '{path}' cannot be read: {path}: no usable record"),
    ("choices not single tokens", ['{"prompt": "a", "answer": "maybe not"}', '{"prompt": "b", "answer": "surely so"}'],
     "path: mine.jsonl\nkind: choice\nchoices: ['maybe not', 'surely so']\n",
     "datasets: '{spec}' cannot be read: candidate 'maybe not' is not a single token for this tokenizer"),
]


@pytest.mark.parametrize("lines, spec, message", [case[1:] for case in USER_BAD], ids=[case[0] for case in USER_BAD])
def test_your_own_data_is_read_before_the_run(tiny, tmp_path, lines, spec, message):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    ref = path
    if spec is not None:
        ref = tmp_path / "mine.yaml"
        ref.write_text(spec)
    expected = message.replace("{path}", str(path)).replace("{spec}", str(ref))
    with pytest.raises(SweepInputError, match="^" + re.escape(expected)):
        validate_sweep({"model": str(tiny), **GOOD, "datasets": ["fever", str(ref)], "transfer_dataset": None})


def test_your_own_data_as_transfer_dataset_is_checked_and_made_absolute(tiny, tmp_path, monkeypatch):
    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is", "answer": "blue"}\n')
    monkeypatch.chdir(tmp_path)
    config = validate_sweep({"model": str(tiny), **GOOD, "transfer_dataset": "mine.jsonl"})
    assert config.transfer_dataset == str(tmp_path / "mine.jsonl")  # Ray workers resolve paths elsewhere
    assert SweepConfig(transfer_dataset="none").transfer_dataset is None  # how the command line says None
    with pytest.raises(SweepInputError, match=r"^transfer_dataset: dataset 'gone\.csv': no such file or folder"):
        validate_sweep({"model": str(tiny), **GOOD, "transfer_dataset": "gone.csv"})


def test_cli_sweep_with_a_bad_dataset_file_is_one_line_exit_2(tiny, tmp_path, capsys, monkeypatch):
    from tensorllm.cli import main

    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is"}\n')
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "--model", str(tiny), "--layers", "last 2", "--ranks", "4,2,1", "--datasets", "mine.jsonl"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"tensorllm sweep: error: datasets: '{tmp_path / 'mine.jsonl'}' cannot be read: "
                          f"{tmp_path / 'mine.jsonl'}:1: missing field(s) ['answer']")
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_config_file_names_your_own_data_and_print_config_writes_it_absolute(tiny, tmp_path, capsys, monkeypatch):
    import yaml

    from tensorllm.cli import main

    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is", "answer": "blue"}\n')
    (tmp_path / "sweep.yaml").write_text(f"model: {tiny}\nlayers: last 2\nranks: [[4, 2, 1]]\n"
                                         "datasets: [fever, mine.jsonl]\ntransfer_dataset: none\n")
    monkeypatch.chdir(tmp_path)  # a relative path is read from the folder the command runs in
    assert main(["sweep", "--config", "sweep.yaml", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["datasets"] == ["fever", str(tmp_path / "mine.jsonl")] and printed["transfer_dataset"] is None
