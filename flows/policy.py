"""The promotion policy: which registered version gets the ``champion`` alias, and one sentence saying why.

Pure functions of validation numbers (issue 9, "Promotion you can trust"). Two objectives:

* ``compress`` (the default): among the variants that are *non-inferior* to the base on the paired
  validation items -- the lower end of the 95% interval of the accuracy difference is at least
  ``-margin`` (metric ``loss``: the upper end of the loss difference's interval is at most ``margin``)
  -- and that compress something (ratio > 1), promote the most compressed. Ties (equal compression
  within 1e-9) go to the better validation metric, then the lower validation loss. A composed variant's
  ratio is the whole-model attention compression, a single-layer variant's is the MHA compression of
  its one layer: the two scales are not comparable (one layer of 30 at 200x is ~1.03x of the model's
  attention), so composed variants, which edit several layers, rank before single-layer ones.
* ``denoise`` (the paper's claim that a low-rank layer can *raise* accuracy): rank by the validation
  metric (accuracy-like: higher is better; ``loss``: lower; ties by lower validation loss). The best is
  promoted only when its paired comparison with the base shows a gain (accuracy difference > 0, or loss
  difference < 0) whose p-value stays below ``alpha`` after a Holm correction over every variant
  compared. Without the correction the best of N noisy scores beats the base by chance: with 20 variants
  that change nothing, one of them is "significant" at 0.05 about two times in three.
  p-values: McNemar's exact test for accuracy-like metrics; for ``loss`` the two-sided normal (Wald)
  p-value of the mean paired loss difference, from its 95% interval (p < 0.05 exactly when that
  interval excludes 0; see :func:`tensorllm.evaluation.stats.normal_p_from_interval`).

**The generation guard** (issue 14), whatever the objective and the metric: a variant whose validation
*generation* accuracy (the paper's metric) is significantly below the base's -- the one-sided exact
McNemar p-value that the variant is worse (``PairedComparison.variant_worse_p``) below ``alpha`` -- is
never promoted, single-layer or composed. A metric that rises while the paper's accuracy falls (the
first answer token more often right, the generated answer less often) is what it stops. It needs the
comparison in ``Candidate.guard_val``; a candidate without one is not checked, and the sentence says so.

The current champion, when comparable (:func:`comparable_champion`: same base weights, datasets,
validation size and metric), is a bar to clear: under ``denoise`` the new best must beat its validation
metric, under ``compress`` it must compress more (or as much, with a better metric). When the champion
is the variant the rule picks again, the decision says so and keeps it. When nothing qualifies, nothing
moves. Every :class:`Decision` carries one sentence with the rule, the numbers and any tie-break, for
the MLflow page.

Usage::

    decision = decide(candidates, baseline, current, objective="compress", metric="top1_accuracy",
                      alpha=0.05, margin=0.02)
    print(decision.sentence)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from tensorllm.evaluation.stats import holm_adjust, normal_p_from_interval

from .config import ComposeStrategy

Objective = Literal["denoise", "compress"]
Kind = Literal["layer", "composed"]
OBJECTIVES: tuple[str, ...] = ("denoise", "compress")
KINDS: tuple[str, ...] = ("layer", "composed")
#: ``variant_kind`` tags of composed variants in the registry: "composed" or the strategy that built it
COMPOSED_TAGS: tuple[str, ...] = ("composed", *get_args(ComposeStrategy))
METRICS: tuple[str, ...] = ("accuracy", "top1_accuracy", "loss")
#: the per-item correctness column a paired comparison must use for each accuracy-like metric
PAIRED_COLUMN = {"accuracy": "correct", "top1_accuracy": "top1_correct"}
COMPRESSION_TIE = 1e-9  # compressions closer than this are equal (the tie-break decides)
_LABELS = {"accuracy": "accuracy", "top1_accuracy": "top-1 accuracy", "loss": "loss"}


@dataclass
class Candidate:
    """One registered version as the policy sees it (validation numbers, mean over the sweep's datasets).

    ``compression``: the whole-model attention compression ratio for a ``composed`` variant, the edited
    layer's MHA compression ratio for a single-``layer`` one; 1.0 means nothing compressed (the base).
    ``paired_val``: ``PairedComparison.to_dict()`` of this version against the base on the validation
    items (all datasets pooled), or None when there is none (then it cannot qualify under either objective).
    ``guard_val``: the same comparison of validation *generation* accuracy (column ``correct``), read by the
    generation guard (module docstring); None when it was not measured (the guard cannot check it).
    """

    version: int
    name: str
    val_metric: float
    val_loss: float
    compression: float = 1.0
    kind: Kind = "layer"
    paired_val: Mapping | None = None
    guard_val: Mapping | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Candidate {self.name!r}: kind must be one of {list(KINDS)}; got {self.kind!r}")
        if not (isinstance(self.compression, (int, float)) and math.isfinite(self.compression) and self.compression > 0):
            raise ValueError(f"Candidate {self.name!r}: compression must be a positive ratio (1.0: none); "
                             f"got {self.compression!r}")

    @property
    def label(self) -> str:
        return f"v{self.version} ({self.name})"


@dataclass
class Decision:
    """What the policy decided: ``promote`` (set ``champion`` on ``version``), the ``rule`` (objective) and
    ``sentence``, one plain English sentence with the rule, the numbers and the tie-break if one decided.
    When nothing is promoted, ``version`` is the variant the rule weighed (its best, or the closest to
    qualifying), or None."""

    promote: bool
    version: int | None
    rule: str
    sentence: str

    @property
    def reason(self) -> str:
        """The sentence (the name the registry tags use)."""
        return self.sentence

    def as_tags(self) -> dict[str, str]:
        return {"decision": "promote" if self.promote else "keep", "version": str(self.version),
                "rule": self.rule, "reason": self.sentence}


def higher_is_better(metric: str) -> bool:
    return metric != "loss"


def rank_key(candidate: Candidate, metric: str) -> tuple[float, float]:
    """Sort key, best first: metric (direction-aware), then lower validation loss."""
    primary = -candidate.val_metric if higher_is_better(metric) else candidate.val_metric
    return (primary, candidate.val_loss)


def harms_generation(candidate: Candidate, alpha: float) -> bool:
    """The generation guard: the candidate's validation generation accuracy is significantly below the
    base's (one-sided exact McNemar p of "variant worse" < ``alpha``). False when it was not measured."""
    guard = candidate.guard_val
    if guard is None or guard.get("variant_worse_p") is None:
        return False
    if guard.get("metric") != "correct":
        raise ValueError(f"{candidate.label}: guard_val compares {guard.get('metric')!r}; the generation guard needs "
                         "a comparison of 'correct' (generation accuracy)")
    return float(guard["variant_worse_p"]) < alpha


def best_candidates(candidates: list[Candidate], metric: str, k: int) -> list[Candidate]:
    """The ``k`` best by the validation metric (ties by lower loss)."""
    return sorted(candidates, key=lambda c: rank_key(c, metric))[:k]


def non_inferior(candidate: Candidate, metric: str, margin: float) -> bool:
    """The 95% interval of the paired validation difference stays within ``margin`` of the base:
    accuracy-like metrics ``accuracy_diff_ci[0] >= -margin``; ``loss``: ``loss_diff_ci[1] <= margin``.
    No comparison or an unknown interval (one item) is not evidence of non-inferiority."""
    bound = _bound(candidate, metric)
    if bound is None:
        return False
    return bound >= -margin if higher_is_better(metric) else bound <= margin


def shortlist(candidates: list[Candidate], objective: str, metric: str, margin: float, k: int,
              alpha: float | None = None) -> list[Candidate]:
    """The ``k`` candidates the objective looks at first (e.g. for the test split): ``denoise``: best by the
    validation metric; ``compress``: the qualifying ones in the rule's order, then the others by the metric.
    With ``alpha``, candidates the generation guard stops (:func:`harms_generation`) come last."""
    _check(objective, metric, 0.05, margin)
    if alpha is not None:
        allowed = [c for c in candidates if not harms_generation(c, alpha)]
        stopped = [c for c in candidates if harms_generation(c, alpha)]
        return (shortlist(allowed, objective, metric, margin, k) + shortlist(stopped, objective, metric, margin, k))[:k]
    if objective == "denoise":
        return best_candidates(candidates, metric, k)
    ok = sorted(_compress_pool(candidates, metric, margin), key=functools.cmp_to_key(_compress_cmp(metric)))
    taken = set(map(id, ok))
    rest = best_candidates([c for c in candidates if id(c) not in taken], metric, len(candidates))
    return (ok + rest)[:k]


def decide(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, objective: str,
           metric: str, alpha: float = 0.05, margin: float = 0.02) -> Decision:
    """Apply the ``objective``'s rule (module docstring) to the sweep's ``candidates``.

    ``baseline``: the base model's own numbers (for the sentence); ``current``: the comparable current
    champion (:func:`comparable_champion`) or None; ``alpha``: the family-wise significance level of
    ``denoise`` and of the generation guard; ``margin``: the non-inferiority margin of ``compress`` (accuracy
    as a fraction, 0.02 = 2 points; nats for ``loss``).
    """
    _check(objective, metric, alpha, margin)
    for c in candidates:
        _check_paired(c, metric)
    if not candidates:
        return Decision(False, None, objective, f"No promotion under the {objective} rule: no variants were evaluated.")
    stopped = {id(c) for c in candidates if harms_generation(c, alpha)}
    if objective == "denoise":
        decision = _denoise(candidates, baseline, current, metric, alpha, stopped)
    else:
        decision = _compress(candidates, baseline, current, metric, margin, stopped)
    return _with_guard(decision, candidates, stopped, alpha)


def _with_guard(decision: Decision, candidates: list[Candidate], stopped: set[int], alpha: float) -> Decision:
    """The decision's sentence with what the generation guard did: the promoted variant's check, and the
    variants it stopped (the one the rule would otherwise have taken first)."""
    by_version = {c.version: c for c in candidates}
    parts = []
    chosen = by_version.get(decision.version) if decision.promote else None
    if chosen is not None:
        if chosen.guard_val is None:
            parts.append("generation guard not applied: its validation generation accuracy was not measured")
        else:
            parts.append(f"generation guard passed ({_guard_text(chosen)} >= alpha {alpha:g})")
    if stopped:
        worst = min((c for c in candidates if id(c) in stopped), key=lambda c: float(c.guard_val["variant_worse_p"]))
        n = len(stopped)
        parts.append(f"the generation guard stopped {n} variant{'s' * (n != 1)} whose validation generation accuracy "
                     f"is significantly below the base's (one-sided McNemar p < alpha {alpha:g}; the clearest, {worst.label}: "
                     f"{_guard_text(worst)})")
    if not parts:
        return decision
    sentence = decision.sentence[:-1] + "; " + "; ".join(parts) + "."
    return Decision(decision.promote, decision.version, decision.rule, sentence)


def _guard_text(c: Candidate) -> str:
    g = c.guard_val
    return (f"validation generation accuracy {100 * float(g['accuracy_diff']):+.1f} points on {g['n']} items, "
            f"one-sided p{_eq_p(float(g['variant_worse_p']))}")


def _denoise(candidates, baseline, current, metric, alpha, stopped: set[int]) -> Decision:
    n_all = len(candidates)
    tested = [c for c in candidates if c.paired_val is not None]  # the Holm family: every variant compared
    ranked = sorted((c for c in candidates if id(c) not in stopped), key=lambda c: rank_key(c, metric))
    if not ranked:
        return Decision(False, None, "denoise",
                        f"No promotion under the denoise rule: all {n_all} variants lose validation generation "
                        f"accuracy significantly{'; v%d stays champion' % current.version if current else ''}.")
    best = ranked[0]
    adjusted = dict(zip(map(id, tested), holm_adjust([_p_value(c, metric) for c in tested])))  # one family
    rank_text = f"the best validation {_LABELS[metric]} of {n_all} variant{'s' * (n_all != 1)}"
    versus = f"{_fmt(best.val_metric, metric)} vs the base's {_fmt(baseline.val_metric, metric)}"
    head = f"{rank_text}, {best.label} at {versus},"  # for "No promotion": the sentence names it here
    stays = f"; v{current.version} stays champion" if current is not None else ""
    if best.paired_val is None:
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} has no paired validation comparison with "
                        f"the base, so its gain cannot be tested{stays}.")
    diff = _diff(best, metric)
    gain = diff > 0 if higher_is_better(metric) else diff < 0
    p_adj = adjusted[id(best)]
    test = (f"on {best.paired_val['n']} validation items ({_fmt_diff(best, metric)}, {_test_name(metric)} "
            f"p{_eq_p(_p_value(best, metric))}, Holm-adjusted p{_eq_p(p_adj)} {'<' if p_adj < alpha else '>='} "
            f"alpha {alpha:g} over {len(tested)} comparison{'s' * (len(tested) != 1)})")
    tie = _denoise_tie(ranked, metric)
    if not (gain and p_adj < alpha):
        what = "is not a significant gain" if gain else "is no gain over the base"
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} {what} {test}{tie}{stays}.")
    if current is not None and current.version == best.version:
        return Decision(True, best.version, "denoise",
                        f"Kept {best.label} as champion under the denoise rule: it is again {rank_text}, "
                        f"{versus}, a significant gain {test}{tie}.")
    if current is not None and not rank_key(best, metric) < rank_key(current, metric):
        return Decision(False, best.version, "denoise",
                        f"No promotion under the denoise rule: {head} is a significant gain {test}{tie}, but it does "
                        f"not beat the current champion v{current.version} at {_fmt(current.val_metric, metric)}, "
                        f"which stays champion.")
    bar = (f"; it beats the current champion v{current.version} at {_fmt(current.val_metric, metric)}"
           if current is not None else "")
    return Decision(True, best.version, "denoise",
                    f"Promoted {best.label} under the denoise rule: {rank_text}, {versus}, is a significant gain "
                    f"{test}{tie}{bar}.")


