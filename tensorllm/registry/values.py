"""What is registered for a variant (:class:`VariantRecord`) and how values become MLflow params, metrics and tags."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .names import WEIGHTS_TAG


@dataclass
class VariantRecord:
    """Everything registered for one variant (the flow builds it; see the module docstring)."""

    key: str
    name: str
    base_model: str
    artifacts: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _param_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except TypeError:
        return str(value)


def _float_metrics(metrics: Mapping[str, float] | None, what: str) -> dict[str, float]:
    """Metric values as floats; ``None`` values are dropped (not computed), anything else non-numeric is an error."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if value is None:
            continue
        if isinstance(value, (bool, str)) or not (isinstance(value, (int, float)) or hasattr(value, "__float__")):
            raise TypeError(f"{what}: metric {key!r} must be a number, got {type(value).__name__} {value!r}")
        out[str(key)] = float(value)
    return out


def _decision_tags(decision: Mapping | None) -> dict[str, str]:
    """Decision keys without a leading ``promotion.`` (callers may pass them prefixed or bare), values as text."""
    out: dict[str, str] = {}
    for k, v in (decision or {}).items():
        key = str(k).removeprefix("promotion.")
        if not key:
            raise ValueError(f"decision key {k!r} is empty once the 'promotion.' prefix is removed")
        out[key] = "" if v is None else str(v)
    return out


def _check_same_weights(existing, weights: str | None, registered_model: str, record: VariantRecord) -> None:
    """A key names one set of weights: refuse to hand a version (whose metrics the caller will then update) to
    a record with other weights under the same key (a key that is not content-addressed, e.g. a name)."""
    recorded = existing.tags.get(WEIGHTS_TAG)
    if weights and recorded and recorded != weights:
        raise ValueError(
            f"registry key {record.key!r} already names {registered_model}/{existing.version} "
            f"({existing.tags.get('variant_name', '?')}), whose weights differ from {record.name!r}'s "
            f"({recorded[:12]} vs {weights[:12]}); the key must cover the artifacts' content "
            "(tensorllm.identity.variant_key)")


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
