"""A registered variant as an MLflow pyfunc model: text in, generated text out.

Each model version that :class:`tensorllm.registry.Registry` creates is a *models-from-code* pyfunc
model whose artifacts are only the small variant folder (``variant.json`` + the factor artifact folders)
and whose ``variant.json`` names the base model (a known name such as ``smollm2-135m`` or a folder path):
weights are never copied into the store. At load time :class:`TensorLLMTextModel` resolves that base
model **locally** (never from the hub) and builds the variant with :func:`tensorllm.export.variant_model`.

Like :mod:`tensorllm.registry`, this module imports mlflow (it is the second exception to the rule that
the library does not). It is shipped with each model version (``code_paths``), so a version keeps the
input/output behaviour it was registered with. ``tensorllm`` itself must be importable where the model is
loaded: with ``--env-manager local`` that is the current environment; a fresh environment
(``virtualenv``, ``uv``) installs the wheel of the library that each version carries
(``wheels/tensorllm-<version>+g<digest>-py3-none-any.whl``, named in ``requirements.txt``; see
:mod:`tensorllm.wheel`) and the pinned torch/transformers/mlflow from an index.

Usage::

    model = mlflow.pyfunc.load_model("models:/smollm2-135m-qa@champion")
    model.predict(["The capital of France is"], params={"max_new_tokens": 8})   # -> ["Paris..."]

    # MLFLOW_TRACKING_URI=sqlite:////abs/runs/mlflow/mlflow.db HF_HUB_OFFLINE=1 \\
    #   mlflow models serve -m models:/smollm2-135m-qa@champion --env-manager local -p 5000
    # curl -d '{"inputs": ["Hi"], "params": {"max_new_tokens": 8}}' -H 'Content-Type: application/json' \\
    #   localhost:5000/invocations

Inputs: a list of strings, a pandas DataFrame (column ``prompt``, else the first column) or a dict
``{"prompt": [...]}``. Generation is greedy and batched (left padding, attention mask; rows of
``batch_size``, default 8), through the same function as the evaluation's
(:func:`tensorllm.evaluation.generation.generate_all`), so each answer equals one-at-a-time decoding and the
evaluation's generation of the same prompt; ``max_new_tokens`` (default 32) and ``batch_size`` are request
parameters.

Prompt formatting is recorded with the model, not guessed from the tokenizer: the model config's
``chat_template`` (False: the plain prompt; True: a user turn of the tokenizer's chat template; see
:mod:`tensorllm.evaluation.prompt_format`) is the ``chat_template`` option of the evaluation that scored the
variant (the run's ``chat_template`` param; False when absent, the evaluation's default).
``mlflow.pyfunc.load_model(uri, model_config={"chat_template": True})`` overrides it.

The variant is built in the base model's dtype (``dtype``/``torch_dtype`` of its config.json; float32 when
it names none). The device is ``$TENSORLLM_DEVICE`` if set, else ``cuda`` when available, else ``cpu``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

VARIANT_ARTIFACT = "variant"          # key in context.artifacts: the variant folder
VARIANT_JSON = "variant.json"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")   # the models-from-code file MLflow executes
DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_BATCH_SIZE = 8
CHAT_TEMPLATE = "chat_template"       # model config key (and run param) holding the prompt formatting
WHEELS_DIR = "wheels"                 # MLflow's folder name for wheels inside a model (add_libraries_to_model)
REQUIREMENTS = ("mlflow", "torch", "transformers", "safetensors")


def signature():
    """Unnamed ``[string]`` in, ``[string]`` out, params ``max_new_tokens: long = 32``, ``batch_size: long = 8``.

    Unnamed, so that ``predict(["..."])`` and HTTP ``{"inputs": ["..."]}`` both work (a named ``prompt``
    column would reject a plain list in process).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS),
                                              ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]))


def pip_requirements(wheel: str | None = None) -> list[str]:
    """Pins of what is installed (local labels such as ``+cpu`` dropped, so a CUDA build also satisfies them),
    then ``wheel`` (the model-relative path of the tensorllm wheel, e.g. ``wheels/tensorllm-...whl``) if given.

    Explicit requirements also stop MLflow from inferring them, which loads the whole model in a subprocess.
    """
    pins = [f"{dist}=={importlib.metadata.version(dist).split('+')[0]}" for dist in REQUIREMENTS]
    return pins + ([wheel] if wheel else [])


def parse_chat_template(value) -> bool:
    """The recorded prompt formatting as a bool: a bool, or the strings ``"True"``/``"False"`` of an MLflow
    param (None, as for a run that recorded none: False, the evaluation's default); anything else is an error."""
    if value is None:
        return False
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"
    if isinstance(value, bool):
        return value
    raise ValueError(f"{CHAT_TEMPLATE} must be True or False (the evaluation's prompt formatting); got {value!r}")


