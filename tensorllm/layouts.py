"""Where Q, K, V, O (and the FFN matrices) of each Hugging Face architecture live, per layer and per head.

Every layout reads and writes one layer's attention as :class:`AttentionWeights`, a per-head view in
the paper's orientation (Eq. 5-7): ``q[i] = W^Q_i`` (d_model x d_head), ``k[j] = W^K_j``, ``v[j] = W^V_j``,
``o[i] = (W^O_i)^T`` (d_model x d_head). ``nn.Linear`` stores ``[out, in]``, so
``W^Q_i = q_proj.weight[i*d:(i+1)*d, :]^T`` and ``(W^O_i)^T = o_proj.weight[:, i*d:(i+1)*d]``; GPT-2's
``Conv1D`` stores ``[in, out]`` and GPT-NeoX interleaves Q, K, V per head in one ``query_key_value``.

Layouts work on a mapping ``name -> tensor``: a model's ``state_dict()`` (its tensors share storage with
the parameters, so :meth:`AttentionLayout.write_attention` edits the model in place) or the few tensors
that :mod:`tensorllm.checkpoint` reads from safetensors files. Biases are never touched.

Head counts: ``n_heads`` query heads and ``n_kv_heads`` key/value heads; MHA has ``n_kv_heads == n_heads``,
GQA ``1 < n_kv_heads < n_heads`` (query head ``i`` uses KV head ``i // (n_heads // n_kv_heads)``), MQA
``n_kv_heads == 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

import torch

ATTENTION_KINDS = ("q", "k", "v", "o")


@dataclass(frozen=True)
class AttentionShape:
    """Head geometry of one attention block."""

    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 for MHA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_params(self) -> int:
        """Parameters of the four MHA weight matrices of one layer, with the real K/V sizes under GQA."""
        return self.d_model * self.d_head * (2 * self.n_heads + 2 * self.n_kv_heads)


@dataclass
class AttentionWeights:
    """One layer's attention weights per head, paper orientation (all ``[heads, d_model, d_head]``)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor

    def to(self, *args, **kwargs) -> "AttentionWeights":
        return AttentionWeights(*(getattr(self, n).to(*args, **kwargs) for n in ATTENTION_KINDS))

    def clone(self) -> "AttentionWeights":
        return AttentionWeights(*(getattr(self, n).clone() for n in ATTENTION_KINDS))


class AttentionLayout(ABC):
    """Base class: parameter names and per-head slicing for one family of architectures."""

    model_types: tuple[str, ...] = ()
    #: possible prefixes before the per-layer part of the names (task heads add e.g. "model." or "bert.")
    prefixes: tuple[str, ...] = ("",)
    #: per-layer name templates, relative to the prefix; "{l}" is the layer index
    layer_template: str = ""
    #: LASER names (fc_in, fc_up, fc_out) -> weight name relative to the layer
    ffn: Mapping[str, str] = {}

    # ---- geometry -------------------------------------------------------------------------------
    def shape(self, config) -> AttentionShape:
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        d_model = config.hidden_size
        d_head = getattr(config, "head_dim", None) or d_model // n_heads
        if n_heads % n_kv:
            raise ValueError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}")
        return AttentionShape(n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head, d_model=d_model)

    def n_layers(self, config) -> int:
        return config.num_hidden_layers

    # ---- names ----------------------------------------------------------------------------------
    @abstractmethod
    def attention_names(self, layer: int) -> dict[str, str]:
        """Weight names (without prefix) this layout reads for ``layer``: role -> name."""

    def ffn_names(self, layer: int) -> dict[str, str]:
        base = self.layer_template.format(l=layer)
        return {role: base + rel for role, rel in self.ffn.items()}

    def find_prefix(self, names: Iterable[str], layer: int = 0) -> str:
        """The prefix under which this layout's layers exist in ``names`` (e.g. "model." for a CausalLM).

        Matched on the layer's name stem (``model.layers.0.``), not on one weight, so a model whose
        attention runs factorised (:mod:`tensorllm.factorised`, no q/k/v/o weights) still resolves.
        """
        names = set(names)
        stem = self.layer_template.format(l=layer)
        for prefix in self.prefixes:
            if any(name.startswith(prefix + stem) for name in names):
                return prefix
        raise KeyError(
            f"{type(self).__name__}: no layer named {stem!r} under any prefix {self.prefixes} "
            f"(checkpoint names start with {sorted(names)[:3]})"
        )

    def qualified(self, names: Mapping[str, str], prefix: str) -> dict[str, str]:
        return {role: prefix + name for role, name in names.items()}

    # ---- read / write ---------------------------------------------------------------------------
    @abstractmethod
    def read_attention(self, tensors: Mapping[str, torch.Tensor], layer: int, shape: AttentionShape,
                       prefix: str = "") -> AttentionWeights:
        """Layer ``layer``'s per-head weights from ``tensors`` (views where the layout allows)."""

    @abstractmethod
    def write_attention(self, tensors: MutableMapping[str, torch.Tensor], layer: int, shape: AttentionShape,
                        weights: AttentionWeights, prefix: str = "") -> None:
        """Copy ``weights`` into the stored tensors in place (dtype of the stored tensors is kept)."""


