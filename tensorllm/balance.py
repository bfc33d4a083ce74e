"""Function-preserving slice balancing: rescale each head's Q/K/V/O before the Tucker fit, undo it after.

Beyond the paper (issue 13). Attention depends on the weights only through ``W^Q_i (W^K_i)^T`` (scores)
and ``W^V_i W^O_i`` (outputs), so for every KV group ``j`` (its query heads ``i`` in the group)::

    W^Q_i -> c_j W^Q_i,  W^K_j -> W^K_j / c_j          (scores unchanged; GQA: one c_j for the whole group)
    W^V_j -> d_j W^V_j,  W^O_i -> W^O_i / d_j          (outputs unchanged)

leave the model's function unchanged while changing the slice norms of the tensor of Eqs. 7-8, and
therefore what the Tucker fit (Eq. 14) spends its rank on. Models with a per-head RMS norm on q and k
(Qwen3, Gemma-3: ``q_norm``/``k_norm`` of size d_head) are also invariant to the scale of each Q head and
each K head separately (``RMSNorm(a x) = RMSNorm(x)`` for ``a > 0``, up to the norm's epsilon, which is
~1e-6 against a mean square of O(1)); OLMo-2's q/k norm spans all heads at once, so there only one
layer-wide Q scale and one K scale are free, and a per-group c_j is *not* a symmetry (it would change
the norm's denominator, i.e. the softmax temperature) (:data:`QK_NORM_KINDS`).

Modes (:data:`BALANCE_MODES`):

* ``none``: the paper's tensor.
* ``norms``: per group, the smallest total squared norm on the symmetry orbit:
  ``c_j^2 = ||K_j|| / ||Q_group j||`` and ``d_j^2 = ||O_group j|| / ||V_j||``, which makes the Q block and K
  (and V and the O block) of every group equally large. With per-head q/k norms (free scales), every Q
  and K slice is set to the layer's root-mean-square slice norm of the balanced V/O slices, so no role
  dominates; with one q/k norm over all heads, the RMS of the Q slices and of the K slices is set to it.

Undoing (:func:`fold_unbalance`): the artifact's factors must reconstruct the *unbalanced* weights, so that
every consumer of artifacts (dense write-back, :mod:`tensorllm.factorised`, export) works unchanged and
biases (which were never scaled) stay consistent. The scales differ per (slice, group), and the shared
U3 cannot carry a per-group scale, so U3 is folded into the core first (``C = G x_3 U3``, the
(R1, R2, slices, groups) tensor the factorised module builds anyway), C is divided by the scales, and
U3 becomes the identity. This is exact (no refit, no approximation); the artifact's core is then
``slices/R3`` times larger on disk, while the factorised model's size (U1, U2 and one R1 x R2 core per
head and role) does not change.

Usage::

    scales = balance_scales(weights, shape, "norms", qk_norm="none")
    tensor = tensorise(apply_scales(weights, scales), shape, grouping)
    ... fit ...
    core, u3 = fold_unbalance(core, u3, slice_scales(scales, shape, grouping))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .attention_shape import AttentionShape, AttentionWeights
from .tensorise import Grouping, tensorise
from .tucker import mode_dot

log = logging.getLogger(__name__)

BALANCE_MODES: tuple[str, ...] = ("none", "norms")
#: "none": no q/k norm; "per_head": RMS norm over each head's d_head (Qwen3, Gemma-3);
#: "per_layer": one RMS norm over all heads of q (and of k) (OLMo-2)
QK_NORM_KINDS: tuple[str, ...] = ("none", "per_head", "per_layer")


def check_balance(mode: str) -> str:
    if mode not in BALANCE_MODES:
        raise ValueError(f"Unknown balance mode {mode!r}; allowed: {', '.join(BALANCE_MODES)}.")
    return mode


@dataclass(frozen=True)
class HeadScales:
    """Positive scale per head: ``q``/``o`` (n_heads,), ``k``/``v`` (n_kv_heads,)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor

    def to_dict(self) -> dict[str, list[float]]:
        return {n: [float(x) for x in getattr(self, n)] for n in ("q", "k", "v", "o")}

    @property
    def n_values(self) -> int:
        return sum(getattr(self, n).numel() for n in ("q", "k", "v", "o"))


def identity_scales(shape: AttentionShape) -> HeadScales:
    ones_h, ones_kv = torch.ones(shape.n_heads, dtype=torch.float64), torch.ones(shape.n_kv_heads, dtype=torch.float64)
    return HeadScales(q=ones_h, k=ones_kv, v=ones_kv.clone(), o=ones_h.clone())


def qk_norm_kind(weight_names, tensor_shapes: dict[str, tuple[int, ...]], attention_prefix: str,
                 shape: AttentionShape) -> str:
    """Which q/k norm the attention module ``attention_prefix`` (e.g. ``model.layers.3.self_attn``) has.

    ``weight_names``: all weight names of the checkpoint; ``tensor_shapes``: the shapes of its
    ``q_norm.weight`` (if present). A norm of size d_head is per head; of size n_heads * d_head, per layer.
    """
    name = f"{attention_prefix}.q_norm.weight"
    if name not in set(weight_names) or f"{attention_prefix}.k_norm.weight" not in set(weight_names):
        return "none"
    size = int(torch.Size(tensor_shapes[name]).numel())
    if size == shape.d_head:
        return "per_head"
    if size == shape.n_heads * shape.d_head:
        return "per_layer"
    raise ValueError(f"{name} has {size} entries; expected d_head={shape.d_head} (per-head norm) or "
                     f"n_heads*d_head={shape.n_heads * shape.d_head} (one norm over all heads)")


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each head's [d_model, d_head] block, in float64."""
    return x.double().flatten(1).norm(dim=1)


