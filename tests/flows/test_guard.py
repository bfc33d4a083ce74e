"""The concurrent generation guard (flows.guard): it evaluates ahead in the rule's order, and decides exactly as the
one-at-a-time loop does (same variants measured, same order, same decision); what it evaluated ahead and never
needed is reported and not recorded. Paired comparisons come from the real compare_paired on constructed rows."""

from __future__ import annotations

import copy

import pytest

from flows.guard import guard_queue, run_generation_guard
from flows.policy import Candidate, decide, next_generation_check
from tensorllm.evaluation import compare_paired

N = 1000
BASE = Candidate(1, "baseline", 0.086, 3.0)
RULE = {"objective": "compress", "metric": "top1_accuracy", "alpha": 0.05, "margin": 0.02}


def rows_pair(b: int, c: int, column: str, base_right: int = 200) -> dict:
    """Base vs variant on N items: ``b`` only the base gets right, ``c`` only the variant; equal losses +- 0.01."""
    base_ok = [i < base_right for i in range(N)]
    var_ok = [False if i < b else (True if i >= N - c else ok) for i, ok in enumerate(base_ok)]
    base = [{"id": f"q{i}", column: ok, "loss": 3.0} for i, ok in enumerate(base_ok)]
    var = [{"id": f"q{i}", column: ok, "loss": 3.0 + (0.01 if i % 2 else -0.01)} for i, ok in enumerate(var_ok)]
    return compare_paired(base, var, metric=column).to_dict()


FINE_TOP1 = rows_pair(4, 4, "top1_correct", base_right=86)  # within 2 points on top-1 and loss
GEN_BAD, GEN_FINE = rows_pair(40, 0, "correct"), rows_pair(3, 3, "correct")  # generation -4 points / +0.0


def candidates(outcomes: dict[int, dict]) -> dict[int, Candidate]:
    """Version -> a variant whose top-1 and loss are fine; compression falls with the version (the rule's order)."""
    return {v: Candidate(v, f"v{v}", FINE_TOP1["variant_accuracy"], 3.0, compression=300.0 - 10 * v,
                         paired_val=FINE_TOP1) for v in outcomes}


class Future:
    def __init__(self, log: list, version: int, value: dict):
        self.log, self.version, self.value = log, version, value

    def result(self) -> dict:
        self.log.append(("wait", self.version))
        return self.value


def run(outcomes: dict[int, dict], width: int):
    cands, log = candidates(outcomes), []

    def submit(c: Candidate, n: int) -> dict:
        log.append(("submit", c.version, n))
        return {"qa": Future(log, c.version, outcomes[c.version])}

    report = run_generation_guard(cands, BASE, None, RULE, width, submit, lambda c, results: results["qa"])
    return cands, report, log


def sequential(outcomes: dict[int, dict]) -> tuple[dict[int, Candidate], list[int]]:
    """The one-at-a-time loop the flow ran before the guard was concurrent (the reference)."""
    cands, measured = candidates(outcomes), []
    while (pick := next_generation_check(list(cands.values()), BASE, None, **RULE)
           or next_generation_check(list(cands.values()), BASE, None, kinds=("composed",), **RULE)) is not None:
        pick.guard_val = outcomes[pick.version]
        measured.append(pick.version)
    return cands, measured


@pytest.mark.parametrize("width", [1, 2, 3, 8])
@pytest.mark.parametrize("pattern", ["bad bad fine fine", "fine bad bad", "bad bad bad", "bad fine bad fine bad"])
def test_the_decision_and_the_measured_variants_are_the_sequential_rules(width, pattern):
    outcomes = {v: GEN_BAD if word == "bad" else GEN_FINE for v, word in enumerate(pattern.split(), start=2)}
    ref, ref_measured = sequential(outcomes)
    cands, report, _ = run(outcomes, width)
    assert report.measured == ref_measured  # same variants, same order
    want = decide(list(ref.values()), BASE, None, require_generation=True, **RULE)
    got = decide(list(cands.values()), BASE, None, require_generation=True, **RULE)
    assert (got.promote, got.version, got.sentence) == (want.promote, want.version, want.sentence)
    for v, c in cands.items():  # a speculative result never reaches the rule
        assert (c.guard_val is None) == (v not in ref_measured), v
    assert set(report.unused).isdisjoint(report.measured) and len(report.unused) <= width - 1


def test_the_next_variants_are_evaluated_before_the_first_is_awaited():
    # 300x fails generation, 280x fails, 270x passes: the rule stops there; 260x was evaluated ahead for nothing
    outcomes = {2: GEN_BAD, 3: GEN_BAD, 4: GEN_FINE, 5: GEN_FINE}
    cands, report, log = run(outcomes, width=2)
    assert log[:3] == [("submit", 2, 2), ("submit", 3, 2), ("wait", 2)]  # two in flight, each with half the CPUs
    assert report.measured == [2, 3, 4] and report.unused == [5] and len(report.unused_futures) == 1
    assert cands[5].guard_val is None
    assert sum(1 for e in log if e[0] == "submit") == 4  # each variant evaluated once, never twice

    _, report, log = run(outcomes, width=1)  # one at a time: a lone evaluation is told it runs alone
    assert [e for e in log if e[0] == "submit"] == [("submit", 2, 1), ("submit", 3, 1), ("submit", 4, 1)]
    assert report.unused == []


def test_the_queue_starts_with_the_rules_next_check_and_refuses_a_bad_width():
    outcomes = {2: GEN_BAD, 3: GEN_FINE, 4: GEN_FINE}
    cands = candidates(outcomes)
    queue = guard_queue(list(cands.values()), BASE, None, RULE, 2)
    assert [c.version for c in queue] == [2, 3]
    assert queue[0] is next_generation_check(list(cands.values()), BASE, None, **RULE)
    after = copy.deepcopy(cands)
    after[2].guard_val = GEN_FINE  # 300x passes: nothing less compressed can change the decision
    assert guard_queue(list(after.values()), BASE, None, RULE, 2) == []
    with pytest.raises(ValueError, match="width must be a positive number"):
        guard_queue(list(cands.values()), BASE, None, RULE, 0)
