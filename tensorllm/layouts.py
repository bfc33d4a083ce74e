"""Where Q, K, V, O (and the FFN matrices) of a Hugging Face model live, per layer and per head.

Every layout reads and writes one layer's attention as :class:`AttentionWeights`, a per-head view in
the paper's orientation (Eq. 5-7): ``q[i] = W^Q_i`` (d_model x d_head), ``k[j] = W^K_j``, ``v[j] = W^V_j``,
``o[i] = (W^O_i)^T`` (d_model x d_head). ``nn.Linear`` stores ``[out, in]``, so
``W^Q_i = q_proj.weight[i*d:(i+1)*d, :]^T`` and ``(W^O_i)^T = o_proj.weight[:, i*d:(i+1)*d]``.

A layout is a *structure*, not a list of model names (see :mod:`tensorllm.layout_detection`, which
matches them against a model's or a checkpoint's own tensor names and shapes):

=================  =====================================================  ===========================================
layout             attention tensors of one layer                         rows / columns of the fused tensor
=================  =====================================================  ===========================================
``llama``          ``self_attn.{q,k,v,o}_proj`` (Linear)                  -
``gptj``           ``attn.{q,k,v,out}_proj`` (Linear)                     -
``opt``            ``self_attn.{q,k,v,out}_proj`` (Linear)                -
``bert``           ``attention.self.{query,key,value}``,                  -
                   ``attention.output.dense`` (Linear)
``phi3``           ``self_attn.qkv_proj``, ``self_attn.o_proj`` (Linear)  rows ``[Q (h·d) | K (kv·d) | V (kv·d)]``
``gpt2``           ``attn.c_attn``, ``attn.c_proj`` (Conv1D, ``[in, out]``)  columns ``[Q | K | V]``
``gpt_neox``       ``attention.query_key_value``, ``attention.dense``     rows ``(kv, g+2, d)``: per KV head
``falcon``         ``self_attention.query_key_value``,                    ``[Q_1..Q_g, K, V]`` (MHA: ``(h, 3, d)``;
                   ``self_attention.dense``                               MQA: ``[Q_1..Q_h | K | V]``)
``gpt_bigcode``    ``attn.c_attn``, ``attn.c_proj`` (Linear)              as ``falcon``
=================  =====================================================  ===========================================

Layouts work on a mapping ``name -> tensor``: a model's ``state_dict()`` (its tensors share storage with
the parameters, so :meth:`AttentionLayout.write_attention` edits the model in place) or the few tensors
that :mod:`tensorllm.checkpoint` reads from safetensors files. Biases, per-head q/k norms and rotary
embeddings are never touched: a layout reads and writes the four projection weights only.

Head counts: ``n_heads`` query heads and ``n_kv_heads`` key/value heads; MHA has ``n_kv_heads == n_heads``,
GQA ``1 < n_kv_heads < n_heads`` (query head ``i`` uses KV head ``i // (n_heads // n_kv_heads)``), MQA
``n_kv_heads == 1``. They come from the config under any of their per-family names
(:func:`tensorllm.attention_shape.head_geometry`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, MutableMapping

import torch

from .attention_shape import FACTORS_MODULE_NAME, AttentionShape, AttentionWeights, head_geometry, layer_count


# ---- layouts --------------------------------------------------------------------------------------
class AttentionLayout(ABC):
    """Base class: parameter names, expected shapes and per-head slicing of one attention structure."""

    #: the layout's name (``--layout NAME``)
    name: str = ""
    #: model types known to have this structure: only a hint for the order in which layouts are tried
    model_types: tuple[str, ...] = ()
    #: per-layer name stem, relative to the prefix; "{l}" is the layer index
    layer_template: str = ""
    #: LASER names (fc_in, fc_up, fc_out) -> weight name relative to the layer (set by detection)
    ffn: Mapping[str, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.name == other.name and dict(self.ffn) == dict(other.ffn)

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def with_ffn(self, ffn: Mapping[str, str]) -> "AttentionLayout":
        """A copy whose FFN names are ``ffn`` (what detection found in the layer; ``{}`` for MoE layers)."""
        out = copy.copy(self)
        out.ffn = dict(ffn)
        return out

    # ---- geometry -------------------------------------------------------------------------------
    def shape(self, config) -> AttentionShape:
        return head_geometry(config)

    def n_layers(self, config) -> int:
        return layer_count(config)

    @abstractmethod
    def expected_shapes(self, shape: AttentionShape) -> dict[str, tuple[int, ...]]:
        """role -> the stored weight's shape for ``shape`` (what detection checks a candidate against)."""

    # ---- names ----------------------------------------------------------------------------------
    @abstractmethod
    def attention_names(self, layer: int) -> dict[str, str]:
        """Weight names (without prefix) this layout reads for ``layer``: role -> name."""

    def ffn_names(self, layer: int) -> dict[str, str]:
        base = self.layer_template.format(l=layer)
        return {role: base + rel for role, rel in self.ffn.items()}

    def prefixes_in(self, names: Iterable[str], layer: int = 0) -> list[str]:
        """Every prefix under which all of this layout's attention weights of ``layer`` exist in ``names``."""
        names = set(names)
        wanted = list(self.attention_names(layer).values())
        first = wanted[0]
        found = sorted({n[:-len(first)] for n in names if n.endswith(first)
                        and (len(n) == len(first) or n[-len(first) - 1] == ".")}, key=len)
        return [p for p in found if all(p + w in names for w in wanted)]

    def find_prefix(self, names: Iterable[str], layer: int = 0) -> str:
        """The prefix under which this layout's layers exist in ``names`` (e.g. "model." for a CausalLM).

        Found structurally: the prefix under which the layer's attention weights all exist; when they
        are absent (the layer runs factorised, :mod:`tensorllm.factorised`), the prefix of the layer's
        factor module or, last, of the layer's name stem (``model.layers.0.``). Where several prefixes
        qualify (a multimodal wrapper's vision tower also has ``layers.0.``), the one that holds this
        layout's attention weights wins, then the shortest.
        """
        names = set(names)
        full = self.prefixes_in(names, layer)
        if full:
            return full[0]
        stem = self.layer_template.format(l=layer)
        base = stem + self._attention_module() + "." + FACTORS_MODULE_NAME + "."
        factored = sorted({n[:n.index(base)] for n in names if base in n
                           and (n.index(base) == 0 or n[n.index(base) - 1] == ".")}, key=len)
        if factored:
            return factored[0]
        stems = sorted({n[:n.index(stem)] for n in names if stem in n
                        and (n.index(stem) == 0 or n[n.index(stem) - 1] == ".")}, key=len)
        if stems:
            return stems[0]
        raise KeyError(
            f"{type(self).__name__}: no layer named {stem!r} under any prefix "
            f"(checkpoint names start with {sorted(names)[:3]})"
        )

    def _attention_module(self) -> str:
        """The attention module's name relative to the layer (where the factorised module registers)."""
        return self.attention_names(0)["o"].removeprefix(self.layer_template.format(l=0)).rsplit(".", 2)[0]

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
    """Four ``nn.Linear`` projections per layer."""

    q_name = k_name = v_name = o_name = ""

    def attention_names(self, layer: int) -> dict[str, str]:
        base = self.layer_template.format(l=layer)
        return {"q": base + self.q_name, "k": base + self.k_name, "v": base + self.v_name, "o": base + self.o_name}

    def expected_shapes(self, shape):
        h, kv, dm = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head, shape.d_model
        return {"q": (h, dm), "k": (kv, dm), "v": (kv, dm), "o": (dm, h)}

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
    """``self_attn.{q,k,v,o}_proj``: Llama, Mistral, Mixtral, Qwen2/3, Gemma 1-3, StarCoder2, OLMo, Cohere,
    Granite, StableLM and every other decoder built the same way."""

    name = "llama"
    model_types = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                   "gemma3", "gemma3_text", "starcoder2", "olmo", "olmo2", "olmo3", "cohere", "cohere2", "granite",
                   "granitemoe", "stablelm", "phimoe")
    layer_template = "layers.{l}."
    q_name, k_name, v_name, o_name = (f"self_attn.{p}_proj.weight" for p in "qkvo")


