"""The sensitivity table of a model and the plan for one target ratio (allocation + whole-model size).

:func:`measure` decomposes every layer at every configuration of the grid (one :func:`tensorllm.tucker.tucker_sweep`
per layer) and measures each edit's damage (:mod:`.sensitivity`; all edits of a layer together: :mod:`.layer_damage`); :func:`plan` turns the table into one configuration per layer for a target ratio
(:mod:`.allocate`) and counts the result the way the export stores it (:func:`tensorllm.composed.whole_model_size`).
One table serves every target: the benchmark measures once and plans five times.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import progress
from ..artifact import read_meta
from ..checkpoint import Checkpoint
from ..composed import WholeModelSize, whole_model_size
from ..decompose import decompose_layer
from ..models import load_model, resolve_model
from ..tensorise import DEFAULT_GROUPING, Grouping
from ..tucker import RankSpec
from .allocate import Allocation, allocate
from .grid import DEFAULT_GRID, LayerOption, layer_options
from .layer_damage import layer_damages
from .sensitivity import calibration_sequences, record_reference

log = logging.getLogger(__name__)

DEFAULT_N_ITER_MAX = 5  # HOOI sweeps (at most)
#: HOOI stops when the relative error moves by less than this: on SmolLM2 the error after 3 sweeps is within 0.001 of
#: the one after 25 (0.705 vs 0.705 at 288x32x4), at a quarter of the time (docs/compress.md)
DEFAULT_TOL = 1e-3
DEFAULT_PROMPTS = 16


@dataclass
class Cell:
    """One (layer, configuration): its artifact, the attention parameters it leaves, and its measured damage."""

    layer: int
    ranks: tuple[int, int, int] | None  # None: dense
    params: int
    damage: float
    rel_error: float | None = None
    artifact: str | None = None


@dataclass
class SensitivityTable:
    """Every layer's options with their damage (``cells[layer][k]``, option 0 dense), and how they were measured."""

    model: str
    cells: list[list[Cell]]
    dense_params: int  # whole-model attention parameters of the base
    calibration: dict
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def measure(model: str, grid: Sequence[RankSpec] | None = None, *, grouping: Grouping = DEFAULT_GROUPING,
            dataset: str = "qa_wikidata", n_prompts: int = DEFAULT_PROMPTS, skip: int = 0,
            layers: Sequence[int] | None = None, artifacts: str | Path = "runs/artifacts",
            n_iter_max: int = DEFAULT_N_ITER_MAX, tol: float = DEFAULT_TOL, batch_size: int = 16,
            seed: int = 0) -> SensitivityTable:
    """Decompose ``layers`` (default all) at every grid configuration and measure each edit's damage.

    Layers outside ``layers`` keep only the dense option. ``skip`` validation items are left out of the
    calibration (those the verification scores).
    """
    start = time.perf_counter()
    folder = resolve_model(model)
    ckpt = Checkpoint(folder)
    shape, n_layers = ckpt.shape, ckpt.n_layers
    options, notes = layer_options(shape, grid if grid is not None else DEFAULT_GRID, grouping)
    if len(options) == 1:
        raise ValueError(f"no configuration of the grid is smaller than the dense layer: {notes}")
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [layer for layer in chosen if isinstance(layer, bool) or not isinstance(layer, int)
           or not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range: allowed 0..{n_layers - 1} for this {n_layers}-layer model")
    net, tokenizer = load_model(folder, dtype=torch.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sequences = calibration_sequences(tokenizer, dataset, n_prompts, skip=skip, seed=seed)
    reference = record_reference(net, sequences, pad_id, batch_size)
    seconds = {"reference": time.perf_counter() - start, "decompose": 0.0, "damage": 0.0}
    cells = [[Cell(layer, None, shape.n_params, 0.0)] for layer in range(n_layers)]
    rank_list = [o.ranks for o in options[1:]]
    progress.expect("sensitivity", len(chosen) * len(rank_list))
    for layer in chosen:
        t0 = time.perf_counter()
        records = decompose_layer(model, layer, rank_list, grouping=grouping, out_root=artifacts,
                                  n_iter_max=n_iter_max, tol=tol)
        seconds["decompose"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        damages = layer_damages(net, reference, layer, [record.artifact for record in records])
        for option, record, damage in zip(options[1:], records, damages):
            cells[layer].append(Cell(layer, option.ranks, option.params, damage, record.rel_error, record.artifact))
            progress.advance("sensitivity")
        seconds["damage"] += time.perf_counter() - t0
        log.info("layer %d: damage %s", layer, [round(c.damage, 4) for c in cells[layer]])
    seconds["total"] = time.perf_counter() - start
    calibration = {"dataset": dataset, "split": "val", "skip": skip, "n_prompts": len(sequences),
                   "n_tokens": reference.n_tokens, "measure": "mean per-token KL(base || edit), nats",
                   "replay": bool(reference.inputs)}
    return SensitivityTable(model=str(model), cells=cells, dense_params=n_layers * shape.n_params,
                            calibration=calibration, notes=notes, seconds=seconds)


def check_ratio(target_ratio: float) -> float:
    if isinstance(target_ratio, bool) or not isinstance(target_ratio, (int, float)) or not target_ratio > 1 \
            or not math.isfinite(target_ratio):
        raise ValueError(f"target_ratio must be a number > 1 (how many times smaller the attention gets); "
                         f"got {target_ratio!r}")
    return float(target_ratio)


@dataclass
class Plan:
    """One configuration per layer for a target ratio, its summed damage and the whole-model size it gives."""

    target_ratio: float
    chosen: list[Cell]  # the layers that change (dense layers left out)
    allocation: Allocation
    size: WholeModelSize

    @property
    def artifacts(self) -> list[str]:
        return [c.artifact for c in self.chosen if c.artifact is not None]

    def to_dict(self) -> dict:
        return {"target_ratio": self.target_ratio, "predicted_damage": self.allocation.damage,
                "budget_params": self.allocation.budget, "dp_unit_params": self.allocation.unit,
                "optimality_gap_params": self.allocation.gap_params,
                "layers": [asdict(c) for c in self.chosen], "size": {**asdict(self.size),
                                                                      **self.size.metrics()}}


def plan(table: SensitivityTable, target_ratio: float) -> Plan:
    """The least-damage configuration per layer such that whole-model attention shrinks at least ``target_ratio``-fold."""
    ratio = check_ratio(target_ratio)
    budget = math.floor(table.dense_params / ratio)
    params = [[c.params for c in row] for row in table.cells]
    damage = [[c.damage for c in row] for row in table.cells]
    allocation = allocate(params, damage, budget)
    chosen = [table.cells[layer][k] for layer, k in enumerate(allocation.choice) if k != 0]
    size = whole_model_size(table.model, [read_meta(c.artifact) for c in chosen])
    return Plan(ratio, chosen, allocation, size)


def uniform_cells(table: SensitivityTable, target_ratio: float) -> list[Cell]:
    """The comparison: one configuration on every measured layer, the largest one reaching ``target_ratio``."""
    ratio = check_ratio(target_ratio)
    measured = [row for row in table.cells if len(row) > 1]
    fixed = table.dense_params - sum(row[0].params for row in measured)
    for k in range(1, len(measured[0])):
        if fixed + sum(row[k].params for row in measured) <= table.dense_params / ratio:
            return [row[k] for row in measured]
    raise ValueError(f"no single grid configuration on every measured layer reaches {ratio}x")
