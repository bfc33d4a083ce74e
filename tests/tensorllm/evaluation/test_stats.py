"""Statistics against known values (computed offline with scipy 1.x: binomtest(...).proportion_ci('wilson'),
binomtest(...).pvalue, norm.ppf(0.975))."""

import math

import pytest

from tensorllm.evaluation.stats import (Z_95, binomial_cdf_half, binomial_sf_half, holm_adjust, mcnemar_exact,
                                        mcnemar_one_sided, mean_interval, normal_p_from_interval, wilson_interval)


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


def test_binomial_sf_half_and_one_sided_mcnemar():
    assert binomial_sf_half(9, 10) == 11 / 1024  # C(10,9) + C(10,10) = 11 of 2^10 outcomes
    assert binomial_sf_half(0, 10) == 1.0  # X >= 0 always
    assert binomial_sf_half(11, 10) == 0.0  # more successes than trials
    # b = 9 base-only, c = 1 variant-only: P(X >= 9 | 10, 1/2), strong evidence that the variant is worse
    assert mcnemar_one_sided(9, 1) == 11 / 1024
    # the other direction: P(X >= 1 | 10) = 1 - P(X = 0) = 1 - 1/1024, no evidence that it is worse
    assert mcnemar_one_sided(1, 9) == 1023 / 1024
    assert mcnemar_one_sided(0, 0) == 1.0  # no discordant pairs: no evidence
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_one_sided(-1, 2)


def test_holm_adjust_against_a_hand_computed_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    got = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)  # back in the input order
    # capped at 1: 0.6 x 2 = 1.2 -> 1; 0.9 x 1 = 0.9 -> running max 1
    assert holm_adjust([0.6, 0.9]) == [1.0, 1.0]
    assert holm_adjust([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties: both get 2 x 0.02
    assert holm_adjust([0.3]) == [0.3]  # one test: nothing to correct
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm_adjust([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm_adjust([1.5])


def test_normal_p_from_interval():
    # an estimate exactly at the interval's half-width is z = Z_95 standard errors away: p = 0.05
    assert normal_p_from_interval(1.0, (0.0, 2.0)) == pytest.approx(0.05, abs=1e-12)
    assert normal_p_from_interval(-1.0, (-2.0, 0.0)) == pytest.approx(0.05, abs=1e-12)  # two-sided: symmetric
    assert normal_p_from_interval(0.0, (-1.0, 1.0)) == 1.0  # estimate 0: no evidence at all
    assert normal_p_from_interval(0.3, (0.3, 0.3)) == 0.0  # every paired difference equal and non-zero
    assert normal_p_from_interval(0.0, (0.0, 0.0)) == 1.0  # every paired difference 0
    assert math.isnan(normal_p_from_interval(0.2, (None, None)))  # one item: interval unknown
    with pytest.raises(ValueError, match="low <= high"):
        normal_p_from_interval(0.0, (1.0, -1.0))


def test_noninferiority_p_matches_the_interval_rule_and_the_normal_tail():
    from tensorllm.evaluation.stats import noninferiority_p

    # accuracy -0.4 points, 95% interval -1.3..+0.5 (se = 0.9 / (2 * 1.96) = 0.4592 points), margin 2 points:
    # z = (-0.4 + 2) / 0.4592 = 3.484, upper tail 2.47e-4 (scipy.stats.norm.sf(3.484) = 2.470e-4)
    assert noninferiority_p(-0.004, (-0.013, 0.005), 0.02) == pytest.approx(2.470e-4, rel=2e-3)
    # the interval's lower end exactly at -margin: p = 0.025 (the 95% interval rule, one-sided 2.5%)
    assert noninferiority_p(-0.01, (-0.02, 0.0), 0.02) == pytest.approx(0.025, rel=1e-9)
    # loss (lower is better): interval +0.007..+0.013 inside a 0.02 margin; upper end at the margin gives 0.025
    assert noninferiority_p(0.01, (0.0, 0.02), 0.02, higher_is_better=False) == pytest.approx(0.025, rel=1e-9)
    assert noninferiority_p(0.03, (0.02, 0.04), 0.02, higher_is_better=False) > 0.5  # the estimate is beyond it
    assert noninferiority_p(0.0, (0.0, 0.0), 0.02) == 0.0  # every difference 0: certainly inside
    assert noninferiority_p(-0.02, (-0.02, -0.02), 0.02) == 1.0  # exactly at the margin: not inside
    assert noninferiority_p(0.0, (None, None), 0.02) == 1.0  # one item: no evidence
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        noninferiority_p(0.0, (-0.01, 0.01), -0.02)


def _tango_by_brute_force(b: int, c: int, n: int, margin: float) -> float:
    """The score test computed the long way: the restricted MLE of p_b by a fine grid search of the
    likelihood with p_c = p_b - margin, then z and its upper tail (the reference for the closed form)."""
    def loglik(pb):
        pc, rest = pb - margin, 1 - 2 * pb + margin
        return b * math.log(pb) + (c * math.log(pc) if c else 0.0) + (n - b - c) * math.log(rest)
    lo, hi = margin + 1e-12, (1 + margin) / 2 - 1e-12
    grid = [lo + (hi - lo) * i / 200_000 for i in range(1, 200_000)]
    pb = max(grid, key=loglik)
    var = 2 * pb - margin - margin ** 2
    z = ((c - b) / n + margin) / math.sqrt(var / n)
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("b,c,n,margin", [(12, 8, 1000, 0.02), (30, 10, 1000, 0.02), (12, 0, 1000, 0.02),
                                          (3, 9, 400, 0.05)])
def test_paired_noninferiority_p_is_tangos_score_test(b, c, n, margin):
    from tensorllm.evaluation.stats import paired_noninferiority_p

    assert paired_noninferiority_p(b, c, n, margin) == pytest.approx(_tango_by_brute_force(b, c, n, margin), rel=1e-3)


def test_paired_noninferiority_p_special_cases_and_its_interval():
    from tensorllm.evaluation.stats import paired_noninferiority_p, paired_score_interval

    # margin 0: McNemar's z = (c - b) / sqrt(b + c), upper tail
    z = (25 - 10) / math.sqrt(35)
    assert paired_noninferiority_p(10, 25, 1000, 0.0) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-9)
    # no discordant pair on 8 items: z = sqrt(n m / (1 - m)) = 0.404, p = 0.343 -- weak evidence, not certainty
    assert paired_noninferiority_p(0, 0, 8, 0.02) == pytest.approx(0.3431, abs=1e-4)
    assert paired_noninferiority_p(30, 10, 1000, 0.02) == pytest.approx(0.5)  # exactly at the margin
    # the interval inverts the test: p at margin -lower is 0.025; symmetric when b and c swap
    lo, hi = paired_score_interval(12, 0, 1000)
    assert paired_noninferiority_p(12, 0, 1000, -lo) == pytest.approx(0.025, rel=1e-6)
    assert paired_score_interval(0, 12, 1000) == pytest.approx((-hi, -lo))
    assert lo < -0.012 < hi  # it contains the estimate
    with pytest.raises(ValueError, match="need b \\+ c <= n"):
        paired_noninferiority_p(5, 6, 10, 0.02)
    with pytest.raises(ValueError, match=r"margin must be in \[0, 1\)"):
        paired_noninferiority_p(1, 1, 10, 1.0)
