"""The loaded form of an evaluation dataset: :class:`Task` (items + how to score them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import datasets

#: "generate": free-text answer, accuracy by greedy generation + substring match.
#: "classify": one next-token decision among candidate tokens (FEVER true/false, Bios professions).
TaskKind = Literal["generate", "classify"]

#: the columns every task dataset has
COLUMNS = ("id", "group", "prompt", "answer")


def stable_id(prefix: str, *parts: str) -> str:
    """A short, content-derived id (``prefix/<16 hex>``): the same text always gives the same id."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"{prefix}/{digest}"


@dataclass
class Task:
    """One evaluation dataset, ready to be split and scored.

    ``dataset`` is a :class:`datasets.Dataset` with columns ``id`` (stable item id), ``group`` (items of a
    group always land in the same split, e.g. a CounterFact case and its paraphrase), ``prompt`` and
    ``answer`` (gold text without the leading space; the scorer adds ``" "``). For ``kind == "classify"``
    every answer is one of ``candidates``, each scored as the single token of ``" " + candidate``.
    ``counts`` says what loading did (records read, dropped and why, malformed lines skipped), so
    nothing is dropped silently.
    """

    name: str
    kind: TaskKind
    dataset: datasets.Dataset
    max_new_tokens: int | None = None
    candidates: tuple[str, ...] = ()
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("generate", "classify"):
            raise ValueError(f"Task kind must be 'generate' or 'classify', got {self.kind!r}")
        missing = [c for c in COLUMNS if c not in self.dataset.column_names]
        if missing:
            raise ValueError(f"Task {self.name!r}: dataset lacks column(s) {missing}; required: {list(COLUMNS)}")
        if self.kind == "generate" and (self.max_new_tokens is None or self.max_new_tokens < 1):
            raise ValueError(f"Task {self.name!r}: a generative task needs max_new_tokens >= 1, got {self.max_new_tokens}")
        if self.kind == "classify":
            if len(self.candidates) < 2:
                raise ValueError(f"Task {self.name!r}: a classification task needs >= 2 candidates, got {self.candidates}")
            unknown = sorted(set(self.dataset["answer"]) - set(self.candidates))
            if unknown:
                raise ValueError(f"Task {self.name!r}: answers {unknown[:5]} are not among the candidates {self.candidates}")

    def __len__(self) -> int:
        return len(self.dataset)


def make_dataset(rows: list[dict]) -> datasets.Dataset:
    """Build the in-memory :class:`datasets.Dataset` of a task (columns :data:`COLUMNS`, all strings)."""
    if not rows:
        return datasets.Dataset.from_dict({c: [] for c in COLUMNS})
    return datasets.Dataset.from_list([{c: str(row[c]) for c in COLUMNS} for row in rows])
