"""Load a factorised export back into a model that generates, without ever building the dense attention.

A factorised export (:func:`tensorllm.export.export_variant`) is a Hugging Face folder whose
``config.json`` has ``model_type: "tensorllm_factorised"``, the base family's type in
``tensorllm_base_model_type`` and the layers, ranks and shapes in ``tensorllm_compression``; its
``model.safetensors`` holds U1, U2 and the cores of the compressed layers and every other tensor as the
base stored it (same dtype).

:func:`load_compressed` builds the base family's module tree with its parameters on the *meta* device
(no memory), installs the factorised modules at the recorded layers, and then reads each tensor of the
safetensors file straight into a fresh tensor (plain reads, no memory map), so the peak memory of a load is
about the export's size: no dense q/k/v/o and no second copy of the model. Tied tensors (e.g. embeddings
and LM head) are stored once and loaded into one tensor.

Usage::

    model, tokenizer = load_compressed("out/small")                 # the dtype it was exported in
    model, tokenizer = load_compressed("out/small", dtype=torch.float32, device="cuda")
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .checkpoint import FLOAT_DTYPES, safetensors_header, stored_dtype

log = logging.getLogger(__name__)

EXPORT_FORMAT = "tensorllm-factorised/1"
CONFIG_KEY = "tensorllm_compression"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "tensorllm_factorised"  # config.json's model_type: plain transformers cannot mistake it for the base
BASE_TYPE_KEY = "tensorllm_base_model_type"
_DTYPES = {**FLOAT_DTYPES, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}


def read_config_dict(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); give the folder export_variant wrote")
    return json.loads(path.read_text())


def is_factorised_export(folder: str | Path) -> bool:
    """True when ``folder`` is a factorised tensorllm export (its config.json carries ``tensorllm_compression``)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not a JSON object ({exc}); allowed: a Hugging Face config.json") from None
    return isinstance(config, dict) and CONFIG_KEY in config


def base_config_from_dict(config_dict: dict, keep_auto_map: bool = True, **kwargs):
    """The base family's config (e.g. ``LlamaConfig``) for an export's config dict, ``tensorllm_compression`` kept.

    ``kwargs`` go to ``from_dict`` (``return_unused_kwargs`` included), which is what the folder's
    ``configuration_tensorllm.py`` needs; ``keep_auto_map`` keeps the pointer to the folder's modeling file,
    so that ``AutoModelForCausalLM`` takes the tensorllm route after ``AutoConfig``.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    data = dict(config_dict)
    base_type = data.pop(BASE_TYPE_KEY, data.get("model_type"))  # exports before the own model_type kept the base's
    data["model_type"] = base_type
    if not keep_auto_map:
        data.pop("auto_map", None)
    if base_type not in CONFIG_MAPPING:
        raise ValueError(f"the export's base model type {base_type!r} is not known to this transformers version")
    return CONFIG_MAPPING[base_type].from_dict(data, **kwargs)


def export_config(folder: str | Path):
    """The base family's config of a factorised export, after checking the export format."""
    data = read_config_dict(folder)
    section = data.get(CONFIG_KEY)
    if not isinstance(section, dict) or section.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{folder} is not a factorised tensorllm export: config.json has no {CONFIG_KEY} with "
                         f"format {EXPORT_FORMAT!r} (a dense export loads with AutoModelForCausalLM.from_pretrained)")
    return base_config_from_dict(data, keep_auto_map=False)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside the block get their parameters on the meta device (buffers stay real).

    Like accelerate's ``init_empty_weights(include_buffers=False)``, except that a parameter that is already
    on the meta device is registered as it is: tied weights (``lm_head.weight = embed_tokens.weight``) stay
    one object, which the loader relies on to fill both with one tensor.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.to("meta"), **param.__dict__)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def empty_factorised_model(config, dtype: torch.dtype) -> nn.Module:
    """The base family's model with its parameters on the meta device and the recorded layers factorised.

    Buffers that are not saved (rotary frequencies) are computed normally, on the CPU.
    """
    from transformers import AutoModelForCausalLM

    from .factorised import FactorisedAttention, install_factors
    from .attention_shape import AttentionShape

    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for layer, spec in getattr(config, CONFIG_KEY)["layers"].items():
        factors = FactorisedAttention(AttentionShape(**spec["attention_shape"]), *spec["ranks"], dtype=dtype,
                                      device="meta")
        install_factors(model, int(layer), factors)
    return model


