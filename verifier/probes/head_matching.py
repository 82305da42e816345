"""Probe: match attention heads through circuits that re-parametrisations cannot move.

For query head ``h`` (KV head ``g(h)``) with the attention-norm gain ``gamma`` folded into the
inputs, the two circuits of Elhage et al. (2021) are

    QK_h = (W_q^h diag(gamma))^T (W_k^g diag(gamma))        [d x d]
    OV_h = W_o^{:,h} W_v^g diag(gamma)                        [d x d]

Both are unchanged by rescaling q against k or v against o, by any rotation applied to q and k
together inside a head (RoPE planes included), by moving a scale from the norm gain into the
weights, and by permuting heads. After mapping the candidate's hidden coordinates into the base
coordinates, head similarity is the mean of the cosines of the flattened circuits; heads are
matched by a linear assignment that respects KV groups (groups are matched first, by the best
assignment of their query heads). The statistic is the mean matched head similarity; its null is
``rotation_null`` (base basis rotated at random, alignment recovered again), as for neurons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from verifier.architectures.layout import ATTN_NORM, K, O, Q, V
from verifier.model import Model
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.rotation_null import rotate_circuit

NAME = "head_matching"
#: post-norm families: the attention norm sits after the block, so there is no gain to fold
POST_NORM = {"bert"}


@dataclass(frozen=True)
class HeadCircuits:
    """Per query head, the QK and OV circuits as ``[H, d, d]`` stacks, and the KV group count."""

    qk: torch.Tensor
    ov: torch.Tensor
    groups: int

    def _map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> HeadCircuits:
        return HeadCircuits(qk=f(self.qk), ov=f(self.ov), groups=self.groups)

    def aligned(self, align: HiddenAlignment) -> HeadCircuits:
        """Candidate circuits in base hidden coordinates (both axes relabelled and signed)."""
        return self._map(lambda m: align.cols(align.cols(m).transpose(1, 2)).transpose(1, 2))

    def rotated(self, rot: torch.Tensor) -> HeadCircuits:
        return self._map(lambda m: rotate_circuit(m, rot))

    def unit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened, unit-norm circuits ``([H, d*d], [H, d*d])`` for cosines."""

        def f(m: torch.Tensor) -> torch.Tensor:
            flat = m.reshape(m.shape[0], -1)
            return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)

        return f(self.qk), f(self.ov)


def _heads(model: Model) -> tuple[int, int, int]:
    lay = model.layout
    heads = lay.num_heads or 1
    kv = lay.num_kv_heads or heads
    head_dim = lay.head_dim or lay.hidden_size // heads
    return heads, kv, head_dim


def load_circuits(model: Model, layer: int) -> HeadCircuits | None:
    """Circuits of ``layer``, or None when it has no standard multi-head attention."""
    roles = model.layout.layers[layer].roles
    if not all(r in roles for r in (Q, K, V, O)):
        return None
    heads, kv, hd = _heads(model)

    def get(role: str) -> torch.Tensor:
        return model.load(roles[role]).to(torch.float32)

    q, k, v, o = get(Q), get(K), get(V), get(O)
    if q.shape[0] != heads * hd or k.shape[0] != kv * hd:
        return None  # MLA or another attention form: not compared by this probe
    if ATTN_NORM in roles and model.layout.family not in POST_NORM:
        gamma = get(ATTN_NORM)
        q, k, v = q * gamma, k * gamma, v * gamma
    per_group = heads // kv
    qk, ov = [], []
    for h in range(heads):
        g = h // per_group
        qh, kg, vg = q[h * hd:(h + 1) * hd], k[g * hd:(g + 1) * hd], v[g * hd:(g + 1) * hd]
        oh = o[:, h * hd:(h + 1) * hd]
        qk.append(qh.T @ kg)
        ov.append(oh @ vg)
    return HeadCircuits(qk=torch.stack(qk), ov=torch.stack(ov), groups=kv)


def match_heads(b: HeadCircuits, c: HeadCircuits) -> float:
    """Mean matched head similarity under a KV-group-respecting assignment."""
    bqk, bov = b.unit()
    cqk, cov = c.unit()
    sim = ((bqk @ cqk.T + bov @ cov.T) / 2.0).double().numpy()
    hb, hc = sim.shape
    if b.groups != c.groups or b.groups in (1, hb) or hb != hc:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        return float(sim[rows, cols].mean())
    per = hb // b.groups
    group_score = np.zeros((b.groups, c.groups))
    for gb in range(b.groups):
        for gc in range(c.groups):
            block = sim[gb * per:(gb + 1) * per, gc * per:(gc + 1) * per]
            r, cc = linear_sum_assignment(block, maximize=True)
            group_score[gb, gc] = block[r, cc].sum()
    rows, cols = linear_sum_assignment(group_score, maximize=True)
    return float(group_score[rows, cols].sum() / hb)
