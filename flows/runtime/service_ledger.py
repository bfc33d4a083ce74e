"""Which local processes a running sweep owns, written to disk, so that nothing outlives the sweep.

``tensorllm sweep`` starts a Prefect server and a private Ray (GCS, raylet, dashboard, its two agents,
the workers). They are all descendants of the sweep's process, but only while the tree is intact: when
the raylet goes, its agents are re-parented to init, and a SIGKILLed sweep leaves every one of them
running with nothing in memory that names them (measured: a Prefect server and two Ray agents, which
ignore SIGTERM, still alive after the driver was killed).

So while a sweep runs, :class:`ServiceLedger` keeps ``runs/services/sweep-<pid>.json`` up to date: the
driver's pid and start time and every process ever seen below it (pid, start time, command line). On
exit (normal, an exception, SIGINT or SIGTERM) it stops them; after a SIGKILL the next sweep calls
:func:`clean_stale`, which reads the files whose driver is gone and stops the processes still alive
with the same pid *and* start time (a recycled pid is never touched), then removes the file.

The start time is counted from boot (Linux: ``/proc/<pid>/stat``), not read from the wall clock:
``psutil``'s ``create_time`` is boot time plus that offset, and boot time moves when NTP adjusts the
clock (the kernel derives it from the wall clock, in whole seconds): every recorded process then looks
like another one with a recycled pid, and none is stopped (the likely cause of a CI failure in which no
recorded process was recognised 2 s after a SIGKILL).

Usage::

    for report in clean_stale(root / "runs" / "services"):
        print(report.sentence())
    with ServiceLedger(root / "runs" / "services"):
        ...  # start services, run the flow
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

#: seconds between two snapshots of the process tree (a Ray worker started and ended in between is not
#: listed, but it dies with its raylet, which is)
SNAPSHOT_SECONDS = 2.0
#: two start times within this many seconds are the same process (one clock tick is 0.01 s on Linux)
START_TOLERANCE_SECONDS = 0.005
#: seconds a process gets to exit after SIGTERM before SIGKILL (Ray's agents ignore SIGTERM)
TERMINATE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class OwnedProcess:
    """One process as the ledger saw it: its pid *and* start time identify it (pids are recycled)."""

    pid: int
    #: seconds after boot at which it started (see :func:`start_since_boot`)
    started: float
    command: str

    def alive(self) -> psutil.Process | None:
        """The live process if it is still this one (same pid and start time), else None."""
        try:
            process = psutil.Process(self.pid)
            same = abs(start_since_boot(process) - self.started) < START_TOLERANCE_SECONDS
            if same and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            pass
        return None

    @classmethod
    def of(cls, process: psutil.Process) -> "OwnedProcess":
        try:
            command = " ".join(process.cmdline())[:300] or process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            command = "?"
        return cls(process.pid, start_since_boot(process), command)


def start_since_boot(process: psutil.Process) -> float:
    """When ``process`` started, in seconds after boot: a clock that NTP and the user cannot move.

    Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot). Elsewhere: ``create_time``, which
    follows the wall clock (the best those systems offer through psutil).
    """
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text()
        except FileNotFoundError:
            raise psutil.NoSuchProcess(process.pid) from None
        fields_after_name = stat.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        return int(fields_after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22; field 3 is at index 0
    return process.create_time()


@dataclass
class StaleSweep:
    """What :func:`clean_stale` found and did for one sweep that died without cleaning up."""

    driver_pid: int
    started: str
    stopped: list[OwnedProcess] = field(default_factory=list)

    def sentence(self) -> str:
        if not self.stopped:
            return (f"found the record of an interrupted sweep (pid {self.driver_pid}, started {self.started}); "
                    "none of its processes was still running")
        kinds = _describe(self.stopped)
        return (f"stopped {len(self.stopped)} process{'es' * (len(self.stopped) != 1)} left by an interrupted "
                f"sweep (pid {self.driver_pid}, started {self.started}): {kinds}")


def _describe(processes: list[OwnedProcess]) -> str:
    """'Prefect server 1234, Ray 5 (raylet 2345, ...)': what a user recognises in ``ps``."""
    prefect = [p.pid for p in processes if "prefect" in p.command and "server" in p.command]
    ray = [p for p in processes if p.pid not in prefect]
    parts = []
    if prefect:
        parts.append("Prefect server " + ", ".join(map(str, prefect)))
    if ray:
        parts.append(f"Ray and other helpers {', '.join(str(p.pid) for p in ray[:8])}" + (" ..." if len(ray) > 8 else ""))
    return "; ".join(parts)


def stop_processes(processes: list[OwnedProcess], grace: float = TERMINATE_GRACE_SECONDS) -> list[OwnedProcess]:
    """SIGTERM each still-alive process, then SIGKILL what is left after ``grace`` seconds.

    Returns the processes that were alive (and are now stopped). Only a process whose pid and start time
    both match is signalled.
    """
    live = [(record, process) for record in processes if (process := record.alive()) is not None]
    for _, process in live:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, remaining = psutil.wait_procs([p for _, p in live], timeout=grace)
    for process in remaining:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(remaining, timeout=grace)
    return [record for record, _ in live]


class ServiceLedger:
    """Context manager: records this process's descendants on disk while it runs; stops them on exit."""

    def __init__(self, folder: Path, interval: float = SNAPSHOT_SECONDS):
        self.folder = Path(folder)
        self.interval = interval
        self.me = psutil.Process(os.getpid())
        self.path = self.folder / f"sweep-{self.me.pid}.json"
        self.seen: dict[tuple[int, float], OwnedProcess] = {}  # by (pid, start since boot)
        self.stopped: list[OwnedProcess] = []
        # descendants older than this ledger (a test process's own servers) are not the sweep's; a child
        # started between construction and the block (the supervised driver) is
        self.before = {(r.pid, r.started) for r in _records(self.me.children(recursive=True))}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> None:
        """Add every current descendant to the record and rewrite the file (atomically)."""
        with self._lock:
            try:
                children = self.me.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for record in _records(children):
                if (record.pid, record.started) not in self.before:
                    self.seen.setdefault((record.pid, record.started), record)
            self._write()

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {"driver": asdict(OwnedProcess.of(self.me)), "started": _iso(self.me.create_time()),
                   "processes": [asdict(p) for p in self.seen.values()]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.snapshot()
            except Exception as exc:  # never let bookkeeping take the sweep down
                log.debug("service ledger snapshot failed: %s", exc)

    def __enter__(self) -> "ServiceLedger":
        self.snapshot()
        self._thread = threading.Thread(target=self._loop, name="service-ledger", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        self.snapshot()  # whatever started since the last snapshot
        self.stopped = stop_processes(list(self.seen.values()))
        if self.stopped:
            log.info("Stopped %d leftover processes of this sweep: %s", len(self.stopped), _describe(self.stopped))
        self.path.unlink(missing_ok=True)


def _records(processes: list[psutil.Process]) -> list[OwnedProcess]:
    out = []
    for process in processes:
        try:
            out.append(OwnedProcess.of(process))
        except psutil.NoSuchProcess:
            continue
    return out


def running_sweeps(folder: Path) -> list[dict]:
    """The ledger files of sweeps whose driver is still alive (concurrent sweeps: never touched)."""
    out = []
    for path in sorted(Path(folder).glob("sweep-*.json")):
        payload = _read(path)
        if payload is not None and OwnedProcess(**payload["driver"]).alive() is not None:
            out.append({**payload, "file": str(path)})
    return out


def clean_stale(folder: Path) -> list[StaleSweep]:
    """Stop the processes of every recorded sweep whose driver is gone, and remove its file.

    A file whose driver is alive belongs to a sweep still running (this one or a concurrent one) and is
    left alone; an unreadable file is removed (it cannot name anything we could safely stop).
    """
    reports = []
    for path in sorted(Path(folder).glob("sweep-*.json")):
        payload = _read(path)
        if payload is None:
            path.unlink(missing_ok=True)
            continue
        driver = OwnedProcess(**payload["driver"])
        if driver.alive() is not None:
            continue
        processes = [OwnedProcess(**p) for p in payload.get("processes", [])]
        reports.append(StaleSweep(driver.pid, payload.get("started", "?"), stop_processes(processes)))
        path.unlink(missing_ok=True)
    return reports


def _read(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text())
        OwnedProcess(**payload["driver"])
        return payload
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
