"""``tensorllm compress MODEL --target-ratio R --out DIR``: the command line of :func:`tensorllm.compress`.

The parameters are :class:`tensorllm.compression.config.CompressConfig`'s: given as options, in a ``--config``
YAML/JSON file (options override it), and printed back with ``--print-config``.
"""

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
    """The ``compress`` sub-command (called from :func:`tensorllm.cli.build_parser`).

    Every option is a field of :class:`~.config.CompressConfig` (``--prompts`` -> ``prompts``); an option left
    out is ``None`` here, so that the ``--config`` file's value, then the config's default, applies."""
    from ..cli import parse_ranks
    from ..tensorise import GROUPINGS
    from .config import CompressConfig

    fields = CompressConfig.model_fields

    def text(name: str) -> str:
        default = fields[name].get_default()
        shown = "" if fields[name].is_required() or default is None else f" (default {default})"  # None: the text says
        return (fields[name].description + shown).replace("%", "%%")

    p = sub.add_parser("compress", help="make the attention R times smaller where it hurts least: per-layer ranks "
                                        "from measured sensitivity, a factorised export and a verification report")
    p.add_argument("model", nargs="?", help=text("model") + " (or model: in --config)")
    p.add_argument("--config", metavar="FILE", help="a YAML or JSON file of these parameters (docs/compress.md); "
                                                    "options given here override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (file, options, defaults) as YAML and exit")
    p.add_argument("--target-ratio", type=_ratio, help=text("target_ratio"))
    p.add_argument("--out", help=text("out"))
    p.add_argument("--overwrite", action="store_true", help="replace --out when it is not empty (the old folder "
                                                            "stays until the new one is complete)")
    p.add_argument("--ranks", type=parse_ranks, action="append", metavar="R1,R2,R3",
                   help="a rank configuration of the grid (repeatable; integers or fractions; default: the built-in "
                        "grid, docs/compress.md)")
    p.add_argument("--grouping", choices=GROUPINGS, help=text("grouping"))
    p.add_argument("--layers", type=_layers, help=text("layers"))
    p.add_argument("--dataset", help=text("dataset"))
    p.add_argument("--prompts", type=int, help=text("prompts"))
    p.add_argument("--val-limit", type=int, help=text("val_limit"))
    p.add_argument("--generate", action=argparse.BooleanOptionalAction, help=text("generate"))
    p.add_argument("--margin", type=float, help=text("margin"))
    p.add_argument("--perplexity-tokens", type=int, help=text("perplexity_tokens"))
    p.add_argument("--perplexity-margin", type=float, help=text("perplexity_margin"))
    p.add_argument("--verify", action=argparse.BooleanOptionalAction,
                   help=text("verify") + "; --no-verify skips it")
    p.add_argument("--artifacts", help=text("artifacts"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compress)


def compress_params(args: argparse.Namespace) -> dict:
    """The configuration's fields that were given on the command line (the rest come from the file or defaults)."""
    from .config import CompressConfig

    params = {name: getattr(args, name) for name in CompressConfig.model_fields if getattr(args, name, None) is not None}
    if "ranks" in params:
        params["ranks"] = [list(r) for r in params["ranks"]]
    return params


def cmd_compress(args) -> int:
    from .. import progress
    from ..cli import check_writable_folder, emit_json
    from ..evaluation.data.registry import check_dataset
    from .api import compress
    from .config import build_config, config_yaml, read_compress_config

    config = build_config({**(read_compress_config(args.config) if args.config else {}), **compress_params(args)})
    if args.print_config:
        print(config_yaml(config), end="")
        return 0
    check_writable_folder(config.out, "--out")
    check_dataset(config.dataset, read=True)  # one line, before any model is loaded
    listener = progress.tqdm_listener(not args.json and sys.stderr.isatty(), unit="edits")
    with progress.listening(listener):
        report = compress(config.model, config.target_ratio, config.out, grid=config.ranks, grouping=config.grouping,
                          dataset=config.dataset, n_prompts=config.prompts, layers=config.layers,
                          verify=config.verify, val_limit=config.val_limit, generate=config.generate,
                          margin=config.margin, artifacts=config.artifacts,
                          overwrite=args.overwrite,
                          perplexity_tokens=config.perplexity_tokens, perplexity_margin=config.perplexity_margin)
    print("\n".join(report.lines()))
    if args.json:
        emit_json(report.to_dict())
    return 0
