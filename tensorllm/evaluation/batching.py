"""Left-padded batches with explicit attention masks and position ids.

Left padding puts every sequence's last token at the same (final) position, which makes two things
cheap: ``logits_to_keep`` can return just the answer positions of all rows, and ``generate`` appends new
tokens right after every prompt. Transformers does **not** derive position ids from the attention mask
in a plain forward pass (they default to ``arange``), so each batch carries
``position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)``: a row's first real token is position 0,
exactly as when the row is run alone.

Rows are sorted by length (longest first, ties by index) before they are cut into batches: less
padding, and the largest batch runs first, so an out-of-memory shows up at once. The layout is part of
the hidden-state cache key (:func:`layout_digest`), because padding changes the tensors' shapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One left-padded batch; ``indices[r]`` is the position (in the caller's list) of row ``r``."""

    indices: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(-1).tolist()

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.indices,
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
        )


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (0 at each row's first real token; 0 on padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of the sequences, left-padded to the longest."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_left needs a non-empty list of non-empty token sequences")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def make_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Cut the sequences into left-padded batches of at most ``batch_size`` rows, longest first."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        ids, mask = pad_left([sequences[i] for i in indices], pad_id)
        batches.append(Batch(indices, ids, mask, position_ids_from_mask(mask)))
    return batches


def layout_digest(batches: Sequence[Batch]) -> str:
    """A hash of the exact token ids, padding and row grouping of all batches."""
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(repr((batch.indices, tuple(batch.input_ids.shape))).encode())
        digest.update(batch.input_ids.cpu().numpy().tobytes())
        digest.update(batch.attention_mask.cpu().numpy().tobytes())
    return digest.hexdigest()
