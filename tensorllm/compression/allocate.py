"""Choose one option per layer with the least total damage under a parameter budget (multiple-choice knapsack).

Layer ``l`` has options ``k`` with cost ``params[l][k]`` (attention parameters the layer keeps) and
``damage[l][k]`` (the measured damage of that one edit, :mod:`.sensitivity`). Find ``k_l`` minimising
``sum_l damage[l][k_l]`` subject to ``sum_l params[l][k_l] <= budget``. Damages are taken as additive over layers
(the usual first-order assumption of sensitivity-based allocation, e.g. ASVD); the composed model is then
measured as a whole (:mod:`.verify`).

Solved exactly by dynamic programming over the budget in units of ``unit`` parameters. Each cost is rounded
*up* to whole units, so every answer is truly within the budget; the rounding can overcount a choice by less
than ``n_layers * unit`` parameters, so the answer is at least as good as the true optimum under the budget
``budget - n_layers * unit`` (the stated optimality gap, ``Allocation.gap_params``). With integer costs and
``unit=1`` it is the exact optimum (tested against brute force).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 20_000  # budget units: the gap is n_layers / 20,000 of the budget (0.15% for 30 layers)


@dataclass(frozen=True)
class Allocation:
    """The choice per layer (an option index), its total damage and parameters, and the DP's resolution."""

    choice: tuple[int, ...]
    damage: float
    params: int
    budget: int
    unit: int
    gap_params: int  # the answer is optimal for any budget <= budget - gap_params (see the module docstring)


def _check(params: Sequence[Sequence[int]], damage: Sequence[Sequence[float]], budget: int) -> None:
    if not params or len(params) != len(damage):
        raise ValueError(f"params and damage must list the same layers (got {len(params)} and {len(damage)}), "
                         "at least one")
    for layer, (p, d) in enumerate(zip(params, damage)):
        if not p or len(p) != len(d):
            raise ValueError(f"layer {layer}: {len(p)} costs and {len(d)} damages; each option needs one of each")
        if any(c < 0 for c in p) or any(not math.isfinite(x) for x in d):
            raise ValueError(f"layer {layer}: costs must be >= 0 and damages finite; got {list(p)}, {list(d)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be an integer >= 0 parameters; got {budget!r}")


def allocate(params: Sequence[Sequence[int]], damage: Sequence[Sequence[float]], budget: int,
             n_bins: int = DEFAULT_BINS) -> Allocation:
    """The least-damage choice of one option per layer whose total cost is at most ``budget``.

    Raises ``ValueError`` when even the cheapest option of every layer exceeds the budget (naming that total).
    """
    _check(params, damage, budget)
    cheapest = sum(min(p) for p in params)
    if cheapest > budget:
        raise ValueError(f"budget {budget:,} parameters is below the smallest reachable total {cheapest:,} (the "
                         "cheapest option of every layer); lower the target ratio or add smaller ranks to the grid")
    unit = max(1, math.ceil(budget / n_bins))
    size = budget // unit + 1
    best = np.zeros(size)  # best[b]: least damage of the layers so far with at most b units
    back = []
    for p, d in zip(params, damage):
        units = [math.ceil(c / unit) for c in p]
        new = np.full(size, np.inf)
        arg = np.full(size, -1, dtype=np.int32)
        for k, (u, dk) in enumerate(zip(units, d)):
            if u >= size:
                continue
            cand = np.full(size, np.inf)
            cand[u:] = best[: size - u] + dk
            better = cand < new
            new[better], arg[better] = cand[better], k
        best = new
        back.append(arg)
    if not math.isfinite(best[-1]):  # every layer fits alone but rounding up to units does not: a finer grid helps
        raise ValueError(f"no choice fits the budget {budget:,} at the resolution of {unit} parameters; raise n_bins")
    choice, b = [], size - 1
    for layer in range(len(params) - 1, -1, -1):
        k = int(back[layer][b])
        choice.append(k)
        b -= math.ceil(params[layer][k] / unit)
    choice.reverse()
    total = sum(params[layer][k] for layer, k in enumerate(choice))
    return Allocation(choice=tuple(choice), damage=float(sum(damage[layer][k] for layer, k in enumerate(choice))),
                      params=total, budget=budget, unit=unit, gap_params=0 if unit == 1 else len(params) * unit)
