"""The product of a sweep as a model people load: build it in memory, export it, load it back.

* :func:`variant_model`: base model + artifacts -> a model that runs. ``form="factorised"`` replaces
  each Tucker-decomposed layer's projections by :mod:`tensorllm.factorised` modules where that is
  smaller and cheaper than the dense layer (otherwise the layer is written back dense, and the report
  says so); ``form="dense"`` writes every reconstruction back into the dense weights.
* :func:`export_variant`: ``format="factorised"`` writes a folder whose safetensors hold only the factors
  for the compressed layers plus the untouched weights, and whose ``config.json`` names the format in
  ``tensorllm_compression``; ``format="dense"`` is :func:`tensorllm.artifact.materialise`.
* :func:`load_compressed`: such a folder -> a model that generates (``tensorllm.load_compressed``).

Usage::

    export_variant("smollm2-135m", ["runs/artifacts/smollm2-135m/layer029-mha-kv-r288x32x4"], "out/small")
    model, tokenizer = load_compressed("out/small")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model

from .artifact import VARIANT_FILE, apply_artifacts, load_artifact, materialise
from .factorised import FactorisedAttention, factorised_cost, install_factors, install_factorised
from .layouts import AttentionShape, layout_for
from .models import load_model, resolve_model

log = logging.getLogger(__name__)

EXPORT_FORMAT = "tensorllm-factorised/1"
CONFIG_KEY = "tensorllm_compression"
FORMS = ("factorised", "dense")
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class LayerForm:
    """How one artifact ended up in the model."""

    layer: int
    kind: str
    form: str  # "factorised" or "dense"
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown format {form!r}; allowed: {', '.join(FORMS)}")
    return form


def apply_variant(model: torch.nn.Module, artifact_paths: Sequence[str | Path], form: str = "factorised") -> list[LayerForm]:
    """Apply artifacts to ``model`` in place (factorised where it pays off, see the module docstring)."""
    _check_form(form)
    report = []
    for artifact in (load_artifact(p) for p in artifact_paths):
        if artifact.kind != "tucker_mha":
            apply_artifacts(model, [artifact])
            report.append(LayerForm(artifact.layer, artifact.kind, "dense", "LASER edits are written back dense"))
            continue
        r1, r2, _ = artifact.meta["ranks"]
        cost = factorised_cost(AttentionShape(**artifact.meta["attention_shape"]), r1, r2)
        if form == "factorised" and cost.pays_off:
            install_factorised(model, artifact)
            reason = (f"{cost.factorised_params:,} parameters instead of {cost.dense_params:,}, "
                      f"{cost.factorised_macs:,} multiply-adds per token instead of {cost.dense_macs:,}")
            report.append(LayerForm(artifact.layer, artifact.kind, "factorised", reason))
            continue
        apply_artifacts(model, [artifact])
        reason = ("dense requested" if form == "dense" else
                  f"kept dense: factorised would need {cost.factorised_params:,} parameters (dense {cost.dense_params:,}) "
                  f"and {cost.factorised_macs:,} multiply-adds per token (dense {cost.dense_macs:,})")
        if form == "factorised":
            log.warning("layer %d: %s", artifact.layer, reason)
        report.append(LayerForm(artifact.layer, artifact.kind, "dense", reason))
    return report


def variant_model(base_model: str, artifact_paths: Sequence[str | Path], form: str = "factorised",
                  device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``(model, tokenizer, report)``: the base model with the artifacts applied, ready to evaluate or generate."""
    model, tokenizer = load_model(resolve_model(base_model), dtype=dtype)
    report = apply_variant(model, artifact_paths, form)
    return model.to(device).eval(), tokenizer, [r.to_dict() for r in report]


