"""Benchmark: orchestration overhead of the Prefect + Ray sweep, read from the real flow's own task runs.

    python bench/pipeline.py [--quick] [--json] [--threads N] [--model tiny|smollm2] [--no-rerun] [--keep]

Method. ``flows.compress_sweep.compress_sweep(...)`` -- the flow users run, nothing copied -- is called in a
fresh Python process against a real local Prefect server (``flows.runtime.services.prefect_server`` with its own
``PREFECT_HOME`` in a temporary folder, so the task-result cache starts empty), on the private local Ray
that the flow starts itself (``ray_runner(None)``), registering into an MLflow sqlite store in the same
temporary folder. Afterwards the process reads back from the Prefect API the task runs of that flow run
and of its sub-flow ``compress-sweep-on-ray`` (``read_task_runs`` filtered by the two flow-run ids; the
parent's task run standing for the sub-flow call is left out) and the overhead is derived from them:

* per kind of task (decompose-layer, evaluate, export-factorised, register-variant, paired-validation,
  paired-comparison, update-metrics, other): the count, the final states and the summed run time
  (``total_run_time``, else end - start);
* **wall**: the ``compress_sweep(...)`` call, timed in the process (imports excluded, reported apart);
* **work**: the sum of the task runs' run times (tasks overlap: Ray runs as many as there are cores);
* **busy**: the time covered by at least one running task (the union of the task runs' start-end
  intervals, clipped to the call);
* **overhead = wall - busy**: the time when no task was running -- creating the flow runs, starting Ray
  and its workers, submitting and collecting tasks, cache lookups and result persistence, work the flow
  does itself between tasks, shutting Ray down. It is split into before the first task, between tasks
  (the three longest gaps are named) and after the last one. ``no work task`` is the same with only the
  Ray tasks (decompose, LASER, evaluate, export) counted as busy: it adds the registry writes and paired
  statistics that run in the flow process.

Then, unless ``--no-rerun``, **run 2**: the same parameters in another fresh process against the same
server and result storage, where every work task should be a cache hit (state ``Cached``): what is left
is the orchestration of a sweep that has nothing to compute, and the registry tasks.

Limits. A task run's interval is what the Prefect engine reports: from its Running state to its final
state, on the machine that ran it. It includes what Prefect does inside the task (hashing inputs for the
cache key, persisting the result) and a worker's first model load; it excludes Ray's start, a new worker's
start and its imports (torch, transformers, the task modules: the first task of a worker enters Running
only after them), queueing and the submission round trip, which therefore count as overhead. A cache hit
enters Running briefly (Prefect 3.9): the lookup and reading the stored result are inside its interval.
Overhead is time not covered by *any* task; while a long task runs, per-task costs of other tasks are
hidden and not counted. No critical path is computed: the flow resolves futures and passes
plain values, so Prefect records no dependency edges to follow. Timestamps of tasks and the call come
from the same machine's clock. On a shared, loaded machine every number is an upper bound.

Modes. ``--quick``: the tiny random GQA Llama of tests/flows/conftest.py (``tiny_llm``: the work is almost
nothing, so the numbers are the orchestration itself), layers [2, 3] x 1 rank configuration, 8 items,
teacher-forced only. Full (default ``--model smollm2``): SmolLM2-135M-Instruct, layers [28, 29] x 2 rank
configurations, val_limit 100, test_limit 50, teacher-forced only. Both compose the default whole-model
variants (uniform, greedy) and export the best composed model, as the flow does by default.

Results: ``bench/results/pipeline.json`` (``pipeline-quick.json`` with --quick).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO_ROOT, base_parser, finish, library_versions, pick_device, print_table,  # noqa: E402
                    run_isolated, setup_threads)

SWEEPS = {
    # flow parameters; model, mlflow_tracking_uri and artifacts_root are filled in per run
    "quick": dict(datasets=["qa_wikidata"], layers=[2, 3], ranks=[(0.5, 0.5, 0.5)], val_limit=8, test_limit=8,
                  generate=False, selection_metric="top1_accuracy", test_top_k=1, batch_size=8),
    "tiny": dict(datasets=["qa_wikidata"], layers=[2, 3], ranks=[(16, 8, 2), (0.5, 0.5, 0.5)], val_limit=32,
                 test_limit=32, generate=False, selection_metric="top1_accuracy", test_top_k=1, batch_size=16),
    "smollm2": dict(datasets=["qa_wikidata"], layers=[28, 29], ranks=[(0.75, 0.75, 0.5), (0.5, 0.5, 0.5)],
                    val_limit=100, test_limit=50, generate=False, selection_metric="top1_accuracy", test_top_k=1,
                    batch_size=16),
}

# task-run name prefix -> kind, first match wins (the task_run_name templates in tasks/); the first four run
# on Ray workers, the rest in the flow process
KINDS = [("decompose-layer", "decompose-layer"), ("laser-", "laser-ffn"), ("evaluate-", "evaluate"),
         ("export-", "export-factorised"), ("register-", "register-variant"), ("paired-val", "paired-validation"),
         ("paired-comparison", "paired-comparison"), ("update-metrics", "update-metrics")]
WORK_KINDS = ("decompose-layer", "laser-ffn", "evaluate", "export-factorised")
KIND_ORDER = [kind for _, kind in KINDS] + ["other"]


def task_kind(name: str) -> str:
    return next((kind for prefix, kind in KINDS if name.startswith(prefix)), "other")


# ---------------------------------------------------------------------------------------- the flow (child)

def _to_stderr_file(log_file: str | None) -> None:
    """Send this process's fd 2 (Prefect's console logs, Ray's forwarded worker logs) to a file."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)


