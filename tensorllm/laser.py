"""LASER: rank reduction of one FFN matrix (Sharma, Ash, Misra, arXiv 2312.13558).

The paper's baseline (TensorLLM Table III, Case 1) and, together with the MHA decomposition, its
combined method (Case 3). One intervention keeps a fraction ``rho`` of the matrix's maximum rank:
``rank = max(1, int(min(m, n) * rho))`` and ``W_hat = U_r diag(S_r) V_r^T``.

LASER's code uses the randomised ``torch.svd_lowrank(niter=2)``, so its results vary run to run; this
implementation uses the exact, deterministic ``torch.linalg.svd`` (fp32 or better).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LowRankFactors:
    """W_hat = left @ right with left = U_r diag(S_r) (m x r) and right = V_r^T (r x n)."""

    left: torch.Tensor
    right: torch.Tensor
    rank: int
    rel_error: float

    def reconstruct(self) -> torch.Tensor:
        return self.left @ self.right

    @property
    def n_params(self) -> int:
        return self.left.numel() + self.right.numel()


def laser_rank(shape: tuple[int, int], rho: float) -> int:
    """The rank LASER keeps for a fraction ``rho`` in (0, 1] of the maximum rank."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        raise ValueError(f"rho must be a fraction in (0, 1] of the matrix's maximum rank; got {rho!r}")
    return max(1, int(min(shape) * rho))


def low_rank(weight: torch.Tensor, rho: float) -> LowRankFactors:
    """Best rank-r approximation (Eckart-Young) of ``weight`` with r = :func:`laser_rank`."""
    if weight.ndim != 2:
        raise ValueError(f"LASER reduces a matrix; got a tensor of shape {tuple(weight.shape)}")
    rank = laser_rank(tuple(weight.shape), rho)
    work = weight.to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    left = u[:, :rank] * s[:rank]
    right = vh[:rank]
    rel_error = float(torch.sqrt(torch.sum(s[rank:].double() ** 2) / torch.sum(s.double() ** 2)))
    return LowRankFactors(left=left, right=right, rank=rank, rel_error=rel_error)
