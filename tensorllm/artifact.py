"""Factorised layers on disk: save, load, apply to a model, restore, materialise as a HF folder.

An artifact is a folder with two files:

* ``tensors.safetensors``: the factors (Tucker: ``U1``, ``U2``, ``U3``, ``core``; LASER: ``left``, ``right``),
* ``artifact.json``: what they are (kind, architecture, layer, ranks, grouping, dtype, relative error,
  compression ratio) and the identity of the base model (its name, folder and the sha256 of the source
  tensors of the layer), so that an artifact refuses to be applied to a different model, and
  ``tensors_sha256``, the sha256 of the bytes of ``tensors.safetensors``.

Integrity: :func:`load_artifact` recomputes ``tensors_sha256`` and refuses a tensors file that is not the
one that was written (flipped bytes, truncation, a damaged header) with one error naming the file, both
digests and the fix (delete the folder and recompute it). A damaged tensors file with an intact header
would otherwise load, and the variant would silently score 0. Artifacts written before the digest
existed are refused the same way (``load_artifact(path, verify=False)`` forces them); the decompose step
recomputes them anyway, since it reuses an artifact only when its code version is the current one.

Its size grows with the compressed size, not with the model. A *variant* is a list of artifacts applied
together (e.g. the MHA decomposition of layer 20 plus a LASER reduction of its FFN: the paper's Case 3).

Usage::

    artifacts = [load_artifact(p) for p in paths]
    with apply_artifacts(model, artifacts):
        ...                                  # evaluate the variant; weights are restored on exit
    materialise("smollm2-135m", paths, "out/variant-hf")   # a folder from_pretrained loads
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .checkpoint import tensors_digest
from .attention_shape import AttentionShape, layer_count
from .layouts import layout_for
from .tensorise import untensorise
from .tucker import DECOMPOSED_MODES, mode_dot

ARTIFACT_FORMAT = "tensorllm-artifact/1"
META_FILE = "artifact.json"
TENSORS_FILE = "tensors.safetensors"
KINDS = ("tucker_mha", "laser_ffn")
VARIANT_FILE = "tensorllm_variant.json"
DIGEST_KEY = "tensors_sha256"
_CHUNK = 1 << 20  # bytes hashed at a time: artifacts are small, but never hold a file twice


@dataclass
class Artifact:
    """One factorised edit of a model: metadata plus its factor tensors."""

    path: Path
    meta: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def layer(self) -> int:
        return int(self.meta["layer"])

    def dense_attention(self):
        """Tucker: the reconstructed per-head weights Ŵ (Eq. 9, then the inverse tensorisation)."""
        out = self.tensors["core"]
        for mode, name in zip(DECOMPOSED_MODES, ("U1", "U2", "U3")):
            out = mode_dot(out, self.tensors[name], mode)
        return untensorise(out, AttentionShape(**self.meta["attention_shape"]), self.meta["grouping"])


def save_artifact(out_dir: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write an artifact folder atomically (a temporary folder renamed into place).

    ``artifact.json`` gets ``meta`` plus the format, the library version and ``tensors_sha256``.
    """
    if meta.get("kind") not in KINDS:
        raise ValueError(f"artifact kind must be one of {KINDS}; got {meta.get('kind')!r}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / TENSORS_FILE,
              metadata={"format": ARTIFACT_FORMAT})
    # the digest of the bytes actually written (a caller's stale ``tensors_sha256`` is overwritten)
    full_meta = {"format": ARTIFACT_FORMAT, "tensorllm_version": __version__, **meta,
                 DIGEST_KEY: file_sha256(tmp / TENSORS_FILE)}
    (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of an artifact folder, with a clear error when it is not one.

    Reads only ``artifact.json`` (no digest check: see :func:`verify_tensors` and :func:`load_artifact`).
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / TENSORS_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a tensorllm artifact: expected {META_FILE} and {TENSORS_FILE} in it")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{meta_path}: not readable JSON ({exc}); the artifact is damaged: "
                         f"delete {path} and recompute it") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object; got {type(meta).__name__}")
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r}; this version reads {ARTIFACT_FORMAT}")
    return meta


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """Metadata and factor tensors of an artifact folder.

    ``verify`` first checks ``tensors.safetensors`` against the ``tensors_sha256`` recorded in
    ``artifact.json`` (see :func:`verify_tensors`); ``verify=False`` skips that check (e.g. to inspect an
    artifact written before the digest existed). An unreadable tensors file is a ``ValueError`` naming it.
    """
    path = Path(path)
    meta = read_meta(path)
    if verify:
        verify_tensors(path, meta)
    tensors_path = path / TENSORS_FILE
    try:
        tensors = load_file(tensors_path)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{tensors_path}: not a readable safetensors file ({exc}); the artifact is damaged: "
                         f"delete {path} and recompute it") from exc
    return Artifact(path=path, meta=meta, tensors=tensors)


