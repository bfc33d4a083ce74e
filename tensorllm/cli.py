"""The ``tensorllm`` command line: each sub-command calls the same typed function the Prefect tasks call.

Usage::

    tensorllm inspect smollm2-135m
    tensorllm decompose smollm2-135m --layer 15 --ranks 64,32,4 --json
    tensorllm evaluate smollm2-135m --dataset fever --split val --limit 200 --variant runs/artifacts/... --json
    tensorllm sweep --json
    tensorllm models list | show NAME[@ALIAS|/VERSION] | load NAME@champion --out DIR

With ``--json`` the last line printed is one JSON object (for scripts); everything else is for people.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from . import __version__


def parse_ranks(text: str) -> tuple[float | int, ...]:
    """``"64,32,4"`` -> (64, 32, 4); ``"0.1,0.5,1.0"`` -> fractions. Clear error otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--ranks needs three comma-separated values R1,R2,R3; got {text!r}")
    out: list[float | int] = []
    for part in parts:
        try:
            out.append(int(part))
        except ValueError:
            try:
                out.append(float(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"--ranks value {part!r} is neither an integer nor a fraction") from None
    return tuple(out)


def emit_json(payload: dict) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


# ---- inspect -------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from .checkpoint import Checkpoint
    from .models import resolve_model
    from .tensorise import tensor_shape

    ckpt = Checkpoint(resolve_model(args.model))
    shape = ckpt.shape
    info = {
        "model": args.model, "folder": str(ckpt.folder), "architecture": ckpt.config.model_type,
        "layers": ckpt.n_layers, "heads": shape.n_heads, "kv_heads": shape.n_kv_heads, "head_dim": shape.d_head,
        "d_model": shape.d_model, "mha_params_per_layer": shape.n_params,
        "tensor_shape_kv": list(tensor_shape(shape, "kv")), "tensor_shape_replicate": list(tensor_shape(shape, "replicate")),
    }
    kind = "MHA" if shape.n_kv_heads == shape.n_heads else ("MQA" if shape.n_kv_heads == 1 else "GQA")
    print(f"{args.model}  ({info['architecture']}, {info['folder']})")
    print(f"  layers            {info['layers']}")
    print(f"  heads / KV heads  {shape.n_heads} / {shape.n_kv_heads}  ({kind}, group size {shape.group_size})")
    print(f"  head dim, d_model {shape.d_head}, {shape.d_model}")
    print(f"  MHA params/layer  {shape.n_params:,}")
    print(f"  tensor (kv)       {tuple(info['tensor_shape_kv'])}   (replicate: {tuple(info['tensor_shape_replicate'])})")
    if args.json:
        emit_json(info)
    return 0


# ---- decompose -----------------------------------------------------------------------------------
def cmd_decompose(args) -> int:
    from .decompose import decompose_layer

    start = time.perf_counter()
    rank_list = args.ranks
    records = decompose_layer(args.model, args.layer, rank_list, grouping=args.grouping, out_root=args.out,
                              device=args.device)
    for rec in records:
        state = "reused" if rec.reused else f"{rec.seconds:.2f}s"
        print(f"layer {rec.layer}  ranks {tuple(rec.ranks)}  grouping {rec.grouping}  rel_error {rec.rel_error:.4f}  "
              f"compression {rec.compression_ratio:.1f}x  ({state})\n  -> {rec.artifact}")
    if args.json:
        wall = time.perf_counter() - start
        if len(records) == 1:
            payload = {**records[0].to_dict(), "wall_seconds": wall}
        else:
            payload = {"variants": [r.to_dict() for r in records], "seconds": wall}
        emit_json(payload)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorllm", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"tensorllm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="architecture, layers, heads, KV heads, head dim, MHA params per layer")
    p.add_argument("model", help="smollm2-135m, a local HF folder, or a hub id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("decompose", help="decompose one layer's MHA weights; write one artifact per rank config")
    p.add_argument("model")
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--ranks", type=parse_ranks, action="append", required=True,
                   help="R1,R2,R3 as integers or fractions of (d_model, d_head, slices); repeat for several")
    p.add_argument("--grouping", choices=["kv", "replicate"], default="kv", help="GQA grouping (default kv)")
    p.add_argument("--out", default="runs/artifacts", help="artifact root folder (default runs/artifacts)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decompose)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, ModuleNotFoundError) as exc:
        print(f"tensorllm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
