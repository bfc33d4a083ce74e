"""HotpotQA: ``"{question} The answer is"``; answers longer than 15 tokens dropped; generative (15 new tokens).

The length filter uses the evaluated model's tokenizer (LASER used LLaMA-2's for every model), counting
the tokens of ``" " + answer`` as scored. Local file: ``hotpotqa/hotpot_dev_v1_simplified.json`` (the 7,405 dev
questions). Hub (LASER): ``hotpot_qa`` fullwiki, the first len(validation) train items then validation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import MalformedPolicy
from .prompts import hotpotqa_prompt
from .readers import read_json_list, require_file
from .task import Task, make_dataset, stable_id

log = logging.getLogger(__name__)

NAME = "hotpotqa"
FILE = Path("hotpotqa") / "hotpot_dev_v1_simplified.json"
MAX_ANSWER_TOKENS = 15  # LASER drops answers of more than 15 tokens ...
MAX_NEW_TOKENS = 15  # ... and generates up to 15 new tokens


def _require_tokenizer(tokenizer) -> None:
    if tokenizer is None:
        raise ValueError(f"{NAME} needs the model's tokenizer (answers over {MAX_ANSWER_TOKENS} tokens are dropped)")


def build(pairs: Iterable[tuple[str, str]], tokenizer, source: str, counts: dict[str, int]) -> Task:
    """Turn ``(question, answer)`` pairs into the task (drops long answers, merges exact duplicates; counted)."""
    _require_tokenizer(tokenizer)
    rows, seen = [], set()
    counts.setdefault("dropped_long_answer", 0)
    for question, answer in pairs:
        answer = answer.strip()
        if len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"]) > MAX_ANSWER_TOKENS:
            counts["dropped_long_answer"] += 1
            continue
        item_id = stable_id(NAME, question.strip(), answer)
        if item_id in seen:
            counts["merged_duplicates"] = counts.get("merged_duplicates", 0) + 1
            continue
        seen.add(item_id)
        rows.append({"id": item_id, "group": item_id, "prompt": hotpotqa_prompt(question), "answer": answer})
    counts["items"] = len(rows)
    log.info("%s: %d items from %s (%s)", NAME, len(rows), source, counts)
    return Task(NAME, "generate", make_dataset(rows), max_new_tokens=MAX_NEW_TOKENS, source=source, counts=counts)


def load_local(data_dir: Path, tokenizer=None, *, strict: bool = True) -> Task:
    """Load the local JSON list (objects with ``question``, ``answer``)."""
    _require_tokenizer(tokenizer)
    path = require_file(data_dir / FILE, NAME)
    policy = MalformedPolicy(strict)
    pairs = [(r["question"], r["answer"]) for _, r in read_json_list(path, {"question": str, "answer": str}, policy)]
    policy.log_summary(str(path))
    return build(pairs, tokenizer, str(path), {"records": len(pairs), "skipped_malformed": policy.skipped})


def load_hub(tokenizer=None) -> Task:
    """LASER's source: ``hotpot_qa`` fullwiki; the first len(validation) train items, then validation."""
    from datasets import load_dataset

    validation = load_dataset("hotpot_qa", "fullwiki", split="validation")
    train = load_dataset("hotpot_qa", "fullwiki", split=f"train[:{len(validation)}]")
    pairs = [(r["question"], r["answer"]) for part in (train, validation) for r in part]
    return build(pairs, tokenizer, "hub:hotpot_qa/fullwiki", {"records": len(pairs)})
