"""The sweep's perplexity metrics (flows.perplexity): their names and values from the library's paired comparison,
the summary columns that show a composed variant which keeps QA but wrecks language modelling, and the budget's
checks. Synthetic per-window losses: the numbers are checked against exp of hand-computed means."""

from __future__ import annotations

import math

import pytest

from flows.config import SweepConfig
from flows.perplexity import BASE_METRICS, RATIO_METRICS, SweepPerplexity, result_metrics, summary_fields, variant_metrics
from flows.records import baseline_variant, markdown_table, summary_row
from flows.validate import SweepInputError, build_config
from tensorllm.evaluation.perplexity import PerplexityResult, t_interval


def result(nll: list[float], tokens_digest: str = "same") -> PerplexityResult:
    mean, (lo, hi) = t_interval(nll)
    return PerplexityResult(corpus="austen/persuasion.txt", corpus_digest="c", tokens_digest=tokens_digest, window=512,
                            n_windows=len(nll), n_tokens=512 * len(nll), scored_tokens=511 * len(nll), mean_nll=mean,
                            mean_nll_ci=(lo, hi), perplexity=math.exp(mean), perplexity_ci=(math.exp(lo), math.exp(hi)),
                            window_nll=list(nll), dtype="float32", device="cpu", seconds=1.0)


BASE = result([3.0, 3.2, 2.8, 3.1])


def test_base_metrics_are_the_perplexity_and_its_interval():
    metrics = result_metrics(BASE)
    assert set(metrics) == set(BASE_METRICS)
    assert metrics["perplexity"] == pytest.approx(math.exp(3.025), rel=1e-12)  # exp of the mean of the 4 windows
    assert metrics["perplexity_ci_low"] < metrics["perplexity"] < metrics["perplexity_ci_high"]


def test_a_variant_gets_its_paired_ratio_and_the_margin_verdict():
    close = variant_metrics(BASE, result([3.01, 3.21, 2.81, 3.11]))  # +0.01 nats on every window: ratio e^0.01
    assert set(close) == set(BASE_METRICS) | set(RATIO_METRICS)
    assert close["perplexity_ratio"] == pytest.approx(math.exp(0.01), rel=1e-9)
    assert close["perplexity_within_margin"] == 1.0  # +1.0%, a constant difference: the interval is the point
    wrecked = variant_metrics(BASE, result([3.5, 3.6, 3.4, 3.7]))  # +0.525 nats: perplexity x1.690
    assert wrecked["perplexity_ratio"] == pytest.approx(math.exp(0.525), rel=1e-9)
    assert wrecked["perplexity_ratio_ci_low"] > 1.1 and wrecked["perplexity_within_margin"] == 0.0


def test_results_on_other_tokens_are_not_paired():
    with pytest.raises(ValueError, match="not on the same tokens"):
        variant_metrics(BASE, result([3.0, 3.0, 3.0, 3.0], tokens_digest="other"))


def test_a_wrecked_composed_variant_shows_in_the_summary_row_and_table():
    v = baseline_variant()
    v.extra_metrics.update(variant_metrics(BASE, result([3.5, 3.6, 3.4, 3.7])))
    v.val = {"qa_wikidata": {"top1_accuracy": 0.1, "loss": 5.0}}
    row = summary_row(v, "top1_accuracy")
    assert row["perplexity_within_margin"] is False and row["perplexity_ratio"] == pytest.approx(math.exp(0.525))
    assert "| 1.690 (over) |" in markdown_table([row], "top1_accuracy")
    assert summary_fields({}) == {}  # not measured: no columns


def test_the_budget_is_checked_before_anything_starts():
    assert SweepConfig().perplexity_tokens == 4096  # the default the description argues
    assert SweepConfig(perplexity_tokens=0).perplexity_tokens == 0
    with pytest.raises(SweepInputError, match=r"^perplexity_tokens: must be 0 \(off\) or at least 1024 .*got 1000$"):
        build_config({"perplexity_tokens": 1000})  # one window: no interval
    with pytest.raises(SweepInputError, match=r"^perplexity_tokens: must be >= 0 \(got -8\)"):
        build_config({"perplexity_tokens": -8})


def test_off_means_no_task_no_setting_no_summary():
    off = SweepPerplexity(SweepConfig(perplexity_tokens=0), "identity")
    assert off.submit(baseline_variant()) is None and off.settings() == {} and off.summary() is None
    v = baseline_variant()
    off.record([v])
    assert v.extra_metrics == {}
    on = SweepPerplexity(SweepConfig(perplexity_tokens=1024), "identity")
    assert on.settings()["perplexity"]["tokens"] == 1024 and len(on.settings()["perplexity"]["corpus"]) == 64
