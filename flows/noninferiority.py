"""The evidence a variant needs to be promoted: non-inferiority on every endpoint, with family-wise control.

Each candidate is compared with the base on the same validation items (paired) on up to three endpoints:

* the selection metric: an accuracy-like metric within the accuracy margin (``Margins.for_accuracy``: points,
  or a fraction of the base's accuracy where that is stricter), or, for metric ``loss``, within ``margin`` nats;
* the loss (answer tokens, nats), when the metric is accuracy-like: within ``Margins.loss``;
* validation generation accuracy (the paper's metric, the *generation guard*), when measured: within the
  accuracy margin of the base's generation accuracy.

Each endpoint gives the one-sided p-value of its non-inferiority null: for an accuracy, Tango's score test
on the discordant pairs (:func:`tensorllm.evaluation.stats.paired_noninferiority_p`), whose level holds
better than the normal interval's; for the loss, the normal test that matches its 95% interval
(:func:`tensorllm.evaluation.stats.noninferiority_p`: ``p <= 0.025`` exactly when the interval's upper end
lies within the margin). A candidate is non-inferior only when *all* its endpoints are: an
intersection-union test, whose p-value is the largest of its endpoints' with no correction among them
(Berger 1982). Over candidates, :func:`family` applies Holm's step-down correction to those p-values, so
the chance that *any* inferior candidate of the family is declared non-inferior is at most the level,
whatever the dependence between candidates (they share the base's items). Generation accuracy costs a
generation pass, so the flow measures it only for the variants the rule would pick; a candidate whose
generation is required but not yet measured counts with p = 1 (it cannot be declared non-inferior, and
Holm stays valid because raising a p-value can only remove rejections). See docs/promotion.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tensorllm.evaluation.stats import holm_adjust, noninferiority_p, paired_noninferiority_p, paired_score_interval

from .candidates import LABELS, Candidate, fmt_loss_diff, higher_is_better, interval

#: the non-inferiority tests are one-sided at alpha / 2: the 95% two-sided intervals' convention at alpha 0.05
ONE_SIDED = 0.5


@dataclass(frozen=True)
class Margins:
    """Non-inferiority margins. ``accuracy``: points as a fraction (0.02 = 2 points; nats when the selection
    metric is ``loss``); ``relative``: the accuracy margin as a fraction of the base's accuracy (0.1 = 10% of
    it), applied where it is stricter than ``accuracy``, or None; ``loss``: nats of the mean answer loss."""

    accuracy: float = 0.02
    relative: float | None = None
    loss: float = 0.05

    def __post_init__(self):
        if not 0 <= self.accuracy < 1:
            raise ValueError(f"margin must be in [0, 1) (accuracy as a fraction, 0.02 = 2 points); got {self.accuracy!r}")
        if self.relative is not None and not 0 < self.relative <= 1:
            raise ValueError(f"relative_margin must be in (0, 1] (a fraction of the base's accuracy, 0.1 = 10%) or "
                             f"None; got {self.relative!r}")
        if not 0 <= self.loss < 10:
            raise ValueError(f"loss_margin must be in [0, 10) nats (0.05 = 5% more answer perplexity); got {self.loss!r}")

    def for_accuracy(self, base_accuracy: float) -> float:
        """The accuracy margin (a fraction) for a base at ``base_accuracy``: the stricter of the two forms."""
        if self.relative is None:
            return self.accuracy
        return min(self.accuracy, self.relative * float(base_accuracy))

    def accuracy_text(self, base_accuracy: float) -> str:
        """``2 points = 23% of the base's 8.6%`` or ``0.86 points = 10% of the base's 8.6% (stricter than 2 points)``."""
        m, base = self.for_accuracy(base_accuracy), float(base_accuracy)
        share = f"{100 * m / base:.0f}% of the base's {100 * base:.1f}%" if base > 0 else "the base at 0%"
        text = f"{100 * m:.3g} points = {share}"
        if self.relative is not None and m < self.accuracy:
            text += f" (stricter than {100 * self.accuracy:g} points)"
        return text


@dataclass
class Endpoint:
    """One paired non-inferiority test of a candidate: ``what`` (e.g. "top-1 accuracy"), its margin and p."""

    what: str
    margin: float
    p: float
    text: str  # the difference and its interval, for the sentence
    pending: bool = False  # generation required but not measured yet


def endpoints(c: Candidate, metric: str, margins: Margins, require_generation: bool = False,
              assume_generation_ok: bool = False) -> list[Endpoint]:
    """The candidate's endpoints (module docstring). No paired comparison: one endpoint with p = 1."""
    pv = c.paired_val
    if pv is None:
        return [Endpoint(LABELS[metric], margins.accuracy, 1.0, "no paired validation comparison")]
    out = []
    if higher_is_better(metric):
        m = margins.for_accuracy(pv["base_accuracy"])
        out.append(Endpoint(LABELS[metric], m, _p(pv, "accuracy", m, True), accuracy_text(pv, LABELS[metric])))
        out.append(Endpoint("loss", margins.loss, _p(pv, "loss", margins.loss, False), fmt_loss_diff(pv)))
    else:
        out.append(Endpoint("loss", margins.accuracy, _p(pv, "loss", margins.accuracy, False), fmt_loss_diff(pv)))
    g = c.guard_val
    if g is not None:
        if g.get("metric") != "correct":
            raise ValueError(f"{c.label}: guard_val compares {g.get('metric')!r}; the generation guard needs a "
                             "comparison of 'correct' (generation accuracy)")
        m = margins.for_accuracy(g["base_accuracy"])
        out.append(Endpoint("generation accuracy", m, _p(g, "accuracy", m, True),
                            accuracy_text(g, "validation generation accuracy")))
    elif require_generation:
        out.append(Endpoint("generation accuracy", margins.accuracy, 0.0 if assume_generation_ok else 1.0,
                            "validation generation accuracy not measured yet", pending=True))
    return out


