"""Probe: match the FFN neurons of each candidate layer to a base layer, against a null.

Each FFN neuron ``i`` is the triple (gate row ``g_i``, up row ``u_i``, down column ``d_i``);
after the hidden-space alignment all three live in base coordinates. Before comparing, each
matrix is balanced (rows and columns alternately normalised, see ``_unit_rows``), so that a
per-coordinate rescaling (norm gains folded into weights), SwiGLU's per-neuron rescaling and a
few large outlier coordinates do not decide the match. The similarity of base neuron ``i`` and
candidate neuron ``j`` is

    gated (SwiGLU):  ( cos(g_i, g_j) + |cos(u_i, u_j) + cos(d_i, d_j)| ) / 3
    plain (GELU):    ( cos(u_i, u_j) + cos(d_i, d_j) ) / 2

using ``|.|`` only where the architecture has a symmetry: in SwiGLU, ``(u_i, d_i) -> (c u_i,
d_i / c)`` for any real ``c`` leaves the function unchanged, while the gate has no sign or scale
freedom. A linear assignment (Hungarian, scipy) pairs the neurons; the statistic ``T`` is the
mean matched similarity, which is invariant to any permutation of the candidate's neurons.

Null ("trained independently"): ``rotation_null``: the base's hidden space is rotated at random,
the alignment is recovered again from the embeddings, and the statistic recomputed (``K``
draws). The per-layer p-value is the Student-t predictive tail of ``T``'s z-score against those
draws (the statistic is a mean over many neurons). Zhu et al. (ICML 2025) match neurons similarly but score the matching against the identity, which a
permuted model escapes; this statistic does not depend on the neuron order at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from backends.compute import Compute
from verifier.architectures.layout import DOWN, GATE, UP, RoleRef
from verifier.architectures.schema import SECOND_DOWN, SECOND_GATE, SECOND_UP
from verifier.model import Model
from verifier.probes.assignment import max_assignment
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.magnitude import magnitude_shift, times_power_of_two
from verifier.probes.rotation_null import rotate_cols

NAME = "neuron_matching"
#: base neurons per layer matched against every candidate neuron; wider layers are sampled (the
#: matched similarity is a mean over neurons: 256 give its null a spread of ~1/16 of a neuron's,
#: and a derived layer's mean sits many such spreads above it: on 7B-shaped slices the power
#: check's neuron p-value at drift 3 is ~1e-35 with 256, docs/performance.md)
MAX_BASE_NEURONS = 256


@dataclass(frozen=True)
class FFNWeights:
    """One dense FFN with neurons as rows, hidden coordinates as columns (down transposed)."""

    gate: torch.Tensor | None
    up: torch.Tensor
    down: torch.Tensor  # [F, d]: column i of the down projection as row i

    def _map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> FFNWeights:
        return FFNWeights(
            gate=f(self.gate) if self.gate is not None else None, up=f(self.up), down=f(self.down)
        )

    def aligned(self, align: HiddenAlignment) -> FFNWeights:
        """Candidate weights in base hidden coordinates."""
        return self._map(align.cols)

    def rotated(self, rot: torch.Tensor) -> FFNWeights:
        """Base weights in a rotated hidden basis (a null draw)."""
        return self._map(lambda w: rotate_cols(w, rot))

    def hidden_major(self) -> FFNWeights:
        """Each role as a contiguous ``[d, F]`` copy, hidden coordinates as rows (the down
        projection as stored needs no copy): taking a few hidden coordinates from it reads
        whole rows instead of a strided column of every neuron."""
        return self._map(lambda w: w.T.contiguous())

    def take_hidden(self, align: HiddenAlignment, compute: Compute) -> FFNWeights:
        """From ``hidden_major`` weights, the candidate coordinates ``align`` maps to, signed
        and placed: ``aligned(align).placed(compute)``, as ``[F, m]`` views of ``[m, F]``
        matrices (one copy each; ``_unit_rows`` and the similarities take them as they are)."""
        idx, factor = align.gather()

        def take(w: torch.Tensor) -> torch.Tensor:
            # index_select copies: the stored weights are never scaled in place
            x = compute.put(w.index_select(0, idx.to(w.device)))
            return x.mul_(factor.to(x.device)[:, None]).T

        return self._map(take)

    def transposed(self) -> FFNWeights:
        """Each role transposed, as a view: ``hidden_major`` weights as ``[F, m]`` again (the
        layout ``take_hidden`` gives)."""
        return self._map(lambda w: w.T)

    def take(self, rows: torch.Tensor, cols: torch.Tensor) -> FFNWeights:
        """``w[rows][:, cols]`` of each role, gathered in the order that reads the stored
        matrix by whole runs: rows first where rows are contiguous (gate, up), columns first
        where columns are (the down projection, a transposed view). Either order gives the same
        numbers; the wrong one reads every page of the matrix for a few of its entries."""
        def sub(w: torch.Tensor) -> torch.Tensor:
            r, c = rows.to(w.device), cols.to(w.device)
            return w[r][:, c] if w.stride(-1) == 1 else w[:, c][r]

        return self._map(sub)

    def times_columns(self, v: torch.Tensor) -> FFNWeights:
        """Each role with column ``i`` multiplied by ``v[i]`` (e.g. an alignment's signs)."""
        return self._map(lambda w: w * v.to(w.device, w.dtype))

    def neurons_permuted(self, tau: torch.Tensor) -> FFNWeights:
        return self._map(lambda w: w[tau.to(w.device)])

    def placed(self, compute: Compute) -> FFNWeights:
        """The weights on the compute device in float32, contiguous (a no-op for weights that
        already are): layers are cached as stored and placed where a probe needs them, so
        that a sample of rows is upcast instead of a whole layer."""
        def put(w: torch.Tensor) -> torch.Tensor:
            out = compute.put(w)
            return out if out.is_contiguous() else out.contiguous()

        return self._map(put)


def concat(ffns: list[FFNWeights], hidden_major: bool = False) -> FFNWeights:
    """Several FFNs as one neuron set, in order (gates only when every part has one), in one
    copy in their own dtype: ``[F, d]`` rows, or with ``hidden_major`` the ``[d, F]`` matrices
    of ``FFNWeights.hidden_major``."""
    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([w.T for w in parts], dim=1) if hidden_major else torch.cat(parts)

    gated = all(f.gate is not None for f in ffns)
    return FFNWeights(gate=cat([f.gate for f in ffns if f.gate is not None]) if gated else None,
                      up=cat([f.up for f in ffns]), down=cat([f.down for f in ffns]))


#: a block's second set of neurons (``schema.SECOND_ROLES``), read as an MLP's roles
_SECOND_AS_MLP = {SECOND_GATE: GATE, SECOND_UP: UP, SECOND_DOWN: DOWN}


def has_neurons(roles: Mapping[str, RoleRef]) -> bool:
    """Whether a block holds dense neurons: an MLP's up and down, or a second set's."""
    return {UP, DOWN} <= roles.keys() or {SECOND_UP, SECOND_DOWN} <= roles.keys()


def load_ffn(model: Model, layer: int) -> FFNWeights | None:
    """The dense neurons of ``layer``: its MLP's, then those of a second set beside it (a
    hybrid's Mamba mixer, whose channels permute as neurons; a second MLP:
    ``schema.SECOND_ROLES``), as one set; None for MoE or FFN-less layers. Any neuron of the
    set may match any other, and the null draws rotate the hidden space that all of them read
    and write. An MLP alone is as stored; with a second set, one copy of both (``concat``)."""
    roles = model.layout.layers[layer].roles
    second = {as_mlp: roles[r] for r, as_mlp in _SECOND_AS_MLP.items() if r in roles}
    parts = [f for f in (ffn_from_roles(model, roles), ffn_from_roles(model, second))
             if f is not None]
    if len(parts) > 1:
        return concat(parts)
    return parts[0] if parts else None


def ffn_from_roles(model: Model, roles: Mapping[str, RoleRef]) -> FFNWeights | None:
    """The FFN whose gate / up / down tensors ``roles`` names (a dense layer's, or one
    expert's), as stored (CPU, stored dtype; zero-copy views of the file where the reader maps
    it, e.g. safetensors), or None without up and down. The down projection is a transposed
    view; ``placed`` makes float32 device copies."""
    if UP not in roles or DOWN not in roles:
        return None

    def get(role: str) -> torch.Tensor:
        return model.load(roles[role])

    gate = get(GATE) if GATE in roles else None
    return FFNWeights(gate=gate, up=get(UP), down=get(DOWN).T)


#: alternating row/column normalisations; the residual scale dependence after 8 is < 1e-4
BALANCE_ITERS = 8


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` after balancing away every row and column scale.

    Alternately normalising columns (hidden coordinates) to equal RMS and rows (neurons) to unit
    norm converges to the unique balanced form of ``|w|``'s scaling class (Sinkhorn & Knopp
    1967), so the result is invariant to per-coordinate rescaling (norm gains folded into the
    weights), to per-neuron rescaling (SwiGLU's up/down freedom), to sign flips of either, and
    to permutations; no coordinate or neuron can dominate the cosines by its magnitude.

    Every step only rescales rows or columns, so the balanced matrix is ``diag(r) w diag(c)``
    and the iterations run on the two scale vectors: the squares of ``w`` once, then two
    matrix-vector products per iteration (``_balance_scales``), and the scales applied once at
    the end. The same iterations as normalising the matrix in place, with a pass over the
    matrix per step instead of five and two temporaries of its size instead of seventeen;
    equal to float32 rounding. Works on any strided layout (a hidden-major ``[m, F]`` copy
    seen as ``[F, m]`` is balanced as it lies, and stays a view of that layout).
    """
    sq = w.square()
    # the first iteration's column sums, formed here to see whether the squares overflowed or
    # vanished (weights near 1e20 or 1e-20, ``magnitude``): only then is the matrix squared
    # again at magnitude one, the power of two taken back out of the row scales, exactly.
    # Ordinary weights pay a maximum over m sums, not a pass over the matrix
    first = torch.ones(sq.shape[0], dtype=sq.dtype, device=sq.device) @ sq
    shift = 0
    if first.numel() and not _SAFE_SUMS[0] < float(first.max()) < _SAFE_SUMS[1]:
        shift = magnitude_shift(w)
        if shift:
            sq, first = times_power_of_two(w, -shift).square_(), None
    rows, cols = _balance_scales(sq, first)
    if not _settled(w, rows, cols):
        return _unit_rows_equilibrated(w)
    # the scales are applied to the matrix at magnitude one (the same balanced matrix: the
    # power of two is one of the row scales the balancing removes); taken out of the row
    # scales instead, they overflowed float32 for weights near 1e-39
    x = times_power_of_two(w, -shift) if shift else w
    return (x * rows.sqrt_()[:, None]).mul_(cols.sqrt_()[None, :])


def _settled(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> bool:
    """Whether the balancing's squared scales are trustworthy: finite, no row whose squares
    summed below ``2^-100`` (float32 was losing the row to subnormals), and a zero scale only
    for a row or column that is zero. A model whose neurons are rescaled one by one across a
    range wider than float32's squares hold (SwiGLU's up row by ``2^60``, its down column by
    ``2^-60``, and another neuron the other way: the function is unchanged) fails it; ordinary
    weights pass it on the ``n + m`` scales alone."""
    if not bool(torch.isfinite(rows).all()) or not bool(torch.isfinite(cols).all()):
        return not bool(torch.isfinite(w).all())  # left for the probe's finiteness check
    if rows.numel() and float(rows.max()) > _SAFE_SUMS[1]:
        return False
    dead_rows, dead_cols = rows == 0, cols == 0
    if bool(dead_rows.any()) and bool(w[dead_rows].any()):
        return False
    return not (bool(dead_cols.any()) and bool(w[:, dead_cols].any()))


def _unit_rows_equilibrated(w: torch.Tensor) -> torch.Tensor:
    """``_unit_rows`` for a matrix whose rows or columns differ in scale by more than float32's
    squares hold: each row, then each column, brought to a largest ``|value|`` in ``[0.5, 1)``
    by its own power of two first. Those scalings are exact and are among the row and column
    scales the balancing removes anyway, so the balanced form is the same; the balancing then
    starts from a matrix whose squares float32 holds. Costs two passes and a copy, paid only
    by matrices that need it."""
    x = w.to(torch.float32) if w.dtype in (torch.float16, torch.bfloat16) else w.clone()
    for dim in (1, 0, 1):  # rows, columns, and rows again (a column's scaling moved them)
        top = x.abs().amax(dim=dim, keepdim=True)
        exponent = torch.frexp(top).exponent
        x = times_power_of_two(x, -exponent)
    rows, cols = _balance_scales(x.square())
    return (x * rows.sqrt_()[:, None]).mul_(cols.sqrt_()[None, :])


#: column sums of squares inside this window neither overflowed nor lost the matrix
_SAFE_SUMS = (2.0**-100, 2.0**100)


def _balance_scales(sq: torch.Tensor, first: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared row and column scales ``(r, c)`` after ``BALANCE_ITERS`` alternations, for the
    entrywise squares ``sq`` of a ``[n, m]`` matrix: columns to norm ``sqrt(n)``, then rows
    to unit norm. Zero rows and columns keep a zero scale (they stay zero, as in place).
    ``first``: the first iteration's column sums ``ones @ sq``, when the caller has them."""
    n = sq.shape[0]
    rows = torch.ones(n, dtype=sq.dtype, device=sq.device)
    for i in range(BALANCE_ITERS):
        sums = first if i == 0 and first is not None else rows @ sq
        cols = _reciprocal(sums, float(n))
        # (r, c) and (r t, c / t) balance alike: without this the pair drifts by a factor of
        # about m per iteration (m^8 overflows float32 at full width). NaN propagates, as in place
        cols.div_(cols.max().clamp_min(torch.finfo(sq.dtype).tiny))
        rows = _reciprocal(sq @ cols, 1.0)
    return rows, cols


def _reciprocal(sums: torch.Tensor, target: float) -> torch.Tensor:
    """``target / sums`` where ``sums`` is not zero, 0 where it is (NaN stays NaN)."""
    return torch.where(sums == 0, torch.zeros_like(sums), target / sums)


@dataclass(frozen=True)
class NeuronFeatures:
    gate: torch.Tensor | None
    up: torch.Tensor
    down: torch.Tensor

    @classmethod
    def of(cls, ffn: FFNWeights) -> NeuronFeatures:
        return cls(
            gate=_unit_rows(ffn.gate) if ffn.gate is not None else None,
            up=_unit_rows(ffn.up),
            down=_unit_rows(ffn.down),
        )

    def into(self, align: HiddenAlignment, dim: int) -> NeuronFeatures:
        """Base features carried into candidate coordinates (``dim`` of them): candidate
        coordinate ``perm[i]`` receives base coordinate ``i`` times ``sign[i]``; candidate
        coordinates nothing matched stay zero. The inverse of ``FFNWeights.aligned``, applied to
        the smaller side."""
        rows = np.flatnonzero(align.perm >= 0)
        device = self.up.device
        dst = torch.as_tensor(align.perm[rows]).to(device)
        src = torch.as_tensor(rows).to(device)
        sign = torch.as_tensor(align.sign[rows], dtype=torch.float32).to(device)

        def move(w: torch.Tensor) -> torch.Tensor:
            out = w.new_zeros(w.shape[0], dim)
            out[:, dst] = w[:, src] * sign
            return out

        return NeuronFeatures(gate=move(self.gate) if self.gate is not None else None,
                              up=move(self.up), down=move(self.down))


def similarity(b: NeuronFeatures, c: NeuronFeatures) -> torch.Tensor:
    """``[F_base, F_cand]`` neuron similarities (see the module docstring). Summed in place:
    the same sums as ``(g + |u + d|) / 3``, without three temporaries of the matrix's size
    (a 256 x 11 008 null draw's similarity 25 -> 17.5 ms)."""
    ud = (b.up @ c.up.T).add_(b.down @ c.down.T)
    if b.gate is not None and c.gate is not None:
        return ud.abs_().add_(b.gate @ c.gate.T).div_(3.0)
    return ud.div_(2.0)


def match(sim: torch.Tensor | np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Hungarian assignment maximising total similarity: ``(mean matched, rows, cols)``."""
    s = sim if isinstance(sim, np.ndarray) else Compute.numpy64(sim)
    rows, cols = max_assignment(s)
    return float(s[rows, cols].mean()), rows, cols
