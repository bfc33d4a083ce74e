"""The sweep flow: decompose layers x ranks on Ray, evaluate, register every variant, promote the best.

DAG (one run)::

    baseline eval (val) ─┐                                        ┌─> compose: uniform ranks (parallel),
    decompose layer L1 ──┼─> eval variants (val, cached prefix) ──┤   greedy by validation gain (sequential)
    decompose layer L2 ──┤   baseline generation (val: drafts) ───┘─> paired val stats, register all
    laser (optional) ────┘
        ─> generation guard (the rule's next checks, `guard_parallel` at once: flows.guard)
        ─> decide (objective: compress | denoise) ─> test evals (baseline first, then the shortlist, best composed
           and champion checking its drafts) ─> paired test stats ─> promote `champion` with one sentence ─> export the best composed model
        ─> sweep report (MLflow run + plots, Prefect markdown artifacts)

    perplexity on held-out text (flows.perplexity): the base's submitted first, each composed variant's beside its
    validation evaluations; recorded as metrics of their versions, shown in the summary (a report: no rule reads it)

:func:`run_sweep` is this DAG, a sub-flow that :func:`flows.compress_sweep.compress_sweep` (the typed entry
flow) starts on a ``RayTaskRunner``. Tasks exchange paths and small records only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect_ray.context import remote_options

from tasks.caching import evaluation_key
from tasks.decompose import decompose_layer_task, laser_task
from tasks.evaluate import evaluate_task, paired_comparison_task, paired_pooled_task
from tasks.export import export_task
from tasks.register import (apply_promotion_task, champion_task, log_sweep_task, register_variant_task,
                            update_metrics_task)
from tasks.resources import node_cpus, ray_request
from tensorllm.artifact import read_meta
from tensorllm.checkpoint import Checkpoint
from tensorllm.composed import whole_model_size
from tensorllm.evaluation.data import dataset_digest
from tensorllm.mlflow_store import promotion_lock
from tensorllm.models import resolve_model

from .allocated import allocate_plans, costed_edits
from .compose import BUILT_ON_VALIDATION, ComposedPlan, LayerEdit, greedy_name, greedy_order, uniform_plans
from .config import SweepConfig, code_version
from .config_file import config_yaml
from .guard import run_generation_guard
from .holdout import half_mean, paired_half
from .lm_eval import champion_lm_eval
from .noninferiority import single_test
from .perplexity import SweepPerplexity
from .policy import (PAIRED_COLUMN, Candidate, comparable_champion, decide, decision_tags, guard_stopped,
                     higher_is_better, shortlist)
from .records import (Variant, baseline_variant, composed_variant, evaluation_settings, flat_metrics, layer_variants,
                      markdown_table, mean_metric, paired_columns, paired_metrics, registry_key, summary_row,
                      variant_record)

log = logging.getLogger(__name__)


@flow(name="compress-sweep-on-ray")
def run_sweep(config: SweepConfig) -> dict:
    logger = get_run_logger()
    folder = resolve_model(config.model)
    ckpt = Checkpoint(folder)
    identity, version = ckpt.identity(), code_version()
    layers = config.resolve_layers(ckpt.n_layers)
    name = config.registered_name()
    uri = config.mlflow_tracking_uri
    metric = config.selection_metric
    root = Path(config.artifacts_root).resolve()
    artifacts_dir, evals_dir, reports_dir = root, root.parent / "evaluations", root.parent / "reports"
    decompose_request = ray_request(config.decompose_cpus, config.decompose_gpus)
    eval_request = ray_request(config.evaluate_cpus or 1, config.evaluate_gpus)
    gpus = eval_request["num_gpus"]
    rank_specs = [list(r) for r in config.rank_specs()]
    transfer = config.transfer_dataset if config.transfer_dataset not in (None, *config.datasets) else None
    data_digests = {d: dataset_digest(d) for d in [*config.datasets, *([transfer] if transfer else [])]}
    logger.info("Sweep %s -> %s: layers %s x %d rank configs, datasets %s, objective %s, %s GPU per task, code %s",
                config.model, name, layers, len(rank_specs), config.datasets, config.objective, gpus, version)

    submitted: dict[str, object] = {}  # evaluation key -> its future: the same evaluation never runs twice at once

    def evaluate(v: Variant, dataset: str, split: str, **extra):
        wait_for = extra.pop("wait_for", None)
        params = dict(
            model=config.model, artifacts=v.artifacts, dataset=dataset, split=split,
            limit=config.val_limit if split == "val" else config.test_limit, first_changed_layer=v.first_layer,
            generate=extra.pop("generate", config.generate_for(split)), batch_size=config.batch_size, out_root=str(evals_dir),
            model_identity=identity, data_digest=data_digests[dataset], variant=v.name,
            **extra)
        key = evaluation_key(**params)  # content: two names for the same weights are one evaluation
        if key not in submitted:
            submitted[key] = evaluate_task.submit(**params, wait_for=wait_for)
        return submitted[key]

    baseline = baseline_variant()
    guard = config.generate and not config.generate_for("val")  # (selecting on accuracy: every variant has it)
    perplexity = SweepPerplexity(config, identity, layers,  # held-out text: the base's once, each composed variant's
                                 str(evals_dir / "hidden-cache" / "perplexity"))  # (which replays the base's prefix)
    with remote_options(**eval_request):
        # the baseline's full pass also caches the inputs of every sweep layer for the variants
        baseline_val = {d: evaluate(baseline, d, "val", fill_layers=layers) for d in config.datasets}
        perplexity.submit(baseline)  # now: it runs beside the decompositions
    with remote_options(**decompose_request):
        decompositions = {layer: decompose_layer_task.submit(config.model, layer, rank_specs, config.grouping,
                                                             str(artifacts_dir), identity, layout=config.layout,
                                                             **config.fit_options(data_digests))
                          for layer in layers}
        lasers = {(layer, spec.matrix, spec.rho): laser_task.submit(config.model, layer, spec.matrix, spec.rho,
                                                                    str(artifacts_dir), identity)
                  for layer in layers for spec in config.laser}
    with remote_options(**eval_request):
        # the guard's base generation (the drafts the variants check: tensorllm.evaluation.drafts), once, submitted
        # first so that it decodes on one core while the variants' top-1 evaluations use the others
        base_generation = {d: evaluate(baseline, d, "val", generate=True, fill_layers=layers,
                                       wait_for=[baseline_val[d]]) for d in config.datasets} if guard else {}
        variants = layer_variants(config.grouping, config.laser, layers,
                                  {k: f.result() for k, f in decompositions.items()},
                                  {k: f.result() for k, f in lasers.items()})
        val_futures = {(v.name, d): evaluate(v, d, "val", wait_for=[baseline_val[d]])
                       for v in variants for d in config.datasets}
        wait(list(val_futures.values()))
        baseline.val = {d: f.result() for d, f in baseline_val.items()}
        for v in variants:
            v.val = {d: val_futures[(v.name, d)].result() for d in config.datasets}
        composed, allocation_note = _compose(config, variants, baseline, evaluate, metric, perplexity)
        perplexity.record([baseline])

    # ---- paired validation statistics, whole-model sizes, registration (flow process: one sqlite writer) --
    everything = [*variants, *composed]
    column = PAIRED_COLUMN.get(metric, "top1_correct")
    for v in everything:
        v.paired_val = _paired(v, baseline.val, v.val, column, v.name)
        v.guard_val = _generation_guard(baseline, v)
        v.size = whole_model_size(config.model, [read_meta(a) for a in v.artifacts])
    common = {"base_model": config.model, "datasets": ",".join(config.datasets), "code_version": version,
              "model_identity": identity}
    settings = {"datasets": config.datasets, "val_limit": config.val_limit, "selection_metric": metric,
                "generate": config.generate, "model_identity": identity}
    # the registry key is content: the base identity, the artifacts' digests, the evaluation behind the metrics
    evaluation = evaluation_settings(config, data_digests)
    for v in [baseline, *everything]:  # the variants that carry perplexity metrics: its settings too
        v.key = registry_key(v, identity, {**evaluation, **(perplexity.settings() if v.kind != "layer" else {})})
        record = variant_record(v, config.model, config.datasets, config.val_limit, common, metric, config.generate)
        v.version = register_variant_task(uri, name, record)

    # ---- the decision (validation evidence only) ----------------------------------------------------
    candidates = {v.version: _candidate(v, metric) for v in everything}
    baseline_candidate = Candidate(baseline.version, "baseline", mean_metric(baseline.val, metric),
                                   mean_metric(baseline.val, "loss"))

    rule = {"objective": config.objective, "metric": metric, "alpha": config.alpha, "margin": config.margins()}

    def decide_against(current):
        return decide(list(candidates.values()), baseline_candidate, current, require_generation=config.generate,
                      **rule)

    current = comparable_champion(champion_task(uri, name), settings, metric)
    # ---- the generation guard: validation generation of the variants the rule would take (the champion's and
    # the exported composition's), until no measurement can change either decision; the next ones in the rule's
    # order are evaluated speculatively meanwhile, the decision is the sequential rule's (flows.guard) ---------
    guard_report = None
    if guard:
        by_version, base_results = {v.version: v for v in everything}, {}

        def submit(c: Candidate, n: int) -> dict:
            # fewer guard evaluations than CPUs at once: each gets its share (a lone one, the whole machine)
            share = config.evaluate_cpus or max(1, int(node_cpus() // max(1, n)))
            with remote_options(**{**eval_request, "num_cpus": share}):
                return {d: evaluate(by_version[c.version], d, "val", generate=True, wait_for=[base_generation[d]])
                        for d in config.datasets}

        def record(c: Candidate, generation: dict) -> dict:
            if not base_results:
                base_results.update({d: f.result() for d, f in base_generation.items()})
                update_metrics_task(uri, name, baseline.version, flat_metrics(base_results, "val_generation"))
            v = by_version[c.version]
            v.guard_val = _paired(v, base_results, generation, "correct", f"{v.name}-generation")
            update_metrics_task(uri, name, v.version, {**flat_metrics(generation, "val_generation"),
                                                       **{f"guard.{k}": x for k, x in v.guard_val.items()
                                                          if isinstance(x, (int, float)) and not isinstance(x, bool)}})
            return v.guard_val

        guard_report = run_generation_guard(candidates, baseline_candidate, current, rule, config.guard_parallel,
                                            submit, record)
        logger.info("Generation guard: measured %s; evaluated ahead and not needed: %s",
                    [f"v{x}" for x in guard_report.measured], [f"v{x}" for x in guard_report.unused])
    decision = decide_against(current)
    for v in everything:  # the front plot marks them (tensorllm.plots.compression_front)
        v.guard_stopped = guard_stopped(candidates[v.version], metric, config.margins(), config.alpha)
    # the exported composition obeys the champion's rule (its family is every variant; no champion bar)
    composed_decision = decide(list(candidates.values()), baseline_candidate, None, require_generation=config.generate,
                               kinds=("composed",), **rule) if composed else None
    best_composed = [candidates[composed_decision.version]] if composed_decision and composed_decision.promote else []
    # the test split's shortlist: unmeasured generation does not count against a variant here (it is a report)
    chosen = {c.version for c in shortlist(list(candidates.values()), config.objective, metric, config.margins(),
                                           config.test_top_k, alpha=config.alpha)}
    chosen |= {c.version for c in best_composed} | ({decision.version} if decision.promote else set())

    # ---- test split: the report ---------------------------------------------------------------------
    tested = [baseline] + [v for v in everything if v.version in chosen]
    # transfer: the promoted variant and the base on a dataset it was not selected on (issue 14)
    promoted = [v for v in everything if decision.promote and v.version == decision.version]
    with remote_options(**eval_request):
        # the base's passes first: they store the drafts and layer inputs that the variants' evaluations of the
        # same items check instead of decoding every answer again (tensorllm.evaluation.drafts)
        base_test = {d: evaluate(baseline, d, "test", fill_layers=layers)
                     for d in [*config.datasets, *([transfer] if transfer and promoted else [])]}
        test_futures = {(v.name, d): base_test[d] if v is baseline else evaluate(v, d, "test", wait_for=[base_test[d]])
                        for v in tested for d in config.datasets}
        transfer_futures = ({baseline.name: base_test[transfer],
                             **{v.name: evaluate(v, transfer, "test", wait_for=[base_test[transfer]]) for v in promoted}}
                            if transfer and promoted else {})
        wait(list(test_futures.values()) + list(transfer_futures.values()))
    for v in tested:
        v.test = {d: test_futures[(v.name, d)].result() for d in config.datasets}
        update_metrics_task(uri, name, v.version, flat_metrics(v.test, "test"))
    for v in tested[1:]:
        v.paired_test = {d: {col: paired_comparison_task(baseline.test[d]["examples"], v.test[d]["examples"], col,
                                                         label=f"{v.name}-{d}")
                             for col in paired_columns(v.test[d], metric)}
                         for d in config.datasets}
        update_metrics_task(uri, name, v.version, paired_metrics(v.paired_test))

    # ---- promotion, export, report ------------------------------------------------------------------
    with promotion_lock(uri, name):  # concurrent sweeps of one model: the later one decides against the other's pick
        latest = comparable_champion(champion_task(uri, name), settings, metric)
        if (latest and latest.version) != (current and current.version):
            logger.info("The champion changed during this sweep (v%s -> v%s): deciding again against it",
                        current and current.version, latest and latest.version)
            current, decision = latest, decide_against(latest)
        champion_version = apply_promotion_task(uri, name, decision.promote, decision.version, decision_tags(decision))
    best = next((v for v in composed if best_composed and v.version == best_composed[0].version), None)
    exported = None
    if best is not None and config.export_best:
        out_dir = root.parent / "exports" / name / f"v{best.version}-{best.kind}"
        with remote_options(**eval_request):
            exported = export_task.submit(config.model, best.artifacts, str(out_dir), identity, version,
                                          best.test or best.val).result()
    summary = _summary(config, name, baseline, everything, decision, champion_version, current, best, exported, metric)
    summary["best_composed_decision"] = (composed_decision.sentence if composed_decision else
                                         "No composed variant: compose is off or the sweep has fewer than 2 layers.")
    summary["perplexity"] = perplexity.summary()  # corpus, budget and margin of the rows' perplexity columns
    summary["allocation"] = allocation_note  # what `allocate` made, and the targets it could not reach
    summary["generation_guard"] = guard_report.to_dict() if guard_report else None
    wait(guard_report.unused_futures if guard_report else [])  # speculative evaluations end before the flow does
    summary["transfer"] = _transfer(uri, name, config, transfer, baseline, promoted, transfer_futures, metric)
    champion = next((v for v in everything if decision.promote and v.version == decision.version), None)
    summary["lm_eval"] = champion_lm_eval(uri, name, config, champion, gpus)  # lm-eval scores on its version
    effective = config_yaml(config)  # the run as a file: `tensorllm sweep --config sweep_config.yaml` repeats it
    summary["sweep_run_id"] = log_sweep_task(uri, name, summary, str(reports_dir), metric, decision.sentence,
                                             config.model_dump(mode="json"), effective)
    create_markdown_artifact(markdown=f"Repeat this sweep with `tensorllm sweep --config FILE`:\n\n```yaml\n{effective}```",
                             key="sweep-config", description=f"Effective configuration of the sweep of {name}")
    create_markdown_artifact(markdown=f"**Decision** ({config.objective}): {decision.sentence}\n\n"
                             + markdown_table(summary["variants"], metric), key="sweep-variants",
                             description=f"Variants of {name} and the promotion decision")
    logger.info("Decision: %s", decision.sentence)
    return summary


def _generation_guard(baseline: Variant, v: Variant) -> dict | None:
    """Validation generation accuracy of ``v`` vs the base, datasets pooled (the policy's generation guard);
    None when generation was not measured on validation (``generate`` off)."""
    if any(r["accuracy"] is None for r in [*baseline.val.values(), *v.val.values()]):
        return None
    return _paired(v, baseline.val, v.val, "correct", f"{v.name}-generation")


def _paired(v: Variant, base_results: dict, results: dict, column: str, label: str) -> dict:
    """The paired validation comparison the policy reads, datasets pooled; an allocated or greedy composition's
    on the confirmation half only (it was built on the other half: flows.holdout)."""
    if v.kind in BUILT_ON_VALIDATION:
        return paired_half(_examples(base_results), _examples(results), column, "confirm")
    return paired_pooled_task(_examples(base_results), _examples(results), column, label)


def _transfer(uri, name: str, config: SweepConfig, dataset: str | None, baseline: Variant, promoted: list[Variant],
              futures: dict, metric: str) -> dict:
    """The promoted variant vs the base on the transfer dataset's test split, recorded on both versions as
    ``transfer.*`` metrics (the paired comparison on the champion's); what the summary says about it."""
    if not futures:
        why = ("no transfer_dataset" if config.transfer_dataset is None else
               f"{config.transfer_dataset} is a selection dataset" if dataset is None else "nothing was promoted")
        return {"dataset": config.transfer_dataset, "skipped": why}
    base, champion = futures[baseline.name].result(), futures[promoted[0].name].result()
    paired = {dataset: {col: paired_comparison_task(base["examples"], champion["examples"], col,
                                                    label=f"{promoted[0].name}-{dataset}")
                        for col in paired_columns(champion, metric)}}
    update_metrics_task(uri, name, baseline.version, {f"transfer.{k}": v for k, v in flat_metrics({dataset: base}, "test").items()})
    update_metrics_task(uri, name, promoted[0].version,
                        {f"transfer.{k}": v for k, v in {**flat_metrics({dataset: champion}, "test"),
                                                         **paired_metrics(paired)}.items()})
    return {"dataset": dataset, "version": promoted[0].version, "n": champion["n"],
            "base_accuracy": base["accuracy"], "champion_accuracy": champion["accuracy"], "paired": paired[dataset]}


def _examples(results: dict[str, dict]) -> dict[str, str]:
    """dataset -> the per-example jsonl of an evaluation."""
    return {d: r["examples"] for d, r in results.items()}


def _candidate(v: Variant, metric: str) -> Candidate:
    """The policy's view of a variant: validation numbers, compression (the layer's for single-layer
    variants, the whole model's attention for composed ones: see flows.policy), paired validation comparison."""
    compression = v.size.attention_compression_ratio if v.composed else (v.decomposition.get("compression_ratio") or 1.0)
    return Candidate(v.version, v.name, mean_metric(v.val, metric), mean_metric(v.val, "loss"),
                     compression=compression, kind="composed" if v.composed else "layer", paired_val=v.paired_val,
                     guard_val=v.guard_val)


def _compose(config: SweepConfig, variants: list[Variant], baseline: Variant, evaluate,
             metric: str, perplexity: SweepPerplexity) -> tuple[list[Variant], str | None]:
    """Whole-model variants from the per-layer Tucker edits (see :mod:`flows.compose`) and the allocation's summary
    line. The uniform plans and the allocated plans (one per target, :mod:`flows.allocated`: damages from the
    build half of the validation items) are evaluated in parallel; the greedy plan grows one layer at a time, on
    the build half, and keeps a layer only while the composed model stays non-inferior to the base there (every
    endpoint of :mod:`flows.noninferiority`, unadjusted: construction, not the claim)."""
    tucker = [v for v in variants if v.params["kind"] == "tensorllm"]
    edits = [LayerEdit(v.layer, tuple(v.ranks), v.artifacts[0], mean_metric(v.val, metric), mean_metric(v.val, "loss"))
             for v in tucker]
    several_layers = len({e.layer for e in edits}) >= 2
    out: list[Variant] = []
    if "uniform" in config.compose:
        out += [composed_variant(p) for p in uniform_plans(edits)]
    note = None
    if "allocate" in config.compose and several_layers:
        costed, attention = costed_edits(config.model, edits, {v.artifacts[0]: _examples(v.val) for v in tucker},
                                         _examples(baseline.val))
        allocated = allocate_plans(costed, attention, config.targets)
        out += [composed_variant(p) for p in allocated.plans]
        note = allocated.note
    for v in out:  # submitted now, so that they run beside the greedy steps (gathered by _evaluate_composed)
        for d in config.datasets:
            evaluate(v, d, "val")
        perplexity.submit(v)
    if "greedy" in config.compose and several_layers:
        # built on the build half of the validation items only; the rule tests it on the other half (flows.holdout)
        column = PAIRED_COLUMN.get(metric, "top1_correct")
        by_artifact = {v.artifacts[0]: v for v in tucker}
        value_column = column if higher_is_better(metric) else "loss"
        build = [LayerEdit(e.layer, e.ranks, e.artifact, half_mean(_examples(by_artifact[e.artifact].val), value_column, "build"),
                           half_mean(_examples(by_artifact[e.artifact].val), "loss", "build")) for e in edits]
        kept = []
        for edit in greedy_order(build, half_mean(_examples(baseline.val), value_column, "build"), higher_is_better(metric)):
            trial = composed_variant(ComposedPlan(greedy_name(kept + [edit]), "greedy", kept + [edit]))
            val = {d: evaluate(trial, d, "val").result() for d in config.datasets}
            probe = Candidate(0, trial.name, mean_metric(val, metric), mean_metric(val, "loss"),
                              paired_val=paired_half(_examples(baseline.val), _examples(val), column, "build"))
            if all(r["accuracy"] is not None for r in [*baseline.val.values(), *val.values()]):
                probe.guard_val = paired_half(_examples(baseline.val), _examples(val), "correct", "build")
            if single_test(probe, metric, config.margins(), config.alpha):
                kept = kept + [edit]
        if len(kept) >= 2:
            out.append(composed_variant(ComposedPlan(greedy_name(kept), "greedy", kept)))  # its evaluation is cached
    _evaluate_composed(config, out, evaluate, perplexity)
    return out, note


def _evaluate_composed(config: SweepConfig, composed: list[Variant], evaluate, perplexity: SweepPerplexity) -> None:
    """The one place where every composed variant's validation metrics are gathered (in parallel; an evaluation
    already run, such as the greedy's last step, is not run again: ``evaluate`` keys on content). A further
    whole-model metric of composed variants (perplexity on natural text) is submitted here and recorded in
    ``v.extra_metrics``, which registration logs as they are (flows.perplexity)."""
    futures = {(v.name, d): evaluate(v, d, "val") for v in composed for d in config.datasets}
    for v in composed:
        perplexity.submit(v)  # beside the QA evaluations (a variant submitted before keeps its task)
    for v in composed:
        v.val = {d: futures[(v.name, d)].result() for d in config.datasets}
    perplexity.record(composed)


def _summary(config: SweepConfig, name: str, baseline: Variant, variants: list[Variant], decision, champion_version,
             current, best: Variant | None, exported: dict | None, metric: str) -> dict:
    best_row = None
    if best is not None:
        best_row = {**summary_row(best, metric), "export": exported, "bytes_base": best.size.bytes_before,
                    "attention_params_before": best.size.attention_params_before,
                    "attention_params_after": best.size.attention_params_after}
    return {"registered_model": name, "champion_version": champion_version, "objective": config.objective,
            "decision": {**asdict(decision), "champion_version": champion_version,
                         "compared_with_champion": current.version if current else None},
            "baseline": summary_row(baseline, metric), "variants": [summary_row(v, metric) for v in variants],
            "best_composed": best_row, "selection_metric": metric, "datasets": config.datasets}
