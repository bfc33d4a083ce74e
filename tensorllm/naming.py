"""File-system names of variants, shared by the CLI and the evaluation tasks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def variant_label(artifacts: Sequence[str]) -> str:
    """A folder or file name for a variant: ``baseline``, the artifact folder names joined by ``+``, or a
    digest of their absolute paths when a composed variant has too many for one file name."""
    if not artifacts:
        return "baseline"
    if len(artifacts) <= 2:
        return "+".join(Path(a).name for a in artifacts)
    digest = hashlib.sha256("\n".join(str(Path(a).resolve()) for a in artifacts).encode()).hexdigest()[:16]
    return f"composed-{len(artifacts)}-edits-{digest}"
