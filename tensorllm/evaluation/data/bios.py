"""Bias in Bios, profession task: which profession does a biography describe? Single next-token decision.

Scored by argmax over the candidate tokens ``" " + profession`` at the position after the prompt;
candidates are the professions present in the data whose ``" " + name`` is one token for the evaluated
model's tokenizer (LASER: the same rule, which gave 8 professions for LLaMA-2/GPT-J; ``professions=``
restricts further, e.g. to :data:`LASER_PROFESSIONS`).

Local files: ``bias_in_bios/per_profession/*.csv`` (10 bios for each of the 28 professions). The extra
``accountant_1000.csv`` (1,000 accountant bios) is **not used by default**: with it, accountant would be
~85% of the items and accuracy would mostly measure "always answer accountant". Pass
``include_accountant_1000=True`` to add it anyway. Duplicate bios are merged (2 accountant bios are in
both files); bios seen with two professions are dropped. Hub (LASER): ``LabHC/bias_in_bios`` split ``dev``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..tokens import single_token_id
from .errors import MalformedPolicy
from .prompts import bios_prompt
from .readers import read_csv, require_file
from .task import Task, make_dataset, stable_id

log = logging.getLogger(__name__)

NAME = "bios_profession"
FOLDER = Path("bias_in_bios")
ACCOUNTANT_1000 = FOLDER / "accountant_1000.csv"
#: the 8 professions of LASER's code (src/dataset_utils/bias_in_bios.py)
LASER_PROFESSIONS = ("journalist", "poet", "composer", "model", "teacher", "architect", "painter", "professor")
#: LabHC/bias_in_bios integer profession codes (alphabetical; see files/bias_in_bios/SOURCE.md)
LABHC_PROFESSIONS = (
    "accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian", "dj",
    "filmmaker", "interior designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
    "personal trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
    "software engineer", "surgeon", "teacher", "yoga teacher",
)  # fmt: skip


def profession_name(raw: str) -> str:
    """``"software_engineer"`` -> ``"software engineer"`` (the CSV files use underscores)."""
    return raw.strip().lower().replace("_", " ")


def build(
    bios: Iterable[tuple[str, str]],
    tokenizer,
    source: str,
    counts: dict[str, int],
    professions: Sequence[str] | None = None,
) -> Task:
    """Turn ``(bio, profession)`` pairs into the task, keeping single-token professions (all counted)."""
    if tokenizer is None:
        raise ValueError(f"{NAME} needs the model's tokenizer: candidates are the single-token professions")
    labels: dict[str, set[str]] = {}
    for bio, profession in bios:
        labels.setdefault(bio.strip(), set()).add(profession_name(profession))
    counts["merged_duplicates"] = counts.get("records", 0) - len(labels)
    consistent = {bio: next(iter(p)) for bio, p in labels.items() if len(p) == 1}
    counts["dropped_conflicting_bios"] = len(labels) - len(consistent)
    present = sorted(set(consistent.values()))
    if professions is not None:
        unknown = sorted(set(map(profession_name, professions)) - set(present))
        if unknown:
            raise ValueError(f"{NAME}: professions {unknown} are not in the data; present: {present}")
        present = sorted(set(map(profession_name, professions)))
    candidates = tuple(p for p in present if single_token_id(tokenizer, p) is not None)
    multi = sorted(set(present) - set(candidates))
    log.info("%s: single-token professions %s; dropped multi-token %s", NAME, list(candidates), multi)
    rows = []
    for bio, profession in consistent.items():
        if profession not in candidates:
            key = "dropped_multi_token_profession" if profession in multi else "dropped_not_selected_profession"
            counts[key] = counts.get(key, 0) + 1
            continue
        item_id = stable_id(NAME, bio)
        rows.append({"id": item_id, "group": item_id, "prompt": bios_prompt(bio), "answer": profession})
    counts["items"] = len(rows)
    counts["professions"] = len(candidates)
    log.info("%s: %d items from %s (%s)", NAME, len(rows), source, counts)
    return Task(NAME, "classify", make_dataset(rows), candidates=candidates, source=source, counts=counts)


def load_local(
    data_dir: Path,
    tokenizer=None,
    *,
    strict: bool = True,
    include_accountant_1000: bool = False,
    professions: Sequence[str] | None = None,
) -> Task:
    """Load ``per_profession/*.csv`` (columns ``hard_text``, ``profession``), optionally ``accountant_1000.csv``."""
    folder = data_dir / FOLDER / "per_profession"
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"{NAME}: no CSV files in {folder}. Pass data_dir= (the folder holding bias_in_bios/) or set TENSORLLM_DATA_DIR."
        )
    if include_accountant_1000:
        files.append(require_file(data_dir / ACCOUNTANT_1000, NAME))
    policy = MalformedPolicy(strict)
    bios = []
    for path in files:
        bios += [(r["hard_text"], r["profession"]) for _, r in read_csv(path, ("hard_text", "profession"), policy)]
    policy.log_summary(str(folder))
    counts = {"files": len(files), "records": len(bios), "skipped_malformed": policy.skipped}
    return build(bios, tokenizer, f"{data_dir / FOLDER} ({len(files)} files)", counts, professions)


def load_hub(tokenizer=None, *, professions: Sequence[str] | None = LASER_PROFESSIONS) -> Task:
    """LASER's source: ``LabHC/bias_in_bios`` split ``dev``; by default LASER's 8 professions."""
    from datasets import load_dataset

    rows = load_dataset("LabHC/bias_in_bios", split="dev")
    bios = [(r["hard_text"], LABHC_PROFESSIONS[int(r["profession"])]) for r in rows]
    return build(bios, tokenizer, "hub:LabHC/bias_in_bios/dev", {"records": len(bios)}, professions)
