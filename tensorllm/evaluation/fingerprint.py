"""A cheap fingerprint of the weights a layer-L hidden state depends on (everything outside layers L..end).

Used in the hidden-state cache key, so a cache entry is only reused when the model's prefix really is
the same: the base model and any variant that edits only layers >= L share entries; a variant that
(wrongly) also edits an earlier layer gets a new entry instead of stale hidden states.

Per tensor it hashes the name, shape and dtype, the exact bytes of an evenly strided sample of at most
65,536 entries (every entry of small tensors), and the Frobenius norm rounded to 6 significant digits.
This reads each tensor once on its own device (no full copy to the CPU; ~0.1 s for SmolLM2) and detects
any dense weight edit (low-rank or Tucker reconstructions change every entry). It is not a
cryptographic hash and can miss an edit of a few isolated entries: callers who need certainty pass a
``model_id`` (e.g. the checkpoint's sha256) as well.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .layer_skip import decoder_layers

SAMPLE = 65536  # entries sampled per tensor


@torch.no_grad()
def prefix_fingerprint(model: nn.Module, layer: int) -> str:
    """Hex digest over all parameters and buffers except those of decoder layers ``layer..end``."""
    layers = decoder_layers(model)
    excluded: set[int] = set()
    if layers is not None:
        for module in list(layers)[layer:]:
            excluded.update(id(t) for t in module.parameters())
            excluded.update(id(t) for t in module.buffers())
    digest = hashlib.sha256()
    named = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in named:
        if id(tensor) in excluded or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // SAMPLE)
        sample = flat[::stride].float().cpu().numpy().tobytes()
        norm = float(torch.linalg.vector_norm(flat.float() if not flat.is_floating_point() else flat))
        digest.update(repr((name, tuple(tensor.shape), str(tensor.dtype), f"{norm:.6g}")).encode())
        digest.update(sample)
    return digest.hexdigest()
