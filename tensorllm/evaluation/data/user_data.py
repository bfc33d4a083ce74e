"""Load your own dataset (:mod:`.user_spec`) as a :class:`Task`, and its content digest (part of every cache key).

Local files are read by the same strict readers as the built-in five (:mod:`.readers`), so a bad record is
named by file and line; a ``save_to_disk`` folder and a hub id are read with ``datasets``
(``load_from_disk`` / ``load_dataset``; offline, a hub id resolves only from the local Hugging Face cache,
``HF_DATASETS_OFFLINE=1``). Items get content-derived ids (identical prompt and answer merged, counted), the
prompt is used verbatim, and the split is the record's ``split_field`` when the spec names one, else the
seeded 20/80 split of :mod:`..splits` like the built-ins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Iterator
from pathlib import Path

import datasets

from .errors import DataFormatError, MalformedPolicy
from .readers import check_fields, read_csv, read_json_list, read_jsonl
from .task import COLUMNS, Task, stable_id
from .user_spec import SPLIT_VALUES, UserDatasetError, UserDatasetSpec, parse_reference

log = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
ANSWER_TYPES = (str, int, float)


def _fields(spec: UserDatasetSpec) -> dict[str, type | tuple[type, ...]]:
    """The typed fields every record must have (for :func:`.readers.check_fields`)."""
    fields: dict[str, type | tuple[type, ...]] = {spec.prompt_field: str, spec.answer_field: ANSWER_TYPES}
    if spec.split_field:
        fields[spec.split_field] = str
    if spec.choices_field:
        fields[spec.choices_field] = (list, str)  # a CSV cell holds the list as JSON text
    return fields


def _records(spec: UserDatasetSpec, policy: MalformedPolicy) -> Iterator[tuple[str, int, dict]]:
    """``(file, location, record)`` for each record with the spec's fields (bad ones go to ``policy``)."""
    fields = _fields(spec)
    if spec.hub is not None:
        yield from _dataset_rows(load_hub(spec), f"hub:{spec.hub}", fields, policy)
        return
    path = Path(spec.path)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if spec.hub_split not in loaded:
                raise UserDatasetError(f"{path}: field 'hub_split' is {spec.hub_split!r}, not a split of this "
                                       f"DatasetDict; allowed: {sorted(loaded)}")
            loaded = loaded[spec.hub_split]
        yield from _dataset_rows(loaded, str(path), fields, policy)
        return
    if not path.is_file():
        raise UserDatasetError(f"field 'path': {path} does not exist; allowed: a .jsonl, .json or .csv file or a "
                               "save_to_disk folder")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = read_jsonl(path, fields, policy)
    elif suffix == ".json":
        rows = read_json_list(path, fields, policy)
    elif suffix == ".csv":
        rows = read_csv(path, list(fields), policy)
    else:
        raise UserDatasetError(f"field 'path': {path} has the unknown format {suffix!r}; allowed: .jsonl, .json, .csv "
                               "or a save_to_disk folder")
    for location, record in rows:
        yield str(path), location, record


def load_hub(spec: UserDatasetSpec) -> datasets.Dataset:
    """``datasets.load_dataset(hub, hub_config, split=hub_split)``; a failure is one line naming the field."""
    try:
        return datasets.load_dataset(spec.hub, spec.hub_config, split=spec.hub_split)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:  # offline and not cached, no such id/split
        raise UserDatasetError(f"field 'hub': {spec.hub!r} (config {spec.hub_config!r}, split {spec.hub_split!r}) "
                               f"cannot be loaded: {' '.join(str(exc).split())}; allowed: a dataset id in the local "
                               "Hugging Face cache when offline (HF_DATASETS_OFFLINE=1), any id online") from None


def _dataset_rows(rows: datasets.Dataset, where: str, fields, policy: MalformedPolicy):
    missing = [f for f in fields if f not in rows.column_names]
    if missing:
        raise UserDatasetError(f"{where}: no column(s) {missing}; its columns: {rows.column_names} (set prompt_field, "
                               "answer_field ... in a spec file)")
    for index, record in enumerate(rows):
        problem = check_fields(record, fields)
        if problem:
            policy.bad(where, index, problem, unit="row")
            continue
        yield where, index, record


