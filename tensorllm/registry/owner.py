"""Which process owns an MLflow run, so that a later process can tell a run left RUNNING by a killed process
(fail it) from one that another live process is still writing (leave it).

Every run the registry creates carries the tag ``tensorllm.owner`` = ``HOST|BOOT_ID|PID|START``: the machine, its
boot, the process id and the process's start time in clock ticks since boot (a recycled pid has another start
time). A run whose owner ran on this machine and is no longer that process was interrupted (a SIGKILL, an OOM
kill, a reboot); a run owned by a process on another machine cannot be judged from here and is left alone.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

OWNER_TAG = "tensorllm.owner"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "-"
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
    return "-" if fields[0] == "Z" else fields[19]  # a zombie has finished: no start time to match


@lru_cache(maxsize=1)
def _this_process(pid: int) -> str:
    return f"{socket.gethostname()}|{_boot_id()}|{pid}|{_start_ticks(pid) or '-'}"


def owner_tag() -> dict[str, str]:
    """The tag that names this process as a run's owner."""
    return {OWNER_TAG: _this_process(os.getpid())}


def owner_gone(tag: str | None) -> bool:
    """True when the process named by ``tag`` has certainly ended: same machine, and another boot, or its pid is gone
    or now another process. No tag (a run of an older version, which had no owner) counts as gone; an owner on
    another machine does not."""
    if not tag:
        return True
    try:
        host, boot, pid, start = tag.split("|")
    except ValueError:
        return True
    if host != socket.gethostname():
        return False
    if boot != _boot_id():
        return True
    now = _start_ticks(int(pid))
    return now is None or now == "-" or now != start
