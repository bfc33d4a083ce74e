"""Activation-aware fit: weight mode 1 of the tensor by the layer's input covariance (beyond the paper).

The paper's fit (Eq. 14) minimises the weights' error. What the layer computes is ``X W``: for the
calibration inputs X (n x d_model, the hidden states *after* the layer's input norm, exactly what the
Q/K/V projections see) with ``C = X^T X = L L^T``,

    ||X (W - W_hat)||_F^2 = ||L^T (W - W_hat)||_F^2,

so a plain Tucker fit of ``W' = W x_1 L^T`` minimises the projections' output error on those inputs, and
``U1 = L^{-T} U1'`` maps its mode-1 factor back (the core and U2, U3 are unchanged; U1 is then not
orthonormal, which nothing downstream needs). This is SVD-LLM's whitening / ASVD's activation scaling
applied to the shared mode of TensorLLM's tensor.

Mode 1 is shared by Q, K, V (their input side, where the weighting is exact) and by O^T (its *output*
side, d_model of the residual stream), and one U1 cannot be weighted differently per slice. We weight
every slice, O included: for O this weights the error of its output in the residual stream by the
input's covariance, i.e. errors in the residual directions the layer's input uses most count most. It is
a proxy there, not the O output error; the study (``bench/fit_quality.py``) measures the result.

Regularisation: ``C_reg = C / n_tokens + DAMP * mean(diag(C / n_tokens)) * I`` with ``DAMP = 0.01`` (as
GPTQ's ``percdamp``): it keeps L well conditioned when the calibration set spans fewer than d_model
directions or when a few channels (massive activations) dominate, and it bounds how far U1 may move
from the weight fit in directions the calibration data never visit.

Calibration data: N prompts (prompt + " " + answer, as the evaluation scores them) from the
**validation** split of the given datasets (never the test split), round-robin over the datasets; the
covariances of all requested layers come from one forward pass (hooks on the Q projection's input; the
pass stops after the deepest requested layer) and are cached on disk, keyed by the checkpoint's identity,
the layer, the calibration set's hash and the library's code version.

Usage::

    calib = Calibration(datasets=("qa_wikidata",), n_prompts=128)
    covs = layer_covariances("smollm2-135m", [3, 15], calib, cache_dir="runs/artifacts/calibration")
    L = whitening_factor(covs[15].cov)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .tucker import mode_dot

log = logging.getLogger(__name__)

FITS: tuple[str, ...] = ("weights", "activations")
DAMP = 0.01  # relative ridge added to the covariance's diagonal (module docstring)
DEFAULT_PROMPTS = 128
CALIBRATION_FORMAT = 1  # bump when the stored covariance's meaning changes


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ValueError(f"Unknown fit {fit!r}; allowed: {', '.join(FITS)}.")
    return fit


@dataclass(frozen=True)
class Calibration:
    """Which prompts calibrate the activation-aware fit: ``n_prompts`` from the validation split of ``datasets``.

    ``seed`` is the split seed (as ``EvalConfig.seed``, which fixes which items are ``val``): keep it equal to
    the evaluation's, or calibration items could be the evaluation's test items.
    """

    datasets: tuple[str, ...] = ("qa_wikidata",)
    n_prompts: int = DEFAULT_PROMPTS
    seed: int = 0
    data_dir: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.datasets, str):
            object.__setattr__(self, "datasets", (self.datasets,))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if not self.datasets:
            raise ValueError("calibration needs at least one dataset (its validation split gives the prompts)")
        if isinstance(self.n_prompts, bool) or not isinstance(self.n_prompts, int) or self.n_prompts < 1:
            raise ValueError(f"calibration n_prompts must be an integer >= 1; got {self.n_prompts!r}")


@dataclass
class CalibrationSet:
    """The calibration texts and their identity (``sha256`` over dataset file digests and item ids)."""

    prompts: list[str]
    answers: list[str]
    item_ids: list[str]
    sha256: str
    calibration: Calibration

    def describe(self) -> dict:
        """What goes into artifacts and keys: datasets, N, seed, data hash, the regulariser."""
        return {"datasets": list(self.calibration.datasets), "n_prompts": len(self.prompts),
                "seed": self.calibration.seed, "split": "val", "data_sha256": self.sha256, "damp": DAMP}


def calibration_set(calibration: Calibration) -> CalibrationSet:
    """The first prompts of each dataset's validation split (seeded order), round-robin up to ``n_prompts``."""
    from .evaluation import load_task, select_split
    from .evaluation.data.registry import dataset_digest

    per_dataset = []
    digest = hashlib.sha256(json.dumps({"seed": calibration.seed, "n": calibration.n_prompts}).encode())
    need = -(-calibration.n_prompts // len(calibration.datasets))
    for name in calibration.datasets:
        task = load_task(name, data_dir=calibration.data_dir)
        items = select_split(task.dataset, "val", limit=need, seed=calibration.seed)
        per_dataset.append(list(zip(items["id"], items["prompt"], items["answer"])))
        digest.update(f"{name}:{dataset_digest(name, calibration.data_dir)}".encode())
    chosen = []
    for i in range(max(len(rows) for rows in per_dataset)):
        chosen.extend(rows[i] for rows in per_dataset if i < len(rows))
    chosen = chosen[: calibration.n_prompts]
    if len(chosen) < calibration.n_prompts:
        raise ValueError(f"calibration asked for {calibration.n_prompts} prompts but the validation splits of "
                         f"{list(calibration.datasets)} hold only {len(chosen)}")
    for item_id, _, _ in chosen:
        digest.update(item_id.encode() + b"\0")
    return CalibrationSet(prompts=[p for _, p, _ in chosen], answers=[a for _, _, a in chosen],
                          item_ids=[i for i, _, _ in chosen], sha256=digest.hexdigest(), calibration=calibration)


@dataclass
class InputCovariance:
    """``cov = X^T X / n_tokens`` (float64, d_model x d_model) of one layer's attention input."""

    cov: torch.Tensor
    n_tokens: int


def _projection_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The module whose input is what Q/K/V see: the Q projection (or the fused QKV projection)."""
    from .layouts import layout_for

    layout = layout_for(model.config)
    names = layout.attention_names(layer)
    prefix = layout.find_prefix(model.state_dict().keys(), layer)
    name = prefix + names["qkv" if "qkv" in names else "q"]
    return model.get_submodule(name.removesuffix(".weight"))


class _Done(Exception):
    """Raised by the last hook: the rest of the forward pass is not needed."""


@torch.no_grad()
def input_covariances(model: torch.nn.Module, tokenizer, layers: Sequence[int], calib: CalibrationSet,
                      batch_size: int = 16) -> dict[int, InputCovariance]:
    """``X^T X / n`` of the attention input of every layer in ``layers`` over the calibration texts
    (padding excluded), from one forward pass per batch that stops after the deepest layer."""
    from .evaluation.batching import make_batches
    from .evaluation.runtime import model_device
    from .evaluation.tokens import prompt_answer_ids

    layers = sorted(set(int(x) for x in layers))
    if not layers:
        raise ValueError("input_covariances needs at least one layer")
    n_layers = model.config.num_hidden_layers
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: this model has layers 0..{n_layers - 1}")
    sequences = []
    for prompt, answer in zip(calib.prompts, calib.answers):
        ids = prompt_answer_ids(tokenizer, prompt, answer)
        sequences.append(ids.prompt + ids.answer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    sums = {x: None for x in layers}
    counts = {x: 0 for x in layers}
    mask_box: dict[str, torch.Tensor] = {}
    device = model_device(model)

    def hook_for(layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["input"]
            x = hidden[mask_box["mask"]].double()  # (real tokens, d_model)
            gram = x.T @ x
            sums[layer] = gram if sums[layer] is None else sums[layer] + gram
            counts[layer] += x.shape[0]
            if layer == layers[-1]:
                raise _Done
        return hook

    handles = [_projection_module(model, x).register_forward_pre_hook(hook_for(x), with_kwargs=True) for x in layers]
    was_training = model.training
    model.eval()
    try:
        for batch in make_batches(sequences, batch_size, int(pad)):
            batch = batch.to(device)
            mask_box["mask"] = batch.attention_mask.bool()
            try:
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids, use_cache=False)
            except _Done:
                pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {x: InputCovariance(cov=(sums[x] / counts[x]).cpu(), n_tokens=counts[x]) for x in layers}


def covariance_key(model_identity: str, layer: int, calib: CalibrationSet, code_version: str) -> str:
    parts = {"format": CALIBRATION_FORMAT, "model": model_identity, "layer": layer, "calibration": calib.describe(),
             "code": code_version}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def layer_covariances(model: str, layers: Sequence[int], calib: CalibrationSet, cache_dir: str | os.PathLike,
                      batch_size: int = 16) -> dict[int, InputCovariance]:
    """Cached :func:`input_covariances` of a model name / folder: missing layers are computed in one pass
    (fp32, CPU or the default device) and each layer is written to ``cache_dir/<key>.safetensors``."""
    from .checkpoint import Checkpoint
    from .models import load_model, resolve_model
    from .provenance import artifact_code_version

    folder = resolve_model(model)
    identity, code = Checkpoint(folder).identity(), artifact_code_version("tucker_mha", "activations")
    cache_dir = Path(cache_dir)
    paths = {x: cache_dir / f"L{x:03d}-{covariance_key(identity, x, calib, code)}.safetensors" for x in layers}
    out: dict[int, InputCovariance] = {}
    for x, path in paths.items():
        if path.is_file():
            try:
                stored = load_file(str(path))
                out[x] = InputCovariance(cov=stored["cov"], n_tokens=int(stored["n_tokens"].item()))
            except Exception as exc:  # a damaged cache file is recomputed, never trusted
                log.warning("recomputing calibration covariance %s: %s", path, exc)
    missing = [x for x in layers if x not in out]
    if missing:
        loaded, tokenizer = load_model(folder, dtype=torch.float32)
        computed = input_covariances(loaded, tokenizer, missing, calib, batch_size=batch_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for x, value in computed.items():
            tmp = paths[x].with_name(paths[x].name + f".tmp-{os.getpid()}")
            save_file({"cov": value.cov.contiguous(), "n_tokens": torch.tensor([value.n_tokens])}, str(tmp))
            os.replace(tmp, paths[x])
            out[x] = value
        log.info("calibration covariances of layers %s from %d prompts (%d tokens)", missing,
                 len(calib.prompts), computed[missing[0]].n_tokens)
    return out


def whitening_factor(cov: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """Lower-triangular L with ``L L^T = C + damp * mean(diag C) * I`` (float64)."""
    cov = cov.double()
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"covariance must be a square matrix; got shape {tuple(cov.shape)}")
    scale = float(torch.diagonal(cov).mean())
    if not scale > 0:
        raise ValueError("covariance has a non-positive trace: the calibration inputs are all zero")
    reg = (cov + cov.T) / 2 + damp * scale * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.cholesky(reg)


def weight_tensor(tensor: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``W' = W x_1 L^T`` (mode 1 = d_model), in the tensor's dtype."""
    if factor.shape != (tensor.shape[0], tensor.shape[0]):
        raise ValueError(f"whitening factor of shape {tuple(factor.shape)} does not match d_model={tensor.shape[0]}")
    return mode_dot(tensor.double(), factor.T.to(tensor.device), 0).to(tensor.dtype)


def unweight_u1(u1: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``U1 = L^{-T} U1'`` (a triangular solve), in ``u1``'s dtype."""
    solved = torch.linalg.solve_triangular(factor.T.to(u1.device), u1.double(), upper=True)
    return solved.to(u1.dtype)


def layer_output_error(original: torch.Tensor, approx: torch.Tensor, cov: torch.Tensor) -> float:
    """``sqrt(tr(E^T C E) / tr(W^T C W))`` over mode 1 of the 4-D tensors: the relative error of every
    slice's product with the calibration inputs (exact output error for Q/K/V, the weighted proxy for O)."""
    def energy(t: torch.Tensor) -> float:
        flat = t.double().reshape(t.shape[0], -1)
        return float(torch.sum(flat * (cov.double().to(flat.device) @ flat)))

    return (energy(original - approx) / energy(original)) ** 0.5
