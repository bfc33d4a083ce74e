"""End to end, with real services: a Prefect API, a local Ray (via prefect-ray) and an MLflow sqlite store.

A sweep on a tiny model registers the baseline, every single-layer variant and the composed ones with
whole-model metrics, writes the decision as one sentence on the version and the sweep run, and exports
the best composed model factorised (it loads and generates); a second run recomputes nothing (every
decomposition, evaluation and export task run is a cache hit) and adds no version; a noise-only sweep of
another model promotes nothing and leaves the first model's champion alone; a deployment served by
``deployments/serve.py`` runs when triggered through the Prefect API with other parameters, as the UI does.
"""

from __future__ import annotations

import json
import os
import re
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
                artifacts_root=str(tmp / "runs" / "artifacts"), batch_size=8,
                # 8 items cannot show non-inferiority within 2 points (identical answers on all 8 still allow a
                # 32-point loss: flows.noninferiority); wide margins let these tests reach promotion and export,
                # whose mechanics they check (tests/flows/test_policy.py checks the rule's numbers)
                margin=0.9, loss_margin=5.0)


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
    start = time.time()
    summary = compress_sweep(**params)
    ALL_TASK_RUNS[:] = task_runs_since(start)
    work = [r for r in ALL_TASK_RUNS if r.name.startswith(WORK_TASKS)]
    return params, summary, work


ALL_TASK_RUNS: list = []  # every task run of the first sweep (first_run fills it)


WORK_TASKS = ("decompose-layer", "evaluate", "export", "perplexity")  # cached by content: a rerun computes none


def test_sweep_registers_layer_and_composed_variants_with_whole_model_metrics(first_run):
    from mlflow import MlflowClient

    params, summary, _ = first_run
    uri = params["mlflow_tracking_uri"]
    registered = versions(uri)
    kinds = [row["kind"] for row in summary["variants"]]
    # 2 layers x 2 rank configs; one uniform plan per rank config (both exist on both layers); allocate: one plan
    # per distinct choice for the targets the 2 layers reach (up to 1.64x of this model's attention); no greedy
    # (not a default)
    assert kinds.count("layer") == 4 and kinds.count("uniform") == 2 and kinds.count("greedy") == 0
    assert kinds.count("allocate") >= 1 and "2x, 3x not reachable" in summary["allocation"]
    assert len(registered) == 1 + len(summary["variants"])  # + the baseline
    client = MlflowClient(uri)
    for mv in registered:
        run = client.get_run(mv.run_id)
        kind = run.data.tags["variant_kind"]
        metrics = run.data.metrics
        # a version carries what it is and its identity (a row of MLflow's model-versions table lists them all);
        # its numbers are its run's metrics, and a promoted one adds the tag "promotion" ("<rule>, <time>")
        plain = {k for k in mv.tags if k != "promotion"}
        assert plain == {"variant_name", "model_identity", "weights_sha256", "variant_key", "variant_key_sha256"}, plain
        assert "val_loss" in metrics
        if kind == "baseline":
            continue
        # every variant carries the whole model's numbers; composed ones edit 2 of 4 layers' attention
        before, after = metrics["whole_model.attention_params_before"], metrics["whole_model.attention_params_after"]
        assert after < before and metrics["whole_model.bytes_after"] < metrics["whole_model.bytes_before"]
        assert metrics["whole_model.total_params_before"] - metrics["whole_model.total_params_after"] == before - after
        if kind == "uniform":
            assert metrics["whole_model.n_layers_factorised"] == 2
        if kind == "layer":
            assert 0 < metrics["rel_error"] < 1 and metrics["compression_ratio"] > 1
            assert metrics["converged"] in (0.0, 1.0) and metrics["hooi_iterations"] >= 1


