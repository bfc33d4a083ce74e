"""An interrupted ``tensorllm sweep`` leaves nothing running, and its rerun finishes the work without repeats.

Real processes end to end: the CLI starts its own Prefect server and a private local Ray, as a user's
sweep does; the test signals it the way a user (Ctrl-C, ``kill``) or the kernel (SIGKILL) would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from cli_sweep import REGISTERED, START_TIMEOUT, cli_env, ledger, start, sweep_command, wait_for

from flows.runtime.service_ledger import OwnedProcess

pytestmark = pytest.mark.integration


def ray_is_up(workdir: Path, pid: int) -> list[OwnedProcess] | None:
    processes = ledger(workdir, pid)
    return processes if any("raylet" in p.command for p in processes) else None


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def finished_artifacts(workdir: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (workdir / "runs" / "artifacts").glob("*/*/artifact.json")}


def test_sigterm_stops_the_prefect_server_ray_and_its_agents(tiny_llm, tmp_path):
    sweep = start(tmp_path, tiny_llm)
    processes = wait_for(lambda: ray_is_up(tmp_path, sweep.pid), START_TIMEOUT, "Ray to start", sweep)
    time.sleep(3)  # a task or two under way
    processes = ledger(tmp_path, sweep.pid)
    assert any("prefect" in p.command and "server" in p.command for p in processes)
    assert any("ray::" in p.command or "agent" in p.command for p in processes)  # the agents that ignore SIGTERM
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 143, err[-3000:]  # 128 + SIGTERM, as a shell reports a terminated job
    assert "interrupted by SIGTERM" in err and "Rerun the same command to resume" in err
    assert "Traceback" not in err.split("interrupted by SIGTERM")[-1]
    alive = [p for p in processes if p.alive() is not None]
    assert alive == [], f"left running: {alive}"
    assert not (tmp_path / "runs" / "services" / f"sweep-{sweep.pid}.json").exists()


def test_a_sigkilled_sweep_is_cleaned_up_and_completed_by_its_rerun(tiny_llm, tmp_path):
    """SIGKILL of the driver and its supervisor mid-sweep (an OOM kill, a node reboot of the job): the
    Prefect server and Ray outlive them; the rerun stops those, reuses every finished decomposition and
    evaluation, and registers each variant once."""
    sweep = start(tmp_path, tiny_llm)
    try:
        wait_for(lambda: ray_is_up(tmp_path, sweep.pid) and finished_artifacts(tmp_path), START_TIMEOUT,
                 "the first decomposition to finish", sweep)
        processes = ledger(tmp_path, sweep.pid)
        driver = next(p for p in processes if "tensorllm.cli sweep" in p.command)
    except BaseException:  # never leave a sweep running for the next tests
        sweep.send_signal(signal.SIGTERM)
        sweep.communicate(timeout=180)
        raise
    os.kill(driver.pid, signal.SIGKILL)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.communicate(timeout=60)
    time.sleep(2)
    survivors = [p for p in processes if p.alive() is not None]
    # Here the Prefect server and Ray's agents outlive the kill (the case the rerun must handle); a
    # machine whose init reaps orphans may end them. Either way every recorded pid that still runs is
    # recognised as the sweep's (the CI failure: a wall-clock step made none of them recognised).
    unrecognised = [p for p in processes if p.alive() is None and _running(p.pid)]
    assert unrecognised == [], f"recorded processes still running but not recognised: {unrecognised}"
    done_before = finished_artifacts(tmp_path)

    rerun = subprocess.run(sweep_command(tiny_llm, "--json"), cwd=tmp_path, env=cli_env(), text=True,
                           capture_output=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"interrupted sweep (pid {sweep.pid}" in rerun.stderr, rerun.stderr[-3000:]
    if survivors:
        assert "left by an interrupted sweep" in rerun.stderr
    assert [p for p in survivors if p.alive() is not None] == []
    # finished decompositions were reused, not recomputed (same files, untouched)
    after = finished_artifacts(tmp_path)
    assert {k: after[k] for k in done_before} == done_before
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["champion_version"] is not None

    from mlflow import MlflowClient

    uri = summary["mlflow_tracking_uri"]
    versions = MlflowClient(uri).search_model_versions(f"name='{REGISTERED}'")
    names = Counter(v.tags.get("variant_name") for v in versions)
    assert names and max(names.values()) == 1, f"a variant registered twice: {names}"
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []  # none left RUNNING
