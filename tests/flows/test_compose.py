"""Composition plans (flows.compose): which artifacts a uniform or greedy whole-model variant applies."""

from __future__ import annotations

from flows.compose import ComposedPlan, LayerEdit, greedy_name, greedy_order, uniform_plans


def edit(layer: int, ranks: tuple, metric: float, loss: float = 1.0) -> LayerEdit:
    return LayerEdit(layer=layer, ranks=ranks, artifact=f"a/l{layer}-{'x'.join(map(str, ranks))}", val_metric=metric,
                     val_loss=loss)


EDITS = [edit(26, (8, 4, 2), 0.10), edit(26, (4, 2, 2), 0.12), edit(27, (8, 4, 2), 0.05), edit(27, (4, 2, 2), 0.07),
         edit(28, (8, 4, 2), 0.09)]


def test_uniform_plans_cover_only_rank_configs_every_layer_has():
    plans = uniform_plans(EDITS)
    # (8,4,2) exists on layers 26, 27, 28; (4,2,2) is missing on layer 28, so it makes no uniform plan
    assert [p.name for p in plans] == ["uniform-r8x4x2-layers26-28"]
    assert plans[0].artifacts == ["a/l26-8x4x2", "a/l27-8x4x2", "a/l28-8x4x2"]
    assert plans[0].first_layer == 26  # the evaluation replays from the first edited layer


def test_uniform_plans_on_the_last_n_layers():
    plans = uniform_plans(EDITS, last_n=2)
    assert sorted(p.name for p in plans) == ["uniform-r8x4x2-layers27-28"]
    assert uniform_plans(EDITS, last_n=1) == []  # one layer is a single-layer variant, not a composition


def test_greedy_order_takes_each_layers_best_edit_by_gain():
    order = greedy_order(EDITS, baseline_metric=0.08)
    # best per layer: 26 -> 0.12 (gain +0.04), 28 -> 0.09 (+0.01), 27 -> 0.07 (-0.01)
    assert [(e.layer, e.val_metric) for e in order] == [(26, 0.12), (28, 0.09), (27, 0.07)]


def test_greedy_order_for_loss_prefers_lower():
    edits = [edit(1, (2, 2, 2), 3.0), edit(2, (2, 2, 2), 2.0)]
    assert [e.layer for e in greedy_order(edits, baseline_metric=2.5, higher_is_better=False)] == [2, 1]


def test_composed_plan_names_and_order():
    plan = ComposedPlan(greedy_name([EDITS[2], EDITS[0]]), "greedy", [EDITS[2], EDITS[0]])
    assert plan.name == "greedy-26:8x4x2+27:8x4x2"
    assert plan.layers == [26, 27] and plan.artifacts == ["a/l26-8x4x2", "a/l27-8x4x2"]
