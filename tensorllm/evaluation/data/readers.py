"""Readers for the local data files (jsonl, JSON list, CSV) that validate each record and report its location.

Every reader yields ``(location, record)`` where location is the 1-based line number (jsonl, CSV) or the
0-based element index (JSON list); a bad record goes to :class:`MalformedPolicy` (raise or skip+count).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .errors import DataFormatError, MalformedPolicy


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise with a hint about where the data is expected."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: expected the data file {path}, which does not exist. Pass data_dir= (the folder holding "
            "qa_wikidata/, hotpotqa/, fever/, counterfact/, bias_in_bios/) or set TENSORLLM_DATA_DIR."
        )
    return path


def check_fields(record: object, fields: Mapping[str, type | tuple[type, ...]]) -> str | None:
    """Return a description of what is wrong with ``record`` (a dict with these typed, non-empty fields), or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object with fields {sorted(fields)}, got {type(record).__name__}"
    missing = [name for name in fields if name not in record]
    if missing:
        return f"missing field(s) {missing}; required: {sorted(fields)}"
    for name, kind in fields.items():
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            return f"field {name!r} must be {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__} {value!r:.60}"
        if isinstance(value, str) and not value.strip():
            return f"field {name!r} is empty"
    return None


def read_jsonl(
    path: Path, fields: Mapping[str, type | tuple[type, ...]], policy: MalformedPolicy
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a jsonl file whose fields validate."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                policy.bad(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            problem = check_fields(record, fields)
            if problem:
                policy.bad(path, number, problem)
                continue
            yield number, record


def read_json_list(
    path: Path, fields: Mapping[str, type | tuple[type, ...]], policy: MalformedPolicy
) -> Iterator[tuple[int, dict]]:
    """Yield ``(index, object)`` for each element of a file holding one JSON list of objects.

    A file that is not valid JSON at all raises (with the line number of the syntax error) even when
    ``policy.strict`` is False: there is no record to skip.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, list):
        raise DataFormatError(path, None, f"expected a JSON list of objects, got {type(data).__name__}")
    for index, record in enumerate(data):
        problem = check_fields(record, fields)
        if problem:
            policy.bad(path, index, problem, unit="element")
            continue
        yield index, record


def read_csv(path: Path, columns: Sequence[str], policy: MalformedPolicy) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for each CSV row with the required non-empty ``columns`` (header required)."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, 1, f"empty file; expected a header with columns {list(columns)}") from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataFormatError(path, 1, f"header {header} lacks column(s) {missing}; required: {list(columns)}")
        positions = {c: header.index(c) for c in columns}
        last = reader.line_num  # physical line where the previous row ended
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                policy.bad(path, last + 1, f"CSV error: {exc}")
                last = reader.line_num
                continue
            number, last = last + 1, reader.line_num  # a quoted field may span lines: report the row's first line
            if not row:
                continue
            if len(row) != len(header):
                policy.bad(path, number, f"expected {len(header)} columns ({header}), got {len(row)}")
                continue
            record = {c: row[i] for c, i in positions.items()}
            empty = [c for c, v in record.items() if not v.strip()]
            if empty:
                policy.bad(path, number, f"empty value in column(s) {empty}")
                continue
            yield number, record
