"""A composed variant's perplexity with a full forward against one replayed from the base's layer-L inputs.

    python -m bench.perplexity_replay --threads 1                      # SmolLM2, layers 26-29, 8,192 tokens

Decomposes the layers (ranks (0.5, 0.5, 0.5), into ``--out``), measures the base's perplexity recording the
inputs of the lowest layer (``record_layer``) and once more without, then the variant (all the layers' artifacts,
factorised as the sweep loads them) with a full forward and replayed from the prefix
(:mod:`tensorllm.evaluation.perplexity_prefix`). Each row is one ``perplexity_of`` call, model loading included:
process CPU seconds and wall seconds. The replayed per-window NLLs must equal the full forward's bit for bit.
"""

from __future__ import annotations

import time

from bench.common import base_parser, finish, print_table, setup_threads


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="26,27,28,29", help="comma-separated layers the variant edits")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--out", default="runs/bench/perplexity_replay", help="artifacts and the prefix file")
    args = parser.parse_args()
    setup_threads(args.threads)
    from tensorllm.decompose import decompose_layer
    from tensorllm.evaluation.perplexity import perplexity_of

    layers = sorted(int(x) for x in args.layers.split(","))
    artifacts = [decompose_layer(args.model, layer=layer, rank_list=[(0.5, 0.5, 0.5)], out_root=f"{args.out}/art")[0]
                 .artifact for layer in layers]
    rows, results = [], {}

    def run(case: str, artifact_paths: list[str], **kwargs) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        results[case] = perplexity_of(args.model, artifact_paths, tokens=args.tokens, **kwargs)
        rows.append({"case": case, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                     "perplexity": results[case].perplexity, "replayed_from": results[case].replayed_from_layer})

    run("base, recording", [], record_layer=layers[0], prefix_dir=f"{args.out}/prefix")
    run("base", [])
    run("variant, full forward", artifacts)
    run("variant, replayed", artifacts, prefix=results["base, recording"].prefix_file)
    identical = results["variant, replayed"].window_nll == results["variant, full forward"].window_nll
    print_table(rows, [("case", "{}"), ("cpu_s", "{:.1f}", "CPU s"), ("wall_s", "{:.1f}", "wall s"),
                       ("perplexity", "{:.3f}"), ("replayed_from", "{}", "replayed from")],
                title=f"{args.model} perplexity at {args.tokens:,} tokens, variant on layers {layers}")
    print(f"replayed per-window NLLs identical to the full forward's: {identical}")
    finish("perplexity_replay", rows, args, extra={"identical": identical, "layers": layers})
    if not identical:
        raise SystemExit("the replayed perplexity differs from the full forward's")


if __name__ == "__main__":
    main()
