"""Multi-head tensorisation (paper Section III-A, Eqs. 7-8) and its inverse, with GQA/MQA grouping.

Paper (MHA): head i gives a 3-D tensor ``W_i = [W^Q_i, W^K_i, W^V_i, (W^O_i)^T]`` of shape
(d_model, d_head, 4) (Eq. 7); stacking the heads gives ``W_all`` of shape (d_model, d_head, 4, h) (Eq. 8),
and the Tucker decomposition gives every head its own core ``G_i`` with shared factors (Eqs. 9-12).

GQA/MQA (``n_kv_heads < n_heads``, group size g = n_heads / n_kv_heads) is not covered by the paper.
Three groupings, with h query heads, kv KV heads (all three are Eq. 8 exactly when kv = h, g = 1):

* ``"kv"``: one slab per KV head, slices ``[Q_1..Q_g, K, V, O_1..O_g]``: tensor (d_model, d_head, 2g+2, kv).
  Every weight appears exactly once, but a core is shared by the g query heads of a group, not one per head.
  MQA (kv = 1): a single (d_model, d_head, 2h+2, 1) slab, one core for the whole layer;
  GQA: (d_model, d_head, 2g+2, kv); MHA: (d_model, d_head, 4, h) = Eq. 8.
* ``"replicate"``: the paper's (d_model, d_head, 4, h) tensor with each KV head's K and V copied into every
  query head of its group; on the way back the g reconstructed copies are averaged. One core per query head,
  but each K/V weight counts g times in the fit (K/V over-weighted by g against Q/O).
  MQA: (d_model, d_head, 4, h) with the one K/V copied h times; GQA: copied g times; MHA: Eq. 8.
* ``"weighted"``: the same (d_model, d_head, 4, h) tensor and one core per query head, with every K/V copy
  scaled by ``1/sqrt(g)`` before the plain Tucker fit and by ``sqrt(g)`` after, then averaged. A plain
  least-squares fit of the rescaled tensor is exactly a weighted least-squares fit of the replicated one
  with weight 1/g on each copy (``||K/sqrt(g) - K'||^2 = (1/g) ||K - sqrt(g) K'||^2``), so each K/V weight
  counts once in the fit, like Q and O. MQA: (d_model, d_head, 4, h), each copy scaled by 1/sqrt(h);
  GQA: by 1/sqrt(g); MHA: no scaling, Eq. 8.

Compression ratio (all groupings): the layer's real parameters, ``d_model·d_head·(2h + 2kv)`` (K/V counted
once, at their real GQA size), over the stored ``U1, U2, U3`` and core, ``d_model·R1 + d_head·R2 +
slices·R3 + R1·R2·R3·groups`` (groups = kv for ``"kv"``, h otherwise). The relative error that artifacts
report (:func:`written_rel_error`) is measured on the weights actually written back (after the K/V copies
are averaged), with every real weight counted once, whatever the grouping.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .attention_shape import AttentionShape, AttentionWeights
from .tucker import sum_squares

Grouping = Literal["kv", "replicate", "weighted"]
GROUPINGS: tuple[str, ...] = ("kv", "replicate", "weighted")
#: the grouping used when none is given: the winner of bench/grouping.py on SmolLM2 (docs/results/grouping.md):
#: at equal compression it kept the model's function best (KL to the base, validation loss and top-1), although
#: its written weight error is the largest of the three; K/V fidelity matters more than Q/O fidelity there
DEFAULT_GROUPING: Grouping = "replicate"


def check_grouping(grouping: str) -> str:
    if grouping not in GROUPINGS:
        raise ValueError(f"Unknown grouping {grouping!r}; allowed: {', '.join(GROUPINGS)}.")
    return grouping


def tensor_shape(shape: AttentionShape, grouping: Grouping = DEFAULT_GROUPING) -> tuple[int, int, int, int]:
    """Shape of the 4-D tensor (d_model, d_head, slices, groups) for an attention block."""
    check_grouping(grouping)
    if grouping in ("replicate", "weighted"):
        return (shape.d_model, shape.d_head, 4, shape.n_heads)
    g = shape.group_size
    return (shape.d_model, shape.d_head, 2 * g + 2, shape.n_kv_heads)


def slice_labels(shape: AttentionShape, grouping: Grouping = DEFAULT_GROUPING) -> list[str]:
    """Names of the mode-3 slices, e.g. ``['Q1', 'Q2', 'K', 'V', 'O1', 'O2']`` (for artifacts and plots)."""
    check_grouping(grouping)
    if grouping != "kv" or shape.group_size == 1:
        return ["Q", "K", "V", "O"]
    g = shape.group_size
    return [f"Q{i + 1}" for i in range(g)] + ["K", "V"] + [f"O{i + 1}" for i in range(g)]


def kv_scale(shape: AttentionShape, grouping: Grouping) -> float:
    """The factor each K/V copy is multiplied by in the tensor: ``1/sqrt(g)`` for ``"weighted"``, else 1."""
    return 1.0 / math.sqrt(shape.group_size) if grouping == "weighted" else 1.0


def tensorise(weights: AttentionWeights, shape: AttentionShape, grouping: Grouping = DEFAULT_GROUPING) -> torch.Tensor:
    """Per-head weights -> the 4-D tensor (Eqs. 7-8; GQA grouping as in the module docstring)."""
    check_grouping(grouping)
    g = shape.group_size
    if grouping in ("replicate", "weighted"):
        scale = kv_scale(shape, grouping)
        k = weights.k.repeat_interleave(g, dim=0)  # query head i uses KV head i // g
        v = weights.v.repeat_interleave(g, dim=0)
        if scale != 1.0:
            k, v = k * scale, v * scale
        per_head = torch.stack([weights.q, k, v, weights.o], dim=-1)  # [h, d_model, d_head, 4]
        return per_head.permute(1, 2, 3, 0).contiguous()
    q = weights.q.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head)
    o = weights.o.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head)
    slabs = torch.cat([q, weights.k.unsqueeze(1), weights.v.unsqueeze(1), o], dim=1)  # [kv, 2g+2, dm, dh]
    return slabs.permute(2, 3, 1, 0).contiguous()


def untensorise(tensor: torch.Tensor, shape: AttentionShape, grouping: Grouping = DEFAULT_GROUPING) -> AttentionWeights:
    """The inverse of :func:`tensorise` (``"replicate"``/``"weighted"``: K/V copies unscaled, then averaged).

    Linear in ``tensor``, so it also splits a folded core ``G x_3 U3`` per head and role
    (:mod:`tensorllm.factorised`).
    """
    check_grouping(grouping)
    expected = tensor_shape(shape, grouping)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"Tensor shape {tuple(tensor.shape)} does not match {expected} for {shape} / {grouping!r}")
    g = shape.group_size
    per_group = tensor.permute(3, 2, 0, 1)  # [groups, slices, d_model, d_head]
    if grouping in ("replicate", "weighted"):
        q, k, v, o = (per_group[:, j] for j in range(4))
        unscale = 1.0 / kv_scale(shape, grouping)
        k = k.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head).mean(dim=1) * unscale
        v = v.reshape(shape.n_kv_heads, g, shape.d_model, shape.d_head).mean(dim=1) * unscale
        return AttentionWeights(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), o=o.contiguous())
    q = per_group[:, :g].reshape(shape.n_heads, shape.d_model, shape.d_head)
    k = per_group[:, g]
    v = per_group[:, g + 1]
    o = per_group[:, g + 2:].reshape(shape.n_heads, shape.d_model, shape.d_head)
    return AttentionWeights(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), o=o.contiguous())


def is_rearrangement(shape: AttentionShape, grouping: Grouping) -> bool:
    """Whether the tensor holds every weight exactly once and unscaled: ``"kv"``, or any grouping when
    ``n_kv_heads == n_heads`` (MHA: nothing is replicated). Its errors are then the weights' errors."""
    return grouping == "kv" or shape.group_size == 1


