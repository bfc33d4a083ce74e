"""Attention that runs on the Tucker factors: the compressed model is smaller *and* computes less.

A layer decomposed as ``W_all ~= G_all x_1 U1 x_2 U2 x_3 U3`` (Eqs. 9-12) never needs its dense
matrices back. Fold U3 into the cores, ``C = G_all x_3 U3`` of shape (R1, R2, slices, groups), and the
inverse tensorisation of ``C`` gives one small R1 x R2 core per head and role, so that (Eq. 9)

    W^Q_i = U1 · C^Q_i · U2^T        (d_model x d_head; K, V alike)
    (W^O_i)^T = U1 · C^O_i · U2^T

For a batch of hidden states X (n x d_model):

* ``X·U1`` (n x R1) is computed **once** and shared by Q, K and V of every head;
* head i's query is ``(X·U1) · C^Q_i · U2^T``: two small products (all heads in one matmul each);
* the output projection ``sum_i A_i · W^O_i = [sum_i (A_i·U2) · (C^O_i)^T] · U1^T`` runs through U2,
  the per-head cores and U1^T.

:class:`FactorisedAttention` holds U1, U2 and the cores (U3 folded in); small adapter modules replace the
model's projection modules (separate ``q/k/v/o`` Linear layers; fused projections whose output is
``[Q | K | V]``: GPT-2's Conv1D ``c_attn``, Phi-3's ``qkv_proj``; or grouped per KV head ``[Q_1..Q_g, K, V]``:
GPT-NeoX's and Falcon's ``query_key_value``, GPT-BigCode's ``c_attn``), so everything else of the family's
attention stays as it is: RoPE, biases (kept by the adapters), per-head q/k norms, GQA/MQA head sharing,
caches. The adapters of one layer share
the factors; with separate projections, ``X·U1`` is cached for the one input tensor that q, k and v see.

Parameters: ``d_model·R1 + d_head·R2 + R1·R2·(2·n_heads + 2·n_kv_heads)``. When that, or the multiply-adds
per token, is not below the dense layer's (high ranks), :func:`factorised_pays_off` says so and callers
keep the layer dense (:func:`tensorllm.export.variant_model` does).

Usage::

    artifact = load_artifact("runs/artifacts/smollm2-135m/layer029-mha-kv-r288x32x4")
    install_factorised(model, artifact)          # model.model.layers[29].self_attn now runs factorised
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .artifact import Artifact, adopt_recorded_layout, check_architecture, verify_base
from .attention_shape import AttentionShape, FACTORS_MODULE_NAME
from .layouts import GroupedQKVLayout, layout_for
from .tensorise import untensorise
from .tucker import mode_dot

FACTORS_MODULE = FACTORS_MODULE_NAME  # attribute of the attention module that owns the factors


@dataclass(frozen=True)
class FactorisedCost:
    """Size and work of one layer's attention projections, dense vs factorised (per token)."""

    dense_params: int
    factorised_params: int
    dense_macs: int
    factorised_macs: int

    @property
    def pays_off(self) -> bool:
        return self.factorised_params < self.dense_params and self.factorised_macs < self.dense_macs


def factorised_cost(shape: AttentionShape, r1: int, r2: int) -> FactorisedCost:
    """Parameters and multiply-adds per token of the four projections, dense and factorised.

    Dense: every weight is used once per token. Factorised: X·U1 once (d_model·R1), the cores of all Q/K/V
    heads (R1·R2 each) and U2^T per head (R2·d_head); output: U2 per head, the O cores, U1^T.
    """
    h, kv, dm, dh = shape.n_heads, shape.n_kv_heads, shape.d_model, shape.d_head
    dense = shape.n_params
    factorised_params = dm * r1 + dh * r2 + r1 * r2 * (2 * h + 2 * kv)
    macs = dm * r1 + (h + 2 * kv) * (r1 * r2 + r2 * dh) + h * (dh * r2 + r2 * r1) + r1 * dm
    return FactorisedCost(dense_params=dense, factorised_params=factorised_params, dense_macs=dense,
                          factorised_macs=macs)


