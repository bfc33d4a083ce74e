"""Benchmark: sweep throughput with the layer-L evaluation cache vs a full forward per variant.

    python -m bench.sweep_eval [--quick] [--json] [--device cpu|cuda] [--threads N] [--dataset D] [--limit N]
                               [--layers L ...] [--ranks R1,R2,R3 ...] [--batch-size B] [--repeats N]

A sweep evaluates many variants of SmolLM2-135M-Instruct (``smollm2-135m``, 30 layers), each changing the
MHA weights of one layer L (TensorLLM Tucker artifacts). ``evaluate(..., EvalConfig(first_changed_layer=L))``
takes the hidden states entering layer L from a cache filled once per (layer, data layout) and runs only
layers L..29; ``first_changed_layer=None`` runs the full model for every variant. This script measures both
on the same examples, in one process, side by side:

1. decompose every layer of the sweep at every rank (``tensorllm.decompose.decompose_layer``, all ranks of a
   layer in one call) -- timed, reported separately, NOT part of the throughput figures;
2. load the model once; one small untimed warm-up evaluation;
3. the base model with a full forward (its metrics are reported for information);
4. the **one-pass fill** on an emptied cache (in memory and written through to a cache folder, as the flow's
   tasks do): the base model with ``fill_layers=<all sweep layers>``, one full forward recording the inputs
   of every layer (what the flow's baseline evaluation does); it leaves the cache ready for every variant;
5. per layer L: its own fill, for comparison (the base model with ``first_changed_layer=L`` on an emptied
   scratch cache: a miss, a full forward recording the inputs of L); then per variant of L: apply the
   artifact, evaluate with a full forward and with the cache (a hit), in alternating order, restore.

Teacher-forced metrics only (``generate=False``: loss and top-1 of the first answer token; generation always
runs the full model). The two modes must agree: per example the answer loss within 1e-4 and the same top-1
token (checked for every variant and for the fill vs the base; the script exits non-zero otherwise).

Steps 3-5 run ``--repeats`` times (passes; default 3, quick 2) and each measurement keeps its minimum over the passes
(full and cached alternate ABBA between variants and passes): on a shared machine a burst of other work can
slow one measurement many times over; the passes are minutes apart and the minimum is the least disturbed.

Figures (wall seconds; on CPU also the process CPU seconds, all threads):

* ``full``: sum of the full-forward evaluations of the variants.
* ``cached`` (the headline): the one-pass fill + a hit per variant. The fill counts against the cached mode
  in full, although a sweep evaluates its baseline anyway. variants/hour = variants * 3600 / total;
  ``speedup`` = full / cached (goal >= 1.5x).
* ``cached, baseline needed anyway``: only the one-pass fill's extra over a plain base evaluation + the hits.
* ``cached, a fill per layer``: without ``fill_layers`` -- per layer the first variant's evaluation is the miss
  (it costs what the measured per-layer fill costs), the other variants of the layer hit.
* ``hits only``: the marginal cost of one more variant once its layer's cache is filled.
* per layer: seconds per variant, full vs hit, their ratio and the ideal 30 / (30 - L) (layers run).

Results: ``bench/results/sweep_eval.json`` (``sweep_eval-quick.json`` with --quick).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path


from bench.common import (base_parser, finish, library_versions, pick_device, print_table, setup_threads,  # noqa: E402
                    sync)

MODEL = "smollm2-135m"
FULL = {"layers": [20, 24, 26, 28, 29], "ranks": [(0.75, 0.75, 0.5), (0.5, 0.5, 0.5)], "limit": 200}
QUICK = {"layers": [20, 28], "ranks": [(0.5, 0.5, 0.5)], "limit": 48}
TOLERANCE = 1e-4


def parse_ranks(text: str) -> tuple:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"ranks must be R1,R2,R3; got {text!r}")
    return tuple(int(p) if p.is_integer() and p != 1.0 else p for p in parts)


def ranks_label(ranks) -> str:
    return "x".join(str(r) for r in ranks)


class Evaluator:
    """Runs and times ``evaluate`` on one model/task/cache; returns metrics and the per-example rows."""

    def __init__(self, model, tokenizer, task, cache, *, dataset, limit, batch_size, device, out_dir: Path):
        self.model, self.tokenizer, self.task, self.cache = model, tokenizer, task, cache
        self.dataset, self.limit, self.batch_size, self.device = dataset, limit, batch_size, device
        self.out_dir = out_dir
        self.count = 0

    def __call__(self, first_changed_layer: int | None, name: str, fill_layers: tuple = (), cache=None) -> dict:
        from tensorllm.evaluation import EvalConfig, evaluate, read_examples

        cache = cache if cache is not None else self.cache
        config = EvalConfig(dataset=self.dataset, split="val", limit=self.limit, batch_size=self.batch_size,
                            generate=False, first_changed_layer=first_changed_layer, fill_layers=tuple(fill_layers),
                            cache_dir=cache.disk_dir)
        self.count += 1
        path = self.out_dir / f"{self.count:03d}-{name}.jsonl"
        sync(self.device)
        cpu_start, start = time.process_time(), time.perf_counter()
        result = evaluate(self.model, self.tokenizer, config, examples_out=path, task=self.task, cache=cache)
        sync(self.device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return {"seconds": seconds, "cpu_s": cpu, "result": result, "examples": read_examples(path),
                "layer_cache": result.layer_cache}


def fastest(runs: list[dict]) -> dict:
    """The first run's outputs with the minimum wall and CPU seconds over the repeats (and all the times)."""
    return {**runs[0], "seconds": min(r["seconds"] for r in runs), "cpu_s": min(r["cpu_s"] for r in runs),
            "times_s": [r["seconds"] for r in runs], "cpu_times_s": [r["cpu_s"] for r in runs],
            "layer_caches": [r["layer_cache"] for r in runs], "all": runs}


