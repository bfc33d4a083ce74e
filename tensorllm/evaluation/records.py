"""Per-example results (:class:`ExampleRecord`) and their jsonl file, so base and variant runs can be diffed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class ExampleRecord:
    """One evaluated item.

    ``prediction``: generated continuation (generative task, ``generate=True``), the chosen candidate
    (classification), or None (generative task without generation). ``correct`` is the accuracy outcome
    for that prediction (None when there is none). ``top1_prediction``/``top1_correct``: the argmax
    next token after the prompt vs the answer's first token. ``loss``: mean NLL of the answer tokens.
    ``exact_match``: teacher forced, every answer token is the argmax given the gold tokens before it
    (None in files written before it existed).
    """

    id: str
    prompt: str
    answer: str
    prediction: str | None
    correct: bool | None
    loss: float
    top1_prediction: str
    top1_correct: bool
    exact_match: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


REQUIRED_FIELDS = ("id", "correct", "loss", "top1_correct")


def write_examples(path: str | os.PathLike, records: Iterable[ExampleRecord]) -> Path:
    """Write one JSON object per line (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_examples(path: str | os.PathLike) -> list[dict]:
    """Read an examples jsonl written by :func:`write_examples` (each line checked; errors name file and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"examples file {path} does not exist")
    names = {f.name for f in fields(ExampleRecord)}
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or any(k not in row for k in REQUIRED_FIELDS):
                raise ValueError(f"{path}:{number}: expected an object with at least {list(REQUIRED_FIELDS)} (of {sorted(names)})")
            rows.append(row)
    return rows