def written_rel_error(original: AttentionWeights, reconstruction: torch.Tensor, shape: AttentionShape,
                      grouping: Grouping, original_tensor: torch.Tensor | None = None) -> float:
    """``||W - W_written||_F / ||W||_F`` over the layer's real weights (each K/V once), where ``W_written`` is
    what :func:`untensorise` makes of the reconstructed tensor: the weights a variant actually runs with.

    For ``"kv"`` it equals the tensor's own relative error; for ``"replicate"`` it differs (the tensor counts
    each K/V g times and the written K/V is the average of g reconstructed copies). ``original_tensor``
    (``tensorise(original, shape, grouping)``, when the caller has it): where the tensor is a rearrangement of
    the weights (:func:`is_rearrangement`), the error is computed on the tensors, without untensorising
    (a copy of the layer per call: a second per rank configuration on a 7B layer).
    """
    if original_tensor is not None and is_rearrangement(shape, grouping):
        den = sum_squares(original_tensor)
        return math.sqrt(sum_squares(original_tensor - reconstruction) / den) if den > 0 else 0.0
    written = untensorise(reconstruction, shape, grouping)
    num = den = 0.0
    for role in ("q", "k", "v", "o"):
        ref = getattr(original, role)
        work = torch.float64 if ref.dtype == torch.float64 else torch.float32  # half precision: subtract in fp32
        ref = ref.to(work)
        num += sum_squares(ref - getattr(written, role).to(work))
        den += sum_squares(ref)
    return math.sqrt(num / den) if den > 0 else 0.0
