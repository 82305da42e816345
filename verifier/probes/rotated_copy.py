"""Guard: a candidate whose embeddings are the base's turned by a rotation of the hidden space.

A transformer with RMSNorm keeps its function when the norm gains are folded into the matrices
they feed and the residual stream is turned by any orthogonal ``Q`` (embeddings ``E Q``, readers
``W Q``, writers ``Q^T W``): QuaRot and SpinQuant do exactly this before quantising, and a vendor
can do it to hide a copy. The probes undo signed permutations and per-coordinate scales, not
rotations; their null *is* a random rotation of the base (``docs/method.md`` §3), so a rotated
copy looks to them like an independent model, and was called independent.

What a rotation cannot hide is the geometry of the tokens: the inner products between token
embeddings, ``E Q (E Q)^T = E E^T``. This module measures how well the two models' token Gram
matrices agree (the correlation of their off-diagonal entries over a sample of shared tokens;
the diagonal is left out, as it dominates, and inflates the agreement of unrelated models, when
the hidden size exceeds the sample) and compares it with the agreement a copy of the base keeps
under Gaussian noise of ``COPY_NOISE`` of its scale, simulated on the base itself. A candidate
that agrees at least as well is a rotated copy, up to quantisation.

There is no null here: under independence the agreement has no known distribution, so the guard
never convicts. It only keeps the verdict from saying "independent" (``verifier.verdict``):
the pair is then inconclusive, with the reason. A rotated derivative that was also trained on
drifts below the copy level and is not caught (``docs/method.md``, limits).
"""

from __future__ import annotations

import numpy as np
import torch

from backends.compute import Compute
from verifier.probes.magnitude import unit_magnitude
from verifier.seeds import COPY_NOISE_STREAM, torch_generator

#: shared tokens whose Gram matrices are compared (sampled evenly): the products cost
#: ``2 * GRAM_TOKENS^2 * d`` flops (8.6 GFLOP at d = 4096)
GRAM_TOKENS = 1024
#: relative noise of the simulated copy, set beyond what 4-bit quantisation leaves: the zoo's
#: rotated copy with its embeddings rounded to int4 (round-to-nearest, a scale per group of 16
#: or 64) agrees at 0.994 and 0.991, a tenth of the scale as noise at 0.992, a fifth at 0.969
#: (0.996 and 0.987 while the noise came from the stream that initialised the zoo base, which it
#: then partly repeated: ``verifier.seeds``)
COPY_NOISE = 0.2
#: fewer shared tokens than this and the agreement is not measured
MIN_TOKENS = 16
#: keys of the hidden alignment probe's ``details`` that carry the measurement
AGREEMENT, COPY_LEVEL = "gram_agreement", "rotated_copy_level"


def _sample(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    rows = torch.linspace(0, n - 1, min(n, GRAM_TOKENS)).round().long().to(x.device)
    x = unit_magnitude(x.index_select(0, rows).to(torch.float32))
    return x - x.mean(dim=0, keepdim=True)


def _off_diagonal(x: torch.Tensor) -> np.ndarray:
    gram = Compute.numpy64(x @ x.T)
    return gram[np.triu_indices(gram.shape[0], k=1)]


def _agreement(gx: np.ndarray, gy: np.ndarray) -> float:
    gx, gy = gx - gx.mean(), gy - gy.mean()
    denom = float(np.linalg.norm(gx) * np.linalg.norm(gy))
    return float(gx @ gy) / denom if denom > 0 else 0.0


def measure(base: torch.Tensor, cand: torch.Tensor) -> dict[str, float] | None:
    """``{AGREEMENT: a, COPY_LEVEL: c}`` for the shared-token embeddings ``base`` ``[n, d_b]``
    and ``cand`` ``[n, d_c]`` (same token order; the widths may differ), or None when they
    share fewer than ``MIN_TOKENS`` tokens. A rotated copy has ``a >= c``."""
    if base.shape[0] < MIN_TOKENS or base.shape[0] != cand.shape[0]:
        return None
    xb, xc = _sample(base), _sample(cand)
    gb = _off_diagonal(xb)
    # the copy's noise is drawn on the CPU from a fixed stream: the same level on every device
    gen = torch_generator(0, COPY_NOISE_STREAM)
    noise = torch.randn(xb.shape, generator=gen).to(xb.device)
    scale = float(xb.square().mean().sqrt())
    copy = xb + noise * (COPY_NOISE * scale)
    copy = copy - copy.mean(dim=0, keepdim=True)
    return {AGREEMENT: _agreement(gb, _off_diagonal(xc)),
            COPY_LEVEL: _agreement(gb, _off_diagonal(copy))}


def is_rotated_copy(details: dict[str, float | int | str | None]) -> bool:
    """Whether a hidden alignment probe's ``details`` say the candidate is a rotated copy."""
    a, c = details.get(AGREEMENT), details.get(COPY_LEVEL)
    # a level of 0: the base's token geometry is flat (all-zero embeddings), nothing to match
    return isinstance(a, float) and isinstance(c, float) and c > 0.0 and a >= c


__all__ = ["AGREEMENT", "COPY_LEVEL", "COPY_NOISE", "GRAM_TOKENS", "is_rotated_copy", "measure"]
