"""The build/confirm split of the validation items (flows.holdout): fixed, about half each, no item on both sides."""

from __future__ import annotations

import json

import pytest

from flows.holdout import half_mean, half_of, paired_half, pooled_rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rows(ok, loss=2.0):
    return [{"id": f"q{i}", "correct": x, "top1_correct": x, "exact_match": x, "loss": loss} for i, x in enumerate(ok)]


def test_the_split_is_fixed_balanced_and_by_pooled_id():
    ids = [f"qa_wikidata/q{i}" for i in range(2000)]
    halves = [half_of(i) for i in ids]
    assert halves == [half_of(i) for i in ids]  # a function of the id alone: the same in every run
    # 2000 fair coin flips: the build share is within 0.5 +- 0.05 (10 standard deviations of 0.011) for any hash
    assert 0.45 < halves.count("build") / len(ids) < 0.55
    assert {half_of("fever/q1"), half_of("qa_wikidata/q1")} <= {"build", "confirm"}


def test_paired_half_compares_only_that_halfs_items(tmp_path):
    n = 400
    base = write(tmp_path / "base.jsonl", rows([True] * n))
    variant = write(tmp_path / "var.jsonl", rows([False] * n, loss=2.5))
    build, confirm = (paired_half({"d": base}, {"d": variant}, "top1_correct", h) for h in ("build", "confirm"))
    assert build["n"] + confirm["n"] == n and min(build["n"], confirm["n"]) > 150  # disjoint halves of 400
    assert build["accuracy_diff"] == confirm["accuracy_diff"] == -1.0  # every item lost on both sides
    assert {r["id"] for r in pooled_rows({"d": base}, "build")}.isdisjoint(r["id"] for r in pooled_rows({"d": base}, "confirm"))
    assert half_mean({"d": variant}, "loss", "confirm") == pytest.approx(2.5)
    with pytest.raises(ValueError, match="half must be one of"):
        pooled_rows({"d": base}, "test")