def _epoch(value) -> float | None:
    return value.timestamp() if value is not None else None


def _read_all(reader, **filters) -> list:
    out, offset = [], 0
    while True:
        page = reader(limit=200, offset=offset, **filters)
        out.extend(page)
        if len(page) < 200:
            return out
        offset += 200


def run_flow(params: dict, log_file: str | None = None, settle_s: float = 60) -> dict:
    """Call ``compress_sweep(**params)`` once (PREFECT_API_URL must be set), then read its flow runs and
    task runs back from the API. Returns plain records (epoch seconds) for the parent to analyse."""
    _to_stderr_file(log_file)
    start = time.perf_counter()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId,
                                                TaskRunFilter, TaskRunFilterFlowRunId)

    from flows.compress_sweep import compress_sweep
    from flows.runtime.services import drain_prefect_clients
    import_s = time.perf_counter() - start

    params = {**params, "ranks": [tuple(r) for r in params["ranks"]]}
    call_start, start = time.time(), time.perf_counter()
    state = compress_sweep(**params, return_state=True)
    wall = time.perf_counter() - start
    call_end = time.time()
    summary = state.result()  # raises if the flow failed
    parent_id = state.state_details.flow_run_id
    drain_prefect_clients()  # the task-run states reach the server as events: send the queued ones now

    with get_client(sync_client=True) as client:
        flows_ = [client.read_flow_run(parent_id)]
        flows_ += _read_all(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))
        ids = [f.id for f in flows_]
        runs_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
        # the server records task-run states from events, a little after the flow returns: wait until every
        # task run is final and their number stops changing
        deadline, previous = time.monotonic() + settle_s, -1
        while True:
            task_runs = _read_all(client.read_task_runs, task_run_filter=runs_filter)
            settled = all(r.state is not None and r.state.is_final() for r in task_runs)
            if (settled and len(task_runs) == previous) or time.monotonic() > deadline:
                break
            previous = len(task_runs)
            time.sleep(1)
    subflow_task_runs = {f.parent_task_run_id for f in flows_ if f.parent_task_run_id}
    records = []
    for r in task_runs:
        if r.id in subflow_task_runs:
            continue  # the parent's task run standing for the sub-flow call: it spans the whole sub-flow
        start_t, end_t = _epoch(r.start_time), _epoch(r.end_time)
        run_s = r.total_run_time.total_seconds() if r.total_run_time else 0.0
        if not run_s and start_t is not None and end_t is not None:
            run_s = end_t - start_t
        records.append({"name": r.name, "kind": task_kind(r.name), "state": r.state.name if r.state else "?",
                        "final": bool(r.state and r.state.is_final()), "start": start_t, "end": end_t,
                        "run_s": run_s})
    return {
        "import_s": import_s, "wall_s": wall, "call_start": call_start, "call_end": call_end,
        "settled": all(r["final"] for r in records),
        "flow_runs": [{"name": f.name, "flow": "compress-sweep" if f.id == parent_id else "compress-sweep-on-ray",
                       "state": f.state.name if f.state else "?", "start": _epoch(f.start_time),
                       "end": _epoch(f.end_time)} for f in flows_],
        "task_runs": sorted(records, key=lambda r: (r["start"] or r["end"] or 0)),
        "champion_version": summary["champion_version"], "registered_model": summary["registered_model"],
        "n_variants": len(summary["variants"]), "decision": summary["decision"].get("sentence"),
        "best_composed": (summary.get("best_composed") or {}).get("name"),
    }


