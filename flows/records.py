"""What travels through the sweep flow and what it registers and reports.

:class:`Variant` is the typed record of one variant (baseline, single-layer edit or composed model): what
it is, then what the flow learns about it stage by stage (validation results, paired statistics, whole-model
size, registry key and version, test results). The functions turn it into the registry record, flat
metrics and the summary; they are kept out of :mod:`flows.sweep` so that the DAG reads on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorllm.artifact import read_meta
from tensorllm.composed import WholeModelSize
from tensorllm.evaluation.data.user_spec import dataset_label
from tensorllm.identity import variant_key

from .compose import COMPOSED_KINDS, ComposedPlan
from .perplexity import summary_fields

KINDS = ("baseline", "layer", *COMPOSED_KINDS)


@dataclass
class Variant:
    """One variant of a sweep. The first block says what it is; the second is filled in by the flow."""

    name: str
    kind: str  # one of KINDS
    artifacts: list[str]
    params: dict  # registry params: kind, layer(s), ranks, grouping, laser
    layer: int | None = None  # single-layer variants
    layers: list[int] | None = None  # composed variants
    first_layer: int | None = None  # the first edited layer: evaluation replays the cached inputs from there
    ranks: list[int] | None = None
    decomposition: dict = field(default_factory=dict)  # ArtifactRecord of the single-layer edit
    extra_metrics: dict[str, float] = field(default_factory=dict)  # registered as they are (allocate: its target)
    extra_tags: dict[str, str] = field(default_factory=dict)

    val: dict[str, dict] = field(default_factory=dict)  # dataset -> EvalResult dict (validation)
    paired_val: dict | None = None  # PairedComparison dict vs the baseline, validation, datasets pooled
    guard_val: dict | None = None  # the same for validation generation accuracy (the policy's generation guard)
    guard_stopped: bool = False  # the rule's loss or generation guard refused it on measured evidence (the front plot)
    size: WholeModelSize | None = None
    key: str | None = None  # the registry key: content, see registry_key (the name is a label)
    version: int | None = None
    test: dict[str, dict] | None = None
    paired_test: dict[str, dict] | None = None  # dataset -> correctness column -> PairedComparison dict

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"variant {self.name!r}: kind must be one of {KINDS}; got {self.kind!r}")

    @property
    def composed(self) -> bool:
        return self.kind in COMPOSED_KINDS


def baseline_variant() -> Variant:
    return Variant(name="baseline", kind="baseline", artifacts=[], params={"kind": "baseline"})


def layer_variants(grouping: str, laser_specs: list, layers: list[int], decompositions: dict,
                   lasers: dict) -> list[Variant]:
    """Every single-layer variant: MHA ranks per layer; with LASER specs also LASER alone (Case 1) and
    MHA+LASER (Case 3). ``decompositions[layer]``: ArtifactRecord dicts; ``lasers[(layer, matrix, rho)]``: one."""
    out = []
    for layer in layers:
        for record in decompositions[layer]:
            r1, r2, r3 = record["ranks"]
            label = f"layer{layer:03d}-mha-{grouping}-r{r1}x{r2}x{r3}"
            common = dict(kind="layer", layer=layer, first_layer=layer, ranks=record["ranks"], decomposition=record)
            out.append(Variant(name=label, artifacts=[record["artifact"]], **common,
                               params={"kind": "tensorllm", "layer": layer, "ranks": f"{r1},{r2},{r3}",
                                       "grouping": grouping, "laser": "none"}))
            for spec in laser_specs:
                laser_record = lasers[(layer, spec.matrix, spec.rho)]
                out.append(Variant(name=f"{label}+laser-{spec.matrix}-{spec.rho}",
                                   artifacts=[record["artifact"], laser_record["artifact"]], **common,
                                   params={"kind": "tensorllm+laser", "layer": layer, "ranks": f"{r1},{r2},{r3}",
                                           "grouping": grouping, "laser": f"{spec.matrix}:{spec.rho}"}))
        for spec in laser_specs:
            laser_record = lasers[(layer, spec.matrix, spec.rho)]
            out.append(Variant(name=f"layer{layer:03d}-laser-{spec.matrix}-{spec.rho}", kind="layer", layer=layer,
                               first_layer=layer, decomposition=laser_record, artifacts=[laser_record["artifact"]],
                               params={"kind": "laser", "layer": layer, "ranks": "none", "grouping": "none",
                                       "laser": f"{spec.matrix}:{spec.rho}"}))
    return out


def composed_variant(plan: ComposedPlan) -> Variant:
    return Variant(name=plan.name, kind=plan.kind, layers=plan.layers, first_layer=plan.first_layer,
                   artifacts=plan.artifacts, extra_metrics=dict(plan.metrics), extra_tags=dict(plan.tags),
                   params={"kind": f"composed-{plan.kind}", "layers": ",".join(map(str, plan.layers)),
                           "ranks": ";".join(f"{e.layer}:{','.join(map(str, e.ranks))}" for e in plan.edits)})


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
        prefix = f"{dataset_label(dataset)}.{split}"  # your own data: its name, never its path
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
                    out[f"{dataset_label(dataset)}.{split}_vs_baseline.{column}.{key}"] = value
    return out


def evaluation_settings(config, data_digests: dict[str, str]) -> dict:
    """What a sweep's registered metrics depend on besides the weights (part of every variant's registry key):
    the datasets and their files' digests, validation and test sizes, generation, the selection metric (it
    decides which evaluations run) and the batch size (padding moves the numbers). The evaluation code and
    library versions are in the evaluation's cache key (tasks.caching), not in the variant's identity: the
    same weights measured again by newer code stay one version."""
    return {"datasets": list(config.datasets), "data": {d: data_digests[d] for d in config.datasets},
            "val_limit": config.val_limit, "test_limit": config.test_limit, "generate": config.generate,
            "selection_metric": config.selection_metric, "batch_size": config.batch_size}


def registry_key(v: Variant, model_identity: str, evaluation: dict) -> str:
    """The variant's registry key: the base model's identity plus its artifacts' content digests, the
    evaluation settings of its metrics and its kind (a single-layer edit and a composition of the same
    weights report different compression ratios); see :mod:`tensorllm.identity`. Not its name."""
    return variant_key(model_identity, [read_meta(a) for a in v.artifacts], {**evaluation, "kind": v.kind})


def variant_record(v: Variant, model: str, datasets: list[str], val_limit: int | None, common_tags: dict,
                   selection_metric: str, generate: bool) -> dict:
    """The registry record of a variant (fields of :class:`tensorllm.registry.VariantRecord`)."""
    metrics = flat_metrics(v.val, "val")
    record = v.decomposition
    for name in ("compression_ratio", "rel_error"):
        if record.get(name) is not None:
            metrics[name] = record[name]
    if v.size is not None:
        metrics.update({f"whole_model.{k}": value for k, value in v.size.metrics().items()})
        if v.composed:
            metrics["compression_ratio"] = v.size.attention_compression_ratio
    if record.get("seconds") is not None:
        metrics["decompose_seconds"] = record["seconds"]
    for name in ("converged", "hooi_iterations"):
        if record.get(name) is not None:
            metrics[name] = float(record[name])
    metrics["eval_seconds"] = sum(r.get("seconds", 0.0) for r in v.val.values())
    metrics.update(v.extra_metrics)
    tags = {**common_tags, **v.extra_tags, "kind": "baseline" if not v.artifacts else "variant", "variant_name": v.name,
            "variant_kind": v.kind, "val_limit": str(val_limit), "generate": str(generate),
            "selection_metric": selection_metric}
    files = {f"{dataset_label(dataset)}_val_examples.jsonl": r["examples"] for dataset, r in v.val.items()}
    params = {"model": model, "datasets": ",".join(datasets), "val_limit": val_limit, **v.params}
    return {"key": v.key, "name": v.name, "base_model": model, "artifacts": v.artifacts,
            "params": params, "metrics": metrics, "tags": tags, "files": files}


def summary_row(v: Variant, metric: str) -> dict:
    """One row of the sweep summary (and of the variants table in Prefect and MLflow)."""
    size = v.size
    return {"name": v.name, "version": v.version, "kind": v.kind, "layer": v.layer, "layers": v.layers,
            "ranks": v.ranks, "compression_ratio": v.decomposition.get("compression_ratio"),
            "rel_error": v.decomposition.get("rel_error"), "converged": v.decomposition.get("converged"),
            "whole_model_attention_cr": size.attention_compression_ratio if size else None,
            "bytes_after": size.bytes_after if size else None,
            f"val_{metric}": mean_metric(v.val, metric), "val_loss": mean_metric(v.val, "loss"),
            **({"target_ratio": v.extra_metrics["allocation.target_ratio"]}
               if "allocation.target_ratio" in v.extra_metrics else {}),
            "guard_stopped": v.guard_stopped,
            **summary_fields(v.extra_metrics),  # perplexity on held-out text, and its ratio to the base's
            **({f"test_{m}": mean_metric(v.test, m) for m in ("accuracy", "top1_accuracy", "loss")} if v.test else {}),
            **({"paired": v.paired_test} if v.paired_test else {})}


def ratio_text(row: dict) -> str:
    """A summary row's perplexity ratio to the base, marked where it is not shown within the margin ("-": not
    measured)."""
    if row.get("perplexity_ratio") is None:
        return "-"
    return f"{row['perplexity_ratio']:.3f}" + ("" if row.get("perplexity_within_margin") else " (over)")


def markdown_table(rows: list[dict], metric: str) -> str:
    """The variants as a markdown table (the flow run's Prefect artifact)."""
    key = f"val_{metric}"
    lines = [f"| variant | version | kind | layer CR | whole-model attention CR | {key} | val loss | test accuracy | "
             "perplexity / base |", "|---|---|---|---|---|---|---|---|---|"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for r in rows:
        lines.append(f"| {r['name']} | {fmt(r['version'], 'd')} | {r['kind']} | {fmt(r['compression_ratio'], '.2f')} | "
                     f"{fmt(r['whole_model_attention_cr'], '.3f')} | {fmt(r[key], '.4f')} | {fmt(r['val_loss'], '.4f')} | "
                     f"{fmt(r.get('test_accuracy'), '.4f')} | {ratio_text(r)} |")
    return "\n".join(lines)
