"""A batch of models, or decomposition only, in one flow run on one Ray cluster (issue 10, parts 3 and 5).

``compress_sweep(models=[...])`` or ``compress_sweep(evaluate="none")`` lands here (``SweepConfig.batch()``
gives one config per model, each with its own derived registered name, so each model gets its own
versions and its own champion):

* ``evaluate="none"``: the decompositions of **every model** are submitted at once -- one wave of
  ``decompose-layer`` tasks on the cluster, as many at a time as it has CPUs -- and as each model's
  tasks finish its whole-model variants are registered (:mod:`flows.decompose_only`; nothing is promoted).
* ``evaluate="full"``: the same wave of decompositions for every model first, then each model's full
  sweep (:func:`flows.sweep.run_sweep`) as a sub-flow on the same Ray, one model after the other;
  their decomposition tasks are cache hits (same inputs) and their evaluations fan out as in a single sweep.

The Ray runner is the caller's (``compress_sweep`` wraps this flow in ``ray_runner(config.ray_address)``);
the sub-flows' runners attach to the Ray that is already initialised in this process.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from .config import SweepConfig
from .decompose_only import register_decomposed, submit_decompositions
from .runtime.ray_runner import ray_runner
from .sweep import run_sweep


@flow(name="compress-batch-on-ray")
def run_batch(config: SweepConfig) -> dict:
    """Every model of ``config`` (``models``, else ``model``): decompose all, then register or sweep each."""
    logger = get_run_logger()
    configs = config.batch()
    logger.info("Batch of %d model(s), evaluate=%s: %s", len(configs), config.evaluate, [c.model for c in configs])
    submitted = {c.model: submit_decompositions(c) for c in configs}  # one wave for all models
    summaries: dict[str, dict] = {}
    for c in configs:
        layers, futures = submitted[c.model]
        records = {layer: f.result() for layer, f in futures.items()}
        if config.evaluate == "none":
            summaries[c.model] = register_decomposed(c, layers, records)
        else:
            summaries[c.model] = run_sweep.with_options(task_runner=ray_runner(c.ray_address))(c)
    if not config.models:
        return summaries[config.model]
    return {"mode": "batch", "evaluate": config.evaluate, "models": summaries}
