"""Build on one half of the validation items, confirm on the other: the greedy composition's held-out check.

The greedy composition (:mod:`flows.compose`) is chosen by looking at validation outcomes: the layers'
order and every kept layer come from paired comparisons with the base. Testing the result on the same items
would test a hypothesis picked because it looked good on them (the winner's curse). So the greedy steps see
only the *build* half of the validation items, and the composed variant's paired comparisons that enter the
promotion rule (:mod:`flows.noninferiority`) use only the *confirm* half, items the construction never saw.
The split is fixed by a hash of each pooled item id (``dataset/id``), so it is the same for every variant and
every run and independent of any outcome; it keeps about half of the items on each side. The test split
stays the report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from tensorllm.evaluation import compare_paired, read_examples

Half = Literal["build", "confirm"]
HALVES: tuple[str, ...] = ("build", "confirm")


def half_of(item_id: str) -> Half:
    """``build`` or ``confirm`` for a pooled item id: the parity of the first byte of its sha256."""
    return "build" if hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0 else "confirm"


def pooled_rows(examples: dict[str, str], half: Half | None = None) -> list[dict]:
    """The per-item rows of every dataset's examples jsonl, ids prefixed by the dataset, on one ``half`` (or all)."""
    if half is not None and half not in HALVES:
        raise ValueError(f"half must be one of {list(HALVES)} or None; got {half!r}")
    rows = []
    for dataset in sorted(examples):
        for row in read_examples(Path(examples[dataset])):
            row = {**row, "id": f"{dataset}/{row['id']}"}
            if half is None or half_of(row["id"]) == half:
                rows.append(row)
    return rows


def paired_half(base_examples: dict[str, str], variant_examples: dict[str, str], column: str, half: Half) -> dict:
    """``PairedComparison.to_dict()`` of variant vs base on one half of the pooled validation items."""
    return compare_paired(pooled_rows(base_examples, half), pooled_rows(variant_examples, half), metric=column).to_dict()


def half_mean(examples: dict[str, str], column: str, half: Half) -> float:
    """Mean of a per-item column (``top1_correct``, ``correct`` or ``loss``) over one half, datasets pooled."""
    values = [float(r[column]) for r in pooled_rows(examples, half) if r.get(column) is not None]
    if not values:
        raise ValueError(f"no item of the {half} half has a value in column {column!r}")
    return sum(values) / len(values)
