"""Check every sweep parameter before anything starts: one line naming the bad value and what is allowed.

A sweep that dies after Prefect and Ray are up, or after an hour of decompositions because a dataset
folder or the MLflow server is missing, wastes the time of the person who started it. ``validate_sweep``
runs the cheap checks first (the typed parameters, then the model's config.json, layers, ranks, LASER
matrices, dataset folders, the MLflow store, the Ray address) and raises :class:`SweepInputError`, whose
text is the one line ``tensorllm sweep`` prints and a Prefect run fails with.

It reads the model's config only (no weights), and never imports Prefect or Ray: a bad parameter must fail
in seconds (``tensorllm sweep`` calls it before it starts a Prefect API; the flow calls it again first).

Usage::

    from flows.validate import validate_sweep
    config = validate_sweep({"model": "/models/llama", "layers": "last 2", "ranks": [(64, 32, 4)]})
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import typing
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from .config import SweepConfig

#: seconds a TCP connect to the MLflow server or the Ray head may take before it counts as unreachable
CONNECT_TIMEOUT = 5.0
MLFLOW_SCHEMES = "sqlite:////ABSOLUTE/PATH.db, http(s)://HOST:PORT, file:///FOLDER (or a plain folder path)"
RAY_FORMS = "None or 'local' (a private local Ray), 'auto', HOST:PORT or ray://HOST:PORT"
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "tuple", "dict", "none"}


class SweepInputError(ValueError):
    """A bad sweep parameter; ``str(error)`` is one line: the field, what was wrong, what is allowed."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the wrapped message held


def validate_sweep(params: dict) -> SweepConfig:
    """The :class:`SweepConfig` of ``params`` once every check passed; else :class:`SweepInputError`."""
    check_known_parameters(params)
    config = build_config(params)
    try:
        per_model = config.batch()  # `models`: every model of the batch is checked
    except ValueError as exc:
        raise SweepInputError(f"registered_model: {exc}") from None
    folders = []
    for one in per_model:
        try:
            folder = check_model(one.model)
            folders.append(folder)
        except SweepInputError as exc:
            raise SweepInputError(str(exc).replace("model:", "models:", 1) if config.models else str(exc)) from None
        model_config, layout = check_architecture(folder, one.layout)
        check_layers(one, layout.n_layers(model_config))
        check_ranks(one, layout.shape(model_config))
        check_laser(one, layout)
    if config.evaluate != "none":  # decompose-only runs read no data
        check_datasets(config.datasets, folders[0])
        if config.transfer_dataset not in (None, *config.datasets):
            check_datasets([config.transfer_dataset], folders[0], field="transfer_dataset")
    check_artifacts_root(config.artifacts_root)
    check_mlflow_uri(config.mlflow_tracking_uri)
    check_ray_address(config.ray_address)
    from .lm_eval import check_lm_eval  # (flows.lm_eval imports this module's SweepInputError)

    check_lm_eval(config)
    if config.evaluate != "none":
        from .perplexity import check_perplexity  # (as lm_eval: it imports this module's SweepInputError)

        check_perplexity(config)
    return config


# ---- the typed parameters -----------------------------------------------------------------------
def check_known_parameters(params: dict) -> None:
    unknown = sorted(set(params) - set(SweepConfig.model_fields))
    if unknown:
        raise SweepInputError(f"unknown parameter(s) {unknown}; allowed: {', '.join(SweepConfig.model_fields)}")


def build_config(params: dict) -> SweepConfig:
    """``SweepConfig(**params)``, its first validation error as one line."""
    try:
        return SweepConfig(**params)
    except ValidationError as exc:
        raise SweepInputError(describe_error(exc.errors()[0], params)) from None


