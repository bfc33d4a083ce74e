"""What makes ``AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True)`` return the factorised model.

A factorised export carries two small Python files and an ``auto_map`` in its ``config.json`` (the route
transformers offers for architectures it does not ship; docs/export.md says why this route and not a
registered quantizer):

* ``configuration_tensorllm.py``: ``AutoConfig`` turns the folder's config into the base family's config
  (``LlamaConfig``...), with ``tensorllm_compression`` and the ``auto_map`` kept;
* ``modeling_tensorllm.py``: ``AutoModelForCausalLM`` hands the folder to :func:`from_pretrained`, which is
  :func:`tensorllm.load_export.load_compressed`, so both loaders give the same model.

Both files only import tensorllm (inside ``try``, so that transformers' import check does not pre-empt the
message): without tensorllm, loading fails with an ``ImportError`` that names the package and how to
install it. Without ``trust_remote_code``, transformers itself refuses, because config.json's
``model_type`` (``tensorllm_factorised``) is none of its own: no loader ever builds the base family with
random attention weights in place of the factors.

:func:`save_factorised` writes such a folder (``export_variant`` and a loaded model's ``save_pretrained`` use it).

Usage::

    save_factorised(model, out_dir)           # model.config.tensorllm_compression says which layers are factorised
    model = AutoModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .load_export import BASE_TYPE_KEY, CONFIG_KEY, EXPORT_FORMAT, MODEL_TYPE, WEIGHTS_FILE, base_config_from_dict

CONFIG_FILE = "configuration_tensorllm.py"
MODELING_FILE = "modeling_tensorllm.py"
INSTALL_HINT = ("pip install tensorllm (this project: `pip install -e .` in its checkout), "
                "or load the dense export, a plain Hugging Face folder")
_IMPORT_GUARD = f'''try:
    from tensorllm import hf_remote
except ImportError as exc:
    raise ImportError(
        "This folder is a TensorLLM factorised export: its compressed attention layers are stored as Tucker "
        "factors, which only the tensorllm package can load. Install it ({INSTALL_HINT}); then "
        "AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) or tensorllm.load_compressed(folder). "
        f"(import failed: {{exc}})"
    ) from exc
'''
CONFIG_SOURCE = f'''"""AutoConfig for a TensorLLM factorised export: the base family's config (written by tensorllm)."""
from transformers import PretrainedConfig

{_IMPORT_GUARD}

class TensorLLMFactorisedConfig(PretrainedConfig):
    model_type = "{MODEL_TYPE}"

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        return hf_remote.config_from_dict(config_dict, **kwargs)
'''
MODELING_SOURCE = f'''"""AutoModelForCausalLM for a TensorLLM factorised export: tensorllm.load_compressed (written by tensorllm)."""
from transformers import PreTrainedModel

from .configuration_tensorllm import TensorLLMFactorisedConfig

{_IMPORT_GUARD}

class TensorLLMFactorisedForCausalLM(PreTrainedModel):
    config_class = TensorLLMFactorisedConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        return hf_remote.from_pretrained(pretrained_model_name_or_path, **kwargs)
'''
AUTO_MAP = {"AutoConfig": "configuration_tensorllm.TensorLLMFactorisedConfig",
            "AutoModelForCausalLM": "modeling_tensorllm.TensorLLMFactorisedForCausalLM"}


def write_remote_code(out_dir: str | Path) -> dict[str, str]:
    """Write the two loader files into ``out_dir``; returns the ``auto_map`` for its config.json."""
    out_dir = Path(out_dir)
    (out_dir / CONFIG_FILE).write_text(CONFIG_SOURCE)
    (out_dir / MODELING_FILE).write_text(MODELING_SOURCE)
    return dict(AUTO_MAP)


def save_factorised(model: nn.Module, out_dir: str | Path, manifest: bool = True) -> None:
    """Write a model with factorised layers (``model.config.tensorllm_compression`` set) as a factorised export:
    config.json routed to tensorllm, ``generation_config.json``, the loader files and ``model.safetensors``, and
    (``manifest``) ``tensorllm_manifest.json``, every file's sha256, which the loaders check (the loader files
    included: a changed ``modeling_tensorllm.py`` is refused too).

    A model from :func:`tensorllm.load_compressed` has this as its ``save_pretrained``: transformers' own would
    write the base family's config next to the factors, a folder that plain loaders fill with random attention.
    """
    from safetensors.torch import save_model

    section = getattr(model.config, CONFIG_KEY, None)
    if not isinstance(section, dict) or section.get("format") != EXPORT_FORMAT:
        raise ValueError(f"this model's config has no {CONFIG_KEY} section; write variants with "
                         "tensorllm.export.export_variant")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out_dir)
    path = out_dir / "config.json"
    config = json.loads(path.read_text())
    config.pop("auto_map", None)
    # model_type becomes tensorllm's own (the base's is kept) and auto_map points at the loader files, so
    # that no loader takes the folder for a plain base model
    config[BASE_TYPE_KEY] = config["model_type"]
    config["model_type"] = MODEL_TYPE
    config["auto_map"] = write_remote_code(out_dir)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out_dir)
    # the module names as they are in memory (transformers' save_pretrained would rename some to the Hub's
    # historical names, which only its from_pretrained maps back); tied tensors are stored once
    save_model(model, str(out_dir / WEIGHTS_FILE), metadata={"format": EXPORT_FORMAT})
    if manifest:  # export_variant writes it itself, after the tokenizer and the model card
        from .manifest import write_manifest

        write_manifest(out_dir)


def config_from_dict(config_dict: dict, **kwargs):
    """``AutoConfig``'s answer for an export: the base family's config (see :func:`base_config_from_dict`)."""
    return base_config_from_dict(config_dict, keep_auto_map=True, **kwargs)


def _device(device_map) -> str:
    if device_map is None:
        return "cpu"
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device_map, (str, torch.device)):
        return str(device_map)
    raise ValueError(f"device_map={device_map!r} is not supported for a tensorllm factorised export; "
                     "allowed: None, 'auto' or one device such as 'cpu' or 'cuda:0'")


def from_pretrained(folder: str | Path, dtype=None, torch_dtype=None, device_map=None, **_ignored):
    """``AutoModelForCausalLM``'s answer for an export: :func:`load_compressed`'s model.

    ``dtype`` (or ``torch_dtype``): a torch dtype, or ``None``/``"auto"`` for the export's own dtype (the base's);
    ``device_map``: one device (or ``"auto"``: CUDA when available). Other keyword arguments are ignored.
    The folder's recorded digests are checked first (:func:`load_compressed`): a damaged file is an error naming it.
    """
    chosen = dtype if dtype is not None else torch_dtype
    if isinstance(chosen, str):
        chosen = None if chosen == "auto" else getattr(torch, chosen)
    from .load_export import load_compressed

    model, _ = load_compressed(folder, device=_device(device_map), dtype=chosen)
    return model
