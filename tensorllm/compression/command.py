"""``tensorllm compress MODEL --target-ratio R --out DIR``: the command line of :func:`tensorllm.compress`."""

from __future__ import annotations

import argparse
import sys


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target-ratio must be a number > 1; got {text!r}") from None
    if not value > 1:
        raise argparse.ArgumentTypeError(f"--target-ratio must be a number > 1 (times smaller); got {text!r}")
    return value


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated layer indices, e.g. 20,21,29; got {text!r}")


def add_compress_command(sub) -> None:
    """The ``compress`` sub-command (called from :func:`tensorllm.cli.build_parser`)."""
    from ..cli import parse_ranks
    from ..tensorise import DEFAULT_GROUPING, GROUPINGS
    from .plan import DEFAULT_PROMPTS
    from .verify import DEFAULT_MARGIN, DEFAULT_PPL_MARGIN, DEFAULT_TOKENS

    p = sub.add_parser("compress", help="make the attention R times smaller where it hurts least: per-layer ranks "
                                        "from measured sensitivity, a factorised export and a verification report")
    p.add_argument("model", help="model name (smollm2-135m), local folder or hub id")
    p.add_argument("--target-ratio", type=_ratio, required=True,
                   help="whole-model attention parameters before / after, at least (e.g. 2)")
    p.add_argument("--out", required=True, help="the export folder to write (with compress_report.json)")
    p.add_argument("--ranks", type=parse_ranks, action="append", metavar="R1,R2,R3",
                   help="a rank configuration of the grid (repeatable; integers or fractions; default: the built-in "
                        "grid, docs/compress.md)")
    p.add_argument("--grouping", choices=GROUPINGS, default=DEFAULT_GROUPING)
    p.add_argument("--layers", type=_layers, help="only these layers may change (default all)")
    p.add_argument("--dataset", default="qa_wikidata", help="validation prompts for calibration and verification")
    p.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help=f"calibration prompts (default {DEFAULT_PROMPTS})")
    p.add_argument("--val-limit", type=int, default=200, help="validation items for the verification (default 200)")
    p.add_argument("--generate", action="store_true", help="verify with greedy-generation accuracy (slower) "
                                                          "instead of first-token top-1")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="non-inferiority margin on accuracy "
                                                                        "(default 0.02)")
    p.add_argument("--perplexity-tokens", type=int, default=DEFAULT_TOKENS,
                   help=f"token budget of the perplexity on held-out text (default {DEFAULT_TOKENS:,}; 0 skips it)")
    p.add_argument("--perplexity-margin", type=float, default=DEFAULT_PPL_MARGIN,
                   help="the perplexity goal: ratio to the base within 1 + this (default 0.10)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with the base")
    p.add_argument("--artifacts", help="folder for the per-layer artifacts (default next to --out; reused)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    from .. import progress
    from ..cli import check_writable_folder, emit_json
    from .api import compress

    check_writable_folder(args.out, "--out")
    listener = progress.tqdm_listener(not args.json and sys.stderr.isatty(), unit="edits")
    with progress.listening(listener):
        report = compress(args.model, args.target_ratio, args.out, grid=args.ranks, grouping=args.grouping,
                          dataset=args.dataset, n_prompts=args.prompts, layers=args.layers,
                          verify=not args.no_verify, val_limit=args.val_limit, generate=args.generate,
                          margin=args.margin, artifacts=args.artifacts, perplexity_tokens=args.perplexity_tokens,
                          perplexity_margin=args.perplexity_margin)
    print("\n".join(report.lines()))
    if args.json:
        emit_json(report.to_dict())
    return 0
