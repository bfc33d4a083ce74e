"""Paired comparison of variant vs base from per-example records."""

import json
import math

import pytest

from tensorllm.evaluation import compare_paired
from tensorllm.evaluation.stats import Z_95


def _rows(correct, losses, prefix="x"):
    return [{"id": f"{prefix}{i}", "correct": c, "top1_correct": c, "loss": l} for i, (c, l) in enumerate(zip(correct, losses))]


def test_mcnemar_case_b1_c9():
    # 20 items: 10 both right, 1 base-only right (b), 9 variant-only right (c)
    base = [True] * 10 + [True] + [False] * 9
    variant = [True] * 10 + [False] + [True] * 9
    cmp = compare_paired(_rows(base, [1.0] * 20), _rows(variant, [1.0] * 20))
    assert (cmp.n, cmp.base_only_correct, cmp.variant_only_correct) == (20, 1, 9)
    assert cmp.base_accuracy == 11 / 20 and cmp.variant_accuracy == 19 / 20
    assert cmp.accuracy_diff == pytest.approx(8 / 20)  # (19 - 11) / 20
    assert cmp.mcnemar_p == pytest.approx(0.021484375, rel=1e-12)  # scipy binomtest(1, 10).pvalue
    assert cmp.variant_worse_p == 1023 / 1024  # P(X >= 1 | 10, 1/2): no sign that the variant is worse
    # per-item differences: ten 0, one -1, nine +1 -> mean 0.4, sample variance (10 - 20 * 0.4^2) / 19
    half = Z_95 * math.sqrt((10 - 20 * 0.4**2) / 19 / 20)
    assert cmp.accuracy_diff_ci == pytest.approx((0.4 - half, 0.4 + half), abs=1e-12)
    assert cmp.loss_diff == 0.0
    json.dumps(cmp.to_dict(), allow_nan=False)  # JSON-safe, the interval as a list


def test_accuracy_interval_of_a_single_item_is_unknown_and_json_safe():
    cmp = compare_paired(_rows([True], [1.0]), _rows([False], [1.0]))
    assert cmp.accuracy_diff == -1.0 and all(math.isnan(x) for x in cmp.accuracy_diff_ci)  # spread unknown
    assert cmp.to_dict()["accuracy_diff_ci"] == [None, None]  # NaN -> None for JSON


def test_loss_difference_and_interval_and_order_independence(tmp_path):
    base_losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    diffs = [0.5, -0.2, 0.3, 0.1, 0.9, -0.4]  # the test_stats case: mean 0.2, CI (-0.17870..., 0.57870...)
    base = _rows([True] * 6, base_losses)
    variant = list(reversed(_rows([True] * 6, [b + d for b, d in zip(base_losses, diffs)])))  # other order
    for path, rows in ((tmp_path / "b.jsonl", base), (tmp_path / "v.jsonl", variant)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmp = compare_paired(tmp_path / "b.jsonl", tmp_path / "v.jsonl")
    assert cmp.loss_diff == pytest.approx(0.2, abs=1e-12)
    assert cmp.loss_diff_ci[0] == pytest.approx(-0.17870102011910047, abs=1e-9)
    assert cmp.loss_diff_ci[1] == pytest.approx(0.5787010201191005, abs=1e-9)
    assert cmp.mcnemar_p == 1.0  # no discordant pairs
    assert cmp.accuracy_diff_ci == (0.0, 0.0)  # every item agrees: zero-width interval
    assert set(cmp.to_dict()) >= {"accuracy_diff", "accuracy_diff_ci", "mcnemar_p", "variant_worse_p", "loss_diff",
                                  "loss_diff_ci", "n"}


def test_mismatched_items_and_missing_metric():
    with pytest.raises(ValueError, match="1 only in base .* 1 only in variant"):
        compare_paired(_rows([True, True], [1, 1]), _rows([True, True], [1, 1], prefix="y")[:1] + _rows([True], [1]))
    no_acc = [{"id": "a", "correct": None, "top1_correct": True, "loss": 1.0}]
    with pytest.raises(ValueError, match="use metric='top1_correct'"):
        compare_paired(no_acc, no_acc)
    assert compare_paired(no_acc, no_acc, metric="top1_correct").n == 1
    with pytest.raises(ValueError, match="Unknown metric"):
        compare_paired(no_acc, no_acc, metric="f1")
    with pytest.raises(ValueError, match="appears twice"):
        compare_paired(no_acc * 2, no_acc)


def test_bad_examples_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "correct": true, "top1_correct": true, "loss": 1.0}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected an object with at least"):
        compare_paired(path, path)
    with pytest.raises(FileNotFoundError):
        compare_paired(tmp_path / "missing.jsonl", path)
