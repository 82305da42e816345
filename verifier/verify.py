"""`lineage verify`: run the probes on a base and a candidate and decide.

Order of work: open both models (headers only) and start hashing their files in background
threads (collected at the end: ``files.Hashing``); read the embeddings of the
shared tokens, the dense FFNs and the attention circuits; recover the hidden-space alignment and
its rotation null (``probes.pairing``); compare every base layer with every candidate layer by
neuron matching and align the layers; test each aligned pair's neurons and heads against the
null; measure norm drift; check, on a noisy permuted copy of the base, that the probes had the
power to see a derivation; combine and decide (``verdict``). The CLI only renders the result.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import torch
from pydantic import BaseModel, ConfigDict, Field

from backends.compute import DTYPE_POLICY, Compute
from backends.distributed import Shards
from verifier import __version__
from verifier.architectures import RoleMap
from verifier.architectures.layout import DOWN, EMBED, GATE, MLP_NORM, UP
from verifier.architectures.schema import SECOND_ROLES, SECOND_UP
from verifier.files import Hashing, records, sha256_file
from verifier.model import Model, open_model
from verifier.model_cache import ModelCache
from verifier.probes import body_alignment as body
from verifier.probes import frame_pairing as frame
from verifier.probes import head_matching as heads
from verifier.probes import hidden_alignment as hidden
from verifier.probes import moe_upcycling as moe
from verifier.probes import neuron_matching as neurons
from verifier.probes import norm_drift as drift
from verifier.probes import rotated_copy
from verifier.probes import rotated_layers as turned
from verifier.probes.base import LayerValue, ProbeResult, spread
from verifier.probes.layer_alignment import MIN_Z, align_layers
from verifier.probes.pairing import LazyLayers, Pairing, Side, expect, fake_derivative
from verifier.report import Environment, LayerMapEntry, ModelInfo, Models, MoESection, Report
from verifier.seeds import POWER_NOISE_STREAM, ROTATED_LAYERS_STREAM, torch_generator
from verifier.stats import gaussian_tail_p, harmonic_combine
from verifier.verdict import DEFAULT_ALPHA, decide, second_look_convicts, second_look_matters

Progress = Callable[[str, int, int], None]
#: all-pairs layer search when its matmuls cost at most this (about 30 s of one CPU core)
FULL_SEARCH_FLOPS = 2e12


#: the largest seed: torch's generator takes 64 bits (numpy's any integer)
MAX_SEED = 2**64 - 1


class VerifyOptions(BaseModel):
    """Everything that changes a report besides the two models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(DEFAULT_ALPHA, gt=0.0, lt=1.0)
    probes: tuple[str, ...] | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    null_draws: int = Field(24, ge=8)
    #: relative size of the noise in the power check (noise norm / weight norm)
    power_drift: float = Field(3.0, gt=0.0)
    digest: bool = True
    #: the exact, unreduced path: every hidden coordinate, every base layer against every
    #: candidate layer even when that is costly, and an expert map of every MoE layer
    full: bool = False
    #: base neurons per layer matched against all candidate neurons (wider layers are sampled)
    neuron_sample: int = Field(neurons.MAX_BASE_NEURONS, ge=16)
    #: candidate layers that get null draws (and p-values); more are spread evenly over depth.
    #: Dense and MoE layers each: at most this many of each
    null_layers: int = Field(8, ge=1)
    #: expert neurons per MoE layer that get null draws (wider layers are sampled); a MoE layer
    #: without null draws is matched on this sample alone unless ``full`` (expert maps of the
    #: layers with null draws, or of all with ``full``, cover every neuron)
    moe_sample: int = Field(moe.MAX_NULL_NEURONS, ge=64)
    #: hidden directions compared in wider dense models (``probes.frame_pairing``); ``full``
    #: compares all of them
    hidden_sample: int = Field(frame.DEFAULT_WIDTH, ge=8)

    def wants(self, probe: str) -> bool:
        return self.probes is None or probe in self.probes


def _info(model: Model, digests: Mapping[str, str] | None) -> ModelInfo:
    """The report's description of one model; ``digests``: sha256 by file path (None: not
    hashed)."""
    lay = model.layout
    side = model.side_files
    return ModelInfo(
        path=str(model.path), format=model.format, architecture=lay.family,
        model_type=lay.model_type, num_layers=lay.num_layers, hidden_size=lay.hidden_size,
        vocab_size=lay.vocab_size, num_experts=lay.num_experts, stacks=lay.stacks,
        files=records(model.reader.root, model.reader.files,
                      None if digests is None else {p: digests[str(p)]
                                                    for p in model.reader.files}),
        side_files=records(model.reader.root, side,
                           None if digests is None else {p: digests[str(p)] for p in side}),
    )


def _side(model: Model, rows: np.ndarray, compute: Compute,
          stats: drift.StatsWhileRead | None = None) -> Side:
    """The embedding rows of the shared tokens now (on the compute device); FFNs and circuits
    read layer by layer, kept as stored and placed by the probes where they use them; with
    ``stats``, norm drift's statistics of each layer taken as it is read."""
    layout = model.layout
    ffn_layers = [i for i in range(layout.num_layers)
                  if neurons.has_neurons(layout.layers[i].roles)]
    attn_layers = _attention_layers(model)[0]

    # the statistics read the tensors the probe just loaded (``Model.holding``)
    def ffn(i: int) -> neurons.FFNWeights:
        with model.holding():
            loaded = neurons.load_ffn(model, i)
            assert loaded is not None  # the roles were checked above
            if stats is not None:
                stats.collect(i, drift.FFN_STAT_ROLES)
        return loaded

    def circuits(i: int) -> heads.HeadCircuits:
        with model.holding():
            loaded = heads.load_circuits(model, i)
            assert loaded is not None
            if stats is not None:
                stats.collect(i, drift.ATTN_STAT_ROLES)
        return loaded

    embed = (model.load(layout.globals[EMBED])[torch.as_tensor(rows)] if EMBED in layout.globals
             else torch.zeros(0, layout.hidden_size))  # no embedding rows: the second look only
    return Side(embed=compute.put(embed),
                # dequantised FFNs are private copies, not file pages: one layer held at a time
                ffn=LazyLayers(ffn_layers, ffn, keep=1 if _copied(model, ffn_layers) else 2,
                               will_need=lambda i: model.will_need(i, _NEURON_ROLES)),
                # readers that copy (e.g. dequantised GGUF) hold one layer's circuits at a time
                circuits=LazyLayers(attn_layers, circuits, keep=1,
                                    will_need=lambda i: model.will_need(
                                        i, heads.CIRCUIT_ROLES)))


