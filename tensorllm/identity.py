"""What a variant is: the base model's identity plus the content digests of its artifacts.

A registered variant is keyed by content, never by its name: names (``layer029-mha-kv-r64x32x4``) are labels
for people and leave out most of what changes the weights (balance, fit and calibration, layout, solver
settings). The key is

* the **weights**: the base checkpoint's identity and, for each artifact, the digest of what applying it
  writes (:func:`artifact_digest`: its tensors' sha256, the base layer it was made from and the fields that
  say where and how it is applied), so anything that changes the weights gives a new key and a rerun, or any
  edit that leaves the weights alone, gives the same one;
* the **evaluation settings** of its metrics (datasets and their digests, limits, generation, batch size) and
  the kind of record (a single-layer edit and a composition report different compression ratios), so a
  version never receives metrics of other weights, or of other data, sizes or settings.

Usage::

    key = variant_key(identity, [read_meta(p) for p in paths], {"datasets": [...], "val_limit": 40, ...})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

#: the artifact.json fields that decide what applying an artifact writes (with its tensors and base layer)
APPLY_FIELDS = ("kind", "architecture", "layout", "layer", "grouping", "attention_shape", "matrix")


def _sha256(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def artifact_digest(meta: Mapping) -> str:
    """The content digest of one artifact: ``tensors_sha256``, the base layer's ``layer_sha256`` and the
    :data:`APPLY_FIELDS`. Two artifacts with the same digest write the same weights into the same model."""
    tensors = meta.get("tensors_sha256")
    if not tensors:
        raise ValueError(f"artifact of layer {meta.get('layer')!r} records no tensors_sha256, so it has no content "
                         "digest; recompute it (tensorllm decompose) to register it")
    return _sha256({"tensors_sha256": tensors, "base_layer_sha256": (meta.get("base_model") or {}).get("layer_sha256"),
                    **{name: meta.get(name) for name in APPLY_FIELDS}})


def _target(meta: Mapping) -> tuple:
    """Which weights an artifact writes: edits of different targets commute, edits of one target do not."""
    return (int(meta.get("layer", -1)), str(meta.get("kind")), str(meta.get("matrix")))


def weights_digest(model_identity: str, metas: Sequence[Mapping]) -> str:
    """The digest of a variant's weights: the base identity and its artifacts' digests, in a canonical order
    (sorted by the weights they write; edits of the same weights keep their apply order, since the last wins)."""
    if not model_identity:
        raise ValueError("model_identity must be a non-empty string (tensorllm.checkpoint.Checkpoint.identity())")
    ordered = sorted(metas, key=_target)  # a stable sort: same-target edits stay in apply order
    return _sha256({"model_identity": str(model_identity), "artifacts": [artifact_digest(m) for m in ordered]})


def variant_key(model_identity: str, metas: Sequence[Mapping], evaluation: Mapping) -> str:
    """The registry key of a variant: its :func:`weights_digest` and the ``evaluation`` settings (JSON-able)
    under which its metrics were measured, as a short hex digest."""
    return _sha256({"weights": weights_digest(model_identity, metas), "evaluation": dict(evaluation)})[:32]