def test_decision_is_one_sentence_on_the_version_page_and_the_sweep_run(first_run):
    from mlflow import MlflowClient

    params, summary, _ = first_run
    client = MlflowClient(params["mlflow_tracking_uri"])
    decision = summary["decision"]
    sentence = decision["sentence"]
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert "compress rule" in sentence  # the default objective
    sweep_run = client.get_run(summary["sweep_run_id"])
    assert sweep_run.data.tags["mlflow.note.content"] == sentence
    assert sweep_run.data.params["objective"] == "compress"
    # the effective configuration is logged as a file that repeats the run (tensorllm sweep --config FILE)
    import mlflow.artifacts

    from flows.config import SweepConfig
    from flows.config_file import read_config_file
    from flows.validate import validate_sweep

    logged = mlflow.artifacts.download_artifacts(run_id=summary["sweep_run_id"], artifact_path="sweep_config.yaml",
                                                 tracking_uri=params["mlflow_tracking_uri"])
    assert validate_sweep(read_config_file(logged)) == validate_sweep(params)
    assert isinstance(validate_sweep(read_config_file(logged)), SweepConfig)
    aliases = client.get_registered_model(REGISTERED).aliases
    if decision["promote"]:
        assert int(aliases["champion"]) == decision["version"] == summary["champion_version"]
        assert client.get_model_version(REGISTERED, str(decision["version"])).description == sentence
    else:
        assert "champion" not in aliases


def test_generation_guard_and_transfer_are_recorded(first_run):
    """Issue 14: every variant's validation generation accuracy is compared with the base's (the policy's guard),
    and the promoted variant is evaluated on the transfer dataset (counterfact by default), recorded on its version."""
    from mlflow import MlflowClient

    params, summary, _ = first_run
    transfer = summary["transfer"]
    assert transfer["dataset"] == "counterfact"  # the default transfer_dataset, not a selection dataset
    if not summary["decision"]["promote"]:
        assert transfer["skipped"] == "nothing was promoted"
        return
    # the pick's validation generation accuracy was measured and is part of its evidence (flows.noninferiority)
    assert re.search(r"on its \d+ validation items: [^;]*; [^;]*; validation generation accuracy difference",
                     summary["decision"]["sentence"]), summary["decision"]["sentence"]
    assert transfer["version"] == summary["decision"]["version"] and transfer["n"] >= 1
    assert "correct" in transfer["paired"]  # generation accuracy, paired with the base on the same items
    version = MlflowClient(params["mlflow_tracking_uri"]).get_model_version(REGISTERED, str(transfer["version"]))
    metrics = MlflowClient(params["mlflow_tracking_uri"]).get_run(version.run_id).data.metrics
    diff = metrics["transfer.counterfact.test_vs_baseline.correct.accuracy_diff"]
    assert diff == pytest.approx(transfer["champion_accuracy"] - transfer["base_accuracy"])  # same items, same numbers
    assert "transfer.counterfact.test_vs_baseline.correct.variant_worse_p" in metrics


