"""Task cache keys: content and the code that computes the result, not paths, names or unrelated code.

The library and the task modules are copied to tmp_path and the keys are computed against the copies
(``LIBRARY_ROOT`` / ``TASKS_ROOT`` point there), so an edit is a real edit of a file's bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import tasks.caching as caching
from tasks.caching import decompose_cache_key, evaluation_cache_key, evaluation_key, laser_cache_key
from tensorllm import provenance
from tensorllm.artifact import save_artifact

DECOMPOSE = {"model": "m", "layer": 3, "ranks": [[16, 8, 2]], "grouping": "kv", "out_root": "/tmp/a",
             "model_identity": "id", "layout": None, "balance": "norms", "fit": "weights", "calibration": None}
LASER = {"model": "m", "layer": 3, "matrix": "fc_in", "rho": 0.1, "out_root": "/tmp/a", "model_identity": "id"}


@pytest.fixture
def code_copy(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(library copy, tasks copy), used by every key computed in the test."""
    library = tmp_path / "tensorllm"
    shutil.copytree(provenance.LIBRARY_ROOT, library, ignore=shutil.ignore_patterns("__pycache__"))
    task_dir = tmp_path / "tasks"
    shutil.copytree(caching.TASKS_ROOT, task_dir, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "LIBRARY_ROOT", library)
    monkeypatch.setattr(caching, "TASKS_ROOT", task_dir)
    return library, task_dir


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def _keys() -> tuple[str, str, str]:
    return (decompose_cache_key(None, DECOMPOSE), decompose_cache_key(None, {**DECOMPOSE, "fit": "activations"}),
            laser_cache_key(None, LASER))


def test_cli_flow_and_registry_edits_keep_the_artifact_keys(code_copy):
    library, task_dir = code_copy
    before = _keys()
    for path in (library / "cli.py", library / "registry" / "registration.py", library / "pyfunc_model.py", task_dir / "export.py",
                 task_dir / "register.py"):
        _edit(path)
    assert _keys() == before


def test_solver_task_and_torch_changes_change_the_artifact_keys(code_copy, monkeypatch):
    library, task_dir = code_copy
    tucker, calibrated, laser = _keys()
    _edit(library / "tucker.py")
    after = _keys()
    assert after[0] != tucker and after[1] != calibrated and after[2] == laser  # LASER does not run HOOI
    _edit(library / "laser.py")
    assert _keys()[2] != laser
    current = _keys()
    _edit(task_dir / "decompose.py")  # the task wrapper decides what the library is asked for
    assert all(a != b for a, b in zip(_keys(), current))
    current = _keys()
    monkeypatch.setattr(provenance, "package_versions", lambda *names: "torch-0.0.1")
    assert all(a != b for a, b in zip(_keys(), current))


def test_the_decompose_key_holds_every_input_that_changes_the_artifact():
    key = decompose_cache_key(None, DECOMPOSE)
    for name, value in [("balance", "none"), ("grouping", "replicate"), ("layout", "llama"), ("ranks", [[8, 8, 2]]),
                        ("model_identity", "other"), ("calibration", {"n_prompts": 4})]:
        assert decompose_cache_key(None, {**DECOMPOSE, name: value}) != key, name


def _artifact(path: Path, value: float) -> str:
    meta = {"kind": "tucker_mha", "architecture": "llama", "layout": "llama", "layer": 1, "grouping": "kv",
            "attention_shape": {}, "base_model": {"layer_sha256": "b" * 64}}
    return str(save_artifact(path, meta, {"core": torch.full((2, 2), value)}))


def test_the_evaluation_key_is_content_and_the_cache_key(tmp_path):
    a = _artifact(tmp_path / "a", 1.0)
    same_bytes_elsewhere = _artifact(tmp_path / "copy" / "renamed", 1.0)
    other = _artifact(tmp_path / "b", 2.0)
    params = {"model": "m", "artifacts": [a], "dataset": "qa_wikidata", "split": "val", "limit": 8,
              "first_changed_layer": 1, "generate": False, "batch_size": 8, "out_root": str(tmp_path / "evals"),
              "model_identity": "id", "data_digest": "d", "fill_layers": None, "variant": "layer001"}
    key = evaluation_key(**params)
    assert evaluation_cache_key(None, params) == key  # Prefect's key is the output folder's name
    assert key.startswith("qa_wikidata-val-")
    assert evaluation_key(**{**params, "variant": "another-label"}) == key  # a name is a label
    assert evaluation_key(**{**params, "artifacts": [same_bytes_elsewhere]}) == key  # content, not the path
    for name, value in [("artifacts", [other]), ("batch_size", 16), ("limit", 16), ("generate", True),
                        ("data_digest", "e"), ("out_root", str(tmp_path / "other-evals")), ("model_identity", "x")]:
        assert evaluation_key(**{**params, name: value}) != key, name


def test_an_evaluation_code_edit_changes_the_evaluation_key_and_a_cli_edit_does_not(tmp_path, code_copy):
    library, task_dir = code_copy
    params = {"model": "m", "artifacts": [], "dataset": "qa_wikidata", "split": "test", "limit": 8,
              "first_changed_layer": None, "generate": True, "batch_size": 8, "out_root": str(tmp_path),
              "model_identity": "id", "data_digest": "d"}
    key = evaluation_key(**params)
    _edit(library / "cli.py")
    _edit(task_dir / "decompose.py")
    assert evaluation_key(**params) == key
    _edit(library / "evaluation" / "scoring.py")
    assert evaluation_key(**params) != key
    key = evaluation_key(**params)
    _edit(task_dir / "evaluate.py")
    assert evaluation_key(**params) != key
