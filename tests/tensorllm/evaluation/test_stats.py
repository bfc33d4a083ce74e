"""Statistics against known values (computed offline with scipy 1.x: binomtest(...).proportion_ci('wilson'),
binomtest(...).pvalue, norm.ppf(0.975))."""

import math

import pytest

from tensorllm.evaluation.stats import Z_95, binomial_cdf_half, mcnemar_exact, mean_interval, wilson_interval


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (8, 10, 0.4901624715366418, 0.9433178485456248),  # scipy wilson CI for 8/10 (the textbook case)
        (0, 10, 0.0, 0.27753279986288926),  # k = 0: lower bound exactly 0
        (10, 10, 0.7224672001371109, 1.0),  # k = n: upper bound exactly 1
        (50, 100, 0.4038315303659956, 0.5961684696340044),  # symmetric around 0.5
        (1, 3, 0.06149194472039626, 0.7923403991979523),  # small n
    ],
)
def test_wilson_interval_matches_scipy(k, n, low, high):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=1e-12)
    assert got[1] == pytest.approx(high, abs=1e-12)


def test_wilson_interval_empty_and_bad_input():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))  # no data: no interval
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(TypeError, match="integers"):
        wilson_interval(0.5, 10)
    with pytest.raises(ValueError, match="z must be"):
        wilson_interval(1, 2, z=-1)


@pytest.mark.parametrize(
    "b, c, p",
    [
        (1, 9, 0.021484375),  # = 2 * 11/1024: P(X<=1), X ~ Bin(10, 1/2), doubled
        (9, 1, 0.021484375),  # symmetric in b, c
        (3, 20, 0.00048828125),  # scipy binomtest(3, 23).pvalue
        (10, 30, 0.0022214337732293643),  # scipy binomtest(10, 40).pvalue
        (0, 4, 0.125),  # 2 * (1/2)^4
        (5, 5, 1.0),  # balanced discordance: capped at 1
        (0, 0, 1.0),  # no discordant pairs: models agree everywhere
    ],
)
def test_mcnemar_exact_matches_scipy(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_bad_counts():
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_exact(-1, 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_exact(1.5, 3)


def test_binomial_cdf_half_exact():
    assert binomial_cdf_half(1, 10) == 11 / 1024  # C(10,0) + C(10,1) = 11 of 2^10 outcomes
    assert binomial_cdf_half(2000, 2000) == 1.0  # large n stays exact (integer arithmetic)


def test_mean_interval_matches_scipy():
    values = [0.5, -0.2, 0.3, 0.1, 0.9, -0.4]
    mean, (low, high) = mean_interval(values)
    assert mean == pytest.approx(0.2, abs=1e-15)  # (0.5-0.2+0.3+0.1+0.9-0.4)/6
    # numpy: mean -/+ norm.ppf(0.975) * std(ddof=1) / sqrt(6)
    assert low == pytest.approx(-0.17870102011910047, abs=1e-12)
    assert high == pytest.approx(0.5787010201191005, abs=1e-12)
    assert Z_95 == pytest.approx(1.959963984540054, abs=1e-15)  # scipy norm.ppf(0.975)


def test_mean_interval_edge_cases():
    assert math.isnan(mean_interval([])[0])
    mean, ci = mean_interval([2.0])
    assert mean == 2.0 and all(math.isnan(x) for x in ci)  # one value: spread unknown
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")])
