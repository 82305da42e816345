"""Probe: recover the candidate's hidden-space permutation and signs from the embeddings.

A vendor can permute, negate and rescale the hidden coordinates of a model without changing its
function (RMSNorm is equivariant to signed permutations, and a per-coordinate scale can be
folded into the norm gains). The embedding matrix exposes that map: over the tokens both models
share, column ``i`` of the base embedding and the column of the candidate that holds the same
coordinate are strongly correlated, and unrelated columns are not.

Method (as in AWM, Yang et al. 2026, but mean-centred so that a shared offset does not count):
correlate every base column with every candidate column over the shared tokens, solve a linear
assignment on ``|corr|`` (Hungarian, scipy), read signs from the matched correlations and scales
from the ratio of column standard deviations.

Statistic: the mean matched ``|corr|``. Null: see ``rotation_null`` (the base's hidden space
rotated at random, the alignment recovered again): shuffling tokens instead would convict every
pair of models trained on similar text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backends.compute import Compute
from verifier.probes.assignment import max_assignment
from verifier.probes.magnitude import unit_magnitude

NAME = "hidden_alignment"
#: shared tokens used at most (sampled evenly by id): enough for d <= 8192 columns
MAX_TOKENS = 32768


def token_budget(hidden: int) -> int:
    """Shared tokens worth correlating for ``hidden`` coordinates: four per coordinate, at least
    8192 (a correlation over T tokens has noise ~1/sqrt(T) = 0.011 there, against matched
    |corr| of 0.8-1.0 for derived and ~0.2 for independent models), at most ``MAX_TOKENS``.
    Each null draw costs ~4 T d^2 flops, so a 32k vocabulary at d = 4096 would spend half its
    alignment time on tokens that do not change the answer."""
    return min(MAX_TOKENS, max(8192, 4 * hidden))


@dataclass(frozen=True)
class HiddenAlignment:
    """Base coordinate ``i`` corresponds to candidate coordinate ``perm[i]`` times ``sign[i]``
    (``perm[i] == -1`` when the candidate is narrower and nothing matched ``i``)."""

    perm: np.ndarray
    sign: np.ndarray
    scale: np.ndarray
    corr: np.ndarray

    @classmethod
    def identity(cls, d: int) -> HiddenAlignment:
        return cls(np.arange(d), np.ones(d), np.ones(d), np.ones(d))

    @property
    def base_dim(self) -> int:
        return int(self.perm.size)

    def cols(self, w: torch.Tensor) -> torch.Tensor:
        """A candidate matrix whose *columns* are hidden coordinates, in base coordinates."""
        return self._take(w, dim=1)

    def rows(self, w: torch.Tensor) -> torch.Tensor:
        """A candidate matrix (or vector) whose *rows* are hidden coordinates, in base order."""
        return self._take(w, dim=0)

    def gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per base coordinate, the candidate coordinate it reads (0 where nothing matched) and
        the float32 factor applied to it (its sign, 0 where nothing matched):
        ``w.index_select(-1, idx) * factor`` is ``cols(w)``."""
        idx = torch.as_tensor(np.maximum(self.perm, 0))
        factor = torch.as_tensor(self.sign * (self.perm >= 0), dtype=torch.float32)
        return idx, factor

    def _take(self, w: torch.Tensor, dim: int) -> torch.Tensor:
        idx, factor = self.gather()
        out = select(w, dim, idx.to(w.device))
        factor = factor.to(w.device, out.dtype)
        shape = [1] * out.dim()
        shape[dim] = -1
        return out * factor.reshape(shape)


