"""Variant identity by content: what changes the written weights changes the key; names and paths do not."""

from __future__ import annotations

import copy

import pytest

from tensorllm.identity import artifact_digest, variant_key, weights_digest


def meta(layer: int = 3, tensors: str = "a" * 64, **fields) -> dict:
    """artifact.json of a Tucker artifact, as decompose_layer writes it (only the fields identity reads matter)."""
    base = {"kind": "tucker_mha", "architecture": "llama", "layout": "llama", "layer": layer, "grouping": "kv",
            "attention_shape": {"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16},
            "tensors_sha256": tensors, "base_model": {"name": "tiny", "folder": "/x", "layer_sha256": "b" * 64},
            "code_version": "tucker_mha-000+torch-2", "seconds": 1.0, "fit_key": {"balance": "norms"}}
    return {**base, **fields}


def test_artifact_digest_follows_what_applying_writes():
    m = meta()
    # provenance and timing do not change the weights: the same digest
    same = {**m, "code_version": "tucker_mha-111+torch-3", "seconds": 9.0,
            "base_model": {**m["base_model"], "name": "renamed", "folder": "/elsewhere"}}
    assert artifact_digest(same) == artifact_digest(m)
    # other factors, another base layer, another layout or grouping, another layer: other weights
    for changed in (meta(tensors="c" * 64), meta(layer=2), meta(layout="opt"), meta(grouping="replicate"),
                    {**m, "base_model": {**m["base_model"], "layer_sha256": "d" * 64}}):
        assert artifact_digest(changed) != artifact_digest(m)


def test_an_artifact_without_a_tensor_digest_has_no_identity():
    m = meta()
    del m["tensors_sha256"]
    with pytest.raises(ValueError, match=r"artifact of layer 3 records no tensors_sha256.*recompute it"):
        artifact_digest(m)


def test_weights_digest_orders_disjoint_edits_and_keeps_the_order_of_overlapping_ones():
    a, b = meta(layer=2, tensors="1" * 64), meta(layer=3, tensors="2" * 64)
    assert weights_digest("id", [a, b]) == weights_digest("id", [b, a])  # different layers commute
    first, second = meta(tensors="1" * 64), meta(tensors="2" * 64)  # both write layer 3: the last one wins
    assert weights_digest("id", [first, second]) != weights_digest("id", [second, first])
    assert weights_digest("id", [a]) != weights_digest("other-base", [a])
    assert weights_digest("id", []) != weights_digest("id", [a])  # the baseline is a variant too
    with pytest.raises(ValueError, match="model_identity must be a non-empty string"):
        weights_digest("", [a])


def test_variant_key_is_weights_plus_evaluation_settings():
    evaluation = {"datasets": ["qa_wikidata"], "val_limit": 40, "batch_size": 16, "kind": "layer"}
    key = variant_key("id", [meta()], evaluation)
    assert key == variant_key("id", [copy.deepcopy(meta())], dict(evaluation)) and len(key) == 32
    assert variant_key("id", [meta(tensors="c" * 64)], evaluation) != key
    assert variant_key("id", [meta()], {**evaluation, "val_limit": 80}) != key  # metrics measured otherwise
