"""The sweep's `allocate` composition (flows.allocated): least-damage plans at target ratios, by the solver of
`tensorllm compress`, on constructed cases whose optimum is known."""

from __future__ import annotations

import itertools
import random

import pytest

from flows import allocated
from flows.allocated import CostedEdit, allocate_plans
from flows.compose import LayerEdit
from flows.records import composed_variant, summary_row
from tensorllm.compression.allocate import allocate as library_solver


def costed(layer: int, saved: int, damage: float) -> CostedEdit:
    edit = LayerEdit(layer=layer, ranks=(saved, 1, 1), artifact=f"a/l{layer}-{saved}", val_metric=0.0, val_loss=0.0)
    return CostedEdit(edit, saved, damage)


# A model of 1,000 attention parameters; three swept layers, each with a mild and a strong edit:
# layer 0 takes compression cheaply, layer 1 is cheap at both sizes, layer 2 is fragile.
EDITS = [costed(0, 50, 0.01), costed(0, 90, 0.20),
         costed(1, 50, 0.05), costed(1, 90, 0.06),
         costed(2, 50, 0.30), costed(2, 90, 0.50)]


def chosen(plan) -> dict[int, int]:
    return {e.layer: e.ranks[0] for e in plan.edits}


def test_the_flow_calls_the_library_solver():
    assert allocated.allocate is library_solver  # one allocator for `compress` and the sweep


def test_each_target_gets_its_known_optimum():
    result = allocate_plans(EDITS, 1000, [1.1, 1.25])
    by_target = {p.metrics["allocation.target_ratio"]: p for p in result.plans}
    # 1.1x: at most 909 parameters, save >= 91. Cheapest: layers 0 and 1 at their mild edits (100 saved, 0.06);
    # a single edit saves at most 90, and any plan with a strong edit or layer 2 costs more
    assert chosen(by_target[1.1]) == {0: 50, 1: 50}
    assert by_target[1.1].metrics["allocation.predicted_loss_increase"] == pytest.approx(0.06)
    assert by_target[1.1].metrics["allocation.achieved_ratio"] == pytest.approx(1000 / 900)
    # 1.25x: save >= 200. (90, 90, 50) = 230 at 0.56 beats (50, 90, 90) at 0.57 and (90, 50, 90) at 0.75; no plan
    # without layer 2 saves 200 (at most 180)
    assert chosen(by_target[1.25]) == {0: 90, 1: 90, 2: 50}
    assert by_target[1.25].metrics["allocation.predicted_loss_increase"] == pytest.approx(0.56)
    assert by_target[1.25].metrics["allocation.achieved_ratio"] == pytest.approx(1000 / 770)
    assert by_target[1.25].name == "allocate-1.25x-0:90x1x1+1:90x1x1+2:50x1x1"
    assert by_target[1.25].kind == "allocate" and result.unreachable == []


def test_a_target_beyond_the_swept_layers_is_reported_not_raised():
    result = allocate_plans(EDITS, 1000, [1.5, 1.1, 3.0])
    # every swept layer at its strongest edit saves 270: 1000 / 730 = 1.37x at most
    assert result.reachable == pytest.approx(1000 / 730)
    assert result.unreachable == [1.5, 3.0] and len(result.plans) == 1
    assert result.note == ("allocate: 1 composed variant for target 1.1x; targets 1.5x, 3x not reachable: the swept "
                           "layers 0-2 at their smallest edits give at most 1.370x of the whole model's attention "
                           "(sweep more layers)")
    nothing = allocate_plans(EDITS, 1000, [2.0])
    assert nothing.plans == [] and nothing.note.startswith("allocate: no composed variant; target 2x not reachable")


def test_targets_with_the_same_plan_are_one_variant_named_after_the_largest():
    # 1.04x (save >= 39) and 1.05x (save >= 48): both are layer 0's mild edit alone (0.01)
    result = allocate_plans(EDITS, 1000, [1.05, 1.04])
    assert len(result.plans) == 1
    plan = result.plans[0]
    assert chosen(plan) == {0: 50} and plan.name == "allocate-1.05x-0:50x1x1"
    assert plan.tags == {"allocation.targets": "1.04x,1.05x", "allocation.target_ratio": "1.05"}


def test_an_edit_that_lowers_the_loss_is_taken_even_beyond_the_target():
    # a denoising edit (negative damage) lowers the sum: the least-damage plan takes it although 1.05x needs less
    # (layer 0's mild edit alone meets 1.05x: save >= 48)
    edits = [*EDITS, costed(3, 20, -0.02)]
    plan = allocate_plans(edits, 1000, [1.05]).plans[0]
    assert chosen(plan) == {0: 50, 3: 20}
    assert plan.metrics["allocation.predicted_loss_increase"] == pytest.approx(-0.01)
    assert plan.metrics["allocation.achieved_ratio"] == pytest.approx(1000 / 930)  # 1.075x > 1.05x


