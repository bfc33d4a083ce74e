"""Output folders checked before any work: one place that says why a folder cannot be written."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot be written (its nearest existing ancestor is a file, or is not writable), or None when
    it is a writable folder or can be created in one. Callers put the reason in their own one-line error."""
    existing = Path(folder).expanduser().resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"folder {existing} is not writable"
    return None


def looks_like_path(text: str) -> bool:
    """Text a user meant as a folder (``/``, ``./``, ``../``, ``~``, more than one ``/``): never a hub id."""
    return (text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1
            or text in (".", ".."))
