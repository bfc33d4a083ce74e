"""Run a model from layer L on, given the hidden states entering layer L (the prefix-skipping forward).

A variant that changes only layers >= L leaves the hidden states entering layer L unchanged, so they
can be computed once and replayed. Instead of calling the model with ``inputs_embeds`` (which breaks for
families that add position embeddings or scale the embeddings, and for those that index
``config.layer_types`` by position), the decoder layers ``0 .. L-1`` are temporarily replaced by stubs
that ignore their input and return the stored hidden states. Everything else in the model's forward
(embedding lookup -- now wasted but cheap, attention mask, rotary tables from ``position_ids``, final
norm, LM head) runs as usual, and the layers keep their indices. The stubs are swapped back in a
``finally`` block. While a replay is running the model must not be used by another thread.

Only families checked bit-for-bit against a full forward (tests/tensorllm/evaluation/test_layer_cache.py)
are enabled (:data:`VERIFIED_MODEL_TYPES`); others fall back to a full forward with a log line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

#: model types whose layer stack was checked to give identical logits with replayed prefixes
VERIFIED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
#: attribute paths of the decoder-layer list, tried in order
LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of decoder layers (``model.model.layers`` for Llama), or None if not found."""
    for path in LAYER_PATHS:
        obj: object = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    return None


def skip_unsupported_reason(model: nn.Module) -> str | None:
    """Why prefix skipping cannot be used for ``model`` (None when it can)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in VERIFIED_MODEL_TYPES:
        return f"model_type {model_type!r} is not among the verified families {list(VERIFIED_MODEL_TYPES)}"
    if decoder_layers(model) is None:
        return f"no decoder-layer list found at {list(LAYER_PATHS)}"
    return None


def check_layer(model: nn.Module, layer: int) -> int:
    """Validate a first-changed-layer index against the model's depth."""
    layers = decoder_layers(model)
    n = len(layers) if layers is not None else getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (n is not None and layer >= n):
        raise ValueError(f"first_changed_layer must be an integer in [0, {n}) for this {n}-layer model, got {layer!r}")
    return layer


@dataclass
class LayerInput:
    """Hidden states entering a layer, and the output format of the layer before it (to mimic in stubs)."""

    hidden: torch.Tensor
    #: 0 if the previous layer returns a tensor, else the length of the tuple it returns
    tuple_len: int = 0


class _Recorder:
    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None
        self.tuple_len = 0


@contextmanager
def record_layer_input(model: nn.Module, layer: int) -> Iterator[_Recorder]:
    """Within the block, each forward stores the hidden states entering ``layer`` in ``recorder.hidden``."""
    layers = decoder_layers(model)
    if layers is None:
        raise ValueError(f"cannot record layer inputs: {skip_unsupported_reason(model)}")
    recorder = _Recorder()

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor):
            raise RuntimeError(f"layer {layer} was called without a hidden-state tensor; cannot record its input")
        recorder.hidden = hidden.detach()

    def post_hook(module, args, output):
        recorder.tuple_len = len(output) if isinstance(output, tuple) else 0

    handles = [layers[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if layer > 0:
        handles.append(layers[layer - 1].register_forward_hook(post_hook))
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


class _Replay(nn.Module):
    """Stands in for a prefix layer: returns the stored hidden states whatever it is given."""

    def __init__(self, stored: LayerInput) -> None:
        super().__init__()
        self.stored = stored

    def forward(self, *args, **kwargs):
        if self.stored.tuple_len:
            return (self.stored.hidden,) + (None,) * (self.stored.tuple_len - 1)
        return self.stored.hidden


@contextmanager
def replay_prefix(model: nn.Module, layer: int, stored: LayerInput) -> Iterator[None]:
    """Within the block, a forward runs layers ``layer..end`` on ``stored.hidden`` (layers ``< layer`` skipped)."""
    reason = skip_unsupported_reason(model)
    if reason:
        raise ValueError(f"cannot replay a prefix: {reason}")
    layers = decoder_layers(model)
    check_layer(model, layer)
    originals = [layers[i] for i in range(layer)]
    stub = _Replay(stored)
    try:
        for i in range(layer):
            layers[i] = stub
        yield
    finally:
        for i, original in enumerate(originals):
            layers[i] = original