class GPTJLayout(SeparateLinearLayout):
    name = "gptj"
    model_types = ("gptj",)
    layer_template = "h.{l}."
    q_name, k_name, v_name, o_name = (f"attn.{p}_proj.weight" for p in ("q", "k", "v", "out"))


class OPTLayout(SeparateLinearLayout):
    name = "opt"
    model_types = ("opt",)
    layer_template = "layers.{l}."
    q_name, k_name, v_name, o_name = (f"self_attn.{p}_proj.weight" for p in ("q", "k", "v", "out"))


class BertLayout(SeparateLinearLayout):
    name = "bert"
    model_types = ("bert", "roberta")
    layer_template = "layer.{l}."
    q_name, k_name, v_name = (f"attention.self.{p}.weight" for p in ("query", "key", "value"))
    o_name = "attention.output.dense.weight"


class FusedViewLayout(AttentionLayout):
    """Layouts whose per-head blocks are *views* into fused tensors: ``_views`` returns the four views
    (q, k, v, o in paper orientation); reading copies nothing, writing copies into the views in place."""

    qkv_name = o_name = ""

    def attention_names(self, layer):
        base = self.layer_template.format(l=layer)
        return {"qkv": base + self.qkv_name, "o": base + self.o_name}

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

    name = "gpt2"
    model_types = ("gpt2",)
    layer_template = "h.{l}."
    qkv_name, o_name = "attn.c_attn.weight", "attn.c_proj.weight"

    def expected_shapes(self, shape):
        h, kv, dm = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head, shape.d_model
        return {"qkv": (dm, h + 2 * kv), "o": (h, dm)}

    def _views(self, tensors, layer, shape, prefix):
        names = self.qualified(self.attention_names(layer), prefix)
        qkv, o = tensors[names["qkv"]], tensors[names["o"]]  # [d_model, (h+2kv)*d], [h*d, d_model]
        hw, kw = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head
        q, k, v = qkv[:, :hw], qkv[:, hw:hw + kw], qkv[:, hw + kw:]
        # Conv1D column block i of q is W^Q_i directly (x @ W); c_proj rows of head i are W^O_i.
        return (_split_cols(q, shape.n_heads, shape.d_head), _split_cols(k, shape.n_kv_heads, shape.d_head),
                _split_cols(v, shape.n_kv_heads, shape.d_head),
                o.reshape(shape.n_heads, shape.d_head, o.shape[1]).transpose(1, 2))