def _split_rows(weight: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """``[n*d, d_model]`` Linear weight -> ``[n, d_model, d]`` (block i = rows i*d:(i+1)*d, transposed)."""
    return weight.reshape(n, d, weight.shape[1]).transpose(1, 2)


def _split_cols(weight: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """``[d_model, n*d]`` weight -> ``[n, d_model, d]`` (block i = columns i*d:(i+1)*d)."""
    return weight.reshape(weight.shape[0], n, d).permute(1, 0, 2)


class SeparateLinearLayout(AttentionLayout):
    """Four ``nn.Linear`` projections per layer (Llama, Mistral, Qwen2, GPT-J, OPT, BERT, RoBERTa)."""

    q_name = k_name = v_name = o_name = ""

    def attention_names(self, layer: int) -> dict[str, str]:
        base = self.layer_template.format(l=layer)
        return {"q": base + self.q_name, "k": base + self.k_name, "v": base + self.v_name, "o": base + self.o_name}

    def read_attention(self, tensors, layer, shape, prefix=""):
        names = self.qualified(self.attention_names(layer), prefix)
        return AttentionWeights(
            q=_split_rows(tensors[names["q"]], shape.n_heads, shape.d_head),
            k=_split_rows(tensors[names["k"]], shape.n_kv_heads, shape.d_head),
            v=_split_rows(tensors[names["v"]], shape.n_kv_heads, shape.d_head),
            o=_split_cols(tensors[names["o"]], shape.n_heads, shape.d_head),
        )

    def write_attention(self, tensors, layer, shape, weights, prefix=""):
        names = self.qualified(self.attention_names(layer), prefix)
        with torch.no_grad():
            for role in ("q", "k", "v"):
                target = tensors[names[role]]
                n = shape.n_heads if role == "q" else shape.n_kv_heads
                _split_rows(target, n, shape.d_head).copy_(getattr(weights, role))
            _split_cols(tensors[names["o"]], shape.n_heads, shape.d_head).copy_(weights.o)


class LlamaLayout(SeparateLinearLayout):
    model_types = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
    prefixes = ("model.", "")
    layer_template = "layers.{l}."
    q_name, k_name, v_name, o_name = (f"self_attn.{p}_proj.weight" for p in "qkvo")
    ffn = {"fc_in": "mlp.gate_proj.weight", "fc_up": "mlp.up_proj.weight", "fc_out": "mlp.down_proj.weight"}


class GPTJLayout(SeparateLinearLayout):
    model_types = ("gptj",)
    prefixes = ("transformer.", "")
    layer_template = "h.{l}."
    q_name, k_name, v_name, o_name = (f"attn.{p}_proj.weight" for p in ("q", "k", "v", "out"))
    ffn = {"fc_in": "mlp.fc_in.weight", "fc_out": "mlp.fc_out.weight"}


class OPTLayout(SeparateLinearLayout):
    model_types = ("opt",)
    prefixes = ("model.decoder.", "decoder.", "")
    layer_template = "layers.{l}."
    q_name, k_name, v_name, o_name = (f"self_attn.{p}_proj.weight" for p in ("q", "k", "v", "out"))
    ffn = {"fc_in": "fc1.weight", "fc_out": "fc2.weight"}


class BertLayout(SeparateLinearLayout):
    model_types = ("bert", "roberta")
    prefixes = ("bert.encoder.", "roberta.encoder.", "encoder.")
    layer_template = "layer.{l}."
    q_name, k_name, v_name = (f"attention.self.{p}.weight" for p in ("query", "key", "value"))
    o_name = "attention.output.dense.weight"
    ffn = {"fc_in": "intermediate.dense.weight", "fc_out": "output.dense.weight"}


class FusedViewLayout(AttentionLayout):
    """Layouts whose per-head blocks are *views* into fused tensors: ``_views`` returns the four views
    (q, k, v, o in paper orientation); reading copies nothing, writing copies into the views in place."""

    @abstractmethod
    def _views(self, tensors, layer, shape, prefix) -> tuple[torch.Tensor, ...]:
        """The four per-head views (q, k, v, o) into the fused tensors."""

    def read_attention(self, tensors, layer, shape, prefix=""):
        return AttentionWeights(*self._views(tensors, layer, shape, prefix))

    def write_attention(self, tensors, layer, shape, weights, prefix=""):
        with torch.no_grad():
            for view, new in zip(self._views(tensors, layer, shape, prefix), (weights.q, weights.k, weights.v, weights.o)):
                view.copy_(new)


class GPT2Layout(FusedViewLayout):
    """GPT-2: ``Conv1D`` weights are ``[in, out]``; ``c_attn`` fuses Q|K|V along the output columns."""

    model_types = ("gpt2",)
    prefixes = ("transformer.", "")
    layer_template = "h.{l}."
    ffn = {"fc_in": "mlp.c_fc.weight", "fc_out": "mlp.c_proj.weight"}

    def attention_names(self, layer):
        base = self.layer_template.format(l=layer)
        return {"qkv": base + "attn.c_attn.weight", "o": base + "attn.c_proj.weight"}

    def _views(self, tensors, layer, shape, prefix):
        names = self.qualified(self.attention_names(layer), prefix)
        qkv, o = tensors[names["qkv"]], tensors[names["o"]]  # [d_model, 3*h*d], [h*d, d_model]
        width = shape.n_heads * shape.d_head
        q, k, v = (qkv[:, i * width:(i + 1) * width] for i in range(3))
        # Conv1D column block i of q is W^Q_i directly (x @ W); c_proj rows of head i are W^O_i.
        return (_split_cols(q, shape.n_heads, shape.d_head), _split_cols(k, shape.n_heads, shape.d_head),
                _split_cols(v, shape.n_heads, shape.d_head),
                o.reshape(shape.n_heads, shape.d_head, o.shape[1]).transpose(1, 2))


class GPTNeoXLayout(FusedViewLayout):
    """GPT-NeoX / Pythia: ``query_key_value`` rows are ordered (head, {q,k,v}, d_head)."""

    model_types = ("gpt_neox",)
    prefixes = ("gpt_neox.", "")
    layer_template = "layers.{l}."
    ffn = {"fc_in": "mlp.dense_h_to_4h.weight", "fc_out": "mlp.dense_4h_to_h.weight"}

    def attention_names(self, layer):
        base = self.layer_template.format(l=layer)
        return {"qkv": base + "attention.query_key_value.weight", "o": base + "attention.dense.weight"}

    def _views(self, tensors, layer, shape, prefix):
        names = self.qualified(self.attention_names(layer), prefix)
        qkv, o = tensors[names["qkv"]], tensors[names["o"]]
        per_head = qkv.reshape(shape.n_heads, 3, shape.d_head, qkv.shape[1])  # rows: head, {q,k,v}, d
        q, k, v = (per_head[:, j].transpose(1, 2) for j in range(3))
        return q, k, v, _split_cols(o, shape.n_heads, shape.d_head)


LAYOUTS: tuple[AttentionLayout, ...] = (LlamaLayout(), GPT2Layout(), GPTJLayout(), GPTNeoXLayout(), OPTLayout(),
                                        BertLayout())
SUPPORTED_MODEL_TYPES = tuple(t for layout in LAYOUTS for t in layout.model_types)


def layout_for(config) -> AttentionLayout:
    """The layout for a transformers config (by ``config.model_type``); unknown types list the supported ones."""
    model_type = getattr(config, "model_type", None)
    for layout in LAYOUTS:
        if model_type in layout.model_types:
            return layout
    raise ValueError(
        f"Unsupported architecture {model_type!r}. Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
    )
