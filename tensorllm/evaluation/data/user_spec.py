"""Your own dataset: how it is named (a *reference*) and described (:class:`UserDatasetSpec`, pydantic).

A dataset reference is what ``--dataset``/``--datasets``, ``EvalConfig.dataset`` and ``SweepConfig.datasets``
take besides the five built-in names:

* ``examples/capitals.jsonl`` (or ``.json``, ``.csv``): a data file whose records have the fields ``prompt``
  and ``answer`` (generative, the built-in 20/80 split). Nothing else to write.
* ``my.dataset.yaml`` (or ``.yml``): a spec file, one YAML mapping validated by :class:`UserDatasetSpec`::

      path: capitals.jsonl        # or a folder saved with datasets' save_to_disk; relative to this file
      # hub: owner/name           # instead of path: a Hugging Face dataset id (offline: the local HF cache)
      prompt_field: question
      answer_field: answer
      split_field: split          # optional: values val/test; without it, the seeded 20/80 split
      kind: generate              # or choice (multiple choice: choices_field or choices)

The dataset's *name* (what metrics, files and cache folders are called) is ``name:`` of the spec, else the
file name up to its first dot (``capitals``). A name may not be one of the built-in five. Every mistake is
one line naming the field and what is allowed (:class:`UserDatasetError`, a ``ValueError``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DATA_SUFFIXES = (".jsonl", ".json", ".csv")
SPEC_SUFFIXES = (".yaml", ".yml")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: the split_field values allowed (the built-in protocol's names; "validation" is read as "val")
SPLIT_VALUES = {"val": "val", "validation": "val", "test": "test"}
ALLOWED = ("{builtins}, a data file (.jsonl, .json, .csv) with fields prompt and answer, a folder "
           "saved with datasets' save_to_disk, or a spec file (.yaml, .yml; docs/evaluation.md#your-own-data)")


class UserDatasetError(ValueError):
    """A dataset reference or spec that cannot be used; the message is one line naming the field."""


class UserDatasetSpec(BaseModel):
    """The description of one user dataset (a spec file's content; defaults for a bare data file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="what metrics and files are called; default: the file name up to its "
                                               "first dot")
    path: str | None = Field(None, description="a .jsonl/.json/.csv file or a save_to_disk folder (relative paths: "
                                               "to the spec file)")
    hub: str | None = Field(None, description="a Hugging Face dataset id, instead of path")
    hub_config: str | None = Field(None, description="the hub dataset's configuration (subset)")
    hub_split: str = Field("train", description="which split of the hub dataset (or of a saved DatasetDict) to read")
    prompt_field: str = Field("prompt", min_length=1, description="the field holding the prompt, used verbatim")
    answer_field: str = Field("answer", min_length=1, description="the field holding the gold answer")
    split_field: str | None = Field(None, description="a field with val/test per record; None: the seeded 20/80 split")
    kind: Literal["generate", "choice"] = Field("generate", description="generate: greedy answer, substring match; "
                                                                          "choice: one of the choices")
    choices_field: str | None = Field(None, description="kind=choice: a field with each record's list of options "
                                                        "(shown lettered A, B, ...; the answer is the letter)")
    choices: list[str] | None = Field(None, description="kind=choice: one fixed list of single-token answers for all "
                                                        "records (e.g. [yes, no])")
    max_new_tokens: int = Field(10, ge=1, le=256, description="kind=generate: tokens generated per answer")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"must be letters, digits, '_' or '-' (starting with a letter or digit), got {value!r}")
        return value

    @field_validator("choices", mode="before")
    @classmethod
    def _quoted(cls, value):
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError(f"YAML read {value} as booleans (yes/no/true/false unquoted); allowed: quoted strings, "
                             "e.g. ['yes', 'no']")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UserDatasetSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (a local file or folder) and hub (a dataset id)")
        if self.kind == "choice":
            if (self.choices_field is None) == (self.choices is None):
                raise ValueError("kind choice needs exactly one of choices_field (per-record options) and choices "
                                 "(one fixed list)")
            if self.choices is not None and (len(self.choices) < 2 or len(set(self.choices)) != len(self.choices)):
                raise ValueError(f"choices must be at least 2 distinct answers, got {self.choices}")
        elif self.choices_field is not None or self.choices is not None:
            raise ValueError("choices_field and choices are for kind choice; this spec has kind generate")
        return self


