"""Benchmark: every layer of a 7B-shaped model x 8 rank configurations, decompose only, on a Ray cluster.

    python bench/scale.py [--model PATH|tiny] [--nodes 1|2] [--cpus-per-node N] [--layers all] [--ranks R1,R2,R3 ...]
                          [--keep] [--json] [--out FILE]

Method. The real flow -- ``flows.compress_sweep.compress_sweep(evaluate="none", layers=..., ranks=...)``, nothing
copied -- runs in this process against a Prefect server started for the run (own ``PREFECT_HOME`` in the
work folder, so the task-result cache starts empty) and a Ray cluster started for the run
(:class:`flows.runtime.local_cluster.LocalRayCluster`: ``--nodes 1`` a head with all CPUs, ``--nodes 2`` a head and a
second ``ray start --address`` with ``--cpus-per-node`` each, token auth, stopped by PID), through
``ray_address``. Factor artifacts and a fresh MLflow sqlite store go to the work folder (deleted afterwards
unless ``--keep``), so every decomposition is computed, none reused. Measured:

* **wall**: the ``compress_sweep(...)`` call (imports and cluster start reported apart);
* **per task**: each ``decompose-layer`` task (one layer, all rank configurations; Ray's own start and end
  times from the state API) -- mean, median, max -- and the node that ran it;
* **peak RSS per worker**: the ``VmHWM`` of every Ray worker process that ran a decompose task, sampled from
  ``/proc`` every 0.5 s (its peak over all the tasks it ran), and the flow process's own;
* **bytes read per task**: the layer's attention tensors as the checkpoint index sizes them (what a task must
  read), and the workers' measured ``/proc/<pid>/io`` deltas over the run divided by their tasks:
  ``read_bytes`` (fetched from storage, memory-mapped reads included; 0 when the page cache holds the file)
  and ``rchar`` (read system calls: safetensors maps the file, so these are mostly imports);
* **registry writes**: versions registered (one per rank configuration), descriptions and the decision record,
  and the seconds the flow spent registering (it copies every layer's factors into the store twice: the
  variant folder and the pyfunc model).

Defaults: ``--model runs/synthetic-7b`` (bench/make_checkpoint.py: the Llama-2-7B shape, 32 layers, MHA
tensor (4096, 128, 4, 32)), all layers, the 8 rank configurations of ``RANKS_7B``. ``--model tiny``: the tiny
random Llama of tests/flows/conftest.py (4 layers), rank configurations scaled to it -- the orchestration alone.
Target (issue 10): 32 x 8 in at most 10 minutes on 2 CPUs, peak RSS under 4 GB per worker.

Results: ``bench/results/scale.json`` (``scale-2nodes.json`` with ``--nodes 2``; ``-tiny`` with ``--model tiny``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, base_parser, finish, library_versions, print_table  # noqa: E402

#: Llama-2-7B tensor (4096, 128, 4, 32): from the issue's moderate (512, 64, 4) down to (32, 8, 2), whole-model
#: attention compression ~10x to ~1000x+
RANKS_7B = [(512, 64, 4), (512, 32, 4), (256, 64, 4), (256, 32, 4), (128, 32, 4), (128, 16, 2), (64, 16, 2),
            (32, 8, 2)]
#: the tiny Llama's kv tensor (64, 16, 6, 2)
RANKS_TINY = [(32, 16, 6), (32, 8, 4), (16, 8, 4), (16, 8, 2), (8, 8, 2), (8, 4, 2), (4, 4, 2), (2, 2, 2)]
TARGET_WALL_S = 600
TARGET_RSS_MIB = 4096


class ProcSampler:
    """Every ``interval`` s, for each pid of the cluster's sessions and this process: peak RSS (VmHWM) and the
    I/O counters (first and last seen)."""

    def __init__(self, pids_fn, interval: float = 0.5):
        self.pids_fn, self.interval = pids_fn, interval
        self.seen: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        for node, pids in self.pids_fn().items():
            for pid in pids:
                info = _proc_info(pid)
                if info is None:
                    continue
                entry = self.seen.setdefault(pid, {"node": node, "first_io": info["io"], "hwm_kib": 0})
                entry["hwm_kib"] = max(entry["hwm_kib"], info["hwm_kib"])
                entry["last_io"], entry["comm"] = info["io"], info["comm"]


def _proc_info(pid: int) -> dict | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        io = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    counters = dict(line.split(": ") for line in io.splitlines() if ": " in line)
    return {"comm": fields.get("Name", "").strip(), "hwm_kib": int(fields.get("VmHWM", "0 kB").split()[0]),
            "io": {k: int(counters.get(k, 0)) for k in ("read_bytes", "rchar")}}


def layer_payload_bytes(folder: Path, layer: int) -> int:
    """Bytes of the layer's attention tensors in the checkpoint (index sizes): what a decompose task reads."""
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.composed import checkpoint_tensor_sizes

    ckpt = Checkpoint(folder)
    sizes = checkpoint_tensor_sizes(folder)
    return sum(sizes[name][1] for name in ckpt.attention_names(layer))


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    return {"head": git("rev-parse", "--short", "HEAD"), "tucker_commit": git("log", "-1", "--format=%h %s", "--",
                                                                              "tensorllm/tucker.py")[:100],
            "tucker_dirty": bool(git("status", "--porcelain", "--", "tensorllm/tucker.py"))}


