"""Rank grids given as fractions fit every supported architecture: infeasible fractions are clipped, and said so.

The bound checked is Tucker's: R_n <= groups x the product of the other two ranks (a mode's unfolding has no more
columns than that). Integers stay the user's exact choice and still raise (tests/tensorllm/test_tucker.py).
"""

from __future__ import annotations

import math

import pytest

from flows.config import DEFAULT_RANKS
from tensorllm.attention_shape import AttentionShape
from tensorllm.compression.grid import DEFAULT_GRID
from tensorllm.layouts import layout_for
from tensorllm.tensorise import GROUPINGS, tensor_shape
from tensorllm.tiny_models import TINY_CONFIGS, tiny_config
from tensorllm.tucker import resolve_ranks


def feasible(ranks, dims) -> bool:
    groups = dims[3]
    return all(1 <= ranks[n] <= dims[n] and ranks[n] <= groups * math.prod(ranks[m] for m in range(3) if m != n)
               for n in range(3))


def test_real_mqa_case_from_the_field_is_clipped_and_said():
    # 4 heads, 1 KV head, head_dim 256, d_model 640: the default grid's (0.01, 0.1, 0.25) gave R2 = 26 > 24
    shape = AttentionShape(n_heads=4, n_kv_heads=1, d_head=256, d_model=640)
    dims = tensor_shape(shape, "replicate")
    notes: list[str] = []
    ranks = resolve_ranks((0.01, 0.1, 0.25), dims, notes)
    assert ranks == (6, 24, 1)  # R2 clipped to 4 groups x R1 6 x R3 1 = 24, the largest feasible
    assert feasible(ranks, dims)
    assert len(notes) == 1 and "R2 (d_head)" in notes[0] and "clipped to 24" in notes[0]


def test_integer_ranks_are_not_clipped():
    dims = tensor_shape(AttentionShape(n_heads=4, n_kv_heads=1, d_head=256, d_model=640), "replicate")
    with pytest.raises(ValueError, match=r"R2 \(d_head\)=26 exceeds 24"):
        resolve_ranks((6, 26, 1), dims)


def test_clipping_cascades_until_every_mode_fits():
    # R1 = 0.5 of 64 = 32 > 1 group x R2 2 x R3 ... every mode is re-checked after each clip
    dims = (64, 2, 4, 1)
    notes: list[str] = []
    ranks = resolve_ranks((0.5, 1.0, 0.25), dims, notes)
    assert feasible(ranks, dims) and ranks[0] == 2  # 1 group x R2 2 x R3 1
    assert notes


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_fraction_grids_resolve_on_every_family(family, grouping):
    shape = layout_for(tiny_config(family)).shape(tiny_config(family))
    dims = tensor_shape(shape, grouping)
    for spec in [*DEFAULT_RANKS, *DEFAULT_GRID]:
        ranks = resolve_ranks(spec, dims)
        assert feasible(ranks, dims), (family, grouping, spec, ranks, dims)


@pytest.mark.parametrize("heads,kv,d_head,d_model", [(4, 1, 256, 640), (8, 1, 128, 256), (2, 1, 512, 64),
                                                    (16, 2, 64, 1024), (1, 1, 8, 4096)])
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_fraction_grids_resolve_on_extreme_geometries(heads, kv, d_head, d_model, grouping):
    dims = tensor_shape(AttentionShape(n_heads=heads, n_kv_heads=kv, d_head=d_head, d_model=d_model), grouping)
    for spec in [*DEFAULT_RANKS, *DEFAULT_GRID]:
        assert feasible(resolve_ranks(spec, dims), dims)


def test_default_sweep_grid_decomposes_a_tiny_mqa_model_with_a_large_head_dim(tmp_path):
    import transformers

    from tensorllm.decompose import decompose_layer

    # 4 query heads, 1 KV head, head_dim 64 on d_model 32: the shape of the MQA model that used to stop at validation
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=1, head_dim=64)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "mqa")
    records = decompose_layer(str(tmp_path / "mqa"), 1, DEFAULT_RANKS, out_root=tmp_path / "artifacts", n_iter_max=3)
    dims = (32, 64, 4, 4)  # replicate grouping: (d_model, d_head, Q/K/V/O, heads)
    assert len(records) == len(DEFAULT_RANKS)
    assert all(feasible(r.ranks, dims) for r in records)
    assert (1, 4, 1) in [tuple(r.ranks) for r in records]  # (0.01, 0.1, 0.25): R2 6 clipped to 4 x 1 x 1


def test_sweep_validation_accepts_the_default_grid_on_mqa_with_a_large_head_dim_and_says_so(caplog):
    import logging

    from flows.config import SweepConfig
    from flows.validate import check_ranks

    shape = AttentionShape(n_heads=4, n_kv_heads=1, d_head=256, d_model=640)  # the MQA model that used to stop
    with caplog.at_level(logging.WARNING, logger="flows.validate"):
        check_ranks(SweepConfig(), shape)  # the default grid: no error
    assert any("clipped to 24" in r.getMessage() for r in caplog.records)
