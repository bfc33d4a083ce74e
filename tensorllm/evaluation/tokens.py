"""Tokenizer helpers: prompt/answer token ids for teacher forcing and single-token candidate ids.

Answers are scored as the tokens that ``" " + answer`` adds after the prompt. They are found by
tokenising ``prompt + " " + answer`` and taking what follows the prompt's own tokens, which is right for
byte-level BPE (GPT-2, SmolLM2, LLaMA-3) and SentencePiece (LLaMA-2) alike. If the tokenizer merges
across the boundary (the joint tokens do not start with the prompt's tokens), the answer is tokenised
on its own (``" " + answer`` without special tokens) and the prompt's tokens are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

#: context used to find the token of a single-word candidate (" true", " poet"): both LASER
#: classification prompts end in "... is", so the candidate follows "is" exactly as scored
CANDIDATE_CONTEXT = "The answer is"


@dataclass(frozen=True)
class PromptAnswerIds:
    """Token ids of a prompt and of its answer continuation (``boundary_merge``: the fallback was needed)."""

    prompt: list[int]
    answer: list[int]
    boundary_merge: bool = False


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_answer_ids(tokenizer, prompt: str, answer: str) -> PromptAnswerIds:
    """Token ids of ``prompt`` (with the tokenizer's usual special tokens) and of ``" " + answer`` after it."""
    prompt_ids = _ids(tokenizer, prompt, True)
    if not prompt_ids:
        raise ValueError(f"prompt {prompt!r:.80} tokenises to no tokens; a prompt must have at least one token")
    joint = _ids(tokenizer, prompt + " " + answer.strip(), True)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return PromptAnswerIds(prompt_ids, joint[len(prompt_ids) :])
    alone = _ids(tokenizer, " " + answer.strip(), False)
    if not alone:
        raise ValueError(f"answer {answer!r:.80} tokenises to no tokens; an answer must have at least one token")
    return PromptAnswerIds(prompt_ids, alone, boundary_merge=True)


def single_token_id(tokenizer, word: str) -> int | None:
    """The one token that ``" " + word`` adds after ``"... is"``, or None if it takes several tokens."""
    ids = prompt_answer_ids(tokenizer, CANDIDATE_CONTEXT, word).answer
    return ids[0] if len(ids) == 1 else None


def candidate_token_ids(tokenizer, candidates: tuple[str, ...] | list[str]) -> list[int]:
    """Token ids of the candidates of a classification task; each must be a single, distinct token."""
    ids = []
    for word in candidates:
        token = single_token_id(tokenizer, word)
        if token is None:
            raise ValueError(
                f"candidate {word!r} is not a single token for this tokenizer ({' ' + word!r} -> "
                f"{prompt_answer_ids(tokenizer, CANDIDATE_CONTEXT, word).answer}); classification candidates must be "
                "single tokens"
            )
        ids.append(token)
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidates {list(candidates)} map to repeated token ids {ids}; they must be distinct")
    return ids