class BlockedQKVLayout(FusedViewLayout):
    """One Linear ``[Q (h·d) | K (kv·d) | V (kv·d)]`` along its output rows, then a Linear output (Phi-3)."""

    def expected_shapes(self, shape):
        h, kv, dm = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head, shape.d_model
        return {"qkv": (h + 2 * kv, dm), "o": (dm, h)}

    def _views(self, tensors, layer, shape, prefix):
        names = self.qualified(self.attention_names(layer), prefix)
        qkv, o = tensors[names["qkv"]], tensors[names["o"]]
        hw, kw = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head
        return (_split_rows(qkv[:hw], shape.n_heads, shape.d_head),
                _split_rows(qkv[hw:hw + kw], shape.n_kv_heads, shape.d_head),
                _split_rows(qkv[hw + kw:], shape.n_kv_heads, shape.d_head),
                _split_cols(o, shape.n_heads, shape.d_head))


class Phi3Layout(BlockedQKVLayout):
    name = "phi3"
    model_types = ("phi3",)
    layer_template = "layers.{l}."
    qkv_name, o_name = "self_attn.qkv_proj.weight", "self_attn.o_proj.weight"


class GroupedQKVLayout(FusedViewLayout):
    """One Linear whose output rows are ordered (KV head, [Q_1..Q_g, K, V], d_head), then a Linear output.

    With g = 1 (MHA) that is GPT-NeoX's ``(head, {q, k, v}, d_head)``; with one KV head (MQA) it is
    ``[Q_1..Q_h | K | V]``. Falcon (all three of its variants) and GPT-BigCode (MHA and MQA) store it so.
    """

    def expected_shapes(self, shape):
        h, kv, dm = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head, shape.d_model
        return {"qkv": (h + 2 * kv, dm), "o": (dm, h)}

    def _views(self, tensors, layer, shape, prefix):
        """q as a ``[kv, g, d_model, d_head]`` view (the query heads of a group are not evenly strided
        across groups, so no single ``[h, ...]`` view exists when 1 < kv < h); k, v, o as usual."""
        names = self.qualified(self.attention_names(layer), prefix)
        qkv, o = tensors[names["qkv"]], tensors[names["o"]]
        g, kv, d = shape.group_size, shape.n_kv_heads, shape.d_head
        per_group = qkv.reshape(kv, g + 2, d, qkv.shape[1])  # rows: KV head, [Q_1..Q_g, K, V], d
        q = per_group[:, :g].transpose(2, 3)
        k, v = per_group[:, g].transpose(1, 2), per_group[:, g + 1].transpose(1, 2)
        return q, k, v, _split_cols(o, shape.n_heads, d)

    def read_attention(self, tensors, layer, shape, prefix=""):
        q, k, v, o = self._views(tensors, layer, shape, prefix)
        return AttentionWeights(q.reshape(shape.n_heads, shape.d_model, shape.d_head), k, v, o)

    def write_attention(self, tensors, layer, shape, weights, prefix=""):
        q, k, v, o = self._views(tensors, layer, shape, prefix)
        with torch.no_grad():
            q.copy_(weights.q.reshape(q.shape))
            for view, new in ((k, weights.k), (v, weights.v), (o, weights.o)):
                view.copy_(new)


