"""Probe: was a mixture-of-experts model upcycled from the base's FFNs, and which base neurons
does each expert hold?

Sparse upcycling (Komatsuzaki et al. 2023, "Sparse Upcycling") starts every expert of a MoE
layer as a copy of the dense FFN of the same layer; fine-grained upcycling (Qwen1.5-MoE and the
Qwen2 report, §2.2.2) replicates the dense FFN, shuffles its neurons, cuts them into narrower
experts and re-initialises part of each expert; Drop-Upcycling (Nakamura et al. 2025)
re-initialises a fraction of every expert's neurons. Rescaling the down projections, adding a
new router, copying or not copying a shared expert, and training afterwards leave the kept
neurons recognisable: a kept expert neuron is a base FFN neuron (gate row, up row and down
column) up to the training drift, in the base's hidden coordinates once the hidden alignment
recovered from the embeddings (``pairing.align``) is applied. Comparing per-layer statistics
of whole weight matrices (e.g. the correlation of attention std profiles used in a public 2025
dispute) cannot show this and has no null model; this probe names the neurons.

Neurons. For candidate MoE layer ``j`` and base layer ``a`` let ``B`` be the base FFN (for a MoE
base: all its experts' neurons concatenated, shared experts last) with ``F`` neurons, and
``C`` the ``N`` neurons of all of ``j``'s routed and shared experts, aligned to base coordinates.
Both are balanced as in ``neuron_matching`` (alternating row and column normalisation), the
candidate *jointly over all experts of the layer*: the free per-coordinate rescaling (a norm
gain folded into the weights that read it) is one vector per layer shared by every expert and
by the router, so it is estimated from all ``N`` rows; balancing each expert alone would
estimate it from ``m`` rows (an expert of 32 neurons gives ~12% relative error per coordinate)
and make each expert's features depend on which of its neurons were re-initialised.

* Assignment: per expert, the joint SwiGLU similarity ``neuron_matching.similarity`` (gate cos
  plus ``|cos(up) + cos(down)|``, over 3) of its ``m`` neurons against the ``F`` base neurons,
  and a rectangular linear assignment (Hungarian, one base neuron per expert neuron; an expert
  never holds one neuron twice, two experts may).
* Agreement: the gate row, the up row and the down column of each candidate neuron are matched
  to the base *separately*, by ``cos`` for the gate and ``|cos|`` for up and down (the SwiGLU
  symmetry ``(u, d) -> (c u, d / c)``; plain ``cos`` for non-gated FFNs). A neuron *agrees* when
  all three name the same base neuron. A copied neuron agrees. An unrelated neuron agrees only
  by chance, ~``1/F^2`` up to hubness and the correlation of a neuron's own gate and up rows;
  and a *new* neuron trained in the base's residual stream (new experts on top of the base's
  attention and embeddings) reads and writes the same hidden directions, which lifts each of
  its three cosines and its joint similarity well above the rotation null (z ~ 10-25 for the
  mean similarity in the zoo), but does not reproduce one base neuron's gate, up and down at
  once: agreement is the copy-specific signal.

Per expert neuron, a match is significant when (i) its layer is upcycled (the layer's test
below rejects at ``alpha``) and (ii) its assigned similarity exceeds ``tau_j``, the
``THRESHOLD_QUANTILE`` (99.9th percentile) of the assigned similarities of all of layer ``j``'s
neurons under the rotation null draws, so that by chance at most ~0.1% of neurons pass (ii).
(i) is needed because new neurons trained in the base's residual stream pass (ii) far more
often (5% of the zoo's new experts' neurons); asking each neuron for its own three-way
agreement instead would be specific but, after long training, blind to half of the copies
(measured on a fine-grained upcycle trained 450 steps at 2.5x the learning rate: 47% of kept
neurons agree, 97% pass (ii), 0.6% of its re-initialised neurons do). ``base_neurons[n]`` is
the assigned base neuron of a significant match and -1 otherwise (re-initialised or new),
``coverage`` the fraction of an expert's neurons with a significant match, ``similarity`` the
mean assigned similarity of its neurons. Shared experts follow the routed ones (``E, E+1..``).

Statistic and null. Per layer, ``A_j``: the number of its ``N_j`` neurons that agree (their
experts cluster around the base FFN: each upcycled expert holds a block of base neurons, an
expert trained from scratch holds none; the expert-by-expert overlap of held base neurons is
reported too). Null: ``rotation_null``, the base's hidden space rotated at random and the
alignment recovered again, for each of the ``K`` draws of ``pairing``: counts ``c_1..c_K``. The
draws give the chance agreement rate ``p0`` with its uncertainty, and the p-value is the upper
tail of ``A_j`` under the predictive distribution of a new draw: beta-binomial ``BB(N_j, c +
1/2, K N_j - c + 1/2)`` with ``c = sum c_k`` (Jeffreys prior), computed by summing the log-pmf.
A layer of more than ``MAX_NULL_NEURONS`` expert neurons is tested on a fixed random sample of
that many (drawn from the pairing's seed, before any statistic is seen): the null draws match
only those neurons, and ``A_j`` counts the agreeing ones among them, so the test stays exact
while its cost falls by about ``N_j / sample``; the observed matching of a layer with null
draws, and with it its expert map, still covers all ``N_j`` neurons. Neurons of one draw are not independent (hubs), so counts
and trials are first divided by the over-dispersion ``phi = max(1, var(c_k) / (N_j p0 (1 -
p0)))`` measured across draws (quasi-likelihood), which widens the tail. When the base layer is
chosen among ``L_base`` layers by the statistic (depths differ and no layer map is given), the
layer's p-value is multiplied by ``L_base`` (Bonferroni). Layers are merged by the Vovk-Wang
harmonic mean (``stats.harmonic_combine``), valid under any dependence; ``upcycled`` is ``p <
alpha``. Null draws are made for a spread of MoE layers (``--null-layers``, as for dense
layers: at 7B width a layer's 25 draws cost more than its observed matching); each other
layer gets the observed matching of its tested sample (of every neuron with ``map_all``,
``--full``: at 72B width a whole map costs ~20x its sample's) and is called against the
nearest tested layer's null (its threshold and counts, ``LayerResult.borrow``), with no p-value
of its own and no part in the merged one; its unmatched neurons are ``NOT_MATCHED`` in the
expert map. Calibration, leave-one-out over 40 null draws: for independent MoEs fewer p-values
than nominal fall below 0.1 and 0.01 (conservative); for upcycled pairs, whose own null draws hold
chance-aligned copies (heavier-tailed counts), up to 2.5x nominal at 0.01, which matters little
there since the observed counts exceed every draw many times over. Zhu et al. (ICML 2025) use
the agreement of gate and up matches; here all three roles must agree, neuron order never
matters, and the chance rate is measured under the rotation null rather than assumed (a random
coordinate permutation or a token shuffle is not a valid null: see ``rotation_null``). Scale of
that null: the best ``|cos|`` of one ``d``-dim row among ``F`` independent rows is about
``sqrt(2 ln(2F) / d)`` (0.42 for ``d = 64, F = 128``; 0.07 for ``d = 4096, F = 14336``), so at
real widths chance matches fall far below a copy's cosines.

Power: the base FFN of a middle layer upcycled into noisy fine-grained experts (two shuffled
replicas cut into four experts, Gaussian noise of relative size ``power_drift`` = 1 on every
matrix and on the embeddings, a random signed permutation of the hidden space), aligned and
tested by the same procedure.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps
from scipy.special import logsumexp

from backends.compute import Compute
from backends.distributed import Shards
from verifier.architectures.layout import DOWN, GATE, UP, RoleRef
from verifier.model import Model
from verifier.parallel import ordered_map
from verifier.probes import neuron_matching as neurons
from verifier.probes.assignment import distinct_row_maxima, max_assignment, row_argmax
from verifier.probes.base import LayerValue, ProbeResult, spread
from verifier.probes.pairing import Disguise, LazyLayers, Pairing, Side, expect
from verifier.stats import DEFAULT_ALPHA, P_FLOOR, harmonic_combine

NAME = "moe_upcycling"
#: per-neuron significance: this quantile of the null's assigned similarities
THRESHOLD_QUANTILE = 0.999
#: relative noise of the power check's upcycled experts
POWER_DRIFT = 1.0
#: experts of the power check's fake upcycled layer (two replicas of the FFN cut into these)
POWER_EXPERTS = 4
#: expert neurons per MoE layer that get null draws; wider layers are sampled (the observed
#: matching of a layer with null draws, and so its expert map, covers every neuron)
MAX_NULL_NEURONS = 2048
#: expert neurons whose similarities to the base come from one product: a sampled null draw
#: holds ~32 neurons per expert, and products of 32 rows ran at half the speed of 256-row ones
#: (the same per-row sums, up to a product's rounding; memory stays at one expert's when an
#: expert is wider)
PRODUCT_ROWS = 256
#: ``base_neurons`` of an expert neuron that was not matched: its layer had no null draws and
#: was matched on its tested sample only (``analyse``'s ``map_all``)
NOT_MATCHED = -2


class ExpertEntry(BaseModel):
    """One expert of the report's MoE section: which base FFN neurons it holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layer: int
    expert: int
    base_layer: int | None
    coverage: float
    similarity: float
    #: per expert neuron, the base FFN neuron it holds, -1 (re-initialised or new), or -2 (not
    #: matched: a layer without null draws is matched on a sample of its neurons unless
    #: ``--full``); ``coverage`` and ``similarity`` are over the matched neurons
    base_neurons: list[int]


