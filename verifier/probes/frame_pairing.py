"""A pairing on a sample of the hidden space: wide models compared on ``m`` of their ``d``
hidden directions.

Why: every null draw of the full procedure (``pairing.Pairing``) rotates the base's whole hidden
space: a ``d x d`` QR, two ``d x d`` products and a ``d x d`` assignment, about 4.5 s per draw
on one CPU core at d = 4096, 25 draws per pairing and as many again in the power check. The
read of a 7B pair from a warm page cache takes seconds.

What: the base is seen through a *frame* of ``m`` orthonormal directions of its hidden space:

* in the observed pair, ``m`` base coordinates drawn from the seed before any statistic is seen
  (the columns of the identity they pick);
* in null draw ``k``, the first ``m`` columns ``U_k`` of a Haar rotation (``haar_frame``), i.e.
  ``m`` directions of a base whose basis is as arbitrary as an independent model's.

Each frame direction is matched to one of the candidate's ``d`` coordinates through the
embeddings (column correlations over the shared tokens, an ``m x d`` rectangular assignment on
``|corr|``: the same recovery as ``hidden_alignment``, for ``m`` base columns), and every probe
then compares base and candidate on those ``m`` coordinates only: base weights projected on the
frame (``W[:, coords]`` or ``W U_k``), candidate weights at the matched coordinates, signed.
Balancing, similarities and assignments are those of the full procedure, in ``m`` dimensions.

Validity: the observed statistic and every null draw go through the same procedure; under
"trained independently" the base's coordinates are no more related to the candidate's than any
rotated directions are, which is what the full rotation null assumes of all ``d``
coordinates, here of ``m`` of them (the first ``m`` columns of a Haar rotation are exactly a
Haar frame). Power: a derived model's coordinates are a signed permutation of the base's, so each
sampled coordinate has its counterpart among the candidate's ``d``; statistics are means over
``m`` coordinates and the sampled neurons, and ``scripts/bench_verify.py`` reports the power
check's p-values at each width. The cost of a null draw falls from ``~6 d^3`` to ``~4 T d m``
for the embeddings and ``~2 d m`` per sampled row of a layer.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch

from backends.compute import Compute
from verifier.kept_draws import KeptDraws
from verifier.parallel import ordered_map
from verifier.probes import head_matching as heads
from verifier.probes import hidden_alignment as hidden
from verifier.probes import neuron_matching as neurons
from verifier.probes.body_alignment import BodyProfile
from verifier.probes.body_alignment import recover as body_recover
from verifier.probes.pairing import Pairing, Side
from verifier.probes.rotation_null import haar_frame

#: hidden directions compared by default in models wider than this (``--hidden-sample``)
DEFAULT_WIDTH = 128
#: shared tokens per frame direction, and at least ``MIN_TOKENS``: a correlation over T tokens
#: has noise ~1/sqrt(T) (0.022 at 2048), the best of 4096 wrong candidate coordinates sits near
#: 0.09, a quarter of what the power check's matched coordinates keep at drift 3 (~0.32)
TOKENS_PER_DIRECTION = 8
MIN_TOKENS = 2048


def token_budget(hidden_size: int, width: int) -> int:
    """Shared tokens for an ``width``-direction frame of a ``hidden_size`` space (never more
    than the full alignment would use)."""
    return min(hidden.token_budget(hidden_size), max(MIN_TOKENS, TOKENS_PER_DIRECTION * width))


class FramePairing(Pairing):
    """``Pairing`` on an ``width``-direction frame of the base's hidden space (module docstring).

    ``align`` maps the ``width`` frame coordinates (``coords`` of the base, in order) to
    candidate coordinates; ``rotations`` holds the null draws' ``d x width`` frames."""

    def __init__(self, base: Side, cand: Side, rng: np.random.Generator, draws: int,
                 sample: int = neurons.MAX_BASE_NEURONS, width: int = DEFAULT_WIDTH,
                 same_base: FramePairing | None = None,
                 compute: Compute | None = None,
                 body: tuple[BodyProfile, BodyProfile] | None = None) -> None:
        """``body``: the two models' layer profiles, which then match the frame to the
        candidate's coordinates (observed and in every null draw) instead of the embeddings
        (``body_alignment``)."""
        self.base, self.cand = base, cand
        self.compute = compute or Compute()
        d = base.embed.shape[1]
        if same_base is None:
            self.coords = np.sort(rng.choice(d, width, replace=False))
            self.rotations = [haar_frame(d, width, rng, self.compute) for _ in range(draws)]
            # the rotated base's standardised embedding columns depend on the base alone
            self._null_xs = ([] if body is not None else
                             [hidden.standardise(base.embed @ frame) for frame in self.rotations])
        else:
            self.coords, self.rotations = same_base.coords, same_base.rotations
            self._null_xs = same_base._null_xs
        self.width = int(self.coords.size)
        ones = np.ones(self.width)
        self._select = hidden.HiddenAlignment(self.coords, ones, ones, ones)
        if body is not None:
            chosen = torch.zeros(d, self.width, dtype=torch.float32)
            chosen[torch.as_tensor(self.coords), torch.arange(self.width)] = 1.0
            self.align, self.embed_stat = body_recover(*body, chosen.to(self.compute.device))
            self._finish(ordered_map(lambda frame: body_recover(*body, frame), self.rotations),
                         sample, rng)
        else:
            ys = hidden.standardise(cand.embed)
            xo = self._select.cols(base.embed)
            self.align, self.embed_stat = hidden.recover(
                hidden.standardise(xo), ys,
                (xo.to(torch.float32).std(dim=0), cand.embed.std(dim=0)))
            self._finish(ordered_map(hidden.recover_from_corr,
                                     (Compute.numpy64(xs.T @ ys) for xs in self._null_xs)),
                         sample, rng)
        # the candidate layer under null draws, hidden-major (each draw takes its own columns)
        self._major: tuple[int, neurons.FFNWeights] | None = None
        self._heads_major: tuple[int, heads.HiddenMajorCircuits] | None = None
        #: the base's side of the null draws, kept for later verifications (``keep``)
        self.kept: KeptDraws | None = None

    def fingerprint(self) -> str:
        """A digest of what fixes the base's side of every null draw besides the base itself:
        the frame's coordinates and rotations, and the seed and size of the neuron and head
        samples (``verifier.kept_draws``)."""
        h = hashlib.sha256(np.ascontiguousarray(self.coords, dtype=np.int64).tobytes())
        for rot in self.rotations:
            h.update(rot.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        h.update(f"{self._sample_seed}/{self.sample}/{heads.MAX_BASE_HEADS}".encode())
        return h.hexdigest()

    def keep(self, kept: KeptDraws | None) -> None:
        """Serve the base's projections onto each draw's frame (sampled neurons and heads of
        a tested layer) from ``kept``, or compute and keep them there."""
        self.kept = kept

    @property
    def base_coords(self) -> np.ndarray:
        return self.coords

    def sibling(self, cand: Side, rng: np.random.Generator) -> FramePairing:
        return FramePairing(self.base, cand, rng, len(self.rotations), self.sample, self.width,
                            same_base=self, compute=self.compute)

    def observed_neurons(self, base: neurons.FFNWeights, cand: neurons.FFNWeights,
                         rows: torch.Tensor, cols: torch.Tensor,
                         ) -> tuple[neurons.FFNWeights, neurons.FFNWeights]:
        """On the frame: base neurons ``rows`` at the sampled coordinates, candidate neurons
        ``cols`` at the coordinates matched to them, signed; both placed. Only those entries
        are read from the layers as stored (``FFNWeights.take``)."""
        fb = base.take(rows, torch.as_tensor(self.coords)).placed(self.compute)
        fc = cand.take(cols, torch.as_tensor(self.align.perm)).placed(self.compute)
        return fb, fc.times_columns(torch.as_tensor(self.align.sign, dtype=torch.float32))

    features_per_draw = True

    def base_features_of(self, ffn: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        """Base neurons on the frame of draw ``k``, balanced there."""
        return neurons.NeuronFeatures.of(
            ffn.aligned(self._select) if k < 0 else ffn.rotated(self.rotations[k]))

    def cand_features_of(self, ffn: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        """Candidate neurons at the coordinates draw ``k`` matched to the frame, balanced
        there (together: a MoE layer's experts share one balancing)."""
        return neurons.NeuronFeatures.of(ffn.aligned(self._align(k)).placed(self.compute))

    def pool(self, units: list[neurons.FFNWeights]) -> neurons.FFNWeights:
        """Hidden-major (``[d, N]``): every draw takes ``m`` whole rows of it, where a
        neuron-major pool would be gathered by a strided column of each of its ``N`` rows."""
        return neurons.concat(units, hidden_major=True)

    def pooled_features_of(self, pooled: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        return neurons.NeuronFeatures.of(pooled.take_hidden(self._align(k), self.compute))

    def observed_pool_features(self, units: list[neurons.FFNWeights]) -> neurons.NeuronFeatures:
        """Each unit's observed frame columns as stored (signed: exact for signs and zeros),
        concatenated hidden-major into the ``[m, N]`` layout ``take_hidden`` gives, without the
        ``[d, N]`` pool (2.6 s and the layer's size in memory at 72B width): the same numbers,
        the same balancing, bit for bit."""
        frame = neurons.concat([u.aligned(self.align) for u in units], hidden_major=True)
        return neurons.NeuronFeatures.of(frame.placed(self.compute).transposed())

    def observed_base_features(self, ffn: neurons.FFNWeights) -> neurons.NeuronFeatures:
        """The frame's columns taken before the upcast (the frame's own coordinates, unsigned:
        the same numbers as upcasting first)."""
        return neurons.NeuronFeatures.of(ffn.aligned(self._select).placed(self.compute))

    def _cand_frame_features(self, j: int, k: int) -> neurons.NeuronFeatures:
        """Candidate layer ``j`` at the coordinates draw ``k`` matched to the frame, signed,
        balanced there (the observed draw's kept for the last layer asked for). The columns
        are taken from the layer as stored and only they are upcast."""
        if k < 0:  # once per layer: the columns straight from the layer as stored
            if self._fc is None or self._fc[0] != j:
                self._fc = None  # release the previous layer's before computing the next
                self._fc = (j, self.cand_features_of(self.cand.ffn[j], k))
            return self._fc[1]
        # 25 times per layer: rows of a hidden-major copy, made once
        if self._major is None or self._major[0] != j:
            self._major = None
            self._major = (j, self.cand.ffn[j].hidden_major())
        return neurons.NeuronFeatures.of(self._major[1].take_hidden(self._align(k), self.compute))

    def ffn_null(self, a: int, j: int) -> list[float]:
        """The null draws of a layer pair; the layer's hidden-major copy lives only while they
        run."""
        try:
            return super().ffn_null(a, j)
        finally:
            self._major = None

    def head_null(self, a: int, j: int) -> list[float]:
        try:
            return super().head_null(a, j)
        finally:
            self._heads_major = None

    def _base_features(self, a: int, k: int) -> neurons.NeuronFeatures:
        if k < 0 or self.kept is None:
            return super()._base_features(a, k)
        t = self.kept.get("neurons", a, k, lambda: _tensors(Pairing._base_features(self, a, k)))
        put = self.compute.put
        return neurons.NeuronFeatures(gate=put(t["gate"]) if "gate" in t else None,
                                      up=put(t["up"]), down=put(t["down"]))

    def ffn_similarity(self, a: int, j: int, k: int = -1) -> torch.Tensor:
        return neurons.similarity(self._base_features(a, k), self._cand_frame_features(j, k))

    def head_stat(self, a: int, j: int, k: int = -1) -> float:
        return heads.match_heads(self._frame_heads(a, k), self._cand_circuits(j, k))

    def _frame_heads(self, a: int, k: int) -> heads.HeadCircuits:
        """Base layer ``a``'s sampled heads on draw ``k``'s frame (the observed frame's
        coordinates for ``k < 0``), formed (a few heads on a few coordinates: what is kept
        is the same tensors whether computed or read back); kept draws are not computed, nor
        the layer read."""
        if k < 0:
            return self._base_heads(a).aligned(self._select).formed()
        if self.kept is None:
            return self._base_heads(a).rotated(self.rotations[k]).formed()
        t = self.kept.get("heads", a, k, lambda: _tensors(
            self._base_heads(a).rotated(self.rotations[k]).formed()))
        put = self.compute.put
        return heads.HeadCircuits(q=put(t["q"]), k=put(t["k"]), o=put(t["o"]), v=put(t["v"]))

    def _cand_circuits(self, j: int, k: int) -> heads.HeadCircuits:
        """Candidate layer ``j``'s circuit factors at the coordinates draw ``k`` matched to the
        frame, signed and placed: rows of hidden-major copies of the factors as stored (made
        once per layer), only those rows upcast."""
        if self._heads_major is None or self._heads_major[0] != j:
            self._heads_major = None
            self._heads_major = (j, self.cand.circuits[j].hidden_major(self.compute))
        return self._heads_major[1].take(self._align(k), self.compute)


def _tensors(parts: neurons.NeuronFeatures | heads.HeadCircuits) -> dict[str, torch.Tensor]:
    """A feature set's or circuit's tensors by field name (the absent gate left out)."""
    return {f.name: t for f in dataclasses.fields(parts)
            if isinstance(t := getattr(parts, f.name), torch.Tensor)}


__all__ = ["DEFAULT_WIDTH", "FramePairing", "token_budget"]
