"""End to end, with real services: a Prefect API, a local Ray (via prefect-ray) and an MLflow sqlite store.

A sweep on a tiny model registers the baseline and every variant, sets ``champion`` on the version the
policy picks from the *logged* metrics; a second run of the same sweep recomputes nothing (every
decomposition and evaluation task run is a cache hit) and adds no version; a deployment served by
``deployments/serve.py`` runs when triggered through the Prefect API with other parameters, as the UI does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REGISTERED = "tiny-e2e"


def sweep_params(tiny_llm: Path, tmp: Path) -> dict:
    return dict(model=str(tiny_llm), datasets=["qa_wikidata"], layers=[2, 3], ranks=[(16, 8, 2), (0.5, 0.5, 0.5)],
                val_limit=8, test_limit=8, generate=True, selection_metric="top1_accuracy", test_top_k=1,
                registered_model=REGISTERED, mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                artifacts_root=str(tmp / "runs" / "artifacts"), batch_size=8)


def versions(uri: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(uri).search_model_versions(f"name='{REGISTERED}'")


def task_runs_since(start: float) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    return [r for r in runs if r.expected_start_time and r.expected_start_time.timestamp() >= start]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def first_run(prefect_api, tiny_llm, workdir):
    from flows.compress_sweep import compress_sweep

    params = sweep_params(tiny_llm, workdir)
    return params, compress_sweep(**params)


def test_sweep_registers_every_variant_and_promotes_the_best(first_run):
    from mlflow import MlflowClient

    params, summary = first_run
    uri = params["mlflow_tracking_uri"]
    registered = versions(uri)
    assert len(registered) == 1 + 2 * 2  # baseline + 2 layers x 2 rank configs
    assert len(summary["variants"]) == 4

    client = MlflowClient(uri)
    logged = {}
    for mv in registered:
        run = client.get_run(mv.run_id)
        logged[int(mv.version)] = (run.data.tags["kind"], run.data.metrics["val_top1_accuracy"], run.data.metrics["val_loss"])
    baseline = next(v for v, (kind, *_) in logged.items() if kind == "baseline")
    variants = {v: m for v, (kind, *m) in logged.items() if kind == "variant"}
    best = min(variants, key=lambda v: (-variants[v][0], variants[v][1]))
    beats_baseline = (-variants[best][0], variants[best][1]) < (-logged[baseline][1], logged[baseline][2])
    aliases = client.get_registered_model(REGISTERED).aliases
    if beats_baseline:
        assert int(aliases["champion"]) == best and summary["champion_version"] == best
        tags = client.get_model_version(REGISTERED, str(best)).tags
        assert tags["promotion.decision"] == "promote"
        assert "promotion.test_vs_baseline.qa_wikidata.top1_correct.mcnemar_p" in tags  # paired test comparison
    else:
        assert "champion" not in aliases and summary["champion_version"] is None
    # every variant carries the method's numbers
    for mv in registered:
        metrics = client.get_run(mv.run_id).data.metrics
        if client.get_run(mv.run_id).data.tags["kind"] == "variant":
            assert metrics["compression_ratio"] > 1 and 0 < metrics["rel_error"] < 1


def test_second_run_recomputes_nothing_and_adds_no_version(first_run, tiny_llm, workdir):
    from flows.compress_sweep import compress_sweep

    params, summary = first_run
    start = time.time()
    again = compress_sweep(**params)
    assert len(versions(params["mlflow_tracking_uri"])) == 5
    assert again["champion_version"] == summary["champion_version"]
    work = [r for r in task_runs_since(start) if r.name.startswith(("decompose-layer", "evaluate"))]
    assert len(work) == 2 + (1 + 4) + (1 + 1)  # decompositions, val evals (baseline + variants), test evals (baseline + top-1)
    assert all(r.state.name == "Cached" for r in work), [(r.name, r.state.name) for r in work]


def test_deployment_run_triggered_through_the_api_completes(first_run, prefect_api, workdir):
    from prefect.deployments import run_deployment

    params, _ = first_run
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "TENSORLLM_SERVE_NAME_PREFIX": "test-",
           "TENSORLLM_SERVE_PARAMS": json.dumps({k: v for k, v in params.items() if k != "ranks"} | {"ranks": [list(r) for r in params["ranks"]]})}
    log = open(workdir / "serve.log", "wb")
    server = subprocess.Popen([sys.executable, str(ROOT / "deployments" / "serve.py")], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        from prefect.client.orchestration import get_client

        deadline = time.time() + 120
        while True:
            try:
                with get_client(sync_client=True) as client:
                    client.read_deployment_by_name("compress-sweep/test-on-demand")
                break
            except Exception:
                assert time.time() < deadline and server.poll() is None, (workdir / "serve.log").read_text()[-3000:]
                time.sleep(2)
        # other parameters than the deployment's defaults, as a user would enter them in the UI form
        flow_run = run_deployment("compress-sweep/test-on-demand", parameters={"layers": [3]}, timeout=900)
        assert flow_run.state.is_completed(), (flow_run.state, (workdir / "serve.log").read_text()[-3000:])
        assert flow_run.parameters["layers"] == [3]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
