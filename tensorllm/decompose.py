"""One step of the pipeline as one typed function: decompose a layer at several ranks, write artifacts.

The CLI (``tensorllm decompose``) and the Prefect task call :func:`decompose_layer`; it reads only the
layer's tensors from the checkpoint (memory-mapped safetensors), tensorises them (Eqs. 7-8), runs the
shared-factor Tucker decomposition for every rank configuration (reusing work across ranks) and writes
one artifact per configuration. An artifact that already exists with the same base-layer digest,
ranks, grouping, solver settings and code version (the modules that compute it, and torch's version:
:func:`tensorllm.provenance.artifact_code_version`) is reused, so a re-run does no work; each
configuration's result is the same whether it is computed alone or with others (see
:func:`tensorllm.tucker.tucker_sweep`).

Usage::

    records = decompose_layer("smollm2-135m", layer=15, rank_list=[(64, 32, 4)], out_root="runs/artifacts")
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .activation_fit import Calibration, calibration_set, check_fit, layer_covariances, layer_output_error
from .activation_fit import unweight_u1, weight_tensor, whitening_factor
from .artifact import read_meta, save_artifact, verify_tensors
from .balance import apply_scales, balance_scales, check_balance, fold_unbalance, qk_norm_kind, slice_scales
from .checkpoint import Checkpoint
from .laser import laser_rank, low_rank
from .models import resolve_model
from .provenance import artifact_code_version
from .tensorise import (DEFAULT_GROUPING, Grouping, check_grouping, slice_labels, tensor_shape, tensorise,
                        written_rel_error)
from .tucker import (DECOMPOSED_MODES, DEFAULT_N_ITER_MAX, DEFAULT_TOL, RankSpec, mode_dot, resolve_ranks,
                     solver_settings, tucker_sweep)

log = logging.getLogger(__name__)


@dataclass
class ArtifactRecord:
    """A small, serialisable summary of one artifact (what tasks pass around instead of tensors)."""

    artifact: str
    kind: str
    layer: int
    ranks: list[int] | None
    grouping: str | None
    rel_error: float
    compression_ratio: float
    seconds: float
    reused: bool
    matrix: str | None = None
    rho: float | None = None
    converged: bool | None = None  # HOOI reached ``tol`` within ``n_iter_max`` sweeps (None: LASER, no iterations)
    hooi_iterations: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_slug(name: str) -> str:
    """A filesystem-safe folder name for a model: the name itself for registry names and hub ids, and
    ``<folder name>-<sha256 of the absolute path>[:8]`` for local folders, so two local models that share
    a folder name (``a/model``, ``b/model``) never share artifacts."""
    path = Path(str(name)).expanduser()
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name or str(name)).strip("_") or "model"
    if path.exists():
        import hashlib

        return f"{base}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "model"


def tucker_artifact_dir(out_root: Path, model: str, layer: int, grouping: str, ranks: Sequence[int],
                       mode_suffix: str = "") -> Path:
    r1, r2, r3 = ranks
    return Path(out_root) / model_slug(model) / f"layer{layer:03d}-mha-{grouping}-r{r1}x{r2}x{r3}{mode_suffix}"


def fit_key(balance: str, fit: str, calibration: dict | None) -> dict:
    """What the fit mode adds to an artifact's identity (artifact.json ``fit_key``, compared on reuse)."""
    return {"balance": balance, "fit": fit, "calibration": calibration if fit == "activations" else None}


def _mode_suffix(key: dict) -> str:
    """Folder-name suffix of a non-default fit mode (the paper's fit keeps its historical names)."""
    suffix = "" if key["balance"] == "none" else f"-bal-{key['balance']}"
    if key["fit"] == "activations":
        calib = key["calibration"]
        suffix += f"-act-n{calib['n_prompts']}-{calib['data_sha256'][:8]}"
    return suffix