def _choice_item(spec: UserDatasetSpec, prompt: str, answer, options) -> tuple[str, str, int] | str:
    """``(prompt, answer, number of options)`` of a multiple-choice record, or the reason it is malformed."""
    if spec.choices is not None:
        answer = str(answer).strip()
        if answer not in spec.choices:
            return f"answer {answer!r} is not one of choices {spec.choices}"
        return prompt, answer, len(spec.choices)
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError:
            options = None
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS) or not all(
            isinstance(o, str) and o.strip() for o in options):
        return f"field {spec.choices_field!r} must be a list of 2 to {len(LETTERS)} non-empty strings"
    letters = LETTERS[: len(options)]
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(options):
            return f"answer index {answer} is outside 0..{len(options) - 1}"
        letter = letters[answer]
    elif str(answer).strip() in letters:
        letter = str(answer).strip()
    elif str(answer).strip() in options:
        letter = letters[options.index(str(answer).strip())]
    else:
        return f"answer {answer!r} is neither an index, a letter {list(letters)} nor one of the options"
    shown = "\n".join(f"{letter_}. {option.strip()}" for letter_, option in zip(letters, options))
    return f"{prompt}\n{shown}\nAnswer:", letter, len(options)


def load_user_task(ref: str, tokenizer=None, *, strict: bool = True) -> Task:
    """Load the user dataset ``ref`` (see :mod:`.user_spec`) as a :class:`Task`.

    ``strict=False`` skips malformed records (counted in ``task.counts["skipped_malformed"]``) instead of
    raising. A dataset without a usable record raises, naming the file.
    """
    spec = parse_reference(ref)
    policy = MalformedPolicy(strict)
    rows, seen, merged, source = [], set(), 0, spec.path or f"hub:{spec.hub}"
    widest = 0  # kind choice with choices_field: the candidates are the letters up to the most options shown
    for where, location, record in _records(spec, policy):
        prompt, answer = record[spec.prompt_field], record[spec.answer_field]
        unit = "line" if where.endswith((".jsonl", ".csv")) else "element" if where.endswith(".json") else "row"
        if isinstance(answer, str) and not answer.strip():
            policy.bad(where, location, f"field {spec.answer_field!r} is empty", unit=unit)
            continue
        if spec.kind == "choice":
            item = _choice_item(spec, prompt, answer, record.get(spec.choices_field) if spec.choices_field else None)
            if isinstance(item, str):
                policy.bad(where, location, item, unit=unit)
                continue
            prompt, answer, options = item
            widest = max(widest, options)
        row = {"prompt": prompt, "answer": str(answer).strip()}
        if spec.split_field:
            split = SPLIT_VALUES.get(record[spec.split_field].strip().lower())
            if split is None:
                policy.bad(where, location, f"field {spec.split_field!r} is {record[spec.split_field]!r}; allowed: "
                                            f"{sorted(SPLIT_VALUES)}", unit=unit)
                continue
            row["split"] = split
        row["id"] = row["group"] = stable_id(spec.name, row["prompt"], row["answer"])
        if row["id"] in seen:
            merged += 1
            continue
        seen.add(row["id"])
        rows.append(row)
    policy.log_summary(source)
    if not rows:
        raise DataFormatError(source, None, f"no usable record (skipped {policy.skipped} malformed); each record needs "
                                            f"the fields {sorted(_fields(spec))}")
    counts = {"records": len(rows) + merged, "merged_duplicates": merged, "skipped_malformed": policy.skipped,
              "items": len(rows)}
    columns = [*COLUMNS, *(["split"] if spec.split_field else [])]
    data = datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})
    if spec.kind == "generate":
        task = Task(spec.name, "generate", data, max_new_tokens=spec.max_new_tokens, source=source, counts=counts)
    else:
        candidates = tuple(spec.choices) if spec.choices else tuple(LETTERS[:widest])
        task = Task(spec.name, "classify", data, candidates=candidates, source=source, counts=counts)
    log.info("%s: %d items from %s (%s)", spec.name, len(rows), source, counts)
    return task


def user_dataset_digest(ref: str) -> str:
    """sha256 over the spec (without its path) and the data's bytes (a file, a folder's files) or, for a hub id,
    its rows: part of the cache key of every evaluation, so edited data is never answered from a cache."""
    spec = parse_reference(ref)
    digest = hashlib.sha256(json.dumps(spec.model_dump(exclude={"path"}), sort_keys=True).encode())
    if spec.hub is not None:
        for row in load_hub(spec):
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        return digest.hexdigest()
    path = Path(spec.path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update((file.relative_to(path).as_posix() if path.is_dir() else "").encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
