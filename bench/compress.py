"""The compression front of ``tensorllm compress``: SmolLM2 in bf16 at 1.25x..4x, beside uniform ranks.

    python -m bench.compress            # all 30 layers, 5 targets, val 100 / test 200 items
    python -m bench.compress --quick    # last 6 layers, targets 1.1x/1.25x, val 40 / test 60

What it does, through the real path (:mod:`tensorllm.compression`):

1. saves the converted SmolLM2-135M-Instruct as bf16 (``save_pretrained`` in bfloat16) under ``runs/bench-compress``;
2. measures the sensitivity table once (every layer x half the default grid, :data:`GRID`: per-token KL on 16 validation prompts
   that the verification does not use); its time is the ``sensitivity`` column of every row;
3. for each target: the allocator's plan and *uniform* ranks (the largest single grid configuration on every
   layer that reaches the target), each exported (factorised, bf16) and compared paired with the base on the
   first ``--val`` validation and ``--test`` test items of qa_wikidata: first-token top-1 accuracy difference
   and teacher-forced answer-loss difference, with 95% intervals (both models evaluated in float32 on the CPU);
4. and the perplexity of base and variant on held-out text (:mod:`tensorllm.evaluation.perplexity`: Austen's
   *Persuasion*, ``--ppl-tokens`` tokens in windows of 512), paired: the ratio with its 95% interval, and whether
   it is within the +10% goal.

5. and the sweep's greedy composition, once (it ignores compression, so it lands at one ratio): every grid edit of
   the sensitivity pass evaluated alone on the first ``--val`` validation items, then the sweep's greedy rule on
   their build half (:mod:`bench.compress_greedy`); the composition it keeps is evaluated as the other rows.
   ``--no-greedy`` skips it; its time is the row's ``greedy_s`` (the single-layer evaluations and the steps).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.common import REPO_ROOT, base_parser, finish, print_table, setup_threads

TARGETS = (1.25, 1.5, 2.0, 3.0, 4.0)
#: half of the default grid (R1 1/2 or 1/4 of d_model, R2 all or half of d_head; 1.4x to 4.5x a layer on SmolLM2):
#: the full grid's sensitivity pass takes twice as long on the shared 2-core machine
GRID = [(0.5, 1.0, 1.0), (0.5, 0.5, 1.0), (0.25, 1.0, 1.0), (0.25, 0.5, 1.0)]
QUICK_TARGETS = (1.1, 1.25)


def bf16_base(root: Path) -> Path:
    """SmolLM2 saved as bf16 (once): what a user who downloads a bf16 checkpoint has."""
    import torch

    from tensorllm.models import load_model, resolve_model

    folder = root / "smollm2-135m-bf16"
    if not (folder / "config.json").is_file():
        model, tokenizer = load_model(resolve_model("smollm2-135m"), dtype=torch.float32)
        model.to(torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def run_variant(base: str, cells, out: Path, base_evals: dict, args) -> dict:
    from tensorllm.artifact import read_meta
    from tensorllm.composed import whole_model_size
    from tensorllm.compression.verify import verify_paths, verify_perplexity
    from tensorllm.export import export_variant

    start = time.perf_counter()
    paths = [c.artifact for c in cells]
    size = whole_model_size(base, [read_meta(p) for p in paths])
    export = export_variant(base, paths, out)
    row = {"attention_ratio": size.attention_compression_ratio, "total_ratio": size.total_compression_ratio,
           "bytes": export["bytes"], "dtype": export["dtype"], "layers": len(paths)}
    for split, limit in (("val", args.val), ("test", args.test)):
        verification, base_evals[split] = verify_paths(base, paths, "qa_wikidata", split, limit, False,
                                                       out / "verification", base_eval=base_evals.get(split))
        row[f"{split}_base"] = verification.base_accuracy
        row[f"{split}_acc"] = verification.variant_accuracy
        row[f"{split}_diff"] = verification.accuracy_diff
        row[f"{split}_diff_ci"] = verification.accuracy_diff_ci
        row[f"{split}_loss_diff"] = verification.loss_diff
        row[f"{split}_loss_diff_ci"] = verification.loss_diff_ci
        row[f"{split}_non_inferior"] = verification.non_inferior
    if args.ppl_tokens:
        ppl, base_evals["perplexity"] = verify_perplexity(base, paths, tokens=args.ppl_tokens,
                                                          base=base_evals.get("perplexity"))
        row.update(ppl_base=ppl.base_perplexity, ppl=ppl.variant_perplexity, ppl_ci=ppl.variant_perplexity_ci,
                   ppl_ratio=ppl.ratio, ppl_ratio_ci=ppl.ratio_ci, ppl_within_10pct=ppl.within_margin)
    row["seconds"] = time.perf_counter() - start
    return row


def greedy_row(base: str, table, root: Path, base_evals: dict, args) -> dict:
    """The sweep's greedy composition over the sensitivity pass's edits, evaluated as the other rows."""
    from bench.compress_greedy import greedy_composition

    t0 = time.perf_counter()
    result = greedy_composition(base, table, args.greedy_val or args.val, root / "greedy" / "evaluations")
    greedy_s = time.perf_counter() - t0
    damage = {c.artifact: c.damage for cells in table.cells for c in cells if c.artifact is not None}
    configs = sorted({"x".join(map(str, e.ranks)) for e in result.kept})
    row = {"target": None, "method": "greedy (sweep's rule)", "greedy_s": greedy_s,
           "calibration_kl": sum(damage[e.artifact] for e in result.kept),
           "configs": ", ".join(configs) if len(configs) <= 3 else f"{len(configs)} kinds",
           "greedy": {**result.to_dict(), "val_items": args.greedy_val or args.val}}
    if result.kept:
        row.update(run_variant(base, result.kept, root / "greedy", base_evals, args))
    else:  # nothing kept: the base itself
        row.update(attention_ratio=1.0, total_ratio=1.0, layers=0, bytes=sum(
            p.stat().st_size for p in Path(base).glob("*.safetensors")))
    row["seconds"] = time.perf_counter() - t0 - greedy_s  # export + evaluations, as the other rows
    (root / "greedy.json").write_text(json.dumps(row, indent=2, default=str))  # kept if a later row fails
    print(f"greedy: {len(result.kept)} layers kept of {len(result.steps)} steps, {row['attention_ratio']:.3f}x, "
          f"{result.evaluations} evaluations in {greedy_s:.0f} s", flush=True)
    return row


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--val", type=int, default=None, help="validation items (default 100; quick 40)")
    parser.add_argument("--test", type=int, default=None, help="test items (default 200; quick 60)")
    parser.add_argument("--ppl-tokens", type=int, default=None,
                        help="perplexity token budget (default 16,384; quick 2,048; 0 skips it)")
    parser.add_argument("--root", default=str(REPO_ROOT / "runs" / "bench-compress"))
    parser.add_argument("--model", help="another model folder instead of SmolLM2 in bf16 (to try the script)")
    parser.add_argument("--no-greedy", action="store_true", help="skip the sweep's greedy composition")
    parser.add_argument("--greedy-val", type=int, default=None,
                        help="validation items the greedy is built on (default --val; its build half is about half)")
    args = parser.parse_args()
    setup_threads(args.threads)
    args.val = args.val or (40 if args.quick else 100)
    args.test = args.test or (60 if args.quick else 200)
    args.ppl_tokens = (2048 if args.quick else 16_384) if args.ppl_tokens is None else args.ppl_tokens
    from tensorllm.compression import measure, plan, uniform_cells

    root = Path(args.root)
    base = args.model or str(bf16_base(root))
    load_before = os.getloadavg()
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.models import resolve_model

    n_layers = Checkpoint(resolve_model(base)).n_layers
    layers = list(range(max(0, n_layers - 6), n_layers)) if args.quick else None
    table = measure(base, GRID, skip=args.val, layers=layers, artifacts=root / "artifacts")
    sensitivity_s = table.seconds["total"]
    rows, base_evals, done = [], {}, {}
    greedy = None if args.no_greedy else greedy_row(base, table, root, base_evals, args)
    for target in (QUICK_TARGETS if args.quick else TARGETS):
        for method in ("allocator", "uniform"):
            t0 = time.perf_counter()
            if method == "allocator":
                chosen = plan(table, target)
                cells, damage = chosen.chosen, chosen.allocation.damage
            else:
                cells = uniform_cells(table, target)
                damage = sum(c.damage for c in cells)
            configs = sorted({"x".join(map(str, c.ranks)) for c in cells})
            row = {"target": target, "method": method, "calibration_kl": damage,
                   "configs": ", ".join(configs) if len(configs) <= 3 else f"{len(configs)} kinds"}
            key = tuple(sorted(c.artifact for c in cells))  # uniform often picks one configuration for two targets
            if key not in done:
                done[key] = run_variant(base, cells, root / f"{method}-{target:g}x", base_evals, args)
            row.update(done[key])
            row["seconds"] = time.perf_counter() - t0  # plan + export + both verifications
            row["sensitivity_s"] = sensitivity_s
            rows.append(row)
            print(f"{method} {target}x: {row['attention_ratio']:.2f}x, val {row['val_diff']:+.3f}, "
                  f"test {row['test_diff']:+.3f}", flush=True)
    if greedy is not None:
        greedy["sensitivity_s"] = sensitivity_s
        rows = sorted(rows + [greedy], key=lambda r: r["target"] or r["attention_ratio"])  # stable: methods stay
    base_bytes = sum(p.stat().st_size for p in Path(base).glob("*.safetensors"))
    for row in rows:
        row["bytes_vs_base"] = row["bytes"] / base_bytes
    print_table(rows, [("target", "{:g}x"), ("method", "{}"), ("attention_ratio", "{:.2f}x", "achieved"),
                       ("bytes_vs_base", "{:.3f}", "bytes/base"), ("val_diff", "{:+.3f}", "val top1 diff"),
                       ("test_diff", "{:+.3f}", "test top1 diff"), ("test_loss_diff", "{:+.3f}", "test loss diff")]
                + ([("ppl", "{:.2f}", "perplexity"), ("ppl_ratio", "{:.3f}", "ppl ratio")] if args.ppl_tokens else [])
                + [("seconds", "{:.0f}", "s"), ("greedy_s", "{:.0f}", "greedy s")], title="compress front, SmolLM2-135M bf16")
    finish("compress", rows, args, device="cpu",
           extra={"base": base, "base_bytes": base_bytes, "sensitivity_seconds": sensitivity_s,
                  "sensitivity_breakdown": table.seconds, "calibration": table.calibration, "notes": table.notes,
                  "val_items": args.val, "test_items": args.test, "ppl_tokens": args.ppl_tokens,
                  "ppl_base": (base_evals["perplexity"].to_dict() if "perplexity" in base_evals else None),
                  "greedy": greedy and greedy.pop("greedy"), "load_before": load_before,
                  "load_after": os.getloadavg()})


if __name__ == "__main__":
    main()
