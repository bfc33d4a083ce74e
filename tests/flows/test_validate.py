"""Sweep input validation (flows.validate): every bad input is one line naming the value and what is allowed.

The cases are tests/bad_inputs.py's SWEEP_CASES (with the other commands' cases, the source of the table in
docs/operations.md). The model is a saved tiny GQA Llama (2 layers, 6 query heads, 2 KV heads, d_head 8, d_model
48; its kv tensor is (48, 8, 8, 2)), so only its config.json and safetensors headers are read. The CLI test runs
``tensorllm sweep`` in a subprocess: exit code 2, one stderr line, no traceback, before any Prefect or Ray.
"""

from __future__ import annotations

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
