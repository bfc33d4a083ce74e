"""The sweep's greedy composition, rebuilt from the compress benchmark's own single-layer edits.

The greedy of the sweep (:mod:`flows.compose`, the ``greedy`` block of :func:`flows.sweep._compose`) ignores
compression: for each layer it takes the best single-layer edit on the *build* half of the validation items
(selection metric top-1, ties by the lower loss), orders the layers by that edit's gain over the base, and adds
the edits one at a time, keeping one only if the composition stays non-inferior to the base on the build half
(:func:`flows.noninferiority.single_test`, the sweep's default margins and alpha). It lands at one ratio.

Here the edits are the artifacts the sensitivity pass decomposed (every layer x the benchmark's grid), each
evaluated teacher-forced on the first ``val`` validation items with the library's evaluation
(:func:`tensorllm.evaluation.evaluate`): the base's full pass caches the hidden states entering every layer, so
an evaluation whose first edited layer is L runs only layers L.. (:mod:`tensorllm.evaluation.teacher_forced`).
No Prefect, Ray or MLflow: the policy functions of :mod:`flows` are pure.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from flows.candidates import PAIRED_COLUMN, Candidate, higher_is_better
from flows.compose import LayerEdit, greedy_name, greedy_order
from flows.holdout import half_mean, paired_half
from flows.noninferiority import Margins, single_test

log = logging.getLogger(__name__)

DATASET = "qa_wikidata"
METRIC = "top1_accuracy"  # the sweep's default selection metric: teacher-forced, so the layer cache applies


@dataclass
class GreedyResult:
    """The kept edits (by layer), every step's verdict and where the time went."""

    kept: list[LayerEdit]
    steps: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    base_build_metric: float = float("nan")

    @property
    def name(self) -> str:
        return greedy_name(self.kept) if self.kept else "greedy-none"

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": [asdict(e) for e in sorted(self.kept, key=lambda e: e.layer)],
                "steps": self.steps, "seconds": self.seconds, "evaluations": self.evaluations,
                "base_build_metric": self.base_build_metric}


class _Evaluator:
    """The base in float32 (as the verification evaluates) with one hidden-state cache for all evaluations."""

    def __init__(self, base: str, limit: int, out: Path):
        from tensorllm.checkpoint import Checkpoint, stored_dtype
        from tensorllm.evaluation.data import load_task
        from tensorllm.evaluation.hidden_cache import HiddenStateCache
        from tensorllm.evaluation.runtime import default_dtype
        from tensorllm.models import load_model, resolve_model

        folder = resolve_model(base)
        self.model, self.tokenizer = load_model(folder, dtype=default_dtype("cpu", base=stored_dtype(folder)))
        self.n_layers = Checkpoint(folder).n_layers
        self.identity = Checkpoint(folder).identity()
        self.task = load_task(DATASET, self.tokenizer)
        self.cache = HiddenStateCache(disk_dir=None)  # memory only: ~10 MB a layer for 100 items
        self.limit, self.out, self.count = limit, out, 0
        out.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, artifacts: list[str], first_layer: int | None) -> dict[str, str]:
        """Evaluate the base with ``artifacts`` applied; ``{dataset: examples jsonl}`` as flows.holdout reads it."""
        from tensorllm.artifact import apply_artifacts, load_artifact
        from tensorllm.evaluation import EvalConfig, evaluate

        fill = tuple(range(self.n_layers)) if first_layer is None else ()
        config = EvalConfig(dataset=DATASET, split="val", limit=self.limit, generate=False, batch_size=16,
                            first_changed_layer=first_layer, fill_layers=fill, model_id=self.identity)
        path = self.out / f"{name}.jsonl"
        applied = apply_artifacts(self.model, [load_artifact(p) for p in artifacts]) if artifacts else nullcontext()
        with torch.no_grad(), applied:
            evaluate(self.model, self.tokenizer, config, examples_out=path, task=self.task, cache=self.cache)
        self.count += 1
        return {DATASET: str(path)}


def greedy_composition(base: str, table, limit: int, out: Path, margins: Margins | None = None,
                       alpha: float = 0.05, evaluator=None) -> GreedyResult:
    """The sweep's greedy over ``table``'s single-layer edits (every compressed cell of every layer).

    ``limit``: the first validation items (the build half is taken from them, as in the sweep); ``margins`` and
    ``alpha``: the sweep's defaults (2 points of top-1, 0.05 nats of answer loss, alpha 0.05). ``evaluator``:
    ``(name, artifacts, first_layer) -> {dataset: examples jsonl}`` with a ``count``; by default the real one.
    """
    margins = margins or Margins()
    column = PAIRED_COLUMN[METRIC]
    value_column = column if higher_is_better(METRIC) else "loss"
    t0 = time.perf_counter()
    evaluator = evaluator or _Evaluator(base, limit, out)
    base_examples = evaluator("base", [], None)  # fills the cache of every layer's input
    t1 = time.perf_counter()
    edits = []
    for cells in table.cells:
        for cell in cells:
            if cell.artifact is None:  # dense
                continue
            examples = evaluator(f"layer{cell.layer}-{'x'.join(map(str, cell.ranks))}", [cell.artifact], cell.layer)
            edits.append(LayerEdit(cell.layer, tuple(cell.ranks), str(cell.artifact),
                                   half_mean(examples, value_column, "build"), half_mean(examples, "loss", "build")))
    t2 = time.perf_counter()
    base_metric = half_mean(base_examples, value_column, "build")
    kept: list[LayerEdit] = []
    steps = []
    for edit in greedy_order(edits, base_metric, higher_is_better(METRIC)):
        trial = sorted(kept + [edit], key=lambda e: e.layer)
        examples = evaluator(f"step{len(steps):02d}", [e.artifact for e in trial], trial[0].layer)
        probe = Candidate(0, greedy_name(trial), half_mean(examples, value_column, "build"),
                          half_mean(examples, "loss", "build"),
                          paired_val=paired_half(base_examples, examples, column, "build"))
        keep = single_test(probe, METRIC, margins, alpha)
        pv = probe.paired_val
        steps.append({"layer": edit.layer, "ranks": list(edit.ranks), "single_metric": edit.val_metric,
                      "single_loss": edit.val_loss, "kept": keep, "n": pv["n"], "accuracy_diff": pv["accuracy_diff"],
                      "loss_diff": pv["loss_diff"], "loss_diff_ci": list(pv["loss_diff_ci"])})
        log.info("greedy step %d: layer %d %s -> %s", len(steps), edit.layer, edit.ranks, "kept" if keep else "dropped")
        if keep:
            kept = trial
    t3 = time.perf_counter()
    return GreedyResult(kept, steps, {"base": t1 - t0, "single_layer": t2 - t1, "greedy_steps": t3 - t2,
                                      "total": t3 - t0}, evaluator.count, base_metric)
