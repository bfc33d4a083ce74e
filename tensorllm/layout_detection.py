"""Which layout a model has, matched on the structure of its own attention modules.

A layout (:mod:`tensorllm.layouts`) matches when, under one prefix, layer 0 holds all of its attention
weights (projection names: fused or separate) with the shapes the head counts imply (``[out, in]`` for a
Linear, ``[in, out]`` for a Conv1D). The head counts come from the config under their per-family names
(:func:`tensorllm.layouts.head_geometry`). ``config.model_type`` is only a hint: the layouts that list it
are tried first. An explicit ``layout`` is checked the same way, so a wrong name fails clearly.

What is matched is a mapping ``name -> tensor or shape``: a loaded model's ``state_dict()``, the header
of a safetensors checkpoint (:class:`tensorllm.checkpoint.Checkpoint`: no tensor is read), or the
skeleton of the model built from its config on the meta device (:func:`skeleton_shapes`: no memory).

Usage::

    found = detect_layout(model.state_dict(), model.config)
    found.layout.name, found.prefix, found.shape      # 'llama', 'model.', AttentionShape(...)

An unknown structure raises a ``ValueError`` that lists the layer's tensors (names and shapes), the head
counts read from the config and the known layouts.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from .attention_shape import AttentionShape, head_geometry
from .layouts import AttentionLayout, FFN_CANDIDATES, LAYOUTS, layout_named

log = logging.getLogger(__name__)

#: how a layer's name stem looks (``model.layers.0.``, ``transformer.h.0.``, ``encoder.layer.0.``, ``blocks.0.``)
_LAYER0 = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks|block)\.0\.")


@dataclass(frozen=True)
class DetectedLayout:
    """A layout matched in a model: the layout (FFN names as found), the prefix of its layers, the head geometry."""

    layout: AttentionLayout
    prefix: str
    shape: AttentionShape


def _shape_of(value) -> tuple[int, ...]:
    shape = getattr(value, "shape", value)
    return tuple(int(n) for n in shape)


def _candidates(config, layout: str | None) -> list[AttentionLayout]:
    if layout:
        return [layout_named(layout)]
    model_type = getattr(config, "model_type", None)
    hinted = [c for c in LAYOUTS if model_type in c.model_types]
    return hinted + [c for c in LAYOUTS if c not in hinted]


def detect_layout(tensors: Mapping, config, *, layout: str | None = None) -> DetectedLayout:
    """The layout whose attention weights of layer 0 exist in ``tensors`` with the shapes ``config`` implies."""
    shape = head_geometry(config)
    shapes = {name: _shape_of(value) for name, value in tensors.items()}
    for candidate in _candidates(config, layout):
        expected = candidate.expected_shapes(shape)
        names = candidate.attention_names(0)
        for prefix in candidate.prefixes_in(shapes, 0):
            if all(shapes[prefix + names[role]] == expected[role] for role in names):
                found = candidate.with_ffn(_ffn_found(candidate, prefix, shapes))
                log.debug("layout %s under prefix %r for %s", candidate.name, prefix, shape)
                return DetectedLayout(layout=found, prefix=prefix, shape=shape)
    raise ValueError(_no_match_message(shapes, shape, config, layout))


def _ffn_found(layout: AttentionLayout, prefix: str, shapes: Mapping[str, tuple]) -> dict[str, str]:
    """The first FFN name set that exists in layer 0 (``{}``: none, e.g. MoE experts, which LASER leaves alone)."""
    stem = prefix + layout.layer_template.format(l=0)
    for ffn in FFN_CANDIDATES:
        if all(stem + rel in shapes for rel in ffn.values()):
            return dict(ffn)
    return {}


def _no_match_message(shapes: Mapping[str, tuple], shape: AttentionShape, config, layout: str | None) -> str:
    layer = _first_layer(shapes)
    listed = ", ".join(f"{name} {list(s)}" for name, s in layer[:24]) or "no tensor named like '<prefix>layers.0.*'"
    if len(layer) > 24:
        listed += f", ... ({len(layer) - 24} more)"
    what = f"layout {layout!r} does not match" if layout else "no known layout matches"
    return (f"Unsupported architecture {getattr(config, 'model_type', None)!r}: {what} the attention of its first "
            f"layer. Found: {listed}. Head counts from the config: {shape.n_heads} heads, {shape.n_kv_heads} KV heads, "
            f"head dim {shape.d_head}, d_model {shape.d_model}. Known layouts: "
            + "; ".join(_describe(c, shape) for c in LAYOUTS) + ".")


def _first_layer(shapes: Mapping[str, tuple]) -> list[tuple[str, tuple]]:
    """The tensors of the first layer-0 stem found (sorted), e.g. everything under ``model.layers.0.``."""
    for name in sorted(shapes):
        match = _LAYER0.search(name)
        if match:
            stem = name[:match.end()]
            return [(n, shapes[n]) for n in sorted(shapes) if n.startswith(stem)]
    return []


def _describe(layout: AttentionLayout, shape: AttentionShape) -> str:
    names, expected = layout.attention_names(0), layout.expected_shapes(shape)
    return f"{layout.name} (" + ", ".join(f"{names[r]} {list(expected[r])}" for r in names) + ")"


# ---- the skeleton of a model, from its config -------------------------------------------------------
def skeleton_shapes(config) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape of the model ``config`` describes, built on the meta device (no memory).

    ``None`` when there is no transformers config or transformers cannot build a model from it. Cached
    per config (its JSON), so detection from a config costs the build once per process.
    """
    to_json = getattr(config, "to_json_string", None)
    if not callable(to_json):
        return None
    try:
        key = to_json(use_diff=False)
    except (TypeError, ValueError):
        return None
    shapes = _skeleton(type(config), key)
    return None if shapes is None else dict(shapes)


@lru_cache(maxsize=32)
def _skeleton(config_class: type, config_json: str) -> tuple | None:
    import torch
    import transformers

    try:
        config = config_class.from_dict(json.loads(config_json))
        with torch.device("meta"):
            model = transformers.AutoModel.from_config(config)
    except Exception as exc:  # an unregistered or remote-code config: the caller falls back to the hint
        log.debug("no skeleton for %s: %s", config_class.__name__, exc)
        return None
    return tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())