def verify_tensors(path: str | Path, meta: dict | None = None) -> None:
    """Refuse an artifact whose ``tensors.safetensors`` is not byte for byte the file that was saved.

    Raises ``ValueError`` naming the file, the recorded and actual sha256 and the fix, also when
    ``artifact.json`` records no digest (an artifact from before ``tensors_sha256`` existed: its tensors
    cannot be checked, so it is recomputed rather than trusted). ``meta`` defaults to :func:`read_meta`.
    """
    path = Path(path)
    meta = read_meta(path) if meta is None else meta
    tensors_path = path / TENSORS_FILE
    expected = meta.get(DIGEST_KEY)
    if not expected:
        raise ValueError(f"{path / META_FILE} records no {DIGEST_KEY} (written by tensorllm "
                         f"{meta.get('tensorllm_version', '?')}, before artifacts carried a digest), so {tensors_path} "
                         f"cannot be checked; delete {path} and recompute it (or load_artifact(..., verify=False))")
    try:
        actual = file_sha256(tensors_path)
    except OSError as exc:
        raise ValueError(f"{tensors_path}: cannot be read ({exc}); delete {path} and recompute it") from exc
    if actual != expected:
        raise ValueError(f"{tensors_path} is corrupt: its sha256 is {actual} but {META_FILE} recorded {expected} "
                         f"(truncated, damaged or changed after it was written); delete {path} and recompute it")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class AppliedVariant:
    """Handle returned by :func:`apply_artifacts`: restores the original weights (also as a context manager)."""

    def __init__(self, state: dict[str, torch.Tensor], originals: dict[str, torch.Tensor]):
        self._state = state
        self._originals = originals

    def restore(self) -> None:
        with torch.no_grad():
            for name, original in self._originals.items():
                self._state[name].copy_(original)
        self._originals = {}

    def __enter__(self) -> "AppliedVariant":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def apply_artifacts(model: torch.nn.Module, artifacts: Sequence[Artifact], verify: bool = True) -> AppliedVariant:
    """Write the dense reconstruction of each artifact into ``model`` in place.

    ``verify`` checks each artifact's sha256 of its source tensors against the model's current weights, so
    an artifact made from another model (or applied twice) is refused with a clear error. Returns a handle
    whose ``restore()`` puts the original weights back.
    """
    adopt_recorded_layout(model, artifacts)
    layout = layout_for(model.config)
    shape = layout.shape(model.config)
    state = model.state_dict()
    prefix = layout.find_prefix(state.keys())
    originals: dict[str, torch.Tensor] = {}
    applied = AppliedVariant(state, originals)
    try:
        for artifact in artifacts:
            check_architecture(artifact, model.config, shape)
            if artifact.kind == "tucker_mha":
                names = list(layout.qualified(layout.attention_names(artifact.layer), prefix).values())
                if verify:
                    verify_base(artifact, {n: state[n] for n in names}, prefix)
                for name in names:
                    originals.setdefault(name, state[name].detach().clone())
                dense = artifact.dense_attention()
                layout.write_attention(state, artifact.layer, shape, dense, prefix)
            else:  # laser_ffn
                name = prefix + layout.ffn_names(artifact.layer)[artifact.meta["matrix"]]
                if verify:
                    verify_base(artifact, {name: state[name]}, prefix)
                originals.setdefault(name, state[name].detach().clone())
                with torch.no_grad():
                    state[name].copy_(artifact.tensors["left"] @ artifact.tensors["right"])
    except Exception:
        applied.restore()
        raise
    return applied


