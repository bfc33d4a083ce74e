"""What the promotion policy reads and writes: :class:`Candidate` (one registered version's validation numbers),
:class:`Decision` (what was decided and the sentence saying why) and the small formatting helpers the rules'
sentences share. No decisions here: :mod:`flows.policy` and :mod:`flows.compress_rule` make them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["layer", "composed"]
KINDS: tuple[str, ...] = ("layer", "composed")
METRICS: tuple[str, ...] = ("accuracy", "top1_accuracy", "loss")
#: the per-item correctness column a paired comparison must use for each accuracy-like metric
PAIRED_COLUMN = {"accuracy": "correct", "top1_accuracy": "top1_correct"}
COMPRESSION_TIE = 1e-9  # compressions closer than this are equal (the tie-break decides)
LABELS = {"accuracy": "accuracy", "top1_accuracy": "top-1 accuracy", "loss": "loss"}


@dataclass
class Candidate:
    """One registered version as the policy sees it (validation numbers, mean over the sweep's datasets).

    ``compression``: the whole-model attention compression ratio for a ``composed`` variant, the edited
    layer's MHA compression ratio for a single-``layer`` one; 1.0 means nothing compressed (the base).
    ``paired_val``: ``PairedComparison.to_dict()`` of this version against the base on the validation
    items (all datasets pooled; for a greedy composition, the confirmation half only: :mod:`flows.compose`),
    or None when there is none (then it cannot qualify under either objective).
    ``guard_val``: the same comparison of validation *generation* accuracy (column ``correct``), read by the
    generation guard; None when it was not measured.
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

    @property
    def compresses(self) -> bool:
        return self.compression > 1 + COMPRESSION_TIE


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


def interval(paired: Mapping, key: str) -> tuple[float, float] | None:
    """``paired[key]`` (a 95% interval) as two floats, or None when unknown (one item, or absent)."""
    ci = paired.get(key)
    if ci is None or any(v is None or not math.isfinite(v) for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if higher_is_better(metric) else f"{value:.3f}"


def fmt_ratio(c: Candidate) -> str:
    return f"{c.compression:.1f}x"


def eq_p(p: float) -> str:
    """``=0.014`` or, below what a double resolves, ``<1e-15`` (never a misleading ``=0``)."""
    return f"={p:.2g}" if p >= 1e-15 else "<1e-15"


def fmt_accuracy_diff(paired: Mapping, label: str) -> str:
    """``top-1 accuracy difference -0.4 points, 95% CI -1.3..+0.5``."""
    ci = interval(paired, "accuracy_diff_ci")
    text = f"95% CI {100 * ci[0]:+.1f}..{100 * ci[1]:+.1f}" if ci else "95% CI unknown"
    return f"{label} difference {100 * float(paired['accuracy_diff']):+.1f} points, {text}"


def fmt_loss_diff(paired: Mapping) -> str:
    """``loss difference +0.010, 95% CI +0.007..+0.013`` (nats)."""
    ci = interval(paired, "loss_diff_ci")
    text = f"95% CI {ci[0]:+.3f}..{ci[1]:+.3f}" if ci else "95% CI unknown"
    return f"loss difference {float(paired['loss_diff']):+.3f}, {text}"


def fmt_diff(c: Candidate, metric: str) -> str:
    """The candidate's paired validation difference on the selection metric, with its interval."""
    if higher_is_better(metric):
        return fmt_accuracy_diff(c.paired_val, LABELS[metric])
    return fmt_loss_diff(c.paired_val)


def kind_text(c: Candidate) -> str:
    return "whole-model attention compression" if c.kind == "composed" else "MHA compression of the edited layer"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"
