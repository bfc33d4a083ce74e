"""The Ray a sweep's tasks run on: an existing cluster, or a private local one sized to this machine."""

from __future__ import annotations

import os


def ray_address(address: str | None) -> str | None:
    """The cluster to use: ``address`` when given, else ``$RAY_ADDRESS`` (Ray's own convention), else None (a
    private local Ray). ``"local"`` always means a private local Ray."""
    if address in (None, ""):
        address = os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def ray_runner(address: str | None):
    """A ``RayTaskRunner`` on :func:`ray_address` of ``address``: a private local Ray (all of this machine's CPUs,
    no dashboard) when there is none, or the existing cluster at that address."""
    from prefect_ray import RayTaskRunner  # here: validation imports ray_address without Prefect

    address = ray_address(address)
    if address is None:
        return RayTaskRunner(address="local", init_kwargs={
            "num_cpus": os.cpu_count() or 2, "include_dashboard": False,
            "runtime_env": {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}})
    return RayTaskRunner(address=address)
