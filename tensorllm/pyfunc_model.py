"""A registered variant as an MLflow pyfunc model: text in, generated text out.

Each model version that :class:`tensorllm.registry.Registry` creates is a *models-from-code* pyfunc
model whose artifacts are only the small variant folder (``variant.json`` + the factor artifact folders)
and whose ``variant.json`` names the base model (a known name such as ``smollm2-135m`` or a folder path):
weights are never copied into the store. At load time :class:`TensorLLMTextModel` resolves that base
model **locally** (never from the hub) and builds the variant with :func:`tensorllm.export.variant_model`.

Like :mod:`tensorllm.registry`, this module imports mlflow (it is the second exception to the rule that
the library does not). It is shipped with each model version (``code_paths``), so a version keeps the
input/output behaviour it was registered with; ``tensorllm`` itself must be importable where the model is
loaded (the project is pip-installed; serve with ``--env-manager local``).

Usage::

    model = mlflow.pyfunc.load_model("models:/smollm2-135m-qa@champion")
    model.predict(["The capital of France is"], params={"max_new_tokens": 8})   # -> ["Paris..."]

    # MLFLOW_TRACKING_URI=sqlite:////abs/runs/mlflow/mlflow.db HF_HUB_OFFLINE=1 \\
    #   mlflow models serve -m models:/smollm2-135m-qa@champion --env-manager local -p 5000
    # curl -d '{"inputs": ["Hi"], "params": {"max_new_tokens": 8}}' -H 'Content-Type: application/json' \\
    #   localhost:5000/invocations

Inputs: a list of strings, a pandas DataFrame (column ``prompt``, else the first column) or a dict
``{"prompt": [...]}``. Generation is greedy; ``max_new_tokens`` (default 32) is a request parameter.
The prompt goes through the tokenizer's chat template when it has one. The device is
``$TENSORLLM_DEVICE`` if set, else ``cuda`` when available, else ``cpu``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

VARIANT_ARTIFACT = "variant"          # key in context.artifacts: the variant folder
VARIANT_JSON = "variant.json"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")   # the models-from-code file MLflow executes
DEFAULT_MAX_NEW_TOKENS = 32
REQUIREMENTS = ("mlflow", "torch", "transformers", "safetensors")


def signature():
    """Unnamed ``[string]`` in, ``[string]`` out, param ``max_new_tokens: long = 32``.

    Unnamed, so that ``predict(["..."])`` and HTTP ``{"inputs": ["..."]}`` both work (a named ``prompt``
    column would reject a plain list in process).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS)]))


def pip_requirements() -> list[str]:
    """Pins of what is installed (local labels such as ``+cpu`` dropped, so a CUDA build also satisfies them).

    Explicit requirements also stop MLflow from inferring them, which loads the whole model in a subprocess.
    """
    return [f"{dist}=={importlib.metadata.version(dist).split('+')[0]}" for dist in REQUIREMENTS]


def save_pyfunc(path: str | Path, variant_dir: str | Path, mlflow_model=None) -> Path:
    """Write the pyfunc model folder for ``variant_dir`` (a folder holding ``variant.json``) at ``path``.

    ``mlflow_model`` (an ``mlflow.models.Model``) carries the logged model's ids into ``MLmodel``.

    No input example is saved, on purpose: MLflow validates an example by loading the model and running
    it, which for a variant means loading its base model at every registration. The signature is explicit,
    so MLflow's warning about the missing example (printed once per registered variant) is silenced here.
    """
    variant_dir = Path(variant_dir)
    if not (variant_dir / VARIANT_JSON).is_file():
        raise FileNotFoundError(f"{variant_dir} has no {VARIANT_JSON}: not a tensorllm variant folder")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(path), python_model=str(ENTRY_FILE), code_paths=[__file__],
            artifacts={VARIANT_ARTIFACT: str(variant_dir)}, signature=signature(),
            pip_requirements=pip_requirements(), mlflow_model=mlflow_model)
    return Path(path)