def select(w: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """``w.index_select(dim, idx)``, the same contiguous tensor, gathered the way that reads a
    matrix fastest. Why: the hidden coordinates of a layer are columns of the probes' ``[F, d]``
    views, and torch's column gather from a transposed view (a down projection, stored
    ``[d, F]``) takes 112-166 ms for 128 columns of a 7B layer, against 2-7 ms to copy the same
    stored rows whole; from a row-major ``[F, d]`` (gate, up) 128 columns in random order take
    32-37 ms, 12-20 ms gathered in increasing order and put back (measured on CPU;
    docs/performance.md)."""
    if w.dim() != 2 or dim != 1:
        return w.index_select(dim, idx)
    if w.stride(1) > w.stride(0):  # columns of a transposed view: rows of the storage, whole
        return w.T.index_select(0, idx).T.contiguous()
    if idx.numel() < 2 or bool((idx[1:] >= idx[:-1]).all()):
        return w.index_select(1, idx)
    order = torch.argsort(idx)  # entries of every row in increasing order, then put back
    return w.index_select(1, idx[order]).index_select(1, torch.argsort(order))


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Columns centred and scaled to unit norm, so ``x.T @ y`` is a correlation matrix (the
    matrix first brought to magnitude one by a power of two: embeddings scaled near 1e-19 had
    column norms under the zero-column guard, and their correlations collapsed)."""
    x = unit_magnitude(x.to(torch.float32))
    x = x - x.mean(dim=0, keepdim=True)
    return x / x.norm(dim=0, keepdim=True).clamp_min(1e-12)


def recover(
    xs: torch.Tensor, ys: torch.Tensor, scales: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[HiddenAlignment, float]:
    """The signed permutation that best maps candidate columns ``ys`` onto base columns ``xs``
    (both standardised), and its mean matched ``|corr|``. With ``scales`` (the raw column
    standard deviations of base and candidate), ``scale[i]`` is candidate over base for each
    matched pair: the per-coordinate rescaling a vendor may have folded into the weights."""
    return recover_from_corr(xs.T @ ys, scales)


def recover_from_corr(
    corr_t: torch.Tensor | np.ndarray, scales: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[HiddenAlignment, float]:
    """``recover`` given the ``[d_base, d_cand]`` column correlation matrix (a device tensor,
    or already on the host as float64)."""
    corr = corr_t if isinstance(corr_t, np.ndarray) else Compute.numpy64(corr_t)
    rows, cols = max_assignment(np.abs(corr))
    d = corr.shape[0]
    perm = np.full(d, -1)
    perm[rows] = cols
    sign = np.ones(d)
    sign[rows] = np.sign(corr[rows, cols])
    matched = np.zeros(d)
    matched[rows] = np.abs(corr[rows, cols])
    scale = np.ones(d)
    if scales is not None:
        sb, sc = (Compute.numpy64(s) for s in scales)
        scale[rows] = sc[cols] / np.maximum(sb[rows], 1e-12)
    return HiddenAlignment(perm, sign, scale, matched), float(matched[rows].mean())


class RotatedCorrelations:
    """Column correlations of a rotated base embedding with a fixed candidate embedding,
    without rotating the ``T x d`` embedding for each rotation.

    With ``X`` the centred base rows and ``Y`` the standardised candidate columns, the
    correlation of column ``i`` of ``X R`` with column ``j`` of ``Y`` is
    ``(R^T X^T Y)_{ij} / ||X r_i||`` and ``||X r_i||^2 = (R^T G R)_{ii}`` with ``G = X^T X``:
    two ``d x d`` products per rotation (``4 d^3`` flops) instead of rotating and correlating
    ``T`` tokens (``4 T d^2``, with ``T >= 2 d``). Centring commutes with the rotation, so this is
    exactly ``standardise(X R)^T Y``.
    """

    def __init__(self, base: torch.Tensor, ys: torch.Tensor, gram: bool = True) -> None:
        """``gram=False`` when every rotation's ``norms`` will be given (they depend on the
        base alone, so a second pairing of the same base reuses the first one's)."""
        x = base.to(torch.float32)
        x = x - x.mean(dim=0, keepdim=True)
        self.cross = x.T @ ys
        self.gram = x.T @ x if gram else None

    def norms(self, rot: torch.Tensor) -> torch.Tensor:
        """``||X r_i||`` for every column of ``rot``."""
        assert self.gram is not None, "built without the Gram matrix: pass the norms"
        return ((self.gram @ rot) * rot).sum(dim=0).clamp_min(1e-24).sqrt()

    def __call__(self, rot: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        norms = self.norms(rot) if norms is None else norms
        return (rot.T @ self.cross) / norms[:, None]


def shared_token_rows(
    base_vocab: list[str] | None, cand_vocab: list[str] | None, base_rows: int, cand_rows: int,
    max_tokens: int = MAX_TOKENS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Row indices of the tokens both models share, and warnings about how they were found.

    With both vocabularies known, tokens are matched by string; otherwise rows are assumed to be
    index-aligned (the same tokenizer), which is said in a warning.
    """
    warnings: list[str] = []
    if base_vocab and cand_vocab:
        where = {tok: i for i, tok in enumerate(cand_vocab[:cand_rows])}
        pairs = [(i, where[t]) for i, t in enumerate(base_vocab[:base_rows]) if t in where]
        ib = np.array([p[0] for p in pairs], dtype=np.int64)
        ic = np.array([p[1] for p in pairs], dtype=np.int64)
        if len(base_vocab) != len(cand_vocab) or ib.size != min(base_rows, cand_rows):
            warnings.append(
                f"vocabularies differ: matched {ib.size} shared tokens by string "
                f"(base {len(base_vocab)}, candidate {len(cand_vocab)})"
            )
    else:
        n = min(base_rows, cand_rows)
        ib = ic = np.arange(n)
        warnings.append(
            f"no tokenizer files for {'both models' if not (base_vocab or cand_vocab) else 'one model'}: "
            f"assumed the first {n} embedding rows are the same tokens"
        )
    if ib.size > max_tokens:
        keep = np.linspace(0, ib.size - 1, max_tokens).astype(np.int64)
        ib, ic = ib[keep], ic[keep]
    return ib, ic, warnings
