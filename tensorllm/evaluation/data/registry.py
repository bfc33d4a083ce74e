"""Dataset registry: a name -> its local loader and its hub loader; :func:`load_task` is the one entry point.

Local data (the default) is read from ``data_dir``: the argument, else ``$TENSORLLM_DATA_DIR``, else the
datasets shipped in the package (``tensorllm/evaluation/data/files/``, each with its ``SOURCE.md``). ``source="hub"`` uses LASER's Hugging Face datasets instead
(needs network; never used by the tests).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import bios, counterfact, fever, hotpotqa, qa_wikidata
from .task import Task
from .user_data import load_user_task, user_dataset_digest
from .user_spec import is_user_reference, parse_reference

SOURCES = ("local", "hub")


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset: ``local(data_dir, tokenizer, strict=..., **options)`` and ``hub(tokenizer, **options)``."""

    name: str
    local: Callable[..., Task]
    hub: Callable[..., Task]
    description: str
    folder: str  # its files under the data folder (what :func:`dataset_digest` hashes)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(qa_wikidata.NAME, qa_wikidata.load_local, qa_wikidata.load_hub, "BIG-bench WikidataQA (generative)",
                    qa_wikidata.FILE.parent.as_posix()),
        DatasetSpec(hotpotqa.NAME, hotpotqa.load_local, hotpotqa.load_hub, "HotpotQA dev questions (generative)",
                    hotpotqa.FILE.parent.as_posix()),
        DatasetSpec(fever.NAME, fever.load_local, fever.load_hub, "FEVER claims, true vs false (classification)",
                    fever.FILE.parent.as_posix()),
        DatasetSpec(bios.NAME, bios.load_local, bios.load_hub, "Bias in Bios professions (classification)",
                    bios.FOLDER.as_posix()),
        DatasetSpec(counterfact.NAME, counterfact.load_local, counterfact.load_hub, "CounterFact true targets (generative)",
                    counterfact.FILES[0].parent.as_posix()),
    )
}


def dataset_names() -> list[str]:
    """The names :func:`load_task` accepts."""
    return list(DATASETS)


def check_dataset_name(name: str) -> DatasetSpec:
    """The spec of built-in ``name``; an unknown name raises with the list of allowed names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dataset {name!r}; allowed: {dataset_names()}") from None


def check_dataset(ref: str, *, read: bool = False) -> None:
    """Raise (one line) unless ``ref`` is a built-in name or a usable user dataset reference
    (:mod:`.user_spec`: a data file, a save_to_disk folder or a spec file). ``read=True`` also reads a user
    dataset whole, strictly (a malformed record fails now, named by file and line, not after a model loads)."""
    if isinstance(ref, str) and is_user_reference(ref):
        parse_reference(ref)
        if read:
            load_user_task(ref)
    else:
        check_dataset_name(ref)


def default_data_dir() -> Path:
    """``$TENSORLLM_DATA_DIR`` if set, else the datasets shipped inside the package (``files/`` beside this
    module: package data, so a wheel install finds them as a checkout does)."""
    env = os.environ.get("TENSORLLM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "files"


def dataset_digest(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """sha256 over the names and bytes of every file of dataset ``name`` in the data folder: part of the
    cache key of every evaluation, so edited data is never answered from a cache. A user dataset's digest
    also covers its spec (:func:`.user_data.user_dataset_digest`)."""
    if isinstance(name, str) and is_user_reference(name):
        return user_dataset_digest(name)
    spec = check_dataset_name(name)
    folder = (Path(data_dir).expanduser() if data_dir is not None else default_data_dir()) / spec.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: its folder {folder} does not exist; pass data_dir= or set "
                                "TENSORLLM_DATA_DIR")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_task(
    name: str,
    tokenizer=None,
    *,
    data_dir: str | os.PathLike | None = None,
    source: str = "local",
    strict: bool = True,
    **options,
) -> Task:
    """Load dataset ``name`` as a :class:`Task` with the paper's prompts.

    ``tokenizer`` is needed by hotpotqa (answer-length filter) and bios_profession (single-token
    candidates); passing it always is simplest. ``strict=False`` skips malformed lines and counts them
    (``task.counts["skipped_malformed"]``) instead of raising. ``options`` go to the dataset's loader
    (e.g. ``include_accountant_1000=True`` or ``professions=[...]`` for bios_profession,
    ``paraphrases=False`` for counterfact); an option the loader does not take raises.

    ``name`` may also be your own dataset (a data file, a save_to_disk folder or a spec file:
    :mod:`.user_spec`); ``data_dir``, ``source`` and ``options`` do not apply to it.
    """
    if isinstance(name, str) and is_user_reference(name):
        if options:
            raise ValueError(f"Dataset {name!r} is your own data; it takes no loader option(s) {sorted(options)}")
        return load_user_task(name, tokenizer, strict=strict)
    spec = check_dataset_name(name)
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; allowed: {list(SOURCES)}")
    loader = spec.local if source == "local" else spec.hub
    accepted = set(inspect.signature(loader).parameters) - {"data_dir", "tokenizer", "strict"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"Dataset {name!r} ({source}) does not take option(s) {unknown}; it takes {sorted(accepted)}")
    if source == "hub":
        return loader(tokenizer, **options)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir {folder} is not a folder; pass data_dir= or set TENSORLLM_DATA_DIR")
    return loader(folder, tokenizer, strict=strict, **options)
