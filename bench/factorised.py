"""Benchmark: dense vs factorised attention (tensorllm.factorised): size on disk, memory, prefill and decode latency.

    python -m bench.factorised [--quick] [--json] [--device cpu|cuda] [--threads N] [--parts smollm2 llama7b accuracy]

A Tucker-decomposed layer can run on its factors (``X·U1`` once, per-head cores, ``U2``, ``U1^T``) instead of
dense weights rebuilt from them; this measures what that buys, through the real path: ``decompose_layer``
-> ``export_variant(format="factorised")`` -> ``load_compressed`` (what a user loads).

* ``smollm2``: SmolLM2-135M-Instruct with the last 4 (--quick) or all 30 layers decomposed (KV grouping) at
  three rank configurations given as fractions of (d_model, d_head, slices): (0.5, 0.5, 0.5) = (288, 32, 4),
  (0.25, 0.5, 0.5) = (144, 32, 4), (0.125, 0.25, 0.5) = (72, 16, 4); against the base model. Per variant:
  attention and total parameters, bytes of the exported folder vs the base's, then in a fresh process
  (``run_isolated``): load time, RSS after loading, peak RSS while loading and while running (CUDA: peak
  allocated), prefill latency (1 x 256 tokens, no cache) and per-token decode latency (32 greedy steps with
  the KV cache after a 256-token prompt), medians of the repeats. Artifacts are cached under
  ``runs/bench/factorised-artifacts`` and reused by ``decompose_layer`` when the layer's weights (sha256),
  ranks and grouping match (a content key, not a folder name).
* ``llama7b``: one Llama-2-7B-shaped attention layer (d_model 4096, 32 heads, d_head 128) in a 1-layer
  LlamaConfig with random weights; vocabulary and MLP shrunk to 256 so that the model's time is the
  attention's. The factorised variants are built directly (random orthonormal U1, U2 and random cores at
  (R1, R2) = (1024, 64), (512, 64), (256, 32)) and installed with ``install_factors``: decomposing a
  4096-wide layer on a 2-core CPU takes minutes and the latency does not depend on the values. Prefill at
  512 tokens, decode per token after a 512-token prompt, parameters and multiply-adds per token.
* ``accuracy``: one composed variant (the last 4 layers at (0.5, 0.5, 1.0); ``--accuracy-layers``,
  ``--accuracy-ranks`` choose another), exported factorised and loaded
  with ``load_compressed``, against the base on qa_wikidata's test split (400 items; --quick: 100) with
  greedy-generation accuracy, ``tensorllm.evaluation.evaluate`` and the paired comparison
  ``compare_paired`` (McNemar); its size on disk and its evaluation throughput next to the base's.

Timing: medians of ``--repeats`` after a warm-up; every child is measured in ``--rounds`` alternating passes
over the variants and the least disturbed pass counts (the machine is shared). On CPU the ms columns and
speedups are process CPU time (with one thread: the work itself; wall time is printed next to it) and the
default is ``--threads 1``, as in the other benchmarks; on CUDA they are wall time.

Decode runs on transformers' default ``DynamicCache``, which concatenates each step's K/V onto the cache
(``torch.cat``: a copy of the whole cache per step); once the projections are factorised, that copy is
most of a decode step of the 7B-shaped layer at 512 tokens of context (profiled: ~75% of CPU time).

Results: ``bench/results/factorised.json`` (``factorised-quick.json`` with --quick).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path


from bench.common import (REPO_ROOT, base_parser, current_rss_mib, finish, library_versions, peak_rss_mib,  # noqa: E402
                    pick_device, print_table, reset_peak_rss, run_isolated, setup_threads, sync, time_call)

MODEL = "smollm2-135m"
RANKS = [(0.5, 0.5, 0.5), (0.25, 0.5, 0.5), (0.125, 0.25, 0.5)]
ACCURACY_RANKS = (0.5, 0.5, 1.0)  # (288, 32, 8): 2.3x per layer; (0.5, 0.5, 0.5) breaks the model (R3 = 4 of 8 slices)
ACCURACY_LAYERS = 4  # the last 4 layers
ARTIFACTS = REPO_ROOT / "runs" / "bench" / "factorised-artifacts"
EVAL_OUT = REPO_ROOT / "runs" / "bench" / "factorised-eval"
LLAMA7B = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128}
LLAMA7B_RANKS = [(1024, 64), (512, 64), (256, 32)]
SEED = 0


# ------------------------------------------------------------------------------------ measured in a child

def _prompt(vocab: int, length: int, device: str):
    import torch

    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(3, vocab, (1, length), generator=generator).to(device)


def _latencies(model, device: str, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    """Prefill (no cache) and decode (greedy, KV cache, after the prompt; per token): medians of ``repeats``,
    wall seconds and process CPU seconds (the steadier of the two on a shared CPU)."""
    import torch

    ids = _prompt(model.config.vocab_size, prompt_len, device)

    def prefill():
        with torch.no_grad():
            return model(ids, use_cache=False).logits

    def decode() -> tuple[float, float]:
        with torch.no_grad():
            out = model(ids, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync(device)
            cpu, start = time.process_time(), time.perf_counter()
            for _ in range(new_tokens):
                out = model(token, past_key_values=past, use_cache=True)
                past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync(device)
            return (time.perf_counter() - start) / new_tokens, (time.process_time() - cpu) / new_tokens

    timing = time_call(prefill, device=device, repeats=repeats, warmup=1)
    decode()  # warm-up
    steps = [decode() for _ in range(repeats)]
    return {"prefill_s": timing.median, "prefill_cpu_s": timing.cpu_median, "prefill_times_s": timing.times,
            "decode_s_per_token": statistics.median(w for w, _ in steps),
            "decode_cpu_s_per_token": statistics.median(c for _, c in steps),
            "decode_times_s": [w for w, _ in steps], "prompt_len": prompt_len, "new_tokens": new_tokens}


def _weights_mib(model) -> float:
    """Bytes of the model's parameters and buffers (each tensor once): its own memory, whatever the allocator keeps."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def _memory_start(device: str) -> None:
    import torch

    reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _memory(device: str) -> dict:
    import torch

    out = {"rss_mib": current_rss_mib(), "peak_rss_mib": peak_rss_mib()}
    if device.startswith("cuda"):
        out["cuda_allocated_mib"] = torch.cuda.memory_allocated() / 2**20
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_folder(folder: str, factorised: bool, device: str, prompt_len: int, new_tokens: int,
                   repeats: int) -> dict:
    """Child: load a model folder (``load_compressed`` for a factorised export), then time it; memory on the way.

    RSS right after loading understates a model loaded by ``from_pretrained`` (its safetensors are
    memory-mapped; pages become resident when first used), and RSS after the run overstates a model that
    freed memory on the way (``load_compressed`` builds the dense layers first, then replaces them; glibc
    keeps freed heap pages), so ``weights_mib`` (parameters and buffers) is the model's own size.
    """
    import torch

    from tensorllm.export import load_compressed
    from tensorllm.factorised import factorised_layers
    from tensorllm.models import load_model

    before = current_rss_mib()
    _memory_start(device)
    start = time.perf_counter()
    model = load_compressed(folder, device=device)[0] if factorised else load_model(folder, device=device)[0]
    load_s = time.perf_counter() - start
    loaded = _memory(device)
    _memory_start(device)  # the run's own peak from here
    result = _latencies(model, device, prompt_len, new_tokens, repeats)
    run = _memory(device)
    return {**result, "load_s": load_s, "params": sum(p.numel() for p in model.parameters()),
            "factorised_layers": len(factorised_layers(model)), "weights_mib": _weights_mib(model),
            "rss_before_load_mib": before,
            "rss_after_load_mib": loaded["rss_mib"], "peak_rss_load_mib": loaded["peak_rss_mib"],
            "rss_after_run_mib": run["rss_mib"], "peak_rss_run_mib": run["peak_rss_mib"],
            "cuda_after_load_mib": loaded.get("cuda_allocated_mib"), "cuda_peak_load_mib": loaded.get("cuda_peak_mib"),
            "cuda_peak_run_mib": run.get("cuda_peak_mib"), "threads": torch.get_num_threads()}


