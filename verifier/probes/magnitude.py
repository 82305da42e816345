"""Weights brought to magnitude one by a power of two before a probe squares or multiplies them.

Every probe's statistic is invariant to the overall scale of a weight matrix (cosines, balanced
rows, correlations), but float32 is not: squares and products of circuit factors overflow for
weights near 1e10 and underflow for weights near 1e-19, and a model can be rescaled that far at
no cost to its function (SwiGLU's up and down projections by ``c`` and ``1/c``, anything
before a norm). Overflow gave NaN similarities; underflow gave zeros, and with them a confident
"independent" for a rescaled copy.

Scaling by a power of two is exact in binary floating point: every product, sum, norm and ratio
a probe computes afterwards is the same number times a power of two, so for weights of ordinary
size the statistics are bit for bit those computed without it.
"""

from __future__ import annotations

import torch


def unit_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``x`` times the power of two that brings its largest ``|value|`` into [0.5, 1); ``x``
    itself where that power is 1, where ``x`` is empty or all zero, or where it holds NaN or
    Inf (left for the probe's finiteness check to refuse)."""
    if x.numel() == 0:
        return x
    top = x.detach().abs().amax()
    if not bool(torch.isfinite(top)) or float(top) == 0.0:
        return x
    _, exponent = torch.frexp(top.to(torch.float32))
    shift = int(exponent)
    if shift == 0:
        return x
    return torch.ldexp(x, torch.tensor(-shift, dtype=torch.int32, device=x.device)).to(x.dtype)


__all__ = ["unit_magnitude"]
