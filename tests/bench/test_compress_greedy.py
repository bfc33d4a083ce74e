"""bench.compress_greedy: the sweep's greedy rule over the compress benchmark's edits, with a fake evaluator that
writes per-item rows (no model): which edits it keeps, in which order, and how many evaluations it needs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from bench.compress_greedy import DATASET, greedy_composition
from tensorllm.compression.plan import Cell

#: artifact -> (loses every top-1, loss increase per item): "good" edits change nothing but the loss, a little
EFFECTS = {"L0-good": (False, 0.001), "L0-bad": (True, 1.0), "L1-good": (False, 0.002), "L2-bad": (True, 0.5)}


class FakeEvaluator:
    """Rows of ``n`` items: the base right on every 10th, its loss 2.0-2.4; each artifact's effect added."""

    def __init__(self, out: Path, n: int):
        self.out, self.n, self.count, self.calls = out, n, 0, []

    def __call__(self, name: str, artifacts: list[str], first_layer: int | None) -> dict[str, str]:
        self.count += 1
        self.calls.append((list(artifacts), first_layer))
        path = self.out / f"{name}.jsonl"
        with path.open("w") as handle:
            for i in range(self.n):
                lost = any(EFFECTS[a][0] for a in artifacts)
                loss = 2.0 + 0.1 * ((7 * i) % 5) + sum(EFFECTS[a][1] * (1 + i % 3) for a in artifacts)
                handle.write(json.dumps({"id": f"q{i}", "correct": None, "loss": loss,
                                         "top1_correct": i % 10 == 0 and not lost}) + "\n")
        return {DATASET: str(path)}


def table() -> SimpleNamespace:
    def cell(layer, artifact=None):
        return Cell(layer, None if artifact is None else (8, 4, 2), 100 if artifact is None else 40, 0.0,
                    artifact=artifact)
    return SimpleNamespace(cells=[[cell(0), cell(0, "L0-good"), cell(0, "L0-bad")],
                                  [cell(1), cell(1, "L1-good")], [cell(2), cell(2, "L2-bad")]])


def test_greedy_keeps_the_harmless_edits_and_drops_the_harmful(tmp_path):
    evaluator = FakeEvaluator(tmp_path, 600)
    result = greedy_composition("unused", table(), 600, tmp_path, evaluator=evaluator)
    # each layer's best edit by build-half top-1 (L0: the good one), the harmful layer-2 edit is tried and dropped
    assert [e.artifact for e in result.kept] == ["L0-good", "L1-good"]
    assert [(s["layer"], s["kept"]) for s in result.steps] == [(0, True), (1, True), (2, False)]
    assert result.name == "greedy-0:8x4x2+1:8x4x2"
    # one base pass, one per single-layer edit (4), one per step (3); single edits replay from their own layer
    assert evaluator.count == result.evaluations == 8
    assert evaluator.calls[0] == ([], None)
    assert (["L2-bad"], 2) in evaluator.calls
    # a step evaluates the composition so far plus the new edit, from its first layer
    assert evaluator.calls[-1] == (["L0-good", "L1-good", "L2-bad"], 0)
    assert set(result.seconds) == {"base", "single_layer", "greedy_steps", "total"}


def test_fifty_build_items_cannot_show_top1_non_inferiority(tmp_path):
    # with 100 validation items (about 50 in the build half) even an edit that keeps every top-1 fails the
    # 2-point margin (Tango's p is 0.16 at n=50 with no discordant pair): the greedy keeps nothing
    result = greedy_composition("unused", table(), 100, tmp_path, evaluator=FakeEvaluator(tmp_path, 100))
    assert result.kept == []
    assert result.name == "greedy-none"
    assert not any(s["kept"] for s in result.steps)
