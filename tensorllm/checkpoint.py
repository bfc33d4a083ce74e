"""Read one layer's tensors straight from a Hugging Face folder's safetensors files.

Decomposing one layer of a 7B model must not need the 7B model in memory: safetensors files are
memory-mapped, and :class:`Checkpoint` materialises only the tensors that are asked for, from a single
``model.safetensors`` or from shards listed in ``model.safetensors.index.json``.

Usage::

    ckpt = Checkpoint("path/to/hf-folder")
    weights = ckpt.attention(layer=15)          # AttentionWeights, paper orientation
    digest = ckpt.layer_digest(layer=15)        # sha256 of the layer's source tensors

Damaged checkpoints are refused when the folder is opened, with one error that names the file: every
safetensors header is read (cheap: the header only; a truncated file fails it, because the header's
offsets must cover the file exactly), a shard the index names must exist, and every tensor the index
maps to a shard must be in that shard. Bytes changed inside a tensor's data cannot be seen without a
reference digest; the layer digest an artifact records catches that at apply time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .layout_detection import DetectedLayout, detect_layout
from .attention_shape import AttentionShape, AttentionWeights
from .layouts import AttentionLayout

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class Checkpoint:
    """A local HF checkpoint folder: its config, its layout, and lazy access to single tensors.

    The layout is detected from the checkpoint's own tensor names and shapes (the safetensors headers:
    no tensor is read), see :mod:`tensorllm.layout_detection`; ``layout`` names one explicitly.
    """

    def __init__(self, folder: str | Path, layout: str | None = None):
        self.folder = Path(folder)
        self.layout_name = layout
        if not (self.folder / "config.json").is_file():
            raise FileNotFoundError(f"{self.folder} has no config.json; expected a Hugging Face model folder")
        self.weight_map = self._weight_map()

    def _weight_map(self) -> dict[str, str]:
        """Tensor name -> file, from the index (checked against the shards' headers) or the single file."""
        index = self.folder / INDEX_FILE
        if index.is_file():
            return self._checked_index(index)
        single = self.folder / SINGLE_FILE
        if single.is_file():
            return {name: SINGLE_FILE for name in _header_keys(single)}
        found = sorted(p.name for p in self.folder.iterdir())
        raise FileNotFoundError(
            f"{self.folder} has neither {SINGLE_FILE} nor {INDEX_FILE} (found: {found}); "
            "only safetensors checkpoints are supported (convert .bin files with save_pretrained)."
        )

    def _checked_index(self, index: Path) -> dict[str, str]:
        """The index's weight map, after checking that each shard exists, is readable and holds its tensors."""
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{index}: not a safetensors index (expected JSON with a 'weight_map' object; "
                             f"{type(exc).__name__}: {exc}); re-download or re-save the model") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: 'weight_map' must map tensor names to shard files; "
                             f"got {type(weight_map).__name__}")
        by_file: dict[str, set[str]] = {}
        for name, filename in weight_map.items():
            by_file.setdefault(filename, set()).add(name)
        missing = sorted(f for f in by_file if not (self.folder / f).is_file())
        if missing:
            raise FileNotFoundError(f"{index} names shard(s) that are not in {self.folder}: {missing}; "
                                    "the download is incomplete: re-download or re-save the model")
        for filename, names in sorted(by_file.items()):
            absent = sorted(names - _header_keys(self.folder / filename))
            if absent:
                raise ValueError(f"{index} maps {len(absent)} tensor(s) to {self.folder / filename}, which does not "
                                 f"hold them: {absent[:5]}; the index and its shards disagree: re-download or re-save")
        return weight_map

    @cached_property
    def config(self):
        from transformers import AutoConfig

        from .load_export import export_config, is_factorised_export

        if is_factorised_export(self.folder):  # its model_type is tensorllm's: the base family's config inside
            return export_config(self.folder)
        try:
            return AutoConfig.from_pretrained(self.folder)
        except (ValueError, OSError) as exc:  # transformers' message does not name the file when it is not JSON
            path = self.folder / "config.json"
            try:
                parsed = json.loads(path.read_text())
            except (ValueError, OSError):
                raise ValueError(f"{path} is not a JSON object ({exc}); allowed: a Hugging Face config.json") from exc
            if not isinstance(parsed, dict):
                raise ValueError(f"{path} holds a {type(parsed).__name__}, not a JSON object; allowed: a Hugging Face "
                                 "config.json") from exc
            raise

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the safetensors headers (nothing is read but the headers)."""
        shapes: dict[str, tuple[int, ...]] = {}
        by_file: dict[str, list[str]] = {}
        for name, filename in self.weight_map.items():
            by_file.setdefault(filename, []).append(name)
        for filename, names in sorted(by_file.items()):
            path = self.folder / filename
            try:
                with safe_open(path, framework="pt") as handle:
                    for name in names:
                        shapes[name] = tuple(handle.get_slice(name).get_shape())
            except (SafetensorError, OSError) as exc:
                raise _unreadable(path, exc) from exc
        return shapes

    @cached_property
    def detected(self) -> DetectedLayout:
        """The layout matched on the checkpoint's attention tensors, their prefix and the head geometry."""
        return detect_layout(self.tensor_shapes(), self.config, layout=self.layout_name)

    @cached_property
    def layout(self) -> AttentionLayout:
        return self.detected.layout

    @cached_property
    def shape(self) -> AttentionShape:
        return self.detected.shape

    @cached_property
    def prefix(self) -> str:
        return self.detected.prefix

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers(self.config)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer={layer!r} is out of range: this model has layers 0..{self.n_layers - 1}")
        return layer

    def tensors(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Load only ``names`` (grouped by shard; each file is opened memory-mapped)."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            if name not in self.weight_map:
                raise KeyError(f"{name!r} is not in the checkpoint {self.folder}")
            by_file.setdefault(self.weight_map[name], []).append(name)
        out: dict[str, torch.Tensor] = {}
        for filename, wanted in by_file.items():
            path = self.folder / filename
            try:
                with safe_open(path, framework="pt") as handle:
                    for name in wanted:
                        out[name] = handle.get_tensor(name)
            except (SafetensorError, OSError) as exc:  # e.g. the file changed after the folder was opened
                raise _unreadable(path, exc) from exc
        return out

    def attention_names(self, layer: int) -> list[str]:
        return list(self.layout.qualified(self.layout.attention_names(self.check_layer(layer)), self.prefix).values())

    def attention(self, layer: int) -> AttentionWeights:
        """Layer ``layer``'s Q, K, V, O per head (reads four tensors, or two for fused layouts)."""
        tensors = self.tensors(self.attention_names(layer))
        return self.layout.read_attention(tensors, layer, self.shape, self.prefix)

    def ffn_name(self, layer: int, role: str) -> str:
        names = self.layout.ffn_names(self.check_layer(layer))
        if role not in names:
            raise ValueError(f"FFN matrix {role!r} does not exist for {self.config.model_type}; allowed: {sorted(names)}")
        return self.prefix + names[role]

    def layer_digest(self, layer: int) -> str:
        """sha256 of the layer's attention tensors (see :func:`tensors_digest`): the base model's identity."""
        return tensors_digest(self.tensors(self.attention_names(layer)), strip_prefix=self.prefix)

    def identity(self) -> str:
        """A cheap identity of the whole checkpoint: sha256 of config.json and the file names and sizes.

        Used in cache keys; layer-level identities use :meth:`layer_digest` (content hash).
        """
        digest = hashlib.sha256((self.folder / "config.json").read_bytes())
        for filename in sorted(set(self.weight_map.values())):
            path = self.folder / filename
            digest.update(f"{filename}|{path.stat().st_size}|{int(path.stat().st_mtime)}".encode())
        return digest.hexdigest()[:16]


#: safetensors dtype codes of floating-point tensors -> torch dtypes
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file (name -> dtype, shape, data_offsets), without ``__metadata__``.

    A safetensors file starts with an 8-byte little-endian length and that JSON; nothing else is read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    except (OSError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    header.pop("__metadata__", None)
    return header


def stored_dtype(folder: str | Path) -> torch.dtype:
    """The dtype a checkpoint folder stores its weights in: the floating dtype holding the most bytes.

    Read from the safetensors headers (no tensor is loaded). This is "the base's dtype" that exports,
    materialised folders and evaluations on a GPU keep (a bf16 checkpoint stays bf16).
    """
    totals: dict[torch.dtype, int] = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    for file in files:
        for info in safetensors_header(file).values():
            dtype = FLOAT_DTYPES.get(info["dtype"])
            if dtype is not None:
                start, end = info["data_offsets"]
                totals[dtype] = totals.get(dtype, 0) + end - start
    if not totals:
        raise ValueError(f"{folder}: no floating-point tensors in {len(files)} safetensors file(s); "
                         "cannot tell the checkpoint's dtype")
    return max(totals, key=totals.get)


def _header_keys(path: Path) -> set[str]:
    """The tensor names in a safetensors file's header; a clear error naming the file when it is damaged."""
    try:
        with safe_open(path, framework="pt") as handle:
            return set(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: not a readable safetensors file ({exc}); it is truncated or damaged: "
                      "re-download or re-save the model")


def tensors_digest(tensors: dict[str, torch.Tensor], strip_prefix: str = "") -> str:
    """sha256 over names (without ``strip_prefix``), dtypes, shapes and bytes, in name order.

    The same layer read from a checkpoint file or from a loaded model gives the same digest, so an
    artifact can check that it is applied to the model it was made from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        short = name[len(strip_prefix):] if strip_prefix and name.startswith(strip_prefix) else name
        digest.update(f"{short}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
