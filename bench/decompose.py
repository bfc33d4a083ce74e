"""Benchmark: our shared-factor Tucker (tensorllm.tucker.tucker_decompose) against TensorLy's partial_tucker.

    python bench/decompose.py [--quick] [--json] [--device cpu|cuda] [--cases NAME ...] [--no-tensorly]

Same tensors, same ranks, both methods:

* ``smollm2``: a real SmolLM2-135M-Instruct layer (``--layer``, default 15), tensorised with KV grouping:
  shape (576, 64, 8, 3).
* ``gpt2``: a GPT-2-small-shaped (768, 64, 4, 12) tensor.
* ``llama7b``: a Llama-2-7B-shaped (4096, 128, 4, 32) tensor (one layer's Q/K/V/O, 256 MiB fp32).
* ``llama7b-1k`` (quick only): a reduced 7B-like (1024, 128, 4, 32) tensor, so TensorLy fits in --quick.

The random tensors are i.i.d. Gaussian (std 0.02, fixed seed): no low-rank structure, the hardest case
for HOOI convergence (the error barely moves between sweeps); the SmolLM2 layer is the realistic one.
Each case runs at a "small" rank (~220-240x compression of the layer, as in the paper) and a
"moderate" rank (~10-12x).

Measured per case:

* ours: ``tucker_decompose(x, ranks)`` with its defaults (n_iter_max=25, tol=1e-6), and with
  ``tol=1e-4`` (TensorLy's tolerance) for a like-for-like stopping rule;
* TensorLy: ``partial_tucker(x, rank=[R1, R2, R3], modes=[0, 1, 2])`` with ALL its defaults
  (init='svd', svd='truncated_svd', tol=1e-4, n_iter_max=100), backend 'pytorch', run in a fresh
  process with a timeout (``--tensorly-timeout``); on the 7B shape it runs once (no repeats);
* ``speedup`` = TensorLy seconds / ours seconds; both relative errors ||X - X_hat||_F / ||X||_F;
* the floor: one pass over the tensor (``pass``: the mode-4 Gram X_(4) X_(4)^T, a single GEMM that reads
  the tensor once) and the mode-1 Gram GEMM X_(1) X_(1)^T, and ours as a multiple of each;
* a convergence trace of ours: relative error and time after 0 (ST-HOSVD only), 1, 2, ... HOOI sweeps,
  obtained by chaining ``tucker_decompose(x, ranks, init=previous.factors, n_iter_max=1, tol=0)`` (the
  HOOI state is just the factors, so the iterates equal those of one long run); ``sweep_s`` is one
  call's time minus the time of a zero-sweep call (its fixed cost: core projection + explicit error).

Results: ``bench/results/decompose.json`` (``decompose-quick.json`` with --quick).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (base_parser, finish, library_versions, pick_device, print_table,  # noqa: E402
                    run_isolated, sync, time_call)

SEED = 0
SMOLLM2_LAYER = 15

# name -> (shape or None for the real layer, small ranks, moderate ranks)
CASES = {
    "smollm2": (None, (6, 4, 2), (72, 32, 4)),
    "gpt2": ((768, 64, 4, 12), (12, 4, 2), (96, 32, 4)),
    "llama7b-1k": ((1024, 128, 4, 32), (48, 4, 2), (128, 64, 4)),
    "llama7b": ((4096, 128, 4, 32), (64, 4, 2), (512, 64, 4)),
}
FULL_CASES = ("smollm2", "gpt2", "llama7b")
QUICK_CASES = ("smollm2", "gpt2", "llama7b-1k", "llama7b")
# --quick: TensorLy is skipped on these (the 7B shape takes ~10 min with TensorLy's defaults)
QUICK_NO_TENSORLY = {"llama7b"}
QUICK_SKIP = {("llama7b", "moderate")}  # ours at (512, 64, 4) takes minutes too


def make_tensor(case: str, device: str = "cpu", layer: int = SMOLLM2_LAYER):
    """The case's 4-D tensor in float32 on ``device`` (deterministic: the same in every process)."""
    import torch

    shape = CASES[case][0]
    if shape is None:
        from tensorllm.checkpoint import Checkpoint
        from tensorllm.models import resolve_model
        from tensorllm.tensorise import tensorise

        ckpt = Checkpoint(resolve_model("smollm2-135m"))
        weights = ckpt.attention(layer).to(dtype=torch.float32)
        x = tensorise(weights, ckpt.shape, "kv")
    else:
        generator = torch.Generator().manual_seed(SEED)
        x = torch.randn(shape, generator=generator) * 0.02
    return x.to(device).contiguous()


