"""Composed variants at target ratios: the sweep's single-layer edits allocated by ``tensorllm compress``'s solver.

For each target ``R`` (``SweepConfig.targets``) choose, for every swept layer, one of its measured Tucker edits or
dense, with the least summed damage such that the whole model's attention parameters shrink at least ``R``-fold.
This is the multiple-choice knapsack of ``tensorllm compress``, solved by the same function,
:func:`tensorllm.compression.allocate.allocate` (exact dynamic programming over the budget; the damages are taken
as additive over layers, and the composed model is then measured as a whole like every variant).

* **Damage** of an edit: what the sweep already measured for its single-layer variant, the paired increase of the
  mean answer loss against the base (nats), on the *build* half of the validation items, datasets pooled
  (:mod:`flows.holdout`). The allocation looks at validation outcomes, so, like the greedy composition, the
  allocated variant's paired comparisons that the promotion rule tests use only the *confirm* half.
* **Cost**: the attention parameters the edit leaves in the whole model, counted as the export stores the layer
  (:func:`tensorllm.composed.whole_model_size`: a layer whose factorised form would not pay off stays dense and
  saves nothing). Layers outside the sweep stay dense, so a target beyond what the swept layers can give at
  their smallest edits is *unreachable*: it is reported (:attr:`Allocated.note`), not raised.

:func:`allocate_plans` is pure (records in, plans out); :func:`costed_edits` reads the sweep's evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tensorllm.artifact import read_meta
from tensorllm.composed import whole_model_size
from tensorllm.compression.allocate import allocate

from .compose import ComposedPlan, LayerEdit, edits_name, layers_label
from .holdout import half_mean


@dataclass(frozen=True)
class CostedEdit:
    """One single-layer edit as the allocation sees it: what it saves and what it costs in validation loss."""

    edit: LayerEdit
    saved: int  # whole-model attention parameters the edit removes (0: the export keeps the layer dense)
    damage: float  # paired validation loss increase against the base, nats (build half); may be negative


@dataclass
class Allocated:
    """The allocated plans (one per distinct choice; a choice that meets several targets is one plan) and what
    the swept layers can reach."""

    plans: list[ComposedPlan]
    unreachable: list[float]
    reachable: float  # the largest whole-model attention ratio the swept layers give (every layer at its smallest)
    layers: list[int] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One line for the sweep's summary."""
        served = [t for p in self.plans for t in p.tags["allocation.targets"].split(",")]
        made = "no composed variant"
        if self.plans:
            made = (f"{len(self.plans)} composed variant{'s' if len(self.plans) > 1 else ''} for "
                    f"target{'s' if len(served) > 1 else ''} {', '.join(served)}")
        if not self.unreachable:
            return f"allocate: {made}."
        where = f"layers {layers_label(self.layers)}" if self.layers else "no layer"
        return (f"allocate: {made}; target{'s' if len(self.unreachable) > 1 else ''} "
                f"{', '.join(_x(t) for t in self.unreachable)} not reachable: the swept {where} at their smallest "
                f"edits give at most {self.reachable:.3f}x of the whole model's attention (sweep more layers)")


def _x(ratio: float) -> str:
    return f"{ratio:g}x"


def allocate_plans(edits: Sequence[CostedEdit], attention_params: int, targets: Sequence[float]) -> Allocated:
    """One least-damage plan per target whose whole-model attention ratio is at least the target.

    ``attention_params``: the base model's attention parameters (every layer, swept or not). A layer's options
    are dense (saves 0, damage 0) and each of its edits. The knapsack's cost of an option is what the layer
    keeps beyond its smallest option, so every cost is >= 0; the budget is what the target allows beyond every
    swept layer at its smallest. Plans that come out identical for several targets are one plan, named after
    the largest target it meets, with every target it serves in its tag ``allocation.targets``.
    """
    if attention_params <= 0:
        raise ValueError(f"attention_params must be > 0 (the base's attention parameters); got {attention_params}")
    by_layer: dict[int, list[CostedEdit]] = {}
    for e in edits:
        if e.saved < 0 or not math.isfinite(e.damage):
            raise ValueError(f"layer {e.edit.layer} {e.edit.ranks}: saved must be >= 0 and damage finite; "
                             f"got {e.saved}, {e.damage}")
        by_layer.setdefault(e.edit.layer, []).append(e)
    layers = sorted(by_layer)
    options = [[None, *by_layer[layer]] for layer in layers]  # None: dense
    most = [max(e.saved for e in by_layer[layer]) for layer in layers]
    floor_params = attention_params - sum(most)  # every swept layer at its smallest option
    reachable = attention_params / floor_params if floor_params > 0 else math.inf
    costs = [[m - (0 if o is None else o.saved) for o in row] for m, row in zip(most, options)]
    damages = [[0.0 if o is None else o.damage for o in row] for row in options]
    chosen: dict[tuple[str, ...], tuple[list[CostedEdit], list[float], object]] = {}
    unreachable = []
    for target in sorted(set(targets)):
        if not target > 1:
            raise ValueError(f"targets must be ratios > 1; got {target}")
        budget = math.floor(attention_params / target) - floor_params
        if not layers or budget < 0:
            unreachable.append(target)
            continue
        solution = allocate(costs, damages, budget)
        picked = [row[k] for row, k in zip(options, solution.choice) if k != 0]
        key = tuple(sorted(e.edit.artifact for e in picked))
        served = chosen.get(key, (picked, [], solution))[1]
        chosen[key] = (picked, [*served, target], solution)
    plans = [_plan(picked, served, solution, attention_params) for picked, served, solution in chosen.values()]
    return Allocated(plans=plans, unreachable=unreachable, reachable=reachable, layers=layers)


def _plan(picked: list[CostedEdit], served: list[float], solution, attention_params: int) -> ComposedPlan:
    after = attention_params - sum(e.saved for e in picked)
    target = max(served)
    return ComposedPlan(
        name=edits_name(f"allocate-{_x(target)}-", [e.edit for e in picked]), kind="allocate",
        edits=[e.edit for e in picked],
        metrics={"allocation.target_ratio": float(target), "allocation.achieved_ratio": attention_params / after,
                 "allocation.predicted_loss_increase": float(sum(e.damage for e in picked)),
                 "allocation.optimality_gap_params": float(solution.gap_params)},
        tags={"allocation.targets": ",".join(_x(t) for t in served), "allocation.target_ratio": f"{target:g}"})


def costed_edits(model: str, edits: Sequence[LayerEdit], examples: dict[str, dict[str, str]],
                 base_examples: dict[str, str]) -> tuple[list[CostedEdit], int]:
    """Each edit's saving (whole-model attention parameters, as exported) and damage (the build half's mean loss
    of its single-layer variant minus the base's: the same items, so the paired mean difference), and the base's
    attention parameters. ``examples[artifact]``: dataset -> the validation examples file of that edit's variant."""
    before = whole_model_size(model, []).attention_params_before
    base_loss = half_mean(base_examples, "loss", "build")
    out = []
    for e in edits:
        size = whole_model_size(model, [read_meta(e.artifact)])
        out.append(CostedEdit(e, before - size.attention_params_after,
                              half_mean(examples[e.artifact], "loss", "build") - base_loss))
    return out, before
