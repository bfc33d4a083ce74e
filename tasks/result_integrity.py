"""Cached task results that are checked before use: a sha256 envelope, and a look before Prefect's own.

Prefect persists each cached task's return value as a *result record* (a JSON file named by the cache key
under the result storage, ``$PREFECT_HOME/storage`` by default). Prefect trusts that file: a flipped bit in
a pickled float loads as another float, and the sweep reports it (a validation top-1 of 0.05 became 0.0).
When the file cannot be parsed at all, Prefect's lookup (``ResultStore.exists``) swallows the error and
recomputes without a word.

Two parts close that:

* :class:`DigestSerializer` (every cached task's ``result_serializer``) writes ``{"sha256", "payload"}``: the
  payload is Prefect's pickle serializer's output (so values come back with their exact types) and the
  digest is its sha256. ``loads`` refuses a payload whose digest differs (``ValueError``), so a
  damaged value can never be returned.
* :func:`verified_key` wraps a task's ``cache_key_fn``: once the key is known, and before Prefect looks it up,
  it reads the record that key names and checks it (the envelope, and the files the value names:
  :func:`check_files`). A damaged record, or one written without a digest, is logged as a warning naming the
  file and moved aside to ``<file>.corrupt``; Prefect then finds no record, recomputes and writes a fresh one.

The outcome of any damage is therefore: a warning naming the file, then a recomputation; never the bad value.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect.serializers import PickleSerializer, Serializer
from pydantic import Field

from tensorllm.artifact import file_sha256
from tensorllm.manifest import verify_manifest

log = logging.getLogger(__name__)

SERIALIZER_TYPE = "tensorllm-sha256"
CORRUPT_SUFFIX = ".corrupt"


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DigestSerializer(Serializer):
    """Prefect's pickle serializer inside a sha256 envelope (see the module docstring)."""

    type: Literal["tensorllm-sha256"] = Field(default=SERIALIZER_TYPE, frozen=True)

    def dumps(self, obj: Any) -> bytes:
        payload = PickleSerializer().dumps(obj)  # base64 text: the envelope stays valid JSON
        return json.dumps({"sha256": bytes_sha256(payload), "payload": payload.decode("ascii")}).encode()

    def loads(self, blob: bytes) -> Any:
        try:
            envelope = json.loads(blob)
            payload = envelope["payload"].encode("ascii")
            recorded = envelope["sha256"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a {SERIALIZER_TYPE} envelope ({exc})") from exc
        actual = bytes_sha256(payload)
        if actual != recorded:
            raise ValueError(f"payload sha256 is {actual}, the record says {recorded}")
        return PickleSerializer().loads(payload)


def record_path(context: Any, key: str) -> Path | None:
    """The local file of the result record ``key`` in the task's result storage (``None``: not local)."""
    store = getattr(context, "result_store", None)
    storage = getattr(store, "result_storage", None)
    resolve = getattr(storage, "_resolve_path", None)
    if store is None or resolve is None or getattr(store, "metadata_storage", None) is not None:
        return None
    try:
        return Path(resolve(key))
    except ValueError:
        return None


def check_record(path: Path) -> Any:
    """The value stored in the record file ``path``; ``ValueError`` when it is damaged or was
    written without a digest (a record from before :class:`DigestSerializer`, whose value cannot be checked)."""
    from prefect.results import ResultRecord  # re-exported by the public module (defined in prefect._internal)

    try:
        record = ResultRecord.deserialize(path.read_bytes())
    except Exception as exc:  # a damaged envelope (ValueError), or a record whose JSON or metadata is damaged
        raise ValueError(f"not a readable result record ({type(exc).__name__}: {exc})") from exc
    if record.metadata.serializer.type != SERIALIZER_TYPE:
        raise ValueError(f"written with the {record.metadata.serializer.type!r} serializer, without a digest")
    return record.result


def check_files(value: Any) -> None:
    """Check the files a cached value names with their digests: ``{"examples": path, "examples_sha256": hex}``
    (an evaluation's per-example file, which the paired statistics read back), ``{"prefix_file", "prefix_sha256"}``
    (the base's recorded layer inputs that the variants' perplexities replay) and ``{"manifest": path}`` (an
    export folder, :mod:`tensorllm.manifest`). Raises ``ValueError`` (or ``OSError``) naming the file."""
    if isinstance(value, dict) and "manifest" in value:
        verify_manifest(Path(value["manifest"]).parent)
    if isinstance(value, dict) and "examples" in value and "examples_sha256" in value:
        path = Path(value["examples"])
        if not path.is_file():
            raise ValueError(f"{path}, which it names, is missing")
        actual = file_sha256(path)
        if actual != value["examples_sha256"]:
            raise ValueError(f"{path}, which it names, has sha256 {actual}, recorded {value['examples_sha256']}")
    if isinstance(value, dict) and value.get("prefix_file") and value.get("prefix_sha256"):  # a perplexity's prefix
        path = Path(value["prefix_file"])
        if not path.is_file() or file_sha256(path) != value["prefix_sha256"]:
            raise ValueError(f"{path}, the perplexity prefix it names, is missing or changed")


def discard_if_damaged(context: Any, key: str) -> bool:
    """Check the record ``key`` names (if there is one); a damaged one is warned about and moved aside, so that
    Prefect recomputes. Returns True when a record was discarded."""
    path = record_path(context, key)
    if path is None or not path.is_file():
        return False
    try:
        check_files(check_record(path))
        return False
    except (ValueError, OSError) as exc:
        aside = path.with_name(path.name + CORRUPT_SUFFIX)
        path.replace(aside)
        message = (f"cached result {path} failed its integrity check ({exc}); moved to {aside.name}, "
                   "recomputing the task")
        _warn(message)
        return True


def _warn(message: str) -> None:
    """Warn in the task run's log (console and Prefect UI) inside a run, in this module's log outside one."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except MissingContextError:
        log.warning(message)


def verified_key(key_fn: Callable[[Any, dict], str]) -> Callable[[Any, dict], str]:
    """A ``cache_key_fn`` that is ``key_fn`` and, inside a task run, first discards a damaged cached record."""
    def key(context: Any, parameters: dict) -> str:
        value = key_fn(context, parameters)
        if context is not None:
            discard_if_damaged(context, value)
        return value

    key.__name__ = getattr(key_fn, "__name__", "verified_key")
    key.__doc__ = key_fn.__doc__
    key.__wrapped__ = key_fn  # type: ignore[attr-defined]
    return key