def run(args) -> dict:
    from flows.runtime.local_cluster import LocalRayCluster
    from flows.runtime.services import prefect_server, set_quiet_defaults

    work = Path(args.workdir).resolve() / f"scale-{args.nodes}n-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    set_quiet_defaults()
    os.environ.update({"PREFECT_HOME": str(work / "prefect"), "TOKENIZERS_PARALLELISM": "false",
                       "HF_HUB_OFFLINE": "1"})
    model = Path(args.model).resolve()
    try:
        with prefect_server(work / "prefect") as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            start = time.perf_counter()
            with LocalRayCluster(nodes=args.nodes, cpus_per_node=args.cpus_per_node, folder=work / "ray") as cluster:
                cluster_s = time.perf_counter() - start
                start = time.perf_counter()
                from flows.compress_sweep import compress_sweep
                from flows.runtime.services import drain_prefect_clients
                import_s = time.perf_counter() - start
                params = dict(model=str(model), evaluate="none", layers=args.layers, ranks=args.ranks,
                              ray_address=cluster.address, mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                              artifacts_root=str(work / "artifacts"))
                me = os.getpid()
                with ProcSampler(lambda: {**cluster.pids(), "flow": [me]}) as sampler:
                    start = time.perf_counter()
                    summary = compress_sweep(**params)
                    wall = time.perf_counter() - start
                drain_prefect_clients()
                time.sleep(2)  # the state API lists a task once its end event reached the GCS
                tasks = cluster.tasks("decompose-layer")
                per_node_cpus = {n.name: n.cpus for n in cluster.started}
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"summary": summary, "wall_s": wall, "cluster_start_s": cluster_s, "import_s": import_s,
            "tasks": tasks, "procs": sampler.seen, "cpus": per_node_cpus, "params": params, "work": str(work)}


