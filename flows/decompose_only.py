"""Decompose-only mode (``evaluate="none"``): decompose layers x ranks on Ray and register, without evaluation.

For a model this is the sweep's first stage alone, at scale (issue 10, part 3): one ``decompose-layer`` task
per chosen layer (all rank configurations of it, sharing its HOSVD bases), then, for every rank
configuration, one whole-model variant -- that configuration on every chosen layer ("uniform", the same
plan :func:`flows.compose.uniform_plans` builds in a full sweep) -- registered with its factor artifacts,
its whole-model size (:func:`tensorllm.composed.whole_model_size`) and its decomposition metrics (relative
error mean and max over layers, decomposition seconds, convergence). Single-layer variants are not
registered: the artifacts are on disk, and a full sweep can evaluate them later (it reuses them).

**What is promoted: nothing.** Without accuracy there is no evidence for the promotion rules of
:mod:`flows.policy`, so the ``champion`` alias is left where it is; each version's description says that
it was not evaluated, and the registered model's ``last_decision.*`` tags record the run (``promoted=false``).
Versions carry the tag ``evaluated=false``: :func:`flows.policy.comparable_champion` never compares them
with an evaluated sweep (they have no validation metrics).

Functions here run inside a Ray-backed flow (``flows.batch.run_batch``); the decompositions of several
models are submitted together by the caller, so a batch is one wave of tasks on the cluster.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from prefect import get_run_logger
from prefect_ray.context import remote_options

from tasks.decompose import decompose_layer_task
from tasks.register import apply_promotion_task, describe_task, register_variant_task
from tasks.resources import ray_gpus_per_task
from tensorllm.artifact import read_meta
from tensorllm.checkpoint import Checkpoint
from tensorllm.composed import whole_model_size
from tensorllm.evaluation.data import dataset_digest
from tensorllm.models import resolve_model

from .compose import ComposedPlan, LayerEdit, uniform_plans
from .config import SweepConfig, code_version
from .records import composed_variant, registry_key

NOT_EVALUATED = ("Decompose-only run (evaluate=none): factor artifacts and decomposition metrics only, no "
                 "accuracy was measured, so this version was not considered for promotion (champion unchanged).")


def submit_decompositions(config: SweepConfig) -> tuple[list[int], dict]:
    """Submit one ``decompose-layer`` task per chosen layer of ``config.model``; (layers, {layer: future}).

    The same call, with the same inputs, as :func:`flows.sweep.run_sweep` makes: a full sweep of the
    model after this finds the tasks in Prefect's cache and the artifacts on disk.
    """
    ckpt = Checkpoint(resolve_model(config.model))
    identity = ckpt.identity()
    layers = config.resolve_layers(ckpt.n_layers)
    rank_specs = [list(r) for r in config.rank_specs()]
    artifacts_dir = Path(config.artifacts_root).resolve()
    # the sweep's fit options (balance, fit); calibration data is read only by the activation-aware fit
    digests = {d: dataset_digest(d) for d in config.datasets} if config.fit == "activations" else {}
    with remote_options(num_cpus=1, num_gpus=ray_gpus_per_task()):
        futures = {layer: decompose_layer_task.submit(config.model, layer, rank_specs, config.grouping,
                                                      str(artifacts_dir), identity, layout=config.layout,
                                                      **config.fit_options(digests))
                   for layer in layers}
    return layers, futures


def uniform_edits(layers: list[int], records: dict[int, list[dict]]) -> list[ComposedPlan]:
    """One plan per rank configuration: that configuration's artifact on every layer (records in rank order)."""
    edits = [LayerEdit(layer, tuple(r["ranks"]), r["artifact"], math.nan, math.nan)
             for layer in layers for r in records[layer] if r["kind"] == "tucker_mha"]
    if len(layers) >= 2:
        return uniform_plans(edits)
    plans: dict[tuple, ComposedPlan] = {}
    for e in edits:  # one layer: a "whole-model variant" that edits that layer alone
        plans.setdefault(e.ranks, ComposedPlan(f"uniform-r{'x'.join(map(str, e.ranks))}-layers{e.layer}",
                                               "uniform", [e]))
    return list(plans.values())


