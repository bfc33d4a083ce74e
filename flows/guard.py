"""The generation guard of a sweep, with its evaluations running concurrently and the sequential rule's decision.

The promotion rule needs validation generation accuracy only for the variants it would take
(:func:`flows.policy.next_generation_check`): it measures the first one in its order, decides whether that one
can still be promoted, and moves on to the next until no measurement can change the decision. Each
measurement decodes up to ``val_limit`` answers, so done one at a time the guard leaves all but one core idle.

:func:`run_generation_guard` keeps the rule exactly and overlaps the work: while it waits for the variant the
rule needs now, it has already submitted the evaluations of the next ``width - 1`` variants the rule would need
if the current one failed (:func:`guard_queue`, the rule's own order). A result is *used* only when the
sequential rule asks for that variant, so the decision and every measured ``guard_val`` are those of the
one-at-a-time loop; a speculative evaluation the rule never asks for is left unused (reported, not recorded
on its version). The evaluations themselves are content-keyed, so one that was started speculatively is the
same evaluation the rule later waits for, never a second one.

Usage (the flow's; ``submit`` starts one variant's generation evaluations, ``record`` turns their results into
the paired comparison the rule reads)::

    report = run_generation_guard(candidates, baseline, current, rule, width=2, submit=submit, record=record)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .candidates import Candidate
from .policy import generation_checks

log = logging.getLogger(__name__)


class Result(Protocol):
    def result(self) -> Any: ...


@dataclass
class GuardReport:
    """What the guard did: the versions it measured in the rule's order, and those evaluated speculatively but
    never asked for (their futures, so the flow can wait for them before it ends)."""

    measured: list[int] = field(default_factory=list)
    unused: list[int] = field(default_factory=list)
    unused_futures: list[Result] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"measured": self.measured, "speculative_unused": self.unused}


def guard_queue(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, rule: Mapping,
                width: int) -> list[Candidate]:
    """Up to ``width`` variants whose generation to evaluate now: the first is the one the sequential guard
    measures next (the champion's rule against ``current``, then the exported composition's); the others
    follow it in the rule's order (the ones it would need if the first failed). [] when nothing can change a
    decision any more."""
    if width < 1:
        raise ValueError(f"width must be a positive number of concurrent guard evaluations; got {width!r}")
    order = itertools.chain(generation_checks(candidates, baseline, current, **rule),
                            generation_checks(candidates, baseline, None, kinds=("composed",), **rule))
    out: list[Candidate] = []
    for c in order:
        if all(c is not o for o in out):
            out.append(c)
            if len(out) == width:
                break
    return out


def run_generation_guard(candidates: Mapping[int, Candidate], baseline: Candidate, current: Candidate | None,
                         rule: Mapping, width: int, submit: Callable[[Candidate, int], Mapping[str, Result]],
                         record: Callable[[Candidate, dict[str, Any]], Mapping]) -> GuardReport:
    """Measure generation for the variants the rule needs, ``width`` at a time (module docstring).

    ``candidates``: version -> :class:`Candidate` (their ``guard_val`` is filled in, in place, for the measured
    ones); ``rule``: the keywords of :func:`flows.policy.decide` (objective, metric, alpha, margin);
    ``submit(candidate, n)``: start the candidate's evaluations (dataset -> future), ``n`` of them being
    started at once; ``record(candidate, results)``: the paired generation comparison for the rule (the flow
    also logs it on the version).
    """
    futures: dict[int, Mapping[str, Result]] = {}
    report = GuardReport()
    while queue := guard_queue(list(candidates.values()), baseline, current, rule, width):
        fresh = [c for c in queue if c.version not in futures]
        for c in fresh:
            futures[c.version] = submit(c, len(queue))
        if len(fresh) > 1 or fresh and fresh[0] is not queue[0]:
            log.info("generation guard: measuring v%s, evaluating %s ahead", queue[0].version,
                     ", ".join(f"v{c.version}" for c in queue[1:]))
        pick = queue[0]
        results = {d: f.result() for d, f in futures[pick.version].items()}
        pick.guard_val = record(pick, results)
        report.measured.append(pick.version)
    report.unused = [v for v in futures if v not in report.measured]
    report.unused_futures = [f for v in report.unused for f in futures[v].values()]
    return report
