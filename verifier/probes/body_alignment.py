"""Probe: recover the hidden-space alignment from the layers, for a body under new embeddings.

Every other decisive probe reads the layers through the alignment ``hidden_alignment`` recovers
from the embedding matrices. A candidate that keeps the base's layers under embeddings that were
replaced (re-initialised and learned again with the body frozen, as in a tokenizer transplant,
or taken from another model) is aligned at random there, and looks unrelated. Its layers still
hold the base's hidden coordinates, so this probe recovers the signed permutation from them:

* **which coordinate** (the permutation): a profile per hidden coordinate, read in a way that
  no free change of the layers alters: for each of ``PROFILE_LAYERS`` layers spread over the
  depth, the log norm of the coordinate's column in each reader (q, k, v with the attention
  norm's gain folded in; gate, up with the MLP norm's) and of its row in each writer (o, down).
  Norms do not move when neurons or heads are permuted, negated or turned within a head, nor
  when a norm gain is folded into its readers. Each feature becomes normal scores of its
  ranks over the coordinates and the features are whitened (``_standardise``: the privileged
  basis a rotated base lacks), base and candidate profiles are correlated across features, and
  a linear assignment on the correlations matches them (as ``hidden_alignment`` does with
  token columns).
* **which sign** (norms have none): matched coordinates ``a, b`` have reader Gram entries
  ``G_cand[a, b] = s_a s_b G_base[a, b]``; the signs are those of the leading eigenvector of the
  entrywise product of the two models' Grams, summed over matrices. That leaves one sign for the
  whole space, which is a true symmetry of the body (every reader and writer negated); the gate's
  column sums, which flip with it and with nothing else the vendor may do (a gate row cannot be
  negated through SiLU), fix it.

What it holds (``plan``): a sample of evenly spread rows of each matrix, within
``SAMPLE_ELEMENTS`` per model, since every null draw turns the base's. The base's profile is
read from its sample, observed and in the draws alike; the candidate's, which no draw turns,
from the column norms of its whole matrices.

Statistic: the mean matched profile correlation. Null: the rotation null of the other probes
(``rotation_null``): the base's hidden space turned at random (its readers ``W R``, writers
``R^T W``), the alignment recovered again, and every statistic computed again. The pairing built
on this alignment (``Pairing(..., body=...)``) then runs neuron matching unchanged.

It runs only where the embeddings align at null level (a derived pair whose embeddings align
needs no second look), or cannot be aligned at all. The profile pairs layers by relative depth
(``relative_layer``: layer ``i`` with layer ``i`` at equal depth), so pruned or duplicated
layers cost it a few mismatched features, not the test. It is a second look, so it spends a
share ``SHARE`` of the verdict's alpha (``verdict.decide``), and it carries no power check: it
can show a derivation, never vouch for independence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from verifier.architectures.layout import ATTN_NORM, DOWN, GATE, MLP_NORM, UP, K, O, Q, V
from verifier.model import Model
from verifier.probes.assignment import max_assignment, require_finite
from verifier.probes.base import spread
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.magnitude import magnitude_shift, times_power_of_two, unit_magnitude

NAME = "body_alignment"
#: layers read for the profile, spread over the depth: 7 features each
PROFILE_LAYERS = 8
#: float32 elements of each model's row sample (128 MiB): every null draw turns the base's
#: onto its frame, so this bounds both the memory and the draws' cost (``plan``)
SAMPLE_ELEMENTS = 2**25
#: rows (neurons, head dimensions) kept per matrix at least; wider models read fewer layers
MIN_ROWS = 128
MIN_LAYERS = 2
#: rows of a stored matrix converted to float32 at a time, for the candidate's exact norms
CHUNK_ROWS = 1024
#: shrinkage of the profile's feature covariance towards the identity before whitening
#: (``_whiten``); 0.1 and 0.3 both took the zoo independents' bias away, 0.3 calibrated a little
#: better on 45 independent calibration pairs (method section 3)
WHITEN_SHRINK = 0.3
#: share of the verdict's alpha this second look spends (weighted Bonferroni: the other probes'
#: merged p-value is divided by ``1 - SHARE``, this probe's by ``SHARE``)
SHARE = 0.01
#: power iterations for the sign vector (the leading eigenvector of an ``m x m`` matrix)
SIGN_ITERS = 200
#: readers (columns are hidden coordinates) by the norm whose gain they read
READERS = ((ATTN_NORM, (Q, K, V)), (MLP_NORM, (GATE, UP)))
WRITERS = (O, DOWN)


@dataclass
class Matrix:
    """One profile matrix, hidden coordinates as columns (writers transposed), float32, with its
    norm gain folded in: a sample of its rows (all where they fit ``plan``'s budget)."""

    key: str
    w: torch.Tensor
    #: a gate (or an ungated FFN's up): its column sums fix the global sign
    signed: bool = False
    #: log norms of the whole matrix's columns (gain folded in), where they were read
    log_norm: torch.Tensor | None = None


@dataclass(frozen=True)
class Plan:
    """What the profile reads: base ``layers`` spread over the depth, the candidate's layer at
    the same relative depth for each (``cand_layers``; the same layers at equal depth), at most
    ``rows`` rows of each matrix."""

    layers: list[int]
    rows: int
    cand_layers: list[int]


class BodyProfile:
    """A model's profile matrices: ``Matrix`` per (layer, role) of the plan's layers."""

    def __init__(self, matrices: list[Matrix]) -> None:
        self.matrices = matrices
        self.dim = int(matrices[0].w.shape[1]) if matrices else 0
        #: ``features`` of the matrices as they are (the candidate's: the same in every draw)
        self._own: torch.Tensor | None = None

    def features(self) -> torch.Tensor:
        """The unturned profile, computed once: from the whole matrices' column norms where
        they were read (``of(..., norms=True)``, the candidate's), else from the held rows (the
        base's, which the null draws turn and so must read the same way)."""
        if self._own is None:
            if self.matrices and all(m.log_norm is not None for m in self.matrices):
                self._own = _standardise(torch.stack([m.log_norm for m in self.matrices
                                                      if m.log_norm is not None]))
            else:
                self._own = _features(self.views(None))
        return self._own

    @classmethod
    def of(cls, model: Model, layers: list[int], rows: int, device: torch.device | None = None,
           norms: bool = False) -> BodyProfile:
        """The profile of ``model`` on ``layers`` (matrix keys name the layer's place in that
        list, so that two models' profiles pair by place), ``rows`` rows of each matrix;
        ``norms``: also read the whole matrices' column norms (a pass over each, ``CHUNK_ROWS``
        rows at a time)."""
        out: list[Matrix] = []
        fold = not model.layout.post_norm
        for slot, i in enumerate(layers):
            roles = model.layout.layers[i].roles
            for norm, readers in READERS:
                gain = (unit_magnitude(model.load(roles[norm]).to(device, torch.float32))
                        if fold and norm in roles else None)
                gated = GATE in roles
                for r in readers:
                    if r in roles:
                        out.append(_matrix(f"{slot}.{r}", model.load(roles[r]), False, rows,
                                           gain, norms, device,
                                           signed=r == GATE or (r == UP and not gated)))
            for r in WRITERS:
                if r in roles:
                    out.append(_matrix(f"{slot}.{r}", model.load(roles[r]), True, rows, None,
                                       norms, device))
        return cls(out)

    def common(self, other: BodyProfile) -> tuple[BodyProfile, BodyProfile]:
        """Both profiles cut to the matrices both have, of equal width, in one order."""
        theirs = {m.key: m for m in other.matrices}
        keep = [(m, theirs[m.key]) for m in self.matrices
                if m.key in theirs and m.w.shape[1] == self.dim
                and theirs[m.key].w.shape[1] == other.dim]
        return BodyProfile([a for a, _ in keep]), BodyProfile([b for _, b in keep])

    def views(self, frame: torch.Tensor | None) -> list[torch.Tensor]:
        """Each matrix with its columns turned onto ``frame`` (``d x m``; None: all columns)."""
        return [m.w if frame is None else m.w @ frame for m in self.matrices]


def _matrix(key: str, stored: torch.Tensor, writer: bool, rows: int,
            gain: torch.Tensor | None, norms: bool, device: torch.device | None,
            signed: bool = False) -> Matrix:
    """A profile matrix from the stored one (``writer``: hidden coordinates are its rows):
    ``rows`` of its rows, evenly spread, in float32 with ``gain`` folded in where it fits, and
    with ``norms`` the log norms of all its columns."""
    axis = 1 if writer else 0  # the stored axis of rows (neurons, head dimensions)
    n = stored.shape[axis]
    part = (stored.index_select(axis, torch.linspace(0, n - 1, rows).round().long().unique())
            if n > rows else stored)
    w = unit_magnitude(part.to(device, torch.float32))
    w = w.T if writer else w
    fold = gain is not None and gain.shape[0] == w.shape[1]
    if fold:
        w = w * gain
    log_norm = None
    if norms:
        log_norm = _log_column_norms(stored, writer, device)
        if fold:
            log_norm = log_norm + gain.abs().clamp_min(1e-30).log()
    return Matrix(key, w, signed=signed, log_norm=log_norm)


def _log_column_norms(stored: torch.Tensor, writer: bool,
                      device: torch.device | None) -> torch.Tensor:
    """Log norms of the hidden coordinates' slices of ``stored`` (columns of a reader, rows of a
    writer), ``CHUNK_ROWS`` stored rows at a time, so that a wide matrix is never held whole in
    float32; summed on one power-of-two scale, so that no square overflows."""
    shift = magnitude_shift(stored)
    d = stored.shape[0 if writer else 1]
    acc = torch.zeros(d, dtype=torch.float32, device=device)
    for s in range(0, stored.shape[0], CHUNK_ROWS):
        c = stored[s:s + CHUNK_ROWS].to(device, torch.float32)
        if shift:
            c = times_power_of_two(c, -shift)
        if writer:
            acc[s:s + c.shape[0]] = c.square().sum(dim=1)
        else:
            acc += c.square().sum(dim=0)
    # the shift back as a logarithm: log norms of any magnitude, exactly
    return 0.5 * acc.clamp_min(1e-60).log() + shift * math.log(2.0)


def plan(base: Model, cand: Model) -> Plan | None:
    """The layers and rows the profile reads (``plan_for`` on the base's depth, each base layer
    paired with the candidate's at the same relative depth), or None without layers."""
    nb, nc = base.layout.num_layers, cand.layout.num_layers
    if nb == 0 or nc == 0:
        return None
    matrices = max(sum(r in layer.roles for r in (Q, K, V, O, GATE, UP, DOWN))
                   for layer in base.layout.layers)
    found = plan_for(nb, base.layout.hidden_size, matrices)
    return replace(found, cand_layers=[relative_layer(i, nb, nc) for i in found.layers])


def relative_layer(i: int, depth: int, other: int) -> int:
    """The layer at layer ``i``'s relative depth (of ``depth`` layers) in a model of ``other``
    layers: first to first, last to last, the rest in proportion. Pruned or duplicated layers
    leave most layers next to the one they came from."""
    if depth == other:
        return i
    return round(i * (other - 1) / (depth - 1)) if depth > 1 else 0


def plan_for(depth: int, hidden: int, matrices: int) -> Plan:
    """``PROFILE_LAYERS`` layers spread over ``depth``, each of its ``matrices`` profile matrices
    sampled to the rows that keep the whole within ``SAMPLE_ELEMENTS``; where that would leave
    fewer than ``MIN_ROWS`` rows, fewer layers (at least ``MIN_LAYERS``). More layers give more
    features per coordinate; more rows make each feature of the base (read from the sample in
    the null draws too) less noisy."""
    per_row = max(hidden, 1) * max(matrices, 1)
    count = min(PROFILE_LAYERS, depth)
    rows = SAMPLE_ELEMENTS // (per_row * count)
    if rows < MIN_ROWS:
        count = min(depth, max(MIN_LAYERS, SAMPLE_ELEMENTS // (per_row * MIN_ROWS)))
        rows = max(MIN_ROWS, SAMPLE_ELEMENTS // (per_row * count))
    layers = spread(list(range(depth)), count)
    return Plan(layers, int(rows), list(layers))


def _standardise(f: torch.Tensor) -> torch.Tensor:
    """``[features, m]`` log norms: each feature replaced by the normal scores of its ranks over
    the columns, the features whitened over the columns (``_whiten``), then each column (a
    coordinate's profile) centred and scaled over the features.

    Both steps answer the privileged basis of trained models, which a rotated base of the null
    draws lacks. Normal scores: a few coordinates far out in the tail would dominate z-scores.
    Whitening: in a trained model a coordinate's norms move together across layers and roles
    (its profile has few effective dimensions), in a turned base much less; two profile sets of
    few dimensions match better by chance, so the rotation null was anti-conservative (276
    independent calibration pairs: 8% of p below 0.01, 32% below 0.1; method section 3)."""
    m = f.shape[1]
    ranks = torch.argsort(torch.argsort(f, dim=1), dim=1).to(f.dtype)
    f = _whiten(torch.special.ndtri((ranks + 0.5) / max(m, 1)))
    f = f - f.mean(dim=0, keepdim=True)
    return f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)


def _whiten(f: torch.Tensor) -> torch.Tensor:
    """``f`` (``[features, m]``, each feature of unit scale) times the inverse square root of
    its feature covariance over the columns, shrunk by ``WHITEN_SHRINK`` towards the identity
    (there may be fewer columns than features). On the CPU in float64: a few thousand columns
    of at most 56 features, and no accelerator's eigensolver or float64 to depend on."""
    x = f.to("cpu", torch.float64)
    c = x @ x.T / max(x.shape[1], 1)
    c = c / c.diagonal().mean().clamp_min(1e-300)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    vals, vecs = torch.linalg.eigh((1.0 - WHITEN_SHRINK) * c + WHITEN_SHRINK * eye)
    return ((vecs * vals.clamp_min(1e-12).rsqrt()) @ vecs.T @ x).to(f.device, f.dtype)


def _features(views: list[torch.Tensor]) -> torch.Tensor:
    """``_standardise`` of the views' log column norms."""
    return _standardise(torch.stack([v.norm(dim=0).clamp_min(1e-30).log() for v in views]))


def _signs(bv: list[torch.Tensor], cv: list[torch.Tensor], signed: list[bool],
           rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Signs of the matched coordinates (module docstring): the leading eigenvector of the
    summed entrywise products of the two Grams, then one global sign from the signed
    matrices' column sums."""
    r = torch.as_tensor(rows)
    c = torch.as_tensor(cols)
    m = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    t = torch.zeros(len(rows), dtype=torch.float64)
    for b, w, s in zip(bv, cv, signed, strict=True):
        yb = b.index_select(1, r.to(b.device))
        yc = w.index_select(1, c.to(w.device))
        gb, gc = yb.T @ yb, yc.T @ yc
        prod = (gb / gb.norm().clamp_min(1e-30)) * (gc / gc.norm().clamp_min(1e-30))
        m += prod.to("cpu", torch.float64)
        if s:
            t += (yb.sum(dim=0) * yc.sum(dim=0)).to("cpu", torch.float64)
    m.fill_diagonal_(0.0)
    require_finite(m.numpy(), "the body alignment's sign matrix")
    # power iteration on m + shift I (the shift, a bound on |eigenvalues|, makes the leading
    # eigenvector the top one): a d x d eigendecomposition per null draw would cost 4 d^3
    shift = float(m.abs().sum(dim=1).max()) + 1e-30
    v = torch.ones(len(rows), dtype=torch.float64) / max(len(rows), 1) ** 0.5
    for _ in range(SIGN_ITERS):
        v = m @ v + shift * v
        v = v / v.norm().clamp_min(1e-300)
    sign = torch.where(v < 0, -1.0, 1.0).to(torch.float64)
    if float((sign * t).sum()) < 0:
        sign = -sign
    return sign.numpy()


def recover(base: BodyProfile, cand: BodyProfile, frame: torch.Tensor | None,
            ) -> tuple[HiddenAlignment, float]:
    """The signed permutation mapping candidate coordinates onto the base's (``frame``: the
    base seen through ``d x m`` orthonormal directions, e.g. a rotation; None: its own
    coordinates), and the mean matched profile correlation."""
    bv, cv = base.views(frame), cand.views(None)
    fb = _features(bv) if frame is not None else base.features()
    corr = (fb.T @ cand.features()).to("cpu", torch.float64).numpy()
    require_finite(corr, "the body alignment's profile correlations")
    rows, cols = max_assignment(corr)
    m = corr.shape[0]
    perm = np.full(m, -1)
    perm[rows] = cols
    sign = np.ones(m)
    sign[rows] = _signs(bv, cv, [x.signed for x in base.matrices], rows, cols)
    matched = np.zeros(m)
    matched[rows] = corr[rows, cols]
    return HiddenAlignment(perm, sign, np.ones(m), matched), float(matched[rows].mean())