def builtin_names() -> list[str]:
    from .registry import dataset_names

    return dataset_names()


def _allowed() -> str:
    return ALLOWED.format(builtins=builtin_names())


def is_user_reference(ref: str) -> bool:
    """True when ``ref`` is not a built-in name (so it must be a file, folder or spec reference)."""
    return isinstance(ref, str) and ref not in builtin_names()


def _spec_from_file(path: Path) -> UserDatasetSpec:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserDatasetError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserDatasetError(f"{path}: a dataset spec is a YAML mapping of fields {list(UserDatasetSpec.model_fields)}"
                               f", got {type(data).__name__}")
    try:
        spec = UserDatasetSpec.model_validate(data)
    except ValidationError as exc:
        raise UserDatasetError(f"{path}: {_first_error(exc)}") from None
    if spec.path is not None and not Path(spec.path).expanduser().is_absolute():
        spec = spec.model_copy(update={"path": str((path.parent / spec.path).resolve())})
    return spec


def _first_error(exc: ValidationError) -> str:
    """The first pydantic error as ``field FIELD: message; allowed fields/values ...`` on one line."""
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}; allowed: {', '.join(UserDatasetSpec.model_fields)}"
    if error["type"] == "missing":
        return f"field {field!r} is required"
    return f"field {field!r}: {message}" if field else message


def parse_reference(ref: str) -> UserDatasetSpec:
    """The spec of a user dataset reference (a data file, a save_to_disk folder or a spec file), path absolute.

    Raises :class:`UserDatasetError` (one line) for an unknown form, a missing file or a bad spec.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise UserDatasetError(f"dataset: got {ref!r}; allowed: {_allowed()}")
    path = Path(ref).expanduser()
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES + SPEC_SUFFIXES and not path.is_dir():
        raise UserDatasetError(f"Unknown dataset {ref!r}; allowed: {_allowed()}")
    if not path.exists():
        raise UserDatasetError(f"dataset {ref!r}: no such file or folder; allowed: {_allowed()}")
    if suffix in SPEC_SUFFIXES:
        spec = _spec_from_file(path.resolve())
    else:
        spec = UserDatasetSpec(path=str(path.resolve()))
    name = spec.name or path.name.split(".")[0]  # the reference's own file name (the spec file's, if one)
    if not NAME_PATTERN.fullmatch(name):
        raise UserDatasetError(f"dataset {ref!r}: its name {name!r} (from the file name) is not letters, digits, "
                               "'_' or '-'; allowed: set name: in a spec file")
    if name in builtin_names():
        raise UserDatasetError(f"dataset {ref!r}: its name {name!r} is a built-in dataset's; allowed: another name "
                               "(name: in a spec file, or rename the file)")
    return spec.model_copy(update={"name": name})


def canonical_reference(ref: str) -> str:
    """A built-in name unchanged; a user reference as an absolute path (Ray workers have another working folder),
    after checking it parses."""
    if not is_user_reference(ref):
        return ref
    parse_reference(ref)
    return str(Path(ref).expanduser().resolve())


def dataset_label(ref: str) -> str:
    """What metrics, files and cache folders call a dataset: the built-in name, or the user dataset's name.

    A string that is neither (a record keyed by some other label) comes back with anything but letters,
    digits, ``_``, ``.`` and ``-`` replaced by ``_``: a label is a file name, never a path.
    """
    if not is_user_reference(ref):
        return ref
    try:
        return parse_reference(ref).name
    except UserDatasetError:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref)