# -------------------------------------------------------------------------------------- analysis (parent)

def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merge overlapping [start, end] intervals (sorted, disjoint output)."""
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _intervals(task_runs: list[dict], lo: float, hi: float, kinds=None) -> list[tuple[float, float, str]]:
    """(start, end, name) of the task runs that ran, clipped to the call [lo, hi]."""
    out = []
    for r in task_runs:
        if (kinds is None or r["kind"] in kinds) and r["start"] is not None and r["end"] is not None:
            start, end = max(r["start"], lo), min(r["end"], hi)
            if end > start:
                out.append((start, end, r["name"]))
    return out


def analyse(run: dict) -> dict:
    """Per-kind counts and run time; wall, work, busy (union), overhead and where the idle time lies."""
    lo, hi = run["call_start"], run["call_end"]
    wall = hi - lo
    task_runs = run["task_runs"]
    kinds: dict[str, dict] = {}
    for r in task_runs:
        entry = kinds.setdefault(r["kind"], {"count": 0, "states": {}, "run_s": 0.0, "names": []})
        entry["count"] += 1
        entry["states"][r["state"]] = entry["states"].get(r["state"], 0) + 1
        entry["run_s"] += r["run_s"]
        if r["kind"] == "other":  # Prefect's default run name is the task's name + 3 random hex digits
            entry["names"].append(re.sub(r"-[0-9a-f]{3}$", "", r["name"]))
    spans = _intervals(task_runs, lo, hi)
    busy = union([(s, e) for s, e, _ in spans])
    busy_s = sum(e - s for s, e in busy)
    work_busy_s = sum(e - s for s, e in union([(s, e) for s, e, _ in _intervals(task_runs, lo, hi, WORK_KINDS)]))
    # the gaps between busy stretches, with the task that ended last before and the one that started after
    gaps = []
    for (s0, e0), (s1, e1) in zip(busy, busy[1:]):
        before = max((x for x in spans if s0 <= x[0] and x[1] <= e0), key=lambda x: x[1])[2]
        after = min((x for x in spans if s1 <= x[0] and x[1] <= e1), key=lambda x: x[0])[2]
        gaps.append({"seconds": s1 - e0, "after": before, "before": after})
    # the largest number of task runs running at once
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    work_s = sum(r["run_s"] for r in task_runs)
    sub = next((f for f in run["flow_runs"] if f["flow"] == "compress-sweep-on-ray"), None)
    work_runs = [r for r in task_runs if r["kind"] in WORK_KINDS]
    return {
        "wall_s": wall, "import_s": run["import_s"], "n_task_runs": len(task_runs),
        "n_work_tasks": len(work_runs), "n_cached": sum(r["state"] == "Cached" for r in task_runs),
        "all_work_cached": bool(work_runs) and all(r["state"] == "Cached" for r in work_runs),
        "states_final": run["settled"], "kinds": kinds,
        "work_s": work_s, "work_tasks_s": sum(r["run_s"] for r in work_runs),
        "busy_s": busy_s, "overhead_s": wall - busy_s, "overhead_fraction": (wall - busy_s) / wall,
        "no_work_task_s": wall - work_busy_s,
        "before_first_task_s": (busy[0][0] - lo) if busy else wall,
        "between_tasks_s": sum(g["seconds"] for g in gaps),
        "after_last_task_s": (hi - busy[-1][1]) if busy else 0.0,
        "longest_gaps": sorted(gaps, key=lambda g: -g["seconds"])[:3],
        "parallelism": work_s / busy_s if busy_s else None, "max_concurrent": peak,
        "subflow_start_after_s": (sub["start"] - lo) if sub and sub["start"] else None,
        "first_task_after_subflow_s": (busy[0][0] - sub["start"]) if sub and sub["start"] and busy else None,
    }


# ------------------------------------------------------------------------------------------------- main

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


def _child_env(prefect_home: Path, api_url: str) -> dict:
    from flows.runtime.services import QUIET_DEFAULTS  # stdlib-only module

    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**QUIET_DEFAULTS, "PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": api_url,
            "PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _fmt_states(states: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default=None,
                        help="tiny random Llama (quick default) or SmolLM2-135M (full default)")
    parser.add_argument("--no-rerun", action="store_true", help="skip run 2 (same parameters: every work task cached)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores, artifacts)")
    args = parser.parse_args()

    from flows.runtime.services import prefect_server

    setup_threads(args.threads)  # the flow process's torch threads; Ray gives each task num_cpus=1
    device = pick_device(args.device)
    if device != pick_device(None):
        print(f"note: the flow runs on the device tasks.resources.best_device() picks ({pick_device(None)}); "
              f"--device {device} is only recorded", flush=True)
    model_kind = args.model or ("tiny" if args.quick else "smollm2")
    sweep = dict(SWEEPS["quick" if args.quick else model_kind])
    if args.quick and model_kind == "smollm2":
        sweep.update(layers=[28, 29])
    timeout = 900 if args.quick else 3600
    holder = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
    work = Path(holder.name)
    print(f"device={device}  quick={args.quick}  model={model_kind}  sweep={sweep}  work={work}", flush=True)
    model = str(make_tiny_model(work / "tiny-llm")) if model_kind == "tiny" else "smollm2-135m"
    params = {**sweep, "ranks": [list(r) for r in sweep["ranks"]], "model": model,
              "mlflow_tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
              "artifacts_root": str(work / "runs" / "artifacts")}
    labels = ["run 1 (cold)"] + ([] if args.no_rerun else ["run 2 (same parameters: cached)"])

    home = work / "prefect-home"
    print(f"[{time.strftime('%H:%M:%S')}] starting a Prefect server ...", flush=True)
    start = time.perf_counter()
    runs = []
    with prefect_server(home, log_file=work / "prefect-server.log") as api_url:
        server_start_s = time.perf_counter() - start
        print(f"    up in {server_start_s:.1f}s at {api_url}", flush=True)
        for i, label in enumerate(labels, 1):
            log_file = work / f"flow-run-{i}.log"
            print(f"[{time.strftime('%H:%M:%S')}] {label}: compress_sweep in a fresh process ...", flush=True)
            child = run_isolated(__file__, "run_flow", {"params": params, "log_file": str(log_file)},
                                 timeout=timeout, env=_child_env(home, api_url))
            if not child.get("ok"):
                tail = log_file.read_text(errors="replace")[-4000:] if log_file.is_file() else ""
                raise SystemExit(f"{label} failed: {child.get('error') or child}\n"
                                 f"--- log tail ({log_file}) ---\n{tail}")
            raw = child["result"]
            stats = analyse(raw)
            runs.append({"label": label, "process_wall_s": child["wall_s"], **stats, "raw": raw})
            print(f"    {stats['wall_s']:.1f}s, {stats['n_task_runs']} task runs ({stats['n_cached']} cached), "
                  f"overhead {stats['overhead_s']:.1f}s", flush=True)
        stop = time.perf_counter()
    server_stop_s = time.perf_counter() - stop

    # ---- table 1: task runs by kind ------------------------------------------------------------------------
    present = [k for k in KIND_ORDER if any(k in r["kinds"] for r in runs)]
    kind_rows = []
    for kind in present:
        row = {"kind": kind + (" (Ray)" if kind in WORK_KINDS else "")}
        for i, run in enumerate(runs, 1):
            entry = run["kinds"].get(kind, {"count": 0, "states": {}, "run_s": 0.0})
            row[f"n{i}"], row[f"states{i}"], row[f"s{i}"] = entry["count"], _fmt_states(entry["states"]), entry["run_s"]
        kind_rows.append(row)
    columns = [("kind", "{}")]
    for i, run in enumerate(runs, 1):
        columns += [(f"n{i}", "{}", f"run {i} n"), (f"states{i}", "{}", f"run {i} states"),
                    (f"s{i}", "{:.2f}", f"run {i} sum s")]
    title = (f"compress_sweep, model {model_kind}, layers {sweep['layers']} x ranks {sweep['ranks']}, "
             f"val/test limit {sweep['val_limit']}/{sweep['test_limit']}: task runs by kind (from the Prefect API)")
    print_table(kind_rows, columns, title=title)
    others = sorted({n for run in runs for n in run["kinds"].get("other", {}).get("names", [])})
    if others:
        print("other: " + ", ".join(others))

    # ---- table 2: where the wall time goes ------------------------------------------------------------------
    metrics = [
        ("wall_s", "flow call wall time", "{:.1f}"),
        ("work_s", "work: sum of task-run times", "{:.1f}"),
        ("work_tasks_s", "  of which Ray work tasks", "{:.1f}"),
        ("busy_s", "busy: >= 1 task running (union)", "{:.1f}"),
        ("parallelism", "work / busy", "{:.2f}"),
        ("max_concurrent", "most task runs at once", "{}"),
        ("overhead_s", "overhead: no task running", "{:.1f}"),
        ("overhead_fraction", "  as a fraction of wall", "{:.0%}"),
        ("before_first_task_s", "  before the first task", "{:.1f}"),
        ("between_tasks_s", "  between tasks", "{:.1f}"),
        ("after_last_task_s", "  after the last task", "{:.1f}"),
        ("no_work_task_s", "no Ray work task running", "{:.1f}"),
        ("subflow_start_after_s", "sub-flow starts after (s)", "{:.1f}"),
        ("first_task_after_subflow_s", "first task after sub-flow start (s)", "{:.1f}"),
        ("n_task_runs", "task runs", "{}"),
        ("n_cached", "  cached", "{}"),
        ("import_s", "process imports (not in wall)", "{:.1f}"),
    ]
    rows = []
    for key, label, fmt in metrics:
        row = {"metric": label, "key": key}
        for i, run in enumerate(runs, 1):
            value = run.get(key)
            row[f"run{i}"] = value
            row[f"run{i}_text"] = "-" if value is None else fmt.format(value)
        rows.append(row)
    print_table(rows, [("metric", "{}")] + [(f"run{i}_text", "{}", run["label"]) for i, run in enumerate(runs, 1)],
                title="Where the wall time goes")
    for run in runs:
        print(f"{run['label']}: longest gaps: " + "; ".join(
            f"{g['seconds']:.1f}s after {g['after']} before {g['before']}" for g in run["longest_gaps"]))
    print(f"Prefect server: start {server_start_s:.1f}s, stop {server_stop_s:.1f}s (once per session, not in wall)")

    run1 = runs[0]
    run2 = runs[1] if len(runs) > 1 else None
    summary = {
        "model": model_kind, "flow_s": run1["wall_s"], "work_s": run1["work_s"], "busy_s": run1["busy_s"],
        "overhead_s": run1["overhead_s"], "overhead_fraction": run1["overhead_fraction"],
        "overhead_per_task_s": run1["overhead_s"] / run1["n_task_runs"] if run1["n_task_runs"] else None,
        "task_runs": run1["n_task_runs"], "work_task_runs": run1["n_work_tasks"],
        "cached_run_s": run2["wall_s"] if run2 else None, "cached_overhead_s": run2["overhead_s"] if run2 else None,
        "second_run_all_work_cached": run2["all_work_cached"] if run2 else None,
        "second_run_same_champion": (run2["raw"]["champion_version"] == run1["raw"]["champion_version"])
        if run2 else None,
        "prefect_server_start_s": server_start_s, "prefect_server_stop_s": server_stop_s,
        "states_final": all(r["states_final"] for r in runs),
    }
    print(f"\nsummary: the flow took {run1['wall_s']:.1f}s; tasks ran {run1['work_s']:.1f}s in total over "
          f"{run1['busy_s']:.1f}s of busy time; no task was running for {run1['overhead_s']:.1f}s "
          f"({run1['overhead_fraction']:.0%} of wall, {summary['overhead_per_task_s']:.2f}s per task run over "
          f"{run1['n_task_runs']})"
          + (f"; the re-run took {run2['wall_s']:.1f}s, every work task cached: {run2['all_work_cached']}"
             if run2 else ""))
    for run in runs:
        for r in run["raw"]["task_runs"]:  # offsets from the call's start, easier to read than epochs
            r["start_s"] = None if r["start"] is None else r["start"] - run["raw"]["call_start"]
            r["end_s"] = None if r["end"] is None else r["end"] - run["raw"]["call_start"]
    finish("pipeline", rows, args, device=device, extra={
        "sweep": sweep, "model": model, "summary": summary, "kinds": kind_rows,
        "versions": library_versions("prefect", "prefect-ray", "ray", "mlflow", "torch"),
        "runs": runs,
        "definitions": {
            "wall_s": "seconds of the compress_sweep(...) call in its process (imports excluded)",
            "work_s": "sum over the task runs of total_run_time (else end - start); tasks overlap",
            "busy_s": "length of the union of the task runs' [start, end] intervals, clipped to the call",
            "overhead_s": "wall_s - busy_s: time when no task run of the flow or its sub-flow was running",
            "no_work_task_s": "wall_s - the union of the Ray work tasks' intervals (decompose, LASER, evaluate, "
                              "export): also counts the registry and paired tasks of the flow process",
            "task runs": "task runs of the flow run and of its sub-flow compress-sweep-on-ray, read back from the "
                         "Prefect API; the parent's task run standing for the sub-flow call is left out",
        }})
    if args.keep:
        print(f"kept {work}")
        holder._finalizer.detach()  # noqa: SLF001
    else:
        holder.cleanup()


if __name__ == "__main__":
    main()
