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

from verifier.architectures.layout import ATTN_NORM, DOWN, GATE, MLP_NORM, UP, K, O, Q, V
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


def layer_stats(model: Model, sample: int | None = None) -> list[dict[str, RoleStats]]:
    """Frobenius norm, std and mean |w| of every dense role of every layer: of the whole tensor,
    or with ``sample`` estimated from a stride of rows covering at least that many weights (the
    Frobenius norm scaled to the whole tensor)."""
    out = []
    for layer in model.layout.layers:
        stats: dict[str, RoleStats] = {}
        for role in STAT_ROLES:
            ref = layer.roles.get(role)
            if ref is not None:
                whole = model.load(ref)
                part = rows_sample(whole, sample)
                s = tensor_stats(role, part)
                scale = (whole.numel() / max(part.numel(), 1)) ** 0.5
                stats[role] = RoleStats(frobenius=s.frobenius * scale, std=s.std,
                                        mean_abs=s.mean_abs)
        out.append(stats)
    return out


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
