"""Whole-model composition: from the per-layer edits of a sweep to composed variants.

Three strategies, all built only from artifacts the sweep already decomposed:

* **uniform**: one rank configuration applied to every layer of the sweep (or its last N) — one composed
  variant per rank configuration;
* **allocate**: for each target ratio of the whole model's attention, the least-damage edit per layer (or
  dense) under that budget, chosen by the knapsack solver of ``tensorllm compress``; the damage of an edit is
  its measured validation loss increase on the *build* half (:mod:`flows.allocated`);
* **greedy**: the layers in order of their validation gain (the best single-layer edit of each layer
  against the baseline, on the selection metric), each edit kept only if the composed model stays
  non-inferior to the base (paired, every endpoint within its margin: :func:`flows.noninferiority.single_test`);
  :func:`greedy_order` gives the order, the flow runs the evaluations between the steps. All of it sees only
  the *build* half of the validation items; the composed variant is then tested by the promotion rule on
  the *confirm* half, which its construction never saw (:mod:`flows.holdout`).

Functions here are pure (records in, records out) so that the policy is testable without services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: every composition strategy's variant kind (the ``variant_kind`` tag is the strategy that built the variant)
COMPOSED_KINDS: tuple[str, ...] = ("uniform", "allocate", "greedy")
#: strategies that look at validation outcomes: built on the build half, tested on the confirm half (flows.holdout)
BUILT_ON_VALIDATION: tuple[str, ...] = ("allocate", "greedy")

@dataclass
class LayerEdit:
    """One single-layer Tucker variant of the sweep, as composition sees it."""

    layer: int
    ranks: tuple[int, int, int]
    artifact: str
    val_metric: float
    val_loss: float


@dataclass
class ComposedPlan:
    """A composed variant to evaluate: a name, its kind and the artifacts it applies (one per layer)."""

    name: str
    kind: str  # one of COMPOSED_KINDS
    edits: list[LayerEdit] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # registered with the variant (allocate: its target)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(e.layer for e in self.edits)

    @property
    def artifacts(self) -> list[str]:
        return [e.artifact for e in sorted(self.edits, key=lambda e: e.layer)]

    @property
    def first_layer(self) -> int:
        return min(self.layers)


def ranks_label(ranks) -> str:
    return "x".join(str(r) for r in ranks)


def layers_label(layers: list[int]) -> str:
    contiguous = layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}-{layers[-1]}" if contiguous and len(layers) > 1 else ",".join(map(str, layers))


def uniform_plans(edits: list[LayerEdit], last_n: int | None = None) -> list[ComposedPlan]:
    """One plan per rank configuration that every chosen layer has; the chosen layers are all layers of
    the sweep, or its last ``last_n``. Rank configurations are matched by resolved ranks (R1, R2, R3)."""
    layers = sorted({e.layer for e in edits})
    if last_n is not None:
        layers = layers[-last_n:]
    if len(layers) < 2:
        return []
    by_ranks: dict[tuple, dict[int, LayerEdit]] = {}
    for e in edits:
        if e.layer in layers:
            by_ranks.setdefault(tuple(e.ranks), {})[e.layer] = e
    plans = []
    for ranks, per_layer in by_ranks.items():
        if sorted(per_layer) == layers:
            plans.append(ComposedPlan(name=f"uniform-r{ranks_label(ranks)}-layers{layers_label(layers)}",
                                      kind="uniform", edits=[per_layer[layer] for layer in layers]))
    return plans


def greedy_order(edits: list[LayerEdit], baseline_metric: float, higher_is_better: bool = True) -> list[LayerEdit]:
    """The best edit of each layer (by the selection metric, then lower loss), layers ordered by that
    edit's validation gain over the baseline, largest first."""
    sign = 1.0 if higher_is_better else -1.0
    best: dict[int, LayerEdit] = {}
    for e in edits:
        current = best.get(e.layer)
        if current is None or (sign * e.val_metric, -e.val_loss) > (sign * current.val_metric, -current.val_loss):
            best[e.layer] = e
    return sorted(best.values(), key=lambda e: (-(sign * (e.val_metric - baseline_metric)), e.val_loss, e.layer))


def edits_name(prefix: str, edits: list[LayerEdit]) -> str:
    """``prefix`` then each edit as ``layer:R1xR2xR3``, by layer: ``greedy-26:8x4x2+27:8x4x2``."""
    return prefix + "+".join(f"{e.layer}:{ranks_label(e.ranks)}" for e in sorted(edits, key=lambda e: e.layer))


def greedy_name(edits: list[LayerEdit]) -> str:
    return edits_name("greedy-", edits)