def _compress(candidates, baseline, current, metric, margin, stopped: set[int]) -> Decision:
    n_all = len(candidates)
    qualifying = _compress_pool(candidates, metric, margin)
    pool = sorted((c for c in qualifying if id(c) not in stopped), key=functools.cmp_to_key(_compress_cmp(metric)))
    margin_text = f"margin {100 * margin:g} points" if higher_is_better(metric) else f"margin {margin:g} nats"
    stays = f"; v{current.version} stays champion" if current is not None else ""
    if not pool and qualifying:
        n = len(qualifying)
        return Decision(False, None, "compress",
                        f"No promotion under the compress rule: {'all ' if n != 1 else ''}{n} variant{'s' * (n != 1)} "
                        f"non-inferior to the base on {qualifying[0].paired_val['n']} validation items "
                        f"({margin_text}) {'lose' if n != 1 else 'loses'} validation generation accuracy "
                        f"significantly{stays}.")
    if not pool:
        compared = [c for c in candidates if _bound(c, metric) is not None and c.compression > 1 + COMPRESSION_TIE]
        if not compared:
            why = (f"none of the {n_all} variants both compresses (ratio > 1) and has" if n_all != 1 else
                   "the only variant does not both compress (ratio > 1) and have")
            why += " a paired validation comparison with the base"
            return Decision(False, None, "compress", f"No promotion under the compress rule: {why}{stays}.")
        sign = 1 if higher_is_better(metric) else -1
        closest = max(compared, key=lambda c: sign * _bound(c, metric))
        none = f"none of the {n_all} variants is" if n_all != 1 else "the only variant is not"
        return Decision(False, closest.version, "compress",
                        f"No promotion under the compress rule: {none} "
                        f"non-inferior to the base on {closest.paired_val['n']} validation items ({margin_text}; "
                        f"the closest, {closest.label} at {_fmt_ratio(closest)}, has {_fmt_diff(closest, metric)}){stays}.")
    chosen = pool[0]
    what = (f"highest {_kind_text(chosen)} {_fmt_ratio(chosen)} among {len(pool)} of {n_all} "
            f"variant{'s' * (n_all != 1)} non-inferior "
            f"to the base on {chosen.paired_val['n']} validation items ({_fmt_diff(chosen, metric)}, {margin_text}; "
            f"validation {_LABELS[metric]} {_fmt(chosen.val_metric, metric)} vs the base's "
            f"{_fmt(baseline.val_metric, metric)})")
    if chosen.kind == "composed" and any(c.kind == "layer" for c in pool):
        what += " (composed variants rank before single-layer ones, whose ratios are per layer)"
    tie = _compress_tie(pool, metric)
    if current is not None and current.version == chosen.version:
        return Decision(True, chosen.version, "compress",
                        f"Kept {chosen.label} as champion under the compress rule: it is again the {what}{tie}.")
    if current is not None and _compress_cmp(metric)(chosen, current) >= 0:
        return Decision(False, chosen.version, "compress",
                        f"No promotion under the compress rule: {chosen.label}, the {what}{tie}, does not beat the "
                        f"current champion v{current.version} ({_kind_text(current)} {_fmt_ratio(current)}, "
                        f"validation {_LABELS[metric]} {_fmt(current.val_metric, metric)}), which stays champion.")
    bar = ""
    if current is not None:
        same = current.kind == chosen.kind and abs(current.compression - chosen.compression) <= COMPRESSION_TIE
        if current.kind != chosen.kind:  # only composed over layer gets here
            bar = f"; as a composed variant it outranks the current champion v{current.version}, a single-layer one"
        elif same:
            bar = (f"; it ties the current champion v{current.version} at {_fmt_ratio(current)} with a better "
                   f"validation {_LABELS[metric]} ({_fmt(chosen.val_metric, metric)} vs {_fmt(current.val_metric, metric)})")
        else:
            bar = f"; it compresses more than the current champion v{current.version} ({_fmt_ratio(current)})"
    return Decision(True, chosen.version, "compress", f"Promoted {chosen.label} under the compress rule: {what}{tie}{bar}.")


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
    tags, metrics = info["tags"], info["metrics"]
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


