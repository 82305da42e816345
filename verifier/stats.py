"""Small, well-known statistical tools used by several probes.

Kept in one place so that every probe states its null the same way and combines evidence with
methods that are valid when tests are dependent (they are: all layers share one hidden-space
alignment, and neighbouring layers of a model are correlated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: p-values are clipped here: below it, float64 tail approximations stop meaning anything.
P_FLOOR = 1e-300
#: the verdict's default significance (why so small: verifier.verdict); here, in this leaf
#: module, because the MoE probe's per-layer test uses it too
DEFAULT_ALPHA = 1e-6


def empirical_p(observed: float, null: Sequence[float]) -> float:
    """One-sided Monte-Carlo p-value ``(1 + #{null >= observed}) / (K + 1)``.

    Exact under the null when the K null draws and the observation are exchangeable
    (Phipson & Smyth 2010); never zero.
    """
    arr = np.asarray(null, dtype=np.float64)
    return float((1 + np.count_nonzero(arr >= observed)) / (arr.size + 1))


def gaussian_tail_p(observed: float, null: Sequence[float]) -> tuple[float, float]:
    """``(z, p)``: the observation's z-score against ``K`` null draws, and its upper tail under
    the predictive distribution of a new draw from a normal null whose mean and variance were
    estimated from those draws: ``p = T_{K-1}.sf(z / sqrt(1 + 1/K))`` (Student t).

    Used where the statistic is a mean over many units (neurons, tokens, heads), so that its null
    is close to normal, and where Monte-Carlo resolution (1/(K+1)) is too coarse for a verdict
    at small alpha. The plain normal tail would be anti-conservative: with the variance estimated
    from 24 draws, measured rates below 0.01 were 2-3x nominal; the t predictive tail accounts
    for that estimation. Far tails remain an extrapolation, which reports say.
    """
    arr = np.asarray(null, dtype=np.float64)
    k = arr.size
    mu = float(arr.mean())
    sd = float(arr.std(ddof=1)) if k > 1 else 0.0
    sd = max(sd, 1e-12, 1e-6 * abs(mu))
    z = (observed - mu) / sd
    df = max(k - 1, 1)
    return z, max(float(stats.t.sf(z / math.sqrt(1.0 + 1.0 / max(k, 1)), df)), P_FLOOR)


def harmonic_combine(pvalues: Sequence[float]) -> float:
    """Combine p-values of dependent tests: the harmonic mean merged by Vovk & Wang (2020,
    Biometrika 107:791), ``min(1, e ln(n) * n / sum(1/p_i))`` for ``n >= 3``, which is valid
    under *arbitrary* dependence; ``min(1, n * min p)`` (Bonferroni) for ``n <= 2``.

    Unlike the Cauchy combination, a p-value of exactly 1 (a capped, corrected p) cannot cancel
    strong evidence elsewhere, and unlike Fisher's method no independence is assumed.
    """
    ps = np.clip(np.asarray(pvalues, dtype=np.float64), P_FLOOR, 1.0)
    n = ps.size
    if n == 0:
        return 1.0
    if n <= 2:
        return float(min(1.0, n * ps.min()))
    hm = n / float(np.sum(1.0 / ps))
    return float(min(1.0, max(math.e * math.log(n) * hm, P_FLOOR)))


def bonferroni_min(pvalues: Sequence[float]) -> float:
    """``min(1, n * min p)``: valid under any dependence; used where tests are few."""
    ps = list(pvalues)
    return min(1.0, len(ps) * min(ps)) if ps else 1.0


def normal_sf(z: float) -> float:
    """Standard normal upper tail, floored at ``P_FLOOR``."""
    return max(float(stats.norm.sf(z)), P_FLOOR)
