"""A small real sweep (SmolLM2-135M, real Prefect, Ray and MLflow) whose `allocate` composition registers one
variant per reachable target, tagged with its target and achieved ratio, and reports the unreachable one.

The grid: the last 3 of 30 layers at (64, 32, 4) and (32, 16, 2), 10.1x and 27.9x per layer as exported. At
their smallest the 3 layers give 30 / (27 + 3 / 27.9) = 1.107x of the whole model's attention: 1.05x and 1.1x
are reachable, 1.25x is not.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.real_model]
REGISTERED = "smollm2-allocate"
TARGETS = [1.05, 1.1, 1.25]


@pytest.fixture(scope="module")
def swept(prefect_api, tmp_path_factory):
    from flows.compress_sweep import compress_sweep

    tmp = tmp_path_factory.mktemp("allocate")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    summary = compress_sweep(model="smollm2-135m", layers="last 3", ranks=[(64, 32, 4), (32, 16, 2)],
                             datasets=["qa_wikidata"], val_limit=40, test_limit=40, generate=False, test_top_k=1,
                             transfer_dataset=None, compose=["uniform", "allocate"], targets=TARGETS,
                             registered_model=REGISTERED, mlflow_tracking_uri=uri, export_best=False,
                             artifacts_root=str(tmp / "runs" / "artifacts"), batch_size=8)
    return uri, summary


def test_allocated_variants_are_registered_with_their_targets(swept):
    from mlflow import MlflowClient

    uri, summary = swept
    client = MlflowClient(uri)
    allocated = [mv for mv in client.search_model_versions(f"name='{REGISTERED}'")
                 if client.get_run(mv.run_id).data.tags.get("variant_kind") == "allocate"]
    assert 1 <= len(allocated) <= 2  # 1.05x and 1.1x: one variant each, or one if the same choice serves both
    served = []
    for mv in allocated:
        run = client.get_run(mv.run_id)
        metrics, tags = run.data.metrics, run.data.tags
        target = metrics["allocation.target_ratio"]
        served += tags["allocation.targets"].split(",")
        assert tags["allocation.target_ratio"] == f"{target:g}" and target in (1.05, 1.1)
        # the allocation's own count is the export's (tensorllm.composed.whole_model_size), and meets the target
        achieved = metrics["whole_model.attention_compression_ratio"]
        assert metrics["allocation.achieved_ratio"] == pytest.approx(achieved, rel=1e-9)
        assert target <= achieved <= 1.107  # at most the swept layers' reach
        assert metrics["whole_model.n_layers_factorised"] >= 2  # one layer gives at most 1.035x
        assert "val_top1_accuracy" in metrics and "val_loss" in metrics  # evaluated like every variant
    assert sorted(served) == ["1.05x", "1.1x"]  # every reachable target has its variant


def test_the_unreachable_target_is_one_summary_line(swept):
    _, summary = swept
    note = summary["allocation"]
    assert "\n" not in note and "target 1.25x not reachable" in note
    assert "at most 1.107x of the whole model's attention" in note
    rows = [r for r in summary["variants"] if r["kind"] == "allocate"]
    assert rows and all(r["target_ratio"] in (1.05, 1.1) for r in rows)  # the front plot's labels
    assert {r["kind"] for r in summary["variants"]} >= {"layer", "uniform", "allocate"}