def resolve_base_offline(base_model: str) -> str:
    """The base model as something :func:`tensorllm.models.resolve_model` opens without the network.

    A known name or an existing folder is returned as is; a hub id is looked up in the local Hugging Face
    cache only. Anything else is a FileNotFoundError naming it (a registered version refers to its base
    model by name or path: that path must exist where the model is loaded).
    """
    from tensorllm.models import KNOWN_NAMES

    if base_model in KNOWN_NAMES or Path(base_model).expanduser().is_dir():
        return base_model
    hub_id = not base_model.startswith(("/", "~", ".")) and base_model.count("/") <= 1  # "gpt2", "org/name"
    if hub_id:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(base_model, local_files_only=True)
        except Exception:  # not in the local cache (or not a valid id): same error as a missing folder
            pass
    raise FileNotFoundError(
        f"base model {base_model!r} of this variant is not available here: it is neither a known name "
        f"({', '.join(sorted(KNOWN_NAMES))}), nor an existing folder, nor a hub id in the local cache; the "
        "registered version stores only the factors, so its base model must exist where it is loaded"
    )


def _device() -> str:
    import torch

    return os.environ.get("TENSORLLM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def _prompts(model_input) -> list[str]:
    """Inputs as a flat list of strings (see the module docstring for the accepted forms)."""
    import numpy as np
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        values = model_input[column].tolist()
    elif isinstance(model_input, dict):
        if "prompt" not in model_input:
            raise ValueError(f"a dict input needs the key 'prompt'; got keys {sorted(map(str, model_input))}")
        values = model_input["prompt"]
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        values = list(np.asarray(model_input, dtype=object).ravel()) if isinstance(model_input, np.ndarray) \
            else list(model_input)
    else:
        raise TypeError(f"unsupported input type {type(model_input).__name__}: give a list of strings, "
                        "a DataFrame with a 'prompt' column, or {'prompt': [...]}")
    # an in-process predict({"prompt": [...]}) arrives as one DataFrame cell holding the whole list
    flat = [q for v in values for q in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    bad = [q for q in flat if not isinstance(q, str)]
    if bad:
        raise TypeError(f"prompts must be strings; got {type(bad[0]).__name__} {bad[0]!r}")
    return flat


class TensorLLMTextModel(mlflow.pyfunc.PythonModel):
    """Base model + factor artifacts, built at load time; greedy generation of the continuation."""

    def load_context(self, context) -> None:
        """Read ``variant.json`` from the ``variant`` artifact and build the model (base model + factors)."""
        import torch

        from tensorllm.export import variant_model

        folder = Path(context.artifacts[VARIANT_ARTIFACT])
        self.variant = json.loads((folder / VARIANT_JSON).read_text())
        paths = [folder / entry["dir"] for entry in self.variant.get("artifacts", [])]
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"variant {self.variant.get('name')!r}: artifact folders missing: {missing}")
        base = resolve_base_offline(str(self.variant["base_model"]))
        self.model, self.tokenizer, self.report = variant_model(base, paths, device=_device(), dtype=torch.float32)

    def encode(self, prompt: str) -> dict:
        """Token ids (and attention mask) of one prompt, through the chat template when there is one."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
        else:
            enc = tok(prompt, return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in enc.items()}

    def generate_ids(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[int]:
        """Greedy continuation of ``prompt``: the new token ids only."""
        import torch

        enc = self.encode(prompt)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return out[0, enc["input_ids"].shape[1]:].tolist()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        """One generated continuation (text, special tokens dropped, stripped) per prompt.

        ``model_input`` may be a list of strings, a DataFrame or a dict (see :func:`_prompts`); the DataFrame
        hint is one MLflow infers no schema from, so it neither validates nor warns (the signature is explicit).
        """
        import numpy as np

        max_new = (params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if isinstance(max_new, bool) or not isinstance(max_new, (int, np.integer)) or max_new < 1:
            raise ValueError(f"max_new_tokens must be a positive integer; got {max_new!r}")
        return [self.tokenizer.decode(self.generate_ids(p, int(max_new)), skip_special_tokens=True).strip()
                for p in _prompts(model_input)]