def export_variant(base_model: str, artifact_paths: Sequence[str | Path], out_dir: str | Path,
                   format: str = "factorised") -> dict:
    """Write the variant as a model folder; returns ``{"path", "format", "bytes", "layers"}``.

    ``factorised``: ``save_pretrained`` of the model with factorised modules installed, so the
    safetensors hold U1, U2 and the cores (``...self_attn.tensorllm_factors.*``) instead of those layers'
    q/k/v/o weights; :func:`load_compressed` reads it. ``dense``: a plain HF folder (same size as the base).
    """
    _check_form(format)
    out_dir = Path(out_dir)
    if format == "dense":
        materialise(base_model, artifact_paths, out_dir)
        return {"path": str(out_dir), "format": "dense", "bytes": folder_bytes(out_dir), "layers": []}
    model, tokenizer, report = variant_model(base_model, artifact_paths, "factorised")
    factorised = {int(r["layer"]) for r in report if r["form"] == "factorised"}
    layers = {}
    for layer in sorted(factorised):
        factors = _factors_of_layer(model, layer)
        layers[str(layer)] = {"ranks": list(factors.ranks), "attention_shape": asdict(factors.shape)}
    model.config.__dict__[CONFIG_KEY] = {"format": EXPORT_FORMAT, "base_model": str(base_model), "layers": layers,
                                         "report": report}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out_dir)
    # the module names as they are in memory (save_pretrained would rename some to the Hub's historical
    # names, which only from_pretrained maps back); tensors shared by tied weights are stored once
    save_model(model, str(out_dir / WEIGHTS_FILE), metadata={"format": EXPORT_FORMAT})
    tokenizer.save_pretrained(out_dir)
    lineage = {"base_model": str(base_model), "artifacts": [str(p) for p in artifact_paths], "report": report}
    (out_dir / VARIANT_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
    return {"path": str(out_dir), "format": "factorised", "bytes": folder_bytes(out_dir), "layers": report}


def _factors_of_layer(model: torch.nn.Module, layer: int) -> FactorisedAttention:
    layout = layout_for(model.config)
    prefix = layout.find_prefix(model.state_dict().keys())
    o_weight = layout.qualified(layout.attention_names(layer), prefix)["o"]
    module = model.get_submodule(o_weight.removesuffix(".weight"))
    return module.factors


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (safetensors) in a model folder."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def _load_streaming(model: torch.nn.Module, weights: Path) -> None:
    """Copy every tensor of ``weights`` into ``model``, one tensor in memory at a time (a whole-file load
    would hold the model twice). Every tensor of the model must be in the file, except tied copies, which
    the export stores once; an unknown, missing, mis-shaped or unreadable tensor is an error naming the file."""
    state = model.state_dict()  # views of the parameters and persistent buffers; tied weights share storage
    try:
        with safe_open(str(weights), framework="pt") as handle, torch.no_grad():
            stored = set(handle.keys())
            unexpected = sorted(stored - set(state))
            if unexpected:
                raise ValueError(f"{weights}: tensors this model does not have: {unexpected[:5]}")
            for name in sorted(stored):
                tensor = handle.get_tensor(name)
                if tuple(tensor.shape) != tuple(state[name].shape):
                    raise ValueError(f"{weights}: {name} has shape {tuple(tensor.shape)}, the model expects "
                                     f"{tuple(state[name].shape)}")
                state[name].copy_(tensor)
    except SafetensorError as exc:
        raise ValueError(f"{weights}: not a readable safetensors file ({exc}); the export is truncated or damaged") from None
    loaded = {state[name].data_ptr() for name in stored}
    missing = sorted(name for name in state if name not in stored and state[name].data_ptr() not in loaded)
    if missing:
        raise ValueError(f"{weights}: tensors missing from the export: {missing[:5]}")


def load_compressed(folder: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load a folder written by :func:`export_variant` (``format="factorised"``): ``(model, tokenizer)``.

    The architecture is built from ``config.json``, the factorised modules are installed at the recorded
    layers with the recorded ranks, then every tensor is copied in from ``model.safetensors`` one at a time
    (:func:`_load_streaming`); a missing, unexpected or truncated tensor is an error naming the file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); give the folder export_variant wrote")
    config = AutoConfig.from_pretrained(folder)
    section = getattr(config, CONFIG_KEY, None)
    if not isinstance(section, dict) or section.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{folder} is not a factorised tensorllm export: config.json has no {CONFIG_KEY} with "
                         f"format {EXPORT_FORMAT!r} (a dense export loads with AutoModelForCausalLM.from_pretrained)")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for layer, spec in section["layers"].items():
        install_factors(model, int(layer), FactorisedAttention(AttentionShape(**spec["attention_shape"]), *spec["ranks"]))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {WEIGHTS_FILE} is missing (a factorised export holds its weights there)")
    _load_streaming(model, weights)
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