def save_pyfunc(path: str | Path, variant_dir: str | Path, mlflow_model=None, chat_template: bool = False) -> Path:
    """Write the pyfunc model folder for ``variant_dir`` (a folder holding ``variant.json``) at ``path``.

    ``mlflow_model`` (an ``mlflow.models.Model``) carries the logged model's ids into ``MLmodel``.
    ``chat_template`` is the evaluation's prompt formatting, stored as the model config (see the module
    docstring). The folder gets ``wheels/<tensorllm wheel>`` (:func:`tensorllm.wheel.build_wheel`), named
    in ``requirements.txt`` and ``conda.yaml``.

    No input example is saved, on purpose: MLflow validates an example by loading the model and running
    it, which for a variant means loading its base model at every registration. The signature is explicit,
    so MLflow's warning about the missing example (printed once per registered variant) is silenced here.
    """
    import tempfile

    from tensorllm.wheel import build_wheel

    variant_dir = Path(variant_dir)
    if not (variant_dir / VARIANT_JSON).is_file():
        raise FileNotFoundError(f"{variant_dir} has no {VARIANT_JSON}: not a tensorllm variant folder")
    chat_template = parse_chat_template(chat_template)
    with tempfile.TemporaryDirectory(prefix="tensorllm-wheel-") as tmp:
        wheel = build_wheel(tmp)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
            mlflow.pyfunc.save_model(
                path=str(path), python_model=str(ENTRY_FILE), code_paths=[__file__],
                artifacts={VARIANT_ARTIFACT: str(variant_dir)}, signature=signature(),
                pip_requirements=pip_requirements(f"{WHEELS_DIR}/{wheel.name}"), mlflow_model=mlflow_model,
                model_config={CHAT_TEMPLATE: chat_template})
        (Path(path) / WHEELS_DIR).mkdir()
        shutil.copy2(wheel, Path(path) / WHEELS_DIR / wheel.name)
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


def serving_dtype(folder: str | Path, device: str):
    """The dtype a version is served in: the one evaluation uses on the same device (the base checkpoint's own
    dtype on a GPU, float32 on the CPU; :func:`tensorllm.evaluation.runtime.default_dtype`), so that what is
    served is what was evaluated."""
    from tensorllm.checkpoint import stored_dtype
    from tensorllm.evaluation.runtime import default_dtype

    return default_dtype(device, stored_dtype(folder))


def _positive_int(params: dict | None, name: str, default: int) -> int:
    import numpy as np

    value = (params or {}).get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class TensorLLMTextModel(mlflow.pyfunc.PythonModel):
    """Base model + factor artifacts, built at load time; greedy generation of the continuation."""

    chat_template: bool = False

    def load_context(self, context) -> None:
        """Read ``variant.json`` from the ``variant`` artifact and build the model (base model + factors)."""
        from tensorllm.export import variant_model
        from tensorllm.models import resolve_model

        self.chat_template = parse_chat_template((context.model_config or {}).get(CHAT_TEMPLATE))
        folder = Path(context.artifacts[VARIANT_ARTIFACT])
        self.variant = json.loads((folder / VARIANT_JSON).read_text())
        paths = [folder / entry["dir"] for entry in self.variant.get("artifacts", [])]
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"variant {self.variant.get('name')!r}: artifact folders missing: {missing}")
        base = resolve_base_offline(str(self.variant["base_model"]))
        device = _device()
        dtype = serving_dtype(resolve_model(base), device)
        self.model, self.tokenizer, self.report = variant_model(base, paths, device=device, dtype=dtype)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of one prompt, formatted as recorded (plain, or through the chat template)."""
        from tensorllm.evaluation.prompt_format import encode_prompt

        return encode_prompt(self.tokenizer, prompt, self.chat_template)

    def generate_ids(self, prompts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[int]]:
        """Greedy continuations of ``prompts`` (new token ids, up to the first EOS), exactly as the evaluation
        generates them: same config (at least one new token, the tokenizer's EOS), batched with left padding."""
        from tensorllm.evaluation.generation import generate_all, greedy_config, pad_id_for

        pad = pad_id_for(self.tokenizer)
        config = greedy_config(max_new_tokens, pad, self.tokenizer.eos_token_id)
        return generate_all(self.model, [self.encode(p) for p in prompts], config, batch_size, pad)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        """One generated continuation (text, special tokens dropped, stripped) per prompt.

        ``model_input`` may be a list of strings, a DataFrame or a dict (see :func:`_prompts`); the DataFrame
        hint is one MLflow infers no schema from, so it neither validates nor warns (the signature is explicit).
        """
        max_new = _positive_int(params, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        batch_size = _positive_int(params, "batch_size", DEFAULT_BATCH_SIZE)
        prompts = _prompts(model_input)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self.generate_ids(prompts, max_new, batch_size)]
