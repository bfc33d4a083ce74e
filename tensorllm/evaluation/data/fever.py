"""FEVER as a true/false question; scored by comparing the next-token log-probs of " true" and " false".

SUPPORTS -> "true", REFUTES -> "false", NOT ENOUGH INFO dropped. As LASER's ``_get_consistent_unique``,
lines with the same claim are merged into one item, and claims seen with both labels are dropped.
Local file: ``fever/paper_dev.jsonl`` (original FEVER jsonl). Hub (LASER): ``EleutherAI/fever`` v1.0,
``paper_dev`` then ``paper_test``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import MalformedPolicy
from .prompts import fever_prompt
from .readers import read_jsonl, require_file
from .task import Task, make_dataset, stable_id

log = logging.getLogger(__name__)

NAME = "fever"
FILE = Path("fever") / "paper_dev.jsonl"
LABELS = {"SUPPORTS": "true", "REFUTES": "false"}
NEI = "NOT ENOUGH INFO"
CANDIDATES = ("true", "false")


def build(claims: Iterable[tuple[str, str]], source: str, counts: dict[str, int]) -> Task:
    """Turn ``(claim, label)`` pairs (FEVER label strings) into the task; merges/drops are counted."""
    labels: dict[str, set[str]] = {}
    order: list[str] = []
    counts.setdefault("dropped_nei", 0)
    labelled = 0
    for claim, label in claims:
        if label == NEI:
            counts["dropped_nei"] += 1
            continue
        labelled += 1
        claim = claim.strip()
        if claim not in labels:
            labels[claim] = set()
            order.append(claim)
        labels[claim].add(LABELS[label])
    kept = [c for c in order if len(labels[c]) == 1]
    counts["dropped_conflicting_claims"] = len(order) - len(kept)
    counts["merged_duplicates"] = labelled - len(order)
    rows = []
    for claim in kept:
        item_id = stable_id(NAME, claim)
        rows.append({"id": item_id, "group": item_id, "prompt": fever_prompt(claim), "answer": next(iter(labels[claim]))})
    counts["items"] = len(rows)
    log.info("%s: %d items from %s (%s)", NAME, len(rows), source, counts)
    return Task(NAME, "classify", make_dataset(rows), candidates=CANDIDATES, source=source, counts=counts)


def _check_label(label: str) -> str | None:
    if label in LABELS or label == NEI:
        return None
    return f"label {label!r} is not one of {sorted(LABELS) + [NEI]}"


def load_local(data_dir: Path, tokenizer=None, *, strict: bool = True) -> Task:
    """Load the local FEVER jsonl (fields ``claim``, ``label``; ``label`` in SUPPORTS/REFUTES/NOT ENOUGH INFO)."""
    path = require_file(data_dir / FILE, NAME)
    policy = MalformedPolicy(strict)
    pairs = []
    for number, record in read_jsonl(path, {"claim": str, "label": str}, policy):
        problem = _check_label(record["label"])
        if problem:
            policy.bad(path, number, problem)
            continue
        pairs.append((record["claim"], record["label"]))
    policy.log_summary(str(path))
    return build(pairs, str(path), {"records": len(pairs), "skipped_malformed": policy.skipped})


def load_hub(tokenizer=None) -> Task:
    """LASER's source: ``EleutherAI/fever`` v1.0, paper_dev then paper_test (one row per evidence: merged here)."""
    from datasets import load_dataset

    pairs = []
    for split in ("paper_dev", "paper_test"):
        pairs += [(r["claim"], r["label"]) for r in load_dataset("EleutherAI/fever", "v1.0", split=split)]
    bad = sorted({label for _, label in pairs if _check_label(label)})
    if bad:
        raise ValueError(f"EleutherAI/fever has labels {bad}; expected {sorted(LABELS) + [NEI]}")
    return build(pairs, "hub:EleutherAI/fever/v1.0", {"records": len(pairs)})
