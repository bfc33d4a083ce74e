"""Teacher-forced scoring of ``prompt + " " + answer``: answer NLL, top-1 of the first answer token,
teacher-forced exact match of the whole answer (every answer token is the argmax given the gold tokens
before it) and the classification decision among candidate tokens -- all from one forward pass per batch.

Loss (LASER/TensorLLM): per example the mean negative log-likelihood of the answer tokens under the full
vocabulary softmax (log-softmax in float32 whatever the model dtype), then the mean over examples. For
classification tasks the answer is the gold candidate's single token, so the loss is -log p(gold token).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batching import Batch


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced outcome for one example."""

    loss: float  # mean NLL (nats) of the answer tokens
    top1_token: int  # argmax of the next-token distribution after the prompt
    top1_correct: bool  # top1_token == first answer token
    choice: int | None = None  # classification: index of the highest-scoring candidate
    exact_match: bool = False  # every answer token is the argmax given the gold tokens before it
    answer_argmax: tuple[int, ...] = ()  # the argmax at each answer position (what greedy decoding would pick there)


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (returns only the last k positions' logits)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_tail_logits(model: nn.Module, batch: Batch, keep: int) -> torch.Tensor:
    """Logits ``[B, keep, vocab]`` of the last ``keep`` positions of a left-padded batch."""
    kwargs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    if accepts_logits_to_keep(model):
        logits = model(**kwargs, logits_to_keep=keep).logits
    else:
        logits = model(**kwargs).logits
    return logits[:, -keep:, :]


def tail_size(answers: Sequence[Sequence[int]]) -> int:
    """How many final positions hold every row's answer predictions (longest answer + the prompt's last token)."""
    return max(len(a) for a in answers) + 1


def score_tail(
    tail: torch.Tensor, answers: Sequence[Sequence[int]], candidate_ids: Sequence[int] | None = None
) -> list[TokenScores]:
    """Score each row from its tail logits.

    Row ``r`` has ``m`` answer tokens at the end of its sequence; they are predicted at tail positions
    ``K-1-m .. K-2`` (``K = tail.shape[1]``), and position ``K-1-m`` is the next-token distribution
    right after the prompt (top-1 and candidate choice).
    """
    k = tail.shape[1]
    scores = []
    cand = torch.tensor(list(candidate_ids), device=tail.device) if candidate_ids is not None else None
    for row, answer in enumerate(answers):
        m = len(answer)
        if m < 1 or m > k - 1:
            raise ValueError(f"row {row}: answer of {m} tokens does not fit a tail of {k} positions")
        logits = tail[row, k - 1 - m : k - 1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(list(answer), device=tail.device)
        nll = -logprobs.gather(-1, target[:, None]).squeeze(-1)
        first = logits[0]
        top1 = int(first.argmax())
        choice = int(first[cand].argmax()) if cand is not None else None
        argmax = logits.argmax(-1)
        exact = bool(torch.equal(argmax, target))
        scores.append(TokenScores(float(nll.mean()), top1, top1 == int(answer[0]), choice, exact,
                                  tuple(argmax.tolist())))
    return scores
