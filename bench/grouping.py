"""Benchmark: the three GQA/MQA groupings (kv, replicate, weighted) at equal compression.

    nice -n 10 python -m bench.grouping [--quick] [--json] [--threads N] [--layers L ...] [--limit N] [--kl-items N]

The groupings (``tensorllm.tensorise``) build different 4-D tensors from the same layer, so equal ranks do
not mean equal sizes. Each row pairs them at (nearly) equal compression: with g query heads per KV head,
``kv``'s core is (R1, R2, R3, kv) and the others' (R1, R2, R3', h) with h = g·kv, so ``R3 = g·R3'`` stores
the same core size (the U3 factors differ by a few numbers: 2g+2 vs 4 slices). Every row reports its own
compression ratio (the layer's real MHA parameters over U1, U2, U3 and the core).

Per case and grouping:

* ``weight_error``: ``||W - W_written|| / ||W||`` over the real weights (each K/V once), where ``W_written`` is
  what the layer runs with after the K/V copies are averaged (``tensorise.written_rel_error``);
  ``fit_error``: the error of the tensor the solver saw (replicated / rescaled copies included);
* ``kl``: mean KL(base || variant) of the next-token distributions over every position of ``--kl-items``
  sequences (SmolLM2: validation prompt + answer of the dataset; tiny model: random token sequences);
* SmolLM2 only: validation answer loss and top-1 (teacher-forced, ``--limit`` items, default 1000) through
  ``tensorllm.evaluation.evaluate`` with the layer cache, and the paired difference to ``kv`` (95% CI).

Cases: SmolLM2-135M-Instruct (9 heads, 3 KV heads: GQA, g = 3) at ``--layers`` (default 27) and a tiny
random Llama with one KV head (MQA, g = 4, ``tensorllm/tiny_models.py``). The variant weights are written
into the model with the layout (``AttentionLayout.write_attention``), as ``apply_artifacts`` does, and restored.

Results: ``bench/results/grouping.json`` (``grouping-quick.json`` with --quick: 2 levels on one layer, 200 items).
The KL of a SmolLM2 variant replays the base's hidden states entering the changed layer
(``tensorllm.evaluation.layer_skip``), as the validation evaluation does with its layer cache.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from bench.common import base_parser, finish, library_versions, print_table, setup_threads

MODEL = "smollm2-135m"
GROUPINGS = ("kv", "replicate", "weighted")
#: (R1, R2, R3 of replicate/weighted); kv gets R3 * g so the cores have the same size
SMOL_LEVELS = [(288, 32, 1), (288, 32, 2), (144, 16, 1)]
TINY_LEVELS = [(16, 4, 1), (16, 4, 2), (8, 4, 1)]
FULL = {"layers": [27], "limit": 1000, "kl_items": 48, "levels": SMOL_LEVELS}
QUICK = {"layers": [27], "limit": 200, "kl_items": 16, "levels": SMOL_LEVELS[:2]}


def ranks_for(grouping: str, level: tuple[int, int, int], group_size: int) -> tuple[int, int, int]:
    r1, r2, r3 = level
    return (r1, r2, r3 * group_size) if grouping == "kv" else (r1, r2, r3)


def decompose(weights, shape, grouping: str, ranks, device: str):
    """Fit one grouping's tensor at ``ranks``; the weights a variant would run with, and both errors."""
    import torch

    from tensorllm.tensorise import tensorise, untensorise, written_rel_error
    from tensorllm.tucker import tucker_decompose

    tensor = tensorise(weights.to(device=device, dtype=torch.float32), shape, grouping)
    result = tucker_decompose(tensor, ranks)
    approx = result.reconstruct()
    return {
        "written": untensorise(approx, shape, grouping).to("cpu"),
        "weight_error": written_rel_error(weights, approx.cpu(), shape, grouping),
        "fit_error": result.rel_error,
        "compression_ratio": result.compression_ratio(shape.n_params),
        "compressed_params": result.n_params,
        "tensor_shape": list(tensor.shape),
        "ranks": list(result.ranks),
        "converged": result.converged,
    }


def kl_to_base(model, batches, base_logprobs, layer: int | None = None, inputs=None) -> float:
    """Mean KL(base || model) over the non-padding positions of ``batches``.

    With ``layer`` and the base's recorded ``inputs`` of that layer (:func:`base_logprobs_of`), layers before
    ``layer`` are replayed, not run (``tensorllm.evaluation.layer_skip``; exact: the variant changes ``layer`` only).
    """
    import contextlib

    import torch

    from tensorllm.evaluation.layer_skip import replay_prefix

    total, count = 0.0, 0
    with torch.no_grad():
        for i, ((ids, mask), base) in enumerate(zip(batches, base_logprobs)):
            replay = replay_prefix(model, layer, inputs[layer][i]) if layer else contextlib.nullcontext()
            with replay:
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            kl = (base.exp() * (base - logp)).sum(-1)  # [batch, seq]
            total += float((kl * mask).sum())
            count += int(mask.sum())
    return total / count