def load_compressed(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    verify: bool = True):
    """Load a folder written by :func:`tensorllm.export.export_variant` (factorised): ``(model, tokenizer)``.

    ``dtype`` defaults to the dtype the export stores (the base's). ``verify`` first checks every file against
    the sha256 in ``tensorllm_manifest.json`` (:mod:`tensorllm.manifest`): a flipped byte is a ``ValueError``
    naming the file (a folder without a manifest, from before exports carried one, loads with a warning). A
    missing, unexpected, mis-shaped or truncated tensor is an error naming the file. The tokenizer is ``None`` when
    the folder has none. ``tensorllm.load_compressed`` is this function.
    """
    from transformers import AutoTokenizer, GenerationConfig

    folder = Path(folder)
    config = export_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {WEIGHTS_FILE} is missing (a factorised export holds its weights there)")
    if verify:
        verify_export_files(folder)
    dtype = dtype or stored_dtype(folder)
    model = empty_factorised_model(config, dtype)
    load_streaming(model, weights, dtype)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    model = model.to(device).eval()
    from .hf_remote import save_factorised

    # save_pretrained writes a factorised export again (transformers' own would write a folder that plain
    # loaders read as the base family with random attention weights)
    model.save_pretrained = lambda save_directory, **_: save_factorised(model, save_directory)
    tokenizer = None
    if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        # the base config given: AutoTokenizer would otherwise read config.json, whose model_type is tensorllm's
        tokenizer = AutoTokenizer.from_pretrained(folder, config=config)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def verify_export_files(folder: Path) -> None:
    """Check the folder's files against its manifest (a warning, not an error, when it has none)."""
    from .manifest import MANIFEST_FILE, has_manifest, verify_manifest

    if not has_manifest(folder):
        log.warning("%s has no %s (written before exports recorded digests): its files are not verified; "
                    "re-export it to get one", folder, MANIFEST_FILE)
        return
    checked = verify_manifest(folder)
    log.info("%s: %d files match their recorded sha256", folder, len(checked))


def _slots(model: nn.Module) -> dict[str, list[tuple[nn.Module, str, bool]]]:
    """state-dict name -> every (module, attribute, is_parameter) that holds the same tensor (tied weights)."""
    by_tensor: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    names: dict[str, int] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        dotted = f"{prefix}." if prefix else ""
        held = [(a, t, True) for a, t in module._parameters.items()]
        held += [(a, t, False) for a, t in module._buffers.items() if a not in module._non_persistent_buffers_set]
        for attr, tensor, is_param in held:
            if tensor is None:
                continue
            by_tensor.setdefault(id(tensor), []).append((module, attr, is_param))
            names[dotted + attr] = id(tensor)
    return {name: by_tensor[key] for name, key in names.items()}


def load_streaming(model: nn.Module, weights: Path, dtype: torch.dtype) -> None:
    """Read every tensor of ``weights`` into ``model`` (built on the meta device), one tensor at a time.

    Floating-point tensors are cast to ``dtype`` (a no-op for the export's own dtype). Every tensor of the
    model must be in the file, except tied copies, stored once; an unknown, missing, mis-shaped or
    truncated tensor is an error naming the file.
    """
    header = safetensors_header(weights)
    slots = _slots(model)
    unexpected = sorted(set(header) - set(slots))
    if unexpected:
        raise ValueError(f"{weights}: tensors this model does not have: {unexpected[:5]}")
    size = weights.stat().st_size
    with open(weights, "rb") as handle:
        data_start = 8 + int.from_bytes(handle.read(8), "little")
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            shape = tuple(info["shape"])
            holder, attr, _ = slots[name][0]
            expected = tuple(getattr(holder, attr).shape)
            if shape != expected:
                raise ValueError(f"{weights}: {name} has shape {shape}, the model expects {expected}")
            start, end = info["data_offsets"]
            if data_start + end > size:
                raise ValueError(f"{weights}: not a readable safetensors file ({name} ends past the end of the file); "
                                 "the export is truncated or damaged")
            raw = torch.empty(end - start, dtype=torch.uint8)
            handle.seek(data_start + start)
            handle.readinto(raw.numpy())
            tensor = raw.view(_DTYPES[info["dtype"]]).reshape(shape)
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            _assign(slots[name], tensor)
    missing = sorted(name for name, held in slots.items() if getattr(held[0][0], held[0][1]).is_meta)
    if missing:
        raise ValueError(f"{weights}: tensors missing from the export: {missing[:5]}")


def _assign(holders: list[tuple[nn.Module, str, bool]], tensor: torch.Tensor) -> None:
    """Put ``tensor`` in every place that held the (meta) tensor, so tied weights stay one tensor."""
    parameter = None
    for module, attr, is_param in holders:
        if is_param:
            if parameter is None:
                parameter = nn.Parameter(tensor, requires_grad=module._parameters[attr].requires_grad)
            module._parameters[attr] = parameter
        else:
            module._buffers[attr] = tensor