def agreement(a: list[dict], b: list[dict]) -> dict:
    """Max |loss difference| and top-1 disagreements between two per-example lists of the same items."""
    if [r["id"] for r in a] != [r["id"] for r in b]:
        raise AssertionError("the two evaluations did not score the same examples in the same order")
    loss_diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    top1 = sum(x["top1_prediction"] != y["top1_prediction"] or x["top1_correct"] != y["top1_correct"]
               for x, y in zip(a, b))
    return {"max_loss_diff": loss_diff, "top1_mismatches": top1, "agree": loss_diff <= TOLERANCE and top1 == 0}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="qa_wikidata", help="evaluation dataset (default qa_wikidata)")
    parser.add_argument("--limit", type=int, default=None, help="validation items (default 200; quick 48)")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="layers to sweep (default 20 24 26 28 29; quick 20 28)")
    parser.add_argument("--ranks", type=parse_ranks, nargs="+", default=None,
                        help="rank configs R1,R2,R3 (ints or fractions; default 0.75,0.75,0.5 0.5,0.5,0.5; quick 0.5,0.5,0.5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None,
                        help="passes over the sweep; each measurement keeps its minimum (default 3; quick 2)")
    args = parser.parse_args()

    import torch

    from tensorllm.artifact import apply_artifacts, load_artifact
    from tensorllm.decompose import decompose_layer
    from tensorllm.evaluation import EvalConfig, HiddenStateCache, evaluate, load_task
    from tensorllm.models import load_model, resolve_model

    setup_threads(args.threads)
    device = pick_device(args.device)
    preset = QUICK if args.quick else FULL
    layers = sorted(args.layers or preset["layers"])
    rank_list = [tuple(r) for r in (args.ranks or preset["ranks"])]
    limit = args.limit or preset["limit"]
    repeats = max(1, args.repeats or (2 if args.quick else 3))
    versions = library_versions("torch", "transformers")
    print(f"device={device}  torch={versions['torch']}  threads={torch.get_num_threads()}  quick={args.quick}  "
          f"dataset={args.dataset} val limit={limit}  layers={layers}  ranks={rank_list}  repeats={repeats}", flush=True)
    tmp_holder = tempfile.TemporaryDirectory(prefix="bench-sweep-eval-")
    tmp = Path(tmp_holder.name)

    # ---- 1. decompositions (not part of the throughput figures) -----------------------------------------
    folder = resolve_model(MODEL)
    decompositions, artifacts = [], {}
    for layer in layers:
        sync(device)
        start = time.perf_counter()
        records = decompose_layer(MODEL, layer, rank_list, out_root=tmp / "artifacts", device=device)
        sync(device)
        seconds = time.perf_counter() - start
        decompositions.append({"layer": layer, "seconds": seconds, "ranks": [r.ranks for r in records],
                               "rel_error": [r.rel_error for r in records],
                               "compression_ratio": [r.compression_ratio for r in records]})
        for spec, record in zip(rank_list, records):
            artifacts[(layer, spec)] = record
        print(f"[{time.strftime('%H:%M:%S')}] decomposed layer {layer} at {len(rank_list)} rank(s) in {seconds:.1f}s",
              flush=True)

    # ---- 2. model, task, cache; warm-up -------------------------------------------------------------------
    start = time.perf_counter()
    model, tokenizer = load_model(folder, device=device)
    load_s = time.perf_counter() - start
    n_layers = model.config.num_hidden_layers
    task = load_task(args.dataset, tokenizer)
    # write-through to disk, as the flow's tasks do: the sweep's cache (the one-pass fill, then the hits), and a
    # scratch cache for timing the per-layer fills in between without disturbing it
    cache = HiddenStateCache(disk_dir=tmp / "hidden-cache")
    scratch = HiddenStateCache(disk_dir=tmp / "scratch-cache")
    run = Evaluator(model, tokenizer, task, cache, dataset=args.dataset, limit=limit, batch_size=args.batch_size,
                    device=device, out_dir=tmp / "examples")
    evaluate(model, tokenizer, EvalConfig(dataset=args.dataset, split="val", limit=min(16, limit),
                                          batch_size=args.batch_size, generate=False), task=task)
    print(f"[{time.strftime('%H:%M:%S')}] model loaded in {load_s:.1f}s; warm-up done", flush=True)

    # ---- 3.-5. ``repeats`` passes: base full; one-pass fill; per layer: its own fill, then its variants ---------
    # Each pass runs the whole sweep; every measurement keeps its minimum over the passes, which are a minute or
    # more apart, so a burst of other work on a shared machine rarely hits all of them. The per-layer fills go to
    # the scratch cache, next to the variants of their layer, so that fills and variants share the same moments.
    meas: dict[tuple, list] = {}
    apply_times: dict[tuple, float] = {}
    layer_bytes: dict[int, int] = {}
    disk_bytes: dict[int, int] = {}
    index = 0

    def empty(which) -> None:
        which.clear()
        for path in which.disk_dir.rglob("*.safetensors"):
            path.unlink()

    for k in range(repeats):
        meas.setdefault(("base",), []).append(run(None, f"base-full-{k}"))
        empty(cache)  # the flow's way: the base model's full pass records the inputs of every sweep layer
        meas.setdefault(("fill_all",), []).append(run(None, f"base-fill-all-{k}", fill_layers=tuple(layers)))
        print(f"[{time.strftime('%H:%M:%S')}] pass {k + 1}/{repeats}: base model {meas[('base',)][-1]['seconds']:.2f}s, "
              f"one-pass fill of all layers {meas[('fill_all',)][-1]['seconds']:.2f}s", flush=True)
        for layer in layers:
            empty(scratch)  # this layer's own fill (a miss), from an empty cache
            meas.setdefault(("fill", layer), []).append(run(layer, f"base-fill-L{layer}-{k}", cache=scratch))
            layer_bytes[layer] = scratch.memory_bytes  # this layer's entry only (the 1 GiB budget evicts nothing)
            disk_bytes[layer] = sum(p.stat().st_size for p in scratch.disk_dir.rglob("*.safetensors"))
            line = [f"layer {layer}: fill {meas[('fill', layer)][-1]['seconds']:.2f}s"]
            for spec in rank_list:
                record = artifacts[(layer, spec)]
                start = time.perf_counter()
                applied = apply_artifacts(model, [load_artifact(record.artifact)])
                apply_times[(layer, spec)] = min(apply_times.get((layer, spec), float("inf")), time.perf_counter() - start)
                try:  # the order alternates between variants and between passes (ABBA)
                    order = ("full", "cached") if (index + k) % 2 == 0 else ("cached", "full")
                    for mode in order:
                        meas.setdefault((mode, layer, spec), []).append(
                            run(None if mode == "full" else layer, f"L{layer}-{ranks_label(record.ranks)}-{mode}-{k}"))
                finally:
                    applied.restore()
                index += 1
                line.append(f"{ranks_label(record.ranks)} full {meas[('full', layer, spec)][-1]['seconds']:.2f}s "
                            f"cached {meas[('cached', layer, spec)][-1]['seconds']:.2f}s")
            print(f"[{time.strftime('%H:%M:%S')}]   " + "; ".join(line), flush=True)

    base = fastest(meas[("base",)])
    base_result = base["result"]
    failures: list[str] = []
    fill_all = fastest(meas[("fill_all",)])
    if any(c != "fill" for c in fill_all["layer_caches"]):
        failures.append(f"the one-pass fills were {fill_all['layer_caches']}, expected 'fill'")
    fill_all_checks = [agreement(base["examples"], f["examples"]) for f in meas[("fill_all",)]]
    if not all(c["agree"] for c in fill_all_checks):
        failures.append(f"one-pass fill vs base full forward disagree: {fill_all_checks}")
    rows, layer_rows = [], []
    for layer in layers:
        fills = meas[("fill", layer)]
        fill = fastest(fills)
        if any(c != "miss" for c in fill["layer_caches"]):
            failures.append(f"layer {layer}: the fills were {fill['layer_caches']}, expected misses")
        fill_checks = [agreement(base["examples"], f["examples"]) for f in fills]
        fill_check = {"max_loss_diff": max(c["max_loss_diff"] for c in fill_checks),
                      "top1_mismatches": max(c["top1_mismatches"] for c in fill_checks),
                      "agree": all(c["agree"] for c in fill_checks)}
        if not fill_check["agree"]:
            failures.append(f"layer {layer}: fill vs base full forward disagree: {fill_check}")
        variant_rows = []
        for spec in rank_list:
            record = artifacts[(layer, spec)]
            full_runs, cached_runs = meas[("full", layer, spec)], meas[("cached", layer, spec)]
            full, cached = fastest(full_runs), fastest(cached_runs)
            if any(c != "hit" for c in cached["layer_caches"]):
                failures.append(f"layer {layer} ranks {record.ranks}: cached evaluations were {cached['layer_caches']}")
            checks = [agreement(full["examples"], r["examples"]) for r in cached_runs + full_runs[1:]]
            check = {"max_loss_diff": max(c["max_loss_diff"] for c in checks),
                     "top1_mismatches": max(c["top1_mismatches"] for c in checks), "agree": all(c["agree"] for c in checks)}
            if not check["agree"]:
                failures.append(f"layer {layer} ranks {record.ranks}: modes disagree: {check}")
            res = full["result"]
            row = {"layer": layer, "ranks": list(record.ranks), "ranks_spec": list(spec),
                   "compression_ratio": record.compression_ratio, "rel_error": record.rel_error,
                   "full_s": full["seconds"], "cached_s": cached["seconds"],
                   "full_times_s": full["times_s"], "cached_times_s": cached["times_s"],
                   "full_cpu_s": full["cpu_s"], "cached_cpu_s": cached["cpu_s"],
                   "speedup": full["seconds"] / cached["seconds"], "speedup_cpu": full["cpu_s"] / cached["cpu_s"],
                   "ideal": n_layers / (n_layers - layer), "apply_s": apply_times[(layer, spec)],
                   "val_loss": res.loss, "val_top1_accuracy": res.top1_accuracy,
                   "cached_val_loss": cached["result"].loss, "cached_val_top1_accuracy": cached["result"].top1_accuracy,
                   **check}
            rows.append(row)
            variant_rows.append(row)
        mean_full = statistics.mean(r["full_s"] for r in variant_rows)
        mean_hit = statistics.mean(r["cached_s"] for r in variant_rows)
        layer_rows.append({
            "layer": layer, "layers_run": n_layers - layer, "fill_s": fill["seconds"], "fill_cpu_s": fill["cpu_s"],
            "fill_times_s": fill["times_s"], "fill_over_base_full": fill["seconds"] / base["seconds"],
            "cache_bytes": layer_bytes[layer], "cache_disk_bytes": disk_bytes[layer],
            "variant_full_s": mean_full, "variant_cached_s": mean_hit, "speedup": mean_full / mean_hit,
            "speedup_cpu": statistics.mean(r["full_cpu_s"] for r in variant_rows)
            / statistics.mean(r["cached_cpu_s"] for r in variant_rows),
            "ideal": n_layers / (n_layers - layer), "fill_max_loss_diff": fill_check["max_loss_diff"],
            "fill_top1_mismatches": fill_check["top1_mismatches"],
        })

    # ---- figures -------------------------------------------------------------------------------------------
    n = len(rows)
    fills = sum(r["fill_s"] for r in layer_rows)
    fills_cpu = sum(r["fill_cpu_s"] for r in layer_rows)
    firsts = {(r["layer"]): r for r in reversed(rows)}  # the first variant of each layer
    others = [r for r in rows if r is not firsts[r["layer"]]]
    hits, hits_cpu = sum(r["cached_s"] for r in rows), sum(r["cached_cpu_s"] for r in rows)
    modes = {
        "full": (sum(r["full_s"] for r in rows), sum(r["full_cpu_s"] for r in rows), "a full forward per variant"),
        "cached": (fill_all["seconds"] + hits, fill_all["cpu_s"] + hits_cpu,
                   "one base pass fills every layer (fill_layers, as the flow's baseline eval) + a hit per variant"),
        "cached, baseline needed anyway": (fill_all["seconds"] - base["seconds"] + hits,
                                           fill_all["cpu_s"] - base["cpu_s"] + hits_cpu,
                                           "only the fill pass's extra over a plain baseline eval + the hits"),
        "cached, a fill per layer": (fills + sum(r["cached_s"] for r in others),
                                     fills_cpu + sum(r["cached_cpu_s"] for r in others),
                                     "no fill_layers: per layer the first variant is a miss (= the fill), others hit"),
        "hits only": (hits, hits_cpu, "marginal cost of a variant once its layer's cache is filled"),
    }
    full_total, full_cpu = modes["full"][0], modes["full"][1]
    summary_rows = [{"mode": mode, "total_s": total, "cpu_s": cpu, "variants": n,
                     "variants_per_hour": n * 3600 / total, "speedup": full_total / total,
                     "speedup_cpu": full_cpu / cpu if cpu else None, "what": what}
                    for mode, (total, cpu, what) in modes.items()]
    max_diff = max([r["max_loss_diff"] for r in rows] + [r["fill_max_loss_diff"] for r in layer_rows])
    mismatches = sum(r["top1_mismatches"] for r in rows) + sum(r["fill_top1_mismatches"] for r in layer_rows)
    cache_bytes = sum(r["cache_bytes"] for r in layer_rows)  # = what the one-pass fill stores (same entries)
    disk_total = sum(r["cache_disk_bytes"] for r in layer_rows)
    speedup = full_total / modes["cached"][0]

    print_table(rows, [
        ("layer", "{}"), ("ranks", "{}"), ("compression_ratio", "{:.1f}x", "CR"), ("rel_error", "{:.3f}", "rel err"),
        ("full_s", "{:.2f}", "full s"), ("cached_s", "{:.2f}", "cached s"), ("speedup", "{:.2f}x", "speedup"),
        ("speedup_cpu", "{:.2f}x", "speedup (CPU s)"), ("ideal", "{:.1f}x", "ideal 30/(30-L)"),
        ("val_loss", "{:.4f}", "val loss"), ("val_top1_accuracy", "{:.4f}", "val top-1"),
        ("max_loss_diff", "{:.1e}", "max |dloss|"), ("top1_mismatches", "{}", "top-1 diff"),
    ], title=f"Per variant: {args.dataset}/val n={base_result.n}, full forward vs layer-L cache (hit), device={device}")
    print_table(layer_rows, [
        ("layer", "{}"), ("layers_run", "{}", "layers run"), ("fill_s", "{:.2f}", "fill s"),
        ("fill_over_base_full", "{:.2f}x", "fill / base full"), ("cache_bytes", "{:,}", "cache bytes"),
        ("variant_full_s", "{:.2f}", "s/variant full"), ("variant_cached_s", "{:.2f}", "s/variant cached"),
        ("speedup", "{:.2f}x", "speedup"), ("speedup_cpu", "{:.2f}x", "speedup (CPU s)"), ("ideal", "{:.1f}x", "ideal"),
    ], title="Per layer: the speed-up grows with L")
    print_table(summary_rows, [
        ("mode", "{}"), ("variants", "{}"), ("total_s", "{:.1f}", "total s"), ("cpu_s", "{:.1f}", "CPU s"),
        ("variants_per_hour", "{:.0f}", "variants/hour"), ("speedup", "{:.2f}x", "speedup"),
        ("speedup_cpu", "{:.2f}x", "speedup (CPU s)"), ("what", "{}"),
    ], title="Sweep throughput (decomposition excluded; the fills count against the cached mode)")
    print(f"\nbase model: {args.dataset}/val n={base_result.n} loss={base_result.loss:.4f} "
          f"top-1={base_result.top1_accuracy:.4f} ({base['seconds']:.2f}s full forward)")
    print(f"decomposition (excluded): {sum(d['seconds'] for d in decompositions):.1f}s for {len(layers)} layer(s) x "
          f"{len(rank_list)} rank(s); model load {load_s:.1f}s")
    print(f"cache: {cache_bytes:,} bytes in memory for {len(layers)} layer(s) ({disk_total:,} bytes on disk); "
          f"one-pass fill of all layers {fill_all['seconds']:.2f}s ({fill_all['seconds'] / base['seconds']:.2f}x a "
          f"plain base pass); one fill per layer {fills:.1f}s in all")
    print(f"agreement: max |loss diff| {max_diff:.2e} (tolerance {TOLERANCE:g}), top-1 mismatches {mismatches}")
    summary = {
        "variants": n, "speedup": speedup, "goal_1_5x": speedup >= 1.5, "variants_per_layer": len(rank_list),
        "speedup_cpu": full_cpu / modes["cached"][1] if modes["cached"][1] else None,
        "speedup_fill_per_layer": full_total / modes["cached, a fill per layer"][0],
        "speedup_baseline_needed_anyway": full_total / modes["cached, baseline needed anyway"][0],
        "speedup_hits_only": full_total / modes["hits only"][0],
        "variants_per_hour_full": n * 3600 / full_total, "variants_per_hour_cached": n * 3600 / modes["cached"][0],
        "cache_fill_s": fill_all["seconds"], "cache_fill_over_base": fill_all["seconds"] / base["seconds"],
        "cache_fill_per_layer_total_s": fills, "cache_bytes": cache_bytes, "cache_disk_bytes": disk_total,
        "max_loss_diff": max_diff, "top1_mismatches": mismatches, "modes_agree": not failures,
        "decompose_s": sum(d["seconds"] for d in decompositions), "model_load_s": load_s,
    }
    if len(rank_list) == 1:
        print("note: one variant per layer, so the fill serves as many variants as it fills layers and cannot pay for "
              "itself; the 1.5x goal is for sweeps with several ranks per layer (the full run); see 'hits only'")
    print(f"summary: speedup {speedup:.2f}x (goal >= 1.5x: {'met' if speedup >= 1.5 else 'NOT met'}), "
          f"{summary['variants_per_hour_cached']:.0f} vs {summary['variants_per_hour_full']:.0f} variants/hour")
    finish("sweep_eval", rows, args, device=device, extra={
        "model": MODEL, "dataset": args.dataset, "split": "val", "limit": limit, "n": base_result.n,
        "batch_size": args.batch_size, "repeats": repeats, "layers": layers, "ranks": [list(r) for r in rank_list],
        "versions": versions, "summary": summary, "modes": summary_rows, "per_layer": layer_rows,
        "decompositions": decompositions, "failures": failures,
        "base": {**base_result.to_dict(), "bench_seconds": base["seconds"], "bench_cpu_s": base["cpu_s"]},
        "fill_all": {"seconds": fill_all["seconds"], "cpu_s": fill_all["cpu_s"], "times_s": fill_all["times_s"],
                     "layers": layers,
                     "max_loss_diff_vs_base": max(c["max_loss_diff"] for c in fill_all_checks),
                     "top1_mismatches_vs_base": max(c["top1_mismatches"] for c in fill_all_checks)},
        "definitions": {
            "full_s": "evaluate(first_changed_layer=None) of the variant (wall seconds)",
            "cached_s": "evaluate(first_changed_layer=L) of the variant, a cache hit",
            "fill_s": "evaluate(first_changed_layer=L) of the base model on an empty cache, a miss: full forward + "
                      "recording + store of one layer",
            "cache_fill_s": "evaluate(fill_layers=all sweep layers) of the base model on an empty cache: one full "
                            "forward recording and storing every layer's inputs",
            "speedup": "full total / cached total over the sweep's variants; cached = the one-pass fill + a hit per "
                       "variant",
            "ideal": "n_layers / (n_layers - L): the ratio of decoder layers run",
            "max_loss_diff": "max over examples of |per-example answer loss, full - cached|",
            "top1_mismatches": "examples whose top-1 token (or its correctness) differs between the modes",
        }})
    tmp_holder.cleanup()
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
