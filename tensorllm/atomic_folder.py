"""Write a folder all at once: build it under a temporary name next to the target, then rename it into place.

``export`` and ``compress`` write many files (hundreds of MB); a kill half-way used to leave a folder that
looked like a model and was not one. With :func:`atomic_folder` a kill at any point leaves either the old
folder (or nothing) or the complete new one:

* the files are written into ``.<name>.partial-<pid>-<random>`` beside the target (same file system, so the
  final rename is atomic);
* a new target is one ``rename``; an existing one (``overwrite=True``) is swapped with the new folder in one
  atomic ``renameat2(RENAME_EXCHANGE)`` (Linux), and the old content, now under the temporary name, is deleted
  after. Where that call is missing, the old folder is renamed aside first and a later run puts it back if the
  process died between the two renames (:func:`remove_stale`);
* temporary folders left by a killed process (its pid no longer runs) are deleted by the next write of the
  same target.

A non-empty target is refused unless ``overwrite`` is given: :func:`refuse_existing`, which commands call
before their compute so that the refusal costs nothing.

Usage::

    with atomic_folder("runs/exports/small", overwrite=False) as tmp:
        write_everything_into(tmp)          # the target appears only when the block succeeds
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PARTIAL = ".partial-"  # .<name>.partial-<pid>-<hex>: being written, or (after a swap) the old content to delete
ASIDE = ".replaced-"  # .<name>.replaced-<pid>-<hex>: the old folder during a non-atomic replacement
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def refuse_existing(target: str | Path, overwrite: bool, option: str = "--overwrite") -> None:
    """Raise when ``target`` cannot be (re)written: a file (``NotADirectoryError``), or a non-empty folder without
    ``overwrite`` (``FileExistsError``); one line naming it and ``option``."""
    target = Path(target)
    if target.is_file() or (target.exists() and not target.is_dir()):
        raise NotADirectoryError(f"{target} is a file, not a folder; give a folder path as the output")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty; give {option} to replace it (or choose another folder)")


@contextlib.contextmanager
def atomic_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without an error, it becomes
    ``target`` (see the module docstring). On an error the temporary folder is deleted and ``target`` is as it was."""
    target = Path(target).expanduser().absolute()
    refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = target.parent / f".{target.name}{PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        refuse_existing(target, overwrite)  # a folder that appeared meanwhile is not silently replaced
        _put_in_place(tmp, target)
    finally:
        if tmp.exists():  # the failed block's files, or the old content after a swap
            shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(tmp: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # an empty folder (e.g. made by hand): nothing to keep
    if not target.exists():
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):  # target holds the new content, tmp the old (deleted by the caller)
        return
    aside = target.parent / f".{target.name}{ASIDE}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(target, aside)
    os.rename(tmp, target)  # a kill between these renames: remove_stale puts the old folder back
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    log.debug("renameat2 failed (errno %d); renaming in two steps", ctypes.get_errno())
    return False


def _pid_of(name: str, marker: str) -> int | None:
    try:
        return int(name.split(marker, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(target: str | Path) -> list[Path]:
    """Delete the temporary folders of ``target`` that a killed process left (its pid no longer runs); an old
    folder left renamed aside while ``target`` is missing is put back. Returns what was removed."""
    target = Path(target).expanduser().absolute()
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in sorted(target.parent.glob(f".{target.name}.*")):
        for marker in (PARTIAL, ASIDE):
            prefix = f".{target.name}{marker}"
            pid = _pid_of(path.name, marker) if path.name.startswith(prefix) else None
            if pid is None or _running(pid):
                continue
            if marker == ASIDE and not target.exists():
                os.rename(path, target)
                log.warning("%s: put back the folder a killed process had renamed to %s", target, path.name)
                continue
            shutil.rmtree(path, ignore_errors=True)
            log.info("%s: removed %s, left by a killed process (pid %d)", target, path.name, pid)
            removed.append(path)
    return removed
