"""Whole-model accounting of a composed variant: what a set of per-layer edits does to the model's size.

A *composed* variant applies Tucker artifacts to several layers (one per layer). Its size is counted the
way :func:`tensorllm.export.export_variant` stores it: a layer runs factorised (U1, U2 and the per-head
cores, :mod:`tensorllm.factorised`) when that is smaller and cheaper than its dense weights, otherwise it
stays dense; every other tensor of the checkpoint is stored as it is. Counted from the checkpoint's
safetensors headers and the artifacts' metadata, without loading the model::

    size = whole_model_size("smollm2-135m", [load_meta(p) for p in paths])
    size.attention_compression_ratio, size.bytes_after
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoint import Checkpoint
from .factorised import factorised_cost
from .attention_shape import AttentionShape
from .models import resolve_model

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class WholeModelSize:
    """Parameters and bytes of the whole model before and after the edits (the registry's whole-model metrics)."""

    attention_params_before: int
    attention_params_after: int
    total_params_before: int
    total_params_after: int
    bytes_before: int
    bytes_after: int
    layers_factorised: tuple[int, ...]
    layers_kept_dense: tuple[int, ...]  # an artifact exists, but factorised would not be smaller or cheaper

    @property
    def attention_compression_ratio(self) -> float:
        """All layers' MHA parameters before / after (the paper's CR, for the whole model's attention)."""
        return self.attention_params_before / self.attention_params_after

    @property
    def total_compression_ratio(self) -> float:
        return self.total_params_before / self.total_params_after

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow."""
        out = {k: float(v) for k, v in asdict(self).items() if isinstance(v, int)}
        out["attention_compression_ratio"] = self.attention_compression_ratio
        out["total_compression_ratio"] = self.total_compression_ratio
        out["n_layers_factorised"] = float(len(self.layers_factorised))
        return out


def checkpoint_tensor_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (elements, bytes) of every tensor stored in the folder's safetensors files (headers only).

    A safetensors file starts with an 8-byte little-endian length and a JSON header of dtypes and shapes.
    """
    sizes: dict[str, tuple[int, int]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with open(file, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            elements = math.prod(info["shape"])
            sizes[name] = (elements, elements * _BYTES[info["dtype"]])
    return sizes


def whole_model_size(base_model: str, artifact_metas: Sequence[dict]) -> WholeModelSize:
    """Whole-model parameters and bytes of ``base_model`` with the Tucker artifacts ``artifact_metas`` applied.

    LASER artifacts are written back dense (same size) and do not change the count. Two Tucker artifacts
    for one layer are refused: a composed variant edits each layer once.
    """
    ckpt = Checkpoint(resolve_model(base_model))
    sizes = checkpoint_tensor_sizes(ckpt.folder)
    attention_names = {layer: ckpt.attention_names(layer) for layer in range(ckpt.n_layers)}
    attention_before = sum(sizes[n][0] for names in attention_names.values() for n in names)
    total_before = sum(e for e, _ in sizes.values())
    bytes_before = sum(b for _, b in sizes.values())
    params_delta = bytes_delta = 0
    factorised, dense = [], []
    seen: set[int] = set()
    for meta in artifact_metas:
        if meta["kind"] != "tucker_mha":
            continue
        layer = int(meta["layer"])
        if layer in seen:
            raise ValueError(f"two Tucker artifacts edit layer {layer}; a composed variant edits each layer once")
        seen.add(layer)
        r1, r2, _ = meta["ranks"]
        cost = factorised_cost(AttentionShape(**meta["attention_shape"]), r1, r2)
        if not cost.pays_off:
            dense.append(layer)
            continue
        factorised.append(layer)
        names = attention_names[layer]
        elements = sum(sizes[n][0] for n in names)
        element_bytes = sum(sizes[n][1] for n in names) // elements
        params_delta += cost.factorised_params - elements
        bytes_delta += (cost.factorised_params - elements) * element_bytes
    return WholeModelSize(attention_params_before=attention_before, attention_params_after=attention_before + params_delta,
                          total_params_before=total_before, total_params_after=total_before + params_delta,
                          bytes_before=bytes_before, bytes_after=bytes_before + bytes_delta,
                          layers_factorised=tuple(sorted(factorised)), layers_kept_dense=tuple(sorted(dense)))
