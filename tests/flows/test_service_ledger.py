"""The service ledger stops exactly the processes a sweep started: on exit, and after the sweep was SIGKILLed.

Real processes, no services: a "sweep" here is a Python process that starts a child which ignores
SIGTERM (as Ray's agents do) and a grandchild that is re-parented to init (as Ray's agents are when
their raylet dies first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from flows.runtime.service_ledger import (OwnedProcess, ServiceLedger, clean_stale, running_sweeps, start_since_boot,
                                  stop_processes)

#: a child that ignores SIGTERM and sleeps (Ray's dashboard and runtime-env agents ignore SIGTERM)
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_exit_stops_descendants_even_those_that_ignore_sigterm(tmp_path):
    # started before the block (as a test session's own servers are): not the sweep's, never stopped
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ledger = ServiceLedger(tmp_path, interval=0.2)
    try:
        _run_block(ledger)
        assert older.poll() is None
    finally:
        older.kill()
        older.wait()


def _run_block(ledger: ServiceLedger) -> None:
    with ledger:
        stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN])
        wait_for(lambda: any(p.pid == stubborn.pid for p in (ledger.snapshot() or ledger.seen.values())),
                 what="the child in the ledger")
        record = json.loads(ledger.path.read_text())
        assert stubborn.pid in [p["pid"] for p in record["processes"]]  # on disk, for a later run to find
    # gone although it ignored SIGTERM: SIGKILL after the grace period (psutil reaped it, so no return code)
    assert ledger.stopped[0].alive() is None and not psutil.pid_exists(stubborn.pid)
    assert [p.pid for p in ledger.stopped] == [stubborn.pid]
    assert not ledger.path.exists()  # a clean exit leaves no record behind


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_a_sigkilled_sweeps_processes_are_stopped_by_the_next_run(tmp_path):
    """The "sweep" records a child and a grandchild, then is SIGKILLed; clean_stale stops both."""
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        from pathlib import Path
        from flows.runtime.service_ledger import ServiceLedger
        with ServiceLedger(Path({str(tmp_path)!r}), interval=0.2) as ledger:
            # a grandchild that outlives its parent (re-parented to init), as Ray's agents do
            subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', {STUBBORN!r}]); time.sleep(1)"]).wait()
            subprocess.Popen([sys.executable, "-c", {STUBBORN!r}])
            time.sleep(600)
    """)
    sweep = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        _kill_and_clean(sweep, tmp_path)
    finally:  # on a failure, stop what this test started
        sweep.kill()
        clean_stale(tmp_path)


def _kill_and_clean(sweep: subprocess.Popen, tmp_path: Path) -> None:
    path = tmp_path / f"sweep-{sweep.pid}.json"
    def stubborn_recorded() -> int:
        return path.exists() and sum("SIG_IGN" in p["command"] and "Popen" not in p["command"]
                                     for p in json.loads(path.read_text())["processes"]) >= 2

    recorded = wait_for(stubborn_recorded, what="the child and the orphaned grandchild in the ledger")
    assert recorded
    assert [s["driver"]["pid"] for s in running_sweeps(tmp_path)] == [sweep.pid]  # alive: not stale
    assert clean_stale(tmp_path) == []  # a running sweep is never touched
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    left = [OwnedProcess(**p) for p in json.loads(path.read_text())["processes"]]
    alive_before = [p.pid for p in left if p.alive()]
    assert alive_before, "the killed sweep's processes outlive it (the problem the ledger solves)"
    reports = clean_stale(tmp_path)
    assert [r.driver_pid for r in reports] == [sweep.pid]
    assert sorted(p.pid for p in reports[0].stopped) == sorted(alive_before)
    assert "stopped" in reports[0].sentence() and str(sweep.pid) in reports[0].sentence()
    assert all(p.alive() is None for p in left)
    assert not path.exists()


def test_a_recycled_pid_is_never_signalled():
    """A record whose start time differs from the live process with that pid names another process."""
    me = psutil.Process()
    impostor = OwnedProcess(me.pid, start_since_boot(me) - 1000.0, "an old process that had our pid")
    assert impostor.alive() is None
    assert stop_processes([impostor], grace=0.1) == []  # and we are still running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the boot-relative start time is Linux's /proc")
def test_a_process_is_recognised_after_the_wall_clock_moved(monkeypatch):
    """NTP moves the boot time psutil adds to every start time (the CI failure: no recorded process was
    recognised after a SIGKILL); the ledger's identity does not depend on it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record = OwnedProcess.of(psutil.Process(child.pid))
        import psutil._pslinux as linux

        real_boot_time = linux.boot_time
        monkeypatch.setattr(linux, "boot_time", lambda: real_boot_time() + 1.0)  # the clock stepped 1 s
        assert abs(psutil.Process(child.pid).create_time() - (real_boot_time() + record.started)) > 0.5
        assert record.alive() is not None and record.alive().pid == child.pid
        assert [p.pid for p in stop_processes([record], grace=5)] == [child.pid]
    finally:
        child.kill()
        child.wait()


def test_the_start_time_since_boot_matches_psutil_on_a_steady_clock():
    me = psutil.Process()
    assert abs(psutil.boot_time() + start_since_boot(me) - me.create_time()) < 1.0


def test_an_unreadable_record_is_removed_without_signalling_anything(tmp_path):
    (tmp_path / "sweep-123.json").write_text("{ not json")
    assert clean_stale(tmp_path) == []
    assert not (tmp_path / "sweep-123.json").exists()


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_supervised_exit_codes_follow_the_shell_convention(signal_name, code):
    from flows.runtime.supervise import SupervisedRun

    assert SupervisedRun(0, signal_name).exit_code == code  # 128 + the signal's number
    assert SupervisedRun(2).exit_code == 2  # no signal: the driver's own code
