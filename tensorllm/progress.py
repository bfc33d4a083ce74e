"""Progress of long loops, reported to whoever listens: the CLI draws bars, the library never prints.

The library's loops call :func:`expect` (a stage's total, when known) and :func:`advance` (units done);
both are no-ops unless a listener was installed with :func:`listening` for the current context (a
``contextvars`` variable, so concurrent evaluations in threads do not mix). The CLI installs a
tqdm-backed listener on a terminal (:func:`tqdm_listener`), and none with ``--json`` or when stderr is
not a terminal. Stages in use: ``teacher-forced`` and ``generation`` (rows of an evaluation),
``decompose`` (rank configurations of one layer).

Usage::

    with listening(tqdm_listener()):
        evaluate(model, tokenizer, config)   # draws "teacher-forced 120/400 [00:05<00:12, 23.1 rows/s]"
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol


class Listener(Protocol):
    def expect(self, stage: str, total: int | None) -> None: ...

    def advance(self, stage: str, n: int) -> None: ...

    def close(self) -> None: ...


_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("tensorllm_progress", default=None)


def expect(stage: str, total: int | None) -> None:
    """A stage starts, with ``total`` units to do (None: unknown)."""
    listener = _listener.get()
    if listener is not None:
        listener.expect(stage, total)


def advance(stage: str, n: int = 1) -> None:
    """``n`` more units of ``stage`` are done."""
    listener = _listener.get()
    if listener is not None:
        listener.advance(stage, n)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send this context's progress to ``listener`` (None: nowhere) for the duration of the block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
        if listener is not None:
            listener.close()


class TqdmListener:
    """One tqdm bar per stage on stderr (items/s and ETA when the total is known)."""

    def __init__(self, unit: str = "rows"):
        self.unit = unit
        self.bars: dict[str, object] = {}

    def expect(self, stage: str, total: int | None) -> None:
        import shutil

        from tqdm import tqdm

        if stage in self.bars:
            self.bars.pop(stage).close()
        width = shutil.get_terminal_size((100, 20)).columns or 100  # a pseudo-terminal may report 0 columns
        self.bars[stage] = tqdm(total=total, desc=stage, unit=self.unit, leave=True, ncols=min(width, 120))

    def advance(self, stage: str, n: int) -> None:
        if stage not in self.bars:
            self.expect(stage, None)
        self.bars[stage].update(n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def tqdm_listener(enabled: bool, unit: str = "rows") -> TqdmListener | None:
    """A :class:`TqdmListener`, or None when progress is off (``--json``, or stderr is not a terminal)."""
    return TqdmListener(unit) if enabled else None
