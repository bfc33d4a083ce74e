"""The MLflow tracking server goes away in the middle of a sweep: the sweep fails in bounded time with one
line, keeps what it computed, and the rerun (server back) registers everything once, recomputing nothing.

Real services: ``mlflow server`` (sqlite backend, its own artifact store) in a subprocess, stopped by PID
and restarted on the same port; the sweep is the CLI with its own Prefect server and Ray.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from cli_sweep import START_TIMEOUT, cli_env, start, sweep_command, wait_for

pytestmark = pytest.mark.integration

#: the sweep must fail within this many seconds once the server is gone (the issue's bound is 60 s per call;
#: the flow's registration is one call that fails, then the flow ends)
FAIL_WITHIN = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=open(folder / "server.log", "ab"), stderr=subprocess.STDOUT, env=cli_env())
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(1)
        assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
    raise AssertionError("mlflow server did not become healthy in 180 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def artifacts_of(workdir: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (workdir / "runs" / "artifacts").glob("*/*/artifact.json")}


def test_a_sweep_survives_an_mlflow_outage_by_failing_fast_and_rerunning(tiny_llm, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path / "mlflow", port)
    try:
        sweep = start(tmp_path, tiny_llm, "--mlflow-tracking-uri", uri)
        wait_for(lambda: artifacts_of(tmp_path), START_TIMEOUT, "the first decomposition", sweep)
        stop(server)  # the outage: before any registration (registration follows every evaluation)
        down_at = time.monotonic()
        out, err = sweep.communicate(timeout=FAIL_WITHIN + 300)
        failed_after = time.monotonic() - down_at
        assert sweep.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("tensorllm sweep: error:") and uri in last, err[-3000:]  # one line naming the URI
        assert failed_after < FAIL_WITHIN, f"failed {failed_after:.0f}s after the outage"
        computed = artifacts_of(tmp_path)
        assert computed  # kept on disk for the rerun

        server = mlflow_server(tmp_path / "mlflow", port)  # back, same store
        rerun = subprocess.run(sweep_command(tiny_llm, "--mlflow-tracking-uri", uri, "--json"), cwd=tmp_path,
                               env=cli_env(), text=True, capture_output=True, timeout=1200)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        after = artifacts_of(tmp_path)
        assert {k: after[k] for k in computed} == computed  # nothing recomputed
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        assert summary["champion_version"] is not None

        from mlflow import MlflowClient

        versions = MlflowClient(uri).search_model_versions(f"name='{summary['registered_model']}'")
        names = Counter(v.tags.get("variant_name") for v in versions)
        assert names and max(names.values()) == 1, f"a variant registered twice: {names}"
    finally:
        stop(server)
