"""The parent side of bench.pipeline: what the task runs of one flow call say (busy, overhead, gaps), the
sweep's phases, and how busy each core was (``/proc/stat`` sampled while the flow ran).

Phases are read from the task runs' intervals (no copy of the flow's logic): *decompose + validation* from the
call's start to the first registration, *registration*, the *generation guard* from the last registration to the
first test-split evaluation, *test + transfer* until the last test-split evaluation ends, and *export + report*
until the call returns. *decomposition* (the decompose and LASER tasks' span) lies inside the first one.
"""

from __future__ import annotations

import re
import threading
import time

from bench.pipeline_flow import WORK_KINDS


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


TEST_EVAL = re.compile(r"(^|-)test($|-)")


def phases(run: dict) -> list[dict]:
    """The sweep's phases as ``{"phase", "start", "end", "seconds"}`` (epoch seconds; see the module docstring)."""
    lo, hi, runs = run["call_start"], run["call_end"], [r for r in run["task_runs"] if r["start"] and r["end"]]

    def span(pred):
        chosen = [r for r in runs if pred(r)]
        return (min(r["start"] for r in chosen), max(r["end"] for r in chosen)) if chosen else None

    register = span(lambda r: r["kind"] == "register-variant")
    test = span(lambda r: r["kind"] == "evaluate" and TEST_EVAL.search(r["name"]))
    decompose = span(lambda r: r["kind"] in ("decompose-layer", "laser-ffn"))
    cuts = [("decompose + validation", lo, register[0] if register else hi)]
    if register:
        cuts.append(("registration", register[0], register[1]))
        cuts.append(("generation guard", register[1], test[0] if test else hi))
    if test:
        cuts += [("test + transfer", test[0], test[1]), ("export + report", test[1], hi)]
    if decompose:
        cuts.insert(1, ("  of which decomposition", decompose[0], decompose[1]))
    return [{"phase": name, "start": a, "end": b, "seconds": max(0.0, b - a)} for name, a, b in cuts]


def read_proc_stat() -> dict[str, tuple[int, int]]:
    """Per CPU (``cpu0``, ``cpu1``, ... and ``cpu`` for all): (busy, total) jiffies since boot."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


class CpuSampler:
    """Samples ``/proc/stat`` every ``interval`` seconds in a thread (the flow runs in a child process; the
    machine's counters see every process, so other work on a shared machine counts as busy too)."""

    def __init__(self, interval: float = 1.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), read_proc_stat()))
            if self._stop.wait(self.interval):
                self.samples.append((time.time(), read_proc_stat()))
                return

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def utilisation(self, start: float, end: float) -> dict[str, float] | None:
        """Busy fraction of each CPU (and ``cpu``: all of them) between the samples that bracket [start, end]."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        if not before or not after or after[0][0] <= before[-1][0]:
            return None
        a, b = before[-1][1], after[0][1]
        return {cpu: (b[cpu][0] - a[cpu][0]) / max(1, b[cpu][1] - a[cpu][1]) for cpu in b if cpu in a}
