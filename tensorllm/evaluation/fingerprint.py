"""A cheap fingerprint of the weights a layer-L hidden state depends on (everything outside layers L..end).

Used in the hidden-state cache key, so a cache entry is only reused when the model's prefix really is
the same: the base model and any variant that edits only layers >= L share entries; a variant that
(wrongly) also edits an earlier layer gets a new entry instead of stale hidden states.

Per tensor it takes the name, shape, dtype, float64 sum and sum of squares, and a few raw values; that is
computed on the tensor's own device (no copy of the weights to the CPU) and detects any realistic
weight edit (a low-rank or Tucker reconstruction changes both sums). It is not a cryptographic hash:
callers who need certainty pass a ``model_id`` (e.g. the checkpoint's sha256) as well.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .layer_skip import decoder_layers


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
        wide = flat.double()
        stats = torch.stack([wide.sum(), wide.square().sum()]).cpu().tolist()
        edges = torch.cat([flat[:8], flat[-8:]]).float().cpu().tolist()
        digest.update(repr((name, tuple(tensor.shape), str(tensor.dtype), stats, edges)).encode())
    return digest.hexdigest()
