"""Benchmark: orchestration overhead of the Prefect + Ray sweep, read from the real flow's own task runs.

    python -m bench.pipeline [--quick] [--sweep default|small|tiny] [--json] [--threads N] [--no-rerun] [--keep]

Method. ``flows.compress_sweep.compress_sweep(...)`` -- the flow users run, nothing copied -- is called in a
fresh Python process against a real local Prefect server (``flows.runtime.services.prefect_server`` with its own
``PREFECT_HOME`` in a temporary folder, so the task-result cache starts empty), on the private local Ray
that the flow starts itself (``ray_runner(None)``), registering into an MLflow sqlite store in the same
temporary folder. Afterwards the process reads back from the Prefect API the task runs of that flow run
and of its sub-flow ``compress-sweep-on-ray`` (``read_task_runs`` filtered by the two flow-run ids; the
parent's task run standing for the sub-flow call is left out) and the overhead is derived from them:

* per kind of task (decompose-layer, evaluate, perplexity, export-factorised, register-variant, paired-validation,
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

**Phases and cores** (:mod:`bench.pipeline_analysis`): the wall time of each phase of the sweep (decompose +
validation, registration, the generation guard, test + transfer, export + report), read from the task runs'
intervals, and the busy fraction of every core over the flow call and over each phase, from ``/proc/stat``
sampled every second by this (parent) process while the flow runs. ``/proc/stat`` counts every process on the
machine: on a shared machine the cores look busier than the flow keeps them (the load average is recorded).

Modes. Full (the default, ``--sweep default``): **the default sweep** -- every ``SweepConfig`` default, as
``make sweep`` runs it (SmolLM2-135M-Instruct, layers 26-29 x 5 rank configurations, 1,000 validation and 400
test items, the generation guard, the transfer dataset) -- with a fresh result cache, registry and artifacts;
the line to compare with the documented run is its champion and decision. ``--sweep small``: SmolLM2, layers
[28, 29] x 2 rank configurations, val_limit 100, test_limit 50, teacher-forced only. ``--quick`` (``--sweep
tiny``): the tiny random GQA Llama of tests/flows/conftest.py (the work is almost nothing, so the numbers are
the orchestration itself), layers [2, 3] x 1 rank configuration, 8 items, teacher-forced only.

Results: ``bench/results/pipeline.json`` (``pipeline-quick.json`` with --quick, ``pipeline-small.json``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


from bench.common import (base_parser, finish, library_versions, pick_device, print_table, run_isolated,
                          setup_threads)
from bench.pipeline_analysis import CpuSampler, analyse, phases
from bench.pipeline_flow import KIND_ORDER, WORK_KINDS, child_env, make_tiny_model
from bench.pipeline_flow import __file__ as FLOW_FILE

SWEEPS = {
    "default": {},  # every SweepConfig default: the sweep `make sweep` runs
    # flow parameters; model, mlflow_tracking_uri and artifacts_root are filled in per run
    "quick": dict(datasets=["qa_wikidata"], layers=[2, 3], ranks=[(0.5, 0.5, 0.5)], val_limit=8, test_limit=8,
                  generate=False, selection_metric="top1_accuracy", test_top_k=1, batch_size=8),
    "tiny": dict(datasets=["qa_wikidata"], layers=[2, 3], ranks=[(16, 8, 2), (0.5, 0.5, 0.5)], val_limit=32,
                 test_limit=32, generate=False, selection_metric="top1_accuracy", test_top_k=1, batch_size=16),
    "small": dict(datasets=["qa_wikidata"], layers=[28, 29], ranks=[(0.75, 0.75, 0.5), (0.5, 0.5, 0.5)],
                    val_limit=100, test_limit=50, generate=False, selection_metric="top1_accuracy", test_top_k=1,
                    batch_size=16),
}

# ------------------------------------------------------------------------------------------------- main

def _fmt_states(states: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def print_phases(run: dict) -> None:
    """Each phase's wall time and the busy fraction of every core during it (run 1)."""
    cpus = sorted((c for c in (run["cpu"] or {}) if c != "cpu"), key=lambda c: int(c[3:]))
    rows = [{"phase": p["phase"], "s": p["seconds"],
             **{c: (p["cpu"] or {}).get(c) for c in ["cpu", *cpus]}} for p in run["phases"]]
    rows.append({"phase": "the flow call", "s": run["wall_s"], **{c: (run["cpu"] or {}).get(c) for c in ["cpu", *cpus]}})
    print_table(rows, [("phase", "{}"), ("s", "{:.1f}", "wall s"), ("cpu", "{:.0%}", "all cores busy")]
                + [(c, "{:.0%}", f"{c} busy") for c in cpus],
                title=f"{run['label']}: phases and core utilisation (/proc/stat, every process on the machine)")


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--sweep", choices=("default", "small", "tiny"), default=None,
                        help="the default sweep (full default), a small SmolLM2 sweep, or the tiny model (--quick)")
    parser.add_argument("--no-rerun", action="store_true", help="skip run 2 (same parameters: every work task cached)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores, artifacts)")
    args = parser.parse_args()

    from flows.runtime.services import prefect_server

    setup_threads(args.threads)  # the flow process's torch threads; Ray gives each task num_cpus=1
    device = pick_device(args.device)
    if device != pick_device(None):
        print(f"note: the flow runs on the device tasks.resources.best_device() picks ({pick_device(None)}); "
              f"--device {device} is only recorded", flush=True)
    sweep_kind = args.sweep or ("tiny" if args.quick else "default")
    model_kind = "tiny" if sweep_kind == "tiny" else "smollm2"
    sweep = dict(SWEEPS["quick" if sweep_kind == "tiny" else sweep_kind])
    timeout = 900 if sweep_kind == "tiny" else 3600
    holder = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
    work = Path(holder.name)
    print(f"device={device}  quick={args.quick}  model={model_kind}  sweep={sweep}  work={work}", flush=True)
    model = str(make_tiny_model(work / "tiny-llm")) if model_kind == "tiny" else "smollm2-135m"
    params = {**sweep, **({"ranks": [list(r) for r in sweep["ranks"]]} if "ranks" in sweep else {}), "model": model,
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
            with CpuSampler() as cpu:
                child = run_isolated(FLOW_FILE, "run_flow", {"params": params, "log_file": str(log_file)},
                                     timeout=timeout, env=child_env(home, api_url))
            if not child.get("ok"):
                tail = log_file.read_text(errors="replace")[-4000:] if log_file.is_file() else ""
                raise SystemExit(f"{label} failed: {child.get('error') or child}\n"
                                 f"--- log tail ({log_file}) ---\n{tail}")
            raw = child["result"]
            stats = analyse(raw)
            stats["phases"] = [{**p, "cpu": cpu.utilisation(p["start"], p["end"])} for p in phases(raw)]
            stats["cpu"] = cpu.utilisation(raw["call_start"], raw["call_end"])
            runs.append({"label": label, "process_wall_s": child["wall_s"], **stats, "raw": raw,
                         "cpu_samples": [(t, {c: list(v) for c, v in s.items()}) for t, s in cpu.samples]})
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
    shape = (f"layers {sweep['layers']} x ranks {sweep['ranks']}, val/test limit {sweep['val_limit']}/"
             f"{sweep['test_limit']}" if sweep else "every SweepConfig default")
    title = f"compress_sweep, model {model_kind}, {shape}: task runs by kind (from the Prefect API)"
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
    print_phases(runs[0])
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
        "champion": run1["raw"]["champion"], "promoted": run1["raw"]["promoted"], "decision": run1["raw"]["decision"],
        "generation_guard": run1["raw"]["generation_guard"],
        "phases_s": {p["phase"].strip(): p["seconds"] for p in run1["phases"]},
        "cpu_busy": run1["cpu"],
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
    print(f"champion: {summary['champion']} (promoted: {summary['promoted']}); decision: {summary['decision']}")
    finish("pipeline" if sweep_kind == "default" or args.quick else f"pipeline-{sweep_kind}", rows, args, device=device, extra={
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