class GPTNeoXLayout(GroupedQKVLayout):
    """GPT-NeoX / Pythia: ``query_key_value`` rows are ordered (head, {q,k,v}, d_head)."""

    name = "gpt_neox"
    model_types = ("gpt_neox",)
    layer_template = "layers.{l}."
    qkv_name, o_name = "attention.query_key_value.weight", "attention.dense.weight"


class FalconLayout(GroupedQKVLayout):
    name = "falcon"
    model_types = ("falcon",)
    layer_template = "h.{l}."
    qkv_name, o_name = "self_attention.query_key_value.weight", "self_attention.dense.weight"


class GPTBigCodeLayout(GroupedQKVLayout):
    """GPT-BigCode / SantaCoder / StarCoder (1): ``c_attn`` is a Linear (GPT-2's is a Conv1D)."""

    name = "gpt_bigcode"
    model_types = ("gpt_bigcode",)
    layer_template = "h.{l}."
    qkv_name, o_name = "attn.c_attn.weight", "attn.c_proj.weight"


LAYOUTS: tuple[AttentionLayout, ...] = (LlamaLayout(), Phi3Layout(), GPT2Layout(), GPTBigCodeLayout(), GPTJLayout(),
                                        GPTNeoXLayout(), FalconLayout(), OPTLayout(), BertLayout())
LAYOUT_NAMES: tuple[str, ...] = tuple(layout.name for layout in LAYOUTS)
#: model types with a known layout (hints only: any model whose modules match a layout is supported)
SUPPORTED_MODEL_TYPES = tuple(t for layout in LAYOUTS for t in layout.model_types)