def decision_tags(decision: Decision, paired: dict | None) -> dict[str, str]:
    """Tags that record a decision (``promotion.reason`` is the sentence), with the champion's paired test
    comparison against the baseline."""
    tags = {f"promotion.{k}": v for k, v in decision.as_tags().items()}
    for dataset, by_column in (paired or {}).items():
        for column, stats in by_column.items():
            for key, value in stats.items():
                tags[f"promotion.test_vs_baseline.{dataset}.{column}.{key}"] = str(value)
    return tags


# ---- helpers ------------------------------------------------------------------------------------------

def _check(objective: str, metric: str, alpha: float, margin: float) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}; got {metric!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (the significance level, e.g. 0.05); got {alpha!r}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1) (accuracy as a fraction, 0.02 = 2 points); got {margin!r}")


def _check_paired(c: Candidate, metric: str) -> None:
    column = PAIRED_COLUMN.get(metric)
    if c.paired_val is not None and column is not None and c.paired_val.get("metric") != column:
        raise ValueError(f"{c.label}: paired_val compares {c.paired_val.get('metric')!r}, but the metric {metric!r} "
                         f"needs a comparison of {column!r}")


def _diff(c: Candidate, metric: str) -> float:
    return float(c.paired_val["accuracy_diff" if higher_is_better(metric) else "loss_diff"])


