"""The teacher-forced pass over all items, with full forwards or with the layer-L hidden-state cache.

With ``layer`` set (the first layer the evaluated variant changed) and a verified architecture, the first
call for a given (prefix weights, layer, batch layout) runs full forwards while recording the hidden
states entering ``layer`` (a miss); later calls replay them and run only layers ``layer..end`` (a hit).
The cached and full paths compute the suffix on the same tensors, so their logits agree to float
rounding (tests check 1e-4 in fp32).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from .. import progress
from .batching import Batch, layout_digest, make_batches
from .fingerprint import prefix_fingerprint
from .hidden_cache import HiddenStateCache
from .layer_skip import LayerInput, check_layer, record_layer_input, replay_prefix, skip_unsupported_reason
from .runtime import model_device, model_dtype
from .scoring import TokenScores, forward_tail_logits, score_tail, tail_size

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored tensors' meaning changes


@dataclass
class TeacherForcedRun:
    """Per-item scores (in the order of the input sequences) and how the layer cache was used."""

    scores: list[TokenScores]
    layer_cache: str  # "off" | "hit" | "miss" | "unsupported"
    cache_key: str | None = None


def _tag(model_id: str | None, fingerprint: str) -> str:
    if model_id:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)[:64]
    return f"fp-{fingerprint[:16]}"


def cache_key(
    model: nn.Module, layer: int, batches: Sequence[Batch], *, label: str, model_id: str | None = None
) -> str:
    """``<model tag>/<label>-L<layer>-<hash>``: the hash covers prefix weights, dtype, device type and layout."""
    fingerprint = prefix_fingerprint(model, layer)
    parts = {
        "format": CACHE_FORMAT,
        "model_id": model_id,
        "prefix_fingerprint": fingerprint,
        "layer": layer,
        "dtype": str(model_dtype(model)),
        "device_type": model_device(model).type,
        "layout": layout_digest(batches),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    safe_label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    return f"{_tag(model_id, fingerprint)}/{safe_label}-L{layer}-{digest}"


def _score_batches(model, batches, answers, candidate_ids, device, runner) -> list[TokenScores | None]:
    scores: list[TokenScores | None] = [None] * len(answers)
    for index, batch in enumerate(batches):
        rows = [answers[i] for i in batch.indices]
        tail = runner(index, batch.to(device), tail_size(rows))
        for i, score in zip(batch.indices, score_tail(tail, rows, candidate_ids)):
            scores[i] = score
        progress.advance("teacher-forced", len(batch.indices))
    return scores


@torch.no_grad()
def run_teacher_forced(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pad_id: int,
    candidate_ids: Sequence[int] | None = None,
    layer: int | None = None,
    cache: HiddenStateCache | None = None,
    label: str = "eval",
    model_id: str | None = None,
    fill_layers: Sequence[int] = (),
) -> TeacherForcedRun:
    """Score every ``sequences[i]`` (prompt + answer tokens) whose last ``len(answers[i])`` tokens are the answer.

    ``fill_layers`` (with ``layer=None``): while running the full forwards, also record the hidden states
    entering each of these layers and store them in ``cache``, so that variants editing any of them hit
    the cache without a fill of their own (one base pass fills a whole sweep's layers).
    """
    if len(sequences) != len(answers):
        raise ValueError(f"got {len(sequences)} sequences but {len(answers)} answers")
    batches = make_batches(sequences, batch_size, pad_id)
    device = model_device(model)

    def full(_index: int, batch: Batch, keep: int) -> torch.Tensor:
        return forward_tail_logits(model, batch, keep)

    if layer is None:
        if fill_layers and not skip_unsupported_reason(model):
            return _fill(model, batches, answers, candidate_ids, device, fill_layers, cache, label, model_id)
        return TeacherForcedRun(_score_batches(model, batches, answers, candidate_ids, device, full), "off")
    check_layer(model, layer)
    reason = skip_unsupported_reason(model)
    if layer == 0 or reason:
        why = "layer 0 has no prefix to skip" if layer == 0 else reason
        log.info("layer cache not used (%s): running full forwards", why)
        status = "off" if layer == 0 else "unsupported"
        return TeacherForcedRun(_score_batches(model, batches, answers, candidate_ids, device, full), status)
    if cache is None:
        raise ValueError("run_teacher_forced with a layer needs a HiddenStateCache")

    key = cache_key(model, layer, batches, label=label, model_id=model_id)
    entry = cache.get(key)  # on the CPU; each batch moves to the device when it runs
    if entry is not None and [tuple(e.hidden.shape[:2]) for e in entry] != [tuple(b.input_ids.shape) for b in batches]:
        log.warning("hidden-state cache entry %s does not match the batch layout; recomputing", key)
        entry = None
    if entry is None:
        recorded: list[LayerInput] = []

        def record(_index: int, batch: Batch, keep: int) -> torch.Tensor:
            with record_layer_input(model, layer) as recorder:
                tail = forward_tail_logits(model, batch, keep)
            recorded.append(LayerInput(recorder.hidden.to("cpu"), recorder.tuple_len))  # keep GPU memory flat
            return tail

        scores = _score_batches(model, batches, answers, candidate_ids, device, record)
        cache.put(key, recorded)
        log.info("layer cache miss: stored hidden states entering layer %d (%s)", layer, key)
        return TeacherForcedRun(scores, "miss", key)

    def replay(index: int, batch: Batch, keep: int) -> torch.Tensor:
        stored = LayerInput(entry[index].hidden.to(device), entry[index].tuple_len)
        with replay_prefix(model, layer, stored):
            return forward_tail_logits(model, batch, keep)

    log.info("layer cache hit: running layers %d.. only (%s)", layer, key)
    return TeacherForcedRun(_score_batches(model, batches, answers, candidate_ids, device, replay), "hit", key)


def _fill(model, batches, answers, candidate_ids, device, fill_layers, cache, label, model_id) -> TeacherForcedRun:
    """Full forwards that also record the inputs of every layer in ``fill_layers`` (those not cached yet)."""
    if cache is None:
        raise ValueError("run_teacher_forced with fill_layers needs a HiddenStateCache")
    keys = {layer: cache_key(model, check_layer(model, layer), batches, label=label, model_id=model_id)
            for layer in sorted(set(fill_layers)) if layer > 0}
    todo = [layer for layer, key in keys.items() if cache.get(key) is None]
    recorded: dict[int, list[LayerInput]] = {layer: [] for layer in todo}

    def record(_index: int, batch: Batch, keep: int) -> torch.Tensor:
        with ExitStack() as stack:
            recorders = {layer: stack.enter_context(record_layer_input(model, layer)) for layer in todo}
            tail = forward_tail_logits(model, batch, keep)
        for layer, recorder in recorders.items():
            recorded[layer].append(LayerInput(recorder.hidden.to("cpu"), recorder.tuple_len))
        return tail

    scores = _score_batches(model, batches, answers, candidate_ids, device, record)
    for layer in todo:
        cache.put(keys[layer], recorded[layer])
    log.info("layer cache filled for layers %s in one full pass (already cached: %s)", todo,
             sorted(set(keys) - set(todo)))
    return TeacherForcedRun(scores, "fill" if todo else "off")
