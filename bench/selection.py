"""Study: which validation metric predicts the paper's generation accuracy on held-out data (issue 14).

    nice -n 10 python -m bench.selection [--quick] [--json] [--device cpu|cuda] [--threads N]
                                         [--val-limit N] [--test-limit N] [--mlflow-tracking-uri URI]

Variants: single-layer TensorLLM edits of SmolLM2-135M-Instruct -- the default sweep's layers 26-29 x its 5
rank configurations (flows.config.DEFAULT_RANKS) plus layers 22-25 x the 3 highest of them: 32 variants
(``--quick``: layers 28-29 x 3 ranks, 100/100 items). For the base and every variant, on the same items:

* WikidataQA **validation** (``--val-limit``, default 400): teacher-forced top-1 (first answer token),
  loss (mean answer NLL), teacher-forced **exact match** of the whole answer (every answer token is the
  argmax given the gold tokens before it) and the paper's **generation accuracy** (greedy, 10 tokens,
  answer contained in the continuation);
* generation accuracy on WikidataQA **test** (``--test-limit``, default 250) and on **CounterFact test**
  (the transfer set: a different dataset of facts, never used for selection; same limit).

Each variant's number is its paired difference from the base on the same items (variant - base; for the
loss, base - variant, so that higher is better for every column). Then, per validation metric, the
Spearman rank correlation of its difference with the generation-accuracy difference on WikidataQA test and
on CounterFact test, with a 95% percentile bootstrap interval (2,000 draws resampling variants *and* the
items of every set, so that the interval carries the measurement noise of both sides). Also over the
variants that do not collapse (validation generation accuracy at least half the base's), since collapsed
variants agree on every metric and inflate a correlation. Last, what the default rule (``compress``:
most compressed variant non-inferior on validation, margin 2 points) would promote when it selects on
each metric, and what that variant does to generation accuracy on test and CounterFact (McNemar).

Speed (2 shared CPU cores): the model is loaded once; one base pass per set fills the layer cache for all
study layers on the prompts *and* on prompt + the base's greedy continuation; each variant then runs only
layers L.. for its teacher-forced pass and checks the base's continuation instead of decoding, decoding
token by token only where it departs (``tensorllm.evaluation.drafts``: the same greedy output).

Sizes (default): 400 validation items, 250 test items of each target set, chosen so that the run fits in
about 45 minutes on the 2 shared cores under ``nice``. Writes ``bench/results/selection.json``, ``selection.png``
and the per-item outcomes ``selection-items.json.gz`` (``--from-items`` redoes the analysis from them) (``selection-quick.*`` for --quick); with
``--mlflow-tracking-uri`` also one MLflow run (experiment ``tensorllm-selection``) holding both.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np


from bench.common import RESULTS_DIR, base_parser, finish, pick_device, print_table, setup_threads  # noqa: E402

MODEL = "smollm2-135m"
FULL_RANKS = [(0.5, 0.5, 1.0), (0.25, 0.5, 0.5), (0.1, 0.25, 0.5), (0.03125, 0.125, 0.25), (0.01, 0.1, 0.25)]
PLAN = {"full": [(layer, FULL_RANKS) for layer in (26, 27, 28, 29)] + [(layer, FULL_RANKS[:3]) for layer in (22, 23, 24, 25)],
        "quick": [(layer, FULL_RANKS[:3]) for layer in (28, 29)]}
#: validation columns (per-item), and the held-out targets (generation accuracy, per-item)
VAL_METRICS = {"top1_accuracy": "top1_correct", "loss": "loss", "exact_match": "exact_match", "accuracy": "correct"}
TARGETS = {"qa_wikidata_test": ("qa_wikidata", "test"), "counterfact_test": ("counterfact", "test")}
BOOTSTRAP = 2000
MARGIN = 0.02  # the default policy's non-inferiority margin (flows.config.SweepConfig.margin)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--val-limit", type=int, default=None, help="WikidataQA validation items (default 400; quick 100)")
    parser.add_argument("--test-limit", type=int, default=None, help="test items of each target set (default 250; quick 100)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch (CPU decoding is bound by reading the weights: larger batches decode more rows per read)")
    parser.add_argument("--mlflow-tracking-uri", default=None, help="also log the study as one MLflow run there")
    parser.add_argument("--work", default=None, help="work folder (default runs/bench/selection-v<val>-t<test>): "
                                                     "evaluations whose per-example file is there are read back, not "
                                                     "recomputed, so an interrupted run resumes")
    parser.add_argument("--from-dir", default=None, help="redo only the analysis from the per-example files of a run's "
                                                         "work folder (/tmp/selection-*), e.g. of an interrupted run: the "
                                                         "variants with all three sets done")
    parser.add_argument("--from-items", default=None, help="redo only the analysis from a saved per-item file "
                                                           "(bench/results/selection*-items.json.gz)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = setup_threads(args.threads)
    device = pick_device(args.device)
    mode = "quick" if args.quick else "full"
    val_limit = args.val_limit or (100 if args.quick else 400)
    test_limit = args.test_limit or (100 if args.quick else 250)
    started = time.perf_counter()
    name = "selection-quick" if args.quick else "selection"
    items_file = RESULTS_DIR / f"{name}-items.json.gz"
    if args.from_dir:
        per_item, variants, timing = from_dir(Path(args.from_dir))
        val_limit, test_limit = len(per_item["base"]["qa_wikidata_val"]), len(per_item["base"]["qa_wikidata_test"])
    elif args.from_items:
        saved = json.loads(gzip.decompress(Path(args.from_items).read_bytes()))
        per_item, variants, timing = saved["per_item"], saved["variants"], saved["timing"]
        val_limit, test_limit = saved["val_limit"], saved["test_limit"]
    else:
        per_item, variants, timing = collect(PLAN[mode], val_limit, test_limit, args.batch_size, device, args.work)
        slim = {v: {k: {i: {c: r[c] for c in ("correct", "top1_correct", "exact_match", "loss")} for i, r in rows.items()}
                    for k, rows in sets.items()} for v, sets in per_item.items()}
        items_file.write_bytes(gzip.compress(json.dumps({"per_item": slim, "variants": variants, "timing": timing,
                                                         "val_limit": val_limit, "test_limit": test_limit}).encode()))
    analysis = analyse(per_item, variants)
    png = plot(per_item, variants, analysis, RESULTS_DIR / f"{name}.png")
    rows = analysis["correlations"]
    print_table(rows, [("subset", "{}"), ("val_metric", "{}"), ("target", "{}"), ("n_variants", "{}"),
                       ("spearman", "{:+.2f}"), ("ci_low", "{:+.2f}", "95% low"), ("ci_high", "{:+.2f}", "95% high")],
                title="Spearman correlation of validation differences with held-out generation-accuracy differences")
    print_table(analysis["policy_picks"], [("val_metric", "{}"), ("picked", "{}"), ("val_diff", "{:+.4f}"),
                                           ("qa_wikidata_test_diff", "{:+.4f}"), ("qa_wikidata_test_worse_p", "{:.3g}"),
                                           ("counterfact_test_diff", "{:+.4f}"), ("counterfact_test_worse_p", "{:.3g}")],
                title="What the compress rule (margin 2 points) would promote, selecting on each metric")
    extra = {"model": MODEL, "val_limit": val_limit, "test_limit": test_limit, "threads": threads,
             "seconds": time.perf_counter() - started, "timing": timing, "variants": variants,
             "policy_picks": analysis["policy_picks"], "plot": str(png.relative_to(RESULTS_DIR.parent.parent)),
             "bootstrap": {"draws": BOOTSTRAP, "resampled": "variants and the items of every set, jointly"},
             "collapsed_rule": "validation generation accuracy below half the base's"}
    payload = finish(name, rows, args, device=device, extra=extra)
    if args.mlflow_tracking_uri:
        log_to_mlflow(args.mlflow_tracking_uri, name, payload, png)


def collect(plan, val_limit: int, test_limit: int, batch_size: int, device: str, work_dir: str | None = None):
    """Per-item results of the base and every variant on the three sets (the library's real evaluate path)."""
    import torch

    from tensorllm.artifact import apply_artifacts, load_artifact
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.evaluation import EvalConfig, HiddenStateCache, evaluate, load_task
    from tensorllm.models import load_model, resolve_model

    folder = resolve_model(MODEL)
    identity = Checkpoint(folder).identity()
    model, tokenizer = load_model(folder, dtype=torch.float32, device=device)
    layers = sorted({layer for layer, _ in plan})
    sets = {"qa_wikidata_val": ("qa_wikidata", "val", val_limit),
            **{key: (ds, split, test_limit) for key, (ds, split) in TARGETS.items()}}
    tasks = {ds: load_task(ds, tokenizer) for ds in {ds for ds, _, _ in sets.values()}}
    # a fixed folder per size: an interrupted run resumes where it stopped (finished evaluations are read back)
    work = Path(work_dir) if work_dir else RESULTS_DIR.parents[1] / "runs" / "bench" / f"selection-v{val_limit}-t{test_limit}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    cache = HiddenStateCache(memory_budget_bytes=2 << 30, disk_dir=work / "hidden-cache")
    timing = {"decompose_s": 0.0, "base_s": 0.0, "variants_s": 0.0}

    def run(key, layer, out):
        from tensorllm.evaluation import read_examples

        if out.is_file():  # resumed: this evaluation finished in an earlier run on the same work folder
            return {r["id"]: r for r in read_examples(out)}, None
        ds, split, limit = sets[key]
        config = EvalConfig(dataset=ds, split=split, limit=limit, batch_size=batch_size, generate=True,
                            first_changed_layer=layer, fill_layers=tuple(layers) if layer is None else (),
                            cache_dir=work / "hidden-cache", model_id=identity)
        result = evaluate(model, tokenizer, config, examples_out=out, task=tasks[ds], cache=cache)
        from tensorllm.evaluation import read_examples

        return {r["id"]: r for r in read_examples(out)}, result

    per_item: dict[str, dict[str, dict]] = {"base": {}}
    start = time.perf_counter()
    for key in sets:
        per_item["base"][key], _ = run(key, None, work / f"base-{key}.jsonl")
        print(f"base {key}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    timing["base_s"] = time.perf_counter() - start
    variants = []
    for layer, ranks in plan:
        t = time.perf_counter()
        records = _artifacts(folder, layer, ranks)
        timing["decompose_s"] += time.perf_counter() - t
        for record in records:
            r1, r2, r3 = record.ranks
            name = f"layer{layer:03d}-r{r1}x{r2}x{r3}"
            t = time.perf_counter()
            generation = {}
            per_item[name] = {}
            # verify=False: artifacts of earlier sweeps predate the tensors' sha256; apply_artifacts still checks
            # that each was computed from exactly these base weights (the source tensors' sha256)
            with apply_artifacts(model, [load_artifact(record.artifact, verify=False)]):
                for key in sets:
                    per_item[name][key], result = run(key, layer, work / f"{name}-{key}.jsonl")
                    generation[key] = result.generation if result is not None else None
            seconds = time.perf_counter() - t
            timing["variants_s"] += seconds
            variants.append({"name": name, "layer": layer, "ranks": [r1, r2, r3],
                             "compression_ratio": record.compression_ratio, "seconds": seconds, "generation": generation})
            print(f"{name}: {seconds:.0f} s, generation {list(generation.values())}", flush=True)
    return per_item, variants, timing


def from_dir(work: Path):
    """per_item, variants, timing from the ``<name>-<set>.jsonl`` files of a work folder (complete variants only)."""
    from tensorllm.artifact import read_meta
    from tensorllm.evaluation import read_examples

    keys = ["qa_wikidata_val", *TARGETS]
    per_item, variants = {}, []
    names = sorted({p.name[: -len(f"-{keys[0]}.jsonl")] for p in work.glob(f"*-{keys[0]}.jsonl")})
    for name in ["base", *[n for n in names if n != "base"]]:
        if not all((work / f"{name}-{k}.jsonl").is_file() for k in keys):
            continue
        per_item[name] = {k: {r["id"]: r for r in read_examples(work / f"{name}-{k}.jsonl")} for k in keys}
        if name != "base":
            layer, ranks = int(name[5:8]), name.split("-r")[1]
            meta = read_meta(Path("runs/artifacts") / MODEL / f"layer{layer:03d}-mha-kv-r{ranks}")
            variants.append({"name": name, "layer": layer, "ranks": [int(r) for r in ranks.split("x")],
                             "compression_ratio": meta["compression_ratio"]})
    return per_item, variants, {"note": f"analysed from {work} (files of a run)"}


def _artifacts(folder, layer: int, ranks) -> list:
    """The layer's artifacts at these ranks: the existing folders under runs/artifacts (the sweeps' own; their
    tensors' and source weights' sha256 are checked when applied), else decomposed now."""
    from types import SimpleNamespace

    from tensorllm.artifact import read_meta
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.decompose import decompose_layer, tucker_artifact_dir
    from tensorllm.tensorise import tensor_shape
    from tensorllm.tucker import resolve_ranks

    dims = tensor_shape(Checkpoint(folder).shape, "kv")
    out = []
    for spec in ranks:
        resolved = resolve_ranks(spec, dims)
        path = tucker_artifact_dir(Path("runs/artifacts"), MODEL, layer, "kv", resolved)
        if (path / "artifact.json").is_file():
            meta = read_meta(path)
            out.append(SimpleNamespace(artifact=str(path), ranks=list(resolved), compression_ratio=meta["compression_ratio"]))
        else:
            out.extend(decompose_layer(MODEL, layer, [spec], out_root="runs/artifacts"))
    return out


# ------------------------------------------------------------------------------------------------ analysis

def _matrix(per_item, variants, key: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(base values [n], variant - base differences [V, n]) of a per-item column, items in id order."""
    ids = sorted(per_item["base"][key])
    base = np.array([float(per_item["base"][key][i][column]) for i in ids])
    rows = np.array([[float(per_item[v["name"]][key][i][column]) for i in ids] for v in variants])
    return base, rows - base


def _rankdata(values: np.ndarray) -> np.ndarray:
    """Average ranks of a 1-D array (ties share their mean rank)."""
    ranks = np.empty(values.size)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of a and b along the last axis (NaN where either is constant)."""
    ra = np.apply_along_axis(_rankdata, -1, np.atleast_2d(a))
    rb = np.apply_along_axis(_rankdata, -1, np.atleast_2d(b))
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(-1) / denom


def _rows(per_item, variant: str, key: str) -> list[dict]:
    return [{**row, "id": item} for item, row in per_item[variant][key].items()]


def analyse(per_item, variants) -> dict:
    from tensorllm.evaluation.paired import compare_paired

    rng = np.random.default_rng(0)
    val = {m: _matrix(per_item, variants, "qa_wikidata_val", col) for m, col in VAL_METRICS.items()}
    targets = {t: _matrix(per_item, variants, t, "correct") for t in TARGETS}
    sign = {m: (-1.0 if m == "loss" else 1.0) for m in VAL_METRICS}  # higher is better for every column
    base_val_gen = val["accuracy"][0].mean()
    for v, i in zip(variants, range(len(variants))):
        for m, (_, d) in val.items():
            v[f"val_{m}_diff"] = float(sign[m] * d[i].mean())
        for t, (_, d) in targets.items():
            v[f"{t}_accuracy_diff"] = float(d[i].mean())
        v["collapsed"] = bool(val["accuracy"][1][i].mean() + base_val_gen < base_val_gen / 2)
    subsets = {"all": np.arange(len(variants)),
               "not collapsed": np.array([i for i, v in enumerate(variants) if not v["collapsed"]])}
    rows = []
    for subset, idx in subsets.items():
        if len(idx) < 4:
            continue
        for t, (_, td) in targets.items():
            for m, (_, vd) in val.items():
                x, y = sign[m] * vd[idx].mean(-1), td[idx].mean(-1)
                rho = float(spearman(x, y)[0])
                draws = []
                for _ in range(BOOTSTRAP):
                    pick = idx[rng.integers(0, len(idx), len(idx))]
                    vi = rng.integers(0, vd.shape[1], vd.shape[1])
                    ti = rng.integers(0, td.shape[1], td.shape[1])
                    draws.append((sign[m] * vd[pick][:, vi].mean(-1), td[pick][:, ti].mean(-1)))
                bx, by = np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])
                boot = spearman(bx, by)
                boot = boot[np.isfinite(boot)]
                low, high = (np.percentile(boot, [2.5, 97.5]) if boot.size else (float("nan"), float("nan")))
                rows.append({"subset": subset, "val_metric": m, "target": t, "n_variants": int(len(idx)),
                             "spearman": rho, "ci_low": float(low), "ci_high": float(high)})
    picks = []
    for m, column in VAL_METRICS.items():
        pool = []
        for i, v in enumerate(variants):
            if m == "loss":
                d = -val[m][1][i]
                ok = d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(d.size) >= -MARGIN
            else:
                cmp = compare_paired(_rows(per_item, "base", "qa_wikidata_val"),
                                     _rows(per_item, v["name"], "qa_wikidata_val"), metric=column)
                ok = cmp.accuracy_diff_ci[0] >= -MARGIN
            if ok and v["compression_ratio"] > 1:
                pool.append(i)
        if not pool:
            picks.append({"val_metric": m, "picked": None})
            continue
        best = max(pool, key=lambda i: (variants[i]["compression_ratio"], variants[i][f"val_{m}_diff"]))
        v = variants[best]
        pick = {"val_metric": m, "picked": v["name"], "compression_ratio": v["compression_ratio"],
                "val_diff": v[f"val_{m}_diff"], "n_non_inferior": len(pool)}
        for t in TARGETS:
            cmp = compare_paired(_rows(per_item, "base", t), _rows(per_item, v["name"], t), "correct")
            pick[f"{t}_diff"], pick[f"{t}_worse_p"] = cmp.accuracy_diff, cmp.variant_worse_p
        picks.append(pick)
    return {"correlations": rows, "policy_picks": picks}


def plot(per_item, variants, analysis, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"top1_accuracy": "top-1 (points)", "loss": "loss decrease (nats)", "exact_match": "exact match (points)",
              "accuracy": "generation accuracy (points)"}
    rho = {(r["subset"], r["val_metric"], r["target"]): r for r in analysis["correlations"]}
    fig, axes = plt.subplots(len(TARGETS), len(VAL_METRICS), figsize=(4 * len(VAL_METRICS), 3.6 * len(TARGETS)),
                             squeeze=False)
    for row, target in enumerate(TARGETS):
        for col, m in enumerate(VAL_METRICS):
            ax = axes[row][col]
            scale = 1.0 if m == "loss" else 100.0
            for collapsed, colour in ((False, "tab:blue"), (True, "tab:red")):
                pts = [v for v in variants if v["collapsed"] == collapsed]
                ax.scatter([scale * v[f"val_{m}_diff"] for v in pts], [100 * v[f"{target}_accuracy_diff"] for v in pts],
                           s=14, c=colour, label="collapsed" if collapsed else "not collapsed")
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            r = rho.get(("all", m, target))
            title = f"rho={r['spearman']:+.2f} [{r['ci_low']:+.2f},{r['ci_high']:+.2f}]" if r else ""
            ok = rho.get(("not collapsed", m, target))
            if ok:
                title += f"\nnot collapsed {ok['spearman']:+.2f} [{ok['ci_low']:+.2f},{ok['ci_high']:+.2f}]"
            ax.set_title(title, fontsize=8)
            ax.set_xlabel(f"validation {labels[m]}", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{target}: generation accuracy (points)", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Variant - base on SmolLM2-135M: validation metric (x) vs held-out generation accuracy (y)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def log_to_mlflow(uri: str, name: str, payload: dict, png: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tensorllm-selection")
    with mlflow.start_run(run_name=name):
        for r in payload["rows"]:
            key = f"spearman.{r['subset'].replace(' ', '_')}.{r['val_metric']}.{r['target']}"
            mlflow.log_metrics({key: r["spearman"], f"{key}.ci_low": r["ci_low"], f"{key}.ci_high": r["ci_high"]})
        mlflow.log_params({"val_limit": payload["val_limit"], "test_limit": payload["test_limit"],
                           "n_variants": len(payload["variants"])})
        mlflow.log_dict(payload, f"{name}.json")
        mlflow.log_artifact(str(png))


if __name__ == "__main__":
    main()