#: the roles a block's dense neurons are read from (``neurons.load_ffn``)
_NEURON_ROLES = (GATE, UP, DOWN, *SECOND_ROLES)


def _copied(model: Model, layers: list[int]) -> bool:
    """Whether ``model``'s FFN matrices load as copies: dequantised (FP8/INT8 with scales), or
    an MLP and a second set of neurons joined (``neurons.load_ffn``)."""
    held = [model.layout.layers[i].roles for i in layers]
    quantised = bool(held) and any(held[0][r].scale is not None for r in _NEURON_ROLES
                                   if r in held[0])
    return quantised or any({UP, SECOND_UP} <= roles.keys() for roles in held)


def _attention_layers(model: Model) -> tuple[list[int], list[int]]:
    """Layers whose q, k, v and o split into heads (``heads.circuit_misfit``: each layer's
    head sizes and KV heads read from its weights), and those left out: all when the first
    layer's do not (one attention form per model); else the later layers of another form."""
    layout = model.layout
    have = [i for i in range(layout.num_layers)
            if heads.attention_form(layout.layers[i].roles) is not None]
    shapes = {t.name: t.shape for t in model.reader.tensors()}
    fit = [i for i in have if heads.circuit_misfit(model, i, shapes) is None]
    if not fit or fit[0] != have[0]:
        return [], have
    return fit, [i for i in have if i not in fit]


def _attention_misfit(model: Model) -> str | None:
    """Why ``model``'s attention is not split into heads: its first layer with q, k and v
    (``heads.circuit_misfit``), or None."""
    layout = model.layout
    for i in range(layout.num_layers):
        if heads.attention_form(layout.layers[i].roles) is not None:
            return heads.circuit_misfit(model, i)
    return None


def _layer(j: int, a: int, stat: float, null: list[float], scale: int) -> LayerValue:
    """A layer's value with its p-value (Bonferroni ``scale`` for choosing ``a`` among
    ``scale`` base layers)."""
    _, p = gaussian_tail_p(stat, null)
    return LayerValue(layer=j, base_layer=a, statistic=stat, p_value=min(1.0, scale * p),
                      null_mean=float(np.mean(null)), null_std=float(np.std(null, ddof=1)))


