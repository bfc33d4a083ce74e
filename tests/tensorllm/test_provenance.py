"""Code versions: each result is keyed by the modules that compute it, and by nothing else.

The module lists of :mod:`tensorllm.provenance` are held against the imports the code really makes (parsed
from the source, transitively): a module that computes an artifact or an evaluation cannot be left out
of its key unnoticed. Edits are made on a copy of the library (never on the real files).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tensorllm import provenance
from tensorllm.provenance import (CALIBRATION_MODULES, EVALUATION_MODULES, LASER_MODULES, LIBRARY_ROOT, NOT_COMPUTING,
                                  PERPLEXITY_MODULES, TUCKER_MODULES, artifact_code_version, code_digest, evaluation_code_version,
                                  package_versions)


def _module_file(name: str) -> Path:
    path = LIBRARY_ROOT / (name.replace(".", "/") + ".py")
    return path if path.is_file() else LIBRARY_ROOT / name.replace(".", "/") / "__init__.py"


def _imports(name: str) -> set[str]:
    """The tensorllm modules (dotted, relative to the package) that module ``name`` imports, at any depth of
    its source (function-level imports too: they run when the code path that needs them runs)."""
    path = _module_file(name)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            stem = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.split(".")[0] == "tensorllm":
            stem = node.module.removeprefix("tensorllm").lstrip(".")
        else:
            continue
        for candidate in [stem] + [f"{stem}.{a.name}".lstrip(".") for a in node.names]:
            if candidate and (_module_file(candidate).is_file()):
                out.add(candidate)
    return out


def _closure(*roots: str) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports(name)
    return seen


def _covered(name: str, listed: tuple[str, ...]) -> bool:
    """Is module ``name`` (dotted) one of the files or inside one of the folders in ``listed``?"""
    rel = _module_file(name).relative_to(LIBRARY_ROOT).as_posix()
    return any(rel == entry or rel.startswith(entry.rstrip("/") + "/") for entry in listed)


@pytest.mark.parametrize("roots, listed", [
    (("decompose",), TUCKER_MODULES + CALIBRATION_MODULES + LASER_MODULES),
    (("evaluation.evaluate", "artifact", "models"), EVALUATION_MODULES),
    (("evaluation.perplexity",), PERPLEXITY_MODULES),
])
def test_every_module_the_code_imports_is_in_its_key(roots, listed):
    """A module imported (transitively) by the code that computes a result is in that result's key, or is
    named as not computing anything (progress bars, the keys themselves)."""
    missing = sorted(m for m in _closure(*roots) if not _covered(m, listed + tuple(NOT_COMPUTING)))
    assert not missing, f"add these to tensorllm/provenance.py's lists (or NOT_COMPUTING): {missing}"
    assert "cli" not in _closure(*roots)  # the point of the lists: the CLI computes nothing


@pytest.fixture
def library_copy(tmp_path) -> Path:
    copy = tmp_path / "tensorllm"
    shutil.copytree(LIBRARY_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_a_cli_edit_keeps_every_key_and_a_solver_edit_changes_the_tucker_keys(library_copy):
    before = {"tucker": artifact_code_version("tucker_mha", root=library_copy),
              "calibrated": artifact_code_version("tucker_mha", "activations", root=library_copy),
              "laser": artifact_code_version("laser_ffn", root=library_copy),
              "eval": evaluation_code_version(library_copy)}
    assert before["tucker"] == artifact_code_version("tucker_mha")  # the copy hashes like the original
    _edit(library_copy / "cli.py")  # a CLI message
    _edit(library_copy / "registry" / "registration.py")
    assert artifact_code_version("tucker_mha", root=library_copy) == before["tucker"]
    assert evaluation_code_version(library_copy) == before["eval"]
    _edit(library_copy / "tucker.py")  # the solver: Tucker artifacts and evaluations (mode products) change
    assert artifact_code_version("tucker_mha", root=library_copy) != before["tucker"]
    assert artifact_code_version("tucker_mha", "activations", root=library_copy) != before["calibrated"]
    assert evaluation_code_version(library_copy) != before["eval"]
    assert artifact_code_version("laser_ffn", root=library_copy) == before["laser"]  # LASER never runs HOOI
    # the evaluation package reaches only the activation-aware fit (its calibration prompts)
    tucker, calibrated = (artifact_code_version("tucker_mha", f, root=library_copy) for f in ("weights", "activations"))
    _edit(library_copy / "evaluation" / "scoring.py")
    assert artifact_code_version("tucker_mha", root=library_copy) == tucker
    assert artifact_code_version("tucker_mha", "activations", root=library_copy) != calibrated


def test_versions_name_the_numeric_libraries():
    from importlib.metadata import version

    assert artifact_code_version("tucker_mha").endswith(f"+torch-{version('torch')}")
    assert evaluation_code_version().endswith(f"+torch-{version('torch')}+transformers-{version('transformers')}")
    assert package_versions("no-such-distribution-xyz") == "no-such-distribution-xyz-none"


def test_stale_lists_and_unknown_kinds_are_refused(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"tucker\.py does not exist; the module lists in tensorllm/provenance"):
        code_digest(["tucker.py"], tmp_path)
    with pytest.raises(ValueError, match=r"artifact kind must be one of \('tucker_mha', 'laser_ffn'\); got 'svd'"):
        artifact_code_version("svd")
    monkeypatch.setattr(provenance, "LIBRARY_ROOT", tmp_path)  # the default root is read at call time
    with pytest.raises(FileNotFoundError, match="does not exist"):
        artifact_code_version("laser_ffn")
