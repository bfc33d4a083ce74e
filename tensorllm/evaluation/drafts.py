"""Greedy generation of a variant by checking the base model's continuation (the *draft*) with the layer cache.

Why it is exact: a variant that edits only layers >= L computes, on any token sequence, the same hidden
states entering layer L as the base. Take the base's greedy continuation ``d`` of a prompt ``p``. One
teacher-forced pass of ``p + d`` through layers ``L..end`` (layers below L replayed from the hidden-state
cache the base's pass filled) gives the variant's argmax at every draft position. The variant's own
greedy continuation equals ``d`` up to the first position ``j`` where its argmax differs from ``d[j]``,
and its token ``j`` is that argmax. So:

* rows whose argmax agrees with the whole draft (which ends at EOS or at ``max_new_tokens``) are done:
  the continuation is the draft, with no decoding at all;
* the others continue greedily with the full model from ``p + d[:j] + [argmax_j]`` (EOS allowed at
  once), only for the tokens that remain.

This is speculative decoding with the base as the draft model and the layer cache as the shortcut. The
result equals plain token-by-token generation up to float rounding (a batched full forward vs a
KV-cached decode step; a near-tie of two logits could flip, as it can between two batch sizes). One
case is handed to plain generation: an argmax of EOS at the first position, where greedy decoding with
``min_new_tokens=1`` masks EOS and picks the runner-up, which the pass does not record.

Drafts live in a small store next to the hidden-state cache (``<cache_dir>/drafts/<key>.json``, and in
memory), keyed by the base model's identity (``model_id``), the prompts' token ids and the generation
settings: the base's evaluation writes them, a variant's evaluation of the same items reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .batching import make_batches
from .generation import generate_batch, greedy_config
from .runtime import model_device
from .scoring import TokenScores

log = logging.getLogger(__name__)

DRAFT_FORMAT = 1
_MEMORY: dict[str, list[list[int]]] = {}


def draft_key(model_id: str, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos: Sequence[int]) -> str:
    """sha256 of everything a draft depends on besides the base model's other settings: its identity, the
    prompts' token ids (which cover dataset, split, limit, seed and tokenizer) and the generation settings."""
    payload = json.dumps({"format": DRAFT_FORMAT, "model_id": model_id, "prompts": [list(p) for p in prompts],
                          "max_new_tokens": max_new_tokens, "eos": sorted(eos)})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def save_drafts(key: str, drafts: list[list[int]], cache_dir: str | os.PathLike | None) -> None:
    """Keep the base's continuations (token ids per prompt) in memory and, with a ``cache_dir``, on disk."""
    _MEMORY[key] = [list(d) for d in drafts]
    if cache_dir is not None:
        path = Path(cache_dir) / "drafts" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"format": DRAFT_FORMAT, "drafts": _MEMORY[key]}))
        os.replace(tmp, path)


def load_drafts(key: str, cache_dir: str | os.PathLike | None, n: int) -> list[list[int]] | None:
    """The drafts stored under ``key`` (None when absent, or when they do not hold ``n`` non-empty rows)."""
    drafts = _MEMORY.get(key)
    if drafts is None and cache_dir is not None:
        path = Path(cache_dir) / "drafts" / f"{key}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                drafts = data["drafts"] if data.get("format") == DRAFT_FORMAT else None
            except (ValueError, KeyError, TypeError):
                log.warning("draft file %s is unreadable; generating without drafts", path)
                drafts = None
    if drafts is None or len(drafts) != n or any(not d for d in drafts):
        return None
    return drafts


@dataclass
class DraftStats:
    """How the drafts were used: rows equal to the draft, rows continued after a departure, rows regenerated."""

    rows: int = 0
    accepted: int = 0
    continued: int = 0
    regenerated: int = 0
    decoded_tokens: int = 0  # new tokens decoded token by token (plain generation: rows x max_new_tokens at most)
    departures: list[int] = field(default_factory=list)  # position of the first departure, per departed row

    def to_dict(self) -> dict:
        return {"rows": self.rows, "accepted": self.accepted, "continued": self.continued,
                "regenerated": self.regenerated, "decoded_tokens": self.decoded_tokens}


def continue_from_drafts(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    drafts: Sequence[Sequence[int]],
    checked: Sequence[TokenScores],
    *,
    max_new_tokens: int,
    eos: set[int],
    pad_id: int,
    batch_size: int,
) -> tuple[list[list[int]], DraftStats]:
    """The variant's greedy continuations (token ids, cut after EOS), from the teacher-forced check of
    ``prompt + draft`` (``checked[i].answer_argmax``: the variant's argmax at each draft position)."""
    if not len(prompts) == len(drafts) == len(checked):
        raise ValueError(f"got {len(prompts)} prompts, {len(drafts)} drafts and {len(checked)} checks; they must match")
    stats = DraftStats(rows=len(prompts))
    out: list[list[int]] = [[] for _ in prompts]
    resume: dict[int, list[int]] = {}  # row -> tokens generated so far (then decoded further)
    fresh: list[int] = []  # rows generated from the prompt alone
    for i, (draft, score) in enumerate(zip(drafts, checked)):
        argmax = list(score.answer_argmax)
        if len(argmax) != len(draft):
            raise ValueError(f"row {i}: the check has {len(argmax)} positions for a draft of {len(draft)} tokens")
        j = next((k for k, (a, d) in enumerate(zip(argmax, draft)) if a != d), None)
        if j is None:
            out[i] = list(draft)
            stats.accepted += 1
            continue
        stats.departures.append(j)
        if j == 0 and argmax[0] in eos:  # min_new_tokens=1 masks EOS at the first step: the pass cannot tell
            fresh.append(i)
            continue
        prefix = list(draft[:j]) + [argmax[j]]
        if argmax[j] in eos or len(prefix) >= max_new_tokens:
            out[i] = prefix
            stats.continued += 1
        else:
            resume[i] = prefix
    device = model_device(model)
    if resume:
        stats.continued += len(resume)
        rows = sorted(resume)
        sequences = [list(prompts[i]) + resume[i] for i in rows]
        for batch in make_batches(sequences, batch_size, pad_id):
            budget = {rows[r]: max_new_tokens - len(resume[rows[r]]) for r in batch.indices}
            config = greedy_config(max(budget.values()), pad_id, sorted(eos), min_new_tokens=0)
            for r, tokens in zip(batch.indices, generate_batch(model, batch.to(device), config)):
                i = rows[r]
                tokens = _cut(tokens[: budget[i]], eos)
                out[i] = resume[i] + tokens
                stats.decoded_tokens += len(tokens)
    if fresh:
        stats.regenerated = len(fresh)
        config = greedy_config(max_new_tokens, pad_id, sorted(eos))
        for batch in make_batches([list(prompts[i]) for i in fresh], batch_size, pad_id):
            for r, tokens in zip(batch.indices, generate_batch(model, batch.to(device), config)):
                out[fresh[r]] = tokens
                stats.decoded_tokens += len(tokens)
    return out, stats


def _cut(tokens: list[int], eos: set[int]) -> list[int]:
    cut = next((k + 1 for k, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:cut]