class FactorisedAttention(nn.Module):
    """One layer's MHA weights as shared factors U1, U2 and per-head cores (U3 folded in).

    Shapes (``h`` query heads, ``kv`` KV heads): ``U1`` (d_model, R1), ``U2`` (d_head, R2),
    ``core_q`` (R1, h, R2), ``core_k``/``core_v`` (R1, kv, R2), ``core_o`` (h, R2, R1). The input cores are
    stored so that ``(X·U1) @ core_q.view(R1, h*R2)`` projects all heads in one matmul.
    """

    def __init__(self, shape: AttentionShape, r1: int, r2: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        self.shape = shape
        h, kv = shape.n_heads, shape.n_kv_heads

        def zeros(*size: int) -> nn.Parameter:  # device="meta": shapes only (a loader fills them in)
            return nn.Parameter(torch.zeros(*size, dtype=dtype, device=device), requires_grad=False)

        self.U1, self.U2 = zeros(shape.d_model, r1), zeros(shape.d_head, r2)
        self.core_q, self.core_o = zeros(r1, h, r2), zeros(h, r2, r1)
        self.core_k, self.core_v = zeros(r1, kv, r2), zeros(r1, kv, r2)
        # (weak reference to the input tensor, its version counter, X·U1): never keeps a past input alive
        self._shared: tuple | None = None

    @property
    def ranks(self) -> tuple[int, int]:
        return self.U1.shape[1], self.U2.shape[1]

    @classmethod
    def from_artifact(cls, artifact: Artifact, dtype: torch.dtype = torch.float32) -> "FactorisedAttention":
        """Fold U3 into the core (``C = G x_3 U3``) and split C per head and role with the inverse
        tensorisation itself, applied to the (R1, R2, slices, groups) core instead of the weights."""
        shape = AttentionShape(**artifact.meta["attention_shape"])
        u1, u2, u3, core = (artifact.tensors[n].to(torch.float32) for n in ("U1", "U2", "U3", "core"))
        r1, r2 = u1.shape[1], u2.shape[1]
        folded = mode_dot(core, u3, 2)  # (R1, R2, slices, groups)
        small = AttentionShape(n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads, d_head=r2, d_model=r1)
        cores = untensorise(folded, small, artifact.meta["grouping"])  # q/k/v/o: [heads, R1, R2]
        module = cls(shape, r1, r2, dtype=dtype)
        with torch.no_grad():
            module.U1.copy_(u1)
            module.U2.copy_(u2)
            module.core_q.copy_(cores.q.permute(1, 0, 2))
            module.core_k.copy_(cores.k.permute(1, 0, 2))
            module.core_v.copy_(cores.v.permute(1, 0, 2))
            module.core_o.copy_(cores.o.permute(0, 2, 1))
        return module

    def cost(self) -> FactorisedCost:
        return factorised_cost(self.shape, *self.ranks)

    def shared_input(self, x: torch.Tensor) -> torch.Tensor:
        """``X·U1``, computed once for the input tensor that Q, K and V projections all receive."""
        cached = self._shared
        version = _version(x)
        if cached is not None and cached[0]() is x and cached[1] == version:
            return cached[2]
        xu = x @ self.U1
        self._shared = (weakref.ref(x), version, xu)
        return xu

    def project(self, role: str, x: torch.Tensor) -> torch.Tensor:
        """Q, K or V of every head for input ``x`` (..., d_model) -> (..., n * d_head), head-major like a Linear."""
        core = {"q": self.core_q, "k": self.core_k, "v": self.core_v}[role]
        r1, n, r2 = core.shape
        per_head = (self.shared_input(x) @ core.reshape(r1, n * r2)).unflatten(-1, (n, r2))
        return (per_head @ self.U2.T).flatten(-2)

    def project_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, K, V), each (..., n, d_head): what fused QKV projections need."""
        return tuple((self.project(role, x)).unflatten(-1, (-1, self.shape.d_head)) for role in "qkv")

    def output(self, a: torch.Tensor) -> torch.Tensor:
        """The output projection of the concatenated heads ``a`` (..., n_heads * d_head) -> (..., d_model)."""
        self._shared = None  # this step's Q/K/V are done: drop the cached input
        h, r2, r1 = self.core_o.shape
        through_u2 = a.unflatten(-1, (h, self.shape.d_head)) @ self.U2  # (..., h, R2)
        return (through_u2.flatten(-2) @ self.core_o.reshape(h * r2, r1)) @ self.U1.T


def _version(x: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by in-place edits). Inference tensors (``torch.inference_mode``)
    have none; within one attention call nothing edits its input in place, so identity decides for them."""
    return None if x.is_inference() else x._version


class _Adapter(nn.Module):
    """Base of the modules that take the place of projection layers; they reach the layer's
    :class:`FactorisedAttention` without registering it (it is registered once, on the attention module,
    so the state dict holds each factor once)."""

    def __init__(self, factors: FactorisedAttention, bias: torch.Tensor | None):
        super().__init__()
        self.__dict__["factors"] = factors  # plain attribute on purpose: not a submodule
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def _with_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias


