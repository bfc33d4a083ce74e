"""Run ``tensorllm sweep`` as a user does, in a subprocess, for the fault tests (no test in this module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from flows.runtime.service_ledger import OwnedProcess

REGISTERED = "tiny-interrupted"
#: a CLI sweep on the tiny model takes 1-3 minutes on 2 cores with its own Prefect server and Ray
START_TIMEOUT = 420


def sweep_command(model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tensorllm.cli", "sweep", "--model", str(model), "--layers", "2,3",
            "--ranks", "16,8,2", "--ranks", "0.5,0.5,0.5", "--val-limit", "8", "--test-limit", "8",
            "--selection-metric", "top1_accuracy", "--test-top-k", "1", "--batch-size", "8",
            "--registered-model", REGISTERED,
            # 8 validation items cannot show non-inferiority within 2 points (flows.noninferiority): wide margins
            # let these sweeps promote and export, whose mechanics the tests check
            "--margin", "0.9", "--loss-margin", "5", *extra]


ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """The user's environment: no Prefect API configured (the sweep starts its own server); this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_HOME", "MLFLOW_TRACKING"))}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


def start(workdir: Path, model: Path, *extra: str) -> subprocess.Popen:
    """A sweep in the background, in its own session (a test's signals reach only what it means to signal)."""
    return subprocess.Popen(sweep_command(model, *extra), cwd=workdir, env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def ledger(workdir: Path, pid: int) -> list[OwnedProcess]:
    path = workdir / "runs" / "services" / f"sweep-{pid}.json"
    try:
        return [OwnedProcess(**p) for p in json.loads(path.read_text())["processes"]]
    except (OSError, ValueError):
        return []


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the sweep ended (rc {process.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
