"""The ``tensorllm`` command line: each sub-command calls the same typed function the Prefect tasks call.

Usage::

    tensorllm inspect smollm2-135m
    tensorllm decompose smollm2-135m --layer 15 --ranks 64,32,4 --json
    tensorllm evaluate smollm2-135m --dataset fever --split val --limit 200 --variant runs/artifacts/... --json
    tensorllm evaluate runs/smollm2-2x --lm-eval hellaswag,arc_easy --limit 200
    tensorllm evaluate smollm2-135m --perplexity --variant runs/artifacts/... --compare-base
    tensorllm compress smollm2-135m --target-ratio 2 --out runs/smollm2-2x
    tensorllm sweep --json
    tensorllm models list | show NAME[@ALIAS|/VERSION] | load NAME@champion --out DIR
    tensorllm export NAME@champion --out DIR [--format factorised|dense] [--json]
    tensorllm export ARTIFACT [ARTIFACT ...] --out DIR [--base-model MODEL]

With ``--json`` the last line printed is one JSON object (for scripts); everything else is for people.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time

from . import __version__, progress
from .layouts import LAYOUT_NAMES
from .tensorise import DEFAULT_GROUPING, GROUPINGS


#: entry-point group through which other packages add sub-commands: the pipeline side attaches ``sweep`` this way
#: (``flows.sweep_command``), so the library never imports the orchestration.
COMMANDS_GROUP = "tensorllm.commands"


def emit_json(payload: dict) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


def check_writable_folder(path: str, option: str) -> None:
    """``path`` is a folder this user can write, or can be created: checked before any compute, so a bad ``--out``
    is one line at once instead of a traceback after the work."""
    from .paths import unwritable_reason

    reason = unwritable_reason(path)
    if reason is not None:
        allowed = "a folder this user can " + ("write" if "not writable" in reason else "create and write")
        raise ValueError(f"{option} {path}: {reason}; allowed: {allowed}")


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


def parse_device(text: str) -> str:
    """``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``); clear error otherwise."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; allowed: cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device; allowed: cpu")
    return text


# ---- inspect -------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from .checkpoint import Checkpoint
    from .models import resolve_model
    from .tensorise import GROUPINGS, tensor_shape

    ckpt = Checkpoint(resolve_model(args.model), layout=args.layout)
    shape = ckpt.shape
    info = {
        "model": args.model, "folder": str(ckpt.folder), "architecture": ckpt.config.model_type,
        "layout": ckpt.layout.name, "layer_prefix": ckpt.prefix, "attention_tensors": ckpt.attention_names(0),
        "ffn_matrices": sorted(ckpt.layout.ffn),
        "layers": ckpt.n_layers, "heads": shape.n_heads, "kv_heads": shape.n_kv_heads, "head_dim": shape.d_head,
        "d_model": shape.d_model, "mha_params_per_layer": shape.n_params,
        **{f"tensor_shape_{g}": list(tensor_shape(shape, g)) for g in GROUPINGS},
    }
    kind = "MHA" if shape.n_kv_heads == shape.n_heads else ("MQA" if shape.n_kv_heads == 1 else "GQA")
    print(f"{args.model}  ({info['architecture']}, {info['folder']})")
    how = "given by --layout" if args.layout else "detected from the checkpoint's tensors"
    print(f"  layout            {info['layout']}  ({how}: {', '.join(info['attention_tensors'])})")
    print(f"  layers            {info['layers']}")
    print(f"  heads / KV heads  {shape.n_heads} / {shape.n_kv_heads}  ({kind}, group size {shape.group_size})")
    print(f"  head dim, d_model {shape.d_head}, {shape.d_model}")
    print(f"  MHA params/layer  {shape.n_params:,}")
    for g in GROUPINGS:
        print(f"  tensor ({g + ')':11s}{tuple(info[f'tensor_shape_{g}'])}")
    if args.json:
        emit_json(info)
    return 0


