"""What the sweep flow registers and reports: registry records, flat metrics, the summary.

Pure functions over the flow's variant dicts (name, layer, ranks, artifacts, params, summary, val, test,
paired, size), kept out of :mod:`flows.compress_sweep` so that the DAG reads on its own.
"""

from __future__ import annotations

from tensorllm.composed import WholeModelSize


def mean_metric(per_dataset: dict[str, dict], metric: str) -> float | None:
    """Mean of ``metric`` over datasets (None when a dataset did not measure it, e.g. accuracy without generation)."""
    values = [r[metric] for r in per_dataset.values()]
    return None if any(v is None for v in values) else sum(values) / len(values)


def flat_metrics(per_dataset: dict[str, dict], split: str) -> dict[str, float]:
    """``{split}_{metric}`` (mean over datasets) plus ``{dataset}.{split}_{metric}`` for each dataset."""
    out: dict[str, float] = {}
    for name in ("accuracy", "top1_accuracy", "loss"):
        value = mean_metric(per_dataset, name)
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


def paired_columns(result: dict, metric: str) -> list[str]:
    """Per-example correctness columns to compare: the selection's, and generation accuracy when measured."""
    columns = ["top1_correct"] if metric == "top1_accuracy" else []
    if result["accuracy"] is not None:
        columns.append("correct")
    return columns or ["top1_correct"]


def paired_metrics(paired: dict[str, dict], split: str = "test") -> dict[str, float]:
    """``{dataset}.{split}_vs_baseline.{column}.{stat}``: accuracy_diff, mcnemar_p, loss_diff, ..."""
    out = {}
    for dataset, by_column in paired.items():
        for column, stats in by_column.items():
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{dataset}.{split}_vs_baseline.{column}.{key}"] = value
    return out


def variant_record(v: dict, model: str, datasets: list[str], val_limit: int | None, common_tags: dict,
                   selection_metric: str, generate: bool) -> dict:
    """The registry record of a variant (fields of :class:`tensorllm.registry.VariantRecord`)."""
    metrics = flat_metrics(v["val"], "val")
    summary = v["summary"]
    for name in ("compression_ratio", "rel_error"):
        if summary.get(name) is not None:
            metrics[name] = summary[name]
    size: WholeModelSize | None = v.get("size")
    if size is not None:
        metrics.update({f"whole_model.{k}": value for k, value in size.metrics().items()})
    if summary.get("seconds") is not None:
        metrics["decompose_seconds"] = summary["seconds"]
    for name in ("converged", "hooi_iterations"):
        if summary.get(name) is not None:
            metrics[name] = float(summary[name])
    metrics["eval_seconds"] = sum(r.get("seconds", 0.0) for r in v["val"].values())
    tags = {**common_tags, "kind": "baseline" if not v["artifacts"] else "variant", "variant_name": v["name"],
            "variant_kind": v.get("kind", "layer"), "val_limit": str(val_limit), "generate": str(generate),
            "selection_metric": selection_metric}
    files = {f"{dataset}_val_examples.jsonl": r["examples"] for dataset, r in v["val"].items()}
    params = {"model": model, "datasets": ",".join(datasets), "val_limit": val_limit, **v["params"]}
    return {"key": v["key"], "name": v["name"], "base_model": model, "artifacts": v["artifacts"],
            "params": params, "metrics": metrics, "tags": tags, "files": files}


def summary_row(v: dict, metric: str) -> dict:
    """One row of the sweep summary (and of the variants table in Prefect and MLflow)."""
    size: WholeModelSize | None = v.get("size")
    return {"name": v["name"], "version": v.get("version"), "kind": v.get("kind", "layer"), "layer": v.get("layer"),
            "layers": v.get("layers"), "ranks": v.get("ranks"),
            "compression_ratio": v["summary"].get("compression_ratio"), "rel_error": v["summary"].get("rel_error"),
            "converged": v["summary"].get("converged"),
            "whole_model_attention_cr": size.attention_compression_ratio if size else None,
            "bytes_after": size.bytes_after if size else None,
            f"val_{metric}": mean_metric(v["val"], metric), "val_loss": mean_metric(v["val"], "loss"),
            **({f"test_{m}": mean_metric(v["test"], m) for m in ("accuracy", "top1_accuracy", "loss")} if "test" in v else {}),
            **({"paired": v["paired"]} if "paired" in v else {})}


def markdown_table(rows: list[dict], metric: str) -> str:
    """The variants as a markdown table (the flow run's Prefect artifact)."""
    key = f"val_{metric}"
    lines = [f"| variant | version | kind | layer CR | whole-model attention CR | {key} | val loss | test accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)
        lines.append(f"| {r['name']} | {fmt(r['version'], 'd')} | {r['kind']} | {fmt(r['compression_ratio'], '.2f')} | "
                     f"{fmt(r['whole_model_attention_cr'], '.3f')} | {fmt(r[key], '.4f')} | {fmt(r['val_loss'], '.4f')} | "
                     f"{fmt(r.get('test_accuracy'), '.4f')} |")
    return "\n".join(lines)
