"""Pure statistics for evaluation results: Wilson intervals, McNemar's exact test, normal-approximation mean CIs.

No torch, no numpy: these functions take plain Python numbers so they can be tested against values
computed offline (scipy) and reused anywhere (CLI, flows, reports).

* :func:`wilson_interval` -- 95% score interval for a proportion k/n. Unlike the Wald interval it stays
  inside [0, 1] and is sensible for small n and for k = 0 or k = n, which matters here because many
  evaluations use a few hundred examples and accuracies near 0 (HotpotQA on a 135M model).
* :func:`mcnemar_exact` -- two-sided exact McNemar test for paired binary outcomes (base vs variant on the
  same items): a two-sided binomial test of the discordant pairs against p = 1/2.
* :func:`mcnemar_one_sided` -- one-sided exact p-value that the variant is *worse* than the base.
* :func:`mean_interval` -- mean and its 95% normal-approximation interval (for paired differences).
* :func:`normal_p_from_interval` -- two-sided normal p-value of an estimate from its 95% interval.
* :func:`noninferiority_p` -- one-sided p-value that a paired difference is *not* within a margin (the
  null of a non-inferiority test), from the same 95% normal interval the reports show.
* :func:`paired_noninferiority_p` -- the same for paired 0/1 outcomes (accuracy), Tango's score test: its
  level holds better than the normal interval's, and it needs no discordant pair to be defined.
* :func:`holm_adjust` -- Holm-Bonferroni step-down adjusted p-values, for picking the best of many
  variants without the winner's curse (the best of N noisy scores always looks like a gain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: two-sided 95% standard-normal quantile, Phi^-1(0.975) (scipy.stats.norm.ppf(0.975))
Z_95 = 1.959963984540054


def _check_z(z: float) -> None:
    if not (isinstance(z, (int, float)) and math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive finite number (1.96 for 95%), got {z!r}")


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for the proportion ``k / n`` (default 95%).

    Returns ``(nan, nan)`` for ``n == 0`` (no data: no interval), so callers can report an empty
    evaluation without special cases. ``k`` and ``n`` must be integers with ``0 <= k <= n``.
    """
    if isinstance(k, bool) or isinstance(n, bool) or not isinstance(k, int) or not isinstance(n, int):
        raise TypeError(f"k and n must be integers (counts), got k={k!r}, n={n!r}")
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n for a proportion, got k={k}, n={n}")
    _check_z(z)
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp tiny floating-point excursions (k = 0 or k = n give exactly 0 / 1 in exact arithmetic).
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), computed exactly with integers (no overflow, no rounding drift)."""
    if n < 0 or k < 0:
        raise ValueError(f"need n >= 0 and k >= 0, got k={k}, n={n}")
    k = min(k, n)
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    ``b`` = items the base got right and the variant wrong, ``c`` = the reverse (the order does not
    matter: the test is symmetric). Under H0 (no difference) each discordant pair is a fair coin flip,
    so p = min(1, 2 * P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2). With no discordant pairs the
    two models agree on every item and p = 1.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer count of discordant pairs, got {value!r}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))


def binomial_sf_half(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact (integers), so it is 1 for ``k <= 0``."""
    if n < 0:
        raise ValueError(f"need n >= 0, got n={n}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / (1 << n)


def mcnemar_one_sided(b: int, c: int) -> float:
    """One-sided exact p-value for "the variant is worse than the base": P(X >= b), X ~ Binomial(b + c, 1/2).

    ``b`` = items the base got right and the variant wrong, ``c`` = the reverse (the order matters here,
    unlike :func:`mcnemar_exact`). Small values say the variant loses items far more often than it wins
    them. With no discordant pairs p = 1 (no evidence either way).
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer count of discordant pairs, got {value!r}")
    return binomial_sf_half(b, b + c)


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, tuple[float, float]]:
    """Mean of ``values`` and its normal-approximation interval ``mean +- z * s / sqrt(n)`` (s with ddof=1).

    With one value the spread is unknown and the interval is ``(nan, nan)``; with none the mean is nan too.
    Non-finite values are rejected: a NaN loss means a numerical problem upstream, not a data point.
    """
    _check_z(z)
    xs = [float(v) for v in values]
    bad = [v for v in xs if not math.isfinite(v)]
    if bad:
        raise ValueError(f"mean_interval needs finite values; got {len(bad)} non-finite (first: {bad[0]!r})")
    n = len(xs)
    if n == 0:
        return (math.nan, (math.nan, math.nan))
    mean = math.fsum(xs) / n
    if n == 1:
        return (mean, (math.nan, math.nan))
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = z * math.sqrt(var / n)
    return (mean, (mean - half, mean + half))


def normal_p_from_interval(estimate: float, interval: Sequence[float], z: float = Z_95) -> float:
    """Two-sided p-value of H0 "the true value is 0" for an estimate with a normal ``interval``.

    The interval is read as ``estimate +- z * se`` (what :func:`mean_interval` returns), so
    ``se = (high - low) / (2 z)`` and ``p = P(|Z| >= |estimate| / se) = erfc(|estimate| / (se sqrt 2))``.
    This is the Wald test that matches the interval: p < 0.05 exactly when the 95% interval excludes 0.
    A zero-width interval (every paired difference equal) gives p = 0 for a non-zero estimate and 1 for
    zero; an unknown interval (NaN or None, e.g. one item) gives NaN: no evidence, decide accordingly.
    """
    _check_z(z)
    low, high = (math.nan if v is None else float(v) for v in interval)
    estimate = math.nan if estimate is None else float(estimate)
    if not all(math.isfinite(v) for v in (estimate, low, high)):
        return math.nan
    if high < low:
        raise ValueError(f"interval must be (low, high) with low <= high, got ({low}, {high})")
    se = (high - low) / (2 * z)
    if se == 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    return math.erfc(abs(estimate) / (se * math.sqrt(2.0)))


def noninferiority_p(estimate: float, interval: Sequence[float], margin: float, higher_is_better: bool = True,
                     z: float = Z_95) -> float:
    """One-sided p-value of the non-inferiority null "the variant is worse than the base by the margin or more".

    ``estimate`` is the paired difference variant - base and ``interval`` its normal 95% interval (read as
    ``estimate +- z * se``, what :func:`mean_interval` returns). For a higher-is-better quantity (accuracy)
    the null is ``diff <= -margin`` and ``p = P(Z >= (estimate + margin) / se)``; for a lower-is-better one
    (loss) the null is ``diff >= margin`` and ``p = P(Z >= (margin - estimate) / se)``. So ``p <= 0.025``
    exactly when the 95% interval's end on the bad side lies within the margin (the rule the reports
    state), and smaller p-values can be compared with a multiplicity-corrected level (:func:`holm_adjust`).
    A zero-width interval gives 0 when the estimate is strictly inside the margin, else 1; an unknown
    interval (NaN or None, e.g. one item) gives 1: no evidence of non-inferiority.
    """
    _check_z(z)
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    low, high = (math.nan if v is None else float(v) for v in interval)
    estimate = math.nan if estimate is None else float(estimate)
    if not all(math.isfinite(v) for v in (estimate, low, high)):
        return 1.0
    if high < low:
        raise ValueError(f"interval must be (low, high) with low <= high, got ({low}, {high})")
    distance = (estimate + margin) if higher_is_better else (margin - estimate)  # > 0: inside the margin
    se = (high - low) / (2 * z)
    if se == 0.0:
        return 0.0 if distance > 0 else 1.0
    return 0.5 * math.erfc(distance / (se * math.sqrt(2.0)))


def paired_noninferiority_p(b: int, c: int, n: int, margin: float) -> float:
    """One-sided p-value of "the variant's accuracy is lower than the base's by ``margin`` or more" on ``n``
    paired items, ``b`` only the base gets right and ``c`` only the variant: Tango's score test.

    With ``p_b``, ``p_c`` the two discordant cells' probabilities, the difference is ``d = p_c - p_b`` and the
    null's boundary ``d = -margin``. The score statistic ``z = ((c - b) / n + margin) / sqrt(v / n)`` uses the
    variance ``v = p_b + p_c - d^2`` at the *restricted* maximum-likelihood estimate under the null,
    ``p_b = (B + sqrt(B^2 - 8 n b margin (1 + margin))) / (4 n)`` with ``B = b + c + margin (2 n + b - c)``
    (the root of the likelihood equation with ``p_c = p_b - margin >= 0``), and ``p = P(Z >= z)``. With
    ``margin = 0`` it is McNemar's z, ``(c - b) / sqrt(b + c)``. Unlike the interval of the mean difference,
    it stays defined without discordant pairs (8 identical answers are weak evidence, not certainty), and
    its level stays closer to nominal in simulations (Tango 1998; ``bench/promotion_error.py``).

    References
    ----------
    Tango, T. (1998). Equivalence test and confidence interval for the difference in proportions for the
    paired-sample design. Statist. Med. 17, 891-908.
    """
    for name, value in (("b", b), ("c", c), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer count, got {value!r}")
    if b + c > n:
        raise ValueError(f"need b + c <= n (discordant pairs among n items), got b={b}, c={c}, n={n}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 <= margin < 1):
        raise ValueError(f"margin must be in [0, 1) (a difference of proportions), got {margin!r}")
    return _tango_p(b, c, n, margin)


def _tango_p(b: int, c: int, n: int, margin: float) -> float:
    """:func:`paired_noninferiority_p` for any ``-1 < margin < 1`` (a negative margin asks for a gain)."""
    if n == 0:
        return 1.0
    big_b = b + c + margin * (2 * n + b - c)
    p_b = (big_b + math.sqrt(max(0.0, big_b * big_b - 8 * n * b * margin * (1 + margin)))) / (4 * n)
    variance = 2 * p_b - margin - margin * margin  # p_b + p_c - d^2 with p_c = p_b - margin, d = -margin
    distance = (c - b) / n + margin
    if variance <= 0:
        return 0.0 if distance > 0 else 1.0
    return 0.5 * math.erfc(distance / math.sqrt(variance / n) / math.sqrt(2.0))


def paired_score_interval(b: int, c: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% interval of the paired accuracy difference (variant - base) that inverts Tango's score test:
    its lower end is the margin at which :func:`paired_noninferiority_p` equals 0.025 (so a non-inferiority
    decision at one-sided 2.5% is "the lower end is at least -margin"), its upper end the mirror image
    (``b`` and ``c`` swapped). Found by bisection to 1e-9. ``(nan, nan)`` for ``n == 0``."""
    _check_z(z)
    paired_noninferiority_p(b, c, n, 0.0)  # validates the counts
    if n == 0:
        return (math.nan, math.nan)
    level = 0.5 * math.erfc(z / math.sqrt(2.0))

    def lower(b_, c_):
        lo, hi = -(1 - 1e-12), 1 - 1e-12  # the margin m: p(m) decreases from ~1 to ~0 as m grows
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if _tango_p(b_, c_, n, mid) <= level else (mid, hi)
        return -hi

    return (lower(b, c), -lower(c, b))


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th smallest
    is ``max_{j <= i} min(1, (m - j + 1) p_(j))``: the smallest is multiplied by m, the next by m - 1, ...,
    and the running maximum keeps the adjusted values in the same order as the raw ones. Rejecting every
    hypothesis with adjusted p < alpha controls the family-wise error rate at alpha (the chance of *any*
    false discovery among the m comparisons), with no assumption on their dependence.

    References
    ----------
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Statist. 6, 65-70.
    Same values as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``.
    """
    ps = [float(p) for p in pvalues]
    bad = [p for p in ps if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise ValueError(f"p-values must be numbers in [0, 1]; got {bad[0]!r} (treat a missing test as p = 1)")
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted
