"""Code versions for cache keys: a digest of the source that computed a result.

A cached result (an artifact folder, a Prefect task result) is reused only when the code that would
recompute it is byte-identical; a version number alone misses every edit between releases.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import __version__

LIBRARY_ROOT = Path(__file__).resolve().parent


def source_digest(*folders: Path) -> str:
    """``<version>+<sha256[:12]>`` over the relative paths and bytes of every ``*.py`` under ``folders``."""
    digest = hashlib.sha256(__version__.encode())
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def library_code_version() -> str:
    """The digest of the ``tensorllm`` package (what an artifact records and is reused by)."""
    return source_digest(LIBRARY_ROOT)
