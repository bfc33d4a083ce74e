"""The per-layer choices of ``compress``: each rank configuration of a grid, resolved for one model, with its size.

A layer is either kept dense or runs factorised (:mod:`tensorllm.factorised`): U1, U2 and per-head cores with
U3 folded in, ``d_model*R1 + d_head*R2 + R1*R2*(2h + 2kv)`` parameters. R3 does not change that size (U3 is
folded into the cores), so the default grid keeps R3 whole (``1.0``: no extra error for no saving) and spans
R1 and R2. Configurations whose factorised form is not smaller and cheaper than the dense layer are dropped:
the export would keep them dense anyway (:func:`tensorllm.factorised.factorised_cost`).

Usage::

    options, notes = layer_options(shape, DEFAULT_GRID, grouping="replicate")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..attention_shape import AttentionShape
from ..factorised import factorised_cost
from ..tensorise import DEFAULT_GROUPING, Grouping, tensor_shape
from ..tucker import RankSpec, resolve_ranks

#: fractions of (d_model, d_head, slices); per-layer ratios on SmolLM2-135M (884,736 MHA parameters a layer):
#: R1 0.5/0.375/0.25/0.125 of 576 with all 64 of d_head: 1.4x/1.9x/2.9x/5.7x; with half of d_head: 2.3x/3.0x/4.5x/9.0x
DEFAULT_GRID: list[tuple[float, float, float]] = [
    (r1, r2, 1.0) for r1 in (0.5, 0.375, 0.25, 0.125) for r2 in (1.0, 0.5)
]

DENSE = "dense"


@dataclass(frozen=True)
class LayerOption:
    """One choice for a layer: ``ranks`` (None = keep dense) and the attention parameters it leaves."""

    ranks: tuple[int, int, int] | None
    params: int

    @property
    def label(self) -> str:
        return DENSE if self.ranks is None else "x".join(str(r) for r in self.ranks)


def check_grid(grid: Sequence[RankSpec]) -> list[RankSpec]:
    """A non-empty list of three-value rank specs (integers or fractions); a one-line error otherwise."""
    if isinstance(grid, (str, bytes)) or not grid:
        raise ValueError(f"grid must be a non-empty list of (R1, R2, R3) rank configurations; got {grid!r}")
    for spec in grid:
        if isinstance(spec, (str, bytes)) or len(spec) != 3:
            raise ValueError(f"each grid entry must be three values (R1, R2, R3); got {spec!r}")
    return list(grid)


def layer_options(shape: AttentionShape, grid: Sequence[RankSpec],
                  grouping: Grouping = DEFAULT_GROUPING) -> tuple[list[LayerOption], list[str]]:
    """``(options, notes)``: dense first, then each distinct feasible configuration that pays off, smallest last.

    Fractions that do not fit the model are clipped (:func:`tensorllm.tucker.resolve_ranks`); ``notes`` says
    which, and which configurations were dropped because factorised would not be smaller than dense.
    """
    dims = tensor_shape(shape, grouping)
    notes: list[str] = []
    options = [LayerOption(None, shape.n_params)]
    seen: set[tuple[int, int, int]] = set()
    for spec in check_grid(grid):
        ranks = resolve_ranks(spec, dims, notes)
        if ranks in seen:
            continue
        seen.add(ranks)
        cost = factorised_cost(shape, ranks[0], ranks[1])
        if not cost.pays_off:
            notes.append(f"ranks {ranks}: factorised ({cost.factorised_params:,} parameters) is not smaller and "
                         f"cheaper than dense ({cost.dense_params:,}); dropped")
            continue
        options.append(LayerOption(ranks, cost.factorised_params))
    options[1:] = sorted(options[1:], key=lambda o: -o.params)
    return options, notes