class MoESection(BaseModel):
    """The report's ``moe`` key: whether the experts were upcycled, and each expert's map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upcycled: bool
    p_value: float | None
    experts: list[ExpertEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class MoELayer:
    """One MoE block: routed experts, then shared experts, each as an ``FFNWeights``."""

    experts: list[neurons.FFNWeights]
    shared: list[neurons.FFNWeights] = field(default_factory=list)

    @property
    def units(self) -> list[neurons.FFNWeights]:
        return self.experts + self.shared

    @property
    def widths(self) -> list[int]:
        return [int(u.up.shape[0]) for u in self.units]

    def pooled(self) -> neurons.FFNWeights:
        return neurons.concat(self.units)


def load_moe(model: Model, layers: Collection[int] | None = None) -> Mapping[int, MoELayer]:
    """Every MoE layer's (or ``layers``') routed and shared experts (per-expert tensors and
    fused 3-D stacks alike: the layout cuts stacks per expert), read when a layer is asked
    for, one layer at a time, as stored (views of a mapped file where the reader maps it): the
    probe places what it uses. A large MoE's experts in float32 would not fit in memory.
    Each layer asked for starts reading the next ones of the order the probe announces
    (``LazyLayers.expect``), so the disk works while a layer is matched."""
    def readable(roles: Mapping[str, RoleRef]) -> bool:
        return UP in roles and DOWN in roles

    def read(i: int) -> MoELayer:
        layer = model.layout.layers[i]
        experts = [f for roles in layer.experts
                   if (f := neurons.ffn_from_roles(model, roles)) is not None]
        shared = [f for roles in layer.shared_experts
                  if (f := neurons.ffn_from_roles(model, roles)) is not None]
        return MoELayer(experts, shared)

    indices = [layer.index for layer in model.layout.layers
               if layer.is_moe and (layers is None or layer.index in layers)
               and any(readable(roles) for roles in layer.experts)]
    return LazyLayers(indices, read, keep=1,
                      will_need=lambda i: model.will_need(i, (GATE, UP, DOWN)))


def base_pools(
    dense: Mapping[int, neurons.FFNWeights], moe: Mapping[int, MoELayer]
) -> Mapping[int, neurons.FFNWeights]:
    """The neurons each base layer offers: its dense FFN, its experts (shared last) pooled,
    or where a block runs both (Gemma 4, LongCat-Flash, Granite 4's shared MLP) the dense FFN
    first and then its experts: a copy's experts come from the base's experts, which a pool of
    the dense FFN alone would not hold (its MoE layers then read as not derived, p = 1).
    Made when a layer is asked for, the last one kept (a MoE base's pooled layers are copies:
    all of them at once would hold every expert of the model in memory). Reading ahead is
    passed on to the layers the pools come from."""
    def pool(i: int) -> neurons.FFNWeights:
        if i in dense and i in moe:
            return neurons.concat([dense[i], *moe[i].units])
        return dense[i] if i in dense else moe[i].pooled()

    def will_need(i: int) -> None:
        for source in (dense, moe):
            if i in source and isinstance(source, LazyLayers):
                source.will_need(i)

    return LazyLayers(sorted(set(dense) | set(moe)), pool, keep=1, will_need=will_need)


# --- matching one layer pair under one alignment ----------------------------------------------


@dataclass(frozen=True)
class Matching:
    """Per candidate neuron (all experts of the layer, in order): the assigned base neuron (-1
    when the expert is wider than the base and it got none), the joint similarity there, and
    whether its gate, up and down rows separately name one base neuron (``agree``) and which
    (``separate``, -1 when they disagree)."""

    index: np.ndarray
    sim: np.ndarray
    agree: np.ndarray
    separate: np.ndarray

    @classmethod
    def unmatched(cls, n: int) -> Matching:
        """``n`` neurons, none assigned (-1, NaN) and none agreeing: filled in place."""
        return cls(np.full(n, -1, dtype=np.int64), np.full(n, np.nan), np.zeros(n, dtype=bool),
                   np.full(n, -1, dtype=np.int64))

    def spread(self, n: int, idx: np.ndarray) -> Matching:
        """This matching of the neurons ``idx`` of a layer of ``n``, as the layer's: the
        others unassigned (-1, NaN) and not agreeing."""
        out = Matching.unmatched(n)
        out.index[idx], out.sim[idx], out.agree[idx], out.separate[idx] = (
            self.index, self.sim, self.agree, self.separate)
        return out


#: an expert's assignment: its rows (expert neurons), their base neurons and similarities there
_Solved = tuple[np.ndarray, np.ndarray, np.ndarray]


def _best(s: torch.Tensor, signed: bool) -> np.ndarray:
    """Per candidate neuron (row of ``s``), the base neuron of highest (``|``)cosine."""
    return row_argmax(s, absolute=not signed)


def _product_groups(widths: list[int], rows: int) -> list[list[int]]:
    """``widths`` cut into runs of consecutive experts of at most ``rows`` neurons together (an
    expert wider than that alone)."""
    groups: list[list[int]] = []
    for w in widths:
        if groups and sum(groups[-1]) + w <= rows:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def match_layer(
    base: neurons.NeuronFeatures, cand: neurons.NeuronFeatures, widths: list[int],
    assign: bool = True,
) -> Matching:
    """Assignment and agreement of every candidate neuron (see the module docstring); a few
    narrow experts or one wide one at a time, so memory stays at ``max(w, PRODUCT_ROWS) x F``
    similarities. Without ``assign``, the agreement alone (what the test counts; ``index`` and
    ``sim`` stay unset): the assignments serve the expert maps and their threshold."""
    out = Matching.unmatched(sum(widths))
    index, sim, agree, separate = out.index, out.sim, out.agree, out.separate
    # gate: plain cos; up/down: |cos| under SwiGLU's sign/scale freedom, plain cos without it
    gated = base.gate is not None and cand.gate is not None

    def experts() -> Iterator[tuple[int, np.ndarray | _Solved]]:
        # device work here, in the calling thread; the assignments run side by side. The
        # similarities are [expert neurons, base neurons]: each row is read and reduced along
        # its own memory (half the time of reducing a column-major layout). Consecutive experts
        # share one product (``PRODUCT_ROWS``); every reduction is per row, so the grouping
        # changes nothing but the products' rounding
        start = 0
        for group in _product_groups(widths, PRODUCT_ROWS):
            part = slice(start, start + sum(group))
            sub = neurons.NeuronFeatures(
                gate=cand.gate[part] if cand.gate is not None else None,
                up=cand.up[part], down=cand.down[part],
            )
            # the three role-wise cosine matrices give both the separate matches and the joint
            # similarity (``neurons.similarity``'s formula, without computing them twice)
            su, sd = sub.up @ base.up.T, sub.down @ base.down.T
            u = _best(su, signed=not gated)
            ok = u == _best(sd, signed=not gated)
            sg = None
            if base.gate is not None and sub.gate is not None:
                sg = sub.gate @ base.gate.T
                ok &= u == _best(sg, signed=True)
            agree[part], separate[part] = ok, np.where(ok, u, -1)
            start = part.stop
            if not assign:
                continue
            # (sg + |su + sd|) / 3 in place: the same sums, no [w, F] temporaries
            joint = su.add_(sd)
            joint = joint.abs_().add_(sg).div_(3.0) if sg is not None else joint.div_(2.0)
            items: list[tuple[int, np.ndarray | _Solved]] = []
            offset = 0  # of each expert's rows in the group's product
            for w in group:
                block = joint[offset:offset + w]
                known = distinct_row_maxima(block)
                if known is not None:  # the solver's answer, without a float64 copy
                    rows, cols = known
                    at = torch.as_tensor(cols, device=block.device)[:, None]
                    item: np.ndarray | _Solved = (
                        rows, cols, Compute.numpy64(block.gather(1, at)[:, 0]))
                else:
                    item = Compute.numpy64(block)
                items.append((part.start + offset, item))
                offset += w
            del su, sd, sg, joint, block  # not held while the solver threads run
            yield from items

    def solve(job: tuple[int, np.ndarray | _Solved]) -> tuple[int, _Solved]:
        start, item = job
        if not isinstance(item, np.ndarray):
            return start, item
        rows, cols = max_assignment(item)
        return start, (rows, cols, item[rows, cols])

    if not assign:
        for _ in experts():
            pass
        return out
    for start, (rows, cols, values) in ordered_map(solve, experts()):
        index[start + rows] = cols
        sim[start + rows] = values
    return out


def _observed(pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer,
              cand: neurons.NeuronFeatures) -> Matching:
    """The observed matching; ``cand``: all of the layer's expert neurons balanced jointly
    (module docstring), as ``pairing.pooled_features_of`` gives them."""
    return match_layer(pairing.base_features_of(pool, -1), cand, moe.widths)


def sample_neurons(widths: list[int], sample: int, gen: np.random.Generator) -> np.ndarray | None:
    """A fixed sample of ``sample`` of a layer's expert neurons (sorted, so grouped by expert),
    or None when the layer has no more than that."""
    n = int(sum(widths))
    if n <= sample:
        return None
    return np.sort(gen.choice(n, sample, replace=False))


def _sampled_widths(widths: list[int], idx: np.ndarray) -> list[int]:
    """Neurons of each expert among the sampled ``idx`` (experts with none left out)."""
    expert = np.searchsorted(np.cumsum(widths), idx, side="right")
    return [int(c) for c in np.bincount(expert, minlength=len(widths)) if c]


def _rows(feats: neurons.NeuronFeatures, sample: np.ndarray | None) -> neurons.NeuronFeatures:
    """The neurons ``sample`` of ``feats`` (all of them when None)."""
    if sample is None:
        return feats
    rows = torch.as_tensor(sample).to(feats.up.device)
    return neurons.NeuronFeatures(gate=feats.gate[rows] if feats.gate is not None else None,
                                  up=feats.up[rows], down=feats.down[rows])


def _nulls(pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer, pooled: neurons.FFNWeights,
           cand: neurons.NeuronFeatures, sample: np.ndarray | None = None,
           assign: bool = True) -> list[Matching]:
    """Matchings of every null draw, of the ``sample`` of expert neurons when given (their
    features balanced over the whole layer, as observed). As in ``pairing``: on the full
    hidden space the candidate's features ``cand`` serve every draw (each draw moves the base's
    into the candidate's basis); on a frame each draw takes its own columns of ``pooled``
    (``Pairing.pool``'s copy of the layer)."""
    widths = moe.widths if sample is None else _sampled_widths(moe.widths, sample)
    fixed = _rows(cand, sample)
    return [match_layer(pairing.base_features_of(pool, k),
                        _rows(pairing.pooled_features_of(pooled, k), sample)
                        if pairing.features_per_draw else fixed, widths, assign)
            for k in range(len(pairing.rotations))]


# --- statistics -------------------------------------------------------------------------------


def agreement_p(observed: int, trials: int, null_counts: Sequence[float]) -> tuple[float, float]:
    """``(p, phi)``: upper tail of ``observed`` agreeing neurons out of ``trials`` under the
    over-dispersion-corrected beta-binomial predictive of the null counts (module docstring)."""
    c = np.asarray(null_counts, dtype=np.float64)
    k = max(c.size, 1)
    p0 = (c.sum() + 0.5) / (k * trials + 1.0)
    phi = 1.0
    if c.size > 1 and c.sum() > 0:
        phi = max(1.0, float(c.var(ddof=1)) / max(trials * p0 * (1.0 - p0), 1e-12))
    n = max(1, math.floor(trials / phi))
    x = math.floor(observed / phi)
    if x <= 0:
        return 1.0, phi
    a, b = c.sum() / phi + 0.5, (k * trials - c.sum()) / phi + 0.5
    support = np.arange(min(x, n), n + 1)
    logp = logsumexp(sps.betabinom.logpmf(support, n, a, b))
    return float(min(1.0, max(math.exp(logp), P_FLOOR))), phi


@dataclass
class LayerResult:
    """One candidate MoE layer against its base layer."""

    layer: int
    base_layer: int
    widths: list[int]
    routed: int
    observed: Matching
    #: expert neurons the null draws matched (all of them unless the layer was sampled), and
    #: how many of those agree in the observed matching: the test's count
    trials: int
    tested_agree: int
    null_agree: list[int]
    #: mean assigned similarity of each null draw (the observed one is ``observed.sim``'s mean)
    null_similarity: list[float]
    threshold: float
    p_value: float
    phi: float
    bonferroni: int
    alpha: float
    #: the layer whose null draws call this one: its own, or for a layer without draws of its
    #: own (``analyse``'s ``tested``) the nearest tested layer's once ``borrow``ed (None before)
    null_layer: int | None
    #: the expert neurons ``observed`` matched when not all of them (a layer without null
    #: draws, matched on its tested sample: ``analyse``'s ``map_all``)
    matched_only: np.ndarray | None = None

    @property
    def own_null(self) -> bool:
        """The layer was tested against null draws of its own: its p-value enters the probe's."""
        return self.null_layer == self.layer

    def borrow(self, other: LayerResult) -> LayerResult:
        """This untested layer called against ``other``'s null draws: its threshold, and the
        agreement test of this layer's count against ``other``'s null counts (scaled to this
        layer's tested neurons where their numbers differ). The call decides this layer's
        expert maps and whether it enters the layer map; its p-value is not calibrated by draws
        of its own and enters no combined p-value."""
        scale = self.trials / max(other.trials, 1)
        p, phi = agreement_p(self.tested_agree, self.trials,
                             [c * scale for c in other.null_agree])
        return replace(self, threshold=other.threshold, p_value=min(1.0, self.bonferroni * p),
                       phi=phi, null_layer=other.layer)

    @property
    def neurons(self) -> int:
        return int(sum(self.widths))

    @property
    def matched(self) -> int:
        """Expert neurons the observed matching covers: all, or the tested sample."""
        return self.neurons if self.matched_only is None else int(self.matched_only.size)

    @property
    def mapped(self) -> bool:
        """Every expert neuron matched: the layer has a whole expert map."""
        return self.matched_only is None

    @property
    def agree(self) -> int:
        """Agreeing neurons among the matched ones."""
        return int(self.observed.agree.sum())

    @property
    def upcycled(self) -> bool:
        """The layer's agreement test rejects: its experts hold copies of base neurons."""
        return self.p_value < self.alpha

    @property
    def significant(self) -> np.ndarray:
        """Neurons named as copies: in an upcycled layer, assigned similarity above ``tau``."""
        o = self.observed
        return (o.index >= 0) & (o.sim > self.threshold) & self.upcycled

    def base_neurons(self) -> np.ndarray:
        out = np.where(self.significant, self.observed.index, -1)
        if self.matched_only is not None:
            unmatched = np.ones(out.size, dtype=bool)
            unmatched[self.matched_only] = False
            out[unmatched] = NOT_MATCHED
        return out

    def overlap(self) -> np.ndarray:
        """Expert-by-expert overlap of the base neurons they hold (significant matches):
        ``|B_e & B_f| / min(|B_e|, |B_f|)``, 0 where either holds none."""
        held, start = [], 0
        bn = self.base_neurons()
        for w in self.widths:
            part = bn[start:start + w]
            held.append(set(part[part >= 0].tolist()))
            start += w
        n = len(held)
        out = np.zeros((n, n))
        for e in range(n):
            for f in range(n):
                low = min(len(held[e]), len(held[f]))
                out[e, f] = len(held[e] & held[f]) / low if low else 0.0
        return out

    def experts(self) -> list[ExpertEntry]:
        """Routed experts ``0..E-1``, then shared experts as ``E, E+1, ...``; coverage and
        similarity over each expert's matched neurons (all of them in a mapped layer)."""
        out, start = [], 0
        bn, sig, sim = self.base_neurons(), self.significant, self.observed.sim
        for e, w in enumerate(self.widths):
            part = slice(start, start + w)
            s = sim[part]
            matched = int((bn[part] != NOT_MATCHED).sum())
            out.append(ExpertEntry(
                layer=self.layer, expert=e, base_layer=self.base_layer,
                coverage=float(sig[part].sum()) / matched if matched else 0.0,
                similarity=float(np.nanmean(s)) if np.isfinite(s).any() else 0.0,
                base_neurons=[int(i) for i in bn[part]],
            ))
            start += w
        return out

    def value(self) -> LayerValue:
        """The layer's agreement fraction, with its p-value and null where it had draws of its
        own (a borrowed call's p-value is not one)."""
        if not self.own_null:
            return LayerValue(layer=self.layer, base_layer=self.base_layer,
                              statistic=self.tested_agree / max(self.trials, 1))
        fractions = np.asarray(self.null_agree, dtype=np.float64) / max(self.trials, 1)
        return LayerValue(
            layer=self.layer, base_layer=self.base_layer,
            statistic=self.tested_agree / max(self.trials, 1), p_value=self.p_value,
            null_mean=float(fractions.mean()) if fractions.size else None,
            null_std=float(fractions.std(ddof=1)) if fractions.size > 1 else None,
        )


@dataclass
class UpcyclingAnalysis:
    layers: list[LayerResult]
    p_value: float
    upcycled: bool

    @property
    def statistic(self) -> float:
        """Fraction of all matched expert neurons whose gate, up and down agree."""
        n = sum(lr.matched for lr in self.layers)
        return sum(lr.agree for lr in self.layers) / max(n, 1)

    def experts(self) -> list[ExpertEntry]:
        return [e for lr in self.layers for e in lr.experts()]

    def section(self) -> MoESection:
        return MoESection(upcycled=self.upcycled, p_value=self.p_value, experts=self.experts())


def _prepared(pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer, j: int, sample: int,
              ) -> tuple[neurons.FFNWeights, neurons.FFNWeights, neurons.NeuronFeatures,
                         np.ndarray | None]:
    """What a layer's test reads: the base pool placed, the candidate layer pooled (one copy
    for the observed matching and the null draws), its observed features, and the fixed sample
    of tested expert neurons (None: all of them)."""
    pooled = pairing.pool(moe.units)
    return (pool.placed(pairing.compute), pooled, pairing.pooled_features_of(pooled, -1),
            sample_neurons(moe.widths, sample, pairing.generator(j, 2)))


def _counted(moe: MoELayer, obs: Matching, idx: np.ndarray | None) -> tuple[int, int]:
    """``(trials, agreeing)``: the neurons a layer's test counts (its fixed sample, or all of
    them) and how many of those agree in the observed matching."""
    if idx is None:
        return int(sum(moe.widths)), int(obs.agree.sum())
    return int(idx.size), int(obs.agree[idx].sum())


def _test_layer(
    pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer, j: int, a: int, bonferroni: int,
    alpha: float, observed: Matching | None = None, sample: int = MAX_NULL_NEURONS,
) -> LayerResult:
    """The agreement test of candidate layer ``j`` against base layer ``a``: the observed
    matching of every expert neuron (the expert maps), and null draws of a fixed sample of at
    most ``sample`` of them (the same neurons counted in the observed matching)."""
    pool, pooled, cand, idx = _prepared(pairing, pool, moe, j, sample)
    obs = observed if observed is not None else _observed(pairing, pool, moe, cand)
    nulls = _nulls(pairing, pool, moe, pooled, cand, idx)
    counts = [int(m.agree.sum()) for m in nulls]
    sims = np.concatenate([m.sim[np.isfinite(m.sim)] for m in nulls]) if nulls else np.zeros(0)
    threshold = float(np.quantile(sims, THRESHOLD_QUANTILE)) if sims.size else math.inf
    trials, tested = _counted(moe, obs, idx)
    p, phi = agreement_p(tested, trials, counts)
    return LayerResult(
        layer=j, base_layer=a, widths=moe.widths, routed=len(moe.experts), observed=obs,
        trials=trials, tested_agree=tested, null_agree=counts,
        null_similarity=[float(np.nanmean(m.sim)) for m in nulls],
        threshold=threshold, p_value=min(1.0, bonferroni * p), phi=phi,
        bonferroni=bonferroni, alpha=alpha, null_layer=j,
    )


def _mapped_layer(
    pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer, j: int, a: int, bonferroni: int,
    alpha: float, observed: Matching | None = None, sample: int = MAX_NULL_NEURONS,
    map_all: bool = True,
) -> LayerResult:
    """Candidate layer ``j`` against base layer ``a`` without null draws: the observed
    matching and the count of the neurons a test would count (the same sample);
    ``LayerResult.borrow`` calls it against a tested layer's null. Only the observed pairing's
    features are made (on a frame: no pooled copy of the layer, no float32 copy of the base
    FFN). With ``map_all`` every expert neuron is matched (the layer's expert map); without,
    only the tested sample (the neurons the call counts; their features still balanced over
    the whole layer), a ``N / sample`` fraction of the work."""
    idx = sample_neurons(moe.widths, sample, pairing.generator(j, 2))
    matched_only = None
    if observed is None:
        feats = pairing.observed_pool_features(moe.units)
        base = pairing.observed_base_features(pool)
        if map_all or idx is None:
            observed = match_layer(base, feats, moe.widths)
        else:
            observed = match_layer(base, _rows(feats, idx), _sampled_widths(moe.widths, idx)
                                   ).spread(sum(moe.widths), idx)
            matched_only = idx
    trials, tested = _counted(moe, observed, idx)
    return LayerResult(
        layer=j, base_layer=a, widths=moe.widths, routed=len(moe.experts), observed=observed,
        trials=trials, tested_agree=tested, null_agree=[], null_similarity=[],
        threshold=math.inf, p_value=1.0, phi=1.0, bonferroni=bonferroni, alpha=alpha,
        null_layer=None, matched_only=matched_only,
    )


def analyse(
    pairing: Pairing,
    pools: Mapping[int, neurons.FFNWeights],
    moe: Mapping[int, MoELayer],
    layer_map: Mapping[int, int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    same_depth: bool = True,
    shards: Shards | None = None,
    sample: int = MAX_NULL_NEURONS,
    tested: Collection[int] | None = None,
    map_all: bool = True,
) -> UpcyclingAnalysis | None:
    """Test every candidate MoE layer in ``moe`` against its base layer in ``pools``.

    The base layer of candidate layer ``j`` is ``layer_map[j]`` when given, ``j`` when both
    models have the same depth, otherwise the base layer with the most agreeing neurons (ties:
    the higher mean assigned similarity), with a Bonferroni factor for that choice. None when
    there is nothing to compare. With ``shards``, ``moe`` holds this rank's layers only and the
    results of all ranks are gathered.

    ``tested``: the layers that get null draws of their own (all when None; chosen before any
    statistic is seen). Each other layer gets its observed matching and is called against the
    nearest tested layer's null (``LayerResult.borrow``); the probe's p-value combines the
    tested layers alone, as the dense probes' ``--null-layers`` do. ``map_all``: the other
    layers' observed matching covers every expert neuron (their expert maps); without it, their
    tested sample only (each expert's coverage and similarity estimated from its sampled
    neurons; ``NOT_MATCHED`` in ``base_neurons`` for the rest), which is what their call needs.
    """
    shards = shards or Shards()
    if not pools:
        return None
    results: list[LayerResult] = []
    order = sorted(moe)  # the indices: each layer is read when its turn comes, one at a time
    expect(moe, order)  # and the next ones start reading from the disk while it is matched

    def base_layer(j: int) -> int | None:
        """The base layer of candidate layer ``j`` where known before matching."""
        if layer_map is not None and layer_map.get(j) in pools:
            return int(layer_map[j])
        return j if same_depth and j in pools else None

    known = {j: a for j in order if (a := base_layer(j)) is not None}
    expect(pools, [known[j] for j in order if j in known])
    for j in order:
        layer = moe[j]
        if tested is None or j in tested:
            test = _test_layer
        else:
            test = partial(_mapped_layer, map_all=map_all)
        if j in known:
            a = known[j]
            results.append(test(pairing, pools[a], layer, j, a, 1, alpha, sample=sample))
        else:
            feats = pairing.observed_pool_features(layer.units)
            scored = {a: match_layer(pairing.observed_base_features(pool), feats, layer.widths)
                      for a, pool in pools.items()}
            a = max(scored, key=lambda i: (int(scored[i].agree.sum()),
                                           float(np.nanmean(scored[i].sim))))
            results.append(test(pairing, pools[a], layer, j, a, len(pools), alpha,
                                scored[a], sample))
    results = sorted((r for part in shards.gather(results) for r in part),
                     key=lambda r: r.layer)
    own = [r for r in results if r.own_null]
    if not own:
        return None
    results = [r if r.own_null else
               r.borrow(min(own, key=lambda t: (abs(t.layer - r.layer), t.layer)))
               for r in results]
    p = harmonic_combine([lr.p_value for lr in own])
    return UpcyclingAnalysis(layers=results, p_value=p, upcycled=p < alpha)


# --- power check ------------------------------------------------------------------------------


def fake_upcycled(
    base: Side, pool: neurons.FFNWeights, drift: float, rng: np.random.Generator,
    gen: torch.Generator, experts: int = POWER_EXPERTS, compute: Compute | None = None,
) -> tuple[Side, MoELayer]:
    """The base (embeddings and one FFN) as a vendor might upcycle and hide it: two shuffled
    replicas of the FFN's neurons cut into ``experts`` experts, Gaussian noise of relative size
    ``drift`` on every expert matrix and on the embeddings, and a random signed permutation of
    the hidden space (as ``pairing.fake_derivative``). Each expert matrix is made in float32 on
    the device from its rows of ``pool`` (as stored) and kept where and as a candidate's
    experts are, on the CPU in ``pool``'s dtype: two float32 replicas of a 7B FFN would take
    1 GiB."""
    compute = compute or Compute()
    hide = Disguise(base.embed.shape[1], base.embed.device, rng, gen)
    f = int(pool.up.shape[0])
    order = np.concatenate([rng.permutation(f), rng.permutation(f)])

    def fake(w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return hide(compute.put(w[idx.to(w.device)]), drift).to("cpu", w.dtype)

    units = []
    for part in np.array_split(order, experts):
        idx = torch.as_tensor(part)
        units.append(neurons.FFNWeights(
            gate=fake(pool.gate, idx) if pool.gate is not None else None,
            up=fake(pool.up, idx), down=fake(pool.down, idx),
        ))
    return Side(embed=hide(base.embed, drift)), MoELayer(units)


def power_p(
    observed: Pairing, pools: Mapping[int, neurons.FFNWeights], rng: np.random.Generator,
    drift: float = POWER_DRIFT, sample: int = MAX_NULL_NEURONS,
) -> float | None:
    """p-value of the probe on the base of ``observed`` against a fake upcycled copy of a
    middle layer, through the observed pairing's null draws (``Pairing.sibling``)."""
    if not pools:
        return None
    layers = sorted(pools)
    a = layers[len(layers) // 2]
    gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    fake, layer = fake_upcycled(observed.base, pools[a], drift, rng, gen,
                                compute=observed.compute)
    pairing = observed.sibling(fake, rng)
    return _agreement_test(pairing, pools[a], layer, a, sample)


def _agreement_test(pairing: Pairing, pool: neurons.FFNWeights, moe: MoELayer, j: int,
                    sample: int) -> float:
    """``_test_layer``'s p-value alone (the power check's): the agreement of the tested
    neurons, observed and under the null draws; no assignments, since no expert map is made.
    The same neurons, features and counts as ``_test_layer``."""
    pool, pooled, cand, idx = _prepared(pairing, pool, moe, j, sample)
    widths = moe.widths if idx is None else _sampled_widths(moe.widths, idx)
    tested = int(match_layer(pairing.base_features_of(pool, -1), _rows(cand, idx), widths,
                             assign=False).agree.sum())
    counts = [int(m.agree.sum())
              for m in _nulls(pairing, pool, moe, pooled, cand, idx, assign=False)]
    trials = int(sum(moe.widths)) if idx is None else int(idx.size)
    return agreement_p(tested, trials, counts)[0]


# --- the probe --------------------------------------------------------------------------------


def upcycling_probe(
    base: Model,
    cand: Model,
    pairing: Pairing,
    layer_map: Mapping[int, int] | None,
    rng: np.random.Generator,
    *,
    alpha: float = DEFAULT_ALPHA,
    power_drift: float = POWER_DRIFT,
    shards: Shards | None = None,
    sample: int = MAX_NULL_NEURONS,
    null_layers: int | None = None,
    map_all: bool = True,
) -> tuple[ProbeResult, MoESection, dict[int, int]] | None:
    """The ``moe_upcycling`` probe, the report's MoE section and the layers called upcycled
    (candidate layer -> base layer), or None when the candidate has no MoE layer or the base no
    FFN to compare with.

    ``pairing`` is the observed pairing (its base side's dense FFNs are reused; a MoE base's
    experts are read from ``base``); ``layer_map`` maps candidate layers to base layers where
    known; ``rng`` draws the power check's fake (which reuses the pairing's null draws).
    ``null_layers``: at most this many MoE layers, spread over the depth, get null draws of
    their own (all when None; ``analyse``'s ``tested``); ``map_all``: the others get whole
    expert maps too (else they are matched on their tested sample). ``shards``: this rank reads and tests
    only its share of the candidate's MoE layers (the tested ones dealt out first).
    Computes where the pairing does.
    """
    shards = shards or Shards()
    if not cand.layout.moe_layers:
        return None
    readable = sorted(load_moe(cand))  # the layers' indices; nothing is read yet
    tested = readable if null_layers is None else spread(readable, null_layers)
    order = tested + [j for j in readable if j not in tested]
    moe = load_moe(cand, shards.mine(order))
    pools = base_pools(pairing.base.ffn, load_moe(base) if base.layout.moe_layers else {})
    result = analyse(pairing, pools, moe, layer_map, alpha,
                     same_depth=base.layout.num_layers == cand.layout.num_layers, shards=shards,
                     sample=sample, tested=set(tested), map_all=map_all)
    if result is None:
        return None
    power = power_p(pairing, pools, rng, power_drift, sample)
    k = len(pairing.rotations)
    own = sum(lr.own_null for lr in result.layers)
    mapped = [lr for lr in result.layers if lr.mapped]
    probe = ProbeResult(
        name=NAME, statistic=result.statistic, p_value=result.p_value, decisive=True,
        null=(f"number of expert neurons whose gate, up and down rows are separately matched to "
              f"one base FFN neuron, after rotating the base's hidden space at random and "
              f"re-aligning ({k} draws per tested layer; {own} of {len(result.layers)} MoE "
              f"layers tested, spread over the depth, the others called against the nearest "
              f"tested layer's null): over-dispersion-corrected beta-binomial predictive tail; "
              f"Bonferroni over base layers where the base layer was chosen; tested layers "
              f"combined by the Vovk-Wang harmonic mean"),
        layers=[lr.value() for lr in result.layers],
        power_p_value=power,
        details={
            "moe_layers": len(result.layers),
            "moe_layers_tested": own,
            "moe_layers_mapped": len(mapped),
            "expert_neurons": sum(lr.neurons for lr in result.layers),
            "matched_expert_neurons": sum(lr.matched for lr in result.layers),
            "agreeing_neurons": sum(lr.agree for lr in result.layers),
            "null_sampled_neurons": sum(lr.trials for lr in result.layers if lr.own_null),
            "threshold_quantile": THRESHOLD_QUANTILE,
            "mean_threshold": float(np.mean([lr.threshold for lr in result.layers])),
            "mean_coverage": float(np.mean([e.coverage for e in result.experts()])),
            # of whole expert maps: two samples of the same slice rarely share a neuron
            "mean_expert_overlap": float(np.mean([
                lr.overlap()[~np.eye(len(lr.widths), dtype=bool)].mean()
                for lr in mapped if len(lr.widths) > 1
            ] or [0.0])),
            "shared_experts_numbered_from": min(lr.routed for lr in result.layers),
            "power_drift": power_drift,
        },
    )
    upcycled = {lr.layer: lr.base_layer for lr in result.layers if lr.upcycled}
    return probe, result.section(), upcycled


__all__ = [
    "NAME",
    "ExpertEntry",
    "MoESection",
    "LayerResult",
    "Matching",
    "MoELayer",
    "UpcyclingAnalysis",
    "analyse",
    "base_pools",
    "fake_upcycled",
    "load_moe",
    "match_layer",
    "power_p",
    "upcycling_probe",
]
