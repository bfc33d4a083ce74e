"""The promotion policy (pure): ``denoise`` needs a paired gain that survives Holm, ``compress`` picks the most
compressed non-inferior variant; the comparable champion is a bar to clear; one sentence says why.

Paired comparisons are built with the real :func:`compare_paired` from synthetic per-item rows, so the
numbers the policy reads are the ones the flow logs.
"""

import re

import pytest

from flows.policy import (Candidate, Decision, best_candidates, comparable_champion, decide, decision_tags, guard_stopped,
                          non_inferior, shortlist)
from tensorllm.evaluation import compare_paired

N = 1000  # validation items of every paired comparison below


def paired(b: int, c: int, n: int = N, loss_shift: float = 0.0, metric: str = "top1_correct") -> dict:
    """Variant vs base on ``n`` items: ``b`` only the base gets right, ``c`` only the variant; of the rest half
    both get right and half both wrong. Variant losses are the base's plus ``loss_shift`` +- 0.05 (alternating)."""
    both = (n - b - c) // 2
    base_ok = [True] * b + [False] * c + [True] * both + [False] * (n - b - c - both)
    variant_ok = [False] * b + [True] * c + [True] * both + [False] * (n - b - c - both)
    base_loss = [2.0] * n
    variant_loss = [2.0 + loss_shift + (0.05 if i % 2 else -0.05) * (loss_shift != 0) for i in range(n)]

    def rows(ok, losses):
        return [{"id": f"q{i}", "correct": x, "top1_correct": x, "loss": l} for i, (x, l) in enumerate(zip(ok, losses))]

    return compare_paired(rows(base_ok, base_loss), rows(variant_ok, variant_loss), metric=metric).to_dict()


def cand(version, metric, loss=2.0, compression=1.0, pv=None, kind="layer", name=None) -> Candidate:
    return Candidate(version=version, name=name or f"v{version}", val_metric=metric, val_loss=loss,
                     compression=compression, paired_val=pv, kind=kind)


BASELINE = cand(1, 0.40, 2.0, name="baseline")
NOISE = paired(5, 5)  # as many items won as lost: McNemar p = 1, difference 0
IDENTICAL = paired(0, 0)  # the variant answers every item as the base does


def one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text and "\n" not in text


# ---- denoise --------------------------------------------------------------------------------------------

