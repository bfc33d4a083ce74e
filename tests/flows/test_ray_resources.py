"""Ray resources the Ray way, on a real local Ray: the CPUs (fractions included) a flow asks for reach the
evaluation task (``ray.get_runtime_context().get_assigned_resources()``), and the task runs torch on that many
threads (at least one), whatever the worker process ran before; a GPU request a GPU-less cluster cannot meet is
refused at once instead of pending forever."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_requested_cpus_reach_the_evaluation_and_set_its_threads(prefect_api, tiny_llm, tmp_path):
    from prefect import flow
    from prefect_ray import RayTaskRunner
    from prefect_ray.context import remote_options

    from tasks.evaluate import evaluate_task
    from tasks.resources import node_cpus, ray_request

    def params(out: Path) -> dict:
        return dict(model=str(tiny_llm), artifacts=[], dataset="qa_wikidata", split="val", limit=4,
                    first_changed_layer=None, generate=False, batch_size=4, out_root=str(out),
                    model_identity="tiny", data_digest="d")

    @flow(task_runner=RayTaskRunner(address="local", init_kwargs={"num_cpus": 2, "include_dashboard": False}))
    def probe() -> dict:
        out = {"node_cpus": node_cpus()}
        # one after the other, so one worker process serves them all: each task sets its own threads
        for cpus in (2, 0.5, 1):
            with remote_options(**ray_request(cpus, None)):  # no GPU on this cluster: None asks for none
                out[cpus] = evaluate_task.submit(**params(tmp_path / f"cpus-{cpus}")).result()["resources"]
        with pytest.raises(ValueError, match=r"0.25 GPU per task was asked for, but the Ray cluster has 0 GPUs"):
            ray_request(1, 0.25)
        with pytest.raises(ValueError, match=r"3 CPUs per task was asked for, but the Ray cluster has 2"):
            ray_request(3, 0)
        return out

    got = probe()
    assert got["node_cpus"] == 2  # the local cluster's one node
    assert got[2] == {"cpus": 2.0, "threads": 2}  # a task given the whole machine uses all of it
    assert got[0.5] == {"cpus": 0.5, "threads": 1}  # a fraction of a CPU: one thread (floor, at least 1)
    assert got[1] == {"cpus": 1.0, "threads": 1}


def test_outside_ray_the_threads_are_left_alone():
    """A thread-pool runner or a plain call: no Ray task, so torch keeps its count (None is yielded)."""
    import torch

    from tasks.resources import assigned_cpus, use_assigned_threads

    before = torch.get_num_threads()
    assert assigned_cpus() is None
    with use_assigned_threads() as threads:
        assert threads is None and torch.get_num_threads() == before
