"""Benchmark: peak memory of decomposing ONE layer does not grow with the size of the model.

    python -m bench.memory [--quick] [--json] [--device cpu|cuda] [--threads N] [--layers N] [--keep]

Synthesises two sharded safetensors checkpoints of a Llama-shaped model in a temporary folder, N and
4N layers (default N=4: 4 vs 16 layers), writing the tensors directly with
``safetensors.torch.save_file`` (the model is never instantiated): ``config.json`` from a
``LlamaConfig`` (hidden 1024, 16 heads, intermediate 2816, vocab 32000, float16 weights; --quick:
hidden 512, 8 heads, intermediate 1408, vocab 8000), one shard per layer (the embedding rides in the
first shard, the final norm and lm_head in the last) plus ``model.safetensors.index.json``.

Then, each in a fresh Python process (so the peak RSS is that case's alone):

* ``baseline``: import torch, transformers' config and tensorllm.decompose, do nothing;
* ``decompose_layer``: ``tensorllm.decompose.decompose_layer(folder, layer=N // 2, rank_list=[...],
  out_root=tmp)`` on both checkpoints (same layer index, same shard size);
* ``load_full`` (the contrast): ``safetensors.torch.load_file`` on every shard, holding them all, i.e.
  what loading the whole model state costs.

Reported per case: the process's peak RSS (VmHWM, imports included), the peak during the measured call
alone (the peak is reset after the imports), the growth during the call, wall time and checkpoint size
on disk; and the 4N / N ratio of each. (ru_maxrss is not used: Linux carries the parent's high-water
mark into a child across fork+exec, see bench/common.py.) CPU runs default to ``--threads 1``.
``decompose_layer`` should stay flat (ratio ~1.0) while ``load_full`` grows with the checkpoint. On
--device cuda the decomposition runs on the GPU and the peak CUDA memory is reported too.

Results: ``bench/results/memory.json`` (``memory-quick.json`` with --quick).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path


from bench.common import (base_parser, current_rss_mib, finish, peak_rss_mib, pick_device, print_table,  # noqa: E402
                    reset_peak_rss, run_isolated, setup_threads)

FULL = {"hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 2816,
        "vocab_size": 32000}
QUICK = {"hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 8, "intermediate_size": 1408,
         "vocab_size": 8000}
RANKS = {1024: [64, 16, 2], 512: [32, 16, 2]}
DTYPE = "float16"


def _start_work() -> dict:
    """Called by a child after its imports: note the imports' peak and reset the peak for the work."""
    out = {"import_peak_mib": peak_rss_mib(), "rss_start_mib": current_rss_mib()}
    out["peak_reset"] = reset_peak_rss()
    return out


# ----------------------------------------------------------------------------------- synthetic checkpoint

def write_checkpoint(folder: Path, n_layers: int, dims: dict, seed: int = 0) -> dict:
    """A Llama-shaped sharded safetensors checkpoint (one shard per layer) + index + config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(num_hidden_layers=n_layers, max_position_embeddings=2048, tie_word_embeddings=False,
                         torch_dtype=DTYPE, **dims)
    config.to_json_file(str(folder / "config.json"))
    h, inter, vocab = dims["hidden_size"], dims["intermediate_size"], dims["vocab_size"]
    d_kv = h // dims["num_attention_heads"] * dims["num_key_value_heads"]
    dtype = getattr(torch, DTYPE)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).to(dtype)

    weight_map, total = {}, 0
    for layer in range(n_layers):
        p = f"model.layers.{layer}."
        tensors = {
            p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(d_kv, h),
            p + "self_attn.v_proj.weight": rand(d_kv, h), p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(inter, h), p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": torch.ones(h, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype),
        }
        if layer == 0:
            tensors["model.embed_tokens.weight"] = rand(vocab, h)
        if layer == n_layers - 1:
            tensors["model.norm.weight"] = torch.ones(h, dtype=dtype)
            tensors["lm_head.weight"] = rand(vocab, h)
        name = f"model-{layer + 1:05d}-of-{n_layers:05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: name for k in tensors})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    files = list(folder.iterdir())
    return {"n_layers": n_layers, "disk_mib": sum(f.stat().st_size for f in files) / 2**20,
            "n_shards": n_layers, "largest_shard_mib": max(f.stat().st_size for f in files) / 2**20}


# --------------------------------------------------------------------------------- children (fresh procs)

def child_baseline() -> dict:
    """Imports only: the RSS floor every other case pays too."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoConfig  # noqa: F401

    import tensorllm.decompose  # noqa: F401

    return _start_work()


