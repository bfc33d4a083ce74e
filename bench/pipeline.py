"""Benchmark: orchestration overhead of the Prefect + Ray sweep flow against the same work done directly.

    python bench/pipeline.py [--quick] [--json] [--device cpu|cuda] [--threads N] [--model tiny|smollm2]
                             [--no-rerun] [--keep]

The same small sweep is run two ways, each in a fresh Python process (imports timed separately, not in
the totals):

* **(a) flow**: ``flows.compress_sweep.compress_sweep(...)`` against a real local Prefect server
  (``flows.services.prefect_server``, its own ``PREFECT_HOME`` in a temporary folder, so the task-result
  cache starts empty), on a private local Ray started by prefect-ray (``RayTaskRunner``, the flow's own
  ``ray_runner(None)``), registering into an MLflow sqlite store in a temporary folder. Then, against the
  same server: **run 2** with the same parameters (every decomposition/evaluation task is a cache hit: what
  is left is the orchestration) and, in the full mode unless ``--no-rerun``, **run 3** with one more rank
  configuration (a new parameter: the layers' decompositions rerun -- their input changed, the existing
  artifacts are reused -- and the new variants are evaluated; the rest are cache hits).
* **(b) direct**: the flow's ``run_sweep`` body with every task replaced by the library call it wraps, in one
  process, sequentially: ``Checkpoint.identity``/``code_version``, ``decompose_layer`` per layer,
  ``evaluate`` of the baseline (its pass also fills the hidden-state cache of every sweep layer:
  ``fill_layers``) + every variant on val (``first_changed_layer=L``, the on-disk cache, as the tasks do; the
  model is loaded once), baseline + top-k on test,
  ``compare_paired``, and the same **registration** as the flow (``tensorllm.registry.Registry`` in its own
  temporary sqlite store: register baseline + variants, update metrics, champion, promotion, sweep report
  with its two figures). Registration is included in (b)'s total and also reported separately. The
  records, selection and promotion use the flow's own helper functions, so both do the same work.

Model: ``tiny`` (default for --quick): a 4-layer random GQA Llama with SmolLM2's tokenizer, as in
tests/flows/conftest.py: the work is almost nothing, so (a) - (b) is the orchestration cost itself.
``smollm2`` (default for the full run): SmolLM2-135M-Instruct with small limits, for a realistic fraction.

Order: (b) first; then the Prefect server; then, in one process, the Ray probe (``ray.init`` with the flow's
arguments, a first task on a new worker, importing the task modules in a worker, ``ray.shutdown``: Ray's
fixed costs on their own), (a) run 1, and in the full mode runs 2 and 3; then (full mode) (b) again, and the
fastest (b) run counts (the least disturbed on a shared machine; all are reported). ``--quick``: the tiny
model, 1 layer x 1 rank, limit 8, teacher-forced only (``generate=False``), (b) once and (a) run 1 only.

Reported: wall seconds of (a) and (b); the number of Prefect task runs of (a) (read back from the API,
by kind and final state; the parent's task run standing for the sub-flow call is not counted); overhead =
(a) - (b) in total, per task run, and as a fraction of (b); the fixed costs measured on their own (Prefect
server start and stop, process imports, the Ray probe), and, in the full mode, run 2's time per task run once
Ray's start/stop and one worker's imports are taken off (tasks whose result is cached: orchestration only).
Every process started (Prefect server, Ray) is stopped at the end: the server by PID
(``flows.services.prefect_server``), Ray by the code that started it (the probe; prefect-ray).

Results: ``bench/results/pipeline.json`` (``pipeline-quick.json`` with --quick).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO_ROOT, base_parser, finish, library_versions, pick_device, print_table,  # noqa: E402
                    run_isolated, setup_threads)

# task-run name prefix -> kind (the flow's task_run_name templates); work tasks run on Ray, registry tasks in
# the flow process
WORK_TASKS = {"decompose-layer": "decompose-layer", "laser-": "laser-ffn", "evaluate-": "evaluate",
              "paired-comparison": "paired-comparison"}
REGISTRY_TASKS = {"register-": "register-variant", "update-metrics": "update-metrics",
                  "current-champion": "current-champion", "apply-promotion": "apply-promotion",
                  "log-sweep": "log-sweep"}


SUBFLOW = "subflow (run_sweep)"


def task_kind(name: str) -> str:
    if name.startswith("compress-sweep-on-ray"):
        return SUBFLOW  # the parent flow's task run standing for the sub-flow call
    for prefix, kind in {**WORK_TASKS, **REGISTRY_TASKS}.items():
        if name.startswith(prefix):
            return kind
    return "other: " + name

SWEEPS = {
    # name -> flow parameters (model, artifacts_root and mlflow_tracking_uri are filled in per run)
    "quick": dict(datasets=["qa_wikidata"], layers=[3], ranks=[(0.5, 0.5, 0.5)], val_limit=8, test_limit=8,
                  generate=False, selection_metric="top1_accuracy", test_top_k=1, batch_size=8),
    "tiny": dict(datasets=["qa_wikidata"], layers=[2, 3], ranks=[(16, 8, 2), (0.5, 0.5, 0.5)], val_limit=32,
                 test_limit=32, generate=True, selection_metric="top1_accuracy", test_top_k=1, batch_size=16),
    "smollm2": dict(datasets=["qa_wikidata"], layers=[28, 29], ranks=[(0.75, 0.75, 0.5), (0.5, 0.5, 0.5)],
                    val_limit=32, test_limit=32, generate=False, selection_metric="top1_accuracy", test_top_k=1,
                    batch_size=16),
}
EXTRA_RANK = (0.25, 0.5, 0.5)  # run 3: the "new parameter"
REGISTERED = "bench-pipeline"


# ----------------------------------------------------------------------------------------------- helpers

def _quiet_env(prefect_home: Path) -> dict:
    from flows.services import QUIET_DEFAULTS  # stdlib-only module

    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**QUIET_DEFAULTS, "PREFECT_HOME": str(prefect_home), "PYTHONPATH": pythonpath,
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _to_stderr_file(log_file: str | None) -> None:
    """Send this process's fd 2 (Prefect's console logs, Ray's forwarded worker logs) to a file."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)


