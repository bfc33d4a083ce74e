"""Two Ray nodes on this machine: the sweep runs on a head plus a second ``ray start --address`` node named by
``RAY_ADDRESS`` (Ray's own convention; no ``ray_address`` parameter given), both nodes run tasks, and both are
stopped by PID.

The cluster is :class:`flows.runtime.local_cluster.LocalRayCluster` (token auth of its own, own ports, each node in
its own session): what ``bench/scale.py --nodes 2`` uses on the 7B-shaped model. Here two tiny models, in
decompose-only mode, as one batch: 2 x 4 layer tasks, 1 CPU per node.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

RANKS = [(16, 8, 2), (8, 4, 2)]  # two rank configurations of the tiny (64, 16, 6, 2) kv tensor


def test_sweep_on_a_two_node_cluster_uses_both_nodes_and_stops_them_by_pid(prefect_api, tiny_llm, other_tiny_llm,
                                                                           tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from flows.compress_sweep import compress_sweep
    from flows.config import default_registered_name
    from flows.runtime.local_cluster import LocalRayCluster, session_processes

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    models = [str(tiny_llm), str(other_tiny_llm)]
    with LocalRayCluster(nodes=2, cpus_per_node=1, folder=tmp_path / "cluster") as cluster:
        sessions = [node.sid for node in cluster.started]
        pids = cluster.pids()
        assert all(pids[n] for n in ("node_0", "node_1"))  # each node has its own processes (raylet, agents)
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # the cluster, as Ray's users name it
        summary = compress_sweep(models=models, evaluate="none", layers="all", ranks=RANKS, grouping="kv",
                                 mlflow_tracking_uri=uri, artifacts_root=str(tmp_path / "artifacts"))
        per_node = cluster.tasks_per_node("decompose-layer")
    assert sum(per_node.values()) == 2 * 4  # one decompose task per layer of each model, none retried
    # 1 CPU per node and 8 tasks submitted at once: while the head's CPU is busy, Ray places tasks on node_1
    assert per_node["node_0"] >= 1 and per_node["node_1"] >= 1, per_node
    client = MlflowClient(uri)
    for model in models:  # the batch registered each model under its own name
        assert len(client.search_model_versions(f"name='{default_registered_name(model)}'")) == len(RANKS)
        assert summary["models"][model]["champion_version"] is None  # decompose only: nothing promoted
    # stopped by session id: no process of either node is left (and nothing else was signalled)
    assert [session_processes(sid) for sid in sessions] == [[], []]


def test_a_cluster_is_reachable_from_a_process_that_already_ran_a_local_ray(tmp_path):
    """Ray caches the auth token of the first cluster a process talks to (a local ``ray.init()`` uses
    ``~/.ray/auth_token``); the cluster's own token must replace it, or the connection fails with
    InvalidAuthToken. This is what failed the test above in CI, after other Ray tests in the same process."""
    import ray

    from flows.runtime.local_cluster import LocalRayCluster

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.shutdown()
    with LocalRayCluster(nodes=1, cpus_per_node=1, folder=tmp_path / "cluster", include_dashboard=False) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        finally:
            ray.shutdown()
