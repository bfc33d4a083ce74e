"""Moving a sqlite MLflow store (the project's runs/ folder): MLflow records absolute artifact locations,
so a copied store still points at the old folder until :func:`relocate_sqlite_store` rewrites them."""

from __future__ import annotations

import shutil

import pytest

from tiny_models import save_tiny_with_tokenizer


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_a_moved_store_loads_only_after_relocation(tmp_path, capsys):
    import json

    from tensorllm.checkpoint import Checkpoint
    from tensorllm.decompose import decompose_layer
    from tensorllm.mlflow_store import relocate_sqlite_store
    from tensorllm.registry import Registry, VariantRecord

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

    from tensorllm.cli import main

    # the command a user runs after the move (relocate_sqlite_store underneath)
    assert main(["models", "relocate", str(old), str(new), "--db", str(new / "mlflow" / "mlflow.db"), "--json"]) == 0
    moved_rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["changed"]
    # one experiment ('tensorllm'), one run, one model version and its logged (pyfunc) model pointed at the old root
    assert moved_rows["experiments"] >= 1 and moved_rows["runs"] == 1
    assert moved_rows["model_versions"] == 1 and moved_rows["logged_models"] == 1
    changed = relocate_sqlite_store(new / "mlflow" / "mlflow.db", old, new)  # idempotent: nothing left to move
    assert sum(changed.values()) == 0
    moved = Registry(new_uri)
    out = moved.load(f"moved/{version}", tmp_path / "after")
    assert (out / "config.json").is_file()
    assert moved.show(f"moved/{version}")["variant_name"] == "layer001"
    assert not any(str(old) in str(v) for v in moved.version_info("moved", version).values())


def test_relocate_refuses_a_missing_database(tmp_path):
    from tensorllm.mlflow_store import relocate_sqlite_store

    with pytest.raises(FileNotFoundError, match="is not an MLflow sqlite database"):
        relocate_sqlite_store(tmp_path / "nope.db", tmp_path / "a", tmp_path / "b")
