"""A multi-node Ray cluster on this machine, started and stopped by this process alone.

A head plus ``nodes - 1`` more nodes, each a ``ray start`` of its own (the second with ``--address`` of
the head), each with its own CPUs, a custom resource naming it (``node_0``, ``node_1``, ...), its own temp
dir and agent ports. What makes it work on Ray 2.60 (docs/scale.md, "Two nodes"):

* **Token auth for every process**: a ``--head`` turns token auth on by itself when ``~/.ray/auth_token``
  exists, but a node joining by ``--address`` and a driver connecting to an explicit address do not, and
  then fail after ~20 s. So a fresh token is written to the cluster's folder and ``RAY_AUTH_MODE=token`` +
  ``RAY_AUTH_TOKEN_PATH`` are given to every ``ray start`` and, while the block runs, to this process (the
  Prefect flow's driver) -- never touching ``~/.ray``. Ray caches the token of the first cluster this
  process talked to, so it is reloaded on entry and on exit (:func:`reload_ray_auth`).
* **Own ports**: free loopback ports for the GCS, dashboard, client server and each node's agents (two
  nodes on the default dashboard-agent port make the second one run without its agent).
* **Stopped by PID**: ``ray stop`` kills every Ray process on the host by name, including other people's
  clusters. Each ``ray start`` runs in a new session (``start_new_session``), so every process of a node
  shares that session id (SID); stopping sends SIGTERM to the node's raylet first, then to the rest of the
  session except ``gcs_server``, then to ``gcs_server``, and SIGKILL to anything left after a grace period.
  Worker nodes are stopped before the head.

Usage::

    with LocalRayCluster(nodes=2, cpus_per_node=1, folder=Path("runs/cluster")) as cluster:
        compress_sweep(..., ray_address=cluster.address)
        print(cluster.tasks_per_node("decompose-layer"))
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .services import free_port

log = logging.getLogger(__name__)


@dataclass
class RayNode:
    """One started node: its name (also a custom resource of 1), its session id and temp dir."""

    name: str
    sid: int
    temp_dir: Path
    cpus: int


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process whose session id is ``sid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces, so split after the last ')'
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:
            out.append((int(entry.name), comm))
    return out


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_session(sid: int, grace: float = 20) -> int:
    """Stop every process of one node's session: raylet, then the rest but gcs_server, then gcs_server;
    SIGKILL for anything still there. Returns how many processes were left for SIGKILL."""
    for names in (lambda c: c == "raylet", lambda c: c != "gcs_server", lambda c: True):
        pids = [pid for pid, comm in session_processes(sid) if names(comm)]
        _signal(pids, signal.SIGTERM)
        for pid in pids:
            _wait_gone(pid, grace)
    left = [pid for pid, _ in session_processes(sid)]
    _signal(left, signal.SIGKILL)
    for pid in left:
        _wait_gone(pid, 5)
    return len(left)


def reload_ray_auth() -> None:
    """Make this process read ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH`` again.

    Ray caches both in C++ the first time it needs them: after a local ``ray.init()`` in this process
    (which, on Ray 2.60, turns token auth on with ``~/.ray/auth_token``), connecting to a cluster with
    another token fails with ``InvalidAuthToken``, seen only as "Failed to connect to Ray cluster at ...".
    Found when the two-node test ran after other Ray tests in one pytest process.

    Ray has no public call for this: the project's only private import (``ray._raylet``) is here, checked on the
    installed Ray by tests/flows/test_private_api_pins.py, and pyproject.toml caps ``ray`` below the next minor
    release until that test passes on it."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass
