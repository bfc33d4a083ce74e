"""Registered variants are content-addressed: sweeps with other weights add versions, reruns add none.

Real services (a Prefect API, a local Ray via prefect-ray, an MLflow sqlite store in tmp_path) and one
store: a default sweep, then sweeps that change the weights (``balance="none"``, ``fit="activations"``,
``grouping="kv"``), a sweep that names the detected layout explicitly (``layout="llama"``: the same weights)
and a rerun of the first. The variant names of the first four sweeps coincide (a name leaves out balance,
fit and calibration), which once made a later sweep reuse and overwrite the earlier versions. Kept small:
one layer of the tiny Llama, two rank configurations, 8 items, no generation.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REGISTERED = "tiny-identity"


def snapshot(uri: str) -> dict[int, dict]:
    """version -> {metrics of its run, its weights tag, its variant name}."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return {int(mv.version): {"metrics": dict(client.get_run(mv.run_id).data.metrics),
                              "weights": mv.tags.get("weights_sha256"), "name": mv.tags.get("variant_name")}
            for mv in client.search_model_versions(f"name='{REGISTERED}'")}


def evaluate_runs_since(start: float) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    return [r for r in runs if r.name.startswith("evaluate-") and r.expected_start_time
            and r.expected_start_time.timestamp() >= start]


@pytest.fixture(scope="module")
def sweeps(prefect_api, tiny_llm, tmp_path_factory):
    """Run the sweeps in order on one store; (params, {label: (summary, versions before, versions after)})."""
    from flows.compress_sweep import compress_sweep

    tmp = tmp_path_factory.mktemp("identity")
    params = dict(model=str(tiny_llm), datasets=["qa_wikidata"], layers=[3], ranks=[(16, 8, 2), (8, 4, 2)],
                  val_limit=8, test_limit=8, generate=False, test_top_k=1, transfer_dataset=None, compose=[],
                  export_best=False, registered_model=REGISTERED, batch_size=8,
                  mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifacts_root=str(tmp / "runs" / "artifacts"))
    options = [("default", {}), ("balance none", {"balance": "none"}),
               ("fit activations", {"fit": "activations", "calibration_prompts": 4}),
               ("grouping kv", {"grouping": "kv"}), ("layout llama", {"layout": "llama"}), ("rerun", {})]
    out = {}
    for label, extra in options:
        before, start = snapshot(params["mlflow_tracking_uri"]), time.time()
        summary = compress_sweep(**params, **extra)
        out[label] = (summary, before, snapshot(params["mlflow_tracking_uri"]), evaluate_runs_since(start))
    return params, out


def _variant_versions(summary: dict) -> set[int]:
    return {row["version"] for row in summary["variants"]}


def test_options_that_change_the_weights_register_new_versions(sweeps):
    _, out = sweeps
    seen: set[int] = set()
    for label in ("default", "balance none", "fit activations", "grouping kv"):
        summary, before, after, _ = out[label]
        versions = _variant_versions(summary)
        assert len(versions) == 2, (label, summary["variants"])  # two rank configurations, one layer
        assert not versions & seen, f"{label}: reused versions {versions & seen} of another sweep's weights"
        assert set(after) - set(before) >= versions  # new versions...
        names = {row["name"] for row in summary["variants"]}
        assert names == {"layer003-mha-" + ("kv" if label == "grouping kv" else "replicate") + r for r in
                         ("-r16x8x2", "-r8x4x2")}  # ...under names that repeat (labels, not keys)
        seen |= versions
    # the baseline's weights and evaluation never change: one baseline version for every sweep
    assert len({out[label][0]["baseline"]["version"] for label in out}) == 1
    weights = [v["weights"] for v in out["grouping kv"][2].values()]
    assert len(weights) == len(set(weights)) == 1 + 4 * 2  # the baseline and 8 distinct layer variants


def test_same_weights_reuse_their_versions_and_no_sweep_touches_older_metrics(sweeps):
    _, out = sweeps
    default_versions = _variant_versions(out["default"][0])
    for label in ("layout llama", "rerun"):  # the detected layout named explicitly: the same weights
        summary, before, after, _ = out[label]
        assert set(after) == set(before), f"{label} registered {sorted(set(after) - set(before))}"
        assert _variant_versions(summary) == default_versions
    for label, (_, before, after, _) in out.items():
        for version, old in before.items():
            assert after[version]["metrics"] == old["metrics"], (label, version, old["name"])


def test_each_evaluation_writes_the_folder_named_by_its_cache_key(sweeps):
    """A cached evaluation points at the examples.jsonl that its own computation wrote: Prefect stores the
    result under the cache key (the storage file's name), and the result's folder has that same name."""
    _, out = sweeps
    _, _, _, runs = out["default"]
    assert len(runs) >= 3  # the baseline and 2 variants on validation, and the tested ones
    for run in runs:
        key = Path(run.state.data.storage_key).name
        result = run.state.result()
        assert Path(result["examples"]).parent.name == result["key"] == key, run.name
        assert Path(result["examples"]).is_file()


def test_the_registry_refuses_a_known_key_for_other_weights(sweeps):
    from mlflow import MlflowClient

    from tensorllm.registry import Registry, VariantRecord

    params, out = sweeps
    uri = params["mlflow_tracking_uri"]
    first, second = sorted(_variant_versions(out["default"][0]))
    client = MlflowClient(uri)
    a, b = (client.get_model_version(REGISTERED, str(v)) for v in (first, second))
    b_artifacts = Registry(uri).show(f"{REGISTERED}/{second}")["artifacts"]
    record = VariantRecord(key=a.tags["variant_key"], name="impostor", base_model=params["model"],
                           artifacts=[x["source_path"] for x in b_artifacts],
                           tags={"model_identity": a.tags["model_identity"]})
    with pytest.raises(ValueError, match=rf"already names {REGISTERED}/{first} .*whose weights differ"):
        Registry(uri).register_variant(record, REGISTERED)
    assert Registry(uri).register_variant(VariantRecord(**{**record.__dict__, "key": b.tags["variant_key"]}),
                                          REGISTERED) == second  # its own key: the same version
