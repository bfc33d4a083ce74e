"""Export task: write a composed variant as a factorised model folder (what users deploy).

``model_identity`` and ``code_version`` are inputs only so that they enter the cache key.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tensorllm.export import export_variant
from tensorllm.model_card import card_metrics

from .caching import CACHE_EXPIRATION, RESULT_SERIALIZER, export_cache_key


def export_run_name(parameters: dict) -> str:
    """``export-<folder name>`` (e.g. ``export-v12-greedy``): the run's name in the Prefect UI, without the path."""
    return f"export-{Path(parameters['out_dir']).name}"


@task(name="export-factorised", cache_key_fn=export_cache_key, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, result_serializer=RESULT_SERIALIZER, task_run_name=export_run_name)
def export_task(model: str, artifacts: list[str], out_dir: str, model_identity: str, code_version: str,
                results: dict[str, dict] | None = None) -> dict:
    """``export_variant(..., format="factorised")``: the folder (in the base's dtype), its bytes on disk and how
    each layer was stored; ``results`` (dataset -> EvalResult dict) go into the model card with their intervals.

    The folder is the sweep's own: a rerun that recomputes (new code, changed inputs) replaces it, atomically (a
    kill leaves the old folder or the new one). A cached result is used only while the folder still matches its
    manifest (:func:`tasks.result_integrity.check_files`); otherwise the export runs again."""
    return export_variant(model, artifacts, out_dir, format="factorised", metrics=card_metrics(results or {}),
                          overwrite=True)
