"""The sweep's entry flow: typed parameters (the Prefect UI renders them as a form), every check first, then
the work as a sub-flow on Ray.

``compress_sweep`` validates its parameters (:func:`flows.validate.validate_sweep`: a bad value fails the run
with one line before anything starts) and runs :func:`flows.sweep.run_sweep` (one model: decompose, evaluate,
register, promote, export) or :func:`flows.batch.run_batch` (several models, or decomposition only) on a
``RayTaskRunner`` (:func:`flows.runtime.ray_runner.ray_runner`: ``ray_address``, else ``RAY_ADDRESS``, else a
private local Ray).

Usage::

    python -m flows.compress_sweep            # default sweep (needs PREFECT_API_URL; `tensorllm sweep` sets one up)
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from .batch import run_batch
from .config import (DEFAULT_GROUPING, DEFAULT_RANKS, DEFAULT_TARGETS, PERPLEXITY_TOKENS, ComposeStrategy, DatasetName, Grouping,
                     LaserSpec, LayoutName, Objective, SelectionMetric)
from .parent_artifact import publish_decision
from .runtime.ray_runner import ray_runner
from .sweep import run_sweep
from .validate import validate_sweep


@flow(name="compress-sweep")
def compress_sweep(
    model: str = "smollm2-135m",
    datasets: list[DatasetName] = ["qa_wikidata"],  # noqa: B006 (Prefect copies parameters)
    layers: str | list[int] = "last 4",
    ranks: list[tuple[float, float, float]] = DEFAULT_RANKS,  # noqa: B006
    grouping: Grouping = DEFAULT_GROUPING,
    layout: LayoutName | None = None,
    balance: Literal["none", "norms"] = "norms",
    fit: Literal["weights", "activations"] = "weights",
    calibration_prompts: int = 128,
    laser: list[LaserSpec] = [],  # noqa: B006
    val_limit: int | None = 1000,
    test_limit: int | None = 400,
    generate: bool = True,
    selection_metric: SelectionMetric = "top1_accuracy",
    test_top_k: int = 2,
    transfer_dataset: DatasetName | None = "counterfact",
    objective: Objective = "compress",
    alpha: float = 0.05,
    margin: float = 0.02,
    relative_margin: float | None = None,
    loss_margin: float = 0.05,
    compose: list[ComposeStrategy] = ["uniform", "allocate"],  # noqa: B006
    targets: list[float] = DEFAULT_TARGETS,  # noqa: B006
    export_best: bool = True,
    lm_eval_tasks: list[str] | None = None,
    lm_eval_include: str | None = None,
    lm_eval_limit: int | None = None,
    perplexity_tokens: int = PERPLEXITY_TOKENS,
    registered_model: str | None = None,
    ray_address: str | None = None,
    mlflow_tracking_uri: str | None = None,
    artifacts_root: str = "runs/artifacts",
    batch_size: int = 16,
    decompose_cpus: float = 1.0,
    decompose_gpus: float | None = None,
    evaluate_cpus: float | None = None,
    evaluate_gpus: float | None = None,
    guard_parallel: int = 2,
    evaluate: Literal["full", "none"] = "full",
    models: list[str] = [],  # noqa: B006
) -> dict:
    """Sweep TensorLLM ranks over layers, compose whole-model variants, register every variant in MLflow,
    promote one by the objective's rule and export the best composed model.

    The parameters are the fields of :class:`flows.config.SweepConfig`, with the same names, types and
    defaults (a test holds them equal); their descriptions are there, and ``tensorllm sweep --help`` shows them.
    """
    config = validate_sweep(locals())  # every check first: a bad parameter fails the run with one line
    batch = config.models or config.evaluate == "none"  # a batch of models, or decomposition only: flows.batch
    sub_flow = run_batch if batch else run_sweep
    state = sub_flow.with_options(task_runner=ray_runner(config.ray_address))(config, return_state=True)
    summary = state.result()  # raises the sub-flow's error, as calling it directly did
    publish_decision(summary, state.state_details.flow_run_id, sub_flow.name)  # this run: decision + link
    return summary


if __name__ == "__main__":
    compress_sweep()