def analyse(result: dict, model: Path) -> tuple[list[dict], list[dict], dict]:
    summary, tasks, procs = result["summary"], result["tasks"], result["procs"]
    done = [t for t in tasks if t["state"] == "FINISHED" and t["start"] and t["end"]]
    seconds = [t["end"] - t["start"] for t in done]
    workers = {t["worker_pid"] for t in done}
    worker_hwm = {pid: procs[pid]["hwm_kib"] / 1024 for pid in workers if pid in procs}
    io = {k: sum(procs[p]["last_io"][k] - procs[p]["first_io"][k] for p in workers if p in procs)
          for k in ("read_bytes", "rchar")}
    layers = summary["layers"]
    payload = layer_payload_bytes(model, layers[0])
    variants = summary["variants"]
    register_s = sum(v["register_seconds"] for v in variants)
    flow_hwm = max((p["hwm_kib"] for p in procs.values() if p["node"] == "flow"), default=0) / 1024
    n_decompositions = len(summary["decompositions"])
    row = {"model": model.name, "nodes": len(result["cpus"]), "cpus": sum(result["cpus"].values()),
           "layers": len(layers), "rank_configs": len(variants), "decompositions": n_decompositions,
           "tasks": len(done), "wall_s": result["wall_s"],
           "task_s_mean": statistics.mean(seconds) if seconds else None,
           "task_s_median": statistics.median(seconds) if seconds else None,
           "task_s_max": max(seconds) if seconds else None,
           "per_decomposition_s": statistics.mean(d["seconds"] for d in summary["decompositions"]),
           "peak_rss_worker_mib": max(worker_hwm.values(), default=None), "peak_rss_flow_mib": flow_hwm,
           "payload_bytes_per_task": payload,
           "read_bytes_per_task": io["read_bytes"] / len(done) if done else None,
           "rchar_per_task": io["rchar"] / len(done) if done else None,
           "registry_versions": len(variants), "registry_writes": summary["registry_writes"],
           "register_s": register_s, "cluster_start_s": result["cluster_start_s"],
           "rel_error_max": max(v["rel_error_max"] for v in variants),
           "all_converged": all(d["converged"] is not False for d in summary["decompositions"]),
           "meets_wall_target": result["wall_s"] <= TARGET_WALL_S,
           "meets_rss_target": max(worker_hwm.values(), default=0) < TARGET_RSS_MIB}
    nodes = []
    for name, cpus in result["cpus"].items():
        mine = [t for t in done if t["node"] == name]
        hwm = [worker_hwm[t["worker_pid"]] for t in mine if t["worker_pid"] in worker_hwm]
        nodes.append({"node": name + (" (head)" if name == "node_0" else ""), "cpus": cpus, "tasks": len(mine),
                      "workers": len({t["worker_pid"] for t in mine}),
                      "task_s_mean": statistics.mean(t["end"] - t["start"] for t in mine) if mine else None,
                      "peak_rss_worker_mib": max(hwm, default=None)})
    variant_rows = [{"variant": v["name"], "version": v["version"], "ranks": "x".join(map(str, v["ranks"])),
                     "attention_cr": v["whole_model_attention_cr"], "bytes_after_gb": v["bytes_after"] / 1e9,
                     "rel_error_mean": v["rel_error_mean"], "rel_error_max": v["rel_error_max"],
                     "decompose_s": v["decompose_seconds"], "register_s": v["register_seconds"]} for v in variants]
    return [row], nodes, {"variants": variant_rows}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--model", default="runs/synthetic-7b", help="a checkpoint folder, or 'tiny' (a tiny random "
                                                                     "Llama built in the work folder)")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="Ray nodes on this machine")
    parser.add_argument("--cpus-per-node", type=int, default=None,
                        help="CPUs each node offers Ray (default: all CPUs on one node, split over two)")
    parser.add_argument("--layers", default="all", help="'all', 'last N' or a comma-separated list")
    parser.add_argument("--ranks", action="append", default=None, metavar="R1,R2,R3",
                        help="rank configuration (repeat); default: RANKS_7B, or RANKS_TINY with --model tiny")
    parser.add_argument("--workdir", default=str(REPO_ROOT / "runs" / "bench-scale"), help="work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (artifacts, stores, logs)")
    parser.add_argument("--out", default=None, help="results file (default bench/results/scale[-2nodes][-tiny].json)")
    args = parser.parse_args()

    tiny = args.model == "tiny"
    if tiny:
        from pipeline import make_tiny_model

        args.model = str(make_tiny_model(Path(args.workdir).resolve() / "tiny-llm"))
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: no config.json there (make the 7B-shaped checkpoint with "
                         "bench/make_checkpoint.py, or use --model tiny)")
    args.cpus_per_node = args.cpus_per_node or max(1, (os.cpu_count() or 2) // args.nodes)
    args.ranks = ([tuple(int(x) for x in r.split(",")) for r in args.ranks] if args.ranks
                  else (RANKS_TINY if tiny else RANKS_7B))
    args.ranks = [list(r) for r in args.ranks]
    if args.layers not in ("all",) and not args.layers.startswith("last"):
        args.layers = [int(x) for x in args.layers.split(",")]

    result = run(args)
    rows, nodes, extra = analyse(result, Path(args.model))
    print_table(rows, [("wall_s", "{:.1f}", "wall s"), ("layers", "{}"), ("rank_configs", "{}", "ranks"),
                       ("tasks", "{}"), ("task_s_mean", "{:.1f}", "s/task mean"), ("task_s_max", "{:.1f}", "s/task max"),
                       ("per_decomposition_s", "{:.2f}", "s/decomp"),
                       ("peak_rss_worker_mib", "{:.0f}", "worker peak MiB"), ("peak_rss_flow_mib", "{:.0f}", "flow MiB"),
                       ("payload_bytes_per_task", "{:,.0f}", "bytes/task (index)"),
                       ("read_bytes_per_task", "{:,.0f}", "read_bytes/task"),
                       ("registry_versions", "{}", "versions"), ("registry_writes", "{}", "writes"),
                       ("register_s", "{:.1f}", "register s")],
                title=f"Decompose-only run of {Path(args.model).name} on {args.nodes} Ray node(s)")
    print_table(nodes, [("node", "{}"), ("cpus", "{}"), ("tasks", "{}"), ("workers", "{}"),
                        ("task_s_mean", "{:.1f}", "s/task mean"), ("peak_rss_worker_mib", "{:.0f}", "worker peak MiB")],
                title="Per node")
    print_table(extra["variants"], [("variant", "{}"), ("version", "{}"), ("attention_cr", "{:.1f}", "attention CR"),
                                    ("rel_error_mean", "{:.4f}", "rel err mean"), ("rel_error_max", "{:.4f}", "max"),
                                    ("decompose_s", "{:.1f}", "decompose s (sum)"), ("register_s", "{:.1f}", "register s")],
                title="Registered whole-model variants (nothing promoted)")
    name = "scale" + ("-2nodes" if args.nodes == 2 else "") + ("-tiny" if tiny else "")
    out = args.out or REPO_ROOT / "bench" / "results" / f"{name}.json"
    finish(name, rows, args, extra={"per_node": nodes, **extra, "git": git_state(), "params": result["params"],
                                    "cluster_start_s": result["cluster_start_s"], "import_s": result["import_s"],
                                    "targets": {"wall_s": TARGET_WALL_S, "worker_rss_mib": TARGET_RSS_MIB},
                                    "versions": library_versions("torch", "ray", "prefect", "mlflow")}, path=out)


if __name__ == "__main__":
    main()