class LocalRayCluster:
    """``nodes`` Ray nodes on this machine with ``cpus_per_node`` CPUs each (see the module docstring)."""

    nodes: int = 2
    cpus_per_node: int = 1
    folder: Path | None = None  # token and logs; a temporary folder when None
    object_store_bytes: int = 200_000_000
    include_dashboard: bool = True  # the state API (which node ran which task) needs it
    started: list[RayNode] = field(default_factory=list)
    address: str | None = None
    dashboard_url: str | None = None
    _env_before: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"nodes must be an integer >= 1 (the head counts as one); got {self.nodes!r}")
        if not isinstance(self.cpus_per_node, int) or self.cpus_per_node < 1:
            raise ValueError(f"cpus_per_node must be an integer >= 1; got {self.cpus_per_node!r}")

    # ---- start / stop ------------------------------------------------------------------------------
    def __enter__(self) -> LocalRayCluster:
        self.folder = Path(self.folder or tempfile.mkdtemp(prefix="tensorllm-ray-")).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        token = self.folder / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
        self._env_before = {k: os.environ.get(k) for k in auth}
        os.environ.update(auth)  # this process is the driver: it must present the token too
        reload_ray_auth()
        try:
            for i in range(self.nodes):
                self._start_node_retrying(i)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_node_retrying(self, index: int, attempts: int = 3) -> None:
        """``ray start`` gives a raylet a fixed 30 s to register with the GCS; on a loaded machine it can miss
        that. A failed start's session is stopped (by its SID) and the node started again."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_node(index)
            except RuntimeError as exc:
                node = self.started.pop()
                stop_session(node.sid)
                shutil.rmtree(node.temp_dir, ignore_errors=True)
                if attempt == attempts:
                    raise
                log.warning("Ray node_%d did not start (attempt %d of %d), retrying: %s", index, attempt, attempts,
                            str(exc).splitlines()[-1])

    def _start_node(self, index: int) -> None:
        # the socket paths of a node live in its temp dir and must stay under ~100 characters: use /tmp
        temp_dir = Path(tempfile.mkdtemp(prefix=f"trl-ray{index}-", dir="/tmp"))
        name = f"node_{index}"
        ray = str(Path(sys.executable).with_name("ray"))
        common = ["--num-cpus", str(self.cpus_per_node), "--num-gpus", "0", "--resources", f'{{"{name}": 1}}',
                  "--temp-dir", str(temp_dir), "--object-store-memory", str(self.object_store_bytes),
                  "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                  "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                  "--disable-usage-stats"]
        if index == 0:
            port = free_port()
            dashboard = free_port()
            cmd = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                   "--include-dashboard", str(self.include_dashboard).lower(), "--dashboard-host", "127.0.0.1",
                   "--dashboard-port", str(dashboard), "--ray-client-server-port", str(free_port()), *common]
        else:
            cmd = [ray, "start", "--address", self.address, *common]
        start = time.perf_counter()
        with open(self.folder / f"{name}-start.log", "ab") as out:
            # a new session per node: its SID is this Popen's pid, shared by every process the node starts
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=os.environ.copy())
            self.started.append(RayNode(name, process.pid, temp_dir, self.cpus_per_node))
            code = process.wait(timeout=180)
        if code != 0:
            tail = (self.folder / f"{name}-start.log").read_text()[-1500:]
            raise RuntimeError(f"`ray start` of {name} exited with {code}; its log ends:\n{tail}")
        if index == 0:
            self.address = f"127.0.0.1:{port}"
            self.dashboard_url = f"http://127.0.0.1:{dashboard}" if self.include_dashboard else None
        log.info("Ray %s started in %.1fs (session %d, %d CPU)", name, time.perf_counter() - start, process.pid,
                 self.cpus_per_node)

    def __exit__(self, *exc) -> None:
        self._disconnect()
        for node in reversed(self.started):  # worker nodes first, the head last
            killed = stop_session(node.sid)
            shutil.rmtree(node.temp_dir, ignore_errors=True)  # sockets, session logs: nothing outlives the node
            log.info("Ray %s stopped%s", node.name, f" ({killed} needed SIGKILL)" if killed else "")
        for key, value in self._env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reload_ray_auth()

    # ---- inspection --------------------------------------------------------------------------------
    def pids(self) -> dict[str, list[int]]:
        """node name -> the pids of its session (raylet, agents, workers, ...)."""
        return {n.name: [pid for pid, _ in session_processes(n.sid)] for n in self.started}

    def node_names(self) -> dict[str, str]:
        """Ray node id -> our node name (``node_0`` is the head), from each node's custom resource."""
        import ray

        self._connect()
        names = {}
        for node in ray.nodes():
            tag = next((r for r in node["Resources"] if r.startswith("node_") and r[5:].isdigit()), None)
            if tag is not None:
                names[node["NodeID"]] = tag
        return names

    def tasks(self, name: str | None = None) -> list[dict]:
        """Finished Ray tasks (optionally only those named ``name``: prefect-ray names them by the Prefect
        task's name): node, worker pid, start and end (epoch s), state. Needs the dashboard (state API)."""
        from ray.util.state import list_tasks

        names = self.node_names()
        filters = [("name", "=", name)] if name else None
        rows = []
        for t in list_tasks(address=self.dashboard_url, filters=filters, detail=True, limit=10_000,
                            raise_on_missing_output=False):
            start, end = t.start_time_ms, t.end_time_ms
            rows.append({"name": t.name, "node": names.get(t.node_id, t.node_id), "worker_pid": t.worker_pid,
                         "state": t.state, "attempt": t.attempt_number,
                         "start": start / 1000 if start else None, "end": end / 1000 if end else None})
        return rows

    def tasks_per_node(self, name: str | None = None) -> dict[str, int]:
        """How many finished tasks (named ``name``) each node ran."""
        counts = Counter(t["node"] for t in self.tasks(name) if t["state"] == "FINISHED")
        return {n.name: counts.get(n.name, 0) for n in self.started}

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)

    def _disconnect(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if ray.is_initialized():
            ray.shutdown()