def make_tiny_model(folder: Path) -> Path:
    """tests/flows/conftest.py's ``tiny_llm``: a 4-layer GQA Llama (random weights) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tensorllm.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------ (b) direct (child)

def direct_sweep(params: dict, log_file: str | None = None) -> dict:
    """The flow's ``run_sweep`` with each task replaced by the library call it wraps, in this process."""
    _to_stderr_file(log_file)
    t_import = time.perf_counter()
    import torch  # noqa: F401

    from flows.compress_sweep import (_flat_metrics, _mean, _paired_columns, _paired_metrics, _summary,
                                      _variant_record, _variants)
    from flows.config import SweepConfig, code_version, stable_key
    from flows.policy import Candidate, best_candidates, comparable_champion, decide, decision_tags
    from tasks.evaluate import variant_label
    from tasks.resources import best_device
    from tensorllm.artifact import apply_artifacts, load_artifact
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.decompose import decompose_layer, model_slug
    from tensorllm.evaluation import EvalConfig, compare_paired, evaluate
    from tensorllm.models import load_model, resolve_model
    from tensorllm.plots import accuracy_vs_compression, layer_rank_heatmap
    from tensorllm.registry import Registry, VariantRecord
    import_s = time.perf_counter() - t_import

    stages: dict[str, float] = {}
    counts: dict[str, int] = {}

    class stage:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            stages[self.name] = stages.get(self.name, 0.0) + time.perf_counter() - self.start
            counts[self.name] = counts.get(self.name, 0) + 1

    start = time.perf_counter()
    with stage("setup"):
        config = SweepConfig(**params)
        if config.laser:
            raise ValueError("direct_sweep does not do LASER variants")
        folder = resolve_model(config.model)
        ckpt = Checkpoint(folder)
        identity, version = ckpt.identity(), code_version()
        layers = config.resolve_layers(ckpt.n_layers)
        root = Path(config.artifacts_root).resolve()
        artifacts_dir, evals_dir, reports_dir = root, root.parent / "evaluations", root.parent / "reports"
        rank_specs = [list(r) for r in config.rank_specs()]
        device = best_device()
    loaded: dict = {}

    def evaluate_one(artifacts: list[str], dataset: str, split: str, first_layer: int | None,
                     fill_layers: list[int] | None = None) -> dict:
        """tasks.evaluate.evaluate_task's body (the model loaded once per process, as tasks.model_cache does)."""
        if not loaded:
            with stage("model_load"):
                loaded["pair"] = load_model(folder, device=device)
        model, tokenizer = loaded["pair"]
        with stage(f"evaluate_{split}"):
            limit = config.val_limit if split == "val" else config.test_limit
            out_dir = evals_dir / model_slug(config.model) / variant_label(artifacts) / f"{dataset}-{split}-limit{limit}"
            out_dir.mkdir(parents=True, exist_ok=True)
            examples = out_dir / "examples.jsonl"
            eval_config = EvalConfig(dataset=dataset, split=split, limit=limit, batch_size=config.batch_size,
                                     generate=config.generate_for(split), first_changed_layer=first_layer,
                                     fill_layers=tuple(fill_layers or ()), cache_dir=evals_dir / "hidden-cache",
                                     model_id=identity)
            with apply_artifacts(model, [load_artifact(p) for p in artifacts]):
                result = evaluate(model, tokenizer, eval_config, examples_out=examples)
            payload = {**result.to_dict(), "examples": str(examples), "artifacts": artifacts}
            (out_dir / "result.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
        return payload

    # as the flow: the baseline's full pass also caches the inputs of every sweep layer for the variants
    baseline_val = {d: evaluate_one([], d, "val", None, fill_layers=layers) for d in config.datasets}
    decompositions = {}
    for layer in layers:
        with stage("decompose"):
            records = decompose_layer(config.model, layer, [tuple(r) for r in rank_specs], grouping=config.grouping,
                                      out_root=str(artifacts_dir), device=device)
            decompositions[layer] = [r.to_dict() for r in records]
    variants = _variants(config, layers, decompositions, {})
    for v in variants:
        v["val"] = {d: evaluate_one(v["artifacts"], d, "val", v["layer"]) for d in config.datasets}

    uri, name = config.mlflow_tracking_uri, config.registered_model
    common = {"base_model": config.model, "datasets": ",".join(config.datasets), "code_version": version,
              "model_identity": identity}
    baseline = {"name": "baseline", "layer": None, "artifacts": [], "params": {"kind": "baseline"},
                "summary": {}, "val": baseline_val}
    settings = {"datasets": config.datasets, "val_limit": config.val_limit, "selection_metric": config.selection_metric,
                "generate": config.generate}
    for v in [baseline, *variants]:
        v["key"] = stable_key(identity, version, v["name"], settings)
        record = _variant_record(config, v, common, settings)
        with stage("register"):
            v["version"] = Registry(uri).register_variant(VariantRecord(**record), name)

    metric = config.selection_metric
    candidates = [Candidate(v["version"], v["name"], _mean(v["val"], metric), _mean(v["val"], "loss")) for v in variants]
    top = {c.name for c in best_candidates(candidates, metric, config.test_top_k)}
    tested = [baseline] + [v for v in variants if v["name"] in top]
    for v in tested:
        v["test"] = {d: evaluate_one(v["artifacts"], d, "test", v["layer"]) for d in config.datasets}
        with stage("register"):
            Registry(uri).update_metrics(name, v["version"], _flat_metrics(v["test"], "test"))
    for v in tested[1:]:
        with stage("paired"):
            v["paired"] = {d: {column: compare_paired(baseline["test"][d]["examples"], v["test"][d]["examples"],
                                                      metric=column).to_dict()
                               for column in _paired_columns(v["test"][d], metric)}
                           for d in config.datasets}
        with stage("register"):
            Registry(uri).update_metrics(name, v["version"], _paired_metrics(v["paired"]))

    with stage("register"):
        baseline_candidate = Candidate(baseline["version"], "baseline", _mean(baseline["val"], metric),
                                       _mean(baseline["val"], "loss"))
        current = comparable_champion(Registry(uri).champion(name), settings, metric)
        decision = decide(candidates, baseline_candidate, current, metric)
        paired = next((v.get("paired") for v in tested[1:] if v["version"] == decision.version), None)
        registry = Registry(uri)
        if decision.promote:
            registry.set_champion(name, decision.version, decision_tags(decision, paired))
        else:
            registry.record_decision(name, decision_tags(decision, paired))
        champion = registry.champion(name)
        decision_dict = {**decision.__dict__, "champion_version": int(champion["version"]) if champion else None,
                         "compared_with_champion": current.version if current else None}
        summary = _summary(config, baseline, variants, decision_dict, metric)
        out = Path(reports_dir)
        out.mkdir(parents=True, exist_ok=True)
        key = f"val_{metric}"
        rows = [r for r in summary["variants"] if r.get("ranks") and r.get("compression_ratio")]
        files = []
        if rows:
            files.append(accuracy_vs_compression(rows, summary["baseline"][key], key, out / "accuracy_vs_compression.png"))
            files.append(layer_rank_heatmap(rows, summary["baseline"][key], key, out / "layer_rank_heatmap.png"))
        summary["sweep_run_id"] = Registry(uri).log_sweep(name, summary, files)
    total = time.perf_counter() - start
    return {"import_s": import_s, "wall_s": total, "stages": stages, "stage_counts": counts,
            "registry_s": stages.get("register", 0.0), "without_registry_s": total - stages.get("register", 0.0),
            "n_variants": len(variants), "n_tested": len(tested), "champion_version": summary["champion_version"],
            "best": (summary["best"] or {}).get("name"), "device": device}


# ------------------------------------------------------------------------------------- (a) flow (child)

def _ts(value) -> float | None:
    return value.timestamp() if value is not None else None


def flow_runs(runs: list[dict], probe: bool = True, log_file: str | None = None) -> dict:
    """Optionally probe Ray's fixed costs, then run ``compress_sweep`` once per entry of ``runs``
    (PREFECT_API_URL must be set) and read the runs back from the API."""
    _to_stderr_file(log_file)
    t_import = time.perf_counter()
    from flows.compress_sweep import compress_sweep
    from flows.services import drain_prefect_clients
    from prefect.client.orchestration import get_client
    import_s = time.perf_counter() - t_import
    ray_fixed = ray_probe() if probe else None  # Ray is shut down again before the flow starts its own

    out = []
    for spec in runs:
        params = {**spec["params"], "ranks": [list(r) for r in spec["params"]["ranks"]]}
        epoch0, start = time.time(), time.perf_counter()
        summary = compress_sweep(**params)
        wall = time.perf_counter() - start
        out.append({"label": spec["label"], "wall_s": wall, "epoch_start": epoch0, "epoch_end": time.time(),
                    "champion_version": summary["champion_version"], "best": (summary["best"] or {}).get("name"),
                    "n_variants": len(summary["variants"])})
    drain_prefect_clients()
    time.sleep(2)  # the server records task-run states from events: let the last ones land

    with get_client(sync_client=True) as client:
        task_runs, all_flows = [], []
        for reader, sink in ((client.read_task_runs, task_runs), (client.read_flow_runs, all_flows)):
            offset = 0
            while True:
                page = reader(limit=200, offset=offset)
                sink.extend(page)
                if len(page) < 200:
                    break
                offset += 200
    for run in out:
        flows_ = [f for f in all_flows
                  if run["epoch_start"] <= (_ts(f.expected_start_time) or _ts(f.start_time) or 0) <= run["epoch_end"]]
        ids = {f.id for f in flows_}
        tasks_ = [r for r in task_runs if r.flow_run_id in ids]
        by_name: dict[str, dict] = {}
        for r in tasks_:
            kind = task_kind(r.name)
            entry = by_name.setdefault(kind, {"count": 0, "states": {}, "run_s": 0.0})
            entry["count"] += 1
            state = r.state.name if r.state else "?"
            entry["states"][state] = entry["states"].get(state, 0) + 1
            entry["run_s"] += r.total_run_time.total_seconds() if r.total_run_time else 0.0
        real = {k: v for k, v in by_name.items() if k != SUBFLOW}
        starts = sorted(t for t in (_ts(r.start_time) for r in tasks_ if task_kind(r.name) != SUBFLOW) if t)
        sub = next((f for f in flows_ if f.parent_task_run_id), None)
        run.update({
            "n_task_runs": sum(v["count"] for v in real.values()),
            "n_work_tasks": sum(v["count"] for k, v in real.items() if k in WORK_TASKS.values()),
            "n_registry_tasks": sum(v["count"] for k, v in real.items() if k in REGISTRY_TASKS.values()),
            "n_cached": sum(v["states"].get("Cached", 0) for v in real.values()),
            "tasks": by_name,
            "task_run_s": sum(v["run_s"] for v in real.values()),
            "work_task_run_s": sum(v["run_s"] for k, v in real.items() if k in WORK_TASKS.values()),
            "n_flow_runs": len(flows_),
            "flow_states": sorted({f.state.name for f in flows_ if f.state}),
            "subflow_start_after_s": (_ts(sub.start_time) - run["epoch_start"]) if sub and sub.start_time else None,
            "first_task_after_s": (starts[0] - run["epoch_start"]) if starts else None,
        })
    return {"import_s": import_s, "runs": out, "ray_probe": ray_fixed}


# ------------------------------------------------------------------------------------ Ray probe (child)

def ray_probe() -> dict:
    """Ray's fixed costs with the flow's ``ray.init`` arguments: start, first task (a new worker), the task
    modules' import in a worker, a warm task, shutdown."""
    t = time.perf_counter()
    import ray

    from flows.compress_sweep import ray_runner
    import_s = time.perf_counter() - t
    kwargs = ray_runner(None).init_kwargs

    def noop():
        return os.getpid()

    def import_tasks():
        start = time.perf_counter()
        import tasks.decompose  # noqa: F401
        import tasks.evaluate  # noqa: F401
        return time.perf_counter() - start

    out = {"import_s": import_s, "init_kwargs": kwargs}
    start = time.perf_counter()
    ray.init(**kwargs)
    out["init_s"] = time.perf_counter() - start
    try:
        remote_noop = ray.remote(num_cpus=1)(noop)
        start = time.perf_counter()
        ray.get(remote_noop.remote())
        out["first_task_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ray.get(remote_noop.remote())
        out["warm_task_s"] = time.perf_counter() - start
        start = time.perf_counter()
        out["worker_import_s"] = ray.get(ray.remote(num_cpus=1)(import_tasks).remote())
        out["import_task_s"] = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        ray.shutdown()
        out["shutdown_s"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------------------------------------- main

def _child(func: str, kwargs: dict, env: dict, timeout: float, what: str) -> dict:
    child = run_isolated(__file__, func, kwargs, timeout=timeout, env=env)
    if not child.get("ok"):
        log = kwargs.get("log_file")
        tail = Path(log).read_text(errors="replace")[-4000:] if log and Path(log).is_file() else ""
        raise SystemExit(f"{what} failed: {child.get('error') or child}\n--- log tail ({log}) ---\n{tail}")
    return {**child["result"], "process_wall_s": child["wall_s"]}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default=None,
                        help="tiny random Llama (quick default) or SmolLM2-135M with small limits (full default)")
    parser.add_argument("--no-rerun", action="store_true", help="skip run 3 (a new rank: an incremental run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores)")
    args = parser.parse_args()

    from flows.services import prefect_server

    setup_threads(args.threads)  # (b) and the flow's driver; Ray gives each task 1 thread (num_cpus=1) anyway
    device = pick_device(args.device)
    if device != pick_device(None):
        print(f"note: both (a) and (b) run on the device tasks.resources.best_device() picks ({pick_device(None)}); "
              f"--device {device} is only recorded", flush=True)
    model_kind = args.model or ("tiny" if args.quick else "smollm2")
    sweep = dict(SWEEPS["quick" if args.quick else model_kind])
    if args.quick and model_kind == "smollm2":
        sweep.update(layers=[29])
    rerun = not args.no_rerun and not args.quick
    timeout = 900 if args.quick else 3600
    versions = library_versions("prefect", "prefect-ray", "ray", "mlflow", "torch")
    holder = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
    work = Path(holder.name)
    print(f"device={device}  quick={args.quick}  model={model_kind}  sweep={sweep}  work={work}", flush=True)

    if model_kind == "tiny":
        model = str(make_tiny_model(work / "tiny-llm"))
    else:
        model = "smollm2-135m"

    def params_for(folder: Path, extra_rank: bool = False) -> dict:
        ranks = list(sweep["ranks"]) + ([EXTRA_RANK] if extra_rank else [])
        return {**sweep, "ranks": [list(r) for r in ranks], "model": model, "registered_model": REGISTERED,
                "mlflow_tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
                "artifacts_root": str(folder / "runs" / "artifacts")}

    def direct(n: int) -> dict:
        folder = work / f"direct-{n}"
        folder.mkdir()
        print(f"[{time.strftime('%H:%M:%S')}] (b) direct run {n} ...", flush=True)
        res = _child("direct_sweep", {"params": params_for(folder), "log_file": str(folder / "log.txt")},
                     _quiet_env(folder / "prefect-home"), timeout, f"direct run {n}")
        print(f"    {res['wall_s']:.1f}s (registration {res['registry_s']:.1f}s, imports {res['import_s']:.1f}s)",
              flush=True)
        return res

    # ---- (b) direct, first ------------------------------------------------------------------------------
    directs = [direct(1)]

    # ---- (a) the flow against a real local Prefect server ------------------------------------------------------
    home = work / "prefect-home"
    flow_dir = work / "flow"
    flow_dir.mkdir()
    runs = [{"label": "run 1 (cold)", "params": params_for(flow_dir)}]
    if not args.quick:
        runs.append({"label": "run 2 (same parameters: cached)", "params": params_for(flow_dir)})
    if rerun:
        runs.append({"label": f"run 3 (+ rank {EXTRA_RANK})", "params": params_for(flow_dir, extra_rank=True)})
    print(f"[{time.strftime('%H:%M:%S')}] starting a Prefect server ...", flush=True)
    start = time.perf_counter()
    with prefect_server(home, log_file=work / "prefect-server.log") as api_url:
        server_start_s = time.perf_counter() - start
        print(f"    up in {server_start_s:.1f}s at {api_url}; (a) flow runs ...", flush=True)
        env = {**_quiet_env(home), "PREFECT_API_URL": api_url}
        flow = _child("flow_runs", {"runs": runs, "probe": True, "log_file": str(flow_dir / "log.txt")}, env,
                      timeout * len(runs), "flow runs")
        stop_start = time.perf_counter()
    server_stop_s = time.perf_counter() - stop_start
    ray_fixed = flow["ray_probe"]
    ray_fixed["total_s"] = ray_fixed["init_s"] + ray_fixed["first_task_s"] + ray_fixed["shutdown_s"]
    print(f"    Ray probe: ray.init {ray_fixed['init_s']:.1f}s, first task {ray_fixed['first_task_s']:.1f}s, worker "
          f"imports {ray_fixed['worker_import_s']:.1f}s, shutdown {ray_fixed['shutdown_s']:.1f}s", flush=True)
    for run in flow["runs"]:
        print(f"    {run['label']}: {run['wall_s']:.1f}s, {run['n_task_runs']} task runs "
              f"({run['n_cached']} cached)", flush=True)

    # ---- (b) direct, second (full mode: the flow ran between two direct runs) ----------------------------------
    if not args.quick:
        directs.append(direct(2))

    # ---- figures ----------------------------------------------------------------------------------------------
    best = min(directs, key=lambda d: d["wall_s"])  # the least disturbed (b) run counts
    b_wall, b_noreg, b_reg = best["wall_s"], best["without_registry_s"], best["registry_s"]
    b_work = sum(v for k, v in best["stages"].items()
                 if k in ("decompose", "evaluate_val", "evaluate_test", "paired", "model_load"))
    run1 = flow["runs"][0]
    run2 = flow["runs"][1] if len(flow["runs"]) > 1 else None
    n_tasks = run1["n_task_runs"]
    overhead = run1["wall_s"] - b_wall
    ray_start_stop = ray_fixed["init_s"] + ray_fixed["first_task_s"] + ray_fixed["shutdown_s"]
    ray_fixed["total_s"] = ray_start_stop
    ray_with_import = ray_start_stop + ray_fixed["worker_import_s"]  # at least one worker imports the task modules
    per_cached_task = ((run2["wall_s"] - ray_with_import) / run2["n_task_runs"]
                       if run2 and run2["n_task_runs"] else None)
    rows = [
        {"case": "(b) direct, one process", "wall_s": b_wall, "work_s": b_work,
         "detail": f"registration {b_reg:.1f}s incl.; {len(directs)} run(s): "
                   + ", ".join(f"{d['wall_s']:.1f}s" for d in directs)},
        {"case": "(b) direct without registration", "wall_s": b_noreg, "work_s": b_work, "detail": "MLflow steps excluded"},
    ]
    for run in flow["runs"]:
        rows.append({"case": f"(a) flow {run['label']}", "wall_s": run["wall_s"], "tasks": run["n_task_runs"],
                     "cached": run["n_cached"], "work_tasks": run["n_work_tasks"],
                     "registry_tasks": run["n_registry_tasks"], "work_s": run["work_task_run_s"],
                     "vs_direct": run["wall_s"] / b_wall,
                     "detail": f"sub-flow starts {run['subflow_start_after_s']:.1f}s, first task "
                               f"{run['first_task_after_s']:.1f}s after the call"
                     if run.get("first_task_after_s") is not None and run.get("subflow_start_after_s") is not None
                     else ""})
    fixed_rows = [
        {"cost": "Prefect server start", "seconds": server_start_s, "kind": "fixed, once per session"},
        {"cost": "Prefect server stop", "seconds": server_stop_s, "kind": "fixed, once per session"},
        {"cost": "flow process imports (prefect, flows)", "seconds": flow["import_s"], "kind": "fixed, per process"},
        {"cost": "direct process imports", "seconds": best["import_s"],
         "kind": "fixed, per process"},
        {"cost": "ray.init (the flow's arguments)", "seconds": ray_fixed["init_s"], "kind": "fixed, per flow run"},
        {"cost": "first Ray task (a worker starts)", "seconds": ray_fixed["first_task_s"], "kind": "fixed, per flow run"},
        {"cost": "importing the task modules in a worker", "seconds": ray_fixed["worker_import_s"],
         "kind": "fixed, per worker and flow run"},
        {"cost": "ray.shutdown", "seconds": ray_fixed["shutdown_s"], "kind": "fixed, per flow run"},
        {"cost": "work tasks' run time in (a) - (b)'s work", "seconds": run1["work_task_run_s"] - b_work,
         "kind": "inside the tasks: a model load per worker, 1 thread per task, 2 tasks at once"},
        {"cost": "overhead per task run: ((a) run 1 - (b)) / task runs", "seconds": overhead / n_tasks if n_tasks else None,
         "kind": "per task, all costs spread"},
        {"cost": "same, Ray start/stop + one worker import excluded",
         "seconds": (overhead - ray_with_import) / n_tasks if n_tasks else None, "kind": "per task"},
        {"cost": "cached run: (run 2 - Ray start/stop - one worker import) / task runs", "seconds": per_cached_task,
         "kind": "per task, no work: orchestration only"},
    ]
    print_table(rows, [("case", "{}"), ("wall_s", "{:.1f}", "wall s"), ("vs_direct", "{:.2f}x", "vs (b)"),
                       ("tasks", "{}", "task runs"), ("work_tasks", "{}", "work"), ("registry_tasks", "{}", "registry"),
                       ("cached", "{}"), ("work_s", "{:.1f}", "work s"), ("detail", "{}")],
                title=f"Sweep via Prefect + Ray (a) vs direct calls (b): model {model_kind}, layers {sweep['layers']} "
                      f"x ranks {sweep['ranks']}, val/test limit {sweep['val_limit']}/{sweep['test_limit']}")
    for run in flow["runs"]:
        print(f"task runs of {run['label']} by kind: " + ", ".join(
            f"{k} {v['count']} ({'/'.join(f'{n} {s}' for s, n in v['states'].items())}, {v['run_s']:.1f}s)"
            for k, v in sorted(run["tasks"].items())))
    print("(b) stages (fastest run): " + ", ".join(f"{k} {v:.1f}s" for k, v in best["stages"].items()))
    fixed_rows = [r for r in fixed_rows if r["seconds"] is not None]
    print_table(fixed_rows, [("cost", "{}"), ("seconds", "{:.2f}"), ("kind", "{}")],
                title="Where the overhead goes (fixed costs measured on their own)")
    summary = {
        "model": model_kind, "direct_s": b_wall, "direct_without_registry_s": b_noreg, "direct_registry_s": b_reg,
        "direct_work_s": b_work, "direct_runs_s": [d["wall_s"] for d in directs], "flow_s": run1["wall_s"], "flow_cached_s": run2["wall_s"] if run2 else None,
        "task_runs": n_tasks, "work_task_runs": run1["n_work_tasks"], "registry_task_runs": run1["n_registry_tasks"],
        "overhead_s": overhead, "overhead_per_task_s": overhead / n_tasks if n_tasks else None,
        "overhead_fraction": overhead / b_wall,
        "overhead_per_task_excl_ray_s": (overhead - ray_with_import) / n_tasks if n_tasks else None,
        "cached_run_per_task_s": per_cached_task, "prefect_server_start_s": server_start_s,
        "ray_start_stop_s": ray_start_stop, "ray_worker_import_s": ray_fixed["worker_import_s"],
        "second_run_all_cached": (run2["n_cached"] == run2["n_work_tasks"]) if run2 else None,
        "same_champion": run1["champion_version"] == best["champion_version"],
        "same_best": run1["best"] == best["best"],
    }
    print(f"\nsummary: flow {run1['wall_s']:.1f}s vs direct {b_wall:.1f}s -> overhead {overhead:.1f}s "
          f"= {summary['overhead_fraction']:.0%} of (b), {summary['overhead_per_task_s']:.2f}s per task run over "
          f"{n_tasks} task runs ({summary['overhead_per_task_excl_ray_s']:.2f}s without Ray's start/stop and one "
          f"worker import)" + (f"; a fully cached re-run takes {run2['wall_s']:.1f}s" if run2 else "")
          + f"; same best variant: {summary['same_best']}")
    finish("pipeline", rows, args, device=device, extra={
        "sweep": sweep, "model": model, "versions": versions, "summary": summary, "fixed_costs": fixed_rows,
        "ray_probe": ray_fixed, "flow": flow, "direct": directs,
        "definitions": {
            "wall_s": "seconds of the compress_sweep(...) call / of the direct sweep, imports excluded",
            "task runs": "Prefect task runs of that flow run and its sub-flow, read back from the API (all kinds, "
                         "without the parent's task run standing for the sub-flow)",
            "work_s": "(a): sum of the work task runs' run times (they overlap: 2 in parallel); (b): decompose + "
                      "evaluate + model load + paired stages",
            "overhead_per_task_s": "((a) run 1 - (b)) / task runs of run 1",
            "cached_run_per_task_s": "((a) run 2 - Ray start/first task/shutdown - one worker import) / task runs",
        }})
    if args.keep:
        print(f"kept {work}")
        holder._finalizer.detach()  # noqa: SLF001
    else:
        holder.cleanup()


if __name__ == "__main__":
    main()
