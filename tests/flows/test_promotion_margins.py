"""The loss margin, the relative accuracy margin and the exported composition under the promotion rule.

A variant that gains top-1 but loses too much loss (beyond ``loss_margin`` nats) is never promoted, as a
single layer, as a composition to export, or under ``denoise``; one within both margins is. A relative
margin (a fraction of the base's accuracy) is used where it is stricter, and the sentence shows both forms.
Paired comparisons come from the real compare_paired on constructed per-item rows.
"""

from __future__ import annotations

import pytest

from flows.noninferiority import Margins
from flows.policy import Candidate, decide, next_generation_check
from tensorllm.evaluation import compare_paired

N = 1000


def rows_pair(b: int, c: int, loss_shift: float, base_right: int = 86, column: str = "top1_correct",
              loss_noise: float = 0.2) -> dict:
    """Base vs variant on N items: ``b`` items only the base gets right, ``c`` only the variant, ``base_right``
    items the base gets right in all; variant losses = base's + ``loss_shift`` +- ``loss_noise`` (alternating)."""
    base_ok = [i < base_right for i in range(N)]
    var_ok = list(base_ok)
    for i in range(b):
        var_ok[i] = False  # among the base's right answers
    for i in range(c):
        var_ok[N - 1 - i] = True  # among its wrong ones
    base = [{"id": f"q{i}", column: ok, "loss": 3.0} for i, ok in enumerate(base_ok)]
    var = [{"id": f"q{i}", column: ok, "loss": 3.0 + loss_shift + (loss_noise if i % 2 else -loss_noise)}
           for i, ok in enumerate(var_ok)]
    return compare_paired(base, var, metric=column).to_dict()


BASE = Candidate(1, "baseline", 0.086, 3.0)


def cand(version, pv, compression=6.3, kind="layer", generation=None) -> Candidate:
    c = Candidate(version, f"v{version}", pv["variant_accuracy"], 3.0 + pv["loss_diff"], compression=compression,
                  kind=kind, paired_val=pv)
    c.guard_val = generation
    return c


def test_a_top1_gain_that_costs_loss_beyond_the_margin_is_never_promoted_or_exported():
    # +3 points top-1 (b=5, c=35) but +0.39 nats of loss (issue 25's champion): the loss interval ~+0.38..+0.40
    gains_top1 = rows_pair(5, 35, loss_shift=0.39)
    assert gains_top1["accuracy_diff"] == pytest.approx(0.03) and gains_top1["loss_diff"] == pytest.approx(0.39)
    layer = cand(2, gains_top1, compression=217.3)
    composed = cand(3, gains_top1, compression=1.3, kind="composed")
    for objective in ("compress", "denoise"):
        d = decide([layer, composed], BASE, None, objective, "top1_accuracy")
        assert not d.promote, d.sentence
        export = decide([layer, composed], BASE, None, objective, "top1_accuracy", kinds=("composed",))
        assert not export.promote, export.sentence
    d = decide([layer, composed], BASE, None, "compress", "top1_accuracy")
    assert "not within the margin on loss" in d.sentence and "loss 0.05 nats" in d.sentence
    # it would pass on top-1 alone: a loss margin of 0.5 nats lets it through (the loss test is what stops it)
    assert decide([layer, composed], BASE, None, "compress", "top1_accuracy", loss_margin=0.5).version == 3


def test_a_variant_within_both_margins_is_promoted_and_exported():
    # -0.2 points top-1 (b=6, c=4) and +0.01 nats (interval ~-0.002..+0.022, inside 0.05)
    fine = rows_pair(6, 4, loss_shift=0.01)
    layer = cand(2, fine, compression=19.4)
    composed = cand(3, fine, compression=1.2, kind="composed")
    d = decide([layer, composed], BASE, None, "compress", "top1_accuracy")
    assert d.promote and d.version == 3  # composed first
    export = decide([layer, composed], BASE, None, "compress", "top1_accuracy", kinds=("composed",))
    assert export.promote and export.version == 3
    assert "loss difference +0.010" in d.sentence


def test_no_qualifying_composition_exports_nothing_and_says_why():
    fine_layer = cand(2, rows_pair(6, 4, loss_shift=0.01), compression=19.4)
    bad_composed = cand(3, rows_pair(5, 35, loss_shift=0.39), compression=1.3, kind="composed")
    export = decide([fine_layer, bad_composed], BASE, None, "compress", "top1_accuracy", kinds=("composed",))
    assert not export.promote
    assert "no composed variant is shown non-inferior" in export.sentence
    assert "the closest, v3 (v3)" in export.sentence and "not within the margin on loss" in export.sentence
    # the champion is still the single-layer variant
    assert decide([fine_layer, bad_composed], BASE, None, "compress", "top1_accuracy").version == 2


def test_a_relative_margin_applies_where_stricter_and_the_sentence_shows_both():
    # base top-1 8.6%; -1.0 points (b=10, c=0): interval about -1.6..-0.4, inside 2 points, beyond 10% of 8.6%
    worse = rows_pair(10, 0, loss_shift=0.0, loss_noise=0.0)
    v = cand(2, worse, compression=6.3)
    assert decide([v], BASE, None, "compress", "top1_accuracy").promote
    d = decide([v], BASE, None, "compress", "top1_accuracy", relative_margin=0.1)
    assert not d.promote
    assert "top-1 accuracy 0.86 points = 10% of the base's 8.6% (stricter than 2 points)" in d.sentence
    d = decide([v], BASE, None, "compress", "top1_accuracy")
    assert "top-1 accuracy 2 points = 23% of the base's 8.6%" in d.sentence  # the points, as a share of the base
    assert Margins(0.02, 0.5).for_accuracy(0.086) == 0.02  # 4.3 points: the 2-point margin is stricter
    with pytest.raises(ValueError, match=r"relative_margin must be in \(0, 1\]"):
        Margins(0.02, 0.0)


def test_generation_is_required_before_promotion_and_measured_only_where_it_can_change_the_decision():
    fine = rows_pair(6, 4, loss_shift=0.01)
    bad = rows_pair(60, 0, loss_shift=0.0)  # -6 points: no generation result could make it non-inferior
    a, b, c = cand(2, fine, compression=19.4), cand(3, fine, compression=6.3), cand(4, bad, compression=217.3)
    args = (BASE, None, "compress", "top1_accuracy")
    d = decide([a, b, c], *args, require_generation=True)
    assert not d.promote  # no variant has shown its generation accuracy yet
    assert next_generation_check([a, b, c], *args).version == 2  # the one the rule would take first: 19.4x
    a.guard_val = rows_pair(40, 0, 0.0, column="correct", base_right=200)  # generation -4 points: out
    assert next_generation_check([a, b, c], *args).version == 3  # so the next one
    b.guard_val = rows_pair(3, 3, 0.0, column="correct", base_right=200)
    assert next_generation_check([a, b, c], *args) is None  # nothing left that could change the decision
    d = decide([a, b, c], *args, require_generation=True)
    assert d.promote and d.version == 3 and "validation generation accuracy difference +0.0 points" in d.sentence
