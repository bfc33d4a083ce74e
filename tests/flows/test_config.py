"""Sweep parameters: validation with clear errors, layer and rank resolution."""

import pytest
from pydantic import ValidationError

from flows.config import SweepConfig, code_version, stable_key


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
    assert (fast.generate_for("val"), fast.generate_for("test")) == (False, True)  # report only
    paper = SweepConfig(selection_metric="accuracy", generate=False)
    assert (paper.generate_for("val"), paper.generate_for("test")) == (True, False)  # selection needs it


def test_keys_are_stable_and_code_version_is_content_based():
    assert stable_key("a", 1, {"x": [1, 2]}) == stable_key("a", 1, {"x": [1, 2]})
    assert stable_key("a", 1) != stable_key("a", 2)
    assert code_version() == code_version() and code_version().startswith("0.")