#: LASER's FFN matrices per structure, relative to the layer; detection takes the first set that exists
FFN_CANDIDATES: tuple[dict[str, str], ...] = (
    {"fc_in": "mlp.gate_proj.weight", "fc_up": "mlp.up_proj.weight", "fc_out": "mlp.down_proj.weight"},
    {"fc_in": "mlp.gate_up_proj.weight", "fc_out": "mlp.down_proj.weight"},  # Phi-3: gate|up fused
    {"fc_in": "mlp.c_fc.weight", "fc_out": "mlp.c_proj.weight"},  # GPT-2, GPT-BigCode, StarCoder2
    {"fc_in": "mlp.fc_in.weight", "fc_out": "mlp.fc_out.weight"},  # GPT-J
    {"fc_in": "mlp.dense_h_to_4h.weight", "fc_out": "mlp.dense_4h_to_h.weight"},  # GPT-NeoX, Falcon
    {"fc_in": "fc1.weight", "fc_out": "fc2.weight"},  # OPT
    {"fc_in": "intermediate.dense.weight", "fc_out": "output.dense.weight"},  # BERT, RoBERTa
)


def layout_named(name: str) -> AttentionLayout:
    """The layout called ``name`` (``--layout NAME``); an unknown name lists the known ones."""
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise ValueError(f"Unknown layout {name!r}; known layouts: {', '.join(LAYOUT_NAMES)}.")


def layout_for(config, tensors: Mapping | None = None, layout: str | None = None) -> AttentionLayout:
    """The layout of a model, matched on its attention modules' structure (see :mod:`tensorllm.layout_detection`).

    ``tensors`` (name -> tensor or shape: a state dict, a checkpoint's header) is what is matched; ``model_type``
    is then only a hint for the order in which layouts are tried. Without ``tensors``, a known ``model_type``
    gives its layout directly (the skeleton built from the same config could only agree), and any other config
    is matched on the model's skeleton, built on the meta device (no memory, no weights). ``layout`` (or
    ``config.tensorllm_layout``, which ``--layout`` sets on a loaded model) names the layout explicitly.
    """
    from .layout_detection import detect_layout, skeleton_shapes

    override = layout or getattr(config, "tensorllm_layout", None)
    if tensors is not None:
        return detect_layout(tensors, config, layout=override).layout
    model_type = getattr(config, "model_type", None)
    hinted = _hinted(model_type)
    if hinted is not None and override in (None, hinted.name):
        # the skeleton would be built from this same config class, so for a known type it can only agree with
        # the hint (a test holds every tiny family to that); skipping it saves importing the modeling file
        return hinted
    skeleton = skeleton_shapes(config)
    if skeleton is not None:
        return detect_layout(skeleton, config, layout=override).layout
    # no structure to look at (a bare namespace, or a config transformers cannot build): only a name can decide
    if override:
        return layout_named(override).with_ffn({})
    raise ValueError(
        f"Unsupported architecture {model_type!r}. Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}. "
        f"Any other model whose transformers config loads and whose attention matches a known layout "
        f"({', '.join(LAYOUT_NAMES)}) is supported too (its modules are matched; --layout NAME names one)."
    )


#: FFN names per layout where a config alone is known (first FFN_CANDIDATES entry if absent), and the model types
#: whose FFN differs from their layout's usual one (MoE layers have no single FFN matrix: {})
_FFN_BY_LAYOUT = {"phi3": FFN_CANDIDATES[1], "gpt2": FFN_CANDIDATES[2], "gpt_bigcode": FFN_CANDIDATES[2],
                  "gptj": FFN_CANDIDATES[3], "gpt_neox": FFN_CANDIDATES[4], "falcon": FFN_CANDIDATES[4],
                  "opt": FFN_CANDIDATES[5], "bert": FFN_CANDIDATES[6]}
_FFN_BY_MODEL_TYPE = {"starcoder2": FFN_CANDIDATES[2], "mixtral": {}, "qwen2_moe": {}, "qwen3_moe": {},
                      "granitemoe": {}, "phimoe": {}}


def _hinted(model_type) -> AttentionLayout | None:
    """The layout (with FFN names) a known ``model_type`` has; None for an unknown one."""
    for candidate in LAYOUTS:
        if model_type in candidate.model_types:
            ffn = _FFN_BY_MODEL_TYPE.get(model_type, _FFN_BY_LAYOUT.get(candidate.name, FFN_CANDIDATES[0]))
            return candidate.with_ffn(ffn)
    return None
