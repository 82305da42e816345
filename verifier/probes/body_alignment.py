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
  when a norm gain is folded into its readers. Each feature is centred and scaled over the
  coordinates, base and candidate profiles are correlated across features, and a linear
  assignment on the correlations matches them (as ``hidden_alignment`` does with token columns).
* **which sign** (norms have none): matched coordinates ``a, b`` have reader Gram entries
  ``G_cand[a, b] = s_a s_b G_base[a, b]``; the signs are those of the leading eigenvector of the
  entrywise product of the two models' Grams, summed over matrices. That leaves one sign for the
  whole space, which is a true symmetry of the body (every reader and writer negated); the gate's
  column sums, which flip with it and with nothing else the vendor may do (a gate row cannot be
  negated through SiLU), fix it.

Statistic: the mean matched profile correlation. Null: the rotation null of the other probes
(``rotation_null``): the base's hidden space turned at random (its readers ``W R``, writers
``R^T W``), the alignment recovered again, and every statistic computed again. The pairing built
on this alignment (``Pairing(..., body=...)``) then runs neuron matching unchanged.

It runs only where the embeddings align at null level (a derived pair whose embeddings align
needs no second look) and for models of equal depth (the profile compares layer ``i`` with layer
``i``). It is a second look, so it spends a share ``SHARE`` of the verdict's alpha
(``verdict.decide``), and it carries no power check: it can show a derivation, never vouch for
independence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verifier.architectures.layout import ATTN_NORM, DOWN, GATE, MLP_NORM, UP, K, O, Q, V
from verifier.model import Model
from verifier.probes.assignment import max_assignment, require_finite
from verifier.probes.base import spread
from verifier.probes.head_matching import POST_NORM
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.magnitude import unit_magnitude

NAME = "body_alignment"
#: layers read for the profile, spread over the depth: 7 features each
PROFILE_LAYERS = 8
#: float32 elements a model's profile may hold (1 GiB): wide models get fewer layers (at
#: least ``MIN_LAYERS``), since every null draw turns each profile matrix onto its frame
PROFILE_ELEMENTS = 2**28
MIN_LAYERS = 2
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
    norm gain folded in."""

    key: str
    w: torch.Tensor
    #: a gate (or an ungated FFN's up): its column sums fix the global sign
    signed: bool = False


class BodyProfile:
    """A model's profile matrices: ``Matrix`` per (layer, role) of ``layers``."""

    def __init__(self, matrices: list[Matrix]) -> None:
        self.matrices = matrices
        self.keys = [m.key for m in matrices]
        self.dim = int(matrices[0].w.shape[1]) if matrices else 0
        #: ``_features`` of the matrices as they are (the candidate's: the same in every draw)
        self._own: torch.Tensor | None = None

    def features(self) -> torch.Tensor:
        """``_features`` of the unturned matrices, computed once."""
        if self._own is None:
            self._own = _features(self.views(None))
        return self._own

    @classmethod
    def of(cls, model: Model, layers: list[int], device: torch.device | None = None,
           ) -> BodyProfile:
        out: list[Matrix] = []
        fold = model.layout.family not in POST_NORM
        for i in layers:
            roles = model.layout.layers[i].roles
            for norm, readers in READERS:
                gain = (unit_magnitude(model.load(roles[norm]).to(torch.float32))
                        if fold and norm in roles else None)
                gated = GATE in roles
                for r in readers:
                    if r not in roles:
                        continue
                    w = unit_magnitude(model.load(roles[r]).to(device, torch.float32))
                    if gain is not None and gain.shape[0] == w.shape[1]:
                        w = w * gain.to(w.device)
                    out.append(Matrix(f"{i}.{r}", w, signed=r == GATE or (r == UP and not gated)))
            for r in WRITERS:
                if r in roles:
                    w = unit_magnitude(model.load(roles[r]).to(device, torch.float32))
                    out.append(Matrix(f"{i}.{r}", w.T))
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


def profile_layers(base: Model, cand: Model) -> list[int] | None:
    """The layers the profile reads (``PROFILE_LAYERS`` spread over the depth, fewer where
    they would hold more than ``PROFILE_ELEMENTS``), or None when the depths differ."""
    n = base.layout.num_layers
    if n != cand.layout.num_layers or n == 0:
        return None
    sizes = {t.name: t.numel for t in base.reader.tensors()}
    per_layer = max(max(sum(sizes.get(ref.tensor, 0) for r, ref in layer.roles.items()
                            if r in (Q, K, V, O, GATE, UP, DOWN))
                        for layer in base.layout.layers), 1)
    count = min(PROFILE_LAYERS, max(MIN_LAYERS, PROFILE_ELEMENTS // per_layer))
    return spread(list(range(n)), count)


def _features(views: list[torch.Tensor]) -> torch.Tensor:
    """``[features, m]``: log column norms, each feature centred and scaled over the columns,
    then each column (a coordinate's profile) centred and scaled over the features."""
    f = torch.stack([v.norm(dim=0).clamp_min(1e-30).log() for v in views])
    f = f - f.mean(dim=1, keepdim=True)
    f = f / f.std(dim=1, keepdim=True).clamp_min(1e-12)
    f = f - f.mean(dim=0, keepdim=True)
    return f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)


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