def test_denoise_promotes_a_significant_gain():
    # b=5, c=40 of 1000: +3.5 points, McNemar p = 7.9e-08; x4 comparisons (Holm) is still far below 0.05
    gain = cand(7, 0.435, pv=paired(5, 40), name="layer029-r6x6x2")
    others = [cand(v, 0.40, pv=NOISE) for v in (2, 3, 4)]
    d = decide([gain, *others], BASELINE, None, "denoise", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.promote and d.version == 7 and d.rule == "denoise"
    assert one_sentence(d.sentence)
    for part in ("Promoted v7 (layer029-r6x6x2) under the denoise rule", "43.5% vs the base's 40.0%",
                 "1000 validation items", "top-1 accuracy difference +3.5 points", "95% CI", "McNemar p=7.9e-08",
                 "Holm-adjusted p=3.2e-07 < alpha 0.05 over 4 comparisons"):  # 4 x 7.9e-08 = 3.2e-07
        assert part in d.sentence, (part, d.sentence)


def test_denoise_refuses_a_small_gain_after_the_holm_correction():
    # b=10, c=23: +1.3 points, McNemar p = 0.035 < 0.05 alone, but it is the best of 4: Holm 4 x 0.035 = 0.14
    small = cand(5, 0.413, pv=paired(10, 23))
    alone = decide([small], BASELINE, None, "denoise", "top1_accuracy", alpha=0.05, margin=0.02)
    assert alone.promote  # one comparison: nothing to correct, 0.035 < 0.05
    crowd = [small, *(cand(v, 0.40, pv=NOISE) for v in (2, 3, 4))]
    d = decide(crowd, BASELINE, None, "denoise", "top1_accuracy", alpha=0.05, margin=0.02)
    assert not d.promote and d.version == 5
    assert "not a significant gain" in d.sentence and "Holm-adjusted p=0.14 >= alpha 0.05 over 4 comparisons" in d.sentence


def test_denoise_ranks_by_metric_and_breaks_ties_by_lower_loss():
    a = cand(2, 0.435, loss=2.4, pv=paired(5, 40))
    b = cand(3, 0.435, loss=2.2, pv=paired(5, 40))  # same accuracy, lower loss: the tie-break picks it
    d = decide([a, b], BASELINE, None, "denoise", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.version == 3
    assert "tied on top-1 accuracy with v2 (v2) and won on lower validation loss 2.200 vs 2.400" in d.sentence


def test_denoise_with_loss_uses_the_normal_test_of_the_loss_difference():
    # losses 0.1 lower on each item (+-0.05): mean -0.1, a 95% interval about -0.103..-0.097; p ~ 0 after Holm
    better = cand(4, 1.9, loss=1.9, pv=paired(0, 0, loss_shift=-0.1))
    d = decide([better, cand(2, 2.0, pv=NOISE)], cand(1, 2.0, name="baseline"), None, "denoise", "loss", 0.05, 0.02)
    assert d.promote and d.version == 4
    assert "loss difference -0.100" in d.sentence
    assert "normal p<1e-15" in d.sentence  # z = 0.1 / 0.0016 ~ 63 standard errors: below what a double resolves
    worse = cand(5, 2.1, loss=2.1, pv=paired(0, 0, loss_shift=+0.1))
    assert not decide([worse], cand(1, 2.0), None, "denoise", "loss", 0.05, 0.02).promote  # a loss rise is no gain


def test_the_current_champion_is_a_bar_under_denoise():
    gain = cand(7, 0.435, pv=paired(5, 40))
    d = decide([gain], BASELINE, cand(3, 0.45), "denoise", "top1_accuracy", 0.05, 0.02)  # champion: 45.0% > 43.5%
    assert not d.promote and "does not beat the current champion v3 at 45.0%" in d.sentence
    d = decide([gain], BASELINE, cand(3, 0.42), "denoise", "top1_accuracy", 0.05, 0.02)  # champion: 42.0% < 43.5%
    assert d.promote and d.version == 7 and "beats the current champion v3 at 42.0%" in d.sentence
    d = decide([gain], BASELINE, gain, "denoise", "top1_accuracy", 0.05, 0.02)  # a rerun finds it again
    assert d.promote and d.version == 7 and d.sentence.startswith("Kept v7 (v7) as champion")


def test_a_best_variant_without_a_paired_comparison_is_not_promoted():
    d = decide([cand(2, 0.9)], BASELINE, None, "denoise", "top1_accuracy", 0.05, 0.02)
    assert not d.promote and "has no paired validation comparison" in d.sentence


# ---- compress -------------------------------------------------------------------------------------------

def test_compress_picks_the_highest_non_inferior_compression():
    # b=12, c=8: -0.4 points, 95% CI about -1.3..+0.5: within the 2-point margin
    # b=60, c=10: -5.0 points, 95% CI about -6.6..-3.4: inferior, even though it compresses most
    candidates = [cand(2, 0.396, compression=2.3, pv=paired(12, 8)),
                  cand(3, 0.396, compression=19.4, pv=paired(12, 8), name="layer028-r58x16x4"),
                  cand(4, 0.35, compression=217.3, pv=paired(60, 10))]
    d = decide(candidates, BASELINE, None, "compress", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.promote and d.version == 3 and d.rule == "compress"
    assert one_sentence(d.sentence)
    for part in ("Promoted v3 (layer028-r58x16x4) under the compress rule",
                 "highest MHA compression of the edited layer 19.4x among 2 of 3 variants shown non-inferior to the base",
                 "margins: top-1 accuracy 2 points", "loss 0.05 nats",
                 "Holm over the 3 compressing variants, family-wise one-sided error 2.5% (alpha 0.05)",
                 "on its 1000 validation items", "top-1 accuracy difference -0.4 points, 95% score CI -1.4..+0.5",
                 "validation top-1 accuracy 39.6% vs the base's 40.0%"):
        assert part in d.sentence, (part, d.sentence)


def test_compress_tie_goes_to_the_higher_metric_then_the_lower_loss():
    a = cand(3, 0.396, compression=19.4, pv=paired(12, 8))
    b = cand(5, 0.398, compression=19.4 + 1e-12, pv=paired(12, 8))  # equal within 1e-9; higher accuracy
    d = decide([a, b], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert d.version == 5
    assert "tied at 19.4x with v3 (v3) and was chosen for its higher validation top-1 accuracy 39.8% vs 39.6%" in d.sentence
    c = cand(6, 0.396, loss=1.9, compression=19.4, pv=paired(12, 8))  # same accuracy as a, lower loss
    d = decide([a, c], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert d.version == 6 and "chosen for its lower validation loss 1.900 vs 2.000" in d.sentence


def test_compress_margin_decides_non_inferiority():
    # b=30, c=10: -2.0 points, 95% CI lower end about -3.2: inferior at a 2-point margin, fine at 4 points
    v = cand(2, 0.38, compression=6.3, pv=paired(30, 10))
    assert not non_inferior(v, "top1_accuracy", 0.02) and non_inferior(v, "top1_accuracy", 0.04)
    d = decide([v], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert not d.promote and d.version == 2
    assert "the only variant is not shown non-inferior" in d.sentence and "the closest, v2 (v2) at 6.3x" in d.sentence
    assert "not within the margin on top-1 accuracy" in d.sentence
    assert decide([v], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.04).promote


def test_compress_with_loss_uses_the_upper_end_of_the_loss_interval():
    slightly_worse = cand(2, 2.01, loss=2.01, compression=6.3, pv=paired(0, 0, loss_shift=0.01))  # CI ~ +0.007..+0.013
    assert non_inferior(slightly_worse, "loss", 0.02) and not non_inferior(slightly_worse, "loss", 0.005)
    d = decide([slightly_worse], cand(1, 2.0), None, "compress", "loss", 0.05, 0.02)
    assert d.promote and "loss difference +0.010" in d.sentence and "margins: loss 0.02 nats" in d.sentence


def test_composed_variants_rank_before_single_layer_ratios():
    # 1.9x of the whole model's attention vs 217x of one layer: not the same scale
    composed = cand(9, 0.396, compression=1.9, kind="composed", pv=paired(12, 8), name="uniform 0.5,0.5,0.5 on layers 26-29")
    layer = cand(4, 0.396, compression=217.3, pv=paired(12, 8))
    d = decide([layer, composed], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert d.version == 9
    assert "highest whole-model attention compression 1.9x among 2 of 2 variants" in d.sentence
    assert "composed variants rank before single-layer ones" in d.sentence
    d = decide([composed], BASELINE, cand(8, 0.40, compression=30.0), "compress", "top1_accuracy", 0.05, 0.02)
    assert d.promote and "outranks the current champion v8, a single-layer one" in d.sentence  # 1.9x whole > 30x layer


def test_the_current_champion_is_a_bar_under_compress():
    chosen = cand(3, 0.396, compression=19.4, pv=paired(12, 8))
    d = decide([chosen], BASELINE, cand(8, 0.40, compression=30.0), "compress", "top1_accuracy", 0.05, 0.02)
    assert not d.promote and "does not beat the current champion v8" in d.sentence  # 19.4x < 30x
    d = decide([chosen], BASELINE, cand(8, 0.40, compression=10.0), "compress", "top1_accuracy", 0.05, 0.02)
    assert d.promote and "compresses more than the current champion v8 (10.0x)" in d.sentence
    d = decide([chosen], BASELINE, cand(8, 0.39, compression=19.4), "compress", "top1_accuracy", 0.05, 0.02)
    assert d.promote and "ties the current champion v8 at 19.4x with a better validation top-1 accuracy" in d.sentence
    d = decide([chosen], BASELINE, chosen, "compress", "top1_accuracy", 0.05, 0.02)
    assert d.promote and d.version == 3 and d.sentence.startswith("Kept v3 (v3) as champion under the compress rule")


# ---- both -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["denoise", "compress"])
def test_variants_identical_to_the_base_promote_nothing(objective):
    # same answers, same losses, nothing compressed: no gain to test, no compression to ship
    same = [cand(v, 0.40, compression=1.0, pv=IDENTICAL) for v in (2, 3, 4)]
    d = decide(same, BASELINE, None, objective, "top1_accuracy", 0.05, 0.02)
    assert not d.promote and d.rule == objective and one_sentence(d.sentence)


def test_noise_only_variants_promote_nothing_under_denoise():
    # wins and losses that cancel (b = c): the best of them by a hair is no significant gain
    noisy = [cand(2, 0.40, pv=paired(5, 5)), cand(3, 0.401, pv=paired(9, 10)), cand(4, 0.399, pv=paired(12, 11))]
    d = decide(noisy, BASELINE, None, "denoise", "top1_accuracy", 0.05, 0.02)
    assert not d.promote and d.version == 3  # the best by validation accuracy, refused


def test_no_candidates_and_bad_arguments():
    d = decide([], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert d == Decision(False, None, "compress", "No promotion under the compress rule: no variants were evaluated.")
    with pytest.raises(ValueError, match="objective must be one of"):
        decide([], BASELINE, None, "top1_accuracy", "top1_accuracy")  # the old positional call
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        decide([], BASELINE, None, "denoise", "accuracy", alpha=1.0)
    with pytest.raises(ValueError, match=r"margin must be in \[0, 1\)"):
        decide([], BASELINE, None, "compress", "accuracy", margin=-0.1)
    with pytest.raises(ValueError, match="needs a comparison of 'correct'"):  # accuracy is judged on `correct`
        decide([cand(2, 0.5, pv=paired(1, 2))], BASELINE, None, "compress", "accuracy")
    with pytest.raises(ValueError, match="kind must be one of"):
        cand(2, 0.5, kind="model")


def test_best_candidates_and_shortlist():
    a = cand(2, 0.45, compression=2.3, pv=paired(12, 8))
    b = cand(3, 0.30, compression=217.3, pv=paired(60, 10))  # inferior
    c = cand(4, 0.40, compression=19.4, pv=paired(12, 8))
    assert [x.version for x in best_candidates([a, b, c], "top1_accuracy", 2)] == [2, 4]
    assert [x.version for x in best_candidates([a, b, c], "loss", 1)] == [3]  # metric "loss": lowest value first
    # compress: the non-inferior ones by compression (19.4x, 2.3x), then the inferior one
    assert [x.version for x in shortlist([a, b, c], "compress", "top1_accuracy", 0.02, 3)] == [4, 2, 3]
    assert [x.version for x in shortlist([a, b, c], "denoise", "top1_accuracy", 0.02, 1)] == [2]


# ---- the registry side ----------------------------------------------------------------------------------

SETTINGS = {"datasets": ["fever"], "val_limit": 100, "model_identity": "sha256:aaa"}
# as the registry stores them: identity and kind on the version, the evaluation settings on its run
INFO = {"version": "5", "tags": {"variant_name": "x", "model_identity": "sha256:aaa", "variant_kind": "composed"},
        "run_tags": {"datasets": "fever", "val_limit": "100", "selection_metric": "accuracy"},
        "metrics": {"val_accuracy": 0.6, "val_loss": 0.7, "compression_ratio": 80.0,  # of one layer: not this kind's
                    "whole_model.attention_compression_ratio": 1.9}}


def test_champion_is_comparable_only_with_the_same_settings_and_base_weights():
    assert comparable_champion(INFO, SETTINGS, "accuracy") == Candidate(5, "x", 0.6, 0.7, 1.9, "composed")
    greedy = {**INFO, "tags": {**INFO["tags"], "variant_kind": "greedy"}}  # the strategy's name: composed too
    assert comparable_champion(greedy, SETTINGS, "accuracy").kind == "composed"
    layer = {**INFO, "tags": {**INFO["tags"], "variant_kind": "layer"}}
    assert comparable_champion(layer, SETTINGS, "accuracy").compression == 80.0  # a layer's own ratio
    assert comparable_champion(INFO, {**SETTINGS, "val_limit": 50}, "accuracy") is None  # another split size
    assert comparable_champion(INFO, {**SETTINGS, "datasets": ["fever", "hotpotqa"]}, "accuracy") is None
    assert comparable_champion(INFO, SETTINGS, "loss") is None  # selected by another metric
    assert comparable_champion(INFO, {**SETTINGS, "model_identity": "sha256:bbb"}, "accuracy") is None  # other base
    no_identity = {k: v for k, v in SETTINGS.items() if k != "model_identity"}
    assert comparable_champion(INFO, no_identity, "accuracy") is None  # unknown base: compare with nothing
    assert comparable_champion(None, SETTINGS, "accuracy") is None


def test_decision_tags_carry_the_rule_and_the_sentence_not_metrics():
    d = decide([cand(2, 0.396, compression=6.3, pv=paired(12, 8))], BASELINE, None, "compress", "top1_accuracy")
    tags = decision_tags(d)
    assert tags["promotion.decision"] == "promote" and tags["promotion.version"] == "2"
    assert tags["promotion.rule"] == "compress" and tags["promotion.reason"] == d.sentence == d.reason
    # a handful of tags: the paired test numbers are metrics of the champion's run, not copies here
    assert set(tags) == {"promotion.decision", "promotion.version", "promotion.rule", "promotion.reason"}
    assert all(re.fullmatch(r"[\w.]+", key) for key in tags)  # MLflow tag keys


# ---- the generation guard (issue 14) ----------------------------------------------------------------------

def top1_up_generation_down(n: int = N, top1_gain: int = 30, gen_loss: int = 30) -> tuple[dict, dict]:
    """One variant's per-item rows, compared with the base with the real compare_paired on both columns:
    first-token top-1 rises (``top1_gain`` items only the variant gets right) while generation accuracy falls
    (``gen_loss`` items only the base generates right): the champion of issue 14 in miniature."""
    base, variant = [], []
    for i in range(n):
        top1_base, top1_var = (False, True) if i < top1_gain else (i % 2 == 0, i % 2 == 0)
        gen_base, gen_var = (True, False) if i >= n - gen_loss else (i % 3 == 0, i % 3 == 0)
        base.append({"id": f"q{i}", "correct": gen_base, "top1_correct": top1_base, "loss": 2.0})
        variant.append({"id": f"q{i}", "correct": gen_var, "top1_correct": top1_var, "loss": 1.9})
    return (compare_paired(base, variant, metric="top1_correct").to_dict(),
            compare_paired(base, variant, metric="correct").to_dict())


@pytest.mark.parametrize("objective", ["compress", "denoise"])
def test_the_guard_stops_a_variant_that_gains_top1_but_loses_generation(objective):
    top1, generation = top1_up_generation_down()
    assert top1["accuracy_diff"] == pytest.approx(0.03) and top1["mcnemar_p"] < 1e-8  # +3 points top-1, significant
    assert generation["accuracy_diff"] == pytest.approx(-0.03) and generation["variant_worse_p"] < 1e-8  # -3 points
    harmful = cand(3, 0.43, loss=1.9, compression=217.3, pv=top1, name="layer029-r6x6x2")
    harmful.guard_val = generation
    d = decide([harmful], BASELINE, None, objective, "top1_accuracy", alpha=0.05, margin=0.02)
    # without the guard this variant wins under both rules: non-inferior and most compressed / a significant gain
    assert not d.promote and one_sentence(d.sentence)
    assert "the generation accuracy guard kept out 1 variant" in d.sentence or "the guards kept out 1 variant" in d.sentence
    # 30 items lost of 1000, none won: Tango's score interval (the one the test inverts) is -4.3..-2.1 points
    assert ("the clearest, v3 (layer029-r6x6x2): validation generation accuracy difference -3.0 points, "
            "95% score CI -4.3..-2.1" in d.sentence)


def test_guard_stopped_names_the_variants_the_front_plot_marks():
    top1, generation = top1_up_generation_down()
    harmful = cand(3, 0.43, compression=217.3, pv=top1)
    assert not guard_stopped(harmful, "top1_accuracy", 0.02)  # generation not measured yet: nothing to stop it on
    harmful.guard_val = generation  # -3 points of generation accuracy, significant
    assert guard_stopped(harmful, "top1_accuracy", 0.02)
    harmless = cand(4, 0.41, compression=19.4, pv=paired(8, 18))
    harmless.guard_val = paired(10, 9, metric="correct")  # -0.1 points: not significantly worse
    assert not guard_stopped(harmless, "top1_accuracy", 0.02)
    assert not guard_stopped(cand(5, 0.41), "top1_accuracy", 0.02)  # no paired comparison at all


def test_the_guard_lets_the_rule_take_the_next_variant_and_says_why():
    top1, generation = top1_up_generation_down()
    harmful = cand(3, 0.43, compression=217.3, pv=top1, name="layer029-r6x6x2")
    harmful.guard_val = generation
    harmless = cand(4, 0.41, compression=19.4, pv=paired(8, 18), name="layer028-r58x16x4")
    harmless.guard_val = paired(10, 9, metric="correct")  # -0.1 points: not significantly worse (one-sided p = P(Bin(19, 1/2) >= 10) = 0.5)
    d = decide([harmful, harmless], BASELINE, None, "compress", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.promote and d.version == 4 and one_sentence(d.sentence)
    assert "among 1 of 2 variants shown non-inferior" in d.sentence  # the stopped one is not in the pool
    # the promoted variant's own evidence on generation accuracy: its interval within the 2-point margin
    assert "validation generation accuracy difference -0.1 points, 95% score CI -1.0..+0.8" in d.sentence
    assert "the generation accuracy guard kept out 1 variant" in d.sentence
    # the test split looks at the allowed variant first (the guard is part of the evidence, always applied)
    assert [c.version for c in shortlist([harmful, harmless], "compress", "top1_accuracy", 0.02, 2, alpha=0.05)] == [4, 3]


def test_the_guard_holds_for_composed_variants_and_asks_for_evidence_within_the_margin():
    top1, generation = top1_up_generation_down(gen_loss=30)  # -3.0 points generation, 95% CI -4.1..-1.9
    composed = cand(9, 0.43, compression=1.1, kind="composed", pv=top1, name="greedy-26+27+28+29")
    composed.guard_val = generation
    layer = cand(4, 0.40, compression=6.3, pv=paired(5, 5))  # 10 discordant items: within 1.5 points as well
    layer.guard_val = paired(3, 4, metric="correct")
    d = decide([composed, layer], BASELINE, None, "compress", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.promote and d.version == 4  # the composed variant would rank first, but the guard stops it
    # A significant but small loss is no longer a stop by itself: -0.8 points (8 items lost, none won: one-sided
    # McNemar p = 0.5^8 = 0.0039, what the previous guard stopped) with 95% score CI -1.6..-0.4 is shown within
    # a 2-point margin (Holm over 2: its p must be <= 0.0125; with 10 lost the lower end -1.8 still is) ...
    _, small = top1_up_generation_down(gen_loss=8)
    composed.guard_val = small
    d = decide([composed, layer], BASELINE, None, "compress", "top1_accuracy", alpha=0.05, margin=0.02)
    assert d.promote and d.version == 9 and "validation generation accuracy difference -0.8 points" in d.sentence
    # ... but not within a 1.5-point one: the lower end -1.6 is beyond it (the top-1 evidence still holds at 1.5)
    d = decide([composed, layer], BASELINE, None, "compress", "top1_accuracy", alpha=0.05, margin=0.015)
    assert d.promote and d.version == 4
    # and too little evidence is no evidence: 8 items on which the two generate alike (no discordant pair, an
    # interval of width 0 for the mean difference) still allow a loss of 32 points (score CI -32.4..+32.4)
    composed.guard_val = paired(0, 0, n=8, metric="correct")
    assert decide([composed, layer], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02).version == 4


def test_the_guard_reads_only_generation_comparisons_and_says_when_it_could_not_check():
    unchecked = cand(2, 0.396, compression=6.3, pv=paired(12, 8))  # no guard_val: generation not measured
    d = decide([unchecked], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
    assert d.promote and "generation guard not applied: its validation generation accuracy was not measured" in d.sentence
    wrong = cand(2, 0.396, compression=6.3, pv=paired(12, 8))
    wrong.guard_val = paired(12, 8)  # a top-1 comparison passed where generation accuracy belongs
    with pytest.raises(ValueError, match="the generation guard needs a comparison of 'correct'"):
        decide([wrong], BASELINE, None, "compress", "top1_accuracy", 0.05, 0.02)
