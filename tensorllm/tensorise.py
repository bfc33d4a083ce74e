"""Multi-head tensorisation (paper Section III-A, Eqs. 7-8) and its inverse, with GQA grouping.

Paper (MHA): head i gives a 3-D tensor ``W_i = [W^Q_i, W^K_i, W^V_i, (W^O_i)^T]`` of shape
(d_model, d_head, 4) (Eq. 7); stacking the heads gives ``W_all`` of shape (d_model, d_head, 4, h) (Eq. 8).

GQA (``n_kv_heads < n_heads``, group size g = n_heads / n_kv_heads) is not covered by the paper. Two
groupings are offered:

* ``"kv"`` (default): one slab per KV head, slices ``[Q_1..Q_g, K, V, O_1..O_g]``, tensor shape
  (d_model, d_head, 2g+2, n_kv_heads). Every weight appears exactly once; with g = 1 this *is* Eq. 8.
* ``"replicate"``: the paper's (d_model, d_head, 4, n_heads) tensor with each KV head's K and V copied
  into every query head of its group; on the way back the copies are averaged. It re-weights K/V in the
  fit (each appears g times) and is lossy for K/V even at full rank unless the copies agree.
"""

from __future__ import annotations

from typing import Literal

import torch

from .layouts import AttentionShape, AttentionWeights

Grouping = Literal["kv", "replicate"]
GROUPINGS: tuple[str, ...] = ("kv", "replicate")


def check_grouping(grouping: str) -> str:
    if grouping not in GROUPINGS:
        raise ValueError(f"Unknown grouping {grouping!r}; allowed: {', '.join(GROUPINGS)}.")
    return grouping


def tensor_shape(shape: AttentionShape, grouping: Grouping = "kv") -> tuple[int, int, int, int]:
    """Shape of the 4-D tensor (d_model, d_head, slices, groups) for an attention block."""
    check_grouping(grouping)
    if grouping == "replicate":
        return (shape.d_model, shape.d_head, 4, shape.n_heads)
    g = shape.group_size
    return (shape.d_model, shape.d_head, 2 * g + 2, shape.n_kv_heads)


def slice_labels(shape: AttentionShape, grouping: Grouping = "kv") -> list[str]:
    """Names of the mode-3 slices, e.g. ``['Q1', 'Q2', 'K', 'V', 'O1', 'O2']`` (for artifacts and plots)."""
    if grouping == "replicate" or shape.group_size == 1:
        return ["Q", "K", "V", "O"]
    g = shape.group_size
    return [f"Q{i + 1}" for i in range(g)] + ["K", "V"] + [f"O{i + 1}" for i in range(g)]


def tensorise(weights: AttentionWeights, shape: AttentionShape, grouping: Grouping = "kv") -> torch.Tensor:
    """Per-head weights -> the 4-D tensor (Eqs. 7-8; GQA grouping as in the module docstring)."""
    check_grouping(grouping)
    g = shape.group_size
    if grouping == "replicate":
        k = weights.k.repeat_interleave(g, dim=0)  # query head i uses KV head i // g
        v = weights.v.repeat_interleave(g, dim=0)
        per_head = torch.stack([weights.q, k, v, weights.o], dim=-1)  # [h, d_model, d_head, 4]
        return per_head.permute(1, 2, 3, 0).contiguous()
    q = weights.q.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head)
    o = weights.o.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head)
    slabs = torch.cat([q, weights.k.unsqueeze(1), weights.v.unsqueeze(1), o], dim=1)  # [kv, 2g+2, dm, dh]
    return slabs.permute(2, 3, 1, 0).contiguous()


def untensorise(tensor: torch.Tensor, shape: AttentionShape, grouping: Grouping = "kv") -> AttentionWeights:
    """The inverse of :func:`tensorise` (for ``"replicate"``: K/V copies of a group are averaged)."""
    check_grouping(grouping)
    expected = tensor_shape(shape, grouping)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"Tensor shape {tuple(tensor.shape)} does not match {expected} for {shape} / {grouping!r}")
    g = shape.group_size
    per_group = tensor.permute(3, 2, 0, 1)  # [groups, slices, d_model, d_head]
    if grouping == "replicate":
        q, k, v, o = (per_group[:, j] for j in range(4))
        k = k.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head).mean(dim=1)
        v = v.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head).mean(dim=1)
        return AttentionWeights(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), o=o.contiguous())
    q = per_group[:, :g].reshape(shape.n_heads, shape.d_model, shape.d_head)
    k = per_group[:, g]
    v = per_group[:, g + 1]
    o = per_group[:, g + 2:].reshape(shape.n_heads, shape.d_model, shape.d_head)
    return AttentionWeights(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), o=o.contiguous())
