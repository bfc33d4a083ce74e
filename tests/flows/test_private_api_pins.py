"""The one private call left (Ray's auth-token cache, no public API) still does its job on the installed Ray, and
the pins in pyproject.toml keep the pipeline on versions where it does.

``flows.runtime.local_cluster.reload_ray_auth`` is the only place that imports ``ray._raylet``: Ray caches its
token in C++ on first use and has no public call to read it again. If a Ray release renames or changes it, this
test fails, and the upper bound of ``ray`` in pyproject.toml (raised only after this test passes on the new
release) keeps users off that release meanwhile. MLflow needs no such pin: the registry uses public calls only.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
TOKEN_A, TOKEN_B = "a" * 64, "b" * 64


def test_reload_ray_auth_makes_ray_read_a_new_token(tmp_path, monkeypatch):
    from ray._raylet import AuthenticationTokenLoader  # the test may look where the function must reach

    from flows.runtime.local_cluster import reload_ray_auth

    (tmp_path / "a").write_text(TOKEN_A)
    (tmp_path / "b").write_text(TOKEN_B)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    try:
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "a"))
        reload_ray_auth()
        loader = AuthenticationTokenLoader.instance()
        assert loader.get_raw_token(ignore_auth_mode=True) == TOKEN_A
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "b"))
        assert loader.get_raw_token(ignore_auth_mode=True) == TOKEN_A  # cached: why the reload exists
        reload_ray_auth()
        assert loader.get_raw_token(ignore_auth_mode=True) == TOKEN_B
    finally:
        monkeypatch.undo()
        reload_ray_auth()  # leave the process reading its own environment again


def private_imports() -> list[str]:
    """``module:line name`` of every import of a private module of mlflow, ray, prefect or transformers."""
    found = []
    for folder in ("tensorllm", "flows", "tasks", "deployments", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                for name in names:
                    parts = name.split(".")
                    if parts[0] in ("mlflow", "ray", "prefect", "prefect_ray", "transformers") and any(
                            p.startswith("_") for p in parts[1:]):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_the_only_private_import_is_the_isolated_one():
    assert [f.split(":")[0] + " " + f.split(" ")[1] for f in private_imports()] == [
        "flows/runtime/local_cluster.py ray._raylet"]


@pytest.mark.parametrize("package", ["ray", "mlflow"])
def test_installed_version_is_within_the_pins(package):
    from importlib.metadata import version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if re.match(rf"{package}\b(?![-_])", d)]
    assert Version(version(package)) in req.specifier, (package, version(package), str(req.specifier))
    if package == "ray":  # the private call is pinned: an upper bound, below the next minor release
        assert any(s.operator == "<" for s in req.specifier), str(req)
