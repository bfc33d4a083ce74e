"""Tucker decomposition with factors shared by all heads (paper Section III-B, Eqs. 9-14), in pure torch.

The 4-D tensor ``W_all`` (d_model, d_head, slices, groups) from :mod:`tensorllm.tensorise` is approximated as

    W_all ~= G_all x_1 U1 x_2 U2 x_3 U3 x_4 I                                        (Eq. 10)

with U1 (d_model x R1), U2 (d_head x R2), U3 (slices x R3) shared by every head and one core
G_i (R1 x R2 x R3) per head (the head mode is not compressed). The objective is Eq. 14,
``min 1/2 || W_all - G_all x_1 U1 x_2 U2 x_3 U3 ||_F^2``, solved by HOOI as in the paper.

Speed (docs/method.md, "What one layer's decomposition costs"): the initialisation is an HOSVD for the small
modes (d_head, slices) and a *sequentially truncated* step for a large d_model, which then sees a
tensor already shrunk by the other factors (:func:`initial_factors`); each leading-subspace step uses
the Gram matrix of the *smaller* side of the unfolding and ``torch.linalg.eigh`` instead of a full SVD. HOOI sweeps then refine the factors until the relative error changes by less
than ``tol``. Everything runs on the tensor's device (CUDA when the tensor is there) and is
deterministic on CPU (eigh is deterministic; column signs are fixed).

TensorLy's ``partial_tucker(W_all, rank=[R1, R2, R3], modes=[0, 1, 2])`` computes the same model and is
the reference implementation in the tests.

Usage::

    result = tucker_decompose(W_all, ranks=(64, 32, 4))
    W_hat = result.reconstruct()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import progress
from .subspace import (DENSE_MAX, SKETCH_SEED, _fix_signs, block_size, exact_block, gram_eigenvectors,
                       leading_left_singular_vectors, subspace_step, uses_subspace_iteration)

log = logging.getLogger(__name__)

RankSpec = Sequence[int | float]
DECOMPOSED_MODES = (0, 1, 2)  # d_model, d_head, slices; mode 3 (heads / KV groups) keeps its identity


@dataclass
class TuckerResult:
    """Factors, cores and quality of one decomposition."""

    core: torch.Tensor  # (R1, R2, R3, groups): G_all, Eq. 12
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # U1, U2, U3
    ranks: tuple[int, int, int]
    rel_error: float  # ||W - W_hat||_F / ||W||_F
    n_iter: int  # HOOI sweeps run after the start (initial_factors)
    converged: bool
    seconds: float
    error_history: tuple[float, ...] = ()  # relative error after the start and after each HOOI sweep

    @property
    def n_params(self) -> int:
        """Parameters stored: the three shared factors plus every head's core (Eq. 10 without I)."""
        return self.core.numel() + sum(u.numel() for u in self.factors)

    def compression_ratio(self, original_params: int) -> float:
        """CR = original MHA parameters of the layer / parameters of factors and cores (paper Section IV-C)."""
        return original_params / self.n_params

    def reconstruct(self) -> torch.Tensor:
        """W_hat = G_all x_1 U1 x_2 U2 x_3 U3 (Eq. 9 for every head at once)."""
        out = self.core
        for mode, factor in zip(DECOMPOSED_MODES, self.factors):
            out = mode_dot(out, factor, mode)
        return out


