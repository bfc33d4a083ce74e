"""Honest dependencies: every third-party package the code imports is declared in pyproject.toml.

A package that arrives only as a dependency of another (pandas through mlflow, psutil through ray) works
until that other package drops it; so every import of tensorllm/, flows/, tasks/, bench/ and deployments/
(lazy ones inside functions included) must name a distribution that pyproject.toml lists, in its
dependencies or in one of its extras (lm-eval is the [eval] extra). Also: hub downloads fetch every
tokenizer file, the chat template's own file included.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from huggingface_hub.utils import filter_repo_objects

from tensorllm.models import HUB_FILE_PATTERNS
from tests.test_library_imports import imported_roots

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tensorllm", "flows", "tasks", "bench", "deployments")


def declared_distributions() -> set[str]:
    """Normalised names of pyproject.toml's dependencies and optional dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalise(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in requirements}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared_imports() -> list[str]:
    files = [path for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))]
    local = set(SCANNED) | {path.stem for path in files}  # bench/ and the pyfunc entry import siblings by name
    declared, providers = declared_distributions(), packages_distributions()
    offenders = []
    for path in files:
        for line, root in sorted(imported_roots(path)):
            if root in local or root in sys.stdlib_module_names:
                continue
            # not installed (an optional extra's package): its import name is taken as its distribution name
            dists = {normalise(d) for d in providers.get(root, [])} or {normalise(root)}
            if not dists & declared:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {root} "
                                 f"(distribution {sorted(dists) or 'unknown'}) not declared")
    return offenders


def test_every_imported_third_party_package_is_declared():
    offenders = undeclared_imports()
    assert not offenders, "declare these in pyproject.toml:\n" + "\n".join(offenders)


def test_the_check_knows_what_is_declared_and_what_is_not():
    """The check can fail: a package that is installed but not declared (pytablewriter arrives with
    lm-eval) is not in the declared set, while the ones imported under another name resolve."""
    declared = declared_distributions()
    assert {"psutil", "pandas", "huggingface-hub", "pyyaml", "torch", "lm-eval"} <= declared
    assert "pytablewriter" not in declared
    assert normalise(packages_distributions()["yaml"][0]) == "pyyaml"  # import name != distribution name


def test_hub_downloads_fetch_every_tokenizer_file_and_no_pickled_weights():
    """The files a tokenizer may read, the chat template in its own file included, pass the filter that
    snapshot_download applies; pickled and foreign weight formats do not (the library reads safetensors)."""
    wanted = ["config.json", "generation_config.json", "model.safetensors", "model-00001-of-00002.safetensors",
              "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "chat_template.jinja",
              "chat_template.json", "added_tokens.json", "qwen.tiktoken"]
    unwanted = ["pytorch_model.bin", "model.pt", "model.Q4_1.gguf", "onnx/model.onnx", "flax_model.msgpack"]
    kept = set(filter_repo_objects(wanted + unwanted, allow_patterns=list(HUB_FILE_PATTERNS)))
    assert kept == set(wanted)