def measure_llama7b_layer(ranks: list | None, device: str, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    """Child: a 1-layer Llama-2-7B-shaped model, dense or with random factors of ``ranks`` = [R1, R2] installed."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tensorllm.factorised import FactorisedAttention, install_factors
    from tensorllm.layouts import layout_for

    config = LlamaConfig(num_hidden_layers=1, intermediate_size=256, vocab_size=256, max_position_embeddings=4096,
                         tie_word_embeddings=False, **LLAMA7B)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    shape = layout_for(config).shape(config)
    attention = model.model.layers[0].self_attn
    dense_params = sum(getattr(attention, f"{p}_proj").weight.numel() for p in "qkvo")
    if ranks:
        r1, r2 = ranks
        factors = FactorisedAttention(shape, r1, r2)
        with torch.no_grad():
            factors.U1.copy_(torch.linalg.qr(torch.randn(shape.d_model, r1))[0])  # orthonormal columns
            factors.U2.copy_(torch.linalg.qr(torch.randn(shape.d_head, r2))[0])
            for core in (factors.core_q, factors.core_k, factors.core_v, factors.core_o):
                core.normal_(0.0, 0.02)
        install_factors(model, 0, factors)
        attention_params = sum(p.numel() for p in factors.parameters())
    else:
        attention_params = dense_params
    model = model.to(device)
    _memory_start(device)
    result = _latencies(model, device, prompt_len, new_tokens, repeats)
    return {**result, "attention_params": attention_params, "dense_attention_params": dense_params,
            "weights_mib": _weights_mib(model),
            **{f"run_{k}": v for k, v in _memory(device).items()}, "threads": torch.get_num_threads()}


def child(func: str, kwargs: dict, timeout: float) -> dict:
    out = run_isolated(__file__, func, kwargs, timeout=timeout)
    if not out.get("ok"):
        raise SystemExit(f"{func}({kwargs}) failed: {out.get('error') or out}")
    return out["result"]


TIMED = ("prefill_s", "prefill_cpu_s", "decode_s_per_token", "decode_cpu_s_per_token")


def measure_rounds(calls: dict[str, tuple[str, dict]], rounds: int, timeout: float, tag: str) -> dict[str, dict]:
    """``label -> (child function, kwargs)`` measured in ``rounds`` alternating passes (a, b, c, a, b, c, ...),
    each call in a fresh process; per label the first round's result with every timed median replaced by
    its lowest over the rounds (the least disturbed pass on a shared machine), all rounds kept."""
    results: dict[str, list[dict]] = {label: [] for label in calls}
    for r in range(rounds):
        for label, (func, kwargs) in calls.items():
            print(f"[{tag}] round {r + 1}/{rounds}: {label} ...", flush=True)
            results[label].append(child(func, kwargs, timeout))
    merged = {}
    for label, runs in results.items():
        merged[label] = {**runs[0], **{key: min(run[key] for run in runs) for key in TIMED},
                         "rounds": [{key: run[key] for key in TIMED} for run in runs]}
    return merged


# ---------------------------------------------------------------------------------------------- parts

def decompose_all(layers: list[int], ranks: list[tuple], device: str) -> tuple[dict, dict]:
    """``{ranks: [artifact folder per layer]}`` and how long it took (reused artifacts cost nothing)."""
    from tensorllm.decompose import decompose_layer

    paths: dict[tuple, list[str]] = {r: [] for r in ranks}
    start, reused, made = time.perf_counter(), 0, 0
    for layer in layers:
        records = decompose_layer(MODEL, layer, ranks, out_root=ARTIFACTS, device=device)
        for r, record in zip(ranks, records):
            paths[r].append(record.artifact)
            reused, made = reused + record.reused, made + (not record.reused)
        print(f"  [{time.strftime('%H:%M:%S')}] layer {layer}: " + ", ".join(
            f"{tuple(rec.ranks)} err {rec.rel_error:.3f}{' (reused)' if rec.reused else ''}" for rec in records),
            flush=True)
    return paths, {"decompose_s": time.perf_counter() - start, "artifacts_made": made, "artifacts_reused": reused}


def attention_macs(metas: list[dict], n_layers: int, dense_per_layer: int) -> int:
    """Attention projections' multiply-adds per token, whole model (factorised where it pays off)."""
    from tensorllm.factorised import factorised_cost
    from tensorllm.attention_shape import AttentionShape

    total = (n_layers - len(metas)) * dense_per_layer
    for meta in metas:
        cost = factorised_cost(AttentionShape(**meta["attention_shape"]), *meta["ranks"][:2])
        total += cost.factorised_macs if cost.pays_off else cost.dense_macs
    return total


def add_speedups(rows: list[dict], device: str) -> None:
    """Milliseconds and speedups over ``rows[0]``: from process CPU time on CPU (steady on a shared machine,
    and equal to wall time with one thread when nothing else runs), from wall time on CUDA."""
    cpu = device == "cpu"
    prefill, decode = ("prefill_cpu_s", "decode_cpu_s_per_token") if cpu else ("prefill_s", "decode_s_per_token")
    for row in rows:
        row["prefill_ms"], row["decode_ms"] = 1000 * row[prefill], 1000 * row[decode]
        row["prefill_wall_ms"], row["decode_wall_ms"] = 1000 * row["prefill_s"], 1000 * row["decode_s_per_token"]
        row["prefill_speedup"] = rows[0][prefill] / row[prefill]
        row["decode_speedup"] = rows[0][decode] / row[decode]
        row["timed_by"] = "process CPU time" if cpu else "wall time"


def part_smollm2(args, device: str, work: Path) -> tuple[list[dict], dict]:
    from tensorllm.artifact import read_meta
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.composed import whole_model_size
    from tensorllm.export import export_variant, folder_bytes
    from tensorllm.models import resolve_model

    folder = resolve_model(MODEL)
    ckpt = Checkpoint(folder)
    n_layers = args.layers or (4 if args.quick else ckpt.n_layers)
    layers = list(range(ckpt.n_layers - n_layers, ckpt.n_layers))
    print(f"\n[smollm2] decomposing layers {layers[0]}..{layers[-1]} at {RANKS} (cache {ARTIFACTS})", flush=True)
    paths, decomposition = decompose_all(layers, RANKS, device)
    base_bytes = folder_bytes(folder)
    timing = {"device": device, "prompt_len": 256, "new_tokens": 32, "repeats": args.repeats}
    base = whole_model_size(MODEL, [])
    rows = [{"variant": "base (dense)", "layers": 0, "ranks": None, "fractions": None,
             "attention_params": base.attention_params_before, "total_params": base.total_params_before,
             "attention_macs": ckpt.n_layers * ckpt.shape.n_params, "bytes": base_bytes, "rel_error": None}]
    calls = {rows[0]["variant"]: ("measure_folder", {"folder": str(folder), "factorised": False, **timing})}
    for fractions in RANKS:
        metas = [read_meta(p) for p in paths[fractions]]
        size = whole_model_size(MODEL, metas)
        out = work / ("export-" + "x".join(map(str, metas[0]["ranks"])))
        start = time.perf_counter()
        info = export_variant(MODEL, paths[fractions], out)
        export_s = time.perf_counter() - start
        label = "factorised " + "x".join(map(str, metas[0]["ranks"]))
        print(f"[smollm2] {label}: exported {info['bytes']:,} bytes in {export_s:.1f}s", flush=True)
        rows.append({"variant": label, "layers": len(layers), "ranks": metas[0]["ranks"], "fractions": list(fractions),
                     "attention_params": size.attention_params_after, "total_params": size.total_params_after,
                     "attention_macs": attention_macs(metas, ckpt.n_layers, ckpt.shape.n_params),
                     "bytes": info["bytes"], "bytes_counted": size.bytes_after, "export_s": export_s,
                     "layers_kept_dense": list(size.layers_kept_dense),
                     "rel_error": statistics.mean(m["rel_error"] for m in metas)})
        calls[label] = ("measure_folder", {"folder": str(out), "factorised": True, **timing})
    measured = measure_rounds(calls, args.rounds, args.timeout, "smollm2")
    for row in rows:
        row.update(measured[row["variant"]])
    for _, kwargs in list(calls.values())[1:]:
        shutil.rmtree(kwargs["folder"])  # ~0.5 GB each
    add_speedups(rows, device)
    ref = rows[0]
    for row in rows:
        row["bytes_ratio"] = row["bytes"] / ref["bytes"]
        row["attention_cr"] = ref["attention_params"] / row["attention_params"]
        row["rss_saved_mib"] = ref["rss_after_run_mib"] - row["rss_after_run_mib"]
    return rows, {"layers": layers, **decomposition, **timing}


def part_llama7b(args, device: str) -> list[dict]:
    from tensorllm.factorised import factorised_cost
    from tensorllm.attention_shape import AttentionShape

    shape = AttentionShape(n_heads=32, n_kv_heads=32, d_head=128, d_model=4096)
    timing = {"device": device, "prompt_len": 512, "new_tokens": 32, "repeats": args.repeats}
    labels = {("dense" if r is None else "factorised %dx%d" % r): r for r in [None, *LLAMA7B_RANKS]}
    calls = {label: ("measure_llama7b_layer", {"ranks": list(r) if r else None, **timing}) for label, r in labels.items()}
    measured = measure_rounds(calls, args.rounds, args.timeout, "llama7b")
    rows = []
    for label, ranks in labels.items():
        cost = factorised_cost(shape, *ranks) if ranks else None
        rows.append({"variant": label, "ranks": list(ranks) if ranks else None,
                     "macs_per_token": cost.factorised_macs if cost else shape.n_params,
                     "pays_off": cost.pays_off if cost else None, **measured[label]})
    add_speedups(rows, device)
    ref = rows[0]
    for row in rows:
        row["cr"] = ref["attention_params"] / row["attention_params"]
        row["macs_ratio"] = ref["macs_per_token"] / row["macs_per_token"]
    return rows


def part_accuracy(args, device: str, work: Path) -> dict:
    import torch

    from tensorllm.artifact import read_meta
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.composed import whole_model_size
    from tensorllm.evaluation import EvalConfig, compare_paired, evaluate
    from tensorllm.export import export_variant, folder_bytes, load_compressed
    from tensorllm.models import load_model, resolve_model

    folder = resolve_model(MODEL)
    n_layers = Checkpoint(folder).n_layers
    layers = list(range(n_layers - args.accuracy_layers, n_layers))
    ranks = tuple(args.accuracy_ranks)
    limit = args.limit or (100 if args.quick else 400)
    print(f"\n[accuracy] layers {layers} at {ranks}; qa_wikidata test, {limit} items", flush=True)
    paths, _ = decompose_all(layers, [ranks], device)
    paths = paths[ranks]
    out = work / "export-accuracy"
    info = export_variant(MODEL, paths, out)
    size = whole_model_size(MODEL, [read_meta(p) for p in paths])
    EVAL_OUT.mkdir(parents=True, exist_ok=True)
    config = EvalConfig(dataset="qa_wikidata", split="test", limit=limit, batch_size=16, generate=True)
    results = {}
    for label in ("base", "factorised"):
        model, tokenizer = load_compressed(out, device=device) if label == "factorised" else \
            load_model(folder, device=device)
        print(f"[accuracy] evaluating {label} ...", flush=True)
        results[label] = evaluate(model, tokenizer, config, examples_out=EVAL_OUT / f"{label}-qa_wikidata-test.jsonl")
        del model
        torch.cuda.empty_cache() if device.startswith("cuda") else None
    paired = compare_paired(results["base"].examples_path, results["factorised"].examples_path, metric="correct")
    shutil.rmtree(out)
    return {"layers": layers, "ranks": read_meta(paths[0])["ranks"], "rank_spec": list(ranks), "limit": limit,
            "base": results["base"].to_dict(), "factorised": results["factorised"].to_dict(),
            "paired": paired.to_dict(), "bytes": info["bytes"], "base_bytes": folder_bytes(folder),
            "attention_compression_ratio": size.attention_compression_ratio,
            "total_compression_ratio": size.total_compression_ratio, "report": info["layers"]}


# ----------------------------------------------------------------------------------------------- main

def main() -> None:
    from tensorllm.cli import parse_ranks

    parser = base_parser(__doc__)
    parser.add_argument("--parts", nargs="+", choices=("smollm2", "llama7b", "accuracy"),
                        default=("smollm2", "llama7b", "accuracy"))
    parser.add_argument("--layers", type=int, help="SmolLM2 layers to decompose, the last N (default 4 quick, 30 full)")
    parser.add_argument("--limit", type=int, help="qa_wikidata test items for the accuracy part (default 100 / 400)")
    parser.add_argument("--accuracy-layers", type=int, default=ACCURACY_LAYERS,
                        help=f"the accuracy part's variant: the last N layers (default {ACCURACY_LAYERS})")
    parser.add_argument("--accuracy-ranks", type=parse_ranks, default=ACCURACY_RANKS,
                        help="the accuracy part's ranks R1,R2,R3, integers or fractions (default 0.5,0.5,0.5)")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default 3 quick, 5 full)")
    parser.add_argument("--rounds", type=int, help="alternating measurement passes over the variants, the least "
                                                   "disturbed one counts (default 1 quick, 2 full)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measured child process")
    args = parser.parse_args()

    import torch

    device = pick_device(args.device)
    if args.threads is None and device == "cpu":
        args.threads = 1  # steady numbers on a shared 2-core machine (see bench/decompose.py)
    setup_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 2)
    versions = library_versions("torch", "transformers")
    print(f"device={device}  torch={versions['torch']}  threads={torch.get_num_threads()}  quick={args.quick}", flush=True)
    start = time.perf_counter()
    extra: dict = {"versions": versions}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-factorised-") as tmp:
        work = Path(tmp)
        if "smollm2" in args.parts:
            rows, extra["smollm2"] = part_smollm2(args, device, work)
            print_table(rows, [
                ("variant", "{}"), ("attention_params", "{:,}", "attn params"), ("attention_cr", "{:.2f}x", "attn CR"),
                ("attention_macs", "{:,}", "attn MACs/token"),
                ("total_params", "{:,}", "total params"), ("bytes", "{:,}", "bytes on disk"),
                ("bytes_ratio", "{:.3f}", "vs base"), ("rel_error", "{:.3f}", "mean rel err"),
                ("weights_mib", "{:.0f}", "weights MiB"),
                ("peak_rss_load_mib", "{:.0f}", "peak load MiB"), ("rss_after_run_mib", "{:.0f}", "RSS run MiB"),
                ("cuda_peak_load_mib", "{:.0f}", "CUDA peak load MiB"), ("cuda_peak_run_mib", "{:.0f}", "CUDA peak run MiB"),
                ("prefill_ms", "{:.1f}", "prefill 256 ms"), ("prefill_wall_ms", "{:.1f}", "(wall)"),
                ("prefill_speedup", "{:.2f}x", "speedup"),
                ("decode_ms", "{:.2f}", "decode ms/token"), ("decode_wall_ms", "{:.2f}", "(wall)"),
                ("decode_speedup", "{:.2f}x", "speedup"),
            ], title=f"SmolLM2-135M: base vs the last {len(extra['smollm2']['layers'])} layers factorised "
                     f"(export_variant -> load_compressed), device={device}")
        if "llama7b" in args.parts:
            extra["llama7b"] = part_llama7b(args, device)
            print_table(extra["llama7b"], [
                ("variant", "{}"), ("attention_params", "{:,}", "attn params"), ("cr", "{:.2f}x", "CR"),
                ("macs_per_token", "{:,}", "MACs/token"), ("macs_ratio", "{:.2f}x", "fewer MACs"),
                ("prefill_ms", "{:.1f}", "prefill 512 ms"), ("prefill_wall_ms", "{:.1f}", "(wall)"),
                ("prefill_speedup", "{:.2f}x", "speedup"),
                ("decode_ms", "{:.2f}", "decode ms/token"), ("decode_wall_ms", "{:.2f}", "(wall)"),
                ("decode_speedup", "{:.2f}x", "speedup"),
                ("weights_mib", "{:.0f}", "weights MiB"),
                ("run_peak_rss_mib", "{:.0f}", "peak RSS MiB"), ("run_cuda_peak_mib", "{:.0f}", "CUDA peak MiB"),
            ], title=f"One Llama-2-7B-shaped attention layer (4096, 32 heads x 128), random factors, device={device}")
        if "accuracy" in args.parts:
            acc = extra["accuracy"] = part_accuracy(args, device, work)
            table = []
            for label in ("base", "factorised"):
                r = acc[label]
                table.append({"model": label, "n": r["n"], "accuracy": r["accuracy"],
                              "ci": "[%.3f, %.3f]" % tuple(r["accuracy_ci"]), "top1": r["top1_accuracy"],
                              "loss": r["loss"], "ex_s": r["examples_per_second"],
                              "bytes": acc["base_bytes"] if label == "base" else acc["bytes"]})
            print_table(table, [("model", "{}"), ("n", "{}"), ("accuracy", "{:.4f}"), ("ci", "{}", "95% CI"),
                                ("top1", "{:.4f}", "top-1"), ("loss", "{:.3f}"), ("ex_s", "{:.2f}", "examples/s"),
                                ("bytes", "{:,}", "bytes on disk")],
                        title=f"Composed variant (layers {acc['layers'][0]}..{acc['layers'][-1]} at "
                              f"{tuple(acc['ranks'])}) on qa_wikidata test, generation accuracy")
            p = acc["paired"]
            print(f"paired: accuracy {p['accuracy_diff']:+.4f} (McNemar p={p['mcnemar_p']:.3g}), "
                  f"loss {p['loss_diff']:+.4f} 95% CI [{p['loss_diff_ci'][0]:+.4f}, {p['loss_diff_ci'][1]:+.4f}]; "
                  f"attention CR {acc['attention_compression_ratio']:.2f}x, bytes {acc['bytes'] / acc['base_bytes']:.3f} "
                  f"of the base", flush=True)
    extra["wall_s"] = time.perf_counter() - start
    print(f"\nwall time {extra['wall_s']:.0f}s")
    extra["definitions"] = {
        "prefill": "model(ids, use_cache=False) on 1 x prompt_len random token ids; median of repeats after a warm-up",
        "decode": "after a prompt_len prefill with the cache, new_tokens greedy steps of one token each; "
                  "seconds per token, median of repeats after a warm-up",
        "bytes": "safetensors bytes of the folder (export_variant format=factorised vs the base checkpoint)",
        "rss": "VmHWM while loading, VmRSS after the timed run (every weight read), in a fresh child process; "
               "peaks are reset (clear_refs) after the imports and again after loading",
        "ms columns": "process CPU time on CPU (1 thread: the work itself, steady on a shared machine), wall on CUDA; "
                      "the (wall) columns are wall-clock",
        "attention_macs": "multiply-adds per token of the attention projections, all layers (factorised_cost)",
    }
    finish("factorised", rows, args, device=device, extra=extra)


if __name__ == "__main__":
    main()