def describe_error(error: dict, params: dict) -> str:
    """One pydantic error as ``<field>: <what was wrong> (got <value>); allowed: <...>``."""
    loc = [part for part in error["loc"] if isinstance(part, int) or part.lower() not in _TYPE_TAGS
           and re.fullmatch(r"[a-z][a-z0-9_]*", part)]
    field = loc[0] if loc else "parameters"
    where = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    nested = any(isinstance(part, str) for part in loc[1:])  # laser[0].rho: the element, not the whole list
    got = error.get("input") if nested else params.get(field, error.get("input"))
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error":  # our own validators: their text already names the value and what is allowed
        text = str(ctx.get("error", error["msg"].removeprefix("Value error, ")))
        return f"{where}: {text.removeprefix(field + ' ')}"
    allowed = allowed_text(field, loc)
    if kind in ("literal_error", "enum") and field == "datasets":
        return f"datasets: unknown dataset {error['input']!r} (got {got!r}); allowed: {allowed}"
    if kind in ("literal_error", "enum"):
        return f"{where}: unknown value {error['input']!r} (got {got!r}); allowed: {allowed}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = f"{limit:g}" if isinstance(limit, (int, float)) else limit
        return f"{where}: must be {bounds[kind]} {limit} (got {error['input']!r}); allowed: {allowed}"
    if kind == "too_short":
        return f"{where}: must not be empty (got {got!r}); allowed: {allowed}"
    return f"{where}: {error['msg'][0].lower()}{error['msg'][1:]} (got {error['input']!r}); allowed: {allowed}"


def allowed_text(field: str, loc: list) -> str:
    """What a field accepts: its Literal values, else its description (the config's own words)."""
    model: type[BaseModel] = SweepConfig
    info = SweepConfig.model_fields.get(field)
    for part in loc[1:]:  # a nested model (laser[0].rho): look the field up in it
        if isinstance(part, str):
            nested = _nested_model(info.annotation) if info is not None else None
            if nested is not None:
                model, info = nested, nested.model_fields.get(part)
    if info is None:
        return ", ".join(SweepConfig.model_fields)
    literal = _literal_values(info.annotation)
    bounds = [f"{op} {getattr(m, name)}" for m in info.metadata for name, op in _BOUNDS.items() if hasattr(m, name)]
    if literal:
        text = ", ".join(map(str, literal))
    elif bounds:
        kind = "an integer" if int in _flat_args(info.annotation) else "a number"
        text = f"{kind} {' and '.join(bounds)}"
    else:
        text = info.description or model.__name__
    if type(None) in typing.get_args(info.annotation):
        text += ", or None"
    return text


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _flat_args(annotation) -> set:
    args = typing.get_args(annotation)
    return {annotation} if not args else set().union(*map(_flat_args, args))


def _literal_values(annotation) -> tuple:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        values = _literal_values(arg)
        if values:
            return values
    return ()


def _nested_model(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_nested_model, typing.get_args(annotation)) if m is not None), None)


# ---- the model ----------------------------------------------------------------------------------
def check_model(model: str) -> Path:
    """A local folder with a config.json for ``model``; a missing path is never tried on the hub."""
    from tensorllm.models import KNOWN_NAMES, resolve_model  # lazy: imports torch
    from tensorllm.paths import looks_like_path

    allowed = f"{', '.join(sorted(KNOWN_NAMES))}, a local Hugging Face folder (config.json + *.safetensors), or a hub id"
    path = Path(model).expanduser()
    if looks_like_path(model) and not path.exists():
        raise SweepInputError(f"model: model folder {model} does not exist; allowed: {allowed}")
    if path.exists() and not path.is_dir():
        raise SweepInputError(f"model: {model} is a file, not a folder; allowed: {allowed}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise SweepInputError(f"model: folder {model} has no config.json; allowed: {allowed}")
    try:
        return resolve_model(model)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, OSError) as exc:
        raise SweepInputError(f"model: {exc}") from None


def check_architecture(folder: Path, layout: str | None = None):
    """The model's transformers config and its layout, detected from the checkpoint's tensors (names and
    shapes from the safetensors headers; ``model_type`` is only a hint) or the ``layout`` named."""
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.layouts import SUPPORTED_MODEL_TYPES

    path = folder / "config.json"
    try:
        parsed = json.loads(path.read_text())
        if not isinstance(parsed, dict):
            raise ValueError(f"it holds a {type(parsed).__name__}")
    except (ValueError, OSError) as exc:
        raise SweepInputError(f"model: {path} is not a JSON object ({exc}); allowed: a Hugging Face config.json") from None

    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepInputError(f"model: cannot read {folder / 'config.json'} ({first}); allowed: a model type that this "
                              f"transformers knows whose attention matches a known layout, e.g. "
                              f"{', '.join(SUPPORTED_MODEL_TYPES)}") from None
    try:
        return model_config, Checkpoint(folder, layout=layout).layout
    except (ValueError, FileNotFoundError) as exc:
        raise SweepInputError(f"model: {exc}") from None