def test_task_runs_name_their_variant_and_the_flow_run_shows_the_decision(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, summary, work = first_run
    names = {r.name for r in work}
    # task runs say what they work on: the layer, the variant (layer and ranks, or composed), or the baseline
    assert {"decompose-layer-2", "decompose-layer-3", "evaluate-baseline-qa_wikidata-val"} <= names
    assert any(n.startswith("evaluate-layer002-mha-") and "-r16x8x2" in n for n in names)  # layer, grouping, ranks
    assert any(n.startswith("evaluate-uniform-") for n in names)
    assert "perplexity-baseline" in names and any(n.startswith("perplexity-uniform-") for n in names)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-variants"])))
    assert artifacts, "no 'sweep-variants' markdown artifact"
    latest = max(artifacts, key=lambda a: a.created)
    assert summary["decision"]["sentence"] in latest.data and "| variant |" in latest.data
    # the entry flow's own run carries the decision and links to the sub-flow run that did the work
    with get_client(sync_client=True) as client:
        (parent,) = [a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-decision"])))
            if a.flow_run_id != latest.flow_run_id and summary["decision"]["sentence"] in a.data]
        sub = client.read_flow_run(latest.flow_run_id)
    assert sub.parent_task_run_id is not None  # the variants table is the sub-flow's
    assert f"/runs/flow-run/{latest.flow_run_id})" in parent.data and "compress-sweep-on-ray" in parent.data
    # task run names are short, readable and path-free: no folder in them, none left at Prefect's hashed default
    every = [r.name for r in ALL_TASK_RUNS]
    assert every and not [n for n in every if "/" in n or len(n) > 80], every
    defaults = {"register-variant", "update-metrics", "current-champion", "apply-promotion", "log-sweep", "evaluate",
                "export-factorised", "paired-comparison", "paired-validation", "decompose-layer", "laser-ffn", "perplexity"}
    assert not [n for n in every if re.fullmatch(r"[a-z-]+-[0-9a-f]{3}", n) and n[:-4] in defaults], every
    assert {"champion-of-tiny-e2e", "sweep-report-tiny-e2e"} <= set(every)
    assert any(re.fullmatch(r"metrics-v\d+", n) for n in every)


def test_best_composed_model_is_exported_factorised_and_loads(first_run):
    import torch

    from tensorllm import load_compressed

    _, summary, _ = first_run
    best = summary["best_composed"]
    assert best is not None and best["kind"] in ("uniform", "allocate")
    export = best["export"]
    assert export["format"] == "factorised" and export["bytes"] < best["bytes_base"]
    assert {row["form"] for row in export["layers"]} == {"factorised"}
    assert "paired" in best  # its test split comparison with the base
    model, tokenizer = load_compressed(export["path"])
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    assert torch.isfinite(model(**ids).logits).all()


def test_second_run_recomputes_nothing_and_adds_no_version(first_run):
    from flows.compress_sweep import compress_sweep

    params, summary, first_work = first_run
    before = len(versions(params["mlflow_tracking_uri"]))
    start = time.time()
    again = compress_sweep(**params)
    assert len(versions(params["mlflow_tracking_uri"])) == before
    assert again["champion_version"] == summary["champion_version"]
    work = [r for r in task_runs_since(start) if r.name.startswith(WORK_TASKS)]
    assert len(work) == len(first_work)
    assert all(r.state.name == "Cached" for r in work), [(r.name, r.state.name) for r in work if r.state.name != "Cached"]


def test_noise_only_sweep_of_another_model_promotes_nothing_and_leaves_the_first_champion(
        first_run, other_tiny_llm, workdir):
    from mlflow import MlflowClient

    from flows.compress_sweep import compress_sweep
    from flows.config import default_registered_name

    params, summary, _ = first_run
    uri = params["mlflow_tracking_uri"]
    client = MlflowClient(uri)
    first_aliases = dict(client.get_registered_model(REGISTERED).aliases)
    # full ranks reproduce the weights: every variant equals the base (up to float rounding), and stores more
    other = dict(params, model=str(other_tiny_llm), layers=[3], ranks=[(1.0, 1.0, 1.0)], compose=[],
                 registered_model=None, objective="denoise", artifacts_root=str(workdir / "other" / "artifacts"))
    result = compress_sweep(**other)
    name = default_registered_name(str(other_tiny_llm))
    assert result["registered_model"] == name != REGISTERED
    assert result["champion_version"] is None and not result["decision"]["promote"]
    assert "champion" not in client.get_registered_model(name).aliases
    assert dict(client.get_registered_model(REGISTERED).aliases) == first_aliases


def test_deployment_run_triggered_through_the_api_completes(first_run, prefect_api, workdir):
    from prefect.deployments import run_deployment

    from flows.runtime.services import stop_process

    params, _, _ = first_run
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
                    client.read_deployment_by_name("compress-sweep/test-served-on-demand")
                break
            except Exception:
                assert time.time() < deadline and server.poll() is None, (workdir / "serve.log").read_text()[-3000:]
                time.sleep(2)
        # other parameters than the deployment's defaults, as a user would enter them in the UI form
        flow_run = run_deployment("compress-sweep/test-served-on-demand", parameters={"layers": [3]}, timeout=900)
        assert flow_run.state.is_completed(), (flow_run.state, (workdir / "serve.log").read_text()[-3000:])
        assert flow_run.parameters["layers"] == [3]
    finally:
        stop_process(server, timeout=60)
        log.close()
