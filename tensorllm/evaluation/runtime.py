"""Device and dtype helpers for callers that load the model (the CLI, the flows).

``evaluate`` itself never moves or casts the model: a variant is applied by editing parameters in
place, and ``model.to(...)`` would replace those tensors behind the caller's back. Load the model where
it should run, e.g. ``load_model(folder, dtype=default_dtype(dev), device=dev)`` with ``dev = default_device()``.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def default_device() -> torch.device:
    """CUDA if available, else Apple MPS if available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device | str, base: torch.dtype | None = None) -> torch.dtype:
    """The evaluation dtype when none is given: on a GPU the checkpoint's own dtype ``base`` (bfloat16 when
    unknown and supported; a bf16 checkpoint on a GPU without bf16 runs in float16), float32 on the CPU
    (bf16 and fp16 are slow there). The dtype used is recorded with every result (``EvalResult.dtype``)."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    bf16 = torch.cuda.is_bf16_supported()
    if base is None:
        return torch.bfloat16 if bf16 else torch.float32
    return torch.float16 if base == torch.bfloat16 and not bf16 else base


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``"fp16"``/``"float32"``... -> torch dtype (clear error otherwise)."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"Unknown dtype {name!r}; allowed: {sorted(DTYPES)}") from None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())
