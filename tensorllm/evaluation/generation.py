"""Greedy generation for the generative tasks, and the answer-matching rule.

Accuracy (LASER): greedy decoding of up to ``max_new_tokens`` (10 for WikidataQA and CounterFact, 15 for
HotpotQA; at least one token), then a case-insensitive test of whether the stripped gold answer occurs
in the generated text. LASER decodes prompt + continuation, so an answer already in the prompt counts as
correct; that inflates accuracy (e.g. comparison questions in HotpotQA name both candidate answers).
We match against the **continuation only** by default; ``include_prompt=True`` reproduces LASER.

Generation of the base runs the full model token by token. A variant that edits layers >= L checks the
base's continuation instead (:mod:`.drafts`): one forward from layer L on, then decoding only where it
departs from the base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import GenerationConfig

from .. import progress
from .batching import Batch, make_batches


#: decoding batches are this many times the evaluation's ``batch_size``: each decode step reads every weight of
#: the model for one token per row, so on a CPU a larger batch shares that read. SmolLM2-135M, 256 WikidataQA
#: prompts, one thread: 24.9 CPU s at 16 rows, 15.4 s at 64, 16.4 s at 256 (padding), the same tokens at all three
DECODE_BATCH_FACTOR = 4


def decode_batch_size(batch_size: int) -> int:
    """Rows per greedy-decoding batch for an evaluation whose teacher-forced batch is ``batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size * DECODE_BATCH_FACTOR


def answer_matches(answer: str, continuation: str, prompt: str = "", include_prompt: bool = False) -> bool:
    """Case-insensitive containment of the stripped answer in the continuation (or prompt + continuation)."""
    needle = answer.strip().lower()
    if not needle:
        raise ValueError("cannot match an empty answer")
    haystack = (prompt + continuation) if include_prompt else continuation
    return needle in haystack.strip().lower()


def pad_id_for(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its EOS, else 0 (padding is masked out anyway)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def greedy_config(max_new_tokens: int, pad_id: int, eos_id: int | Sequence[int] | None,
                  min_new_tokens: int = 1) -> GenerationConfig:
    """A fresh greedy config (the model's own generation_config may ask for sampling: ignored on purpose).

    ``min_new_tokens``: 1 for a fresh continuation (an empty answer is never scored); 0 when continuing
    a row that already has generated tokens (see :mod:`.drafts`), where EOS is allowed at once."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if min_new_tokens not in (0, 1):
        raise ValueError(f"min_new_tokens must be 0 or 1, got {min_new_tokens!r}")
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )


def _as_set(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}


def stop_tokens(model: nn.Module, config: GenerationConfig) -> set[int]:
    """EOS ids that end a row: the config's, else the model's defaults (``generate`` falls back to them too)."""
    ours = _as_set(config.eos_token_id)
    if ours:
        return ours
    defaults = getattr(model, "generation_config", None)
    return _as_set(getattr(defaults, "eos_token_id", None)) | _as_set(getattr(model.config, "eos_token_id", None))


@torch.no_grad()
def generate_batch(model: nn.Module, batch: Batch, config: GenerationConfig) -> list[list[int]]:
    """New token ids per row (padding after an early EOS removed), for a left-padded batch of prompts.

    ``generate`` derives position ids from the attention mask, so left padding is handled.
    """
    out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config)
    new = out[:, batch.input_ids.shape[1] :].tolist()
    eos_set = stop_tokens(model, config)
    rows = []
    for tokens in new:
        cut = next((i + 1 for i, t in enumerate(tokens) if t in eos_set), len(tokens))
        rows.append(tokens[:cut])
    progress.advance("generation", len(rows))
    return rows


@torch.no_grad()
def generate_all(model: nn.Module, prompt_ids: Sequence[Sequence[int]], config: GenerationConfig, batch_size: int,
                 pad_id: int) -> list[list[int]]:
    """Greedy continuations (new token ids, see :func:`generate_batch`) of the prompts, in the input order.

    Batched longest-first with left padding (:func:`~.batching.make_batches`), on the model's device; the
    evaluation and the served pyfunc model both generate through here.
    """
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in prompt_ids]
    for batch in make_batches(prompt_ids, batch_size, pad_id):
        for i, tokens in zip(batch.indices, generate_batch(model, batch.to(device), config)):
            out[i] = tokens
    return out
