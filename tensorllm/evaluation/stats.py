"""Pure statistics for evaluation results: Wilson intervals, McNemar's exact test, normal-approximation mean CIs.

No torch, no numpy: these functions take plain Python numbers so they can be tested against values
computed offline (scipy) and reused anywhere (CLI, flows, reports).

* :func:`wilson_interval` -- 95% score interval for a proportion k/n. Unlike the Wald interval it stays
  inside [0, 1] and is sensible for small n and for k = 0 or k = n, which matters here because many
  evaluations use a few hundred examples and accuracies near 0 (HotpotQA on a 135M model).
* :func:`mcnemar_exact` -- two-sided exact McNemar test for paired binary outcomes (base vs variant on the
  same items): a two-sided binomial test of the discordant pairs against p = 1/2.
* :func:`mean_interval` -- mean and its 95% normal-approximation interval (for paired loss differences).
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
