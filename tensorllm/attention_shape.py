"""The geometry of one layer's attention, read from any family's config: head counts, head dim, model width.

* :class:`AttentionShape`: query heads, KV heads, head dim, d_model (MHA, GQA, MQA), and the parameter count
  of the four MHA matrices;
* :class:`AttentionWeights`: one layer's Q/K/V/O per head in the paper's orientation (Eqs. 5-7), what every
  layout (:mod:`tensorllm.layouts`) reads and writes;
* :func:`head_geometry` / :func:`layer_count`: these numbers from a config, under every family's field names
  (``num_attention_heads`` / ``n_head`` / ...), multimodal wrappers included (:func:`text_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTENTION_KINDS = ("q", "k", "v", "o")
FACTORS_MODULE_NAME = "tensorllm_factors"  # see tensorllm.factorised.FACTORS_MODULE (kept equal by a test)

#: per-family names of the same config fields, in the order they are tried
HEADS_ALIASES = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEADS_ALIASES = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "n_kv_heads", "num_kv")
D_MODEL_ALIASES = ("hidden_size", "n_embd", "d_model", "dim")
HEAD_DIM_ALIASES = ("head_dim", "attention_head_dim", "kv_channels")
LAYERS_ALIASES = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


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


# ---- head geometry from a config ------------------------------------------------------------------
def text_config(config):
    """The decoder's config: ``config.text_config`` of multimodal wrappers (Gemma-3, Llava...), else ``config``."""
    getter = getattr(config, "get_text_config", None)
    if callable(getter):
        try:
            return getter(decoder=True)
        except TypeError:
            return getter()
    return config


def _first(config, names: tuple[str, ...]):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def head_geometry(config) -> AttentionShape:
    """Heads, KV heads, head dim and d_model from a config, under any of the families' field names.

    ``multi_query=True`` (Falcon without the new decoder architecture, GPT-BigCode) means one KV head
    whatever ``num_kv_heads`` says; ``head_dim`` defaults to ``d_model // n_heads``.
    """
    config = text_config(config)
    n_heads, d_model = _first(config, HEADS_ALIASES), _first(config, D_MODEL_ALIASES)
    if n_heads is None or d_model is None:
        raise ValueError(f"config {type(config).__name__} has no head count or model width: looked for "
                         f"{' / '.join(HEADS_ALIASES)} and {' / '.join(D_MODEL_ALIASES)}")
    if getattr(config, "multi_query", False) and not getattr(config, "new_decoder_architecture", False):
        n_kv = 1
    else:
        n_kv = _first(config, KV_HEADS_ALIASES) or n_heads
    d_head = _first(config, HEAD_DIM_ALIASES) or d_model // n_heads
    if n_heads % n_kv:
        raise ValueError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}")
    return AttentionShape(n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head, d_model=d_model)


def layer_count(config) -> int:
    config = text_config(config)
    n = _first(config, LAYERS_ALIASES)
    if n is None:
        raise ValueError(f"config {type(config).__name__} has no layer count: looked for {' / '.join(LAYERS_ALIASES)}")
    return n
