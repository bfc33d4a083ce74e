"""How much one edit hurts: the KL from the base's next-token distributions, per layer and rank configuration.

For calibration sequences (prompt + answer of validation items), the base model is run once; it records the
hidden states entering every layer (:func:`tensorllm.evaluation.layer_skip.record_layer_input`) and its
log-probabilities at every real token. An edit of layer L (one Tucker artifact, written dense into the model)
then only changes layers >= L, so its forward replays the stored inputs of layer L and runs just the layers after
it (:func:`~tensorllm.evaluation.layer_skip.replay_prefix`; a full forward for families not verified for replay).
The damage of the edit is the mean over real tokens of ``KL(p_base || p_edit)`` in nats: zero for the base itself,
and it sees every token's distribution, not only whether the answer stays on top.

Usage::

    reference = record_reference(model, sequences, pad_id)
    damage = edit_damage(model, reference, layer=12, artifact_path=path)
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn

from ..artifact import apply_artifacts, load_artifact
from ..evaluation.batching import Batch, make_batches
from ..evaluation.data import load_task
from ..evaluation.layer_skip import LayerInput, decoder_layers, record_layer_input, replay_prefix, \
    skip_unsupported_reason
from ..evaluation.splits import select_split
from ..evaluation.tokens import prompt_answer_ids

log = logging.getLogger(__name__)


def calibration_sequences(tokenizer, dataset: str, n_prompts: int, skip: int = 0, seed: int = 0) -> list[list[int]]:
    """Token ids of ``prompt + answer`` for validation items ``skip .. skip + n_prompts`` of ``dataset``.

    ``skip`` keeps them apart from the first ``skip`` validation items, which the verification scores, so the
    allocation is not judged on the prompts that chose it.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive integer; got {n_prompts!r}")
    task = load_task(dataset, tokenizer)
    items = select_split(task.dataset, "val", skip + n_prompts, seed)
    if len(items) <= skip:
        raise ValueError(f"{dataset}/val has {len(items)} items, none left for calibration after the {skip} "
                         "used for verification; lower the verification limit")
    items = items.select(range(skip, len(items)))
    out = []
    for prompt, answer in zip(items["prompt"], items["answer"]):
        ids = prompt_answer_ids(tokenizer, prompt, answer)
        out.append(ids.prompt + ids.answer)
    return out


@dataclass
class Reference:
    """The base model's view of the calibration batches: per-token log-probs and every layer's inputs."""

    batches: list[Batch]
    logprobs: list[torch.Tensor]  # per batch: [real tokens, vocab] float32
    inputs: dict[int, list[LayerInput]] = field(default_factory=dict)  # layer -> per batch (empty: no replay)

    @property
    def n_tokens(self) -> int:
        return sum(int(x.shape[0]) for x in self.logprobs)


def _logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                   use_cache=False).logits
    return torch.log_softmax(logits.float(), dim=-1)[batch.attention_mask.bool()]


@torch.no_grad()
def record_reference(model: nn.Module, sequences: list[list[int]], pad_id: int, batch_size: int = 16) -> Reference:
    """One base pass: log-probs at every real token, and (when replay is verified for the family) layer inputs."""
    batches = make_batches(sequences, batch_size, pad_id)
    reason = skip_unsupported_reason(model)
    if reason:
        log.info("sensitivity: full forwards for every edit (%s)", reason)
    n_layers = len(decoder_layers(model) or [])
    layers = range(n_layers) if reason is None else range(0)
    reference = Reference(batches, [], {layer: [] for layer in layers})
    with ExitStack() as stack:
        recorders = {layer: stack.enter_context(record_layer_input(model, layer)) for layer in layers}
        for batch in batches:
            reference.logprobs.append(_logprobs(model, batch))
            for layer, recorder in recorders.items():
                reference.inputs[layer].append(LayerInput(recorder.hidden, recorder.tuple_len))
    return reference


def kl_from_base(base: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """Per-token ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` from two log-prob tensors ``[tokens, vocab]``."""
    return (base.exp() * (base - edited)).sum(-1)


@torch.no_grad()
def edit_damage(model: nn.Module, reference: Reference, layer: int, artifact_path) -> float:
    """Mean per-token KL (nats) of the base to the model with the one artifact ``artifact_path`` applied."""
    total, count = 0.0, 0
    with apply_artifacts(model, [load_artifact(artifact_path)]):
        for i, batch in enumerate(reference.batches):
            with ExitStack() as stack:
                if layer in reference.inputs and layer > 0:
                    stack.enter_context(replay_prefix(model, layer, reference.inputs[layer][i]))
                edited = _logprobs(model, batch)
            kl = kl_from_base(reference.logprobs[i], edited)
            total += float(kl.sum())
            count += int(kl.numel())
    return max(total / count, 0.0)  # rounding can give -1e-9 for an edit that changes nothing
