"""lm-eval task: lm-evaluation-harness tasks on one variant (the base with its artifacts applied).

The sweep runs it on the champion it promotes (``SweepConfig.lm_eval_tasks``), on a Ray worker like every
evaluation; the worker's cached base model is used and restored afterwards (:mod:`tasks.model_cache`).
Never cached: it runs once per promotion, and lm-eval's standard tasks read hub data that may change.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tensorllm.artifact import apply_artifacts, load_artifact
from tensorllm.evaluation.lm_eval_runner import run_lm_eval
from tensorllm.models import resolve_model

from .model_cache import base_model
from .resources import best_device


@task(name="lm-eval", cache_policy=NO_CACHE, task_run_name="lm-eval-v{version}")
def lm_eval_task(model: str, artifacts: list[str], tasks: list[str], include_path: str | None, limit: int | None,
                 batch_size: int, version: int) -> dict:
    """``run_lm_eval`` on the base with ``artifacts`` applied; returns ``LmEvalResult.to_dict()``. ``version``
    (the registered version) only names the task run."""
    with base_model(resolve_model(model), best_device()) as (base, tokenizer):
        with apply_artifacts(base, [load_artifact(p) for p in artifacts]):
            return run_lm_eval(base, tokenizer, tasks, include_path=include_path, limit=limit,
                               batch_size=batch_size).to_dict()