def check_layers(config: SweepConfig, n_layers: int) -> list[int]:
    try:
        return config.resolve_layers(n_layers)
    except ValueError as exc:
        raise SweepInputError(f"layers: {str(exc).removeprefix('layers ')} (got {config.layers!r}); allowed: indices 0..{n_layers - 1}, "
                              f"'last N' with 1 <= N <= {n_layers}, or 'all'") from None


def check_ranks(config: SweepConfig, shape) -> None:
    """Every rank configuration against the 4-D tensor of ``config.grouping``, named by its position."""
    from tensorllm.tensorise import tensor_shape
    from tensorllm.tucker import resolve_ranks

    dims = tensor_shape(shape, config.grouping)
    for i, spec in enumerate(config.rank_specs()):
        notes: list[str] = []
        try:
            resolve_ranks(spec, dims, notes)
            for note in notes:  # a fraction too large for this model is clipped to the largest feasible rank
                logging.getLogger(__name__).warning("ranks[%d]: %s (tensor %s)", i, note, tuple(dims))
        except ValueError as exc:
            given = ", ".join(f"{r:g}" for r in spec)
            raise SweepInputError(f"ranks[{i}] ({given}): {exc} (tensor {tuple(dims)} with grouping "
                                  f"{config.grouping!r})") from None


def check_laser(config: SweepConfig, layout) -> None:
    available = sorted(layout.ffn_names(0))
    for i, spec in enumerate(config.laser):
        if spec.matrix not in available:
            raise SweepInputError(f"laser[{i}].matrix: {spec.matrix!r} does not exist in this architecture; "
                                  f"allowed: {', '.join(available)}")


