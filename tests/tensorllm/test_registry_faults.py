"""The registry under faults: a process SIGKILLed at a chosen point of a registration or of a sweep's report, and
identical registrations from several processes at once.

Each killed process is real (spawned, then ``SIGKILL``ed by itself at the chosen MLflow call, as an OOM kill
would land); the store is a real sqlite store in tmp_path. After the rerun nothing may stay RUNNING, no key
may have two versions or two active runs, and the version must carry every metric of its record.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest

MODEL = "faults"
METRICS = {"val_loss": 1.25, "val_top1_accuracy": 0.5}


def _record(key: str = "k-fault"):
    from tensorllm.registry import VariantRecord

    return VariantRecord(key=key, name="baseline", base_model="smollm2-135m", tags={"model_identity": "same-base"},
                         metrics=dict(METRICS))


def _killed_at(uri: str, where: str) -> None:
    """Register (or log a sweep report), SIGKILLing this process inside the MLflow call ``where``."""
    from mlflow import MlflowClient

    from tensorllm.registry import Registry

    # a sweep report is one folder (summary, files and their manifest): log_artifacts, as a variant's
    method = {"variant-run": "log_artifacts", "version": "create_model_version", "sweep-run": "log_artifacts"}[where]
    original = getattr(MlflowClient, method)

    def die(self, *args, **kwargs):
        if where == "version":
            original(self, *args, **kwargs)  # the version exists; the process dies before it returns
        os.kill(os.getpid(), signal.SIGKILL)

    registry = Registry(uri)
    setattr(MlflowClient, method, die)
    if where == "sweep-run":
        registry.log_sweep(MODEL, {"n": 1}, [])
    else:
        registry.register_variant(_record(), MODEL)


def _run(target, *args):
    process = mp.get_context("spawn").Process(target=target, args=args)  # a fresh interpreter, as a sweep is
    process.start()
    process.join(timeout=300)
    return process.exitcode


def _runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow  # a subprocess: left out of `make test-fast`
@pytest.mark.parametrize("where", ["variant-run", "version", "sweep-run"])
def test_a_kill_during_registration_leaves_nothing_running_after_the_rerun(where, tmp_path):
    from tensorllm.registry import KEY_TAG, Registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _run(_killed_at, uri, where) == -signal.SIGKILL
    running = [r for r in _runs(uri) if r.info.status == "RUNNING"]
    assert len(running) == (0 if where == "version" else 1)  # what the kill left: the run it was writing

    registry = Registry(uri)  # the rerun
    if where == "sweep-run":
        registry.log_sweep(MODEL, {"n": 1}, [])
    version = registry.register_variant(_record(), MODEL)
    runs = _runs(uri)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    versions = registry.client.search_model_versions(f"name='{MODEL}'")
    assert [int(v.version) for v in versions] == [version]  # one version, the rerun's or the killed one's
    run = registry.client.get_run(versions[0].run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == METRICS
    assert not set(METRICS) & {k.split(".")[-1] for k in versions[0].tags}  # metrics live on the run, not in tags
    finished = [r for r in runs if r.data.tags.get(KEY_TAG) == "k-fault" and r.info.status == "FINISHED"]
    assert len(finished) == 1  # the killed attempt's run, if any, is FAILED, not a second finished one
    if where == "sweep-run":
        sweeps = sorted(r.info.status for r in runs if r.data.tags.get("kind") == "sweep")
        assert sweeps == ["FAILED", "FINISHED"]


def _register_at_once(uri: str, barrier, queue) -> None:
    try:
        from tensorllm.registry import Registry

        registry = Registry(uri)  # the store exists (the parent made it): only registration races
        barrier.wait(timeout=120)
        queue.put(("ok", registry.register_variant(_record("k-same"), MODEL)))
    except Exception as exc:  # reported to the parent, which asserts on it
        queue.put(("fail", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow  # subprocesses: left out of `make test-fast`
def test_identical_registrations_at_once_leave_one_version_and_one_run(tmp_path):
    """Three processes register the same key at the same moment (two identical sweeps do): one version and one
    active run. Unserialised, each logged its own run and the later ones deleted only their duplicate version,
    leaving extra FINISHED runs (5 runs where 4 were expected in a probe with two sweeps)."""
    from tensorllm.registry import KEY_TAG, Registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Registry(uri)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    processes = [ctx.Process(target=_register_at_once, args=(uri, barrier, queue)) for _ in range(3)]
    for p in processes:
        p.start()
    results = [queue.get(timeout=300) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert all(status == "ok" for status, _ in results), results
    assert len({version for _, version in results}) == 1, results
    runs = [r for r in _runs(uri) if r.data.tags.get(KEY_TAG) == "k-same"]
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.run_id, r.info.status) for r in runs]
