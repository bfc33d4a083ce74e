"""The promotion policy: which registered version gets the ``champion`` alias, and one sentence saying why.

Pure functions of validation numbers; the test split is the report. Every claim a decision makes is a
paired comparison with the base on the same validation items, with its error rate controlled over every
variant the rule weighs (docs/promotion.md has the procedure and its measured error rate):

* ``compress`` (the default, :mod:`flows.compress_rule`): the most compressed variant shown *non-inferior*
  to the base -- within the accuracy margin (``margin``, default 2 points, or ``relative_margin`` of the
  base's accuracy where stricter) on the selection metric, within ``loss_margin`` nats (default 0.05) on
  the loss, and within the accuracy margin on validation generation accuracy where it was measured --
  with Holm's correction over every compressing variant, so the chance of promoting any inferior one is at
  most ``alpha / 2`` (one-sided; 2.5% at the default 0.05). Composed variants (whole-model ratio) rank
  before single-layer ones (their layer's ratio, another scale).
* ``denoise`` (the paper's claim that a low-rank layer can *raise* accuracy): the best variant by the
  validation metric, promoted only when its paired gain over the base is significant at ``alpha`` after
  Holm over every variant compared, and its loss and generation accuracy are shown within their margins
  (the same intersection-union test: its p-value is the largest of the gain's two-sided p and twice each
  one-sided non-inferiority p, :mod:`flows.noninferiority`). p-values of the gain: McNemar's exact test for
  accuracy-like metrics; for ``loss`` the Wald p of the mean paired loss difference from its 95% interval.

**The generation guard**, whatever the objective and the metric: a variant is promoted only with evidence
that its validation generation accuracy (the paper's metric) is within the margin of the base's: the
lower end of the paired 95% interval at least ``-margin`` (within the family's correction). A metric that
rises while the paper's accuracy falls is what it stops. The flow measures generation only for the
variants the rule would take (:func:`next_generation_check`), with ``require_generation`` set: an
unmeasured variant then cannot be promoted. Without it (``generate`` off) a candidate without a
measurement is not checked, and the sentence says so.

The current champion, when comparable (:func:`comparable_champion`: same base weights, datasets,
validation size and metric), is a bar to clear: under ``denoise`` the new best must beat its validation
metric, under ``compress`` it must compress more (or as much, with a better metric). When nothing
qualifies, nothing moves. Every :class:`Decision` carries one sentence with the rule, the numbers and any
tie-break, for the MLflow page.

Usage::

    decision = decide(candidates, baseline, current, objective="compress", metric="top1_accuracy",
                      alpha=0.05, margin=0.02, loss_margin=0.05)
    print(decision.sentence)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import get_args

from tensorllm.evaluation.stats import holm_adjust, normal_p_from_interval

from .candidates import (KINDS, LABELS, METRICS, PAIRED_COLUMN, Candidate, Decision, eq_p, fmt, fmt_diff,
                         higher_is_better, interval, plural, rank_key)
from .compress_rule import compress_cmp, compress_decision, compress_family, compress_pool
from .config import ComposeStrategy
from .noninferiority import ONE_SIDED, Margins, endpoints, failing

__all__ = ["Candidate", "Decision", "Margins", "PAIRED_COLUMN", "KINDS", "METRICS", "OBJECTIVES", "decide",
           "shortlist", "best_candidates", "non_inferior", "next_generation_check", "generation_checks",
           "comparable_champion", "decision_tags", "guard_stopped", "higher_is_better", "rank_key"]

OBJECTIVES: tuple[str, ...] = ("denoise", "compress")
#: ``variant_kind`` tags of composed variants in the registry: "composed" or the strategy that built it
COMPOSED_TAGS: tuple[str, ...] = ("composed", *get_args(ComposeStrategy))
_compress_cmp = compress_cmp  # the compress order (tests compare champions with it)


def best_candidates(candidates: list[Candidate], metric: str, k: int) -> list[Candidate]:
    """The ``k`` best by the validation metric (ties by lower loss)."""
    return sorted(candidates, key=lambda c: rank_key(c, metric))[:k]


def non_inferior(candidate: Candidate, metric: str, margin: float) -> bool:
    """One variant's selection metric alone, no family: the 95% interval of the paired validation difference
    within ``margin`` (accuracy-like ``accuracy_diff_ci[0] >= -margin``; ``loss``: ``loss_diff_ci[1] <= margin``).
    No comparison or an unknown interval (one item) is not evidence of non-inferiority."""
    if candidate.paired_val is None:
        return False
    ci = interval(candidate.paired_val, "accuracy_diff_ci" if higher_is_better(metric) else "loss_diff_ci")
    if ci is None:
        return False
    return ci[0] >= -margin if higher_is_better(metric) else ci[1] <= margin


def _margins(margin: float | Margins, loss_margin: float, relative_margin: float | None) -> Margins:
    return margin if isinstance(margin, Margins) else Margins(margin, relative_margin, loss_margin)


def shortlist(candidates: list[Candidate], objective: str, metric: str, margin: float | Margins, k: int,
              alpha: float = 0.05, loss_margin: float = 0.05, relative_margin: float | None = None,
              require_generation: bool = False) -> list[Candidate]:
    """The ``k`` candidates the objective looks at first (the test split evaluates them): ``compress``: the
    ones shown non-inferior in the rule's order, then the others by the metric; ``denoise``: by the metric,
    those a guard keeps out (loss or generation not within its margin) last."""
    _check(objective, metric, alpha)
    margins = _margins(margin, loss_margin, relative_margin)
    if objective == "compress":
        ok = compress_pool(compress_family(candidates, metric, margins, alpha, require_generation), metric)
    else:
        ok = best_candidates([c for c in candidates if not _guard_fails(c, metric, margins, alpha)], metric, len(candidates))
    taken = set(map(id, ok))
    return (ok + best_candidates([c for c in candidates if id(c) not in taken], metric, len(candidates)))[:k]


def decide(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, objective: str,
           metric: str, alpha: float = 0.05, margin: float | Margins = 0.02, *, loss_margin: float = 0.05,
           relative_margin: float | None = None, require_generation: bool = False,
           kinds: tuple[str, ...] = KINDS, _optimistic: Candidate | None = None) -> Decision:
    """Apply the ``objective``'s rule (module docstring) to the sweep's ``candidates``.

    ``baseline``: the base model's own numbers (for the sentence); ``current``: the comparable current
    champion (:func:`comparable_champion`) or None; ``alpha``: the significance level (the family-wise
    level of ``denoise``; ``compress`` controls its one-sided family-wise error at ``alpha / 2``);
    ``margin``: the accuracy margin as a fraction (0.02 = 2 points; nats for ``loss``), or a :class:`Margins`;
    ``loss_margin``: nats; ``relative_margin``: the accuracy margin as a fraction of the base's accuracy
    where stricter, or None; ``require_generation``: an unmeasured generation accuracy counts as no
    evidence; ``kinds``: the kinds the rule may choose (``("composed",)``: the best composed model to export;
    the family is every candidate either way).
    """
    _check(objective, metric, alpha)
    margins = _margins(margin, loss_margin, relative_margin)
    for c in candidates:
        _check_paired(c, metric)
    if not candidates:
        return Decision(False, None, objective, f"No promotion under the {objective} rule: no variants were evaluated.")
    if objective == "compress":
        if _optimistic is not None:
            fam = compress_family(candidates, metric, margins, alpha, require_generation, _optimistic)
            pool = compress_pool(fam, metric, kinds)
            ok = bool(pool) and pool[0] is _optimistic and (current is None or compress_cmp(metric)(pool[0], current) < 0)
            return Decision(ok, _optimistic.version, "compress", "")
        return compress_decision(candidates, baseline, current, metric, alpha, margins, require_generation, kinds)
    return _denoise(candidates, baseline, current, metric, alpha, margins, require_generation, kinds, _optimistic)


def next_generation_check(candidates: list[Candidate], baseline: Candidate, current: Candidate | None,
                          objective: str, metric: str, alpha: float = 0.05, margin: float | Margins = 0.02, *,
                          loss_margin: float = 0.05, relative_margin: float | None = None,
                          kinds: tuple[str, ...] = KINDS) -> Candidate | None:
    """The variant whose validation generation accuracy the flow should measure next: the first, in the
    rule's order, that has none yet and that the rule (with ``require_generation``) would promote if its
    generation held up; None when no measurement could change the decision."""
    return next(generation_checks(candidates, baseline, current, objective, metric, alpha, margin,
                                  loss_margin=loss_margin, relative_margin=relative_margin, kinds=kinds), None)


def generation_checks(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, objective: str,
                      metric: str, alpha: float = 0.05, margin: float | Margins = 0.02, *, loss_margin: float = 0.05,
                      relative_margin: float | None = None, kinds: tuple[str, ...] = KINDS) -> Iterator[Candidate]:
    """Every variant without a generation measurement that the rule would promote if its generation held up, in
    the rule's order (lazily): the first is :func:`next_generation_check`'s; the flow evaluates the next ones
    speculatively while it waits for the first (flows.guard)."""
    pending = [c for c in candidates if c.guard_val is None and c.kind in kinds]
    order = (sorted(pending, key=functools.cmp_to_key(compress_cmp(metric))) if objective == "compress"
             else best_candidates(pending, metric, len(pending)))
    for c in order:
        d = decide(candidates, baseline, current, objective, metric, alpha, margin, loss_margin=loss_margin,
                   relative_margin=relative_margin, require_generation=True, kinds=kinds, _optimistic=c)
        if d.promote and d.version == c.version:
            yield c


# ---- denoise --------------------------------------------------------------------------------------------

def _guard_fails(c: Candidate, metric: str, margins: Margins, alpha: float) -> bool:
    """A measured guard endpoint (loss, generation) of ``c`` fails its own test at ``alpha / 2``."""
    return any(not e.pending for e in failing(endpoints(c, metric, margins)[1:], ONE_SIDED * alpha))


def _denoise(candidates, baseline, current, metric, alpha, margins: Margins, require_generation, kinds, optimistic):
    n_all = len(candidates)
    tested = [c for c in candidates if c.paired_val is not None]  # the Holm family: every variant compared
    guards = {id(c): endpoints(c, metric, margins, require_generation, c is optimistic)[1:] for c in tested}
    iut = [max([_p_value(c, metric)] + [min(1.0, e.p / ONE_SIDED) for e in guards[id(c)]]) for c in tested]
    adjusted = dict(zip(map(id, tested), holm_adjust(iut)))
    kept_out = [c for c in tested if any(not e.pending for e in failing(guards[id(c)], ONE_SIDED * alpha))]
    ranked = sorted((c for c in candidates if c.kind in kinds and c not in kept_out), key=lambda c: rank_key(c, metric))
    stays = f"; v{current.version} stays champion" if current is not None else ""
    if optimistic is not None:
        best = ranked[0] if ranked else None
        ok = (best is optimistic and adjusted[id(best)] < alpha and _gain(best, metric)
              and (current is None or current.version == best.version or rank_key(best, metric) < rank_key(current, metric)))
        return Decision(ok, optimistic.version, "denoise", "")
    guard_note = _denoise_kept_out(kept_out, guards, alpha)
    if not ranked:
        why = guard_note[2:] if guard_note else f"no {'/'.join(kinds)} variant was evaluated"
        return Decision(False, None, "denoise", f"No promotion under the denoise rule: {why}{stays}.")
    best = ranked[0]
    rank_text = f"the best validation {LABELS[metric]} of {plural(n_all, 'variant')}"
    versus = f"{fmt(best.val_metric, metric)} vs the base's {fmt(baseline.val_metric, metric)}"
    head = f"{rank_text}, {best.label} at {versus},"
    if best.paired_val is None:
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} has no paired validation comparison with "
                        f"the base, so its gain cannot be tested{stays}.")
    p_adj = adjusted[id(best)]
    guard_text = "; ".join(f"{e.text} ({'within' if e.p <= ONE_SIDED * alpha else 'not shown within'} its margin)"
                           for e in guards[id(best)])
    test = (f"on {best.paired_val['n']} validation items ({fmt_diff(best, metric)}, {_test_name(metric)} "
            f"p{eq_p(_p_value(best, metric))}; {guard_text}; Holm-adjusted p{eq_p(p_adj)} "
            f"{'<' if p_adj < alpha else '>='} alpha {alpha:g} over {plural(len(tested), 'comparison')})")
    tie = _denoise_tie(ranked, metric) + guard_note
    gain = _gain(best, metric)
    if not (gain and p_adj < alpha):
        what = "is not a significant gain with its guards held" if gain else "is no gain over the base"
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} {what} {test}{tie}{stays}.")
    if current is not None and current.version == best.version:
        return Decision(True, best.version, "denoise",
                        f"Kept {best.label} as champion under the denoise rule: it is again {rank_text}, "
                        f"{versus}, a significant gain {test}{tie}.")
    if current is not None and not rank_key(best, metric) < rank_key(current, metric):
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} is a significant gain {test}{tie}, but it does "
                        f"not beat the current champion v{current.version} at {fmt(current.val_metric, metric)}, "
                        f"which stays champion.")
    bar = (f"; it beats the current champion v{current.version} at {fmt(current.val_metric, metric)}"
           if current is not None else "")
    return Decision(True, best.version, "denoise",
                    f"Promoted {best.label} under the denoise rule: {rank_text}, {versus}, is a significant gain "
                    f"{test}{tie}{bar}.")


def _gain(c: Candidate, metric: str) -> bool:
    diff = float(c.paired_val["accuracy_diff" if higher_is_better(metric) else "loss_diff"])
    return diff > 0 if higher_is_better(metric) else diff < 0


def _denoise_kept_out(kept_out: list[Candidate], guards: dict, alpha: float) -> str:
    if not kept_out:
        return ""
    worst = max(kept_out, key=lambda c: max(e.p for e in guards[id(c)]))
    e = max(guards[id(worst)], key=lambda e: e.p)
    return (f"; the guards kept out {plural(len(kept_out), 'variant')} whose loss or validation generation accuracy "
            f"is not shown within its margin (the clearest, {worst.label}: {e.text})")


def _p_value(c: Candidate, metric: str) -> float:
    """Two-sided p-value of "no difference from the base" (1 when there is no evidence)."""
    if higher_is_better(metric):
        return float(c.paired_val["mcnemar_p"])
    ci = c.paired_val.get("loss_diff_ci") or (None, None)
    p = normal_p_from_interval(c.paired_val["loss_diff"], ci)
    return 1.0 if math.isnan(p) else p


def _denoise_tie(ranked: list[Candidate], metric: str) -> str:
    if len(ranked) < 2 or ranked[0].val_metric != ranked[1].val_metric:
        return ""
    a, b = ranked[0], ranked[1]
    if a.val_loss == b.val_loss:
        return f"; it tied on {LABELS[metric]} and validation loss with {b.label} and came first in the sweep's order"
    return (f"; it tied on {LABELS[metric]} with {b.label} and won on lower validation loss "
            f"{a.val_loss:.3f} vs {b.val_loss:.3f}")


def _test_name(metric: str) -> str:
    return "McNemar" if higher_is_better(metric) else "normal"


# ---- the registry side ----------------------------------------------------------------------------------

def comparable_champion(info: dict | None, settings: dict, metric: str) -> Candidate | None:
    """The current champion as a :class:`Candidate`, when its validation numbers are comparable with this
    sweep's; else None (it is then not a bar to clear).

    Comparable means the same base weights (tag ``model_identity`` == ``settings["model_identity"]``; a
    sweep that does not know its identity compares with nothing), datasets, validation size
    (``val_limit``) and selection metric. Its kind comes from the tag ``variant_kind``: ``layer`` (or absent)
    with the metric ``compression_ratio``; ``composed`` or a composition strategy (``uniform``, ``greedy``)
    with ``whole_model.attention_compression_ratio`` (a ratio absent: 1.0).
    """
    if info is None:
        return None
    # the evaluation settings are tags of the version's run, its identity a tag of the version (tensorllm.registry)
    tags, metrics = {**info.get("run_tags", {}), **info["tags"]}, info["metrics"]
    identity = settings.get("model_identity")
    kind_tag = tags.get("variant_kind", "layer")
    kind = "layer" if kind_tag == "layer" else "composed" if kind_tag in COMPOSED_TAGS else None
    same = (identity is not None and tags.get("model_identity") == str(identity)
            and tags.get("datasets") == ",".join(settings["datasets"]) and tags.get("val_limit") == str(settings["val_limit"])
            and tags.get("selection_metric") == metric and f"val_{metric}" in metrics and "val_loss" in metrics
            and kind is not None)
    if not same:
        return None
    ratio = metrics.get("compression_ratio" if kind == "layer" else "whole_model.attention_compression_ratio", 1.0)
    return Candidate(int(info["version"]), tags.get("variant_name", "champion"), float(metrics[f"val_{metric}"]),
                     float(metrics["val_loss"]), compression=float(ratio), kind=kind)


def guard_stopped(c: Candidate, metric: str, margin: float | Margins, alpha: float = 0.05, *,
                  loss_margin: float = 0.05, relative_margin: float | None = None) -> bool:
    """Whether the rule's guard (loss, or validation generation accuracy when measured) refused ``c`` on measured
    evidence: its own test fails at ``alpha / 2``. What the sweep's front plot marks."""
    return c.paired_val is not None and _guard_fails(c, metric, _margins(margin, loss_margin, relative_margin), alpha)


def decision_tags(decision: Decision) -> dict[str, str]:
    """Tags that record a decision (``promotion.reason`` is the sentence). The paired test comparisons behind it
    are metrics of the champion's run (``<dataset>.test_vs_baseline.*``), not copied here."""
    return {f"promotion.{k}": v for k, v in decision.as_tags().items()}


# ---- checks ---------------------------------------------------------------------------------------------

def _check(objective: str, metric: str, alpha: float) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}; got {metric!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (the significance level, e.g. 0.05); got {alpha!r}")


def _check_paired(c: Candidate, metric: str) -> None:
    column = PAIRED_COLUMN.get(metric)
    if c.paired_val is not None and column is not None and c.paired_val.get("metric") != column:
        raise ValueError(f"{c.label}: paired_val compares {c.paired_val.get('metric')!r}, but the metric {metric!r} "
                         f"needs a comparison of {column!r}")
