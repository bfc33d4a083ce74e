"""Cache keys for the pipeline's tasks: content, not paths.

A task's Prefect cache key is a hash of what its result depends on, and of nothing else:

* **decompose / LASER**: the task's inputs (model identity, layer, ranks, grouping, layout, balance, fit and
  the calibration data's digests, the output folder), the solver settings, and the code that computes the
  artifact: the digests of the library modules that compute it
  (:func:`tensorllm.provenance.artifact_code_version`: tensorise, tucker, balance, activation_fit, decompose,
  layouts, ...), of the task module, and torch's version. A CLI or flow edit leaves the key alone; a solver
  edit changes it. The library's own reuse check (``artifact.json``'s ``code_version``) uses the same digest.
* **evaluate**: :func:`evaluation_key`, which is also the name of the evaluation's output folder, so a cached
  result always points at the ``examples.jsonl`` its own computation wrote: the variant's artifacts by
  content (:func:`tensorllm.identity.artifact_digest`, not their paths), the dataset's digest, split, limit,
  generation, batch size, the cached-prefix settings, the evaluation code's digests and the torch and
  transformers versions.

Results are persisted in Prefect's result storage (``$PREFECT_HOME/storage`` by default), so a second run of
the same sweep in a new process finds them. Every key function is wrapped by
:func:`tasks.result_integrity.verified_key` and every cached task uses :data:`RESULT_SERIALIZER`: a stored
result is checked against its sha256 before use, and a damaged one is recomputed with a warning naming the file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from tensorllm.artifact import read_meta
from tensorllm.evaluation.data.user_spec import dataset_label
from tensorllm.identity import artifact_digest
from tensorllm.provenance import artifact_code_version, code_digest, evaluation_code_version
from tensorllm.tucker import DEFAULT_N_ITER_MAX, DEFAULT_TOL, solver_settings

from .result_integrity import DigestSerializer, verified_key

CACHE_EXPIRATION = datetime.timedelta(days=30)
#: every cached task's result serializer: a sha256 envelope checked on every read (:mod:`tasks.result_integrity`)
RESULT_SERIALIZER = DigestSerializer()
TASKS_ROOT = Path(__file__).resolve().parent
#: the task modules whose code is part of each task's result (the thin wrapper decides what is called, and how)
DECOMPOSE_TASK_MODULES = ("decompose.py", "resources.py")
EVALUATE_TASK_MODULES = ("evaluate.py", "model_cache.py", "resources.py")


def stable_digest(payload: Any, length: int = 32) -> str:
    """A hex sha256 of a JSON-serialisable payload (sorted keys; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def decompose_code(fit: str = "weights") -> dict:
    """What computes a Tucker artifact: library modules + torch, the task module, the solver settings."""
    return {"library": artifact_code_version("tucker_mha", fit), "task": code_digest(DECOMPOSE_TASK_MODULES, TASKS_ROOT),
            "solver": solver_settings(DEFAULT_TOL, DEFAULT_N_ITER_MAX)}


def laser_code() -> dict:
    return {"library": artifact_code_version("laser_ffn"), "task": code_digest(DECOMPOSE_TASK_MODULES, TASKS_ROOT)}


@verified_key
def decompose_cache_key(_context, parameters: dict) -> str:
    """Prefect ``cache_key_fn`` of ``decompose-layer``: its inputs and :func:`decompose_code`."""
    return "decompose-" + stable_digest({"inputs": parameters, "code": decompose_code(parameters.get("fit", "weights"))})


@verified_key
def laser_cache_key(_context, parameters: dict) -> str:
    """Prefect ``cache_key_fn`` of ``laser-ffn``: its inputs and :func:`laser_code`."""
    return "laser-" + stable_digest({"inputs": parameters, "code": laser_code()})


def evaluation_code() -> dict:
    """What computes an evaluation: library modules + torch + transformers, and the task modules."""
    return {"library": evaluation_code_version(), "task": code_digest(EVALUATE_TASK_MODULES, TASKS_ROOT)}


def evaluation_key(model: str, artifacts: list[str], dataset: str, split: str, limit: int | None,
                   first_changed_layer: int | None, generate: bool, batch_size: int, out_root: str,
                   model_identity: str, data_digest: str, fill_layers: list[int] | None = None,
                   variant: str = "baseline") -> str:
    """The key of one evaluation: its Prefect cache key and its output folder's name (see the module docstring).

    ``variant`` (a label) is not part of it: the same artifacts evaluated under two names are one computation.
    ``out_root`` is: the folder lies under it, so a cached result never points into another run's folder.
    """
    payload = {
        "model": str(model), "model_identity": model_identity,
        "artifacts": [artifact_digest(read_meta(p)) for p in artifacts],  # content, in apply order
        "dataset": dataset, "data_digest": data_digest, "split": split, "limit": limit, "generate": bool(generate),
        "batch_size": int(batch_size), "first_changed_layer": first_changed_layer,
        "fill_layers": sorted(fill_layers or []), "out_root": str(Path(out_root).resolve()),
        "code": evaluation_code(),
    }
    return f"{dataset_label(dataset)}-{split}-" + stable_digest(payload)  # a folder name: your own data by name


@verified_key
def evaluation_cache_key(_context, parameters: dict) -> str:
    """Prefect ``cache_key_fn`` of ``evaluate``: exactly :func:`evaluation_key` (the output folder's name)."""
    return evaluation_key(**parameters)


@verified_key
def export_cache_key(_context, parameters: dict) -> str:
    """Prefect ``cache_key_fn`` of ``export-factorised``: its inputs (small records, no tensors), which include
    the code version the flow passes."""
    return "export-" + stable_digest(parameters)
