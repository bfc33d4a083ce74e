"""Paired comparison of a variant with the base model on the same items (from their examples jsonl).

* Accuracy: difference variant - base, with McNemar's exact two-sided p-value on the discordant pairs
  (``b``: base right & variant wrong, ``c``: base wrong & variant right). Pairing removes the item
  difficulty from the comparison, so it detects much smaller changes than two separate Wilson intervals.
  Its 95% interval is the normal interval of the mean of the per-item differences (variant - base, each
  -1, 0 or +1), the interval a non-inferiority rule compares with its margin; ``variant_worse_p`` is
  the one-sided exact p-value that the variant is worse (P(X >= b), X ~ Binomial(b + c, 1/2)).
* Loss: mean paired difference variant - base and its 95% normal-approximation interval.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import _json_safe
from .records import ExampleRecord, read_examples
from .stats import mcnemar_exact, mcnemar_one_sided, mean_interval

METRICS = ("correct", "top1_correct", "exact_match")

Examples = str | os.PathLike | Iterable[Mapping | ExampleRecord]


@dataclass
class PairedComparison:
    """Variant vs base on ``n`` shared items (``metric`` is the per-item correctness field compared)."""

    n: int
    metric: str
    base_accuracy: float
    variant_accuracy: float
    accuracy_diff: float
    accuracy_diff_ci: tuple[float, float]  # 95%, mean of the per-item 0/1 differences (NaN for n = 1)
    base_only_correct: int  # b
    variant_only_correct: int  # c
    mcnemar_p: float  # two-sided exact
    variant_worse_p: float  # one-sided exact, alternative "variant worse than base"
    base_loss: float
    variant_loss: float
    loss_diff: float
    loss_diff_ci: tuple[float, float]

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN as None)."""
        return _json_safe(asdict(self))


def _rows(examples: Examples, what: str) -> dict[str, Mapping]:
    if isinstance(examples, (str, os.PathLike)):
        rows: list = read_examples(Path(examples))
    else:
        rows = [r.to_dict() if isinstance(r, ExampleRecord) else r for r in examples]
    by_id: dict[str, Mapping] = {}
    for row in rows:
        if not isinstance(row, Mapping) or "id" not in row:
            raise ValueError(f"{what}: every example must be a mapping with an 'id', got {row!r:.80}")
        if row["id"] in by_id:
            raise ValueError(f"{what}: item id {row['id']!r} appears twice; one evaluation per file")
        by_id[row["id"]] = row
    return by_id


def compare_paired(base: Examples, variant: Examples, metric: str = "correct") -> PairedComparison:
    """Compare per-example results of a variant with the base's on the same items.

    ``base``/``variant``: an examples jsonl path (see ``evaluate(..., examples_out=...)``) or the records.
    Both must hold exactly the same item ids (same dataset, split, limit and seed). ``metric``:
    ``"correct"`` (the task accuracy) or ``"top1_correct"`` (first-token top-1; use it for generative
    sets evaluated with ``generate=False``, where ``correct`` is null).
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; allowed: {list(METRICS)}")
    a, b = _rows(base, "base"), _rows(variant, "variant")
    only_base, only_variant = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_base or only_variant:
        raise ValueError(
            f"base and variant must cover the same items: {len(only_base)} only in base (e.g. {only_base[:3]}), "
            f"{len(only_variant)} only in variant (e.g. {only_variant[:3]}); use the same dataset, split, limit and seed"
        )
    if not a:
        raise ValueError("no examples to compare")
    ids = sorted(a)
    for name, rows in (("base", a), ("variant", b)):
        missing = [i for i in ids if not isinstance(rows[i].get(metric), bool)]
        if missing:
            raise ValueError(
                f"{name}: {len(missing)} item(s) have no boolean {metric!r} (e.g. {missing[0]!r}); "
                "for generative sets evaluated with generate=False use metric='top1_correct'"
            )
    n = len(ids)
    base_ok = [a[i][metric] for i in ids]
    variant_ok = [b[i][metric] for i in ids]
    only_b = sum(x and not y for x, y in zip(base_ok, variant_ok))
    only_c = sum(y and not x for x, y in zip(base_ok, variant_ok))
    base_acc, variant_acc = sum(base_ok) / n, sum(variant_ok) / n
    _, acc_ci = mean_interval([int(y) - int(x) for x, y in zip(base_ok, variant_ok)])
    base_losses = [float(a[i]["loss"]) for i in ids]
    variant_losses = [float(b[i]["loss"]) for i in ids]
    diff, diff_ci = mean_interval([v - u for u, v in zip(base_losses, variant_losses)])
    return PairedComparison(
        n=n, metric=metric, base_accuracy=base_acc, variant_accuracy=variant_acc, accuracy_diff=variant_acc - base_acc,
        accuracy_diff_ci=acc_ci, base_only_correct=only_b, variant_only_correct=only_c,
        mcnemar_p=mcnemar_exact(only_b, only_c), variant_worse_p=mcnemar_one_sided(only_b, only_c),
        base_loss=sum(base_losses) / n, variant_loss=sum(variant_losses) / n, loss_diff=diff, loss_diff_ci=diff_ci,
    )  # fmt: skip
