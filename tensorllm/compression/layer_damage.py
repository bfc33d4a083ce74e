"""All edits of one layer measured together: the fast path of the sensitivity pass (same damages as
:func:`.sensitivity.edit_damage`, one configuration at a time, to float rounding).

For a layer L and its K artifacts (one per grid configuration), the straightforward path runs K forwards of
layers L..end. Here, for each configuration, only layer L runs on the replayed inputs of layer L (the forward
stops right after it); then the K outputs are stacked along the batch and layers L+1..end run once on
K x prompts rows (:func:`~tensorllm.evaluation.layer_skip.replay_prefix` from L+1). Those layers are the base's
for every configuration, so this is the same computation in larger matrix products: fewer, bigger calls, which
keep both cores busy. The LM head is applied to the real tokens only, one configuration at a time (the padding
positions are never scored, and a [K x tokens, vocab] block is never held). The base's probabilities are
exponentiated once per batch, not once per edit.

It needs the prefix replay (:data:`~tensorllm.evaluation.layer_skip.VERIFIED_MODEL_TYPES`); without it
:func:`layer_damages` falls back to :func:`.sensitivity.edit_damage`. The equivalence is tested on a tiny model
(tests/tensorllm/compression/test_layer_damage.py).

Usage::

    damages = layer_damages(model, reference, layer=12, artifact_paths=[p1, p2, p3])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ..artifact import apply_artifacts, load_artifact
from ..evaluation.batching import Batch
from ..evaluation.layer_skip import LayerInput, decoder_layers, replay_prefix
from .sensitivity import Reference, edit_damage


class _Stop(Exception):
    """Raised by the hook after layer L: nothing after it is needed for this configuration."""


@contextmanager
def _stop_after(model: nn.Module, layer: int) -> Iterator[list]:
    """Within the block, a forward stops (raises :class:`_Stop`) after ``layer``; its output is in the list."""
    captured: list = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def _final_hidden(model: nn.Module) -> Iterator[list]:
    """Within the block, the LM head's input is captured and the head itself gets an empty input (no logits)."""
    captured: list = []
    head = model.get_output_embeddings()

    def pre_hook(module, args):
        captured.append(args[0])
        return (args[0][..., :0, :],)

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield captured
    finally:
        handle.remove()


def _forward(model: nn.Module, batch: Batch, repeat: int = 1) -> None:
    model(input_ids=batch.input_ids.repeat(repeat, 1), attention_mask=batch.attention_mask.repeat(repeat, 1),
          position_ids=batch.position_ids.repeat(repeat, 1), use_cache=False)


def _layer_output(model: nn.Module, reference: Reference, layer: int, i: int) -> torch.Tensor:
    """Hidden states leaving ``layer`` for batch ``i`` with the model's current weights (layers < L replayed)."""
    batch = reference.batches[i]
    with ExitStack() as stack:
        if layer > 0:
            stack.enter_context(replay_prefix(model, layer, reference.inputs[layer][i]))
        captured = stack.enter_context(_stop_after(model, layer))
        try:
            _forward(model, batch)
        except _Stop:
            pass
    return captured[0]


def _kl_sums(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, base_logp: torch.Tensor,
             base_p: torch.Tensor, k: int) -> list[float]:
    """Summed per-token KL(base || edit) of each of the ``k`` stacked configurations, from the LM head's input."""
    head = model.get_output_embeddings()
    sums = []
    for chunk in hidden.chunk(k, dim=0):
        edited = torch.log_softmax(head(chunk[mask]).float(), dim=-1)
        sums.append(float((base_p * (base_logp - edited)).sum()))
    return sums


@torch.inference_mode()
def layer_damages(model: nn.Module, reference: Reference, layer: int, artifact_paths: Sequence) -> list[float]:
    """Mean per-token KL (nats) of the base to the model with each artifact of ``layer`` applied alone."""
    paths = list(artifact_paths)
    n_layers = len(decoder_layers(model) or [])
    if layer not in reference.inputs or layer + 1 >= n_layers or len(paths) < 2:
        return [edit_damage(model, reference, layer, p) for p in paths]  # nothing to share
    artifacts = [load_artifact(p) for p in paths]
    totals = [0.0] * len(paths)
    count = 0
    for i, batch in enumerate(reference.batches):
        outputs = []
        for artifact in artifacts:
            with apply_artifacts(model, [artifact]):
                outputs.append(_layer_output(model, reference, layer, i))
        stacked = LayerInput(torch.cat(outputs, dim=0), reference.inputs[layer + 1][i].tuple_len)
        with replay_prefix(model, layer + 1, stacked), _final_hidden(model) as hidden:
            _forward(model, batch, repeat=len(paths))
        base_logp = reference.logprobs[i]
        sums = _kl_sums(model, hidden[0], batch.attention_mask.bool(), base_logp, base_logp.exp(), len(paths))
        totals = [t + s for t, s in zip(totals, sums)]
        count += int(base_logp.shape[0])
    return [max(t / count, 0.0) for t in totals]  # rounding can give -1e-9 for an edit that changes nothing
