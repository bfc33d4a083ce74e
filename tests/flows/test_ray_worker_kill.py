"""A Ray worker killed in the middle of a task: Ray runs the task again and the sweep's results are the
same as an undisturbed sweep's (every variant's error and validation metrics, and the decision).

Real processes: two CLI sweeps with the same parameters in two folders; in the second, the first worker
seen running a decomposition or an evaluation task (process title ``ray::<task>``, polled every 0.5 s) is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import psutil
import pytest
from cli_sweep import START_TIMEOUT, cli_env, start, sweep_command, wait_for

from flows.runtime.service_ledger import OwnedProcess

pytestmark = pytest.mark.integration

#: what must not change: per variant, the decomposition error and every validation metric
COMPARED = ("rel_error", "val_top1_accuracy", "val_loss", "compression_ratio", "whole_model_attention_cr")


def busy_worker(pid: int) -> OwnedProcess | None:
    """A Ray worker below the sweep that is running a task now (Ray retitles an idle worker per task)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for process in below:
        try:
            if " ".join(process.cmdline()).startswith(("ray::decompose-layer", "ray::evaluate")):
                return OwnedProcess.of(process)
        except psutil.Error:
            continue
    return None


def results(summary: dict) -> dict:
    return {row["name"]: {k: row.get(k) for k in COMPARED} for row in summary["variants"]}


def test_a_killed_ray_worker_is_retried_with_identical_results(tiny_llm, tmp_path):
    (tmp_path / "reference").mkdir()
    reference = subprocess.run(sweep_command(tiny_llm, "--json"), cwd=tmp_path / "reference", env=cli_env(),
                               text=True, capture_output=True, timeout=1200)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    workdir.mkdir()
    sweep = start(workdir, tiny_llm, "--json")
    try:
        worker = wait_for(lambda: busy_worker(sweep.pid), START_TIMEOUT, "a busy Ray worker", sweep)
        os.kill(worker.pid, signal.SIGKILL)
        out, err = sweep.communicate(timeout=1200)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGTERM)
            sweep.communicate(timeout=180)
    assert sweep.returncode == 0, err[-3000:]
    assert worker.alive() is None  # it really died; the task ran again elsewhere
    killed = json.loads(out.strip().splitlines()[-1])
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    assert results(killed) == results(expected)  # bitwise: CPU decompositions and evaluations are deterministic
    assert killed["decision"]["sentence"] == expected["decision"]["sentence"]
