"""Tucker decomposition with factors shared by all heads (paper Section III-B, Eqs. 9-14), in pure torch.

The 4-D tensor ``W_all`` (d_model, d_head, slices, groups) from :mod:`tensorllm.tensorise` is approximated as

    W_all ~= G_all x_1 U1 x_2 U2 x_3 U3 x_4 I                                        (Eq. 10)

with U1 (d_model x R1), U2 (d_head x R2), U3 (slices x R3) shared by every head and one core
G_i (R1 x R2 x R3) per head (the head mode is not compressed). The objective is Eq. 14,
``min 1/2 || W_all - G_all x_1 U1 x_2 U2 x_3 U3 ||_F^2``, solved by HOOI as in the paper.

Speed (see notes/peers-and-performance.md section 4): the initialisation is an HOSVD for the small
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

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

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
    """The n-mode product ``tensor x_mode matrix`` (Kolda & Bader 2009): ``matrix`` is (J, I_mode)."""
    moved = tensor.movedim(mode, -1)
    return (moved @ matrix.T).movedim(-1, mode)


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-n unfolding: (I_mode, product of the other dimensions)."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def resolve_ranks(ranks: RankSpec, dims: Sequence[int]) -> tuple[int, int, int]:
    """Integer ranks (R1, R2, R3) from integers or fractions of each dimension, validated.

    ``dims`` is the tensor shape (d_model, d_head, slices, groups). An integer is a rank; a float in
    (0, 1] is a fraction of that dimension (rounded, at least 1). Ranks must satisfy 1 <= R_n <= I_n and
    R_n <= product of the other ranks and the group count (the largest rank a mode can have).
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
    for n in range(3):
        bound = groups * math.prod(out[m] for m in range(3) if m != n)
        if out[n] > bound:
            raise ValueError(
                f"{names[n]}={out[n]} exceeds {bound} = groups x the other two ranks, the largest rank that mode "
                f"can have with ranks {tuple(out)}; lower it or raise the other ranks."
            )
    return tuple(out)


