"""Resource choices for tasks: the device inside a worker, and the Ray request from the flow.

A task asks Ray for a GPU only when the cluster has one: on a GPU-less cluster a ``num_gpus=1`` request
stays PENDING forever instead of failing (docs/operations.md, "Services").
"""

from __future__ import annotations


def best_device() -> str:
    """``cuda`` when this worker sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def ray_gpus_per_task() -> float:
    """1 when the connected Ray cluster has at least one GPU, else 0 (call inside a Ray-backed flow)."""
    try:
        import ray

        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1:
            return 1
    except Exception:  # no Ray (e.g. a thread-pool runner in tests): CPUs only
        pass
    return 0