class FactorisedProjection(_Adapter):
    """Replaces ``q_proj`` / ``k_proj`` / ``v_proj`` (separate Linear layers)."""

    def __init__(self, factors: FactorisedAttention, role: str, bias: torch.Tensor | None):
        super().__init__(factors, bias)
        self.role = role

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_bias(self.factors.project(self.role, x))


class FactorisedOutput(_Adapter):
    """Replaces the output projection (``o_proj``, ``out_proj``, ``c_proj``, ``dense``)."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self._with_bias(self.factors.output(a))


class FactorisedFusedQKV(_Adapter):
    """Replaces a fused QKV projection. ``grouped=False``: features ``[Q (h·d) | K (kv·d) | V (kv·d)]`` (GPT-2's
    ``c_attn``, Phi-3's ``qkv_proj``); ``grouped=True``: features ordered (KV head, [Q_1..Q_g, K, V], d_head)
    (GPT-NeoX's and Falcon's ``query_key_value``, GPT-BigCode's ``c_attn``; with g = 1 that is (head, {q,k,v}, d))."""

    def __init__(self, factors: FactorisedAttention, bias: torch.Tensor | None, grouped: bool):
        super().__init__(factors, bias)
        self.grouped = grouped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.factors.project_all(x)  # q (..., h, d_head); k, v (..., kv, d_head)
        if self.grouped:
            kv = k.shape[-2]
            q = q.unflatten(-2, (kv, -1))  # (..., kv, g, d_head): query head i is in group i // g
            fused = torch.cat((q, k.unsqueeze(-2), v.unsqueeze(-2)), dim=-2).flatten(-3)
        else:
            fused = torch.cat((q.flatten(-2), k.flatten(-2), v.flatten(-2)), dim=-1)
        return self._with_bias(fused)


def _module_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def install_factorised(model: nn.Module, artifact: Artifact, verify: bool = True) -> FactorisedAttention:
    """Replace layer ``artifact.layer``'s projection modules of ``model`` by factorised ones, in place.

    ``verify`` checks that the model's current weights are the ones the artifact was made from (as
    :func:`tensorllm.artifact.apply_artifacts` does). Returns the layer's :class:`FactorisedAttention`.
    """
    if artifact.kind != "tucker_mha":
        raise ValueError(f"artifact {artifact.path} is {artifact.kind!r}; only tucker_mha artifacts run factorised")
    adopt_recorded_layout(model, [artifact])
    layout = layout_for(model.config)
    check_architecture(artifact, model.config, layout.shape(model.config))
    if verify:
        state = model.state_dict()
        prefix = layout.find_prefix(state.keys())
        names = layout.qualified(layout.attention_names(artifact.layer), prefix).values()
        verify_base(artifact, {n: state[n] for n in names}, prefix)
    return install_factors(model, artifact.layer, FactorisedAttention.from_artifact(artifact))


def install_factors(model: nn.Module, layer: int, factors: FactorisedAttention) -> FactorisedAttention:
    """Put ``factors`` in place of layer ``layer``'s projection modules (biases are kept by the adapters).

    Used directly by :func:`tensorllm.export.load_compressed`, which installs zero factors of the right
    shapes and then loads their values from the exported state dict.
    """
    layout = layout_for(model.config)
    shape = layout.shape(model.config)
    if factors.shape != shape:
        raise ValueError(f"factors for {factors.shape} do not fit this model's attention {shape}")
    prefix = layout.find_prefix(model.state_dict().keys())
    modules = {role: _module_name(name)
               for role, name in layout.qualified(layout.attention_names(layer), prefix).items()}
    reference = next(model.parameters())
    factors = factors.to(device=reference.device, dtype=reference.dtype)
    biases = {role: getattr(model.get_submodule(m), "bias", None) for role, m in modules.items()}
    if "qkv" in modules:  # fused: [Q | K | V] (GPT-2, Phi-3) or grouped per KV head (GPT-NeoX, Falcon, GPT-BigCode)
        fused = FactorisedFusedQKV(factors, biases["qkv"], grouped=isinstance(layout, GroupedQKVLayout))
        _replace(model, modules["qkv"], fused)
    else:
        for role in ("q", "k", "v"):
            _replace(model, modules[role], FactorisedProjection(factors, role, biases[role]))
    _replace(model, modules["o"], FactorisedOutput(factors, biases["o"]))
    attention_module = modules["o"].rpartition(".")[0]
    model.get_submodule(attention_module).add_module(FACTORS_MODULE, factors)
    return factors


def factorised_layers(model: nn.Module) -> dict[str, FactorisedAttention]:
    """Module name -> :class:`FactorisedAttention` for every layer of ``model`` that runs factorised."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FactorisedAttention)}
