"""Run the sweep in a child process, so that SIGINT and SIGTERM always end with nothing left running.

Why a child: the sweep's own process cannot be relied on to clean up after a signal. ``ray.init``
replaces the SIGTERM handler (Ray's C++ failure handler prints a stack and kills the process: measured,
the Prefect server was then left running, re-parented to init), and a Ctrl-C on a terminal reaches
every process of the foreground group at once, the Prefect server and Ray's processes included, so
they die in any order while the driver is still using them.

So ``tensorllm sweep`` is two processes:

* the **supervisor** (this module, no Prefect or Ray imported), started once the parameters are
  validated, records every
  descendant in a :class:`~flows.runtime.service_ledger.ServiceLedger`, and on SIGINT or SIGTERM sends one
  SIGINT to the child and waits ``grace`` seconds for it to unwind; a second signal, or the end of the
  grace period, kills it. On exit the ledger stops whatever is still alive below it;
* the **driver** (the child, in its own session so that a terminal's Ctrl-C reaches only the
  supervisor) runs the flow. Its ``KeyboardInterrupt`` unwinds Prefect (the flow run is marked), the
  Prefect server's context manager and Ray's. On Linux it also gets SIGINT if the supervisor dies
  (``PR_SET_PDEATHSIG``), so it never runs on orphaned.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .service_ledger import OwnedProcess, ServiceLedger

log = logging.getLogger(__name__)

#: set in the driver's environment: "run the sweep here, do not supervise again"
DRIVER_ENV = "TENSORLLM_SWEEP_DRIVER"
#: seconds the driver gets to unwind after the forwarded SIGINT (stopping the Prefect server alone can
#: take up to 30 s) before it is killed
GRACE_SECONDS = 60.0


@dataclass
class SupervisedRun:
    """How the driver ended: its exit code, the signal that interrupted it (if any), what was stopped."""

    returncode: int
    signal_name: str | None = None
    stopped: list[OwnedProcess] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + signal number after an interruption, else the driver's code."""
        if self.signal_name == "SIGTERM":
            return 128 + signal.SIGTERM
        if self.signal_name == "SIGINT":
            return 128 + signal.SIGINT
        return self.returncode


def is_driver() -> bool:
    return os.environ.get(DRIVER_ENV) == "1"


def run_supervised(argv: list[str], ledger_dir: Path, grace: float = GRACE_SECONDS) -> SupervisedRun:
    """Run ``python -m tensorllm.cli *argv`` as the driver; returns once it and all it started are gone."""
    env = {**os.environ, DRIVER_ENV: "1"}
    command = [sys.executable, "-m", "tensorllm.cli", *argv]
    received: list[int] = []
    ledger = ServiceLedger(ledger_dir)
    # started before the ledger's thread: preexec_fn runs between fork and exec, safest with one thread
    child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    with ledger:
        def on_signal(signum, frame):
            received.append(signum)
            if len(received) == 1:
                _signal(child, signal.SIGINT)  # unwind: KeyboardInterrupt in the driver
            else:
                _signal(child, signal.SIGKILL)  # asked twice: stop now (the ledger stops the rest)

        main_thread = threading.current_thread() is threading.main_thread()  # signal.signal's requirement
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
        try:
            returncode = _wait(child, received, grace)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    name = signal.Signals(received[0]).name if received else None
    return SupervisedRun(returncode, name, ledger.stopped)


def _wait(child: subprocess.Popen, received: list[int], grace: float) -> int:
    """The driver's exit code; once a signal came, at most ``grace`` seconds more before it is killed."""
    deadline = None
    while True:
        if received and deadline is None:
            deadline = time.monotonic() + grace
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() > deadline:
                log.warning("the sweep did not stop within %.0fs of the signal; killing it", grace)
                _signal(child, signal.SIGKILL)
                deadline = float("inf")  # once


def _signal(child: subprocess.Popen, signum: int) -> None:
    try:
        child.send_signal(signum)
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGINT when the supervisor dies (PR_SET_PDEATHSIG = 1)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT, 0, 0, 0)
        except OSError:
            pass
