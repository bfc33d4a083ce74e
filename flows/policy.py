"""The promotion policy: which registered version gets the ``champion`` alias, and why.

Rule: among the sweep's variants, the best by the validation selection metric (accuracy-like metrics:
higher is better, ties broken by lower validation loss; ``loss``: lower is better) is promoted when it
beats the baseline on validation *and* beats the current champion on validation (when the current
champion was measured on the same dataset, split size and metric, so the numbers are comparable).
Otherwise nothing moves and the reason is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Candidate:
    version: int
    name: str
    val_metric: float
    val_loss: float


@dataclass
class Decision:
    promote: bool
    version: int | None
    reason: str

    def as_tags(self) -> dict[str, str]:
        return {"decision": "promote" if self.promote else "keep", "version": str(self.version),
                "reason": self.reason}


def higher_is_better(metric: str) -> bool:
    return metric != "loss"


def rank_key(candidate: Candidate, metric: str) -> tuple[float, float]:
    """Sort key, best first: metric (direction-aware), then lower validation loss."""
    primary = -candidate.val_metric if higher_is_better(metric) else candidate.val_metric
    return (primary, candidate.val_loss)


def best_candidates(candidates: list[Candidate], metric: str, k: int) -> list[Candidate]:
    return sorted(candidates, key=lambda c: rank_key(c, metric))[:k]


def decide(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, metric: str) -> Decision:
    """Apply the rule above. ``current`` is the comparable current champion, or None."""
    if not candidates:
        return Decision(False, None, "no variants were evaluated")
    best = best_candidates(candidates, metric, 1)[0]

    def beats(a: Candidate, b: Candidate) -> bool:
        return rank_key(a, metric) < rank_key(b, metric)

    label = f"val_{metric}"
    if not beats(best, baseline):
        return Decision(False, best.version, f"best variant {best.name} ({label}={best.val_metric:.4f}, "
                                             f"loss {best.val_loss:.4f}) does not beat the baseline "
                                             f"({baseline.val_metric:.4f}, loss {baseline.val_loss:.4f})")
    if current is not None and current.version == best.version:
        return Decision(True, best.version, f"{best.name} is already champion and still the best ({label}={best.val_metric:.4f})")
    if current is not None and not beats(best, current):
        return Decision(False, best.version, f"best variant {best.name} ({label}={best.val_metric:.4f}) does not beat "
                                             f"the current champion v{current.version} ({current.val_metric:.4f})")
    return Decision(True, best.version, f"{best.name} has the best {label}={best.val_metric:.4f} "
                                        f"(baseline {baseline.val_metric:.4f}"
                                        + (f", previous champion v{current.version} {current.val_metric:.4f})" if current else ")"))


def comparable_champion(info: dict | None, settings: dict, metric: str) -> Candidate | None:
    """The current champion as a :class:`Candidate`, when its validation numbers are comparable with this
    sweep's (same datasets, validation size and selection metric); else None (it is then not a bar to clear)."""
    if info is None:
        return None
    tags, metrics = info["tags"], info["metrics"]
    same = (tags.get("datasets") == ",".join(settings["datasets"]) and tags.get("val_limit") == str(settings["val_limit"])
            and tags.get("selection_metric") == metric and f"val_{metric}" in metrics)
    if not same:
        return None
    return Candidate(int(info["version"]), tags.get("variant_name", "champion"), float(metrics[f"val_{metric}"]),
                     float(metrics["val_loss"]))


def decision_tags(decision: Decision, paired: dict | None) -> dict[str, str]:
    """Tags that record a decision, with the champion's paired test comparison against the baseline."""
    tags = {f"promotion.{k}": v for k, v in decision.as_tags().items()}
    for dataset, by_column in (paired or {}).items():
        for column, stats in by_column.items():
            for key, value in stats.items():
                tags[f"promotion.test_vs_baseline.{dataset}.{column}.{key}"] = str(value)
    return tags
