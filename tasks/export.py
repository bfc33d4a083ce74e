"""Export task: write a composed variant as a factorised model folder (what users deploy).

``model_identity`` and ``code_version`` are inputs only so that they enter the cache key.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tensorllm.export import export_variant
from tensorllm.model_card import card_metrics

from .caching import CACHE_EXPIRATION, PIPELINE_CACHE


def export_run_name(parameters: dict) -> str:
    """``export-<folder name>`` (e.g. ``export-v12-greedy``): the run's name in the Prefect UI, without the path."""
    return f"export-{Path(parameters['out_dir']).name}"


@task(name="export-factorised", cache_policy=PIPELINE_CACHE, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, task_run_name=export_run_name)
def export_task(model: str, artifacts: list[str], out_dir: str, model_identity: str, code_version: str,
                results: dict[str, dict] | None = None) -> dict:
    """``export_variant(..., format="factorised")``: the folder (in the base's dtype), its bytes on disk and how
    each layer was stored; ``results`` (dataset -> EvalResult dict) go into the model card with their intervals."""
    return export_variant(model, artifacts, out_dir, format="factorised", metrics=card_metrics(results or {}))