def mode_dot(tensor: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """The n-mode product ``tensor x_mode matrix`` (Kolda & Bader 2009): ``matrix`` is (J, I_mode).

    Computed as one (batched) GEMM on the tensor viewed as (before, I_mode, after), which needs no
    transposed copy of the input and returns a contiguous tensor (3x faster than moving the mode last on
    a 7B-shaped layer).
    """
    shape = tensor.shape
    before, after = math.prod(shape[:mode]), math.prod(shape[mode + 1:])
    out = torch.matmul(matrix, tensor.reshape(before, shape[mode], after))
    return out.reshape(*shape[:mode], matrix.shape[0], *shape[mode + 1:])


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-n unfolding: (I_mode, product of the other dimensions)."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def resolve_ranks(ranks: RankSpec, dims: Sequence[int], notes: list[str] | None = None) -> tuple[int, int, int]:
    """Integer ranks (R1, R2, R3) from integers or fractions of each dimension, validated.

    ``dims`` is the tensor shape (d_model, d_head, slices, groups). An integer is a rank; a float in
    (0, 1] is a fraction of that dimension (rounded, at least 1). Ranks must satisfy 1 <= R_n <= I_n and
    R_n <= product of the other ranks and the group count (the largest rank a mode can have).

    A rank given as a fraction that exceeds that largest feasible rank is clipped to it (a grid of fractions,
    the default one included, then fits every architecture: e.g. MQA with a large head_dim, where
    ``0.1 * d_head`` can exceed ``groups * R1 * R3``); each clip is logged and appended to ``notes``. A rank
    given as an integer is the user's exact choice and still raises.
    """
    if isinstance(ranks, str) or len(ranks) != 3:
        raise ValueError(f"ranks must be three values (R1, R2, R3) for (d_model, d_head, slices); got {ranks!r}")
    names = ("R1 (d_model)", "R2 (d_head)", "R3 (slices)")
    out = []
    for value, dim, name in zip(ranks, dims[:3], names):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be an integer or a fraction in (0, 1]; got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            if not 0 < value <= 1:
                raise ValueError(f"{name} as a fraction must be in (0, 1]; got {value}")
            value = max(1, int(value * dim + 0.5))  # round half up: 0.5 of 5 -> 3, as a user expects
        elif isinstance(value, float) and value == 1.0:
            value = dim  # 1.0 means the whole dimension
        value = int(value)
        if not 1 <= value <= dim:
            raise ValueError(f"{name}={value} is out of range: allowed 1..{dim} (the dimension's size)")
        out.append(value)
    groups = dims[3]
    fraction = [isinstance(v, float) and not (v.is_integer() and v != 1.0) for v in ranks]
    changed = True
    while changed:  # a clip lowers the other modes' bounds, so check again until nothing moves (ranks only fall)
        changed = False
        for n in range(3):
            bound = groups * math.prod(out[m] for m in range(3) if m != n)
            if out[n] <= bound:
                continue
            if not fraction[n]:
                raise ValueError(
                    f"{names[n]}={out[n]} exceeds {bound} = groups x the other two ranks, the largest rank that mode "
                    f"can have with ranks {tuple(out)}; lower it or raise the other ranks."
                )
            note = (f"{names[n]}: fraction {ranks[n]:g} of {dims[n]} gives {out[n]}, above the largest feasible "
                    f"rank {bound} = groups x the other two ranks; clipped to {bound}")
            log.info("%s (tensor %s)", note, tuple(dims))
            if notes is not None:
                notes.append(note)
            out[n], changed = bound, True
    return tuple(out)


def _project_all_but(tensor: torch.Tensor, factors: Sequence[torch.Tensor], skip: int,
                     cache: dict | None = None, versions: Sequence[int] | None = None) -> torch.Tensor:
    """tensor x_m U_m^T for every decomposed mode m != skip, biggest reduction first (cheapest order).

    With ``cache`` (and the factors' ``versions``), partial products are kept and reused: within one HOOI
    sweep, the updates of the small modes and the core all start with X x_1 U1^T (2 N R1 FLOPs, the largest
    product at moderate ranks), which is then computed once instead of three times.
    """
    order = sorted((m for m in DECOMPOSED_MODES if m != skip),
                   key=lambda m: factors[m].shape[1] / factors[m].shape[0])
    key: tuple = ()
    for mode in order:
        key = key + ((mode, versions[mode] if versions is not None else None),)
        if cache is not None and key in cache:
            tensor = cache[key]
            continue
        tensor = mode_dot(tensor, factors[mode].T, mode)
        if cache is not None:
            cache[key] = tensor
    return tensor


def sum_squares(tensor: torch.Tensor) -> float:
    """||tensor||_F^2 accumulated in float64 across rows (row norms in the tensor's dtype, cascade-summed).

    As accurate as a float64 copy for relative errors, without the copy: on a 7B layer, float64 copies of
    the four 4096 x 4096 matrices made the written-weight error 26% of a decomposition task (23 of 89 s)."""
    rows = tensor.reshape(tensor.shape[0], -1)
    return float(torch.sum(torch.linalg.vector_norm(rows, dim=1).double() ** 2))


def hosvd_bases(tensor: torch.Tensor, full_gram_max: int | None = None) -> dict[int, torch.Tensor]:
    """Every left singular vector of the modes whose HOSVD factor comes from the full tensor.

    They do not depend on the ranks: the rank-R factor is the first R columns (eigh once, columns and
    their signs independent of R), so a rank sweep computes them once and every configuration starts
    exactly where it would alone. Only modes whose unfolding is wide (I_n <= the rest) are listed: there the
    truncation is bitwise identical to a direct call; tall unfoldings go through a QR that is not.
    """
    full_gram_max = DENSE_MAX if full_gram_max is None else full_gram_max
    bases = {}
    for mode in DECOMPOSED_MODES:
        size = tensor.shape[mode]
        if size <= full_gram_max and size <= tensor.numel() // size:
            bases[mode] = leading_left_singular_vectors(unfold(tensor, mode), size)
    return bases


def _update(matrix: torch.Tensor, rank: int, blocks: dict[int, torch.Tensor], mode: int,
            dense_max: int, warm: torch.Tensor | None = None, eigvecs: dict | None = None,
            key: tuple | None = None) -> torch.Tensor:
    """The rank-``rank`` leading left singular vectors of one unfolding: exact, or by subspace iteration.

    Subspace iteration (:func:`uses_subspace_iteration`) takes one step from the block kept in ``blocks``;
    without one, from ``warm`` (a given start, completed to a block with a fixed Gaussian sketch of the
    matrix), or else the block is computed exactly (:func:`exact_block`; with ``eigvecs``, a cache shared by
    the configurations of a sweep, the Gram's eigenvectors are looked up under ``key`` or stored there). The
    block is kept for the next sweep.
    """
    if not uses_subspace_iteration(matrix.shape, rank, dense_max):
        return leading_left_singular_vectors(matrix, rank)
    if mode in blocks:
        block = subspace_step(matrix, blocks[mode])
    elif warm is not None:
        extra = block_size(rank, matrix.shape[0]) - warm.shape[1]
        omega = torch.randn(matrix.shape[1], extra, generator=torch.Generator().manual_seed(SKETCH_SEED),
                            dtype=matrix.dtype).to(matrix.device)
        block = subspace_step(matrix, torch.linalg.qr(torch.cat([warm, matrix @ omega], dim=1))[0])
    elif eigvecs is not None and key is not None:
        if key not in eigvecs:
            eigvecs[key] = gram_eigenvectors(matrix)
        block = exact_block(matrix, rank, eigvecs[key])
    else:
        block = exact_block(matrix, rank)
    blocks[mode] = block
    return _fix_signs(block[:, :rank])


def initial_factors(tensor: torch.Tensor, ranks: Sequence[int], full_gram_max: int | None = None,
                    bases: dict[int, torch.Tensor] | None = None,
                    blocks: dict[int, torch.Tensor] | None = None,
                    eigvecs: dict | None = None) -> list[torch.Tensor]:
    """HOOI's starting factors: HOSVD where it is cheap, sequential truncation where it is not.

    A mode of size I_n <= ``full_gram_max`` gets its HOSVD factor from the *full* tensor (an I_n x I_n
    Gram: cheap for d_head, the slices and small d_model). Larger modes (d_model = 4096 of a 7B layer,
    whose full Gram is the 1e12-FLOP step of a naive HOSVD) are computed sequentially, ST-HOSVD style,
    from the tensor already projected on the other factors, which is also HOOI's first update of that mode;
    when that projected unfolding is still large, its oversampled block (:func:`exact_block`) is left in
    ``blocks`` for the HOOI sweeps to warm-start their subspace iteration from.
    A pure ST-HOSVD start was measured to lead HOOI to worse stationary points on some unstructured
    tensors than TensorLy's HOSVD start; HOSVD on the small modes removes that. ``bases`` (from
    :func:`hosvd_bases`) are truncated instead of recomputed; ``eigvecs`` (a dict shared by a sweep that also
    shares ``bases``) keeps the big modes' Gram eigenvectors keyed by the ranks of the other modes, which are
    all that the projected tensor depends on.
    """
    full_gram_max = DENSE_MAX if full_gram_max is None else full_gram_max  # None: the module's setting
    blocks = {} if blocks is None else blocks
    factors: list[torch.Tensor | None] = [None, None, None]
    by_size = sorted(DECOMPOSED_MODES, key=lambda m: tensor.shape[m])
    for mode in by_size:
        if bases is not None and mode in bases:
            factors[mode] = bases[mode][:, :ranks[mode]]
        elif tensor.shape[mode] <= full_gram_max:
            factors[mode] = leading_left_singular_vectors(unfold(tensor, mode), ranks[mode])
    current = tensor
    for mode in by_size:
        if factors[mode] is not None:
            current = mode_dot(current, factors[mode].T, mode)
    for mode in by_size:
        if factors[mode] is None:
            key = (mode, tuple(ranks[m] for m in DECOMPOSED_MODES if m != mode))
            factors[mode] = _update(unfold(current, mode), ranks[mode], blocks, mode, full_gram_max,
                                    eigvecs=eigvecs if bases is not None else None, key=key)
            current = mode_dot(current, factors[mode].T, mode)
    return factors  # type: ignore[return-value]


def start_solved_mode(dims: Sequence[int]) -> int | None:
    """The mode whose first HOOI update would repeat the start's last step, or None.

    :func:`initial_factors` solves its sequentially truncated (big) modes last, each exactly on the tensor
    projected on every other factor. When the last of them is mode 0 (d_model of a 7B layer), the first sweep's
    first update would solve the same projection again, the other factors being unchanged: for an exact update
    the same answer, for a subspace-iteration step from an exact invariant subspace the same subspace. That
    update is skipped (on a 7B layer at ranks (512, 64, 4): one subspace step, ~1.2 s of one core, ~9% of the run).
    """
    by_size = sorted(DECOMPOSED_MODES, key=lambda m: dims[m])
    sequential = [m for m in by_size if dims[m] > DENSE_MAX]
    return 0 if sequential and sequential[-1] == 0 else None


DEFAULT_TOL = 1e-4  # TensorLy's tolerance: HOOI stops when the relative error changes by less than this
DEFAULT_N_ITER_MAX = 25
FIRST_TEST_SWEEP = 3  # the stopping test starts at the third sweep, as TensorLy's (at least 3 sweeps run)


def solver_settings(tol: float = DEFAULT_TOL, n_iter_max: int = DEFAULT_N_ITER_MAX) -> dict:
    """Everything that determines a decomposition besides the tensor and the ranks (for cache keys)."""
    return {"method": "hooi", "init": "hosvd+st", "tol": tol, "n_iter_max": n_iter_max,
            "first_test_sweep": FIRST_TEST_SWEEP, "big_mode": "exact-start+subspace-iteration",
            "first_sweep": "skips the mode the start just solved",
            "dense_max": DENSE_MAX, "oversampling": "max(16, rank/8)", "sketch_seed": SKETCH_SEED}


def tucker_decompose(
    tensor: torch.Tensor,
    ranks: RankSpec,
    *,
    n_iter_max: int = DEFAULT_N_ITER_MAX,
    tol: float = DEFAULT_TOL,
    init: Sequence[torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    bases: dict[int, torch.Tensor] | None = None,
    eigvecs: dict | None = None,
) -> TuckerResult:
    """Shared-factor Tucker decomposition of a (d_model, d_head, slices, groups) tensor by HOOI.

    Parameters
    ----------
    tensor : the 4-D tensor W_all (Eq. 8 or its GQA grouping); any device, any float dtype.
    ranks : (R1, R2, R3) as integers or fractions of each dimension (see :func:`resolve_ranks`).
    n_iter_max : the most HOOI sweeps after the start.
    tol : stop when the relative error changes by less than this between two sweeps (TensorLy's 1e-4 by
        default), tested from the third sweep on as TensorLy does (so at least ``min(3, n_iter_max)`` sweeps
        run): with subspace iteration on a big mode the first sweeps move in small steps.
    init : factors to start from instead of :func:`initial_factors` (e.g. truncated factors of a larger-rank result).
    dtype : computation dtype; default float32 (float64 stays float64). Half precision (fp16, bf16) is
        upcast: every product accumulates in float32.
    bases : :func:`hosvd_bases` of this tensor, shared by the configurations of a rank sweep.
    eigvecs : a dict shared by the configurations of a rank sweep (with ``bases``): the big modes' Gram
        eigenvectors at the start, reused by configurations whose other ranks are equal (bitwise the same result).

    Returns
    -------
    TuckerResult with the core (R1, R2, R3, groups), the factors and the relative error, all in the
    computation dtype on the tensor's device.

    Notes
    -----
    A mode whose projected unfolding is large (d_model = 4096 at R1 = 512) is updated by one warm-started
    subspace-iteration step per sweep (:func:`subspace_step`) instead of a Gram + dense eigh; smaller ones
    (every mode of SmolLM2 or GPT-2, and d_model at small R2 R3) exactly. Within a sweep the partial products
    are shared (:func:`_project_all_but`). The costs: docs/method.md.

    References
    ----------
    Gu et al., TensorLLM, arXiv 2501.15674, Eqs. 9-14; De Lathauwer et al. 2000 (HOOI);
    Vannieuwenhoven et al. 2012 (ST-HOSVD); Halko, Martinsson & Tropp 2011 (range finder, subspace iteration).
    """
    if tensor.ndim != 4:
        raise ValueError(f"expected a 4-D tensor (d_model, d_head, slices, groups); got shape {tuple(tensor.shape)}")
    if n_iter_max < 0:
        raise ValueError(f"n_iter_max must be >= 0; got {n_iter_max}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0; got {tol}")
    start = time.perf_counter()
    dims = tuple(tensor.shape)
    rank_tuple = resolve_ranks(ranks, dims)
    work_dtype = dtype or (torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    x = tensor.to(work_dtype).contiguous()
    norm2 = sum_squares(x)
    if norm2 == 0.0:
        raise ValueError("cannot decompose an all-zero tensor (its relative error is undefined)")

    blocks: dict[int, torch.Tensor] = {}
    if init is None:
        factors = initial_factors(x, rank_tuple, bases=bases, blocks=blocks, eigvecs=eigvecs)
    else:
        factors = [u[:, :r].to(device=x.device, dtype=work_dtype) for u, r in zip(init, rank_tuple)]

    def rel_error_of(core: torch.Tensor) -> float:
        # orthonormal factors: ||X - X_hat||^2 = ||X||^2 - ||G||^2 (used for the stopping test only)
        return math.sqrt(max(norm2 - float(torch.sum(core.double() ** 2)), 0.0) / norm2)

    core = _project_all_but(x, factors, skip=-1)
    previous = rel_error_of(core)
    history = [previous]
    n_iter, converged = 0, False
    versions = [0, 0, 0]
    fresh = start_solved_mode(dims) if init is None else None
    for n_iter in range(1, n_iter_max + 1):
        cache: dict = {}  # partial products of this sweep, keyed by the factor versions they used
        for mode in DECOMPOSED_MODES:
            if n_iter == 1 and mode == fresh:
                continue  # the start just solved this mode exactly on this very projection (start_solved_mode)
            projected = _project_all_but(x, factors, skip=mode, cache=cache, versions=versions)
            factors[mode] = _update(unfold(projected, mode), rank_tuple[mode], blocks, mode, DENSE_MAX,
                                    warm=factors[mode])
            versions[mode] += 1
        core = _project_all_but(x, factors, skip=-1, cache=cache, versions=versions)
        del cache, projected
        current = rel_error_of(core)
        history.append(current)
        if n_iter >= FIRST_TEST_SWEEP and abs(previous - current) < tol:
            converged = True
            break
        previous = current

    result = TuckerResult(core=core, factors=tuple(factors), ranks=rank_tuple, rel_error=0.0, n_iter=n_iter,
                          converged=converged, seconds=0.0, error_history=tuple(history))
    # The reported error is computed explicitly: the norm identity cancels badly near full rank.
    result.rel_error = math.sqrt(sum_squares(x - result.reconstruct()) / norm2)
    result.seconds = time.perf_counter() - start
    return result


def tucker_sweep(tensor: torch.Tensor, rank_list: Sequence[RankSpec], **kwargs) -> list[TuckerResult]:
    """Decompose one tensor at several ranks; each result is bitwise the one :func:`tucker_decompose` gives
    for that configuration alone (on CPU at a fixed thread count), so an artifact never depends on which
    other ranks shared its call. What is shared is rank-independent: the HOSVD bases of the small modes
    (:func:`hosvd_bases`) and, for a big d_model, the eigenvectors of its start's Gram, which depend only on
    the other modes' ranks (configurations that differ only in R1 share them: one dense eigh instead of one per
    configuration). Results come back in the order of ``rank_list``.
    """
    dims = tuple(tensor.shape)
    resolved = [resolve_ranks(r, dims) for r in rank_list]
    work_dtype = kwargs.get("dtype") or (torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    bases = hosvd_bases(tensor.to(work_dtype))
    eigvecs: dict = {}  # big modes' start eigenvectors, by the other modes' ranks
    results = []
    progress.expect("decompose", len(resolved))
    for ranks in resolved:
        results.append(tucker_decompose(tensor, ranks, bases=bases, eigvecs=eigvecs, **kwargs))
        progress.advance("decompose")  # a bar per rank configuration in `tensorllm decompose`
    return results
