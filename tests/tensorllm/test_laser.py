"""LASER rank reduction of one matrix (tensorllm.laser) against the truncated SVD (Eckart-Young)."""

from __future__ import annotations

import math

import pytest
import torch

from tensorllm.laser import laser_rank, low_rank



pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


def matrix(m, n, seed=0, dtype=torch.float32):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape, rho, rank", [
    ((64, 32), 0.1, 3),      # int(3.2)
    ((32, 64), 0.1, 3),      # min(m, n) whichever side is smaller
    ((64, 32), 0.5, 16),
    ((64, 32), 1.0, 32),     # full rank
    ((64, 32), 0.99, 31),    # int() truncates: 31.68 -> 31
    ((64, 32), 0.01, 1),     # int(0.32) = 0 -> at least 1
    ((10, 10), 1, 10),       # the integer 1 is rho = 1
])
def test_laser_rank(shape, rho, rank):
    assert laser_rank(shape, rho) == rank
    assert low_rank(matrix(*shape), rho).rank == rank


@pytest.mark.parametrize("rho", [0, 0.0, -0.1, 1.5, 2, True, False, "0.1", None])
def test_bad_rho(rho):
    with pytest.raises(ValueError, match=r"rho must be a fraction in \(0, 1\] of the matrix's maximum rank"):
        low_rank(matrix(8, 6), rho)


def test_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"LASER reduces a matrix; got a tensor of shape \(2, 3, 4\)"):
        low_rank(torch.zeros(2, 3, 4), 0.5)


@pytest.mark.parametrize("shape, rho", [((40, 24), 0.25), ((24, 40), 0.5), ((30, 30), 0.1)])
def test_equals_truncated_svd(shape, rho):
    w = matrix(*shape, seed=1, dtype=torch.float64)
    factors = low_rank(w, rho)
    r = factors.rank
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    reference = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
    # float64 SVD of the same matrix: agreement to ~1e-14; 1e-10 is generous
    torch.testing.assert_close(factors.reconstruct(), reference, atol=1e-10, rtol=0)
    assert factors.left.shape == (shape[0], r) and factors.right.shape == (r, shape[1])
    assert factors.n_params == r * (shape[0] + shape[1])


@pytest.mark.parametrize("rho", [0.05, 0.3, 0.75])
def test_error_is_eckart_young(rho):
    w = matrix(48, 32, seed=2)
    factors = low_rank(w, rho)
    s = torch.linalg.svdvals(w.double())
    # Eckart-Young: ||W - W_r||_F^2 = sum of the dropped squared singular values
    expected = math.sqrt(float((s[factors.rank:] ** 2).sum() / (s ** 2).sum()))
    assert factors.rel_error == pytest.approx(expected, abs=1e-5)  # fp32 singular values: ~1e-7 relative
    explicit = float(torch.linalg.norm((w - factors.reconstruct()).double()) / torch.linalg.norm(w.double()))
    assert explicit == pytest.approx(expected, abs=1e-5)  # the reconstruction really is the best rank-r one


def test_full_rank_is_exact():
    w = matrix(20, 12, seed=3)
    factors = low_rank(w, 1.0)
    assert factors.rel_error == 0.0  # nothing dropped
    torch.testing.assert_close(factors.reconstruct(), w, atol=1e-5, rtol=0)  # fp32 U S V^T of O(1) entries


def test_best_rank_r_beats_another_rank_r_matrix():
    w = matrix(30, 20, seed=4)
    factors = low_rank(w, 0.2)
    crude = w.clone()
    crude[:, factors.rank:] = 0  # also rank <= r: keep r columns
    assert torch.linalg.norm(w - factors.reconstruct()) < torch.linalg.norm(w - crude)


def test_deterministic():
    w = matrix(64, 32, seed=5)
    a, b = low_rank(w, 0.3), low_rank(w.clone(), 0.3)
    assert torch.equal(a.left, b.left) and torch.equal(a.right, b.right)  # LAPACK SVD on CPU: bit-identical
    assert a.rel_error == b.rel_error


def test_dtypes():
    assert low_rank(matrix(8, 6, dtype=torch.float64), 0.5).left.dtype == torch.float64
    half = low_rank(matrix(8, 6).to(torch.bfloat16), 0.5)
    assert half.left.dtype == torch.float32 and half.right.dtype == torch.float32  # SVD needs fp32 or better
