"""Probe (reported, never decisive): per-layer weight norms, the std-profile correlation of the
2025 public analysis with a null, and how far each aligned layer drifted from its base layer.

The public statistic correlates per-layer standard deviations of the attention weights of two
models. Models of similar shape share such profiles whether related or not (they grow or shrink
smoothly with depth), and a function-preserving rescaling moves every norm, so the number can
neither convict nor acquit. lineage reports it with an estimated null: the correlation of the
base profile with every circular shift of the candidate profile (shifts keep a profile's
smoothness and scale but break the layer correspondence). The p-value is ``(1 + #{shifted >=
observed}) / (1 + #shifts)``; with few layers it cannot go low, which is the honest answer.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from verifier.architectures.layout import ATTN_NORM, DOWN, GATE, MLP_NORM, UP, K, O, Q, RoleRef, V
from verifier.model import Model
from verifier.sweep import tensor_stats

NAME = "norm_drift"
PROFILE_ROLES = (Q, K, V, O)
STAT_ROLES = (Q, K, V, O, GATE, UP, DOWN, ATTN_NORM, MLP_NORM)


class RoleStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    frobenius: float
    std: float
    mean_abs: float


class DriftLayer(BaseModel):
    """One role of one aligned layer pair (``relative_drift`` needs aligned neurons)."""

    model_config = ConfigDict(frozen=True)

    layer: int
    base_layer: int | None
    role: str
    base_norm: float | None
    candidate_norm: float
    base_std: float | None
    candidate_std: float
    relative_drift: float | None = None


class NormDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile_correlation: float | None
    profile_correlation_p: float | None
    null: str
    layers: list[DriftLayer] = Field(default_factory=list)


#: elements per tensor the default statistics read at least (a fixed stride of rows): a std or
#: norm estimated from 1 Mi weights is within ~1e-3 of the whole tensor's, far below what a
#: profile or a drift can show, and a 7B layer pair is then read in ~1/40 of its bytes
SAMPLE_ELEMENTS = 1 << 20


def rows_sample(t: torch.Tensor, elements: int | None) -> torch.Tensor:
    """Every k-th row of ``t``, k chosen so that at least ``elements`` weights remain (``t``
    itself when it is no larger, 1-D, or ``elements`` is None). A view: from a mapped file,
    only the pages of those rows are read."""
    if elements is None or t.dim() < 2 or t.numel() <= elements:
        return t
    per_row = t.numel() // t.shape[0]
    keep = -(-elements // per_row)
    return t[:: max(1, t.shape[0] // keep)]


#: the roles read with a layer's FFN and with its attention (the probes' two passes)
FFN_STAT_ROLES = (GATE, UP, DOWN, MLP_NORM)
ATTN_STAT_ROLES = (Q, K, V, O, ATTN_NORM)


def role_stats(model: Model, ref: RoleRef, sample: int | None) -> RoleStats:
    """Frobenius norm, std and mean |w| of one tensor: of the whole tensor, or with ``sample``
    estimated from a stride of rows covering at least that many weights (the Frobenius norm
    scaled to the whole tensor)."""
    whole = model.load(ref)
    part = rows_sample(whole, sample)
    s = tensor_stats(ref.tensor, part)
    scale = (whole.numel() / max(part.numel(), 1)) ** 0.5
    return RoleStats(frobenius=s.frobenius * scale, std=s.std, mean_abs=s.mean_abs)


class StatsWhileRead:
    """A model's per-layer role statistics, each computed when a probe reads its layer.

    Why: norm drift runs after the probes, and a pair larger than the page cache has lost its
    first layers by then; a stride of rows from every tensor, faulted in from a file map, then
    reads every tensor again (the kernel reads around each touched page: on a whole 7B pair
    with a 12 GB page cache, 22 GiB more read from the disk). Computed while the probe has
    the layer in hand, the same rows cost no read; norm drift computes what no probe read."""

    def __init__(self, model: Model, sample: int | None) -> None:
        self.model, self.sample = model, sample
        self.known: dict[int, dict[str, RoleStats]] = {}

    def collect(self, layer: int, roles: tuple[str, ...] = STAT_ROLES) -> None:
        refs = self.model.layout.layers[layer].roles
        have = self.known.setdefault(layer, {})
        for role in roles:
            if role in refs and role not in have:
                have[role] = role_stats(self.model, refs[role], self.sample)

    def all(self) -> list[dict[str, RoleStats]]:
        """Every layer's statistics, in ``STAT_ROLES`` order, the missing ones computed now."""
        out = []
        for i in range(len(self.model.layout.layers)):
            self.collect(i)
            out.append({role: self.known[i][role] for role in STAT_ROLES if role in self.known[i]})
        return out


def layer_stats(model: Model, sample: int | None = None) -> list[dict[str, RoleStats]]:
    """Frobenius norm, std and mean |w| of every dense role of every layer (``role_stats``)."""
    return StatsWhileRead(model, sample).all()


def _profile(stats: list[dict[str, RoleStats]], layers: list[int]) -> np.ndarray | None:
    """Per role, the std over ``layers`` standardised to zero mean, unit variance; concatenated."""
    parts = []
    for role in PROFILE_ROLES:
        vals = [stats[i][role].std for i in layers if role in stats[i]]
        if len(vals) != len(layers):
            return None
        v = np.asarray(vals, dtype=np.float64)
        parts.append((v - v.mean()) / (v.std() or 1.0))
    return np.stack(parts) if parts else None


def profile_correlation(
    base: list[dict[str, RoleStats]],
    cand: list[dict[str, RoleStats]],
    pairs: list[tuple[int, int]],
) -> tuple[float | None, float | None]:
    """Pearson correlation of the two std profiles over ``pairs`` (base layer, candidate
    layer), and its p-value against circular shifts of the candidate profile."""
    if len(pairs) < 3:
        return None, None
    pb = _profile(base, [b for b, _ in pairs])
    pc = _profile(cand, [c for _, c in pairs])
    if pb is None or pc is None:
        return None, None

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.ravel(), b.ravel()
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])

    observed = corr(pb, pc)
    shifted = [corr(pb, np.roll(pc, s, axis=1)) for s in range(1, pc.shape[1])]
    p = (1 + sum(v >= observed for v in shifted)) / (1 + len(shifted))
    return observed, float(p)


def relative_drift(base: torch.Tensor, cand: torch.Tensor) -> float:
    """``||W_cand - W_base||_F / ||W_base||_F`` for two aligned tensors (on their device, in
    their float32: a norm's relative rounding error there is ~1e-7, far below any drift)."""
    num = float((cand - base).norm())
    den = float(base.norm())
    return num / den if den else float("inf")