def base_logprobs_of(model, batches, layers=()):
    """The base model's log-probabilities per batch, and the hidden states entering each of ``layers``."""
    import contextlib

    import torch

    from tensorllm.evaluation.layer_skip import LayerInput, record_layer_input

    out, inputs = [], {layer: [] for layer in layers}
    with torch.no_grad():
        for ids, mask in batches:
            with contextlib.ExitStack() as stack:
                recorders = {layer: stack.enter_context(record_layer_input(model, layer)) for layer in layers}
                out.append(torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1))
            for layer, rec in recorders.items():
                inputs[layer].append(LayerInput(hidden=rec.hidden, tuple_len=rec.tuple_len))
    return out, inputs


def smollm2_case(layers, levels, limit, kl_items, dataset, batch_size, device, tmp: Path) -> list[dict]:
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.evaluation import EvalConfig, HiddenStateCache, evaluate, load_task
    from tensorllm.evaluation.paired import compare_paired
    from tensorllm.models import load_model, resolve_model

    folder = resolve_model(MODEL)
    ckpt = Checkpoint(folder)
    shape = ckpt.shape
    model, tokenizer = load_model(folder, device=device)
    layout = ckpt.layout
    state = model.state_dict()
    prefix = layout.find_prefix(state)
    task = load_task(dataset, tokenizer)
    cache = HiddenStateCache(disk_dir=tmp / "hidden")

    def run(name: str, first_layer, fill=()):
        config = EvalConfig(dataset=dataset, split="val", limit=limit, batch_size=batch_size, generate=False,
                            first_changed_layer=first_layer, fill_layers=tuple(fill), cache_dir=cache.disk_dir)
        path = tmp / f"{name}.jsonl"
        return evaluate(model, tokenizer, config, examples_out=path, task=task, cache=cache), path

    # KL sequences: the first validation prompts with their answers, padded per batch of 16
    wanted = set(_val_ids(task, kl_items))
    val = [r for r in task.dataset if r["id"] in wanted][:kl_items]
    texts = [r["prompt"] + " " + r["answer"] for r in val]
    batches = []
    for i in range(0, len(texts), 16):
        enc = tokenizer(texts[i:i + 16], return_tensors="pt", padding=True)
        batches.append((enc.input_ids.to(device), enc.attention_mask.to(device)))
    start = time.perf_counter()
    base_lp, base_inputs = base_logprobs_of(model, batches, layers)
    base, _ = run("base", None, fill=layers)
    print(f"[{time.strftime('%H:%M:%S')}] base: val n={base.n} loss {base.loss:.4f} top-1 {base.top1_accuracy:.4f} "
          f"({time.perf_counter() - start:.0f}s)", flush=True)

    rows = []
    for layer in layers:
        weights = ckpt.attention(layer)
        originals = {n: state[n].detach().clone() for n in layout.qualified(layout.attention_names(layer), prefix).values()}
        for level in levels:
            kv_path = None
            for grouping in GROUPINGS:
                ranks = ranks_for(grouping, level, shape.group_size)
                fit = decompose(weights, shape, grouping, ranks, device)
                layout.write_attention(state, layer, shape, fit.pop("written").to(device), prefix)
                result, path = run(f"L{layer}-{grouping}-{'x'.join(map(str, ranks))}", layer)
                kl = kl_to_base(model, batches, base_lp, layer, base_inputs)
                for name, tensor in originals.items():
                    state[name].copy_(tensor)
                row = {"case": f"smollm2 L{layer}", "level": "x".join(map(str, level)), "grouping": grouping, **fit,
                       "kl": kl, "val_n": result.n, "val_loss": result.loss, "val_top1": result.top1_accuracy,
                       "base_val_loss": base.loss, "base_val_top1": base.top1_accuracy}
                if grouping == "kv":
                    kv_path = path
                else:
                    paired = compare_paired(kv_path, path, metric="top1_correct")
                    row.update(loss_diff_vs_kv=paired.loss_diff, loss_diff_vs_kv_ci=list(paired.loss_diff_ci),
                               top1_diff_vs_kv=paired.accuracy_diff, top1_mcnemar_p_vs_kv=paired.mcnemar_p)
                rows.append(row)
                print(f"[{time.strftime('%H:%M:%S')}] L{layer} {grouping:9s} ranks {ranks}: CR {row['compression_ratio']:.1f}x "
                      f"weight err {row['weight_error']:.4f} (fit {row['fit_error']:.4f}) KL {kl:.4f} "
                      f"val loss {result.loss:.4f} top-1 {result.top1_accuracy:.4f}", flush=True)
    return rows


