"""Perplexity of a variant that runs only the layers it edits: the base's inputs to layer L, recorded and replayed.

A variant that edits only layers >= L computes exactly the base's hidden states entering layer L, so on the same
windows those can be computed once, with the base's perplexity, and replayed for every variant
(:mod:`.layer_skip`: layers ``< L`` become stubs that return the stored states; embeddings, mask, rotary tables,
layers ``L..end``, final norm and head run as usual). On SmolLM2 with L = 26 of 30 a variant's perplexity then
costs the last 4 layers and the LM head instead of the whole model.

* :func:`measure_with_prefix` with ``record_layer=L``: the perplexity, recording the inputs of layer L for every
  window into a :class:`PerplexityPrefix`, saved as safetensors under a content-keyed name in ``prefix_dir``; the
  result names the file, its sha256, the prefix's content identity and L.
* with ``prefix``: the perplexity replaying them (``replayed_from_layer = L`` in the result). Refused with a
  one-line error when the prefix does not fit: other token ids (``tokens_digest``, window shape), dtype, device
  type or batch size, other weights outside layers >= L (:func:`~.fingerprint.prefix_fingerprint`: another model,
  or an edit of a layer < L), or artifacts that edit a layer < L (:func:`prepare_prefix`, before any loading).

Numbers: layers >= L run on the very tensors a full forward feeds them (same batches of windows), so the
per-window NLLs are bit-for-bit those of the full forward on the verified families
(:data:`~.layer_skip.VERIFIED_MODEL_TYPES`; tests/tensorllm/evaluation/test_perplexity_prefix.py). Other
families are not recorded and not replayed: a full forward, with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..artifact import file_sha256, read_meta
from .fingerprint import prefix_fingerprint
from .layer_skip import LayerInput, check_layer, record_layer_input, replay_prefix, skip_unsupported_reason
from .perplexity import PerplexityResult, perplexity
from .runtime import model_device, model_dtype

log = logging.getLogger(__name__)

PREFIX_FORMAT = 1  # bump when the stored tensor's meaning changes
_KEYS = ("layer", "tuple_len", "tokens_digest", "window", "n_windows", "batch_size", "dtype", "device_type",
         "fingerprint")


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a CPU tensor's bytes (any dtype, bfloat16 included)."""
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class PerplexityPrefix:
    """The hidden states entering ``layer`` for every perplexity window (``[n_windows, window, d_model]``, CPU),
    and what they depend on: the token ids, the batch size and device type they were computed with, the dtype,
    and the fingerprint of the weights outside layers >= ``layer``."""

    layer: int
    hidden: torch.Tensor
    tuple_len: int  # the output format of layer ``layer - 1`` (see LayerInput)
    tokens_digest: str
    batch_size: int
    device_type: str
    fingerprint: str
    model: str = ""  # a label only

    @property
    def window(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def n_windows(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def dtype(self) -> str:
        return _dtype_name(self.hidden.dtype)

    def inputs(self) -> dict:
        """What the hidden states are a function of (the file's name is a digest of it)."""
        return {"format": PREFIX_FORMAT, **{k: getattr(self, k) for k in _KEYS}}

    @property
    def identity(self) -> str:
        """Content identity: sha256 over :meth:`inputs` and the tensor's bytes (what a variant's cache key names)."""
        payload = {**self.inputs(), "hidden_sha256": tensor_sha256(self.hidden)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def file_name(self) -> str:
        key = hashlib.sha256(json.dumps(self.inputs(), sort_keys=True).encode()).hexdigest()[:24]
        return f"ppl-prefix-L{self.layer}-{key}.safetensors"

    def save(self, folder: str | os.PathLike) -> Path:
        """Write to ``folder/<file_name()>`` atomically; returns the path."""
        path = Path(folder).expanduser() / self.file_name()
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {k: str(v) for k, v in self.inputs().items()} | {"model": self.model, "identity": self.identity}
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_file({"hidden": self.hidden.contiguous()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return path


def load_prefix(path: str | os.PathLike) -> PerplexityPrefix:
    """Read a prefix file written by :meth:`PerplexityPrefix.save`; a damaged or foreign file is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"perplexity prefix file {path} not found (record it with record_layer=L)")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != str(PREFIX_FORMAT) or "hidden" not in handle.keys():
            raise ValueError(f"{path} is not a perplexity prefix file of format {PREFIX_FORMAT}")
        hidden = handle.get_tensor("hidden")
    prefix = PerplexityPrefix(layer=int(meta["layer"]), hidden=hidden, tuple_len=int(meta["tuple_len"]),
                              tokens_digest=meta["tokens_digest"], batch_size=int(meta["batch_size"]),
                              device_type=meta["device_type"], fingerprint=meta["fingerprint"],
                              model=meta.get("model", ""))
    if prefix.identity != meta.get("identity"):
        raise ValueError(f"perplexity prefix file {path} is damaged (its content does not match its recorded "
                         "identity); delete it and record it again")
    return prefix


def prepare_prefix(prefix: PerplexityPrefix | str | os.PathLike, artifact_paths: Sequence[str | os.PathLike] = (),
                   dtype: torch.dtype | None = None, record_layer: int | None = None) -> PerplexityPrefix:
    """``prefix`` loaded (if a path) and checked against what can be checked before loading a model: the
    artifacts' layers (each >= the prefix's layer) and the dtype; refused with a one-line error."""
    if record_layer is not None:
        raise ValueError("perplexity: give either record_layer (record the base's prefix) or prefix (replay it), "
                         "not both")
    prefix = prefix if isinstance(prefix, PerplexityPrefix) else load_prefix(prefix)
    early = sorted({layer for layer in (int(read_meta(p)["layer"]) for p in artifact_paths) if layer < prefix.layer})
    if early:
        raise ValueError(f"cannot replay the perplexity prefix from layer {prefix.layer}: the artifacts edit layer(s) "
                         f"{early} below it (a prefix recorded at layer <= {min(early)} is needed)")
    if dtype is not None and _dtype_name(dtype) != prefix.dtype:
        raise ValueError(f"perplexity prefix was recorded in {prefix.dtype}, this model runs in {_dtype_name(dtype)}"
                         ": record it in the same dtype")
    return prefix


def measure_with_prefix(model, tokenizer, *, record_layer: int | None = None,
                        prefix_dir: str | os.PathLike | None = None, prefix: PerplexityPrefix | None = None,
                        **kwargs) -> PerplexityResult:
    """:func:`~.perplexity.perplexity` of a loaded model, recording (``record_layer``, into ``prefix_dir``) or
    replaying (``prefix``) the inputs of a layer; ``kwargs`` go to ``perplexity``."""
    if (record_layer is None) == (prefix is None):
        raise ValueError("perplexity: give either record_layer (record the base's prefix) or prefix (replay it)")
    if record_layer is not None:
        if prefix_dir is None:
            raise ValueError("perplexity: record_layer needs prefix_dir, the folder to save the prefix file in")
        return _record(model, tokenizer, record_layer, prefix_dir, **kwargs)
    return _replay(model, tokenizer, prefix, **kwargs)


def _record(model, tokenizer, layer: int, folder: str | os.PathLike, **kwargs) -> PerplexityResult:
    check_layer(model, layer)
    reason = skip_unsupported_reason(model)
    if reason:
        log.info("perplexity: not recording the inputs of layer %d (%s): variants will run full forwards", layer,
                 reason)
        return perplexity(model, tokenizer, **kwargs)
    parts: list[torch.Tensor] = []
    seen: dict = {}

    def hook(ids: torch.Tensor, digest: str, batch_size: int):
        seen.update(digest=digest, batch_size=batch_size)

        @contextmanager
        def around(start: int, stop: int) -> Iterator[None]:
            with record_layer_input(model, layer) as recorder:
                yield
            parts.append(recorder.hidden.to("cpu", copy=True))
            seen["tuple_len"] = recorder.tuple_len

        return around

    result = perplexity(model, tokenizer, windows_hook=hook, **kwargs)
    prefix = PerplexityPrefix(layer=layer, hidden=torch.cat(parts), tuple_len=seen["tuple_len"],
                              tokens_digest=seen["digest"], batch_size=seen["batch_size"],
                              device_type=model_device(model).type, fingerprint=prefix_fingerprint(model, layer),
                              model=result.model)
    path = prefix.save(folder)
    result.prefix_file, result.prefix_sha256 = str(path), file_sha256(path)
    result.prefix_identity, result.prefix_layer = prefix.identity, layer
    log.info("perplexity: recorded the inputs of layer %d (%.1f MB) in %s", layer,
             prefix.hidden.numel() * prefix.hidden.element_size() / 1e6, path)
    return result


def _replay(model, tokenizer, prefix: PerplexityPrefix, **kwargs) -> PerplexityResult:
    reason = skip_unsupported_reason(model)
    if reason:
        log.info("perplexity: a full forward instead of replaying layers < %d (%s)", prefix.layer, reason)
        return perplexity(model, tokenizer, **kwargs)
    layer = check_layer(model, prefix.layer)
    device = model_device(model)
    found = {"dtype": _dtype_name(model_dtype(model)), "device type": device.type}
    wanted = {"dtype": prefix.dtype, "device type": prefix.device_type}
    for what in found:
        if found[what] != wanted[what]:
            raise ValueError(f"perplexity prefix was recorded with {what} {wanted[what]}, this model has "
                             f"{found[what]}: record it with the same")
    if prefix_fingerprint(model, layer) != prefix.fingerprint:
        raise ValueError(f"this model's weights outside layers >= {layer} differ from those the perplexity prefix "
                         f"was recorded on ({prefix.model or 'another model'}): another model, or an edit below "
                         f"layer {layer}")

    def hook(ids: torch.Tensor, digest: str, batch_size: int):
        if digest != prefix.tokens_digest or tuple(ids.shape) != tuple(prefix.hidden.shape[:2]):
            raise ValueError(f"perplexity prefix was recorded on other tokens ({prefix.n_windows} windows of "
                             f"{prefix.window}, tokens {prefix.tokens_digest[:12]}; here {ids.shape[0]} of "
                             f"{ids.shape[1]}, tokens {digest[:12]}): the same corpus, budget, window and tokenizer "
                             "are needed")
        if batch_size != prefix.batch_size:
            raise ValueError(f"perplexity prefix was recorded with batch_size {prefix.batch_size}, here "
                             f"{batch_size}: the same is needed for identical numbers")

        @contextmanager
        def around(start: int, stop: int) -> Iterator[None]:
            stored = LayerInput(prefix.hidden[start:stop].to(device), prefix.tuple_len)
            with replay_prefix(model, layer, stored):
                yield

        return around

    result = perplexity(model, tokenizer, windows_hook=hook, **kwargs)
    result.replayed_from_layer = layer
    return result