def verify_base(artifact: Artifact, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Refuse an artifact whose source tensors differ from the model's (digest in the source dtype, so a
    bf16 checkpoint loaded in fp32 still matches: bf16 -> fp32 -> bf16 is exact)."""
    source_dtype = getattr(torch, artifact.meta.get("dtype", ""), None)
    if isinstance(source_dtype, torch.dtype):
        tensors = {n: t.to(source_dtype) for n, t in tensors.items()}
    if tensors_digest(tensors, strip_prefix=prefix) != artifact.meta["base_model"]["layer_sha256"]:
        raise ValueError(
            f"artifact {artifact.path} was made from other weights for layer {artifact.layer} "
            f"(base {artifact.meta['base_model'].get('name')!r}); the model's weights differ "
            "(another model, or an edit already applied). Pass verify=False to force."
        )


def adopt_recorded_layout(model: torch.nn.Module, artifacts: Sequence[Artifact]) -> None:
    """Read ``model`` with the attention layout its artifacts were made with (``layout`` in artifact.json).

    The layout is detected from the model's modules, or given by ``--layout`` when detection cannot decide; the
    artifact records which. Applying it by that same name means a variant is evaluated, exported and
    factorised the way it was decomposed, even where detection alone would fail (the sweep's evaluate tasks
    load the model without ``--layout``). It is kept as ``model.config.tensorllm_layout`` (what ``--layout``
    sets); a layout that does not fit the model, or artifacts that disagree, are refused with both names.
    """
    for artifact in artifacts:
        check_model_type(artifact, model.config)  # another family's artifact: say that, not "layout does not match"
    recorded = sorted({a.meta["layout"] for a in artifacts if a.kind == "tucker_mha" and a.meta.get("layout")})
    if not recorded:
        return  # FFN-only variants, or artifacts older than the layout record: detection decides
    if len(recorded) > 1:
        raise ValueError(f"these artifacts were made with different attention layouts {recorded}; "
                         f"a variant's artifacts must come from one model")
    given = getattr(model.config, "tensorllm_layout", None)
    if given not in (None, recorded[0]):
        raise ValueError(f"the artifacts were made with the attention layout {recorded[0]!r}, "
                         f"but the model was loaded with --layout {given!r}")
    layout_for(model.config, layout=recorded[0])  # raises, naming what was found, if it does not fit this model
    model.config.tensorllm_layout = recorded[0]


def check_model_type(artifact: Artifact, config) -> None:
    if artifact.meta["architecture"] != config.model_type:
        raise ValueError(
            f"artifact {artifact.path} is for a {artifact.meta['architecture']!r} model; this model is {config.model_type!r}"
        )


def check_architecture(artifact: Artifact, config, shape: AttentionShape) -> None:
    check_model_type(artifact, config)
    if artifact.kind == "tucker_mha" and AttentionShape(**artifact.meta["attention_shape"]) != shape:
        raise ValueError(f"artifact {artifact.path} has attention shape {artifact.meta['attention_shape']}; model has {shape}")
    n_layers = layer_count(config)  # under every family's name for it (a multimodal wrapper's text config too)
    if not 0 <= artifact.layer < n_layers:
        raise ValueError(f"artifact {artifact.path} edits layer {artifact.layer}; the model has layers 0..{n_layers - 1}")


def materialise(base_model: str | Path, artifact_paths: Sequence[str | Path], out_dir: str | Path,
                dtype: torch.dtype | None = None) -> Path:
    """Save the base model with the artifacts applied as a normal HF folder (``from_pretrained`` loads it).

    ``dtype`` defaults to the base checkpoint's own: a bf16 model gives a bf16 folder of the base's size.

    The folder also holds ``tensorllm_variant.json`` listing the artifacts' metadata (lineage).
    """
    from .checkpoint import stored_dtype
    from .models import load_model, resolve_model

    folder = resolve_model(base_model)
    artifacts = [load_artifact(p) for p in artifact_paths]  # damaged artifacts fail before the model loads
    try:
        model, tokenizer = load_model(folder, dtype=dtype or stored_dtype(folder))
    except SafetensorError as exc:  # transformers raises it bare, without the file's name
        from .checkpoint import Checkpoint

        Checkpoint(folder)  # reads every header: raises an error that names the damaged file
        raise ValueError(f"{folder}: a safetensors file of the base model is unreadable ({exc}); "
                         "re-download or re-save the model") from exc
    apply_artifacts(model, artifacts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    lineage = {"base_model": str(base_model), "base_folder": str(folder),
               "artifacts": [{"path": str(a.path), **a.meta} for a in artifacts]}
    (out_dir / VARIANT_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
    return out_dir
