"""Code versions for cache keys: digests of the source that computes a result, and the numeric libraries' versions.

A cached result (an artifact folder, a calibration covariance, a Prefect task result) is reused only when
the code that would recompute it is byte-identical; a version number alone misses every edit between
releases. Each kind of result names the modules that compute it, so an edit anywhere else (a CLI message,
a flow, the registry) recomputes nothing, while an edit of the solver recomputes every Tucker artifact.
torch (and transformers, for evaluations: it runs the model's forward) change numerics across versions, so
their versions are part of the same strings.

``tests/tensorllm/test_provenance.py`` holds the lists below against the modules each entry point really
imports: a new module that an artifact's code imports must be listed here (or in :data:`NOT_COMPUTING`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

LIBRARY_ROOT = Path(__file__).resolve().parent

#: loading a model folder: models.load_model builds a factorised export on the meta device and runs it on its factors
MODEL_LOADING = ("load_export.py", "factorised.py", "hf_remote.py")
#: Tucker artifacts (paper Eqs. 7-14): read one layer, tensorise, balance, fit, fold back, write
TUCKER_MODULES = ("decompose.py", "tensorise.py", "tucker.py", "subspace.py", "balance.py", "activation_fit.py",
                  "layouts.py", "attention_shape.py", "layout_detection.py", "checkpoint.py", "models.py", "artifact.py") + MODEL_LOADING
#: the activation-aware fit also reads calibration prompts (tokenised, batched) through the evaluation package
CALIBRATION_MODULES = ("evaluation",)
#: LASER artifacts: one FFN matrix's truncated SVD
LASER_MODULES = ("decompose.py", "laser.py", "layouts.py", "attention_shape.py", "layout_detection.py", "checkpoint.py",
                 "models.py", "artifact.py") + MODEL_LOADING
#: an evaluation: load the model, apply the artifacts (dense reconstruction), run and score the dataset
EVALUATION_MODULES = ("evaluation", "artifact.py", "models.py", "checkpoint.py", "layouts.py", "attention_shape.py",
                      "layout_detection.py", "tensorise.py", "tucker.py", "subspace.py") + MODEL_LOADING
#: a perplexity on held-out text: the model (with its artifacts, factorised as the export stores them) on the corpus
PERPLEXITY_MODULES = EVALUATION_MODULES + ("export.py", "atomic_folder.py", "model_card.py")
#: imported by the modules above, but nothing they compute depends on their code
NOT_COMPUTING = {"progress.py": "progress bars", "provenance.py": "these keys",
                 "paths.py": "checks of path arguments (local folder or hub id, writable output)",
                 "manifest.py": "the sha256 check of a stored export (it refuses a damaged file, never changes a value)"}

ARTIFACT_KINDS = ("tucker_mha", "laser_ffn")


def code_digest(paths: Iterable[str], root: Path | None = None) -> str:
    """sha256[:12] over the relative paths and bytes of the ``*.py`` files named by ``paths`` (files, or folders
    taken whole) under ``root`` (the library's folder by default); a name that is not there is an error (a
    stale list would hash nothing)."""
    root = Path(root) if root is not None else LIBRARY_ROOT
    files: set[Path] = set()
    for name in paths:
        path = Path(root) / name
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.is_file():
            files.add(path)
        else:
            raise FileNotFoundError(f"code_digest: {path} does not exist; the module lists in "
                                    f"tensorllm/provenance.py must name files or folders under {root}")
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def package_versions(*names: str) -> str:
    """``torch-2.13.0`` (``+``-joined for several): the installed distributions' versions (``none`` if absent)."""
    out = []
    for name in names:
        try:
            out.append(f"{name}-{version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}-none")
    return "+".join(out)


def artifact_modules(kind: str, fit: str = "weights") -> tuple[str, ...]:
    """The library modules whose code computes an artifact of ``kind`` (with ``fit`` for Tucker artifacts)."""
    if kind == "tucker_mha":
        return TUCKER_MODULES + (CALIBRATION_MODULES if fit == "activations" else ())
    if kind == "laser_ffn":
        return LASER_MODULES
    raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}; got {kind!r}")


def artifact_code_version(kind: str, fit: str = "weights", root: Path | None = None) -> str:
    """What an artifact records as ``code_version`` and is reused by: ``<kind>-<digest>+torch-<version>``."""
    return f"{kind}-{code_digest(artifact_modules(kind, fit), root)}+{package_versions('torch')}"


def evaluation_code_version(root: Path | None = None) -> str:
    """The code and libraries an evaluation's numbers depend on: ``eval-<digest>+torch-...+transformers-...``."""
    return f"eval-{code_digest(EVALUATION_MODULES, root)}+{package_versions('torch', 'transformers')}"


def perplexity_code_version(root: Path | None = None) -> str:
    """The code and libraries a perplexity depends on: ``ppl-<digest>+torch-...+transformers-...``."""
    return f"ppl-{code_digest(PERPLEXITY_MODULES, root)}+{package_versions('torch', 'transformers')}"


def source_digest(*folders: Path) -> str:
    """``<version>+<sha256[:12]>`` over the relative paths and bytes of every ``*.py`` under ``folders``: the
    whole code base, recorded as a tag for provenance (of the task keys, only the export's still holds it)."""
    digest = hashlib.sha256(__version__.encode())
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