def test_an_edit_the_export_keeps_dense_saves_nothing():
    # layer 1's edit does not pay off (saved 0): it cannot help reach a target, so with a positive damage it is
    # never taken; with a negative one (a free denoising) it is, as its single-layer variant showed
    harmful = [costed(0, 60, 0.1), costed(1, 0, 0.05), costed(2, 60, 0.2)]
    result = allocate_plans(harmful, 1000, [1.1])
    assert chosen(result.plans[0]) == {0: 60, 2: 60}
    assert result.reachable == pytest.approx(1000 / 880)  # layer 1 adds nothing to what can be reached
    helpful = [costed(0, 60, 0.1), costed(1, 0, -0.05), costed(2, 60, 0.2)]
    assert chosen(allocate_plans(helpful, 1000, [1.1]).plans[0]) == {0: 60, 1: 0, 2: 60}


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_cases(seed):
    rng = random.Random(seed)
    edits = [costed(layer, rng.randint(1, 120), round(rng.uniform(-0.05, 1.0), 3))
             for layer in range(4) for _ in range(rng.randint(1, 3))]
    edits = list({(e.edit.layer, e.saved): e for e in edits}.values())  # one edit per (layer, size)
    targets = [1.05, 1.1, 1.2, 1.3]
    result = allocate_plans(edits, 1000, targets)
    by_layer = {}
    for e in edits:
        by_layer.setdefault(e.edit.layer, [None]).append(e)
    for target in targets:
        feasible = [combo for combo in itertools.product(*by_layer.values())
                    if 1000 - sum(e.saved for e in combo if e) <= 1000 // target]
        plan = next((p for p in result.plans if f"{target:g}x" in p.tags["allocation.targets"].split(",")), None)
        if not feasible:
            assert plan is None and target in result.unreachable
            continue
        best = min(sum(e.damage for e in combo if e) for combo in feasible)
        got = sum(e.damage for e in edits if e.edit in plan.edits)
        assert got == pytest.approx(best, abs=1e-9), target  # the exact optimum (integer costs: unit 1)
        assert 1000 - sum(e.saved for e in edits if e.edit in plan.edits) <= 1000 // target


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="saved must be >= 0"):
        allocate_plans([costed(0, -5, 0.1)], 1000, [1.1])
    with pytest.raises(ValueError, match="attention_params must be > 0"):
        allocate_plans(EDITS, 0, [1.1])
    with pytest.raises(ValueError, match="targets must be ratios > 1"):
        allocate_plans(EDITS, 1000, [1.0])


def test_the_registered_variant_carries_its_target_and_achieved_ratio():
    plan = allocate_plans(EDITS, 1000, [1.25]).plans[0]
    v = composed_variant(plan)
    assert v.composed and v.kind == "allocate" and v.layers == [0, 1, 2]
    assert v.extra_metrics["allocation.target_ratio"] == 1.25
    assert v.extra_tags["allocation.targets"] == "1.25x"
    v.val = {"qa_wikidata": {"top1_accuracy": 0.4, "loss": 2.0}}
    assert summary_row(v, "top1_accuracy")["target_ratio"] == 1.25  # the front plot labels the point with it


def test_the_default_sweep_reaches_its_first_two_default_targets_on_smollm2():
    """The default sweep (the last 4 of SmolLM2-135M's 30 layers, the default rank grid) makes allocate variants:
    its smallest edit leaves 4,704 of a layer's 884,736 attention parameters (188x, as exported), so the 4 layers
    give at most 30 / (26 + 4/188) = 1.153x of the whole model's attention: 1.05x and 1.1x, not 1.25x and up."""
    from flows.config import DEFAULT_RANKS, SweepConfig
    from tensorllm.attention_shape import AttentionShape
    from tensorllm.factorised import factorised_cost
    from tensorllm.tensorise import tensor_shape
    from tensorllm.tucker import resolve_ranks

    shape = AttentionShape(9, 3, 64, 576)  # SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64, d_model 576
    config = SweepConfig()
    dims = tensor_shape(shape, config.grouping)
    layers = config.resolve_layers(30)
    edits = []
    for layer in layers:
        for k, spec in enumerate(DEFAULT_RANKS):
            ranks = resolve_ranks(spec, dims, [])
            cost = factorised_cost(shape, ranks[0], ranks[1])
            edit = LayerEdit(layer, ranks, f"a/l{layer}-{k}", 0.0, 0.0)
            # damages grow with compression, fragile layer 27 ten times more (as measured: docs/promotion.md)
            edits.append(CostedEdit(edit, shape.n_params - cost.factorised_params, 0.01 * (k + 1) ** 2 * (10 if layer == 27 else 1)))
    result = allocate_plans(edits, 30 * shape.n_params, config.targets)
    assert layers == [26, 27, 28, 29] and result.reachable == pytest.approx(1.1529, abs=1e-4)
    assert [p.metrics["allocation.target_ratio"] for p in result.plans] == [1.05, 1.1]
    assert result.unreachable == [1.25, 1.5, 2.0, 3.0]
    # the fragile layer is spared at 1.05x (the other 3 at their mildest edit, 0.03, beat any plan with it) and
    # taken mildly at 1.1x, where the other 3 alone need their strongest edits (0.75 against 0.22 with it)
    assert 27 not in chosen(result.plans[0]) and 27 in chosen(result.plans[1])


def test_the_note_counts_variants_and_targets():
    merged = allocate_plans(EDITS, 1000, [1.04, 1.05])  # one plan serves both
    assert merged.note == "allocate: 1 composed variant for targets 1.04x, 1.05x."
    two = allocate_plans(EDITS, 1000, [1.1, 1.25])
    assert two.note == "allocate: 2 composed variants for targets 1.1x, 1.25x."