# ---- decompose -----------------------------------------------------------------------------------
def cmd_decompose(args) -> int:
    from .decompose import decompose_layer

    check_writable_folder(args.out, "--out")
    start = time.perf_counter()
    rank_list = args.ranks
    bars = progress.tqdm_listener(not args.json and sys.stderr.isatty(), unit="configs")
    with progress.listening(bars):  # a bar per rank configuration on a terminal
        calibration = None
        if args.fit == "activations":
            from .activation_fit import Calibration

            calibration = Calibration(datasets=tuple(args.calibration_datasets), n_prompts=args.calibration_prompts)
        records = decompose_layer(args.model, args.layer, rank_list, grouping=args.grouping, out_root=args.out,
                                  device=args.device, layout=args.layout, balance=args.balance, fit=args.fit,
                                  calibration=calibration)
    for rec in records:
        state = "reused" if rec.reused else f"{rec.seconds:.2f}s"
        print(f"layer {rec.layer}  ranks {tuple(rec.ranks)}  grouping {rec.grouping}  rel_error {rec.rel_error:.4f}  "
              f"compression {rec.compression_ratio:.1f}x  ({state})\n  -> {rec.artifact}")
        if rec.converged is False:
            print(f"  warning: HOOI did not converge in {rec.hooi_iterations} sweeps (the error was still changing by "
                  "more than tol); artifact.json has the error history", file=sys.stderr)
    if args.json:
        wall = time.perf_counter() - start
        if len(records) == 1:
            payload = {**records[0].to_dict(), "wall_seconds": wall}
        else:
            payload = {"variants": [r.to_dict() for r in records], "seconds": wall}
        emit_json(payload)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorllm", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress the attention of a decoder LLM with TensorLLM (arXiv 2501.15674): each layer's\n"
                    "heads tensorised and Tucker-decomposed with shared factors; sweeps on Prefect + Ray,\n"
                    "variants in the MLflow registry.",
        epilog="examples:\n" + __doc__.split("Usage::\n")[1].split("\n\nWith")[0].strip("\n")
               + "\n\nWith --json the last line printed is one JSON object (for scripts). docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"tensorllm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="architecture, detected layout, layers, heads, KV heads, head dim, "
                                       "MHA params per layer, the 4-D tensor of every grouping")
    p.add_argument("model", help="smollm2-135m, a local HF folder, or a hub id")
    _add_layout_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("decompose", help="decompose one layer's MHA weights; write one artifact per rank config")
    p.add_argument("model")
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--ranks", type=parse_ranks, action="append", required=True,
                   help="R1,R2,R3 as integers or fractions of (d_model, d_head, slices); repeat for several")
    p.add_argument("--grouping", choices=GROUPINGS, default=DEFAULT_GROUPING,
                   help=f"GQA/MQA grouping: {', '.join(GROUPINGS)} (default {DEFAULT_GROUPING}; docs/architectures.md)")
    _add_layout_option(p)
    p.add_argument("--balance", choices=("none", "norms"), default="none",
                   help="function-preserving per-head rescaling before the fit (default none = the paper; "
                        "docs/method.md)")
    p.add_argument("--fit", choices=("weights", "activations"), default="weights",
                   help="what the Tucker fit minimises: the weights' error (the paper) or the layer's output error on "
                        "calibration prompts (default weights)")
    p.add_argument("--calibration-datasets", nargs="+", default=["qa_wikidata"], metavar="DATASET",
                   help="--fit activations: datasets whose validation split gives the prompts (default qa_wikidata)")
    p.add_argument("--calibration-prompts", type=int, default=128,
                   help="--fit activations: number of calibration prompts (default 128)")
    p.add_argument("--out", default="runs/artifacts", help="artifact root folder (default runs/artifacts)")
    p.add_argument("--device", type=parse_device, default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decompose)

    from .evaluate_command import add_evaluate_command

    add_evaluate_command(sub)  # tensorllm/evaluate_command.py

    add_plugin_commands(sub)  # `sweep`, from the pipeline side

    from .registry_commands import add_export_command, add_models_command

    add_models_command(sub)  # tensorllm/registry_commands.py
    add_export_command(sub)
    from .compression.command import add_compress_command

    add_compress_command(sub)  # tensorllm/compression/command.py
    from .verify_command import add_verify_command

    add_verify_command(sub)  # tensorllm/verify_command.py
    _one_line_errors(parser)
    return parser


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """The command's and every sub-command's option errors as one line (argparse prints its usage block first
    otherwise)."""
    import types

    parser.error = types.MethodType(one_line_error, parser)
    for action in parser._actions:  # argparse keeps its sub-parsers here and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_errors(sub)


def add_plugin_commands(sub) -> None:
    """Sub-commands that other packages register under the ``tensorllm.commands`` entry-point group.

    Each entry point is a function ``register(subparsers)``. One that cannot be imported (its dependencies are
    missing, or the install is stale) still gets its sub-command, which then fails with one line saying why,
    instead of vanishing from the command.
    """
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except Exception as exc:  # noqa: BLE001 (any import failure: say it when the command is used)
            p = sub.add_parser(entry.name, help=f"(unavailable: {one_line(exc)})")
            p.set_defaults(func=_unavailable(entry, exc))
            continue
        register(sub)


def _unavailable(entry, exc: BaseException):
    def fail(args) -> int:
        raise ModuleNotFoundError(f"the {entry.name!r} command could not be loaded from {entry.value} "
                                  f"({one_line(exc)}); reinstall the project with `make install` or "
                                  "`pip install -e .` so the pipeline side (flows/, tasks/) is importable")
    return fail


def _add_layout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUT_NAMES, default=None,
                        help="attention layout (default: detected from the model's own modules; docs/architectures.md)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the sweep re-runs itself as its driver
    with command_logging(args.verbose):
        return run_command(args)


@contextlib.contextmanager
def command_logging(verbose: bool):
    """Our own loggers (tensorllm, flows, tasks) print to stderr at INFO (``-v``) or WARNING while one command
    runs, and are restored after: ``main`` called in-process (tests, notebooks) leaves no handler or level behind.
    A root handler would print Prefect's and Ray's records a second time, so only ours are configured."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("tensorllm", "flows", "tasks")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def run_command(args) -> int:
    """``args.func(args)``, with every bad input as one line on stderr and exit code 2 (``--debug``: the traceback)."""
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, ModuleNotFoundError,  # flows.validate.SweepInputError too
            NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as exc:  # a bad output path
        if args.debug:
            raise
        print(f"tensorllm {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError) as exc:  # a service went away mid-run: not bad input, but still one line
        if args.debug:
            raise
        print(f"tensorllm {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's without its quotes); ``--debug`` shows the rest."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def one_line_error(parser: argparse.ArgumentParser, message: str):
    """``ArgumentParser.error`` without the usage block: ``tensorllm sweep: error: <message>``, exit code 2."""
    parser.exit(2, f"{parser.prog}: error: {one_line(ValueError(message))}\n")


if __name__ == "__main__":
    sys.exit(main())
