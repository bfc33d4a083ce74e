"""bench.pipeline's analysis: the sweep's phases read from task-run intervals, and per-core busy fractions from
/proc/stat counters (synthetic samples: no timing)."""

from __future__ import annotations

import pytest

from bench.pipeline_analysis import CpuSampler, phases, read_proc_stat


def task(name: str, kind: str, start: float, end: float) -> dict:
    return {"name": name, "kind": kind, "start": start, "end": end, "run_s": end - start, "state": "Completed"}


def test_phases_follow_the_task_runs():
    run = {"call_start": 0.0, "call_end": 100.0, "task_runs": [
        task("decompose-layer-28", "decompose-layer", 2, 12),
        task("evaluate-baseline-qa_wikidata-val", "evaluate", 1, 30),
        task("register-baseline", "register-variant", 40, 41), task("register-layer028", "register-variant", 41, 45),
        task("evaluate-layer028-qa_wikidata-val", "evaluate", 46, 70),  # a guard evaluation: val, after registering
        task("evaluate-baseline-qa_wikidata-test", "evaluate", 72, 80),
        task("evaluate-layer028-counterfact-test", "evaluate", 81, 90),
    ]}
    got = {p["phase"].strip(): (p["start"], p["end"]) for p in phases(run)}
    assert got == {"decompose + validation": (0, 40), "of which decomposition": (2, 12), "registration": (40, 45),
                   "generation guard": (45, 72), "test + transfer": (72, 90), "export + report": (90, 100)}
    # the top-level phases tile the call: their seconds add up to its wall time
    assert sum(p["seconds"] for p in phases(run) if not p["phase"].startswith(" ")) == pytest.approx(100)


def test_core_utilisation_from_counters():
    sampler = CpuSampler()
    # (busy, total) jiffies: cpu0 busy 50 of 100 ticks, cpu1 busy 100 of 100, between t=10 and t=20
    sampler.samples = [(0.0, {"cpu": (0, 0), "cpu0": (0, 0), "cpu1": (0, 0)}),
                       (10.0, {"cpu": (100, 200), "cpu0": (50, 100), "cpu1": (50, 100)}),
                       (20.0, {"cpu": (250, 400), "cpu0": (100, 200), "cpu1": (150, 200)})]
    got = sampler.utilisation(10.0, 20.0)
    assert got == {"cpu": pytest.approx(0.75), "cpu0": pytest.approx(0.5), "cpu1": pytest.approx(1.0)}
    assert CpuSampler().utilisation(0, 1) is None  # no samples: unknown, not zero


def test_proc_stat_has_every_core():
    import os

    stat = read_proc_stat()
    assert "cpu" in stat and sum(k.startswith("cpu") and k != "cpu" for k in stat) >= 1
    assert len(stat) - 1 == os.cpu_count() or len(stat) - 1 >= len(os.sched_getaffinity(0))
    assert all(0 <= busy <= total for busy, total in stat.values())
