"""One loaded base model per worker process, reused by the evaluation tasks that run there.

A Ray worker process runs many tasks; reloading the model for every variant would dominate. This
state lives in its own module on purpose: Prefect task functions are pickled *by value* when sent to
Ray (the module attribute is the Task object, not the function), so module globals next to a task
would be copied per call; functions imported from here are pickled by reference and their state
stays in the worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from tensorllm.models import load_model

_MODELS: dict[tuple[str, str], tuple] = {}
_LOCK = threading.Lock()  # the thread-pool runner may run two tasks of one process at once


@contextlib.contextmanager
def base_model(folder: Path, device: str) -> Iterator[tuple]:
    """``(model, tokenizer)`` for ``folder`` on ``device``, loaded once per process, held exclusively."""
    with _LOCK:
        key = (str(folder), device)
        if key not in _MODELS:
            _MODELS.clear()  # one model per worker: memory stays bounded
            _MODELS[key] = load_model(folder, device=device)
        yield _MODELS[key]