def decompose_layer(
    model: str,
    layer: int,
    rank_list: Sequence[RankSpec],
    *,
    grouping: Grouping = DEFAULT_GROUPING,
    out_root: str | Path = "runs/artifacts",
    device: str = "cpu",
    n_iter_max: int = DEFAULT_N_ITER_MAX,
    tol: float = DEFAULT_TOL,
    balance: str = "none",
    fit: str = "weights",
    calibration: Calibration | None = None,
    layout: str | None = None,
) -> list[ArtifactRecord]:
    """Decompose the MHA weights of ``layer`` at every rank in ``rank_list``; one artifact each.

    ``layout`` names the attention layout (``None``: detected from the checkpoint's tensors, see
    :mod:`tensorllm.layout_detection`). Rank specs that resolve to the same integers are decomposed once.
    ``rel_error`` is measured on the weights the variant runs with (after any K/V copies are averaged:
    :func:`tensorllm.tensorise.written_rel_error`).

    ``balance`` (:mod:`tensorllm.balance`): ``"none"`` (the paper) or ``"norms"`` (function-preserving
    per-head rescaling before the fit, folded back into the saved cores). ``fit``
    (:mod:`tensorllm.activation_fit`): ``"weights"`` (the paper's Eq. 14) or ``"activations"`` (mode 1
    weighted by the layer's input covariance over ``calibration``'s validation prompts). The artifact's
    factors always reconstruct the unbalanced weights, so every consumer of artifacts works unchanged.
    """
    check_grouping(grouping)
    check_balance(balance)
    check_fit(fit)
    if fit == "activations" and calibration is None:
        raise ValueError("fit='activations' needs a calibration (datasets and number of validation prompts), "
                         "e.g. Calibration(datasets=('qa_wikidata',), n_prompts=128)")
    if not rank_list:
        raise ValueError("rank_list is empty: give at least one (R1, R2, R3)")
    folder = resolve_model(model)
    ckpt = Checkpoint(folder, layout=layout)
    ckpt.check_layer(layer)
    shape = ckpt.shape
    dims = tensor_shape(shape, grouping)
    resolved = [resolve_ranks(r, dims) for r in rank_list]
    digest = ckpt.layer_digest(layer)
    solver = solver_settings(tol, n_iter_max)  # every setting that changes the factors is part of the reuse key
    code = artifact_code_version("tucker_mha", fit)  # the modules that compute it, and torch's version
    calib = calibration_set(calibration) if fit == "activations" else None
    key = fit_key(balance, fit, calib.describe() if calib is not None else None)
    dirs = [tucker_artifact_dir(Path(out_root), model, layer, grouping, r, _mode_suffix(key)) for r in resolved]

    records: dict[int, ArtifactRecord] = {}
    todo: list[int] = []
    for i, (ranks, path) in enumerate(zip(resolved, dirs)):
        existing = _reusable(path, digest, ranks, grouping, solver, code, key)
        if existing is not None:
            records[i] = _record(path, existing, reused=True)
        else:
            todo.append(i)
    # rank specs that resolve to the same integers (0.5 and 288 of d_model 576) are decomposed once
    same_as = {i: next(j for j in todo if tuple(resolved[j]) == tuple(resolved[i])) for i in todo}
    todo = [i for i in todo if same_as[i] == i]
    if todo:
        start = time.perf_counter()
        weights = ckpt.attention(layer)
        source_dtype = str(weights.q.dtype).removeprefix("torch.")
        weights = weights.to(device=device, dtype=torch.float32)
        tensor = tensorise(weights, shape, grouping)
        attention_prefix = ckpt.attention_names(layer)[0].rsplit(".", 2)[0]
        qk_norm = qk_norm_kind(ckpt.weight_map, _norm_shapes(ckpt, attention_prefix), attention_prefix, shape)
        scales = balance_scales(weights, shape, balance, qk_norm)
        fit_tensor = tensorise(apply_scales(weights, scales), shape, grouping) if balance != "none" else tensor
        whitening = cov = None
        if calib is not None:
            cov = layer_covariances(model, [layer], calib, Path(out_root) / model_slug(model) / "calibration")[layer]
            whitening = whitening_factor(cov.cov).to(device)
            fit_tensor = weight_tensor(fit_tensor, whitening)
        read_seconds = time.perf_counter() - start
        results = tucker_sweep(fit_tensor, [resolved[i] for i in todo], n_iter_max=n_iter_max, tol=tol)
        for i, result in zip(todo, results):
            fit_rel_error = result.rel_error  # of the balanced / weighted tensor the solver saw
            u1, u2, u3 = result.factors
            core = result.core
            if whitening is not None:
                u1 = unweight_u1(u1, whitening)
            if balance != "none":
                core, u3 = fold_unbalance(core, u3, slice_scales(scales, shape, grouping))
            approx = core
            for mode, factor in zip(DECOMPOSED_MODES, (u1, u2, u3)):
                approx = mode_dot(approx, factor, mode)
            weight_rel_error = written_rel_error(weights, approx, shape, grouping, original_tensor=tensor)
            fit_meta = {**key, "qk_norm": qk_norm, "fit_rel_error": fit_rel_error}
            if balance != "none":
                fit_meta["scales"] = scales.to_dict()
                fit_meta["folded"] = "U3 is the identity: (G x_3 U3) / scales is stored as the core"
            if cov is not None:
                fit_meta["calibration_tokens"] = cov.n_tokens
                fit_meta["output_rel_error"] = layer_output_error(tensor, approx, cov.cov)
            n_params = result.n_params + (scales.n_values if balance != "none" else 0)
            meta = {
                "kind": "tucker_mha",
                "architecture": ckpt.config.model_type,
                "layout": ckpt.layout.name,
                "layer": layer,
                "ranks": list(result.ranks),
                "grouping": grouping,
                "tensor_shape": list(dims),
                "slice_labels": slice_labels(shape, grouping),
                "attention_shape": asdict(shape),
                "dtype": source_dtype,
                "rel_error": weight_rel_error,
                "fit_rel_error": fit_rel_error,
                "original_params": shape.n_params,
                "compressed_params": n_params,
                "compression_ratio": shape.n_params / n_params,
                "fit_key": key,
                "fit": fit_meta,
                "hooi_iterations": result.n_iter,
                "converged": result.converged,
                "error_history": list(result.error_history),
                "solver": solver,
                "code_version": code,
                "seconds": result.seconds + read_seconds / len(todo),
                "device": str(tensor.device),
                "base_model": {"name": str(model), "folder": str(folder), "layer_sha256": digest},
            }
            tensors = {"U1": u1, "U2": u2, "U3": u3, "core": core}
            save_artifact(dirs[i], meta, {k: v.float() for k, v in tensors.items()})
            records[i] = _record(dirs[i], meta, reused=False)
            log.info("layer %d ranks %s (balance %s, fit %s): rel_error %.4f, CR %.1fx, %.2fs", layer, result.ranks,
                     balance, fit, weight_rel_error, meta["compression_ratio"], meta["seconds"])
            if not result.converged:
                log.warning("layer %d ranks %s: HOOI did not converge in %d sweeps (relative error still changing "
                            "by >= tol=%g; last errors %s); raise n_iter_max or tol", layer, result.ranks,
                            result.n_iter, tol, [round(e, 6) for e in result.error_history[-3:]])
    for i, first in same_as.items():
        records.setdefault(i, records[first])
    return [records[i] for i in range(len(resolved))]


