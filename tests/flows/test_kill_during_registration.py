"""A ``tensorllm sweep`` SIGKILLed while it registers its variants in MLflow, then rerun: nothing stays RUNNING, no
variant has two versions or two finished runs, and every version carries all its metrics.

Real processes end to end (the CLI with its own Prefect server, a private Ray and a sqlite MLflow store). The test
watches the store itself and kills the driver and its supervisor as soon as registration has begun (a run or a
model version exists), as an OOM kill or a lost node would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from cli_sweep import REGISTERED, START_TIMEOUT, cli_env, ledger, start, sweep_command, wait_for

pytestmark = pytest.mark.integration


def registering(db: Path) -> bool:
    """The store has a run (a registration under way: runs are logged by registration only) or a model version."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as con:
            return con.execute("SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM model_versions)").fetchone()[0] > 0
    except sqlite3.Error:  # not created yet, or its tables not yet
        return False


def test_a_sweep_killed_while_it_registers_is_completed_by_its_rerun_without_stale_or_duplicate_runs(tiny_llm, tmp_path):
    db = tmp_path / "runs" / "mlflow" / "mlflow.db"
    sweep = start(tmp_path, tiny_llm)
    try:
        wait_for(lambda: registering(db), START_TIMEOUT, "the first registration", sweep)
        driver = next(p for p in ledger(tmp_path, sweep.pid) if "tensorllm.cli sweep" in p.command)
    except BaseException:  # never leave a sweep running for the next tests
        sweep.send_signal(signal.SIGTERM)
        sweep.communicate(timeout=180)
        raise
    os.kill(driver.pid, signal.SIGKILL)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.communicate(timeout=60)
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    print(f"runs by status when killed: {before}")

    rerun = subprocess.run(sweep_command(tiny_llm, "--json"), cwd=tmp_path, env=cli_env(), text=True,
                           capture_output=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])

    from mlflow import MlflowClient

    from tensorllm.registry import KEY_TAG

    client = MlflowClient(summary["mlflow_tracking_uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []  # none left RUNNING
    versions = client.search_model_versions(f"name='{REGISTERED}'")
    keys = Counter(v.tags[KEY_TAG] for v in versions)
    assert keys and max(keys.values()) == 1, f"a variant registered twice: {keys}"
    # every finished variant run is a version's run: no orphan run beside a version of the same key
    finished = Counter(r.data.tags.get(KEY_TAG) for r in runs if r.info.status == "FINISHED" and r.data.tags.get(KEY_TAG))
    assert finished == keys, f"finished runs per key {finished}, versions per key {keys}"
    assert sorted(r.data.tags["kind"] for r in runs if r.data.tags.get("kind") == "sweep") == ["sweep"]

    # all their metrics, on each version's run: the rerun's summary numbers
    rows = {row["version"]: row for row in [summary["baseline"], *summary["variants"]]}
    assert sorted(rows) == sorted(int(v.version) for v in versions)
    for v in versions:
        metrics = client.get_run(v.run_id).data.metrics
        row = rows[int(v.version)]
        assert metrics["val_top1_accuracy"] == pytest.approx(row["val_top1_accuracy"]), v.version
        assert metrics["val_loss"] == pytest.approx(row["val_loss"]), v.version
        if row.get("test_top1_accuracy") is not None:  # tested: its test numbers were added after registration
            assert metrics["test_top1_accuracy"] == pytest.approx(row["test_top1_accuracy"]), v.version
        assert len(v.tags) <= 6, f"v{v.version}: a version carries a handful of tags, not its metrics: {sorted(v.tags)}"
    assert summary["baseline"].get("test_top1_accuracy") is not None  # the base is always tested
