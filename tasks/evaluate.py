"""Evaluation tasks: one (variant, dataset, split) per task, and the paired comparison with the baseline.

Each task runs torch on as many threads as Ray gave it CPUs (:func:`tasks.resources.use_assigned_threads`).
A worker keeps the base model it loaded between tasks (:mod:`tasks.model_cache`). Each task applies
the variant's artifacts to that model, evaluates, and restores the original weights.

With ``first_changed_layer=L`` the hidden states entering layer L come from the evaluation cache
(on disk under ``<out_root>/hidden-cache``, shared by the workers), so a variant runs only layers L.. for
its teacher-forced pass. Results (metrics + the per-example jsonl path) are small dicts.

An evaluation's output folder is ``<out_root>/<model>/<key>`` where ``key`` is its Prefect cache key
(:func:`tasks.caching.evaluation_key`): only a run with the same key writes there, so a cached result and the
``examples.jsonl`` it points at (re-read by the paired statistics) always come from one computation.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tensorllm.artifact import apply_artifacts, file_sha256, load_artifact
from tensorllm.decompose import model_slug
from tensorllm.evaluation import EvalConfig, compare_paired, evaluate, read_examples
from tensorllm.models import resolve_model

from .caching import CACHE_EXPIRATION, RESULT_SERIALIZER, evaluation_cache_key, evaluation_key
from .model_cache import base_model
from .result_integrity import check_files
from .resources import assigned_cpus, best_device, use_assigned_threads


@task(name="evaluate", cache_key_fn=evaluation_cache_key, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, result_serializer=RESULT_SERIALIZER, task_run_name="evaluate-{variant}-{dataset}-{split}")
def evaluate_task(model: str, artifacts: list[str], dataset: str, split: str, limit: int | None,
                  first_changed_layer: int | None, generate: bool, batch_size: int, out_root: str,
                  model_identity: str, data_digest: str, fill_layers: list[int] | None = None,
                  variant: str = "baseline") -> dict:
    """Evaluate the base model with ``artifacts`` applied; returns EvalResult.to_dict() plus ``examples``.

    ``fill_layers`` (baseline only): its full pass also caches the inputs of these layers, so the variants
    of a sweep never pay a fill of their own. ``variant`` names the variant in the task run's name (not part
    of the cache key: the same artifacts evaluated under two names are one computation). ``model_identity``
    and ``data_digest`` (the dataset files' sha256) are inputs only for the cache key.
    """
    folder = resolve_model(model)
    key = evaluation_key(model, artifacts, dataset, split, limit, first_changed_layer, generate, batch_size, out_root,
                         model_identity, data_digest, fill_layers, variant)
    out_dir = Path(out_root) / model_slug(model) / key  # the cache key is the folder: see the module docstring
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = out_dir / "examples.jsonl"
    config = EvalConfig(dataset=dataset, split=split, limit=limit, batch_size=batch_size, generate=generate,
                        first_changed_layer=first_changed_layer, fill_layers=tuple(fill_layers or ()),
                        cache_dir=Path(out_root) / "hidden-cache",
                        model_id=model_identity)
    with use_assigned_threads(), base_model(folder, best_device()) as (base, tokenizer):
        with apply_artifacts(base, [load_artifact(p) for p in artifacts]):
            result = evaluate(base, tokenizer, config, examples_out=examples)  # written atomically
        threads = torch.get_num_threads()
    # the digest travels with the cached result: a damaged examples.jsonl is recomputed on a rerun
    # (tasks.result_integrity.check_files) and refused by the paired statistics (verified_examples);
    # what Ray gave the task (None outside Ray) and torch's threads while it ran: not part of the result's meaning
    payload = {**result.to_dict(), "examples": str(examples), "examples_sha256": file_sha256(examples),
               "artifacts": artifacts, "key": key, "resources": {"cpus": assigned_cpus(), "threads": threads}}
    # two tasks of one key (two names for the same weights) may run at once: each renames its own whole file
    partial = out_dir / f"result.json.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True))
    partial.replace(out_dir / "result.json")
    return payload


# paired statistics are cheap and read files whose content may change under the same path: never cached
@task(name="paired-comparison", cache_policy=NO_CACHE, task_run_name="paired-{label}-{correctness}")
def paired_comparison_task(baseline_examples: str, variant_examples: str, correctness: str = "correct",
                           label: str = "variant") -> dict:
    """Variant minus baseline on the same items: accuracy difference, McNemar p, loss difference + CI.

    ``correctness`` is the per-example column compared: ``correct`` (the paper's accuracy) or
    ``top1_correct`` (teacher-forced first token). ``label`` (variant and dataset) names the task run.
    """
    return compare_paired(verified_examples(baseline_examples), verified_examples(variant_examples),
                          metric=correctness).to_dict()


@task(name="paired-validation", cache_policy=NO_CACHE, task_run_name="paired-val-{label}")
def paired_pooled_task(baseline_examples: dict[str, str], variant_examples: dict[str, str], correctness: str,
                       label: str) -> dict:
    """Variant vs baseline on the validation items of every dataset pooled (ids prefixed by the dataset);
    ``label`` names the variant in the task run's name."""
    base, variant = [], []
    for dataset in sorted(baseline_examples):
        base += [{**row, "id": f"{dataset}/{row['id']}"} for row in read_examples(verified_examples(baseline_examples[dataset]))]
        variant += [{**row, "id": f"{dataset}/{row['id']}"} for row in read_examples(verified_examples(variant_examples[dataset]))]
    return compare_paired(base, variant, metric=correctness).to_dict()


def verified_examples(path: str | Path) -> Path:
    """``path`` (an ``examples.jsonl`` the evaluate task wrote) after checking it against the sha256 that the
    ``result.json`` beside it records; a mismatch is a ``ValueError``
    naming the file (a rerun of the sweep recomputes that evaluation). Files without a record pass as they are."""
    path = Path(path)
    record = path.parent / "result.json"
    if record.is_file():
        try:
            check_files(json.loads(record.read_text()))
        except ValueError as exc:
            raise ValueError(f"{path} does not match the sha256 in {record} ({exc}); rerun the sweep to "
                                     "recompute that evaluation") from exc
    return path
