"""The sha256 of every file of a written folder (``tensorllm_manifest.json``), and its check.

An export folder (:func:`tensorllm.export.export_variant`, ``tensorllm compress``) records what it wrote, so
that a flipped byte anywhere in it (weights, config, tokenizer, the loader code) is found before the model is
used: :func:`tensorllm.load_export.load_compressed` and ``from_pretrained(..., trust_remote_code=True)`` check
it, and ``tensorllm verify`` checks it on demand. Without it, damaged tensor data in ``model.safetensors`` (an
intact header) loaded silently.

The manifest lists files relative to the folder, with their size and sha256; files added to the folder later
(not in the manifest) are not checked. Usage::

    write_manifest("out/small")                 # after the last file is written
    for row in verify_manifest("out/small"):    # ValueError naming the first damaged file
        print(row.line())
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .artifact import file_sha256

MANIFEST_FILE = "tensorllm_manifest.json"
MANIFEST_FORMAT = "tensorllm-manifest/1"


@dataclass(frozen=True)
class CheckedFile:
    """One file that matched its recorded digest."""

    path: Path
    bytes: int
    sha256: str

    def line(self) -> str:
        return f"ok  {self.path}  {self.bytes:,} bytes  sha256 {self.sha256[:16]}…"


def write_manifest(folder: str | Path) -> Path:
    """Record the size and sha256 of every file under ``folder`` (the manifest itself excepted); returns its path."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = folder / MANIFEST_FILE
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2, sort_keys=True) + "\n")
    return manifest


def has_manifest(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


def read_manifest(folder: str | Path) -> dict[str, dict]:
    """The recorded files (relative path -> ``{"bytes", "sha256"}``); ``ValueError`` naming the manifest when it
    is missing or unreadable."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} records no digests (written before exports carried "
                                "them, or not an export); re-export it")
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if data.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged and cannot be read ({exc}); re-export the folder") from None
    return files


def verify_manifest(folder: str | Path) -> list[CheckedFile]:
    """Check every file the manifest records (size first, then sha256); returns them, or raises ``ValueError``
    (``FileNotFoundError`` for a missing file) naming the first file that differs."""
    folder = Path(folder)
    return [check_file(folder, name, recorded) for name, recorded in sorted(read_manifest(folder).items())]


def check_file(folder: Path, name: str, recorded: dict) -> CheckedFile:
    """One manifest entry checked: the file, or an error naming it."""
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing ({MANIFEST_FILE} records it); re-export the folder")
    size = path.stat().st_size
    if size != recorded["bytes"]:
        raise ValueError(f"{path} is damaged: {size:,} bytes, {MANIFEST_FILE} recorded {recorded['bytes']:,} "
                         "(truncated or changed after it was written); re-export the folder")
    actual = file_sha256(path)
    if actual != recorded["sha256"]:
        raise ValueError(f"{path} is damaged: its sha256 is {actual} but {MANIFEST_FILE} recorded "
                         f"{recorded['sha256']} (changed after it was written); re-export the folder")
    return CheckedFile(path, size, actual)
