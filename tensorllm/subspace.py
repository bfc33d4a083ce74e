"""Leading subspaces of a matrix, the linear algebra under every HOOI step (paper Eq. 14's updates).

A Tucker factor is the leading left singular subspace of an unfolding. Here it is computed from the Gram
matrix of the unfolding's *smaller* side with ``torch.linalg.eigh`` (exact, deterministic on CPU, signs fixed),
or, for a wide side past :data:`DENSE_MAX`, refined from the previous sweep's factor by one step of block
subspace iteration with a Rayleigh-Ritz rotation (no d_model x d_model eigh per sweep). :mod:`tensorllm.tucker`
drives these; docs/method.md ("What one layer's decomposition costs") has the measured costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _fix_signs(left: torch.Tensor) -> torch.Tensor:
    """Each column's entry of largest magnitude made positive: reproducible across runs and devices."""
    pivot = left.abs().argmax(dim=0)
    signs = torch.sign(left[pivot, torch.arange(left.shape[1], device=left.device)])
    signs[signs == 0] = 1
    return left * signs


GRAM_BLOCK = 512  # row block of :func:`gram`; Grams at most this wide are one plain GEMM


def gram(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix @ matrix.T`` with its lower triangle filled, which is all ``torch.linalg.eigh`` reads.

    A wide Gram is computed by block columns below the diagonal (one GEMM per block of ``GRAM_BLOCK`` rows), which
    skips ~44% of the FLOPs of the full product: on the start of a 7B layer at ranks (512, 64, 4), a 4096 x 8192
    unfolding, 1.5e11 instead of 2.7e11 FLOPs (1.0 s instead of 1.7 s of one core). Above the diagonal blocks
    the result is left zero (never read); the lower triangle equals the full product's.
    """
    m = matrix.shape[0]
    if m <= 2 * GRAM_BLOCK:
        return matrix @ matrix.T
    out = torch.zeros(m, m, dtype=matrix.dtype, device=matrix.device)
    for start in range(0, m, GRAM_BLOCK):
        stop = min(m, start + GRAM_BLOCK)
        out[start:, start:stop] = matrix[start:] @ matrix[start:stop].T
    return out


def leading_left_singular_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` left singular vectors of ``matrix`` (m x n) via the Gram of its smaller side + eigh.

    m <= n: eigenvectors of A A^T. m > n: eigenvectors V of A^T A, then an orthonormal basis of A V
    (QR; equal to A V diag(1/sigma) up to signs). Signs are fixed so that each column's entry of largest
    magnitude is positive, which makes results reproducible across runs and devices.
    """
    m, n = matrix.shape
    if m <= n:
        _, vectors = torch.linalg.eigh(gram(matrix))
        left = vectors[:, -rank:].flip(-1)
    else:
        _, vectors = torch.linalg.eigh(gram(matrix.T))
        left, _ = torch.linalg.qr(matrix @ vectors[:, -rank:].flip(-1))
    return _fix_signs(left)


# ---- the big mode (d_model of a 7B layer): one exact solve, then warm-started subspace iteration -----------
DENSE_MAX = 1024  # an unfolding whose short side is at most this is solved exactly (Gram + eigh) every sweep
SKETCH_SEED = 20250126  # the Gaussian columns that complete a given start to a block: fixed, so reproducible


def block_size(rank: int, size: int) -> int:
    """Columns of the subspace-iteration block: the rank plus oversampling max(16, rank / 8), at most ``size``."""
    return min(size, rank + max(16, rank // 8))


def uses_subspace_iteration(shape: Sequence[int], rank: int, dense_max: int | None = None) -> bool:
    """Whether the HOOI sweeps update this (m x n) unfolding's leading subspace by subspace iteration.

    The exact route costs a Gram of the short side (2 short^2 long FLOPs) plus a dense eigh of short^3 order:
    for d_model = 4096 at ranks (512, 64, 4), 2.7e11 FLOPs + a 4096^2 eigh, ~11 s of one core, every sweep.
    One subspace-iteration step costs ~6 m n k with k = :func:`block_size` (~1.7 s there). It is used when the
    short side is larger than ``dense_max`` and the block is at most half of it.
    """
    dense_max = DENSE_MAX if dense_max is None else dense_max
    short = min(shape)
    return short > dense_max and 2 * block_size(rank, shape[0]) <= short


def exact_block(matrix: torch.Tensor, rank: int, eigvecs: torch.Tensor | None = None) -> torch.Tensor:
    """The top :func:`block_size` left singular vectors of ``matrix`` (Gram of the short side + eigh), sorted.

    ``eigvecs``: that Gram's eigenvectors, largest first (:func:`gram_eigenvectors`), when already computed.
    """
    k = block_size(rank, matrix.shape[0])
    vectors = gram_eigenvectors(matrix) if eigvecs is None else eigvecs
    if matrix.shape[0] <= matrix.shape[1]:
        return vectors[:, :k]
    return torch.linalg.qr(matrix @ vectors[:, :k])[0]


def gram_eigenvectors(matrix: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the Gram of the short side of ``matrix`` (A A^T or A^T A), largest eigenvalue first.

    They do not depend on the rank of the mode: in a rank sweep, configurations that differ only in that
    rank share them (:func:`tucker_sweep`), which saves the dense eigh, the one expensive step of a big mode.
    """
    m, n = matrix.shape
    _, vectors = torch.linalg.eigh(gram(matrix if m <= n else matrix.T))
    return vectors.flip(-1)


def _ritz(matrix: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """Rayleigh-Ritz: the orthonormal ``block`` rotated to the best approximations, within its span, of the
    leading left singular vectors of ``matrix``, sorted by decreasing singular value."""
    projected = matrix.T @ block  # n x k
    _, vectors = torch.linalg.eigh(projected.T @ projected)  # k x k: block^T A A^T block
    return block @ vectors.flip(-1)


def subspace_step(matrix: torch.Tensor, block: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """``steps`` of block power (subspace) iteration on A A^T from an orthonormal ``block``, then Rayleigh-Ritz.

    In HOOI the block of the previous sweep is the start (warm start): the projected tensor changes little
    between sweeps, and a step never lowers the captured energy ||A^T U||_F (subspace iteration on a positive
    semi-definite matrix is monotone), so the error history stays non-increasing. No m x m matrix is formed
    and no m x m eigenproblem is solved (Halko, Martinsson & Tropp 2011, Alg. 4.4).

    Why not a randomized start too: on an unstructured (Gaussian) 7B-shaped layer, whose spectrum is flat,
    a randomized range finder (q = 2) started 7e-3 above the exact start's error and a block Krylov start
    (depth 3) 3e-4 above it, at ~80% of the exact solve's cost; the issue's accuracy bar is 1e-4. So the
    first update of a big mode is exact (:func:`exact_block`) and only the sweeps iterate.
    """
    for _ in range(steps):
        block, _ = torch.linalg.qr(matrix @ (matrix.T @ block))
    return _ritz(matrix, block)


# ---- projections ----------------------------------------------------------------------------------------