def register_decomposed(config: SweepConfig, layers: list[int], records: dict[int, list[dict]]) -> dict:
    """Register one whole-model variant per rank configuration of ``config.model``; the model's summary."""
    logger = get_run_logger()
    ckpt = Checkpoint(resolve_model(config.model))
    identity, version = ckpt.identity(), code_version()
    name, uri = config.registered_name(), config.mlflow_tracking_uri
    by_artifact = {r["artifact"]: r for layer in layers for r in records[layer]}
    common = {"base_model": config.model, "code_version": version, "model_identity": identity,
              "evaluated": "false", "evaluate": "none"}
    rows, writes = [], 0
    for plan in uniform_edits(layers, records):
        v = composed_variant(plan)
        v.size = whole_model_size(config.model, [read_meta(a) for a in v.artifacts])
        layer_records = [by_artifact[a] for a in v.artifacts]
        errors = [r["rel_error"] for r in layer_records]
        metrics = {f"whole_model.{k}": value for k, value in v.size.metrics().items()}
        metrics.update({"compression_ratio": v.size.attention_compression_ratio,
                        "rel_error": sum(errors) / len(errors), "rel_error_max": max(errors),
                        "decompose_seconds": sum(r["seconds"] for r in layer_records),
                        "converged": float(all(r["converged"] is not False for r in layer_records)),
                        "hooi_iterations": float(max(r["hooi_iterations"] or 0 for r in layer_records))})
        record = {"key": registry_key(v, identity, {"evaluate": "none"}), "name": v.name,
                  "base_model": config.model, "artifacts": v.artifacts,
                  "params": {"model": config.model, "evaluate": "none", "grouping": config.grouping, **v.params},
                  "metrics": metrics, "files": {},
                  "tags": {**common, "kind": "variant", "variant_name": v.name, "variant_kind": v.kind}}
        start = time.perf_counter()
        v.version = register_variant_task(uri, name, record)
        describe_task(uri, name, v.version, f"{v.name}: {NOT_EVALUATED}")
        writes += 2
        rows.append({"name": v.name, "version": v.version, "kind": v.kind, "ranks": list(plan.edits[0].ranks),
                     "layers": v.layers, "whole_model_attention_cr": v.size.attention_compression_ratio,
                     "bytes_after": v.size.bytes_after, "bytes_base": v.size.bytes_before,
                     "rel_error_mean": metrics["rel_error"], "rel_error_max": max(errors),
                     "decompose_seconds": metrics["decompose_seconds"], "converged": bool(metrics["converged"]),
                     "register_seconds": time.perf_counter() - start})
    sentence = (f"No promotion: decompose-only run (evaluate=none) of {len(layers)} layer(s) x {len(rows)} rank "
                "configuration(s); no accuracy was measured, so the champion alias is unchanged.")
    champion = apply_promotion_task(uri, name, False, None, {"promotion.reason": sentence,
                                                            "promotion.objective": "none"})
    writes += 1
    logger.info("%s: registered %d whole-model variants of %s (decompose only); champion %s (unchanged)", name,
                len(rows), config.model, f"v{champion}" if champion is not None else "none")
    decompositions = [{"layer": layer, "ranks": r["ranks"], "seconds": r["seconds"], "rel_error": r["rel_error"],
                       "reused": r["reused"], "converged": r["converged"]}
                      for layer in layers for r in records[layer]]
    return {"mode": "decompose-only", "model": config.model, "registered_model": name, "champion_version": champion,
            "layers": layers, "variants": rows, "decompositions": decompositions,
            "registry_writes": writes, "decision": {"promote": False, "sentence": sentence}}