def _interval(c: Candidate, metric: str) -> tuple[float, float] | None:
    ci = c.paired_val.get("accuracy_diff_ci" if higher_is_better(metric) else "loss_diff_ci")
    if ci is None or any(v is None or not math.isfinite(v) for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def _bound(c: Candidate, metric: str) -> float | None:
    """The end of the difference's interval that non-inferiority tests (None: no usable interval)."""
    ci = _interval(c, metric) if c.paired_val is not None else None
    return None if ci is None else (ci[0] if higher_is_better(metric) else ci[1])


def _p_value(c: Candidate, metric: str) -> float:
    """Two-sided p-value of "no difference from the base" (1 when there is no evidence)."""
    if higher_is_better(metric):
        return float(c.paired_val["mcnemar_p"])
    ci = c.paired_val.get("loss_diff_ci") or (None, None)
    p = normal_p_from_interval(c.paired_val["loss_diff"], ci)
    return 1.0 if math.isnan(p) else p


def _compress_pool(candidates: list[Candidate], metric: str, margin: float) -> list[Candidate]:
    return [c for c in candidates if c.compression > 1 + COMPRESSION_TIE and non_inferior(c, metric, margin)]


def _compress_cmp(metric: str):
    """Comparison for the compress order, best first: composed before layer, higher compression, then the
    validation metric and loss (:func:`rank_key`)."""
    def cmp(a: Candidate, b: Candidate) -> int:
        if a.kind != b.kind:
            return -1 if a.kind == "composed" else 1
        if abs(a.compression - b.compression) > COMPRESSION_TIE:
            return -1 if a.compression > b.compression else 1
        ka, kb = rank_key(a, metric), rank_key(b, metric)
        return -1 if ka < kb else (1 if ka > kb else 0)
    return cmp


def _denoise_tie(ranked: list[Candidate], metric: str) -> str:
    if len(ranked) < 2 or ranked[0].val_metric != ranked[1].val_metric:
        return ""
    a, b = ranked[0], ranked[1]
    if a.val_loss == b.val_loss:
        return f"; it tied on {_LABELS[metric]} and validation loss with {b.label} and came first in the sweep's order"
    return (f"; it tied on {_LABELS[metric]} with {b.label} and won on lower validation loss "
            f"{a.val_loss:.3f} vs {b.val_loss:.3f}")


def _compress_tie(pool: list[Candidate], metric: str) -> str:
    if len(pool) < 2:
        return ""
    a, b = pool[0], pool[1]
    if a.kind != b.kind or abs(a.compression - b.compression) > COMPRESSION_TIE:
        return ""
    if a.val_metric != b.val_metric:
        better = "higher" if higher_is_better(metric) else "lower"
        why = f"{better} validation {_LABELS[metric]} {_fmt(a.val_metric, metric)} vs {_fmt(b.val_metric, metric)}"
    elif a.val_loss != b.val_loss:
        why = f"lower validation loss {a.val_loss:.3f} vs {b.val_loss:.3f}"
    else:
        why = "place in the sweep's order (equal metric and loss)"
    return f"; it tied at {_fmt_ratio(a)} with {b.label} and was chosen for its {why}"


def _kind_text(c: Candidate) -> str:
    return "whole-model attention compression" if c.kind == "composed" else "MHA compression of the edited layer"


def _test_name(metric: str) -> str:
    return "McNemar" if higher_is_better(metric) else "normal"


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if higher_is_better(metric) else f"{value:.3f}"


def _fmt_ratio(c: Candidate) -> str:
    return f"{c.compression:.1f}x"


def _eq_p(p: float) -> str:
    """``=0.014`` or, below what a double resolves, ``<1e-15`` (never a misleading ``=0``)."""
    return f"={p:.2g}" if p >= 1e-15 else "<1e-15"


def _fmt_diff(c: Candidate, metric: str) -> str:
    diff, ci = _diff(c, metric), _interval(c, metric)
    if higher_is_better(metric):
        interval = f"95% CI {100 * ci[0]:+.1f}..{100 * ci[1]:+.1f}" if ci else "95% CI unknown"
        return f"{_LABELS[metric]} difference {100 * diff:+.1f} points, {interval}"
    interval = f"95% CI {ci[0]:+.3f}..{ci[1]:+.3f}" if ci else "95% CI unknown"
    return f"loss difference {diff:+.3f}, {interval}"