def child_decompose(folder: str, layer: int, ranks: list, out_root: str, device: str) -> dict:
    import torch
    from transformers import AutoConfig  # noqa: F401  (imported by Checkpoint.config anyway)

    from tensorllm.decompose import decompose_layer

    out = _start_work()
    if device.startswith("cuda"):
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    records = decompose_layer(folder, layer=layer, rank_list=[tuple(ranks)], out_root=out_root, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out.update(seconds=time.perf_counter() - start, rel_error=records[0].rel_error,
               compression_ratio=records[0].compression_ratio, reused=records[0].reused)
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def child_load_full(folder: str) -> dict:
    """The contrast: load every shard's tensors into memory and hold them (a full state dict)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig  # noqa: F401

    import tensorllm.decompose  # noqa: F401  (same imports as the decompose case)

    out = _start_work()
    start = time.perf_counter()
    state = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(shard)))
    # touch every page of every tensor (a model load copies them into parameters), without temporaries
    n_bytes = sum(t.numel() * t.element_size() for t in state.values())
    checksum = sum(int(t.reshape(-1).view(torch.uint8)[::4096].sum()) for t in state.values())
    out.update(seconds=time.perf_counter() - start, loaded_mib=n_bytes / 2**20, checksum=checksum)
    return out


# ------------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--layers", type=int, default=4, help="N: the small model's layers (the big one has 4N)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary checkpoints (path is printed)")
    parser.add_argument("--tmpdir", default=None, help="where to create the temporary folder")
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads is None and device == "cpu":
        args.threads = 1  # as in decompose.py: 2+ OpenMP threads on a shared CPU make the times noise (RSS unaffected)
    setup_threads(args.threads)
    dims = QUICK if args.quick else FULL
    ranks = RANKS[dims["hidden_size"]]
    n_small, n_big = args.layers, 4 * args.layers
    layer = n_small // 2
    root = Path(tempfile.mkdtemp(prefix="tensorllm-bench-memory-", dir=args.tmpdir))
    print(f"device={device} dims={dims} layers {n_small} vs {n_big}, decomposing layer {layer} at ranks {ranks}; "
          f"tmp={root}", flush=True)
    rows: list[dict] = []
    try:
        ckpts = {}
        for n in (n_small, n_big):
            start = time.perf_counter()
            ckpts[n] = write_checkpoint(root / f"llama-{n}L", n, dims)
            print(f"  wrote {n}-layer checkpoint: {ckpts[n]['disk_mib']:.0f} MiB in "
                  f"{time.perf_counter() - start:.1f}s", flush=True)

        base = run_isolated(__file__, "child_baseline")
        if not base.get("ok"):
            raise SystemExit(f"baseline child failed: {base.get('error')}")
        baseline = base["result"]["import_peak_mib"]
        rows.append({"case": "baseline (imports only)", "n_layers": None, "peak_rss_mib": baseline,
                     "rss_start_mib": base["result"]["rss_start_mib"], "seconds": None, "disk_mib": None})

        for kind in ("decompose_layer", "load_full"):
            for n in (n_small, n_big):
                folder = str(root / f"llama-{n}L")
                if kind == "decompose_layer":
                    child = run_isolated(__file__, "child_decompose",
                                         {"folder": folder, "layer": layer, "ranks": ranks,
                                          "out_root": str(root / f"artifacts-{n}L"), "device": device})
                else:
                    child = run_isolated(__file__, "child_load_full", {"folder": folder})
                if not child.get("ok"):
                    raise SystemExit(f"{kind} on {n} layers failed: {child.get('error')}")
                res = child["result"]
                work_peak = child["peak_rss_mib"]  # peak since the reset after imports
                row = {"case": kind, "n_layers": n, "peak_rss_mib": max(work_peak, res["import_peak_mib"]),
                       "work_peak_mib": work_peak, "rss_start_mib": res["rss_start_mib"],
                       "work_growth_mib": work_peak - res["rss_start_mib"], "import_peak_mib": res["import_peak_mib"],
                       "peak_reset": res["peak_reset"], "ru_maxrss_mib": child.get("ru_maxrss_mib"),
                       "seconds": res["seconds"], "disk_mib": ckpts[n]["disk_mib"],
                       "largest_shard_mib": ckpts[n]["largest_shard_mib"]}
                for key in ("rel_error", "compression_ratio", "cuda_peak_mib", "loaded_mib"):
                    if key in res:
                        row[key] = res[key]
                rows.append(row)
                print(f"  {kind:16s} {n:3d} layers: peak RSS {row['peak_rss_mib']:.0f} MiB, during the work "
                      f"{work_peak:.0f} MiB (+{row['work_growth_mib']:.0f} over its start), {row['seconds']:.2f}s",
                      flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    ratios = {}
    for kind in ("decompose_layer", "load_full"):
        small = next(r for r in rows if r["case"] == kind and r["n_layers"] == n_small)
        big = next(r for r in rows if r["case"] == kind and r["n_layers"] == n_big)
        ratios[kind] = {"peak_rss_ratio": big["peak_rss_mib"] / small["peak_rss_mib"],
                        "work_peak_ratio": big["work_peak_mib"] / small["work_peak_mib"],
                        "work_growth_ratio": (big["work_growth_mib"] / small["work_growth_mib"]
                                              if small["work_growth_mib"] > 1 else None),
                        "disk_ratio": big["disk_mib"] / small["disk_mib"]}
        big.update(peak_ratio=ratios[kind]["peak_rss_ratio"], work_peak_ratio=ratios[kind]["work_peak_ratio"],
                   growth_ratio=ratios[kind]["work_growth_ratio"])
    print_table(rows, [
        ("case", "{}"), ("n_layers", "{}", "layers"), ("disk_mib", "{:.0f}", "ckpt MiB on disk"),
        ("peak_rss_mib", "{:.0f}", "peak RSS MiB"), ("peak_ratio", "{:.2f}x", f"{n_big}L/{n_small}L"),
        ("work_peak_mib", "{:.0f}", "peak in work MiB"), ("work_peak_ratio", "{:.2f}x", f"{n_big}L/{n_small}L"),
        ("work_growth_mib", "{:+.0f}", "work growth MiB"), ("growth_ratio", "{:.2f}x", f"{n_big}L/{n_small}L"),
        ("seconds", "{:.2f}", "seconds"), ("cuda_peak_mib", "{:.0f}", "CUDA peak MiB"),
    ], title=f"Peak RSS, one fresh process per case, device={device}")
    flat = ratios["decompose_layer"]["peak_rss_ratio"] < 1.10 and ratios["decompose_layer"]["work_peak_ratio"] < 1.10
    grows = (ratios["load_full"]["work_growth_ratio"] or 0) > 1.5
    summary = {"decompose_peak_rss_flat": flat, "load_full_grows": grows, "ratios": ratios,
               "layer": layer, "ranks": ranks, "dims": dims, "dtype": DTYPE}
    print(f"\ndecompose_layer {n_big}L/{n_small}L: peak RSS x{ratios['decompose_layer']['peak_rss_ratio']:.3f}, "
          f"work peak x{ratios['decompose_layer']['work_peak_ratio']:.3f} ({'flat' if flat else 'GROWS'}); "
          f"load_full: work peak x{ratios['load_full']['work_peak_ratio']:.2f} "
          f"(checkpoint on disk x{ratios['load_full']['disk_ratio']:.2f})")
    finish("memory", rows, args, device=device, extra={"summary": summary, "definitions": {
        "peak_rss_mib": "peak RSS (VmHWM) of a fresh process running only that case, imports included",
        "work_peak_mib": "peak RSS between the end of the imports (peak reset via /proc/self/clear_refs) and the end",
        "work_growth_mib": "work_peak_mib - the RSS when the work started",
        "ru_maxrss_mib": "the child's ru_maxrss: NOT used, Linux carries the parent's peak into it across fork+exec",
    }})


if __name__ == "__main__":
    main()