class _Run:
    """State of one verification (kept out of module globals: no hidden shared state)."""

    def __init__(self, base: Model, cand: Model, opts: VerifyOptions, progress: Progress | None,
                 compute: Compute, shards: Shards, cache: ModelCache | None):
        self.base, self.cand, self.opts = base, cand, opts
        self.compute, self.shards = compute, shards
        #: per-model results shared with other verifications (``verify(cache=...)``)
        self.cache = cache
        self.progress: Progress = progress or (lambda stage, done, total: None)
        self.rng = np.random.default_rng(opts.seed)
        self.gen = torch_generator(opts.seed, POWER_NOISE_STREAM)
        #: what opening the models found (roles some layers lack), then what the run finds
        self.warnings: list[str] = [f"{whose}: {w}" for whose, model in
                                    (("base", base), ("candidate", cand)) for w in model.warnings]
        for whose, model in (("base", base), ("candidate", cand)):
            fit, left = _attention_layers(model)
            if fit and left:
                self.warnings.append(
                    f"{whose}: the attention of layers {', '.join(map(str, left))} does not split "
                    f"into heads ({heads.circuit_misfit(model, left[0])}): head "
                    "matching leaves those layers out")
        self.timings: dict[str, float] = {}
        self.probes: list[ProbeResult] = []
        self.layer_map: list[int | None] = []
        self.tested_pairs: dict[int, int] = {}
        self.pairing: Pairing | None = None
        self.stat = np.zeros((0, 0))
        self.moe: MoESection | None = None
        self.layer_search = "full"
        self.null_layers: list[int] = []
        #: the probes compare a frame of ``hidden_sample`` hidden directions (wide dense pairs)
        self.framed = False
        #: the base's embedding rows of the shared tokens (``prepare``)
        self.base_rows = np.zeros(0, dtype=np.int64)
        #: norm drift's statistics taken as the probes read each model's layers (by model id)
        self.read_stats: dict[int, drift.StatsWhileRead] = {}
        #: norm drift's aligned drift of (base layer, candidate layer), taken by the neuron
        #: phase while it held both layers
        self.drifts: dict[tuple[int, int], dict[str, float]] = {}

    def tick(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[key] = round(self.timings.get(key, 0.0) + now - t0, 4)
        return now

    def prepare(self) -> tuple[Side, Side] | None:
        """Read what the probes need; None (with a warning) when the models cannot be aligned."""
        b, c = self.base.layout, self.cand.layout
        # a frame of hidden directions for wide models; --full keeps the whole space
        m = self.opts.hidden_sample
        self.framed = not self.opts.full and m < b.hidden_size and m <= c.hidden_size
        if EMBED not in b.globals or EMBED not in c.globals:
            self.warnings.append("a model has no embedding matrix: hidden spaces cannot be aligned")
            return None
        widest = max(b.hidden_size, c.hidden_size)
        budget = (frame.token_budget(widest, m) if self.framed else hidden.token_budget(widest))
        ib, ic, warns = hidden.shared_token_rows(
            self.base.vocabulary(), self.cand.vocabulary(), b.vocab_size, c.vocab_size, budget,
        )
        self.warnings += warns
        self.base_rows = ib
        needed = min(budget, 2 * max(b.hidden_size, c.hidden_size))
        if ib.size < needed:
            self.warnings.append(
                f"only {ib.size} shared tokens: too few to align {b.hidden_size} hidden coordinates"
            )
            return None
        return (_side(self.base, ib, self.compute, self.stats_while_read(self.base)),
                _side(self.cand, ic, self.compute, self.stats_while_read(self.cand)))

    def stats_while_read(self, model: Model) -> drift.StatsWhileRead | None:
        """Norm drift's statistics of ``model``, to be taken as the probes read its layers
        (None when norm drift is not wanted or a cache already holds them)."""
        if not self.opts.wants(drift.NAME):
            return None
        sample = _stats_sample(self.opts.full)
        if self.cache is not None and self.cache.has_layer_stats(model, _stats_variant(sample)):
            return None
        stats = drift.StatsWhileRead(model, sample)
        self.read_stats[id(model)] = stats
        return stats

    def run(self, base: Side, cand: Side) -> None:
        t0 = time.perf_counter()
        if self.framed:
            framed = frame.FramePairing(
                base, cand, self.rng, self.opts.null_draws, self.opts.neuron_sample,
                self.opts.hidden_sample, compute=self.compute)
            if self.cache is not None:
                framed.keep(self.cache.base_draws(
                    self.base, [framed.fingerprint(), self.compute.backend, self.compute.label],
                    self.opts.null_draws))
            pairing: Pairing = framed
        else:
            pairing = Pairing(base, cand, self.rng, self.opts.null_draws,
                              self.opts.neuron_sample, compute=self.compute)
        self.pairing = pairing
        t0 = self.tick("alignment", t0)
        power = self.power(base, pairing)
        t0 = self.tick("power_check", t0)
        self.probes.append(self._embedding_probe(pairing, power.get(hidden.NAME)))
        # the layer map (from neuron matching) serves every per-layer probe and norm drift;
        # asked for the embeddings alone, nothing needs it
        if any(self.opts.wants(p) for p in (neurons.NAME, heads.NAME, moe.NAME, drift.NAME)):
            self._neurons(pairing, power.get(neurons.NAME))
            t0 = self.tick("neuron_matching", t0)
        if self.opts.wants(heads.NAME):
            self._heads(pairing, power.get(heads.NAME))
            t0 = self.tick("head_matching", t0)
        if self.opts.wants(moe.NAME) and self.cand.layout.moe_layers:
            self._experts(pairing)
            self.tick("moe_upcycling", t0)
        elif self.opts.probes is not None and moe.NAME in self.opts.probes:
            self.warnings.append("the candidate has no MoE layers: the MoE upcycling probe "
                                 "did not run")
        if self.opts.wants(body.NAME) and decide(self.probes, self.opts.alpha)[0] != "derived":
            t0 = time.perf_counter()
            self._body(base, cand)
            t0 = self.tick(body.NAME, t0)
        if decide(self.probes, self.opts.alpha)[0] == "independent":
            self._rotated_layers(base, cand)
            self.tick("rotated_layers", t0)

    def second_look_only(self) -> None:
        """Where the embeddings cannot align the models (no shared tokens enough, as with a new
        tokenizer, or no embedding matrix), the second look still can: the body alignment
        needs no tokens. The sides then hold no embedding rows."""
        if not self.opts.wants(body.NAME):
            return
        t0 = time.perf_counter()
        none = np.zeros(0, dtype=np.int64)
        self._body(_side(self.base, none, self.compute), _side(self.cand, none, self.compute))
        if any(p.name == body.NAME for p in self.probes):
            self.warnings.append("the hidden spaces were aligned from the layers alone (the "
                                 "body alignment): the embedding route could not run")
        self.tick(body.NAME, t0)

    def _body(self, base: Side, cand: Side) -> None:
        """The second look (``probes.body_alignment``): the hidden alignment recovered from
        the layers, and neuron matching through it on candidate layer ``j`` against the base
        layer at the same relative depth (``j`` itself at equal depth; null draws on at most
        ``null_layers`` layers). Its p-value is the larger of the alignment's and the neurons'
        (both must show it: an intersection-union test)."""
        reads = body.plan(self.base, self.cand)
        if reads is None:
            return
        nb, nc = self.base.layout.num_layers, self.cand.layout.num_layers
        if nb != nc:
            self.warnings.append(f"the models differ in depth ({nb} and {nc} layers): the body "
                                 "alignment paired their layers by relative depth")
        # each candidate FFN layer with the base layer at its relative depth, where that has one
        base_of = {j: a for j in sorted(cand.ffn)
                   if (a := body.relative_layer(j, nc, nb)) in base.ffn}
        if not base_of:
            return  # no dense FFN to match through it (said by neuron matching)
        self.progress("aligning bodies", 0, 1)
        device = self.compute.device
        profiles = body.BodyProfile.of(self.base, reads.layers, reads.rows, device).common(
            body.BodyProfile.of(self.cand, reads.cand_layers, reads.rows, device, norms=True))
        if not profiles[0].matrices:
            self.warnings.append("no reader or writer of the same shape in both models: the "
                                 "body alignment did not run")
            return
        if self.framed:
            pairing: Pairing = frame.FramePairing(
                base, cand, self.rng, self.opts.null_draws, self.opts.neuron_sample,
                self.opts.hidden_sample, compute=self.compute, body=profiles)
        else:
            pairing = Pairing(base, cand, self.rng, self.opts.null_draws,
                              self.opts.neuron_sample, compute=self.compute, body=profiles)
        z, p_align = gaussian_tail_p(pairing.embed_stat, pairing.embed_null)
        # the alignment's p alone is a valid p-value, and the intersection-union p is never
        # below it: where even it cannot move the verdict, neuron matching through it (as
        # costly as the first look's) is skipped and p is the alignment's
        tested = (spread(list(base_of), self.opts.null_layers)
                  if second_look_matters(p_align, self.opts.alpha) else [])
        local = {}
        for k, j in enumerate(self.shards.mine(tested)):
            self.progress("aligning bodies", k * self.shards.world, len(tested))
            a = base_of[j]
            local[j] = _layer(j, a, pairing.ffn_stat(a, j), pairing.ffn_null(a, j), 1)
        found = {j: lv for part in self.shards.gather(local) for j, lv in part.items()}
        values = [found[j] for j in tested]
        p_neurons = harmonic_combine([lv.p_value or 1.0 for lv in values]) if values else None
        self.progress("aligning bodies", 1, 1)
        through = (f"neuron matching through it on {len(values)} layers, each against the base "
                   "layer at its relative depth, combined by the Vovk-Wang harmonic mean; p is "
                   "the larger of the two (intersection-union)" if values else
                   "neuron matching through it skipped, since the alignment's p alone keeps "
                   "this look from moving the verdict; p is the alignment's")
        self.probes.append(ProbeResult(
            name=body.NAME, statistic=pairing.embed_stat,
            p_value=max(p_align, p_neurons if p_neurons is not None else 0.0),
            decisive=True,
            null=(f"hidden alignment recovered from the layers' per-coordinate norm profiles "
                  f"({len(reads.layers)} layers, at most {reads.rows} rows of each matrix), "
                  f"after rotating the base's hidden space at random and re-aligning "
                  f"({len(pairing.embed_null)} draws, Student-t tail of z = {z:.1f}); "
                  f"{through}; the verdict gives it a share of alpha"),
            layers=values,
            details={"profile_layers": len(reads.layers), "profile_rows": reads.rows,
                     "profile_matrices": len(profiles[0].matrices), "z": z,
                     "alignment_p_value": p_align, "neuron_p_value": p_neurons,
                     "identity_fraction": float(np.mean(
                         pairing.align.perm == pairing.base_coords)),
                     "negated_fraction": float(np.mean(pairing.align.sign < 0))},
        ))
        p = max(p_align, p_neurons if p_neurons is not None else 1.0)
        if values and second_look_convicts(p, self.opts.alpha) \
                and all(a is None for a in self.layer_map):
            self._map_through(pairing, values)

    def _map_through(self, pairing: Pairing, tested: list[LayerValue]) -> None:
        """The layer map through the second look's alignment, where that look shows the pair
        derived and the first look mapped nothing (its alignment was at random): each
        candidate dense layer's neuron statistic against the base layers the search compares
        (all of them, or the one at its relative depth: ``_layer_search``), scored against the
        null moments of the nearest layer the second look tested. Norm drift then aligns its
        layers through this pairing too."""
        nb, nc = self.base.layout.num_layers, self.cand.layout.num_layers
        full = self._layer_search(pairing) == "full"
        compared = {j: list(pairing.base.ffn) if full else [a] for j in sorted(pairing.cand.ffn)
                    if full or (a := body.relative_layer(j, nc, nb)) in pairing.base.ffn}
        self.progress("mapping layers", 0, 1)
        local = {j: {a: pairing.ffn_stat(a, j) for a in compared[j]}
                 for j in self.shards.mine(sorted(compared))}
        stat = np.full((nb, nc), np.nan)
        for part in self.shards.gather(local):
            for j, col in part.items():
                for a, v in col.items():
                    stat[a, j] = v
        z = np.full((nb, nc), -np.inf)
        for j in compared:
            near = min(tested, key=lambda lv: (abs(lv.layer - j), lv.layer))
            mu, sd = near.null_mean or 0.0, near.null_std or 1e-12
            z[:, j] = np.where(np.isnan(stat[:, j]), -np.inf, (stat[:, j] - mu) / sd)
        self.progress("mapping layers", 1, 1)
        self.stat, self.layer_map = stat, align_layers(z)
        # norm drift's aligned drifts were taken through the first look's alignment
        self.pairing, self.drifts = pairing, {}

    def _rotated_layers(self, base: Side, cand: Side) -> None:
        """The guard against a rotated derivative that was trained on (``probes.rotated_layers``),
        where the verdict would otherwise be independent: its measurement joins the hidden
        alignment probe's details, beside the rotated-copy guard's. Every rank computes it (a
        few layers, seeded by the run's seed alone)."""
        if any(m.layout.post_norm for m in (self.base, self.cand)):
            return  # a turn does not commute with LayerNorm's centring
        pairs = turned.layer_pairs(sorted(base.ffn), sorted(cand.ffn),
                                   self.base.layout.num_layers, self.cand.layout.num_layers)

        def layer(model: Model, side: Side, i: int) -> turned.Layer:
            roles = model.layout.layers[i].roles
            return turned.Layer(side.ffn[i],
                                model.load(roles[MLP_NORM]) if MLP_NORM in roles else None)

        self.progress("looking for a turned copy", 0, 1)
        found = turned.measure(
            base.embed, cand.embed,
            ((layer(self.base, base, a), layer(self.cand, cand, j)) for a, j in pairs),
            np.random.default_rng([self.opts.seed, ROTATED_LAYERS_STREAM]), self.compute)
        self.progress("looking for a turned copy", 1, 1)
        if found is None:
            return
        self.probes = [p.model_copy(update={"details": {**p.details, **found}})
                       if p.name == hidden.NAME else p for p in self.probes]

    def _experts(self, pairing: Pairing) -> None:
        """The upcycling probe on the candidate's MoE layers (null draws for at most
        ``null_layers`` of them, as for the dense layers); mapped dense layers anchor it, and
        each MoE layer called upcycled enters the layer map at its base layer."""
        mapped = {j: a for j, a in enumerate(self.layer_map) if a is not None}
        self.progress("matching experts", 0, 1)
        found = moe.upcycling_probe(self.base, self.cand, pairing, mapped, self.rng,
                                    alpha=self.opts.alpha, shards=self.shards,
                                    sample=self.opts.moe_sample,
                                    null_layers=self.opts.null_layers,
                                    map_all=self.opts.full)
        self.progress("matching experts", 1, 1)
        if found is None:
            self.warnings.append("the base has no FFN to compare the candidate's experts with: "
                                 "the MoE upcycling probe did not run")
            return
        probe, self.moe, upcycled = found
        self.probes.append(probe)
        for j, a in upcycled.items():
            if 0 <= j < len(self.layer_map) and self.layer_map[j] is None:
                self.layer_map[j] = a

    def _embedding_probe(self, pairing: Pairing, power: float | None) -> ProbeResult:
        z, p = gaussian_tail_p(pairing.embed_stat, pairing.embed_null)
        align = pairing.align
        matched = align.perm >= 0
        return ProbeResult(
            name=hidden.NAME, statistic=pairing.embed_stat, p_value=p, decisive=True,
            null=(f"mean matched |corr| of embedding columns after rotating the base's hidden "
                  f"space at random and re-aligning ({len(pairing.embed_null)} draws; Student-t "
                  f"tail of z = {z:.1f})"
                  + (f"; {pairing.width} sampled hidden directions" if self.framed else "")),
            layers=[LayerValue(layer=-1, base_layer=-1, statistic=pairing.embed_stat, p_value=p,
                               null_mean=float(np.mean(pairing.embed_null)),
                               null_std=float(np.std(pairing.embed_null, ddof=1)))],
            power_p_value=power,
            # over the base coordinates the alignment matched (all, or the sampled frame)
            details={"shared_tokens": int(pairing.base.embed.shape[0]), "z": z,
                     "hidden_coordinates": int(matched.sum()),
                     "coordinates_matched_above_0.5": float(np.mean(align.corr[matched] > 0.5)),
                     "identity_fraction": float(np.mean(
                         align.perm[matched] == pairing.base_coords[matched])),
                     "negated_fraction": float(np.mean(align.sign[matched] < 0)),
                     # spread of the recovered per-coordinate scales (0 when none was applied;
                     # None when a scale is 0, e.g. an all-zero embedding column)
                     "log_scale_std": _log_spread(align.scale[matched]),
                     "median_scale": float(np.median(align.scale[matched])),
                     # token geometry, which a rotation of the hidden space keeps: the verdict's
                     # guard against calling a rotated copy independent
                     **(rotated_copy.measure(pairing.base.embed, pairing.cand.embed) or {})},
        )

    def _neurons(self, pairing: Pairing, power: float | None) -> None:
        """Neuron statistics of the compared layer pairs, the layer map, and the neuron-matching
        probe. Null draws are computed for at most ``null_layers`` candidate layers, spread over
        the depth and fixed before any statistic is seen; the others get their observed
        statistics (for the layer map, scored against the nearest tested layer's null) but no
        p-value of their own."""
        nb, nc = self.base.layout.num_layers, self.cand.layout.num_layers
        stat = np.full((nb, nc), np.nan)
        z = np.full((nb, nc), -np.inf)
        nulls: dict[int, tuple[int, list[float]]] = {}
        self.layer_search = self._layer_search(pairing)
        full = self.layer_search == "full"
        compared = {j: list(pairing.base.ffn) if full else [j] if j in pairing.base.ffn else []
                    for j in range(nc) if j in pairing.cand.ffn}
        compared = {j: c for j, c in compared.items() if c}
        self.null_layers = spread(sorted(compared), self.opts.null_layers)
        # each rank matches its share of the candidate layers; every rank gets every column.
        # The layers with null draws cost ~25x the others: they are dealt out first, evenly
        order = self.null_layers + [j for j in sorted(compared) if j not in self.null_layers]
        local: dict[int, tuple[dict[int, float], int, list[float] | None, int | None,
                               dict[str, float] | None]] = {}
        # in depth order: the layers with null draws (compute-bound) then alternate with the
        # others (bound by the disk when the files are not in the page cache), which are read
        # ahead while the former compute
        mine = sorted(self.shards.mine(order))
        expect(pairing.cand.ffn, mine)  # read each layer from the disk while one is computed
        expect(pairing.base.ffn, [a for j in mine for a in compared[j]])
        seen: list[list[float]] = []  # this rank's null draws so far
        for k, j in enumerate(mine):
            self.progress("matching neurons", k * self.shards.world, len(compared))
            col = {a: pairing.ffn_stat(a, j) for a in compared[j]}
            best = max(col, key=lambda a: (col[a], -a))  # the first of equal maxima
            null = pairing.ffn_null(best, j) if j in self.null_layers else None
            # norm drift's aligned drift of the pair it will likely use, now that both layers
            # are in memory: after the probes, a pair larger than the page cache would read
            # every FFN from the disk again for it (16 GiB of a 7B pair). That pair is the
            # layer map's, or, where nothing maps, layer j against layer j (``norm_drift``)
            if null is not None:
                seen.append(null)
            guess = _drift_guess(col[best], best, j, seen, nb == nc)
            rel = (self._aligned_drift(guess, j)
                   if guess is not None and self.opts.wants(drift.NAME) else None)
            local[j] = (col, best, null, guess, rel)
        for part in self.shards.gather(local):
            for j, (col, best, null, guess, rel) in part.items():
                for a, v in col.items():
                    stat[a, j] = v
                if null is not None:
                    nulls[j] = (best, null)
                if rel is not None:
                    self.drifts[(guess, j)] = rel
        nulls = dict(sorted(nulls.items()))
        self.progress("matching neurons", len(compared), len(compared))
        for j in compared:
            near = min(nulls, key=lambda t: (abs(t - j), t))
            null = nulls[near][1]
            mu, sd = _null_moments(null)
            z[:, j] = np.where(np.isnan(stat[:, j]), -np.inf, (stat[:, j] - mu) / sd)
        self.stat, self.layer_map = stat, align_layers(z)
        self.tested_pairs = {j: (self.layer_map[j] if self.layer_map[j] is not None else best)
                             for j, (best, _) in nulls.items()}
        tested = len(pairing.base.ffn) if full else 1
        # the layer map moved some tested pairs off their best base layer: new null draws
        moved = [j for j, (best, _) in nulls.items() if self.tested_pairs[j] != best]
        redrawn: dict[int, list[float]] = {}
        for part in self.shards.gather({j: pairing.ffn_null(self.tested_pairs[j], j)
                                        for j in self.shards.mine(moved)}):
            redrawn.update(part)
        layers = []
        for j, (_, null) in nulls.items():
            a = self.tested_pairs[j]
            layers.append(_layer(j, a, float(stat[a, j]), redrawn.get(j, null), tested))
        if not layers:
            if not self.cand.layout.moe_layers:
                # name the side that lacks them: a dense candidate of an MoE base was told it
                # had no dense FFN layers
                whose = ("the base's FFN layers are all MoE experts (the MoE probe compares "
                         "a candidate's experts with a dense base, not the other way round: "
                         "verify with the two models swapped to match these experts against "
                         "the dense model's FFN)"
                         if self.base.layout.moe_layers and not pairing.base.ffn else
                         "no dense FFN layers to compare")
                self.warnings.append(f"{whose}: neuron matching did not run")
            return
        if self.opts.wants(neurons.NAME):
            self.probes.append(ProbeResult(
                name=neurons.NAME,
                statistic=float(np.mean([lv.statistic for lv in layers])),
                p_value=harmonic_combine([lv.p_value or 1.0 for lv in layers]),
                null=(f"matched neuron similarity after rotating the base's hidden space at "
                      f"random and re-aligning ({self.opts.null_draws} draws per layer, Student-t "
                      f"tail); Bonferroni over {tested} base layers per candidate layer; layers "
                      "combined by the harmonic mean merged for arbitrary dependence (Vovk-Wang)"),
                decisive=True, layers=layers, power_p_value=power,
                details={"layers_compared": len(compared), "layers_tested": len(layers),
                         "base_layers": tested, "layer_search": self.layer_search,
                         "sampled_base_neurons": pairing.sample},
            ))

    def _layer_search(self, pairing: Pairing) -> str:
        """"full" (every base layer against every candidate layer: finds pruned, repeated and
        reordered layers) or "diagonal" (layer i against layer i only, no choice to correct
        for). Full when asked (``--full``), when the depths differ, or when its matmuls cost
        less than ``FULL_SEARCH_FLOPS``; diagonal otherwise, i.e. equal-depth models whose all-
        pairs search would dominate the run (at 7B: 32 x 32 layer pairs)."""
        nb, nc = self.base.layout.num_layers, self.cand.layout.num_layers
        if self.opts.full or nb != nc or not pairing.base.ffn or not pairing.cand.ffn:
            return "full"
        a, j = next(iter(pairing.base.ffn)), next(iter(pairing.cand.ffn))
        fb = min(pairing.sample, pairing.base.ffn[a].up.shape[0])
        fc = pairing.cand.ffn[j].up.shape[0]
        flops = 6.0 * len(pairing.base.ffn) * len(pairing.cand.ffn) * fb * fc * \
            pairing.width * (1 + self.opts.null_draws / nc)
        return "full" if flops <= FULL_SEARCH_FLOPS else "diagonal"

    def _heads(self, pairing: Pairing, power: float | None) -> None:
        # the pairs neuron matching chose (mapped, or the best unmapped), so unrelated models
        # are tested too; without dense FFNs, index-aligned layers
        chosen = self.tested_pairs or {j: j for j in pairing.cand.circuits}
        # blocks with attention and blocks with an FFN may be different blocks (Nemotron-H: one
        # mixer per block): where the FFN's pairs name no attention layer, align by index too
        by_index = not self.tested_pairs or not any(j in pairing.cand.circuits for j in chosen)
        if by_index:
            chosen = {j: j for j in pairing.cand.circuits}
        # pairs of one head shape, from the headers: nothing is read before the layers this
        # rank compares (reading a latent attention layer composes its factors, seconds a layer)
        bs, cs = ({t.name: t.shape for t in m.reader.tensors()} for m in (self.base, self.cand))
        pairs = [(a, j) for j, a in sorted(chosen.items())
                 if a in pairing.base.circuits and j in pairing.cand.circuits
                 and heads.circuit_shape(self.base, a, bs) == heads.circuit_shape(self.cand, j,
                                                                                  cs)]
        if by_index:
            pairs = [(a, j) for a, j in pairs if j in spread([j for _, j in pairs],
                                                             self.opts.null_layers)]
        # the choice of base layer: none in a diagonal search (layer i against layer i)
        nb = self.base.layout.num_layers if self.layer_search == "full" else 1
        local = {}
        mine = self.shards.mine(pairs)
        expect(pairing.base.circuits, [a for a, _ in mine])
        expect(pairing.cand.circuits, [j for _, j in mine])
        for k, (a, j) in enumerate(mine):
            self.progress("matching heads", k * self.shards.world, len(pairs))
            local[j] = _layer(j, a, pairing.head_stat(a, j), pairing.head_null(a, j), nb)
        found = {j: lv for part in self.shards.gather(local) for j, lv in part.items()}
        layers = [found[j] for _, j in pairs]
        if not layers:
            # said, as for the other probes: a probe that vanished silently read as one that
            # ran and found nothing
            self.warnings.append(
                "no attention layers of the same head shape to compare: head matching did not "
                "run" if pairing.base.circuits and pairing.cand.circuits else
                "a model has no attention circuits to compare: head matching did not run"
                + "".join(f" ({whose}: {why})" for whose, why in (
                    ("base", _attention_misfit(self.base)),
                    ("candidate", _attention_misfit(self.cand))) if why))
            return
        self.probes.append(ProbeResult(
            name=heads.NAME,
            statistic=float(np.mean([lv.statistic for lv in layers])),
            p_value=harmonic_combine([lv.p_value or 1.0 for lv in layers]),
            null=(f"matched QK/OV circuit similarity after rotating the base's hidden space at "
                  f"random and re-aligning ({self.opts.null_draws} draws per layer, Student-t "
                  f"tail); Bonferroni over {nb} base layers; layers combined by the Vovk-Wang "
                  "harmonic mean"),
            decisive=True, layers=layers, power_p_value=power,
        ))

    def power(self, base: Side, observed: Pairing) -> dict[str, float]:
        """p-values of the base against a noisy (``power_drift``), signed-permuted copy of
        itself with permuted neurons: the probes' power to see a well-hidden derivation. It
        reads the base alone (its shared token rows, its layers, the observed pairing's draws
        of the base), so a cache shared by verifications of one base runs it once."""
        if self.cache is None:
            return self._power(base, observed)
        parts = ["power", hashlib.sha256(self.base_rows.tobytes()).hexdigest(),
                 self.opts.seed, self.opts.null_draws, self.opts.neuron_sample,
                 self.opts.hidden_sample, self.opts.power_drift, self.opts.full, self.framed,
                 observed.width, observed.sample, self.compute.backend, self.compute.label]
        return self.cache.power_check(self.base, parts, self.rng, self.gen,
                                      lambda: self._power(base, observed))

    def _power(self, base: Side, observed: Pairing) -> dict[str, float]:
        # no layer holds a dense FFN or compared attention (JetMoE's, ZAYA's experts beside
        # attention of another kind): the hidden alignment's check needs the embeddings alone
        a_ffn, a_attn = power_layers(list(base.ffn), list(base.circuits))
        fake = fake_derivative(base, [a_ffn] if a_ffn is not None else [],
                               self.opts.power_drift, self.rng, self.gen, self.compute,
                               hidden_major=self.framed,
                               attention=[a_attn] if a_attn is not None else [])
        pairing = observed.sibling(fake, self.rng)
        out = {hidden.NAME: gaussian_tail_p(pairing.embed_stat, pairing.embed_null)[1]}
        if a_ffn is not None:
            out[neurons.NAME] = gaussian_tail_p(pairing.ffn_stat(a_ffn, a_ffn),
                                                pairing.ffn_null(a_ffn, a_ffn))[1]
            fake.ffn.clear()  # the noisy layer is not needed by the heads: never hold both
        if a_attn is not None:
            out[heads.NAME] = gaussian_tail_p(pairing.head_stat(a_attn, a_attn),
                                              pairing.head_null(a_attn, a_attn))[1]
        return out

    def norm_drift(self) -> drift.NormDrift:
        t0 = time.perf_counter()
        sb, sc = (model_layer_stats(m, self.opts.full, self.cache, self.read_stats.get(id(m)))
                  for m in (self.base, self.cand))
        pairs = [(a, j) for j, a in enumerate(self.layer_map) if a is not None]
        if not pairs and len(sb) == len(sc):
            pairs = [(i, i) for i in range(len(sb))]
        r, p = drift.profile_correlation(sb, sc, pairs)
        mapped = {j: a for a, j in pairs}
        rels = {j: self.drifts[(a, j)] for j, a in mapped.items() if (a, j) in self.drifts}
        missing = sorted(j for j in mapped if j not in rels)
        for part in self.shards.gather({j: self._aligned_drift(mapped[j], j)
                                        for j in self.shards.mine(missing)}):
            rels.update(part)
        rows: list[drift.DriftLayer] = []
        for j, stats in enumerate(sc):
            a = mapped.get(j)
            rel = rels.get(j, {})
            for role, st in stats.items():
                bs = sb[a].get(role) if a is not None else None
                rows.append(drift.DriftLayer(
                    layer=j, base_layer=a, role=role,
                    base_norm=bs.frobenius if bs else None, candidate_norm=st.frobenius,
                    base_std=bs.std if bs else None, candidate_std=st.std,
                    relative_drift=rel.get(role),
                ))
        self.tick("norm_drift", t0)
        return drift.NormDrift(
            profile_correlation=r, profile_correlation_p=p,
            null=("Pearson r of per-layer q/k/v/o std profiles (each role standardised); null: "
                  "circular shifts of the candidate profile; reported only, never decisive"
                  + ("" if self.opts.full else "; norms and stds of tensors over "
                     f"{drift.SAMPLE_ELEMENTS} weights estimated from a stride of rows")),
            layers=rows,
        )

    def _aligned_drift(self, a: int, j: int) -> dict[str, float]:
        """Relative drift of the FFN roles after hidden and neuron alignment (signs fixed per
        neuron from the up rows; SwiGLU's free per-neuron scale is not undone, by design)."""
        pairing = self.pairing
        if pairing is None or a not in pairing.base.ffn or j not in pairing.cand.ffn:
            return {}
        rows, cols = (torch.as_tensor(x) for x in pairing.matched_neurons(a, j))
        fb, fc = pairing.observed_neurons(pairing.base.ffn[a], pairing.cand.ffn[j], rows, cols)
        sign = torch.sign((fb.up * fc.up).sum(dim=1, keepdim=True))
        out = {
            "up": drift.relative_drift(fb.up, fc.up * sign),
            "down": drift.relative_drift(fb.down, fc.down * sign),
        }
        if fb.gate is not None and fc.gate is not None:
            out["gate"] = drift.relative_drift(fb.gate, fc.gate)
        return out


def power_layers(ffn: list[int], circuits: list[int]) -> tuple[int | None, int | None]:
    """The layer whose FFN and the layer whose attention the power check disguises: the
    middle one of the layers holding either, where it holds both (every layer of a standard
    model); otherwise, for what it lacks, the middle layer of those that have it. A hybrid's
    middle block may be a Mamba or convolution block without attention, or (Nemotron-H) an
    attention block without an MLP: checking only what that one block holds would leave the
    other probe without a power check, and no independent verdict could ever be reached."""
    layers = sorted(set(ffn) | set(circuits))
    if not layers:
        return None, None
    a = layers[len(layers) // 2]

    def middle(have: list[int]) -> int | None:
        return a if a in have else (sorted(have)[len(have) // 2] if have else None)

    return middle(ffn), middle(circuits)


def model_layer_stats(model: Model, full: bool = False, cache: ModelCache | None = None,
                      read: drift.StatsWhileRead | None = None,
                      ) -> list[dict[str, drift.RoleStats]]:
    """Per-layer role statistics of one model for norm drift: exact with ``full``, otherwise
    from a stride of rows (``norm_drift.SAMPLE_ELEMENTS``). They depend on that model only, so
    a cache shared by many verifications computes them once per model; ``read``: those the
    probes took as they read the layers (the rest are computed here)."""
    sample = _stats_sample(full)
    stats = read or drift.StatsWhileRead(model, sample)
    if cache is None:
        return stats.all()
    return cache.layer_stats(model, stats.all, variant=_stats_variant(sample))


def _stats_sample(full: bool) -> int | None:
    """The weights per tensor norm drift's statistics read (None: every weight), one answer
    for the statistics taken as the probes read and for those norm drift takes itself."""
    return None if full else drift.SAMPLE_ELEMENTS


def _stats_variant(sample: int | None) -> str:
    """The cache's name for layer statistics from ``sample`` rows (or the whole tensors)."""
    return "" if sample is None else f"rows{sample}"


def _log_spread(scales: np.ndarray) -> float | None:
    """The standard deviation of ``log |scales|``, or None where a scale is 0 or not finite
    (numpy warned on stderr about the log of 0 and gave NaN)."""
    a = np.abs(scales)
    if a.size == 0 or not np.all(np.isfinite(a) & (a > 0)):
        return None
    return float(np.std(np.log(a)))


def _drift_guess(stat: float, best: int, j: int, nulls: list[list[float]],
                 same_depth: bool) -> int | None:
    """The base layer norm drift will likely align candidate layer ``j`` with: ``best`` when
    its neuron statistic looks significant enough for the layer map
    (``layer_alignment.MIN_Z``) against the null draws seen so far (or none are seen yet),
    otherwise layer ``j`` itself for models of one depth (norm drift's pairs when nothing
    maps), else none. A guess: it decides when work is done, never a result."""
    if not nulls or any(stat >= mu + MIN_Z * sd for mu, sd in map(_null_moments, nulls)):
        return best
    return j if same_depth else None


def _null_moments(null: list[float]) -> tuple[float, float]:
    """Mean and standard deviation of a layer's null draws, the scale of its z-scores for
    the layer map (a floor keeps a degenerate null from dividing by zero)."""
    return float(np.mean(null)), max(float(np.std(null, ddof=1)), 1e-12)


def _similarity(stat: np.ndarray, a: int | None, j: int) -> float | None:
    """The neuron-matching similarity of a mapped pair (None where no dense FFN pair exists,
    e.g. a MoE layer mapped by the upcycling probe)."""
    if a is None or a >= stat.shape[0] or j >= stat.shape[1] or np.isnan(stat[a, j]):
        return None
    return float(stat[a, j])


def _environment(compute: Compute, shards: Shards) -> Environment:
    """Where the numbers were computed, and every op that fell back to the CPU on any rank."""
    device = platform.processor() or platform.machine() if compute.on_cpu else compute.label
    fallbacks = sorted({f for part in shards.gather(compute.fallback_list()) for f in part})
    return Environment(
        backend=compute.backend, device=device, dtype_policy=DTYPE_POLICY,
        versions={**compute.versions, "torch": torch.__version__, "numpy": np.__version__,
                  "scipy": scipy.__version__, "python": platform.python_version()},
        fallbacks=fallbacks,
    )


def verify(
    base: str | Path,
    candidate: str | Path,
    options: VerifyOptions | None = None,
    *,
    role_maps: tuple[RoleMap | None, RoleMap | None] = (None, None),
    progress: Progress | None = None,
    compute: Compute | None = None,
    shards: Shards | None = None,
    cache: ModelCache | None = None,
) -> Report:
    """Verify whether ``candidate`` was derived from ``base``; reads both, writes nothing.

    ``compute``: the device and its fallbacks (the CPU when None). ``shards``: this process's
    rank in a multi-device run; every rank must call ``verify`` with the same arguments, and
    every rank returns the same report (timings aside). ``cache``: per-model file digests and
    layer statistics shared across verifications (``verifier.model_cache``)."""
    opts = options or VerifyOptions()
    compute = compute or Compute()
    shards = shards or Shards()
    t_start = time.perf_counter()
    with open_model(base, role_map=role_maps[0]) as mb, \
            open_model(candidate, role_map=role_maps[1]) as mc, \
            Hashing(cache.sha256 if cache is not None else sha256_file) as hashing:
        # the digests (~2 GB/s per core) run beside the analysis, on the cores it leaves idle;
        # ranks deal the files out (on one host they share its cores and its page cache)
        files = list(dict.fromkeys([*mb.reader.files, *mb.side_files, *mc.reader.files,
                                    *mc.side_files]))
        if opts.digest:
            hashing.submit(shards.mine(files))
        run = _Run(mb, mc, opts, progress, compute, shards, cache)
        t0 = time.perf_counter()
        sides = run.prepare()
        run.tick("reading", t0)
        if sides is not None:
            run.run(*sides)
        else:
            run.second_look_only()
        nd = run.norm_drift() if opts.wants(drift.NAME) else None
        t0 = time.perf_counter()
        digests = None
        if opts.digest:
            mine = hashing.wait(lambda done, total: run.progress("hashing files", done, total))
            digests = {p: d for part in shards.gather({str(p): d for p, d in mine.items()})
                       for p, d in part.items()}
        models = Models(base=_info(mb, digests), candidate=_info(mc, digests))
        run.tick("hashing", t0)  # the wait for digests the analysis did not hide
    probes = [p for p in run.probes if opts.wants(p.name)]
    entries = [
        LayerMapEntry(
            candidate_layer=j, base_layer=a,
            similarity=_similarity(run.stat, a, j),
        )
        for j, a in enumerate(run.layer_map)
    ]
    verdict, p, reason = decide(probes, opts.alpha, opts.probes)
    similarity = ([[None if np.isnan(v) else float(v) for v in row] for row in run.stat]
                  if run.stat.size and not np.isnan(run.stat).all() else None)
    run.timings["total"] = round(time.perf_counter() - t_start, 4)
    if shards.distributed:
        run.timings["ranks"] = float(shards.world)
    environment = _environment(compute, shards)
    return Report(
        tool_version=__version__,
        created=datetime.now(timezone.utc),
        verdict=verdict, reason=reason, p_value=p, alpha=opts.alpha,
        probes=probes, layer_map=entries, layer_similarity=similarity, norm_drift=nd,
        moe=run.moe if opts.wants(moe.NAME) else None,
        models=models, environment=environment,
        options={"alpha": opts.alpha, "seed": opts.seed, "null_draws": opts.null_draws,
                 "power_drift": opts.power_drift, "full": opts.full,
                 "neuron_sample": opts.neuron_sample, "null_layers": opts.null_layers,
                 "moe_sample": opts.moe_sample, "hidden_sample": opts.hidden_sample,
                 "hidden_directions": run.pairing.width if run.pairing is not None else None,
                 "layer_search": run.layer_search,
                 "probes": list(opts.probes) if opts.probes else None},
        warnings=run.warnings, timings=run.timings,
    )


__all__ = ["VerifyOptions", "verify"]
