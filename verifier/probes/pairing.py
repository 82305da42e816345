"""One base/candidate comparison: the observed hidden alignment, the null draws, and the
statistics of every probe under both, computed lazily and cached.

``Pairing`` is used twice per verification: on the real pair, and in the power check on the
base against a noisy, signed-permuted copy of itself, so that both go through exactly the same
procedure (alignment recovery included).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from backends.compute import Compute
from verifier.parallel import ordered_map
from verifier.probes import head_matching as heads
from verifier.probes import hidden_alignment as hidden
from verifier.probes import neuron_matching as neurons
from verifier.probes.body_alignment import BodyProfile
from verifier.probes.body_alignment import recover as body_recover
from verifier.probes.rotation_null import haar_rotation
from verifier.readahead import READ_AHEAD

T = TypeVar("T")


class LazyLayers(Mapping[int, T]):
    """Per-layer weights loaded from the checkpoint when asked for, the last ``keep`` kept.

    A probe visits layers one or two at a time, so a model's FFNs or circuits are never all in
    memory at once (at 7B, the float32 FFNs of one model alone take 17 GiB)."""

    def __init__(self, layers: list[int], load: Callable[[int], T], keep: int = 2,
                 will_need: Callable[[int], None] | None = None) -> None:
        self._layers = list(layers)
        self._load = load
        self._keep = keep
        self._cache: OrderedDict[int, T] = OrderedDict()
        #: starts reading a layer in the background (``Model.will_need``): each load starts
        #: the next ``READ_AHEAD`` layers of the visiting order, so the disk works while this
        #: one is computed
        self._will_need = will_need
        self._ahead: dict[int, list[int]] = {}
        self._advised: set[int] = set()
        self.expect(self._layers, start=False)

    def expect(self, order: Sequence[int], *, start: bool = True) -> None:
        """The order the layers will be visited in (ascending until told): the first layers
        start reading now (``start``), and each load starts the ones after it. A hint; any
        order may still be asked."""
        order = [i for i in order if i in self._layers]
        # a layer visited twice reads ahead from its last visit (a hint: good enough)
        self._ahead = {i: order[p + 1:p + 1 + READ_AHEAD] for p, i in enumerate(order)}
        self._advised = set()
        if start:
            self._read_ahead(order[:READ_AHEAD])

    def _read_ahead(self, layers: list[int]) -> None:
        for i in layers:
            if i not in self._cache and i not in self._advised:
                self._advised.add(i)
                self.will_need(i)

    def will_need(self, layer: int) -> None:
        """Start reading ``layer`` from the disk in the background, unless it is held (a
        hint: nothing is loaded)."""
        if self._will_need is not None and layer in self._layers and layer not in self._cache:
            self._will_need(layer)

    def __getitem__(self, layer: int) -> T:
        if layer not in self._layers:
            raise KeyError(layer)
        if layer in self._cache:
            self._cache.move_to_end(layer)
            return self._cache[layer]
        # make room first: a layer being read never coexists with more than keep - 1 others
        while len(self._cache) >= self._keep:
            self._cache.popitem(last=False)
        value = self._load(layer)
        self._cache[layer] = value
        self._read_ahead(self._ahead.get(layer, []))
        return value

    def __contains__(self, layer: object) -> bool:
        # Mapping's default reads the layer to answer
        return layer in self._layers

    def __iter__(self) -> Iterator[int]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)


def expect(layers: Mapping[int, T], order: Sequence[int]) -> None:
    """Tell lazily read ``layers`` the order they will be visited in (``LazyLayers.expect``);
    layers already in memory need no telling."""
    if isinstance(layers, LazyLayers):
        layers.expect(order)


@dataclass
class Side:
    """What the probes need of one model: embedding rows of the shared tokens (``[n, d]``, the
    same token order on both sides), dense FFNs and attention circuits by layer (plain dicts, or
    ``LazyLayers`` that read each layer when asked). FFNs may be held as stored (CPU, stored
    dtype); every use places them (``FFNWeights.placed``), which is a no-op for weights already
    in float32 on the device."""

    embed: torch.Tensor
    ffn: Mapping[int, neurons.FFNWeights] = field(default_factory=dict)
    circuits: Mapping[int, heads.HeadCircuits] = field(default_factory=dict)


class Pairing:
    """Observed alignment plus ``draws`` null alignments of a Haar-rotated base.

    Neuron features are compared in the *candidate's* coordinates: the candidate's are computed
    once per layer, in its own basis, and each base feature set (observed, or one null draw) is
    carried into that basis by the alignment. Balancing commutes with signed permutations, so
    this equals aligning the candidate for every draw, at the cost of moving the (sampled) base
    neurons instead of all candidate neurons. A base layer wider than ``sample`` neurons is
    represented by a fixed random sample of ``sample`` of them, matched against every candidate
    neuron (a rectangular assignment): the same sample in the observed pair and in every null
    draw, so the test stays exact while its cost falls by ``F / sample``.
    """

    def __init__(self, base: Side, cand: Side, rng: np.random.Generator, draws: int,
                 sample: int = neurons.MAX_BASE_NEURONS,
                 same_base: Pairing | None = None,
                 compute: Compute | None = None,
                 body: tuple[BodyProfile, BodyProfile] | None = None) -> None:
        """``same_base``: another pairing of the same base whose null rotations, and the
        rotated base's column norms, are reused (the power check does: its null is the same
        rotated base; a Haar draw costs a QR of ``d x d`` and its norms a ``d x d`` product)
        instead of drawing ``draws`` new ones. ``compute``: where the rotations' QR runs (the
        sides' tensors are already on its device). ``body``: the two models' layer profiles,
        which then give the alignment, observed and in every null draw, instead of the
        embeddings (``body_alignment``)."""
        self.base, self.cand = base, cand
        self.compute = compute or Compute()
        d = base.embed.shape[1]
        #: hidden coordinates the probes compare (all of the base's here)
        self.width = int(d)
        if body is not None:
            self.rotations = [haar_rotation(d, rng, self.compute) for _ in range(draws)]
            self.null_norms = []
            self.align, self.embed_stat = body_recover(*body, None)
            self._finish(ordered_map(lambda rot: body_recover(*body, rot), self.rotations),
                         sample, rng)
            return
        ys = hidden.standardise(cand.embed)
        self.align, self.embed_stat = hidden.recover(
            hidden.standardise(base.embed), ys, (base.embed.std(dim=0), cand.embed.std(dim=0))
        )
        rotated = hidden.RotatedCorrelations(base.embed, ys, gram=same_base is None)
        # all rotations first (the same rng draws, in the same order, however the assignments
        # below are scheduled); each draw's correlations leave the device in turn while earlier
        # draws' assignments are solved in threads
        if same_base is None:
            self.rotations = [haar_rotation(d, rng, self.compute) for _ in range(draws)]
            self.null_norms = [rotated.norms(rot) for rot in self.rotations]
        else:
            self.rotations, self.null_norms = same_base.rotations, same_base.null_norms
        self._finish(ordered_map(hidden.recover_from_corr,
                                 (Compute.numpy64(rotated(rot, norms))
                                  for rot, norms in zip(self.rotations, self.null_norms,
                                                        strict=True))),
                     sample, rng)

    def _finish(self, solved: Iterator[tuple[hidden.HiddenAlignment, float]], sample: int,
                rng: np.random.Generator) -> None:
        """Keep the null draws' alignments (``solved``: in draw order, each typically solved
        in a thread while the next is computed), then fix the seed of the sampled neurons and
        heads."""
        self.null_aligns: list[hidden.HiddenAlignment] = []
        self.embed_null: list[float] = []
        for align, stat in solved:
            self.null_aligns.append(align)
            self.embed_null.append(stat)
        self.sample = sample
        self._sample_seed = int(rng.integers(2**63))
        self._fb: dict[int, neurons.NeuronFeatures] = {}
        self._fc: tuple[int, neurons.NeuronFeatures] | None = None
        self._fs: tuple[int, neurons.FFNWeights] | None = None
        self._hs: tuple[int, heads.HeadCircuits] | None = None
        self._hc: tuple[int, heads.HeadCircuits] | None = None
        self._matches: dict[tuple[int, int], tuple[float, np.ndarray, np.ndarray]] = {}

    @property
    def base_coords(self) -> np.ndarray:
        """The base coordinates ``align`` maps, in its order (all of them here)."""
        return np.arange(self.width)

    def sibling(self, cand: Side, rng: np.random.Generator) -> Pairing:
        """The same base (its null rotations reused) against another candidate: the power
        check's pairing."""
        return Pairing(self.base, cand, rng, len(self.rotations), self.sample, same_base=self,
                       compute=self.compute)

    def observed_neurons(self, base: neurons.FFNWeights, cand: neurons.FFNWeights,
                         rows: torch.Tensor, cols: torch.Tensor,
                         ) -> tuple[neurons.FFNWeights, neurons.FFNWeights]:
        """Base neurons ``rows`` and candidate neurons ``cols`` (the observed matching), placed,
        the candidate's in the base's coordinates by the observed alignment."""
        fb = base.neurons_permuted(rows).placed(self.compute)
        fc = cand.neurons_permuted(cols).placed(self.compute).aligned(self.align)
        return fb, fc

    def generator(self, *keys: int) -> np.random.Generator:
        """A generator for a fixed sample (of neurons, heads or expert neurons) keyed by
        ``keys``: drawn from the pairing's seed, never from the data, and the same in the
        observed pair and every null draw."""
        return np.random.default_rng([self._sample_seed, *keys])

    # k == -1 is the observed pair; k >= 0 the k-th null draw.
    def _align(self, k: int) -> hidden.HiddenAlignment:
        return self.align if k < 0 else self.null_aligns[k]

    def base_rows(self, a: int) -> torch.Tensor | None:
        """The sampled neurons of base layer ``a`` (sorted), or None when all are used."""
        n = self.base.ffn[a].up.shape[0]
        if n <= self.sample:
            return None
        gen = self.generator(a)
        return torch.as_tensor(np.sort(gen.choice(n, self.sample, replace=False)))

    def _base_features(self, a: int, k: int) -> neurons.NeuronFeatures:
        """Base layer ``a`` (sampled) as draw ``k`` compares it (``base_features_of``); the
        observed features are kept per layer."""
        if k < 0 and a in self._fb:
            return self._fb[a]
        feats = self.base_features_of(self._base_sample(a), k)
        if k < 0:
            self._fb[a] = feats
        return feats

    #: whether the candidate's features depend on the draw (not here: they are computed in the
    #: candidate's own basis, and each draw moves the base's features into it)
    features_per_draw = False

    def base_features_of(self, ffn: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        """Base neurons ``ffn`` (placed) as draw ``k`` compares them with the candidate's:
        rotated for a null draw, balanced, moved into the candidate's coordinates."""
        if k >= 0:
            ffn = ffn.rotated(self.rotations[k])
        return neurons.NeuronFeatures.of(ffn).into(self._align(k), self.cand.embed.shape[1])

    def cand_features_of(self, ffn: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        """Candidate neurons ``ffn`` as draw ``k`` compares them (own basis: every draw)."""
        return neurons.NeuronFeatures.of(ffn.placed(self.compute))

    def pool(self, units: list[neurons.FFNWeights]) -> neurons.FFNWeights:
        """Candidate FFNs (a MoE layer's experts) as one neuron set, laid out as
        ``pooled_features_of`` reads it: one copy, in the stored dtype."""
        return neurons.concat(units)

    def pooled_features_of(self, pooled: neurons.FFNWeights, k: int) -> neurons.NeuronFeatures:
        """``cand_features_of`` for a ``pool``: all its neurons balanced together."""
        return self.cand_features_of(pooled, k)

    def observed_pool_features(self, units: list[neurons.FFNWeights]) -> neurons.NeuronFeatures:
        """``pooled_features_of(pool(units), -1)``: a layer that gets no null draws needs only
        the observed pairing's features (on a frame, without the pool's copy of the layer)."""
        return self.pooled_features_of(self.pool(units), -1)

    def observed_base_features(self, ffn: neurons.FFNWeights) -> neurons.NeuronFeatures:
        """``base_features_of(ffn.placed(compute), -1)`` of base neurons ``ffn`` as stored (on a
        frame, only the frame's columns are upcast)."""
        return self.base_features_of(ffn.placed(self.compute), -1)

    def _base_sample(self, a: int) -> neurons.FFNWeights:
        """Base layer ``a``'s sampled neurons in float32 on the device: the rows are taken
        before the upcast, and the last layer's sample is kept, since every null draw of a layer
        rotates the same sample."""
        if self._fs is None or self._fs[0] != a:
            ffn = self.base.ffn[a]
            rows = self.base_rows(a)
            if rows is not None:
                ffn = ffn.neurons_permuted(rows)
            self._fs = (a, ffn.placed(self.compute))
        return self._fs[1]

    def _cand_features(self, j: int) -> neurons.NeuronFeatures:
        """Candidate layer ``j``'s features in its own coordinates (the last layer asked for is
        kept: the probes visit one candidate layer at a time)."""
        if self._fc is None or self._fc[0] != j:
            self._fc = None  # release the previous layer before computing the next
            self._fc = (j, neurons.NeuronFeatures.of(self.cand.ffn[j].placed(self.compute)))
        return self._fc[1]

    def ffn_similarity(self, a: int, j: int, k: int = -1) -> torch.Tensor:
        """``[sampled base neurons, candidate neurons]`` similarities."""
        return neurons.similarity(self._base_features(a, k), self._cand_features(j))

    def ffn_stat(self, a: int, j: int, k: int = -1) -> float:
        """Mean matched neuron similarity of (sampled) base layer ``a`` and candidate layer
        ``j``."""
        if k >= 0:
            return neurons.match(self.ffn_similarity(a, j, k))[0]
        stat, rows, cols = neurons.match(self.ffn_similarity(a, j))
        # kept (a few hundred indices per compared pair): norm drift asks for the matched
        # neurons again, and recomputing them reads the candidate layer again
        self._matches[(a, j)] = (stat, rows, cols)
        return stat

    def ffn_null(self, a: int, j: int) -> list[float]:
        """``ffn_stat`` of every null draw (similarities on the device, one draw after another;
        their assignments side by side in threads)."""
        sims = (Compute.numpy64(self.ffn_similarity(a, j, k)) for k in range(len(self.rotations)))
        return [m[0] for m in ordered_map(neurons.match, sims)]

    def matched_neurons(self, a: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Observed matching as (base neuron indices, candidate neuron indices)."""
        if (a, j) not in self._matches:
            self.ffn_stat(a, j)
        _, rows, cols = self._matches[(a, j)]
        sample = self.base_rows(a)
        return (rows if sample is None else sample.numpy()[rows]), cols

    def base_groups(self, a: int) -> torch.Tensor | None:
        """The sampled KV groups of base layer ``a`` (sorted), or None when all heads are used:
        whole groups, at least ``MAX_BASE_HEADS`` query heads, fixed across null draws."""
        c = self.base.circuits[a]
        per = c.heads // c.groups
        keep = -(-heads.MAX_BASE_HEADS // per)
        if keep >= c.groups:
            return None
        gen = self.generator(a, 1)
        return torch.as_tensor(np.sort(gen.choice(c.groups, keep, replace=False)))

    def head_stat(self, a: int, j: int, k: int = -1) -> float:
        """Mean matched head similarity of (sampled) base layer ``a`` and candidate layer
        ``j``: rotating a layer's factors costs ``~4 d^3``, so wide models match a fixed sample
        of base KV groups against all candidate heads, as neurons are sampled."""
        b = self._base_heads(a)
        if k >= 0:
            b = b.rotated(self.rotations[k])
        return heads.match_heads(b, self._cand_heads(j).aligned(self._align(k)))

    def _base_heads(self, a: int) -> heads.HeadCircuits:
        """Base layer ``a``'s sampled KV groups (all when none are sampled), placed and
        contiguous: the sample is taken before the upcast, and the last layer's is kept, since
        every null draw of a layer rotates the same one."""
        if self._hs is None or self._hs[0] != a:
            self._hs = None
            b = self.base.circuits[a]
            groups = self.base_groups(a)
            self._hs = (a, (b if groups is None else b.select_groups(groups))
                        .placed(self.compute).contiguous())
        return self._hs[1]

    def _cand_heads(self, j: int) -> heads.HeadCircuits:
        """Candidate layer ``j``'s circuits placed (the last layer asked for is kept: every
        null draw of a layer aligns the same circuits)."""
        if self._hc is None or self._hc[0] != j:
            self._hc = None  # release the previous layer's before placing the next
            self._hc = (j, self.cand.circuits[j].placed(self.compute))
        return self._hc[1]

    def head_null(self, a: int, j: int) -> list[float]:
        return [self.head_stat(a, j, k) for k in range(len(self.rotations))]


class Disguise:
    """What a vendor does for free to hide a copy: a random signed permutation of the hidden
    space (``pi`` and ``sign``, drawn from ``rng``) and Gaussian noise (drawn from ``gen`` on the
    CPU, so every device gets the same noise)."""

    def __init__(self, d: int, device: torch.device, rng: np.random.Generator,
                 gen: torch.Generator) -> None:
        self.pi = torch.as_tensor(rng.permutation(d)).to(device)
        self.sign = torch.as_tensor(rng.choice([-1.0, 1.0], d), dtype=torch.float32).to(device)
        self.gen = gen

    def __call__(self, w: torch.Tensor, drift: float) -> torch.Tensor:
        """``w`` (hidden coordinates last) plus noise of relative size ``drift``, then signed
        and permuted: candidate column ``c`` holds base column ``pi[c]``."""
        return self._noise(w, drift).add_(w).mul_(self.sign)[..., self.pi]

    def factor(self, f: heads.Factor, drift: float) -> heads.Factor:
        """A stack of head factors disguised as ``__call__`` does, with relative noise
        ``drift``. A product (``heads.LowRank``: latent attention) stays one, its two parts
        each noised by ``t`` with ``(1 + t^2)^2 - 1 = drift^2`` as a vendor training both
        projections would, the signed permutation on its hidden side alone."""
        if not isinstance(f, heads.LowRank):
            return self(f, drift)
        t = ((1.0 + drift**2) ** 0.5 - 1.0) ** 0.5
        return heads.LowRank(left=self._noise(f.left, t).add_(f.left), right=self(f.right, t))

    def rows_(self, w: torch.Tensor, drift: float, cols: torch.Tensor) -> torch.Tensor:
        """The same for a hidden-major ``w`` (hidden coordinates as rows, ``[d, n]``) that the
        caller owns: the noise added into ``w`` in place, the signed permutation moving whole
        rows, and columns ``cols`` taken in the same gather (two float32 copies of ``w`` alive
        at most, where noise, row and column gathers each made one)."""
        w.add_(self._noise(w, drift))  # w + noise is noise + w: the same sums
        w.mul_(self.sign[:, None])
        return w[self.pi[:, None], cols[None, :]]

    def _noise(self, w: torch.Tensor, drift: float) -> torch.Tensor:
        """Gaussian noise of ``w``'s shape scaled to ``drift`` times ``w``'s norm."""
        noise = torch.randn(w.shape, generator=self.gen, dtype=torch.float32).to(w.device)
        return noise.mul_(drift * w.norm() / noise.norm().clamp_min(1e-12))


def fake_derivative(
    base: Side, layers: list[int], drift: float, rng: np.random.Generator, gen: torch.Generator,
    compute: Compute | None = None, hidden_major: bool = False,
    attention: list[int] | None = None,
) -> Side:
    """The base's ``layers`` as a vendor might hide them: Gaussian noise of relative size
    ``drift`` on every matrix, a random signed permutation of the hidden space, and random
    permutations of the FFN neurons (used to check that the probes have power).
    ``attention``: the layers whose circuits are disguised, if not ``layers``' (a hybrid's
    FFN and attention may lie in different blocks).
    ``hidden_major``: the FFNs are built as ``[d, F]`` matrices (returned as their transposed
    views), the layout a frame pairing takes hidden coordinates from; the same construction,
    with the noise drawn in that layout."""
    device = base.embed.device
    hide = Disguise(base.embed.shape[1], device, rng, gen)
    # circuit factors get noise of relative size s with (1 + s^2)^2 - 1 = drift^2, so that the
    # circuits (products of two factors) carry relative noise ~ drift, like the FFN matrices
    s = ((1.0 + drift**2) ** 0.5 - 1.0) ** 0.5
    out = Side(embed=hide(base.embed, drift))
    for a in layers:
        if a in base.ffn and hidden_major:
            out.ffn[a] = _fake_hidden_major(base.ffn[a], hide, drift, rng, compute or Compute())
        elif a in base.ffn:
            ffn = base.ffn[a].placed(compute or Compute())
            tau = torch.as_tensor(rng.permutation(ffn.up.shape[0])).to(device)
            out.ffn[a] = neurons.FFNWeights(
                gate=hide(ffn.gate, drift)[tau] if ffn.gate is not None else None,
                up=hide(ffn.up, drift)[tau], down=hide(ffn.down, drift)[tau],
            )

    def circuits(a: int) -> heads.HeadCircuits:
        c = base.circuits[a].placed(compute or Compute())
        return heads.HeadCircuits(q=hide.factor(c.q, s), k=hide.factor(c.k, s),
                                  o=hide.factor(c.o, s), v=hide.factor(c.v, s))

    # made when first asked for, and kept: the power check tests the FFN first and drops it, so
    # the noisy circuits never coexist with the noisy FFN. Their noise comes after the FFNs'
    # (for one layer, the order of a direct construction); nothing else draws from ``gen``.
    attn = [a for a in (layers if attention is None else attention) if a in base.circuits]
    out.circuits = LazyLayers(attn, circuits, keep=max(1, len(attn)))
    return out


def _fake_hidden_major(stored: neurons.FFNWeights, hide: Disguise, drift: float,
                       rng: np.random.Generator, compute: Compute) -> neurons.FFNWeights:
    """``fake_derivative``'s FFN built hidden-major (``[d, F]``, returned as transposed views),
    one role at a time, so float32 copies of a whole layer are never all alive."""
    tau = torch.as_tensor(rng.permutation(stored.up.shape[0])).to(compute.device)

    def fake(w: torch.Tensor) -> torch.Tensor:
        # noise added in float32 on the device; the result kept where and as a candidate's layer
        # is, on the CPU in the stored dtype (bf16 rounding is ~2^-9 relative, against noise of
        # relative size ``drift``), and placed by the probes a few columns at a time
        x = compute.put(w.T.contiguous())
        if x.data_ptr() == w.data_ptr():  # a float32 [d, F] as stored: never noise it in place
            x = x.clone()
        out = hide.rows_(x, drift, tau)
        del x  # before the copy in the stored dtype is made
        return out.to("cpu", w.dtype).T

    return neurons.FFNWeights(gate=fake(stored.gate) if stored.gate is not None else None,
                              up=fake(stored.up), down=fake(stored.down))
