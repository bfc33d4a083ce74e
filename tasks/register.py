"""MLflow tasks: register a variant, add metrics, promote, log the sweep report.

They run in the flow process (called directly, not submitted to Ray): the sqlite store wants one writer.
Registration is idempotent (a variant key registered before returns its existing version), so they
are not cached by Prefect.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tensorllm.plots import accuracy_vs_compression, compression_front, layer_rank_heatmap
from tensorllm.registry import Registry, VariantRecord


@task(name="register-variant", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      task_run_name="register-{record[name]}")
def register_variant_task(tracking_uri: str | None, registered_model: str, record: dict) -> int:
    return Registry(tracking_uri).register_variant(VariantRecord(**record), registered_model)


@task(name="update-metrics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="metrics-v{version}")
def update_metrics_task(tracking_uri: str | None, registered_model: str, version: int, metrics: dict) -> None:
    Registry(tracking_uri).update_metrics(registered_model, version, metrics)


@task(name="current-champion", cache_policy=NO_CACHE, task_run_name="champion-of-{registered_model}")
def champion_task(tracking_uri: str | None, registered_model: str) -> dict | None:
    return Registry(tracking_uri).champion(registered_model)


def promotion_run_name(parameters: dict) -> str:
    """``promote-v<N>`` or ``keep-champion``: what the task run did, readable in the Prefect UI."""
    return f"promote-v{parameters['version']}" if parameters["promote"] else "keep-champion"


@task(name="apply-promotion", cache_policy=NO_CACHE, task_run_name=promotion_run_name)
def apply_promotion_task(tracking_uri: str | None, registered_model: str, promote: bool, version: int | None,
                         tags: dict[str, str]) -> int | None:
    """Move the ``champion`` alias (or only record why not); returns the champion version afterwards."""
    registry = Registry(tracking_uri)
    if promote:
        registry.set_champion(registered_model, version, tags)
    else:
        registry.record_decision(registered_model, tags)
    champion = registry.champion(registered_model)
    return int(champion["version"]) if champion else None


@task(name="describe-version", cache_policy=NO_CACHE, task_run_name="describe-v{version}")
def describe_task(tracking_uri: str | None, registered_model: str, version: int, text: str) -> None:
    """Put the decision sentence on the version's MLflow page (its description)."""
    Registry(tracking_uri).describe(registered_model, version, text)


@task(name="log-sweep", cache_policy=NO_CACHE, task_run_name="sweep-report-{registered_model}")
def log_sweep_task(tracking_uri: str | None, registered_model: str, summary: dict, reports_dir: str, metric: str,
                   description: str | None = None, params: dict | None = None, config_file: str | None = None) -> str:
    """Draw the sweep's figures and log them with the summary as one MLflow run (``description``: the decision,
    ``params``: the sweep's parameters, ``config_file``: the effective configuration as a file that
    ``tensorllm sweep --config`` repeats, logged as ``sweep_config.yaml``)."""
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = f"val_{metric}"
    rows = [r for r in summary["variants"] if r.get("ranks") and r.get("compression_ratio")]
    baseline = summary["baseline"][key]
    files = []
    if rows:
        files.append(accuracy_vs_compression(rows, baseline, key, out / "accuracy_vs_compression.png"))
        files.append(layer_rank_heatmap(rows, baseline, key, out / "layer_rank_heatmap.png"))
    whole = [r for r in summary["variants"] if r.get("whole_model_attention_cr")]
    if whole:
        files.append(compression_front(whole, baseline, key, out / "whole_model_front.png",
                                       champion=summary.get("champion_version")))
    if config_file is not None:
        (out / "sweep_config.yaml").write_text(config_file)
        files.append(out / "sweep_config.yaml")
    return Registry(tracking_uri).log_sweep(registered_model, summary, files, description=description, params=params)
