"""The null model shared by the decisive probes: "the candidate is an independently trained
model that learned the same geometry in its own basis".

Two models trained on similar data learn embeddings that agree up to a *generic* rotation of the
hidden space (``E_cand ~ E_base R``), so statistics computed after a similarity-maximising
alignment are far above the values that shuffling tokens or coordinates would give: a token
shuffle or a random coordinate permutation is the wrong null (it convicts independent models;
we measured p < 1e-90 on independently trained pairs). A derived model instead relates to its
base by a *signed permutation* (possibly with noise), because everything a vendor can do for
free to a transformer's residual stream with RMSNorm is a signed permutation and rescaling.

So each null draw rotates the base's hidden space by a Haar-random orthogonal matrix ``R_k``,
re-runs the whole alignment (embedding correlation + assignment) against the unchanged
candidate, and recomputes the statistic: exactly the procedure applied to the observed pair,
with the base replaced by a copy whose basis is as arbitrary as an independent model's. Rotating
the base rather than the candidate keeps the cost on the side that can be sampled.
"""

from __future__ import annotations

import numpy as np
import torch

from backends.compute import Compute


def haar_rotation(d: int, rng: np.random.Generator, compute: Compute | None = None) -> torch.Tensor:
    """A Haar-distributed ``d x d`` orthogonal matrix (QR of a Gaussian, signs fixed;
    Mezzadri 2007). The QR runs in float32: the rotation is used in float32 anyway, its
    orthogonality error (~1e-6) is far below every statistic's resolution, and at d = 4096 the
    float64 QR of 25 draws alone took over a minute. The Gaussian is drawn on the CPU from
    ``rng`` (the same draws on every device); the QR runs where ``compute`` says."""
    return haar_frame(d, d, rng, compute)


def rotate_cols(w: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """A matrix whose columns are hidden coordinates, expressed in the rotated basis."""
    return w @ rot


def haar_frame(d: int, m: int, rng: np.random.Generator,
               compute: Compute | None = None) -> torch.Tensor:
    """``m`` orthonormal directions of a Haar-rotated ``d``-space (``d x m``): the first ``m``
    columns of a Haar rotation, which are the QR of a ``d x m`` Gaussian with signs fixed
    (Mezzadri 2007). Costs ``2 d m^2`` instead of a ``d x d`` QR's ``(4/3) d^3``; with
    ``m = d``, a whole Haar rotation (``haar_rotation``)."""
    g = torch.as_tensor(rng.standard_normal((d, m)), dtype=torch.float32)
    q, r = (compute or Compute()).qr(g)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)