def leading_left_singular_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` left singular vectors of ``matrix`` (m x n) via the Gram of its smaller side + eigh.

    m <= n: eigenvectors of A A^T. m > n: eigenvectors V of A^T A, then an orthonormal basis of A V
    (QR; equal to A V diag(1/sigma) up to signs). Signs are fixed so that each column's entry of largest
    magnitude is positive, which makes results reproducible across runs and devices.
    """
    m, n = matrix.shape
    if m <= n:
        _, vectors = torch.linalg.eigh(matrix @ matrix.T)
        left = vectors[:, -rank:].flip(-1)
    else:
        _, vectors = torch.linalg.eigh(matrix.T @ matrix)
        left, _ = torch.linalg.qr(matrix @ vectors[:, -rank:].flip(-1))
    pivot = left.abs().argmax(dim=0)
    signs = torch.sign(left[pivot, torch.arange(rank, device=left.device)])
    signs[signs == 0] = 1
    return left * signs


def _project_all_but(tensor: torch.Tensor, factors: Sequence[torch.Tensor], skip: int) -> torch.Tensor:
    """tensor x_m U_m^T for every decomposed mode m != skip, biggest reduction first (cheapest order)."""
    order = sorted((m for m in DECOMPOSED_MODES if m != skip),
                   key=lambda m: factors[m].shape[1] / factors[m].shape[0])
    for mode in order:
        tensor = mode_dot(tensor, factors[mode].T, mode)
    return tensor


def hosvd_bases(tensor: torch.Tensor, full_gram_max: int = 1024) -> dict[int, torch.Tensor]:
    """Every left singular vector of the modes whose HOSVD factor comes from the full tensor.

    They do not depend on the ranks: the rank-R factor is the first R columns (eigh once, columns and
    their signs independent of R), so a rank sweep computes them once and every configuration starts
    exactly where it would alone. Only modes whose unfolding is wide (I_n <= the rest) are listed: there the
    truncation is bitwise identical to a direct call; tall unfoldings go through a QR that is not.
    """
    bases = {}
    for mode in DECOMPOSED_MODES:
        size = tensor.shape[mode]
        if size <= full_gram_max and size <= tensor.numel() // size:
            bases[mode] = leading_left_singular_vectors(unfold(tensor, mode), size)
    return bases


def initial_factors(tensor: torch.Tensor, ranks: Sequence[int], full_gram_max: int = 1024,
                    bases: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """HOOI's starting factors: HOSVD where it is cheap, sequential truncation where it is not.

    A mode of size I_n <= ``full_gram_max`` gets its HOSVD factor from the *full* tensor (an I_n x I_n
    Gram: cheap for d_head, the slices and small d_model). Larger modes (d_model = 4096 of a 7B layer,
    whose full Gram is the 1e12-FLOP step of a naive HOSVD) are computed sequentially, ST-HOSVD style,
    from the tensor already projected on the other factors, which is also HOOI's first update of that mode.
    A pure ST-HOSVD start was measured to lead HOOI to worse stationary points on some unstructured
    tensors than TensorLy's HOSVD start; HOSVD on the small modes removes that. ``bases`` (from
    :func:`hosvd_bases`) are truncated instead of recomputed.
    """
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
            factors[mode] = leading_left_singular_vectors(unfold(current, mode), ranks[mode])
            current = mode_dot(current, factors[mode].T, mode)
    return factors  # type: ignore[return-value]


def tucker_decompose(
    tensor: torch.Tensor,
    ranks: RankSpec,
    *,
    n_iter_max: int = 25,
    tol: float = 1e-6,
    init: Sequence[torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    bases: dict[int, torch.Tensor] | None = None,
) -> TuckerResult:
    """Shared-factor Tucker decomposition of a (d_model, d_head, slices, groups) tensor by HOOI.

    Parameters
    ----------
    tensor : the 4-D tensor W_all (Eq. 8 or its GQA grouping); any device.
    ranks : (R1, R2, R3) as integers or fractions of each dimension (see :func:`resolve_ranks`).
    n_iter_max : the most HOOI sweeps after the start.
    tol : stop when the relative error changes by less than this between sweeps (TensorLy uses 1e-4).
    init : factors to start from instead of :func:`initial_factors` (e.g. truncated factors of a larger-rank result).
    dtype : computation dtype; default float32 (float64 stays float64). Half precision is upcast.
    bases : :func:`hosvd_bases` of this tensor, shared by the configurations of a rank sweep.

    Returns
    -------
    TuckerResult with the core (R1, R2, R3, groups), the factors and the relative error, all in the
    computation dtype on the tensor's device.

    References
    ----------
    Gu et al., TensorLLM, arXiv 2501.15674, Eqs. 9-14; De Lathauwer et al. 2000 (HOOI);
    Vannieuwenhoven et al. 2012 (ST-HOSVD).
    """
    if tensor.ndim != 4:
        raise ValueError(f"expected a 4-D tensor (d_model, d_head, slices, groups); got shape {tuple(tensor.shape)}")
    start = time.perf_counter()
    dims = tuple(tensor.shape)
    rank_tuple = resolve_ranks(ranks, dims)
    work_dtype = dtype or (torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    x = tensor.to(work_dtype)
    norm2 = float(torch.sum(x.double() ** 2))
    if norm2 == 0.0:
        raise ValueError("cannot decompose an all-zero tensor (its relative error is undefined)")

    if init is None:
        factors = initial_factors(x, rank_tuple, bases=bases)
    else:
        factors = [u[:, :r].to(device=x.device, dtype=work_dtype) for u, r in zip(init, rank_tuple)]

    def rel_error_of(core: torch.Tensor) -> float:
        # orthonormal factors: ||X - X_hat||^2 = ||X||^2 - ||G||^2 (used for the stopping test only)
        return math.sqrt(max(norm2 - float(torch.sum(core.double() ** 2)), 0.0) / norm2)

    core = _project_all_but(x, factors, skip=-1)
    previous = rel_error_of(core)
    history = [previous]
    n_iter, converged = 0, False
    for n_iter in range(1, n_iter_max + 1):
        for mode in DECOMPOSED_MODES:
            projected = _project_all_but(x, factors, skip=mode)
            factors[mode] = leading_left_singular_vectors(unfold(projected, mode), rank_tuple[mode])
        core = _project_all_but(x, factors, skip=-1)
        current = rel_error_of(core)
        history.append(current)
        if abs(previous - current) < tol:
            converged = True
            break
        previous = current

    result = TuckerResult(core=core, factors=tuple(factors), ranks=rank_tuple, rel_error=0.0, n_iter=n_iter,
                          converged=converged, seconds=0.0, error_history=tuple(history))
    # The reported error is computed explicitly: the norm identity cancels badly near full rank.
    residual = torch.linalg.vector_norm((x - result.reconstruct()).double())
    result.rel_error = float(residual / math.sqrt(norm2))
    result.seconds = time.perf_counter() - start
    return result


def tucker_sweep(tensor: torch.Tensor, rank_list: Sequence[RankSpec], **kwargs) -> list[TuckerResult]:
    """Decompose one tensor at several ranks; each result is bitwise the one :func:`tucker_decompose` gives
    for that configuration alone (on CPU at a fixed thread count), so an artifact never depends on which
    other ranks shared its call. What is shared is rank-independent: the HOSVD bases of the small modes
    (:func:`hosvd_bases`). Results come back in the order of ``rank_list``.
    """
    dims = tuple(tensor.shape)
    resolved = [resolve_ranks(r, dims) for r in rank_list]
    work_dtype = kwargs.get("dtype") or (torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    bases = hosvd_bases(tensor.to(work_dtype))
    return [tucker_decompose(tensor, ranks, bases=bases, **kwargs) for ranks in resolved]