def accuracy_text(paired: Mapping, label: str) -> str:
    """``top-1 accuracy difference -0.4 points, 95% score CI -1.4..+0.5``: the interval that inverts the
    test the decision uses (Tango's), so "lower end >= -margin" is exactly "p <= 0.025"."""
    lo, hi = paired_score_interval(int(paired["base_only_correct"]), int(paired["variant_only_correct"]), int(paired["n"]))
    return (f"{label} difference {100 * float(paired['accuracy_diff']):+.1f} points, "
            f"95% score CI {100 * lo:+.1f}..{100 * hi:+.1f}")


def _p(paired: Mapping, which: str, margin: float, higher: bool) -> float:
    """Accuracy: Tango's score test on the discordant counts; loss: the normal test from its 95% interval."""
    if which == "accuracy":
        return paired_noninferiority_p(int(paired["base_only_correct"]), int(paired["variant_only_correct"]),
                                       int(paired["n"]), margin)
    ci = interval(paired, "loss_diff_ci")
    return noninferiority_p(paired["loss_diff"], ci or (None, None), margin, higher_is_better=higher)


def failing(eps: list[Endpoint], level: float) -> list[Endpoint]:
    """The endpoints whose own test fails at ``level`` (one-sided, unadjusted): what keeps a candidate out."""
    return [e for e in eps if e.p > level]


@dataclass
class Family:
    """Holm over the candidates the rule weighs. ``members``: the family; ``p``: each member's
    intersection-union p-value (the largest of its endpoints'); ``adjusted``: Holm-adjusted; ``level``: the
    one-sided family-wise level (alpha / 2). Keys are ``id(candidate)``."""

    members: list[Candidate]
    level: float
    p: dict[int, float] = field(default_factory=dict)
    adjusted: dict[int, float] = field(default_factory=dict)
    tests: dict[int, list[Endpoint]] = field(default_factory=dict)

    def passes(self, c: Candidate) -> bool:
        return id(c) in self.adjusted and self.adjusted[id(c)] <= self.level

    def non_inferior(self) -> list[Candidate]:
        return [c for c in self.members if self.passes(c)]


def family(members: Iterable[Candidate], metric: str, margins: Margins, alpha: float,
           require_generation: bool = False, optimistic: Candidate | None = None) -> Family:
    """Holm over ``members`` at the one-sided level ``alpha / 2``. ``optimistic``: a candidate whose pending
    generation counts as passed (to ask "would the rule take it if its generation held up?": the flow then
    measures it); every other pending one counts with p = 1."""
    members = list(members)
    out = Family(members, ONE_SIDED * alpha)
    for c in members:
        out.tests[id(c)] = endpoints(c, metric, margins, require_generation, assume_generation_ok=c is optimistic)
        out.p[id(c)] = max(e.p for e in out.tests[id(c)])
    out.adjusted = dict(zip(map(id, members), holm_adjust([out.p[id(c)] for c in members])))
    return out


def single_test(c: Candidate, metric: str, margins: Margins, alpha: float) -> bool:
    """One candidate's own intersection-union test at ``alpha / 2``, no family (the greedy composition's
    build steps, which are not claims: the claim is confirmed on held-out items)."""
    return all(e.p <= ONE_SIDED * alpha for e in endpoints(c, metric, margins))
