"""The multiple-choice knapsack: exact against brute force, feasible always, clear errors."""

from __future__ import annotations

import itertools
import random

import pytest

from tensorllm.compression.allocate import allocate


def brute_force(params, damage, budget):
    best = None
    for choice in itertools.product(*(range(len(p)) for p in params)):
        cost = sum(params[l][k] for l, k in enumerate(choice))
        if cost <= budget:
            d = sum(damage[l][k] for l, k in enumerate(choice))
            if best is None or d < best[0] - 1e-12:
                best = (d, choice)
    return best


def test_constructed_case_with_a_known_optimum():
    # three layers, dense (cost 10, no damage) or two cuts. Budget 18 needs 12 parameters saved. Cutting the
    # robust layers 0 and 2 hard (cost 4 each, damage 1 + 1) saves 12 at damage 2; the greedy "cut the cheapest
    # damage first" path would cut layer 1 lightly (damage 0.5) and then be forced into a worse total.
    params = [[10, 7, 4], [10, 6, 5], [10, 7, 4]]
    damage = [[0.0, 0.8, 1.0], [0.0, 0.5, 9.0], [0.0, 0.8, 1.0]]
    result = allocate(params, damage, budget=18)
    assert result.choice == (2, 0, 2)
    assert result.damage == pytest.approx(2.0) and result.params == 18 and result.gap_params == 0
    assert brute_force(params, damage, 18) == (pytest.approx(2.0), (2, 0, 2))


@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force_on_random_small_cases(seed):
    rng = random.Random(seed)
    n_layers = rng.randint(1, 5)
    params = [[rng.randint(1, 30) for _ in range(rng.randint(1, 4))] for _ in range(n_layers)]
    damage = [[round(rng.uniform(0, 5), 3) for _ in p] for p in params]
    budget = rng.randint(sum(min(p) for p in params), sum(max(p) for p in params))
    result = allocate(params, damage, budget)  # budget < 20,000: unit 1, exact
    expected = brute_force(params, damage, budget)
    assert result.damage == pytest.approx(expected[0], abs=1e-9)
    assert result.params <= budget


def test_coarse_units_stay_feasible_and_within_the_stated_gap():
    rng = random.Random(7)
    params = [[rng.randint(1000, 100_000) for _ in range(4)] for _ in range(6)]
    damage = [[rng.uniform(0, 1) for _ in p] for p in params]
    budget = 250_000
    result = allocate(params, damage, budget, n_bins=50)  # unit 5,000: rounding matters
    assert result.unit == 5000 and result.gap_params == 6 * 5000
    assert result.params <= budget  # costs are rounded up, so the answer is never over budget
    # no worse than the exact optimum at the budget reduced by the gap
    assert result.damage <= brute_force(params, damage, budget - result.gap_params)[0] + 1e-12


def test_unreachable_budget_is_one_clear_line():
    with pytest.raises(ValueError, match=r"below the smallest reachable total 9 \(the cheapest option"):
        allocate([[10, 4], [10, 5]], [[0, 1], [0, 1]], budget=8)


@pytest.mark.parametrize("params,damage,budget,match", [
    ([], [], 10, "same layers"),
    ([[1, 2]], [[0.0]], 10, "2 costs and 1 damages"),
    ([[1]], [[float("nan")]], 10, "damages finite"),
    ([[1]], [[0.0]], -1, "budget must be an integer >= 0"),
])
def test_bad_input(params, damage, budget, match):
    with pytest.raises(ValueError, match=match):
        allocate(params, damage, budget)