def relative_error(x, x_hat) -> float:
    import torch

    return float(torch.linalg.vector_norm((x - x_hat).double()) / torch.linalg.vector_norm(x.double()))


def layer_params(shape) -> int:
    """Original MHA parameters the tensor holds (each weight appears once in the KV-grouped tensor)."""
    return math.prod(shape)


def tucker_params(shape, ranks) -> int:
    r1, r2, r3 = ranks
    return r1 * r2 * r3 * shape[3] + shape[0] * r1 + shape[1] * r2 + shape[2] * r3


# ------------------------------------------------------------------------------------- TensorLy (child)

def tensorly_case(case: str, ranks: list, device: str, repeats: int = 1, layer: int = SMOLLM2_LAYER) -> dict:
    """Run in a fresh process by run_isolated: TensorLy partial_tucker with its defaults, timed."""
    import tensorly as tl
    import torch
    from tensorly.decomposition import partial_tucker
    from tensorly.tenalg import multi_mode_dot

    tl.set_backend("pytorch")
    x = make_tensor(case, device, layer)
    warm = torch.randn(8, 6, 4, 3, device=device)  # first-call costs (libraries, CUDA handles) not timed
    partial_tucker(warm, rank=[2, 2, 2], modes=[0, 1, 2])
    out = None
    times, cpu = [], []
    for _ in range(repeats):
        sync(device)
        cpu_start = time.process_time()
        start = time.perf_counter()
        out = partial_tucker(x, rank=list(ranks), modes=[0, 1, 2])
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    (core, factors), rec_errors = out
    x_hat = multi_mode_dot(core, factors, modes=[0, 1, 2])
    return {"times_s": times, "cpu_s": cpu, "rel_error": relative_error(x, x_hat), "n_iter": len(rec_errors),
            "last_rec_error": float(rec_errors[-1]) if rec_errors else None}


# ------------------------------------------------------------------------------------------------- ours

def trace_convergence(x, ranks, device: str, n_sweeps: int) -> list[dict]:
    """Error and time after 0..n_sweeps HOOI sweeps of ours (chained one-sweep calls, see module doc)."""
    from tensorllm.tucker import tucker_decompose

    start = time_call(lambda: tucker_decompose(x, ranks, n_iter_max=0), device=device)
    result = start.result
    # fixed cost of a call that starts from given factors and runs no sweep
    fixed = time_call(lambda: tucker_decompose(x, ranks, init=result.factors, n_iter_max=0), device=device,
                      repeats=2).median
    rows = [{"sweeps": 0, "cum_s": start.median, "sweep_s": None, "rel_error": result.rel_error, "delta": None}]
    cumulative = start.median
    for k in range(1, n_sweeps + 1):
        step = time_call(lambda: tucker_decompose(x, ranks, init=result.factors, n_iter_max=1, tol=0.0),
                         device=device)
        sweep = max(step.median - fixed, 0.0)
        cumulative += sweep
        previous, result = result, step.result
        rows.append({"sweeps": k, "cum_s": cumulative, "sweep_s": sweep, "rel_error": result.rel_error,
                     "delta": previous.rel_error - result.rel_error})
    return rows


