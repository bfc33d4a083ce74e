"""The promotion policy (pure): best by validation metric, ties by loss, must beat baseline and champion."""

from flows.policy import Candidate, best_candidates, comparable_champion, decide, decision_tags


def cand(version, metric, loss, name=None):
    return Candidate(version=version, name=name or f"v{version}", val_metric=metric, val_loss=loss)


BASELINE = cand(1, 0.30, 2.0, "baseline")


def test_best_variant_beating_baseline_is_promoted():
    decision = decide([cand(2, 0.31, 2.1), cand(3, 0.35, 2.5), cand(4, 0.20, 1.0)], BASELINE, None, "accuracy")
    assert decision.promote and decision.version == 3
    assert "0.3500" in decision.reason


def test_ties_on_the_metric_are_broken_by_lower_validation_loss():
    decision = decide([cand(2, 0.35, 2.4), cand(3, 0.35, 2.2)], BASELINE, None, "accuracy")
    assert decision.version == 3


def test_no_promotion_when_no_variant_beats_the_baseline():
    decision = decide([cand(2, 0.29, 1.0), cand(3, 0.30, 2.5)], BASELINE, None, "accuracy")
    assert not decision.promote
    assert "does not beat the baseline" in decision.reason


def test_equal_accuracy_and_lower_loss_beats_the_baseline():
    # the ordering (accuracy, then loss) is the same one that ranks the variants
    assert decide([cand(2, 0.30, 1.9)], BASELINE, None, "accuracy").promote


def test_current_champion_must_be_beaten():
    current = cand(7, 0.40, 2.0)
    decision = decide([cand(8, 0.35, 1.0)], BASELINE, current, "accuracy")
    assert not decision.promote and "current champion v7" in decision.reason
    assert decide([cand(9, 0.41, 3.0)], BASELINE, current, "accuracy").version == 9


def test_rerun_keeps_the_same_champion():
    current = cand(3, 0.35, 2.5)
    decision = decide([cand(2, 0.31, 2.1), cand(3, 0.35, 2.5)], BASELINE, current, "accuracy")
    assert decision.promote and decision.version == 3 and "already champion" in decision.reason


def test_loss_metric_prefers_lower_values():
    base = cand(1, 2.0, 2.0)
    best = best_candidates([cand(2, 1.5, 1.5), cand(3, 1.8, 1.8)], "loss", 1)[0]
    assert best.version == 2
    assert decide([cand(2, 1.5, 1.5)], base, None, "loss").promote


def test_champion_is_comparable_only_with_the_same_settings():
    settings = {"datasets": ["fever"], "val_limit": 100}
    info = {"version": "5", "tags": {"datasets": "fever", "val_limit": "100", "selection_metric": "accuracy",
                                     "variant_name": "x"},
            "metrics": {"val_accuracy": 0.6, "val_loss": 0.7}}
    assert comparable_champion(info, settings, "accuracy") == Candidate(5, "x", 0.6, 0.7)
    assert comparable_champion(info, {**settings, "val_limit": 50}, "accuracy") is None
    assert comparable_champion(info, settings, "loss") is None  # selected by another metric
    assert comparable_champion(None, settings, "accuracy") is None


def test_decision_tags_carry_the_paired_comparison():
    tags = decision_tags(decide([cand(2, 0.5, 1.0)], BASELINE, None, "accuracy"),
                         {"fever": {"correct": {"accuracy_diff": 0.02, "mcnemar_p": 0.3}}})
    assert tags["promotion.decision"] == "promote"
    assert tags["promotion.test_vs_baseline.fever.correct.mcnemar_p"] == "0.3"