# ---- data, MLflow, Ray --------------------------------------------------------------------------
def check_datasets(names: list[str], model_folder: Path, field: str = "datasets") -> None:
    """Every dataset the run reads exists and parses: each file is read whole, strictly, with the model's
    tokenizer (a few seconds), so a malformed line fails here, named by file and line, not in a Ray task. Your
    own data is checked the same way, and a multiple-choice set's choices must be single tokens of this model."""
    from transformers import AutoTokenizer

    from tensorllm.evaluation.data import DataFormatError, load_task
    from tensorllm.evaluation.data.registry import DATASETS, default_data_dir
    from tensorllm.evaluation.data.user_spec import is_user_reference
    from tensorllm.evaluation.tokens import candidate_token_ids

    root = default_data_dir()
    for name in names:
        if is_user_reference(name):
            continue  # its file was found when the config was built (SweepConfig's validator)
        folder = root / DATASETS[name].folder
        if not folder.is_dir():
            raise SweepInputError(f"{field}: the data folder of {name!r} does not exist ({folder}); allowed: "
                                  "a data folder with the dataset's files (set TENSORLLM_DATA_DIR)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    except (OSError, ValueError) as exc:
        raise SweepInputError(f"model: no usable tokenizer in {model_folder} ({exc}); allowed: a model folder "
                              "with its tokenizer files, or --evaluate none (decomposition only)") from None
    for name in names:
        try:
            task = load_task(name, tokenizer, data_dir=root)
            if task.kind == "classify" and is_user_reference(name):
                candidate_token_ids(tokenizer, task.candidates)
        except (DataFormatError, FileNotFoundError, ValueError) as exc:
            raise SweepInputError(f"{field}: {name!r} cannot be read: {exc}") from None


def check_artifacts_root(root: str) -> None:
    """The artifacts, evaluations and reports folders can be created and written (they sit side by side)."""
    _check_writable_folder("artifacts_root", root, Path(root).expanduser().resolve(),
                           allowed="a folder this user can create and write")


def check_mlflow_uri(uri: str | None) -> None:
    """sqlite: its folder can be written; http(s): a TCP connect; file: a folder; nothing else."""
    if uri is None:  # the registry's default: $MLFLOW_TRACKING_URI, else a sqlite store under ./runs/mlflow
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return check_mlflow_uri(env)
        return _check_writable_folder("mlflow_tracking_uri", "None", Path.cwd() / "runs" / "mlflow")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise SweepInputError(f"mlflow_tracking_uri: a sqlite URI starts with sqlite:/// (got {uri!r}); "
                                  "allowed: sqlite:////ABSOLUTE/PATH.db")
        path = uri[len("sqlite:///"):].split("?")[0]
        if path in ("", ":memory:"):
            return  # an in-memory store
        if not Path(path).is_absolute():
            raise SweepInputError(f"mlflow_tracking_uri: the sqlite path {path!r} is relative, so each process "
                                  f"(Ray workers too) would resolve it against its own folder (got {uri!r}); "
                                  "allowed: sqlite:////ABSOLUTE/PATH.db")
        from tensorllm.mlflow_store import sqlite_file_problem

        problem = sqlite_file_problem(Path(path))
        if problem:
            raise SweepInputError(f"mlflow_tracking_uri: {problem} (got {uri!r}); allowed: sqlite:////ABSOLUTE/PATH.db "
                                  "naming an MLflow store or a new file")
        return _check_writable_folder("mlflow_tracking_uri", uri, Path(path).parent)
    if scheme in ("http", "https"):
        port = _port(parts, "mlflow_tracking_uri", uri, 443 if scheme == "https" else 80)
        return _check_reachable("mlflow_tracking_uri", uri, parts.hostname, port,
                                "a running MLflow server, a sqlite:////ABSOLUTE/PATH.db or a file: folder")
    if scheme == "file" or (scheme == "" and uri):
        folder = Path(parts.path if scheme == "file" else uri).expanduser()
        return _check_writable_folder("mlflow_tracking_uri", uri, folder)
    raise SweepInputError(f"mlflow_tracking_uri: unknown scheme {scheme!r} (got {uri!r}); allowed: {MLFLOW_SCHEMES}")


def check_ray_address(address: str | None) -> None:
    """The cluster the sweep will use (``ray_address``, else ``$RAY_ADDRESS``) is a reachable address."""
    from .runtime.ray_runner import ray_address

    address = ray_address(address)
    if address in (None, "auto"):
        return
    text = address.strip()
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/:]+|[0-9a-fA-F:]+)\]?:(\d+)", text)
    if not match:
        raise SweepInputError(f"ray_address: not an address (got {address!r}); allowed: {RAY_FORMS}")
    _check_reachable("ray_address", address, match.group(1), int(match.group(2)),
                     "a running Ray head (ray start --head), or None for a private local Ray")


def _port(parts, field: str, uri: str, default: int) -> int:
    try:
        return parts.port or default
    except ValueError:
        raise SweepInputError(f"{field}: bad port (got {uri!r}); allowed: {MLFLOW_SCHEMES}") from None


def _check_reachable(field: str, value: str, host: str | None, port: int, allowed: str) -> None:
    """A TCP connect within :data:`CONNECT_TIMEOUT` seconds; the reason is in the message."""
    if not host:
        raise SweepInputError(f"{field}: no host (got {value!r}); allowed: {allowed}")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return
    except ConnectionRefusedError:
        reason = "connection refused"
    except TimeoutError:
        reason = f"no answer within {CONNECT_TIMEOUT:g} s"
    except socket.gaierror:
        reason = f"unknown host {host!r}"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise SweepInputError(f"{field}: {value} is not reachable ({reason}); allowed: {allowed}")


def _check_writable_folder(field: str, value: str, folder: Path, allowed: str = MLFLOW_SCHEMES) -> None:
    """``folder`` exists and is writable, or its nearest existing parent is (then it can be created)."""
    from tensorllm.paths import unwritable_reason

    reason = unwritable_reason(folder)
    if reason is not None:
        allowed_here = "a folder this user can write" if "not writable" in reason else allowed
        raise SweepInputError(f"{field}: {reason} (got {value!r}); allowed: {allowed_here}")
