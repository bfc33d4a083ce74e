"""Resource choices for tasks: the Ray request from the flow, and the device and threads inside a worker.

The flow asks Ray for each task's CPUs and GPUs (:func:`ray_request`; fractions allowed, e.g. 0.25 GPU per
evaluation, so four evaluations share one card). A task asks for a GPU only when the cluster has one: on a
GPU-less cluster a ``num_gpus=1`` request stays PENDING forever instead of failing (docs/operations.md,
"Services"). Inside the worker, :func:`use_assigned_threads` sizes torch's thread pool to the CPUs Ray gave the
task: Ray sets ``OMP_NUM_THREADS`` once per worker process (from its first task, 1 by default), and a worker
runs many tasks, so a task that was given the whole machine would otherwise still run on one thread.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from collections.abc import Iterator

log = logging.getLogger(__name__)


def best_device() -> str:
    """``cuda`` when this worker sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cluster() -> dict[str, float]:
    try:
        import ray

        if ray.is_initialized():
            return dict(ray.cluster_resources())
    except Exception:  # no Ray (e.g. a thread-pool runner in tests): CPUs only
        pass
    return {}


def ray_gpus_per_task() -> float:
    """1 when the connected Ray cluster has at least one GPU, else 0 (call inside a Ray-backed flow)."""
    return 1 if _cluster().get("GPU", 0) >= 1 else 0


def node_cpus() -> float:
    """The CPUs of the connected Ray cluster's largest node (0 without Ray): the most one task can be given."""
    try:
        import ray

        if ray.is_initialized():
            return max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0)
    except Exception:  # no Ray here
        pass
    return 0.0


def ray_request(cpus: float, gpus: float | None) -> dict[str, float]:
    """``remote_options`` keywords of one task: ``cpus`` CPUs and ``gpus`` GPUs (None: one GPU when the cluster
    has one, else none). A GPU request on a GPU-less cluster would wait forever: it is refused here at once."""
    if gpus is None:
        gpus = ray_gpus_per_task()
    cluster = _cluster()
    if gpus > 0 and cluster and cluster.get("GPU", 0) < gpus:
        raise ValueError(f"{gpus:g} GPU per task was asked for, but the Ray cluster has {cluster.get('GPU', 0):g} "
                         "GPUs; ask for 0 (CPU only) or at most what the cluster has")
    if cluster and cpus > cluster.get("CPU", 0):
        raise ValueError(f"{cpus:g} CPUs per task was asked for, but the Ray cluster has {cluster.get('CPU', 0):g}; "
                         "ask for at most what it has")
    return {"num_cpus": cpus, "num_gpus": gpus}


def assigned_cpus() -> float | None:
    """The CPUs Ray assigned to the running task (None outside a Ray task, e.g. a thread-pool runner)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        context = ray.get_runtime_context()
        if context.worker.mode != ray.WORKER_MODE:
            return None
        return float(context.get_assigned_resources().get("CPU", 0)) or None
    except Exception:  # no Ray here
        return None


@contextmanager
def use_assigned_threads() -> Iterator[int | None]:
    """Inside a Ray task: torch uses ``floor(assigned CPUs)`` threads (at least 1) for the body, then the
    previous count again; yields that count. Elsewhere (no Ray task) nothing changes and it yields None."""
    cpus = assigned_cpus()
    if cpus is None:
        yield None
        return
    import torch

    threads, previous = max(1, math.floor(cpus)), torch.get_num_threads()
    torch.set_num_threads(threads)
    log.info("this task has %g CPUs from Ray: torch uses %d threads", cpus, threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