def _ratio_sqrt(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """sqrt(num / den), and 1 where either is 0 (an all-zero slice has nothing to balance)."""
    ok = (num > 0) & (den > 0)
    return torch.where(ok, (num / torch.where(ok, den, torch.ones_like(den))).sqrt(), torch.ones_like(num))


def balance_scales(weights: AttentionWeights, shape: AttentionShape, mode: str = "norms",
                   qk_norm: str = "none") -> HeadScales:
    """Function-preserving scales for ``weights`` (see the module docstring for the rule of each mode)."""
    check_balance(mode)
    if qk_norm not in QK_NORM_KINDS:
        raise ValueError(f"Unknown qk_norm {qk_norm!r}; allowed: {', '.join(QK_NORM_KINDS)}")
    if mode == "none":
        return identity_scales(shape)
    g, kv = shape.group_size, shape.n_kv_heads
    nq, nk, nv, no = (_norms(getattr(weights, n)) for n in ("q", "k", "v", "o"))
    q_block = nq.reshape(kv, g).pow(2).sum(1).sqrt()  # ||[Q_i for i in group j]||
    o_block = no.reshape(kv, g).pow(2).sum(1).sqrt()
    # V/O: d_j^2 = ||O_group|| / ||V_j|| minimises d^2 ||V||^2 + ||O||^2 / d^2 (and equalises the two)
    d = _ratio_sqrt(o_block, nv)
    sv, so = d, (1.0 / d).repeat_interleave(g)
    c = _ratio_sqrt(nk, q_block)  # same rule for Q (c) and K (1/c)
    sq, sk = c.repeat_interleave(g), 1.0 / c
    if qk_norm != "none":
        # Q and K are free separately: give each Q and K slice the layer's RMS V/O slice norm
        target = torch.cat([nv * sv, no * so]).pow(2).mean().sqrt()
        if qk_norm == "per_head":
            sq = torch.where(nq > 0, target / nq.clamp_min(1e-30), torch.ones_like(nq))
            sk = torch.where(nk > 0, target / nk.clamp_min(1e-30), torch.ones_like(nk))
        else:  # one norm over all heads: only one Q scale and one K scale are free (a per-group c_j
            # would change the norm's denominator, i.e. the softmax temperature)
            q_rms, k_rms = nq.pow(2).mean().sqrt(), nk.pow(2).mean().sqrt()
            sq = torch.full_like(nq, float(target / q_rms) if q_rms > 0 else 1.0)
            sk = torch.full_like(nk, float(target / k_rms) if k_rms > 0 else 1.0)
    return HeadScales(q=sq, k=sk, v=sv, o=so)


def apply_scales(weights: AttentionWeights, scales: HeadScales, inverse: bool = False) -> AttentionWeights:
    """Each head's block times its scale (``inverse``: divided by it); dtype and device of ``weights``."""
    out = {}
    for name in ("q", "k", "v", "o"):
        w = getattr(weights, name)
        s = getattr(scales, name).to(device=w.device, dtype=torch.float64)
        s = 1.0 / s if inverse else s
        out[name] = (w.double() * s[:, None, None]).to(w.dtype)
    return AttentionWeights(**out)


def slice_scales(scales: HeadScales, shape: AttentionShape, grouping: Grouping = "kv") -> torch.Tensor:
    """The scales as a (slices, groups) tensor: entry [s, j] multiplies slice s of group j of the 4-D tensor.

    Built by tensorising constant 1 x 1 "weights", so it follows :func:`tensorllm.tensorise.tensorise`
    exactly (K/V copies of the ``replicate`` and ``weighted`` groupings included).
    """
    unit = AttentionShape(n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads, d_head=1, d_model=1)
    scaled = AttentionWeights(**{n: getattr(scales, n).double()[:, None, None] for n in ("q", "k", "v", "o")})
    ones = AttentionWeights(**{n: torch.ones_like(getattr(scaled, n)) for n in ("q", "k", "v", "o")})
    # the ratio, so a grouping's own constant factors (``weighted``: K/V copies times 1/sqrt(g)) cancel
    return tensorise(scaled, unit, grouping)[0, 0] / tensorise(ones, unit, grouping)[0, 0]


def fold_unbalance(core: torch.Tensor, u3: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold U3 and the inverse slice scales into the core: returns (``(G x_3 U3) / scales``, identity U3).

    ``core`` (R1, R2, R3, groups), ``u3`` (slices, R3), ``scales`` (slices, groups) from :func:`slice_scales`.
    The result reconstructs the unbalanced tensor exactly (module docstring).
    """
    if scales.shape != (u3.shape[0], core.shape[3]):
        raise ValueError(f"slice scales of shape {tuple(scales.shape)} do not match (slices, groups) = "
                         f"({u3.shape[0]}, {core.shape[3]})")
    folded = mode_dot(core.double(), u3.double(), 2) / scales.double().to(core.device)[None, None]
    eye = torch.eye(u3.shape[0], dtype=u3.dtype, device=u3.device)
    return folded.to(core.dtype), eye