def _val_ids(task, n: int) -> list[str]:
    from tensorllm.evaluation.splits import split_of

    return [r["id"] for r in task.dataset if split_of(r["group"]) == "val"][:n]


def tiny_mqa_case(levels, kl_items, device) -> list[dict]:
    import torch

    from tensorllm.layouts import layout_for
    from tensorllm.tiny_models import VOCAB, build_tiny

    model = build_tiny("llama_mqa").to(device)
    state = model.state_dict()
    layout = layout_for(model.config, state)
    shape, prefix = layout.shape(model.config), layout.find_prefix(state)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(2, VOCAB, (16, 32), generator=generator).to(device),
                torch.ones(16, 32, dtype=torch.long, device=device)) for _ in range(max(1, kl_items // 16))]
    base_lp, _ = base_logprobs_of(model, batches)
    rows = []
    for layer in range(model.config.num_hidden_layers):
        weights = layout.read_attention(state, layer, shape, prefix).clone()
        for level in levels:
            for grouping in GROUPINGS:
                ranks = ranks_for(grouping, level, shape.group_size)
                fit = decompose(weights, shape, grouping, ranks, device)
                layout.write_attention(state, layer, shape, fit.pop("written").to(device), prefix)
                kl = kl_to_base(model, batches, base_lp)
                layout.write_attention(state, layer, shape, weights, prefix)
                rows.append({"case": f"tiny MQA L{layer}", "level": "x".join(map(str, level)), "grouping": grouping,
                             **fit, "kl": kl})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per grouping: geometric means over all comparable cells of the ratio to kv (< 1: better than kv)."""
    out = []
    cells = {(r["case"], r["level"]): {} for r in rows}
    for r in rows:
        cells[(r["case"], r["level"])][r["grouping"]] = r
    for grouping in GROUPINGS:
        entry = {"grouping": grouping}
        for metric in ("weight_error", "kl", "val_loss"):
            ratios = [c[grouping][metric] / c["kv"][metric] for c in cells.values()
                      if metric in c.get(grouping, {}) and c["kv"].get(metric)]
            entry[f"{metric}_vs_kv"] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
        wins = [c for c in cells.values() if "val_top1" in c["kv"]]
        entry["mean_val_top1"] = (sum(c[grouping]["val_top1"] for c in wins) / len(wins)) if wins else None
        out.append(entry)
    return out


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="SmolLM2 layers (default 27; quick 27)")
    parser.add_argument("--limit", type=int, default=None, help="validation items (default 1000; quick 200)")
    parser.add_argument("--kl-items", type=int, default=None, help="sequences for the KL (default 64; quick 16)")
    parser.add_argument("--dataset", default="qa_wikidata")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-smollm2", action="store_true", help="only the tiny MQA model")
    args = parser.parse_args()

    import torch

    setup_threads(args.threads)
    device = args.device or "cpu"
    preset = QUICK if args.quick else FULL
    layers = args.layers or preset["layers"]
    limit = args.limit or preset["limit"]
    kl_items = args.kl_items or preset["kl_items"]
    print(f"device={device} torch={library_versions('torch')['torch']} threads={torch.get_num_threads()} "
          f"layers={layers} limit={limit} kl_items={kl_items}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-grouping-") as tmp:
        rows = tiny_mqa_case(TINY_LEVELS, kl_items, device)
        if not args.skip_smollm2:
            rows += smollm2_case(layers, preset["levels"], limit, kl_items, args.dataset, args.batch_size, device,
                                 Path(tmp))
    columns = [("case", "{}"), ("level", "{}"), ("grouping", "{}"), ("ranks", "{}"), ("compression_ratio", "{:.1f}", "CR"),
               ("weight_error", "{:.4f}", "weight err"), ("fit_error", "{:.4f}", "fit err"), ("kl", "{:.4f}", "KL"),
               ("val_loss", "{:.4f}", "val loss"), ("val_top1", "{:.4f}", "val top-1"),
               ("loss_diff_vs_kv", "{:+.4f}", "loss - kv")]
    print_table(rows, columns, title="GQA/MQA groupings at equal compression")
    summ = summary(rows)
    print_table(summ, [("grouping", "{}"), ("weight_error_vs_kv", "{:.3f}", "weight err / kv"), ("kl_vs_kv", "{:.3f}", "KL / kv"),
                       ("val_loss_vs_kv", "{:.4f}", "val loss / kv"), ("mean_val_top1", "{:.4f}", "mean val top-1")],
                title="Summary (geometric mean of the ratio to kv over all cells; < 1 is better than kv)")
    finish("grouping", rows, args, device=device, extra={"summary": summ, "dataset": args.dataset, "limit": limit,
                                                        "layers": layers, "kl_items": kl_items})


if __name__ == "__main__":
    main()
