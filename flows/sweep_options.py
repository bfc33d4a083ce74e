"""``tensorllm sweep``'s options, generated from the flow's typed config (``flows.config.SweepConfig``).

One source of truth: every field of the config is one option, with its name (``val_limit`` ->
``--val-limit``), its type (bool -> ``--x/--no-x``; Literal -> choices; a list of Literals or of str -> several
values; int, float, str), its description as help and its default; the dataset choices come from the
dataset registry through the config's ``DatasetName``. Three fields have a text syntax of their own
(``layers``, ``ranks``, ``laser``) and their parsers here. A new config field becomes an option without
touching the CLI; ``tests/flows/test_config.py`` checks that every field has one.

Importing this module pulls pydantic and the library only, never Prefect, so the CLI's parser can be built
without starting anything.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable

from tensorllm.cli import parse_ranks

from .config import SweepConfig


def parse_layers(text: str) -> str | list[int]:
    """``"last 4"``, ``"all"`` or ``"20,21,22"``."""
    text = text.strip()
    if text == "all" or text.startswith("last"):
        return text
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers must be 'last N', 'all' or comma-separated integers; got {text!r}") from None


def parse_laser(text: str) -> dict:
    """``fc_in:0.1`` -> {"matrix": "fc_in", "rho": 0.1}."""
    try:
        matrix, rho = text.split(":")
        return {"matrix": matrix, "rho": float(rho)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--laser must be MATRIX:RHO, e.g. fc_in:0.1; got {text!r}") from None


#: fields whose command-line text has a syntax of its own: (parser, repeatable, metavar)
SPECIAL: dict[str, tuple[Callable, bool, str]] = {
    "layers": (parse_layers, False, "'last N'|all|L1,L2,..."),
    "ranks": (parse_ranks, True, "R1,R2,R3"),
    "laser": (parse_laser, True, "MATRIX:RHO"),
}


def _without_none(annotation):
    """``int | None`` -> ``int`` (None is the config's 'not set', which an absent option already means)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default_text(field) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return " ".join(",".join(f"{r:g}" for r in item) for item in value)
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def config_fields() -> dict:
    return SweepConfig.model_fields


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of ``SweepConfig`` (see the module docstring)."""
    for name, field in config_fields().items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description or name.replace('_', ' ')} (default: {_default_text(field)})".replace("%", "%%")
        annotation = _without_none(field.annotation)
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if name in SPECIAL:
            parse, repeat, metavar = SPECIAL[name]
            parser.add_argument(flag, dest=name, type=parse, action="append" if repeat else "store", metavar=metavar,
                                help=help_text + (" (repeat the option for several)" if repeat else ""))
        elif annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is list and typing.get_origin(args[0]) is typing.Literal:
            parser.add_argument(flag, dest=name, nargs="*", choices=typing.get_args(args[0]), help=help_text)
        elif origin is typing.Literal:
            parser.add_argument(flag, dest=name, choices=args, help=help_text)
        elif origin is list and args == (str,):  # e.g. --models a b c
            parser.add_argument(flag, dest=name, nargs="+", metavar=name.upper().rstrip("S"), help=help_text)
        elif origin is list and args == (float,):  # e.g. --targets 1.5 2 3
            parser.add_argument(flag, dest=name, nargs="+", type=float, metavar=name.upper().rstrip("S"),
                                help=help_text)
        elif annotation in (int, float, str):
            parser.add_argument(flag, dest=name, type=annotation, help=help_text)
        else:
            raise TypeError(f"SweepConfig.{name}: no command-line form for {field.annotation!r}; add one to "
                            "flows.sweep_options.SPECIAL")


def sweep_params(args: argparse.Namespace) -> dict:
    """The flow's keyword arguments from parsed options: only the options given (the flow has the defaults)."""
    params = {name: getattr(args, name) for name in config_fields() if getattr(args, name, None) is not None}
    if "ranks" in params:
        params["ranks"] = [list(r) for r in params["ranks"]]
    return params
