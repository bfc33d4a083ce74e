"""Errors and the malformed-input policy shared by all dataset loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file has a line/record that cannot be used; the message names the file and the line (or record)."""

    def __init__(self, path: Path | str, line: int | None, message: str, *, unit: str = "line") -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        self.unit = unit
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}" if unit == "line" else f"{self.path} ({unit} {line}): {message}")

    def __reduce__(self):
        """Rebuilt from its own fields when it crosses a process (Ray, Prefect): pickling the bare ``args``
        would call ``__init__`` with the formatted message alone and fail."""
        return (_rebuild, (str(self.path), self.line, self.message, self.unit))


def _rebuild(path: str, line: int | None, message: str, unit: str) -> DataFormatError:
    return DataFormatError(path, line, message, unit=unit)


@dataclass
class MalformedPolicy:
    """What to do with a malformed line: raise (``strict=True``, the default) or skip it and count it.

    Skipping is never silent: every skip is counted (``skipped``), the first few locations are kept
    (``examples``) and a warning is logged once per file by :meth:`log_summary`.
    """

    strict: bool = True
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def bad(self, path: Path | str, line: int | None, message: str, *, unit: str = "line") -> None:
        error = DataFormatError(path, line, message, unit=unit)
        if self.strict:
            raise error
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    def log_summary(self, what: str) -> None:
        if self.skipped:
            log.warning(
                "%s: skipped %d malformed record(s) (strict=False); first: %s", what, self.skipped, "; ".join(self.examples)
            )
