"""Decomposition tasks: one per layer (all rank configurations of it), and LASER on one FFN matrix.

Each reads only its layer's tensors from the checkpoint and writes artifacts to disk; it returns the
small :class:`tensorllm.decompose.ArtifactRecord` dicts. ``model_identity`` is not used in the body: it is an
input so that it enters the cache key, which also holds the code that computes the artifacts, the solver
settings and torch's version (:mod:`tasks.caching`), so a CLI or flow edit finds the cached result.
"""

from __future__ import annotations

from prefect import task

from tensorllm.activation_fit import Calibration
from tensorllm.decompose import decompose_layer, laser_layer

from .caching import CACHE_EXPIRATION, RESULT_SERIALIZER, decompose_cache_key, laser_cache_key
from .resources import best_device, use_assigned_threads


@task(name="decompose-layer", cache_key_fn=decompose_cache_key, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, result_serializer=RESULT_SERIALIZER, task_run_name="decompose-layer-{layer}")
def decompose_layer_task(model: str, layer: int, ranks: list, grouping: str, out_root: str,
                         model_identity: str, layout: str | None = None, balance: str = "none",
                         fit: str = "weights", calibration: dict | None = None) -> list[dict]:
    """``calibration`` (for ``fit="activations"``): ``{"datasets": [...], "n_prompts": N, "data_digests": {...}}``;
    the digests only key the task's cache (the library hashes the calibration data itself for the artifact)."""
    calib = None
    if fit == "activations":
        calib = Calibration(datasets=tuple(calibration["datasets"]), n_prompts=int(calibration["n_prompts"]))
    with use_assigned_threads():  # as many torch threads as Ray gave the task CPUs
        records = decompose_layer(model, layer, [tuple(r) for r in ranks], grouping=grouping, out_root=out_root,
                                  device=best_device(), layout=layout, balance=balance, fit=fit, calibration=calib)
    return [record.to_dict() for record in records]


@task(name="laser-ffn", cache_key_fn=laser_cache_key, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, result_serializer=RESULT_SERIALIZER, task_run_name="laser-{matrix}-layer-{layer}-rho-{rho}")
def laser_task(model: str, layer: int, matrix: str, rho: float, out_root: str, model_identity: str) -> dict:
    with use_assigned_threads():
        return laser_layer(model, layer, matrix, rho, out_root=out_root).to_dict()
