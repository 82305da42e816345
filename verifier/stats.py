"""Small, well-known statistical tools used by several probes.

Kept in one place so that every probe states its null the same way and combines evidence with
a method that is valid when tests are dependent (they are: all layers share one hidden-space
alignment, and neighbouring layers of a model are correlated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: p-values are clipped here: below it, float64 tail approximations stop meaning anything.
P_FLOOR = 1e-300


def empirical_p(observed: float, null: Sequence[float]) -> float:
    """One-sided Monte-Carlo p-value ``(1 + #{null >= observed}) / (K + 1)``.

    Exact under the null when the K null draws and the observation are exchangeable
    (Phipson & Smyth 2010); never zero.
    """
    arr = np.asarray(null, dtype=np.float64)
    return float((1 + np.count_nonzero(arr >= observed)) / (arr.size + 1))


def gaussian_tail_p(observed: float, null: Sequence[float]) -> tuple[float, float]:
    """``(z, p)``: the observation's z-score against the null draws and its normal upper tail.

    Used where the statistic is a mean over many units (neurons, tokens), so that its null is
    close to normal, and where Monte-Carlo resolution (1/(K+1)) is too coarse for a verdict at
    small alpha. The tail beyond the draws is an extrapolation: reports say so.
    """
    arr = np.asarray(null, dtype=np.float64)
    mu = float(arr.mean())
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    sd = max(sd, 1e-12, 1e-6 * abs(mu))
    z = (observed - mu) / sd
    return z, max(float(stats.norm.sf(z)), P_FLOOR)


def cauchy_combine(pvalues: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Cauchy combination test (Liu & Xie 2020, JASA 115:393).

    ``T = sum_i w_i tan((1/2 - p_i) pi)`` with weights summing to one; under the null ``T`` is
    approximately standard Cauchy whatever the dependence between the tests, so the combined
    p-value ``1/2 - arctan(T)/pi`` stays valid for correlated layers. For tiny p the tangent is
    evaluated as ``1/(p pi)`` to keep precision.
    """
    ps = np.clip(np.asarray(pvalues, dtype=np.float64), P_FLOOR, 1.0)
    if ps.size == 0:
        return 1.0
    w = np.full(ps.size, 1.0 / ps.size) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    terms = np.where(ps < 1e-15, 1.0 / (ps * math.pi), np.tan((0.5 - ps) * math.pi))
    t = float(np.sum(w * terms))
    return float(min(1.0, max(stats.cauchy.sf(t), P_FLOOR)))


def bonferroni_min(pvalues: Sequence[float]) -> float:
    """``min(1, n * min p)``: valid under any dependence; used where tests are few."""
    ps = list(pvalues)
    return min(1.0, len(ps) * min(ps)) if ps else 1.0


def normal_sf(z: float) -> float:
    """Standard normal upper tail, floored at ``P_FLOOR``."""
    return max(float(stats.norm.sf(z)), P_FLOOR)
