"""Moving a sqlite MLflow store (the project's runs/ folder): MLflow records absolute artifact locations,
so a copied store still points at the old folder until :func:`relocate_sqlite_store` rewrites them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tiny_models import save_tiny_with_tokenizer


def test_a_moved_store_loads_only_after_relocation(tmp_path):
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.decompose import decompose_layer
    from tensorllm.registry import Registry, VariantRecord, relocate_sqlite_store

    folder, _ = save_tiny_with_tokenizer("llama", tmp_path / "model")
    (record,) = decompose_layer(str(folder), layer=1, rank_list=[(16, 4, 2)], out_root=tmp_path / "artifacts",
                                n_iter_max=3)
    old = tmp_path / "old" / "runs"
    old_db = old / "mlflow" / "mlflow.db"
    old_db.parent.mkdir(parents=True)
    registry = Registry(f"sqlite:///{old_db}")
    variant = VariantRecord(key="k", name="layer001", base_model=str(folder), artifacts=[record.artifact],
                            tags={"model_identity": Checkpoint(folder).identity()})
    version = registry.register_variant(variant, "moved")

    new = tmp_path / "new" / "runs"
    shutil.copytree(old, new)
    shutil.rmtree(old)  # the old place is gone, as after a real move
    new_uri = f"sqlite:///{new / 'mlflow' / 'mlflow.db'}"
    with pytest.raises(FileNotFoundError):  # still pointing at the old folder
        Registry(new_uri).load(f"moved/{version}", tmp_path / "before")

    changed = relocate_sqlite_store(new / "mlflow" / "mlflow.db", old, new)
    # one experiment ('tensorllm'), one run, one model version, one logged (pyfunc) model were moved
    assert changed["experiments"] >= 1 and changed["runs"] == 1
    assert changed["model_versions"] == 1 and changed["logged_models"] == 1
    moved = Registry(new_uri)
    out = moved.load(f"moved/{version}", tmp_path / "after")
    assert (out / "config.json").is_file()
    assert moved.show(f"moved/{version}")["variant_name"] == "layer001"
    assert not any(str(old) in str(v) for v in moved.version_info("moved", version).values())


def test_relocate_refuses_a_missing_database(tmp_path):
    from tensorllm.registry import relocate_sqlite_store

    with pytest.raises(FileNotFoundError, match="is not an MLflow sqlite database"):
        relocate_sqlite_store(tmp_path / "nope.db", tmp_path / "a", tmp_path / "b")