def floor_times(x, device: str, repeats: int) -> dict:
    """One full-tensor pass (mode-4 Gram, one GEMM) and the mode-1 Gram GEMM."""
    flat4 = x.reshape(-1, x.shape[3])
    flat1 = x.reshape(x.shape[0], -1)
    pass_t = time_call(lambda: flat4.T @ flat4, device=device, repeats=repeats, warmup=1)
    gram1 = time_call(lambda: flat1 @ flat1.T, device=device, repeats=repeats, warmup=1)
    return {"pass_s": pass_t.median, "gram1_s": gram1.median}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None,
                        help="cases to run (default: smollm2 gpt2 llama7b; quick adds llama7b-1k)")
    parser.add_argument("--levels", nargs="+", choices=("small", "moderate"), default=("small", "moderate"))
    parser.add_argument("--no-tensorly", action="store_true", help="skip TensorLy (ours and the floor only)")
    parser.add_argument("--tensorly-timeout", type=float, default=None,
                        help="seconds per TensorLy run before it is stopped (default 120 quick, 3600 full)")
    parser.add_argument("--trace-sweeps", type=int, default=None,
                        help="HOOI sweeps to trace per case (default 5 quick, 25 full; 3 on the 7B moderate case)")
    parser.add_argument("--layer", type=int, default=SMOLLM2_LAYER, help="SmolLM2 layer for the real case")
    args = parser.parse_args()

    import torch

    from tensorllm.tucker import tucker_decompose

    device = pick_device(args.device)
    quick = args.quick
    cases = args.cases or (QUICK_CASES if quick else FULL_CASES)
    tl_timeout = args.tensorly_timeout or (120.0 if quick else 3600.0)
    trace_default = args.trace_sweeps if args.trace_sweeps is not None else (5 if quick else 25)
    versions = library_versions("tensorly", "torch")
    print(f"device={device}  torch={versions['torch']}  tensorly={versions['tensorly']}  "
          f"threads={torch.get_num_threads()}  quick={quick}", flush=True)

    # warm up ours (kernels, LAPACK / cuSOLVER handles) on a tiny tensor
    tucker_decompose(torch.randn(16, 8, 4, 3, device=device), (4, 2, 2))

    rows, trace_rows = [], []
    for case in cases:
        x = make_tensor(case, device, args.layer)
        shape = tuple(x.shape)
        big = x.numel() >= 3e7
        repeats = 1 if (quick or big) else 3
        floor = floor_times(x, device, repeats=1 if quick else 3)
        for level in args.levels:
            if quick and (case, level) in QUICK_SKIP:
                continue
            ranks = CASES[case][1] if level == "small" else CASES[case][2]
            label = f"{case} {level}"
            print(f"[{time.strftime('%H:%M:%S')}] {label}: shape {shape}, ranks {ranks} ...", flush=True)
            row = {"case": case, "level": level, "shape": list(shape), "ranks": list(ranks),
                   "tensor": "SmolLM2-135M-Instruct layer %d (kv grouping)" % args.layer if CASES[case][0] is None
                   else "iid Gaussian std 0.02, seed %d" % SEED,
                   "cr": layer_params(shape) / tucker_params(shape, ranks), **floor}

            ours = time_call(lambda: tucker_decompose(x, ranks), device=device, repeats=repeats)
            row.update(ours_s=ours.median, ours_times_s=ours.times, ours_cpu_s=ours.cpu_median,
                       ours_iters=ours.result.n_iter, ours_converged=ours.result.converged, ours_err=ours.result.rel_error)
            tol4 = time_call(lambda: tucker_decompose(x, ranks, tol=1e-4), device=device, repeats=repeats)
            row.update(ours_tol4_s=tol4.median, ours_tol4_cpu_s=tol4.cpu_median,
                       ours_tol4_iters=tol4.result.n_iter, ours_tol4_err=tol4.result.rel_error)
            del ours, tol4

            skip_tl = args.no_tensorly or (quick and case in QUICK_NO_TENSORLY)
            if skip_tl:
                row["tl_status"] = "skipped"
            else:
                tl_repeats = 1 if big else repeats
                child = run_isolated(__file__, "tensorly_case",
                                     {"case": case, "ranks": list(ranks), "device": device,
                                      "repeats": tl_repeats, "layer": args.layer},
                                     timeout=tl_timeout)
                if child.get("ok"):
                    res = child["result"]
                    row.update(tl_status="ok", tl_s=sorted(res["times_s"])[len(res["times_s"]) // 2],
                               tl_cpu_s=sorted(res["cpu_s"])[len(res["cpu_s"]) // 2],
                               tl_times_s=res["times_s"], tl_iters=res["n_iter"], tl_err=res["rel_error"],
                               tl_peak_rss_mib=child["peak_rss_mib"])
                elif child.get("timed_out"):
                    row.update(tl_status=f"timeout>{tl_timeout:.0f}s", tl_s_lower_bound=tl_timeout)
                else:
                    row.update(tl_status="error: " + str(child.get("error"))[:200])
            if row.get("tl_s"):
                row["speedup"] = row["tl_s"] / row["ours_s"]
                row["speedup_tol4"] = row["tl_s"] / row["ours_tol4_s"]
                if device == "cpu":  # CPU seconds: steadier than wall time on a shared machine
                    row["speedup_cpu"] = row["tl_cpu_s"] / row["ours_cpu_s"]
                row["err_diff"] = row["ours_err"] - row["tl_err"]  # < 0: ours is more accurate
                row["ours_not_worse"] = row["ours_err"] <= row["tl_err"] + 1e-6
            elif row.get("tl_s_lower_bound"):
                row["speedup_lower_bound"] = row["tl_s_lower_bound"] / row["ours_s"]
            row["ours_over_pass"] = row["ours_s"] / row["pass_s"]
            row["ours_over_gram1"] = row["ours_s"] / row["gram1_s"]
            rows.append(row)
            print(f"    ours {row['ours_s']:.3f}s ({row['ours_iters']} sweeps, err {row['ours_err']:.6f}); "
                  f"tol=1e-4 {row['ours_tol4_s']:.3f}s ({row['ours_tol4_iters']} sweeps, err "
                  f"{row['ours_tol4_err']:.6f}); TensorLy {row.get('tl_s', row.get('tl_status'))}"
                  + (f" ({row['tl_iters']} iters, err {row['tl_err']:.6f}), speedup {row['speedup']:.1f}x"
                     if row.get("tl_s") else ""), flush=True)

            n_sweeps = trace_default
            if case == "llama7b" and level == "moderate":
                n_sweeps = min(n_sweeps, 3)
            if quick and big:
                n_sweeps = 0
            if n_sweeps > 0:
                for t in trace_convergence(x, ranks, device, n_sweeps):
                    trace_rows.append({"case": case, "level": level, "ranks": list(ranks), **t})
        del x

    def fmt_ranks(row):
        return {**row, "shape_s": "x".join(map(str, row["shape"])), "ranks_s": "x".join(map(str, row["ranks"])),
                "tl": row.get("tl_s") or row.get("tl_status")}

    table = [fmt_ranks(r) for r in rows]
    print_table(table, [
        ("case", "{}"), ("level", "{}"), ("shape_s", "{}", "shape"), ("ranks_s", "{}", "ranks"),
        ("cr", "{:.0f}x", "CR"),
        ("ours_s", "{:.3f}", "ours s"), ("ours_iters", "{}", "it"), ("ours_err", "{:.6f}", "ours err"),
        ("ours_tol4_s", "{:.3f}", "ours@1e-4 s"), ("ours_tol4_iters", "{}", "it"),
        ("ours_tol4_err", "{:.6f}", "ours@1e-4 err"),
        ("tl", "{:.2f}", "TensorLy s"), ("tl_iters", "{}", "it"), ("tl_err", "{:.6f}", "TensorLy err"),
        ("speedup", "{:.1f}x", "speedup"), ("speedup_cpu", "{:.1f}x", "speedup (CPU s)"),
        ("speedup_tol4", "{:.1f}x", "speedup@1e-4"),
        ("err_diff", "{:+.1e}", "err ours-TL"),
    ], title=f"Tucker decomposition: ours vs TensorLy partial_tucker (defaults), device={device}")
    print_table(table, [
        ("case", "{}"), ("level", "{}"), ("ranks_s", "{}", "ranks"),
        ("pass_s", "{:.4f}", "1 pass s (mode-4 Gram)"), ("gram1_s", "{:.3f}", "mode-1 Gram s"),
        ("ours_s", "{:.3f}", "ours s"), ("ours_over_pass", "{:.0f}x", "ours/pass"),
        ("ours_over_gram1", "{:.2f}x", "ours/mode-1 Gram"),
    ], title="Floor: ours as a multiple of one pass over the tensor")
    if trace_rows:
        print_table(trace_rows, [
            ("case", "{}"), ("level", "{}"), ("sweeps", "{}"), ("rel_error", "{:.6f}", "rel error"),
            ("delta", "{:.2e}", "improvement"), ("sweep_s", "{:.3f}", "sweep s"), ("cum_s", "{:.3f}", "cumulative s"),
        ], title="Ours: error vs HOOI sweeps (0 = ST-HOSVD start)")

    goal = [r for r in rows if r["case"] == "llama7b" and r.get("speedup")]
    summary = {
        "goal_7b_20x_at_equal_or_lower_error": (all(r["speedup"] >= 20 and r["ours_not_worse"] for r in goal)
                                                 if goal else None),
        "min_speedup": min((r["speedup"] for r in rows if r.get("speedup")), default=None),
    }
    print(f"\nsummary: {summary}")
    finish("decompose", rows, args, device=device,
           extra={"versions": versions, "convergence": trace_rows, "summary": summary,
                  "definitions": {
                      "speedup": "TensorLy partial_tucker seconds (defaults) / tucker_decompose seconds (defaults)",
                      "speedup_tol4": "TensorLy seconds / tucker_decompose(tol=1e-4) seconds",
                      "speedup_cpu": "the same ratio in process CPU seconds (all threads), CPU runs only",
                      "err": "||X - X_hat||_F / ||X||_F, computed explicitly in float64",
                      "pass_s": "X_(4) X_(4)^T (one GEMM reading the tensor once)",
                      "gram1_s": "X_(1) X_(1)^T",
                      "cr": "tensor entries / (core + factor entries)",
                      "times": "median of repeats; 1 repeat for tensors >= 3e7 entries and in --quick",
                  }})


if __name__ == "__main__":
    main()