def _norm_shapes(ckpt: Checkpoint, attention_prefix: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the attention module's q/k norm weights, if the checkpoint has them (read from the file)."""
    names = [f"{attention_prefix}.{n}_norm.weight" for n in ("q", "k")]
    present = [n for n in names if n in ckpt.weight_map]
    return {n: tuple(t.shape) for n, t in ckpt.tensors(present).items()} if present else {}


def _reusable(path: Path, digest: str, ranks: Sequence[int], grouping: str, solver: dict, code: str,
              key: dict | None = None) -> dict | None:
    """An existing artifact is reused only when everything that computed it is the same: the layer's
    weights (digest), ranks, grouping, solver settings, fit mode (balance, fit, calibration size and data
    hash: ``fit_key``) and the library's code version; and only when its tensors file still has the sha256
    it was written with (a damaged artifact is recomputed, with a warning)."""
    try:
        meta = read_meta(path)
    except (FileNotFoundError, ValueError):
        return None
    key = key if key is not None else fit_key("none", "weights", None)
    same = (meta.get("base_model", {}).get("layer_sha256") == digest and meta.get("ranks") == list(ranks)
            and meta.get("grouping") == grouping and meta.get("solver") == solver and meta.get("code_version") == code
            and meta.get("fit_key", fit_key("none", "weights", None)) == key)
    if not same:
        return None
    try:
        verify_tensors(path, meta)
    except ValueError as exc:
        log.warning("not reusing %s, recomputing it: %s", path, exc)
        return None
    return meta


def _record(path: Path, meta: dict, reused: bool) -> ArtifactRecord:
    return ArtifactRecord(artifact=str(path), kind=meta["kind"], layer=meta["layer"], ranks=meta.get("ranks"),
                          grouping=meta.get("grouping"), rel_error=meta["rel_error"],
                          compression_ratio=meta["compression_ratio"], seconds=0.0 if reused else meta["seconds"],
                          reused=reused, matrix=meta.get("matrix"), rho=meta.get("rho"),
                          converged=meta.get("converged"), hooi_iterations=meta.get("hooi_iterations"))


def laser_layer(model: str, layer: int, matrix: str, rho: float, *, out_root: str | Path = "runs/artifacts") -> ArtifactRecord:
    """LASER on one FFN matrix (``fc_in``, ``fc_up`` or ``fc_out``) of ``layer``; one artifact."""
    folder = resolve_model(model)
    ckpt = Checkpoint(folder)
    name = ckpt.ffn_name(layer, matrix)
    weight = ckpt.tensors([name])[name]
    rank = laser_rank(tuple(weight.shape), rho)
    path = Path(out_root) / model_slug(model) / f"layer{layer:03d}-laser-{matrix}-rho{rho:g}-rank{rank}"
    digest = _matrix_digest(ckpt, name)
    try:
        meta = read_meta(path)
        if (meta.get("base_model", {}).get("layer_sha256") == digest and meta.get("rho") == rho
                and meta.get("code_version") == artifact_code_version("laser_ffn")):
            try:
                verify_tensors(path, meta)
                return _record(path, meta, reused=True)
            except ValueError as exc:  # damaged: recomputed below, never reused
                log.warning("recomputing %s: %s", path, exc)
    except (FileNotFoundError, ValueError):
        pass
    start = time.perf_counter()
    factors = low_rank(weight, rho)
    meta = {
        "kind": "laser_ffn", "architecture": ckpt.config.model_type, "layer": layer, "matrix": matrix,
        "rho": rho, "rank": factors.rank, "dtype": str(weight.dtype).removeprefix("torch."),
        "rel_error": factors.rel_error, "original_params": weight.numel(), "compressed_params": factors.n_params,
        "compression_ratio": weight.numel() / factors.n_params, "seconds": time.perf_counter() - start,
        "code_version": artifact_code_version("laser_ffn"),
        "base_model": {"name": str(model), "folder": str(folder), "layer_sha256": digest},
    }
    save_artifact(path, meta, {"left": factors.left.float(), "right": factors.right.float()})
    return _record(path, meta, reused=False)


def _matrix_digest(ckpt: Checkpoint, name: str) -> str:
    from .checkpoint import tensors_digest

    return tensors_digest(ckpt.tensors([name]), strip_prefix=ckpt.prefix)
