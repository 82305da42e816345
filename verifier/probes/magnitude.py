"""Weights brought to magnitude one by a power of two before a probe squares or multiplies them.

Every probe's statistic is invariant to the overall scale of a weight matrix (cosines, balanced
rows, correlations), but float32 is not: squares and products of circuit factors overflow for
weights near 1e10 and underflow for weights near 1e-19, and a model can be rescaled that far at
no cost to its function (SwiGLU's up and down projections by ``c`` and ``1/c``, anything
before a norm). Overflow gave NaN similarities; underflow gave zeros, and with them a confident
"independent" for a rescaled copy.

Scaling by a power of two is exact in binary floating point: every product, sum, norm and ratio
a probe computes afterwards is the same number times a power of two. It is applied only outside
``SAFE_SHIFT`` (weights of ordinary size, whose statistics are therefore untouched bit for bit,
and which are spared the copy): the probes multiply at most four weights and sum over at most
``2^14 x 2^14`` terms, which float32 holds for magnitudes within ``2^+-16``.
"""

from __future__ import annotations

import math

import torch

#: largest |value| within 2^+-SAFE_SHIFT: no scaling (see the module docstring)
SAFE_SHIFT = 16


def magnitude_shift(x: torch.Tensor, safe: int = SAFE_SHIFT) -> int:
    """The power of two ``e`` with ``x``'s largest ``|value|`` in ``[2^(e-1), 2^e)`` where that
    lies outside ``2^+-safe``; 0 inside it, and where ``x`` is empty, all zero, or holds
    NaN or Inf (left for the probe's finiteness check). One reading pass (``aminmax``, no
    ``|x|`` copy)."""
    if x.numel() == 0:
        return 0
    lo, hi = torch.aminmax(x.detach())
    top = max(-float(lo), float(hi))
    if not math.isfinite(top) or top == 0.0:
        return 0
    shift = math.frexp(top)[1]
    return shift if abs(shift) > safe else 0


def times_power_of_two(x: torch.Tensor, e: int | torch.Tensor) -> torch.Tensor:
    """``x * 2^e``, exactly, for any ``e`` whose result ``x``'s dtype holds (``e`` an int, or
    a tensor of exponents broadcast against ``x``). The factor ``2^e`` itself is not always a
    float32: weights near 1e-39 need ``e`` near 130, past float32's largest power of two, and
    ``x * 2^e`` then gave ``inf`` everywhere (a function-preserving rescaling refused as "NaN
    weights"). So a large ``e`` is applied as two halves, each exact."""
    if isinstance(e, int):
        if abs(e) <= 120:
            return x * math.ldexp(1.0, e)
        half = e // 2
        return x * math.ldexp(1.0, half) * math.ldexp(1.0, e - half)
    half = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (e - half).to(x.dtype))


def unit_magnitude(x: torch.Tensor, safe: int = SAFE_SHIFT) -> torch.Tensor:
    """``x`` times the power of two that brings its largest ``|value|`` into [0.5, 1) where it
    lies outside ``2^+-safe``; ``x`` itself otherwise (``safe=0``: always, but where it is
    already there)."""
    shift = magnitude_shift(x, safe)
    return times_power_of_two(x, -shift) if shift else x


def unit_magnitude_each(x: torch.Tensor, safe: int = SAFE_SHIFT) -> torch.Tensor:
    """``unit_magnitude`` for each slice ``x[i]`` on its own power of two: the factors of one
    attention head or KV group, which a model can rescale apart from the others (query head
    ``h`` by ``c``, its key group by ``1/c``) by more than one scale for the whole matrix
    leaves float32 room for. ``x`` itself where every slice lies within
    ``2^+-safe``; one reading pass (``aminmax`` per slice)."""
    if x.numel() == 0 or x.dim() < 2:
        return unit_magnitude(x, safe)
    lo, hi = torch.aminmax(x.detach().reshape(x.shape[0], -1), dim=1)
    top = torch.maximum(-lo, hi).to(torch.float32)
    shift = torch.frexp(top).exponent
    # all-zero slices (exponent 0) and NaN or Inf (left for the probe's finiteness check)
    shift = torch.where(torch.isfinite(top) & (shift.abs() > safe), shift, 0)
    if not bool(shift.any()):
        return x
    return times_power_of_two(x, -shift.reshape(-1, *([1] * (x.dim() - 1))))


__all__ = ["SAFE_SHIFT", "magnitude_shift", "times_power_of_two", "unit_magnitude",
           "unit_magnitude_each"]
