"""Start (and stop, by PID) a local Prefect API server when none is configured.

Ray workers must report to a real Prefect API: with the ephemeral API each worker starts its own
temporary server (docs/operations.md, "Services"). So ``tensorllm sweep`` uses ``PREFECT_API_URL`` when it
is set, and otherwise starts ``prefect server start`` on a free loopback port with a project-local
``PREFECT_HOME`` (``runs/prefect``; its database and task-result cache survive between runs), waits
for ``/api/health``, and stops exactly that process when done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


def set_quiet_defaults(prefect_home: Path | None = None) -> None:
    """Telemetry off and sane timeouts, without overriding anything the user set; when stderr is not a
    terminal (a log file, CI), no ANSI colour codes around the worker-log prefixes that Ray forwards."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if prefect_home is not None:
        os.environ.setdefault("PREFECT_HOME", str(prefect_home.resolve()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api_url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the Prefect API at {api_url} was not healthy after {timeout:.0f}s")


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 180, log_file: Path | None = None) -> Iterator[str]:
    """Run ``prefect server start`` for the duration of the block; yields its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home.resolve()), **{k: os.environ.get(k, v) for k, v in QUIET_DEFAULTS.items()}}
    env.pop("PREFECT_API_URL", None)
    out = open(log_file or home / "server.log", "ab")
    # Two servers starting at once on one new database both run its migrations, and one dies in alembic
    # ("Online migration expected to match one row"): measured with two sweeps started together. So a
    # server starts under a file lock in its home, released once it is healthy (its migrations are done).
    with _exclusive(home / "server-start.lock"):
        port = free_port()  # under the lock too: two servers never pick the same free port
        api_url = f"http://127.0.0.1:{port}/api"
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.info("Starting a local Prefect server (pid %d) at %s", process.pid, api_url)
        try:
            wait_healthy(api_url, timeout, process)
        except BaseException:
            stop_process(process)
            out.close()
            raise
    try:
        yield api_url
    finally:
        stop_process(process)
        out.close()


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process this program started, by its PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block (across processes; released if we die)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def drain_prefect_clients(timeout: float = 15) -> None:
    """Send the logs and events still queued in this process before the server goes away; otherwise
    Prefect's exit handlers retry against a stopped server and the process lingers for a minute."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
    except ImportError:  # prefect never imported in this process
        return
    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


@contextlib.contextmanager
def prefect_api(project_root: Path) -> Iterator[str]:
    """``PREFECT_API_URL`` if set (a server you run), else a local server started for this block."""
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    with prefect_server(project_root / "runs" / "prefect") as api_url:
        previous_home = os.environ.get("PREFECT_HOME")
        os.environ["PREFECT_API_URL"] = api_url
        os.environ["PREFECT_HOME"] = str((project_root / "runs" / "prefect").resolve())
        try:
            yield api_url
        finally:  # also after an interrupt: an undrained client retries a stopped server at exit for a minute
            drain_prefect_clients()
            os.environ.pop("PREFECT_API_URL", None)
            if previous_home is None:
                os.environ.pop("PREFECT_HOME", None)
            else:
                os.environ["PREFECT_HOME"] = previous_home
