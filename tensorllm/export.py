"""The product of a sweep as a model people load: build it in memory, export it, load it back.

* :func:`variant_model`: base model + artifacts -> a model that runs. ``form="factorised"`` replaces
  each Tucker-decomposed layer's projections by :mod:`tensorllm.factorised` modules where that is
  smaller and cheaper than the dense layer (otherwise the layer is written back dense, and the report
  says so); ``form="dense"`` writes every reconstruction back into the dense weights.
* :func:`export_variant`: ``format="factorised"`` writes a folder whose safetensors hold only the factors
  for the compressed layers plus the untouched weights, and whose ``config.json`` names the format in
  ``tensorllm_compression``; ``format="dense"`` is :func:`tensorllm.artifact.materialise`.
* :func:`load_compressed` (from :mod:`tensorllm.load_export`): such a folder -> a model that generates
  (``tensorllm.load_compressed``; ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)``
  gives the same model, see :mod:`tensorllm.hf_remote`).

Every tensor keeps the base checkpoint's dtype (bf16 stays bf16); docs/export.md is the user's guide.

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

from .artifact import VARIANT_FILE, apply_artifacts, load_artifact, materialise
from .atomic_folder import atomic_folder
from .checkpoint import stored_dtype
from .factorised import FactorisedAttention, factorised_cost, install_factorised
from .hf_remote import save_factorised
from .attention_shape import AttentionShape
from .layouts import layout_for
from .load_export import CONFIG_KEY, EXPORT_FORMAT, WEIGHTS_FILE, load_compressed
from .manifest import write_manifest
from .model_card import write_model_card
from .models import load_model, resolve_model

log = logging.getLogger(__name__)

FORMS = ("factorised", "dense")
__all__ = ["CONFIG_KEY", "EXPORT_FORMAT", "FORMS", "WEIGHTS_FILE", "apply_variant", "export_lineage", "export_variant",
           "folder_bytes",
           "load_compressed", "variant_model", "write_export"]


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
                  device: str = "cpu", dtype: torch.dtype | None = None):
    """``(model, tokenizer, report)``: the base model with the artifacts applied, ready to evaluate or generate.

    ``dtype`` defaults to the base checkpoint's own (a bf16 model stays bf16; the factors are computed in
    fp32 and cast to it).
    """
    folder = resolve_model(base_model)
    model, tokenizer = load_model(folder, dtype=dtype or stored_dtype(folder))
    report = apply_variant(model, artifact_paths, form)
    return model.to(device).eval(), tokenizer, [r.to_dict() for r in report]


def export_variant(base_model: str, artifact_paths: Sequence[str | Path], out_dir: str | Path,
                   format: str = "factorised", metrics: dict | None = None, overwrite: bool = False) -> dict:
    """Write the variant as a model folder in the base's dtype; returns ``{"path", "format", "bytes", "layers", "dtype",
    "manifest"}``.

    ``factorised``: the safetensors hold U1, U2 and the cores (``...self_attn.tensorllm_factors.*``) instead of
    those layers' q/k/v/o weights, and ``config.json`` routes ``AutoModelForCausalLM.from_pretrained(...,
    trust_remote_code=True)`` to :func:`load_compressed` (:mod:`tensorllm.hf_remote`). ``dense``: a plain HF
    folder (same size as the base). Both get a model card (``README.md``, with ``metrics`` when given),
    ``generation_config.json`` and ``tensorllm_manifest.json`` (every file's sha256, checked by the loaders and
    ``tensorllm verify``); ``bytes`` is the size of the safetensors files written.

    The folder is written beside ``out_dir`` and renamed into place at the end (:mod:`tensorllm.atomic_folder`):
    a kill leaves the old folder or the complete new one. A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    _check_form(format)
    out_dir = Path(out_dir).expanduser()
    with atomic_folder(out_dir, overwrite) as tmp:
        info = write_export(base_model, artifact_paths, tmp, format, metrics, path=out_dir)
    return info


def write_export(base_model: str, artifact_paths: Sequence[str | Path], folder: Path, format: str = "factorised",
                 metrics: dict | None = None, path: Path | None = None) -> dict:
    """:func:`export_variant`'s files, written straight into the existing, empty ``folder`` (no renaming; ``compress``
    adds its report before it renames the folder into place). ``path`` is where the folder will be (``info["path"]``,
    the model card); the manifest is written last."""
    _check_form(format)
    path = path or folder
    if format == "dense":
        materialise(base_model, artifact_paths, folder)
        layers = [{"layer": int(m.meta["layer"]), "kind": m.kind, "form": "dense", "reason": "dense requested"}
                  for m in (load_artifact(p) for p in artifact_paths)]
        info = {"path": str(path), "format": "dense", "bytes": folder_bytes(folder), "layers": [],
                "dtype": str(stored_dtype(folder)).removeprefix("torch.")}
        write_model_card(folder, base_model, info, layers, metrics)
        return {**info, "manifest": str(path / write_manifest(folder).name)}
    model, tokenizer, report = variant_model(base_model, artifact_paths, "factorised")
    factorised = {int(r["layer"]) for r in report if r["form"] == "factorised"}
    layers = {}
    for layer in sorted(factorised):
        factors = _factors_of_layer(model, layer)
        layers[str(layer)] = {"ranks": list(factors.ranks), "attention_shape": asdict(factors.shape)}
    model.config.__dict__[CONFIG_KEY] = {"format": EXPORT_FORMAT, "base_model": str(base_model), "layers": layers,
                                         "report": report}
    save_factorised(model, folder, manifest=False)
    tokenizer.save_pretrained(folder)
    lineage = {"base_model": str(base_model), "artifacts": [str(p) for p in artifact_paths], "report": report}
    (folder / VARIANT_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
    info = {"path": str(path), "format": "factorised", "bytes": folder_bytes(folder), "layers": report,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    write_model_card(folder, base_model, info, report, metrics, ranks=layers)
    return {**info, "manifest": str(path / write_manifest(folder).name)}


def _factors_of_layer(model: torch.nn.Module, layer: int) -> FactorisedAttention:
    layout = layout_for(model.config)
    prefix = layout.find_prefix(model.state_dict().keys())
    o_weight = layout.qualified(layout.attention_names(layer), prefix)["o"]
    module = model.get_submodule(o_weight.removesuffix(".weight"))
    return module.factors


def export_lineage(folder: str | Path) -> tuple[str, list[Path]] | None:
    """``(base model, artifact folders)`` an export folder (factorised or dense) records in its
    ``tensorllm_variant.json``; ``None`` when ``folder`` is not an export. Re-exporting from them turns a
    factorised export into a dense one (the route to engines without custom code) or back."""
    path = Path(folder) / VARIANT_FILE
    if not path.is_file():
        return None
    lineage = json.loads(path.read_text())
    paths = [Path(a["path"] if isinstance(a, dict) else a) for a in lineage.get("artifacts", [])]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"{path} records artifact folders that are gone: {missing[:3]}; export from the "
                                "registry spec instead (tensorllm export NAME@ALIAS)")
    return str(lineage["base_model"]), paths


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (safetensors) in a model folder: what the export occupies on disk."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
