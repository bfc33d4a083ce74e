"""The child side of bench.pipeline: one ``compress_sweep(...)`` call in a fresh process, its task runs read back.

:func:`run_flow` runs in the process :func:`bench.common.run_isolated` starts (``PREFECT_API_URL`` set by the
parent); it returns plain records (epoch seconds) for :mod:`bench.pipeline_analysis`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import REPO_ROOT

# task-run name prefix -> kind, first match wins (the task_run_name templates in tasks/); the first five run
# on Ray workers, the rest in the flow process
KINDS = [("decompose-layer", "decompose-layer"), ("laser-", "laser-ffn"), ("evaluate-", "evaluate"),
         ("perplexity-", "perplexity"), ("export-", "export-factorised"), ("register-", "register-variant"), ("paired-val", "paired-validation"),
         ("paired-comparison", "paired-comparison"), ("update-metrics", "update-metrics")]
WORK_KINDS = ("decompose-layer", "laser-ffn", "evaluate", "perplexity", "export-factorised")
KIND_ORDER = [kind for _, kind in KINDS] + ["other"]


def task_kind(name: str) -> str:
    return next((kind for prefix, kind in KINDS if name.startswith(prefix)), "other")


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

    if "ranks" in params:  # JSON turned the tuples into lists
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
        "champion": next((v["name"] for v in summary["variants"] if v["version"] == summary["champion_version"]), None),
        "promoted": bool(summary["decision"].get("promote")),
        "generation_guard": summary.get("generation_guard"),
        "n_variants": len(summary["variants"]), "decision": summary["decision"].get("sentence"),
        "best_composed": (summary.get("best_composed") or {}).get("name"),
    }


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


def child_env(prefect_home: Path, api_url: str) -> dict:
    from flows.runtime.services import QUIET_DEFAULTS  # stdlib-only module

    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**QUIET_DEFAULTS, "PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": api_url,
            "PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
