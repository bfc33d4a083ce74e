"""BIG-bench WikidataQA (``qa_wikidata``): prompt = context, answer = continuation; generative (10 new tokens).

Local file: ``qa_wikidata/bigbench_qa_wikidata.jsonl`` (llm-foundry's copy, one target per line, no split
marker). Hub (LASER): ``tasksource/bigbench``, config ``qa_wikidata``, validation then train, keeping items
with exactly one target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import MalformedPolicy
from .prompts import qa_wikidata_prompt
from .readers import read_jsonl, require_file
from .task import Task, make_dataset, stable_id

log = logging.getLogger(__name__)

NAME = "qa_wikidata"
FILE = Path("qa_wikidata") / "bigbench_qa_wikidata.jsonl"
MAX_NEW_TOKENS = 10  # LASER's max_len for BIG-bench


def build(pairs: Iterable[tuple[str, str]], source: str, counts: dict[str, int]) -> Task:
    """Turn ``(context, continuation)`` pairs into the task; identical pairs are merged (counted)."""
    rows, seen = [], set()
    for context, continuation in pairs:
        item_id = stable_id(NAME, context, continuation)
        if item_id in seen:
            counts["merged_duplicates"] = counts.get("merged_duplicates", 0) + 1
            continue
        seen.add(item_id)
        rows.append({"id": item_id, "group": item_id, "prompt": qa_wikidata_prompt(context), "answer": continuation.strip()})
    counts["items"] = len(rows)
    log.info("%s: %d items from %s (%s)", NAME, len(rows), source, counts)
    return Task(NAME, "generate", make_dataset(rows), max_new_tokens=MAX_NEW_TOKENS, source=source, counts=counts)


def load_local(data_dir: Path, tokenizer=None, *, strict: bool = True) -> Task:
    """Load the local jsonl (fields ``context``, ``continuation``)."""
    path = require_file(data_dir / FILE, NAME)
    policy = MalformedPolicy(strict)
    records = [(r["context"], r["continuation"]) for _, r in read_jsonl(path, {"context": str, "continuation": str}, policy)]
    policy.log_summary(str(path))
    return build(records, str(path), {"records": len(records), "skipped_malformed": policy.skipped})


def load_hub(tokenizer=None) -> Task:
    """LASER's source: ``tasksource/bigbench`` qa_wikidata, validation then train, single-target items only."""
    from datasets import load_dataset

    pairs, multi = [], 0
    for split in ("validation", "train"):
        for row in load_dataset("tasksource/bigbench", NAME, split=split):
            if len(row["targets"]) != 1:
                multi += 1
                continue
            pairs.append((row["inputs"], row["targets"][0]))
    return build(pairs, "hub:tasksource/bigbench/qa_wikidata", {"records": len(pairs), "dropped_multi_target": multi})
