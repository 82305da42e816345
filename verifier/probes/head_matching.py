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

Multi-head latent attention (DeepSeek-V2/V3, Kimi K2, GLM-5, MiniCPM3, LongCat-Flash, ...) reads
the hidden state through low-rank latents: queries ``W_qb diag(g_q) W_qa`` (or a plain ``W_q``),
keys per head ``W_kb^h diag(g_kv) W_kva`` beside one rotary key ``W_kr`` that every head shares,
values ``W_vb^h diag(g_kv) W_kva`` (``W_kva``, ``W_kr``: the latent and rotary rows of
``kv_a_proj_with_mqa``; ``W_kb``, ``W_vb``: each head's key and value rows of ``kv_b_proj``).
Those products are each head's factors over the hidden space, as ``W_q^h``, ``W_k^h`` and
``W_v^h`` are for standard attention, so the same circuits are compared (``_mla_circuits``),
one KV head per query head. The latent norms divide each token's latent by its RMS: a positive
factor per token on a head's whole query (or key and value), which the circuits' cosines do not
see. Those factors are kept as the products they are (``LowRank``), never formed at full width.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from backends.compute import Compute
from verifier.architectures.detect import role_shape
from verifier.architectures.layout import (
    ATTN_NORM,
    K_B,
    KV_A,
    KV_A_NORM,
    KV_B,
    Q_A,
    Q_A_NORM,
    Q_B,
    V_B,
    K,
    O,
    Q,
    RoleRef,
    V,
)
from verifier.model import Model
from verifier.probes.assignment import require_finite
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.magnitude import unit_magnitude, unit_magnitude_each

NAME = "head_matching"
#: base query heads matched against every candidate head; more are sampled by whole KV groups
MAX_BASE_HEADS = 8


@dataclass(frozen=True)
class LowRank:
    """A stack of head factors kept as a product: head ``h``'s ``[hd, d]`` factor is
    ``left[h] @ right`` (``left``: ``[n, hd, r]``, ``right``: ``[r, d]``, hidden coordinates
    last). Latent attention's queries, keys and values are such products through latents of
    ``r`` <= 1536 coordinates. Formed at DeepSeek-V3's width, one layer's took 1.9 GB in
    float32 and 0.8 TFLOP to compose; every operation of the probe acts on ``right`` alone (a
    change of hidden coordinates) or on ``left`` alone (a choice of heads), and every inner
    product follows from ``r``-sized products (``_gram``, ``_head_gram``).

    ``left`` is built at magnitude one per head (``_mla_circuits`` scales each head's rows by
    a power of two, which no cosine sees) and every operation keeps it there, so a similarity
    scales ``right`` alone (``_unit_each``): scaling the large ``left`` in every null draw
    cost more than the draw's products."""

    left: torch.Tensor
    right: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return int(self.left.shape[0]), int(self.left.shape[1]), int(self.right.shape[1])

    @property
    def device(self) -> torch.device:
        return self.right.device

    def formed(self) -> torch.Tensor:
        """The ``[n, hd, d]`` factors themselves."""
        n, hd, r = self.left.shape
        return (self.left.reshape(-1, r) @ self.right).reshape(n, hd, -1)


#: one stack of head factors, hidden coordinates last: formed ``[n, hd, d]``, or a product
Factor = torch.Tensor | LowRank


def _on_hidden(f: Factor, op: Callable[[torch.Tensor], torch.Tensor]) -> Factor:
    """``op`` (``[N, d]`` -> ``[N, d']``, a change of hidden coordinates) on every head's
    factor: on ``right`` alone for a product."""
    if isinstance(f, LowRank):
        return LowRank(f.left, op(f.right))
    return op(f.reshape(-1, f.shape[-1])).reshape(f.shape[0], f.shape[1], -1)


def _on_parts(f: Factor, op: Callable[[torch.Tensor], torch.Tensor]) -> Factor:
    """``op`` on each stored tensor of ``f`` (a copy, a move)."""
    return LowRank(op(f.left), op(f.right)) if isinstance(f, LowRank) else op(f)


def _pick(f: Factor, idx: torch.Tensor) -> Factor:
    """Heads ``idx`` of ``f``."""
    return LowRank(f.left[idx.to(f.left.device)], f.right) if isinstance(f, LowRank) else f[idx]


def _formed(f: Factor) -> torch.Tensor:
    return f.formed() if isinstance(f, LowRank) else f


def _unit_each(f: Factor) -> Factor:
    """Each head's factor at magnitude near one by powers of two (``magnitude``). A product's
    ``right`` is brought to one whatever its size, beside its ``left`` kept at one: a formed
    factor multiplies the two, so parts each just inside ``SAFE_SHIFT`` could leave float32's
    range."""
    if isinstance(f, LowRank):
        return LowRank(f.left, unit_magnitude(f.right, safe=0))
    return unit_magnitude_each(f)


def _product(left: torch.Tensor, right: torch.Tensor) -> LowRank:
    """``LowRank(left, right)`` with each head's ``left`` at magnitude one (by a power of two
    per head: a positive factor on the head's whole factor, which no cosine sees)."""
    return LowRank(unit_magnitude_each(left, safe=0), right)


@dataclass(frozen=True)
class HeadCircuits:
    """Per query head, the factors of its QK and OV circuits, hidden coordinates last:

    ``QK_h = q[h]^T k[g(h)]`` and ``OV_h = o[h]^T v[g(h)]``, with ``q``, ``o`` as ``[H, hd, d]``
    (``o[h]`` the transposed slice of the output projection), ``k``, ``v`` as ``[KV, hd, d]`` and
    ``g(h) = h // (H / KV)`` the KV group of query head ``h``. A ``d x d`` circuit is never
    formed: at d = 4096 one layer's circuits would take 4 GiB, while every cosine between
    circuits follows from ``hd x hd`` Gram blocks of the factors (``_circuit_inner``).

    As read (``load_circuits``) the factors are the stored tensors (views of a mapped file where
    the reader maps it) and ``gamma`` the attention-norm gain, not yet folded into ``q``, ``k``
    and ``v``; ``placed`` makes the float32 device copies, gain folded, that the similarities
    use. A 7B layer's factors in float32 take 160 MiB per model, so only what a probe uses is
    placed: a sample of the base's heads, a frame's coordinates of the candidate's."""

    q: Factor
    k: Factor
    o: Factor
    v: Factor
    gamma: torch.Tensor | None = None

    def _map(self, f: Callable[[Factor], Factor]) -> HeadCircuits:
        if self.gamma is not None:
            raise ValueError("circuits as stored: place them (HeadCircuits.placed) first")
        return HeadCircuits(q=f(self.q), k=f(self.k), o=f(self.o), v=f(self.v))

    def placed(self, compute: Compute) -> HeadCircuits:
        """Float32 on the compute device, the gain folded into ``q``, ``k`` and ``v`` (a no-op
        for circuits already placed); one factor at a time, each unscaled copy freed before
        the next is made. A product's gain goes into its ``right``."""
        gamma = compute.put(self.gamma) if self.gamma is not None else None

        def put(w: Factor, fold: bool) -> Factor:
            def scaled(x: torch.Tensor) -> torch.Tensor:
                out = compute.put(x)
                return out * gamma if fold and gamma is not None else out

            if isinstance(w, LowRank):
                return LowRank(compute.put(w.left), scaled(w.right))
            return scaled(w)

        return HeadCircuits(q=put(self.q, True), k=put(self.k, True), o=put(self.o, False),
                            v=put(self.v, True))

    def contiguous(self) -> HeadCircuits:
        """Each factor contiguous (a no-op for those that are). The output projection is
        stored ``[d, H hd]`` and seen transposed; a null draw reads every factor as an
        ``[n hd, d]`` matrix, which copied it in each draw (the same numbers)."""
        return self._map(lambda m: _on_parts(m, torch.Tensor.contiguous))

    def formed(self) -> HeadCircuits:
        """Every factor formed (``LowRank.formed``): where few heads on few coordinates are
        kept (a frame's sampled base heads) or compared by forming circuits."""
        return self._map(_formed)

    @property
    def heads(self) -> int:
        return int(self.q.shape[0])

    @property
    def groups(self) -> int:
        return int(self.k.shape[0])

    def group_of(self) -> torch.Tensor:
        """The KV group of each query head."""
        return torch.arange(self.heads, device=self.q.device) // (self.heads // self.groups)

    def aligned(self, align: HiddenAlignment) -> HeadCircuits:
        """Candidate circuits in base hidden coordinates (both axes of each circuit relabelled
        and signed: the hidden axis of each factor)."""
        return self._map(lambda m: _on_hidden(m, align.cols))

    def rotated(self, rot: torch.Tensor) -> HeadCircuits:
        """The circuits ``R^T M R`` of a rotated basis: each factor times ``R`` (``d x d``, or
        ``d x m`` for the ``m``-direction frame of a null draw, ``probes.frame_pairing``)."""
        return self._map(lambda m: _on_hidden(m, lambda x: x @ rot))

    def select_groups(self, groups: torch.Tensor) -> HeadCircuits:
        """The KV groups ``groups`` with their query heads (a sample of the base's heads)."""
        per = self.heads // self.groups
        groups = groups.to(self.q.device)
        heads = (groups[:, None] * per + torch.arange(per, device=groups.device)[None, :])
        heads = heads.reshape(-1)
        return HeadCircuits(q=_pick(self.q, heads), k=_pick(self.k, groups),
                            o=_pick(self.o, heads), v=_pick(self.v, groups), gamma=self.gamma)

    def hidden_major(self, compute: Compute | None = None) -> HiddenMajorCircuits:
        """The factors as ``[d, n]`` copies, hidden coordinates as rows, in their own dtype
        (the output projection as stored needs no copy); a product's ``right`` alone, its
        ``left`` kept beside, placed on ``compute``'s device once (every draw's ``take``
        uses it whole: on a GPU it was copied there in each draw)."""
        factors = (self.q, self.k, self.o, self.v)
        return HiddenMajorCircuits(
            rows=tuple((f.right if isinstance(f, LowRank) else f.reshape(-1, f.shape[-1]))
                       .T.contiguous() for f in factors),
            shapes=tuple(tuple(f.shape[:-1]) for f in factors), gamma=self.gamma,
            lefts=tuple((f.left if compute is None else compute.put(f.left))
                        if isinstance(f, LowRank) else None for f in factors))

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``[H, d, d]`` circuits themselves (small models and tests only)."""
        g = self.group_of()
        q, k, o, v = (_formed(f) for f in (self.q, self.k, self.o, self.v))
        return q.transpose(1, 2) @ k[g], o.transpose(1, 2) @ v[g]


class HiddenMajorCircuits(NamedTuple):
    """A layer's circuit factors hidden-major (``HeadCircuits.hidden_major``): a frame of
    ``m`` hidden directions reads ``m`` whole rows of each instead of a strided column of every
    head row. ``rows``: q, k, o, v as ``[d, n]``; ``shapes``: their leading dimensions;
    ``lefts``: for a product (``LowRank``), its ``left`` (``rows`` then hold its ``right``)."""

    rows: tuple[torch.Tensor, ...]
    shapes: tuple[tuple[int, ...], ...]
    gamma: torch.Tensor | None
    lefts: tuple[torch.Tensor | None, ...] = (None, None, None, None)

    def take(self, align: HiddenAlignment, compute: Compute) -> HeadCircuits:
        """The candidate coordinates ``align`` maps to, signed, placed (gain folded):
        ``HeadCircuits.placed(...).aligned(align)`` with only those rows upcast. The sign (or
        zero) multiplies the gain first: ``x (g s) = (x g) s`` exactly for ``s`` in {-1, 0, 1}."""
        idx, sign = align.gather()
        sign = compute.put(sign)
        folded = sign if self.gamma is None else sign * compute.put(self.gamma[idx])
        out: list[Factor] = []
        # q, k, v read the normed input (the gain folds into them); o writes the output
        for f, shape, left, factor in zip(self.rows, self.shapes, self.lefts,
                                          (folded, folded, sign, folded), strict=True):
            x = (compute.put(f.index_select(0, idx.to(f.device))) * factor[:, None]).T
            out.append(x.reshape(*shape, -1) if left is None
                       else LowRank(compute.put(left), x.contiguous()))
        q, k, o, v = out
        return HeadCircuits(q=q, k=k, o=o, v=v)


def _gram(x: Factor, y: Factor) -> torch.Tensor:
    """``[n1, hd1, n2, hd2]`` blocks ``x[i] y[j]^T`` of two factor stacks (two layers' head
    sizes may differ). Products meet through their ``right``s: ``L1 (R1 R2^T) L2^T`` never
    forms either factor."""
    n1, hd1, d = x.shape
    n2, hd2 = y.shape[:2]
    if isinstance(x, LowRank) and isinstance(y, LowRank):
        flat = (x.left.reshape(-1, x.left.shape[-1]) @ (x.right @ y.right.T)
                @ y.left.reshape(-1, y.left.shape[-1]).T)
    elif isinstance(y, LowRank):
        flat = (x.reshape(-1, d) @ y.right.T) @ y.left.reshape(-1, y.left.shape[-1]).T
    elif isinstance(x, LowRank):
        flat = x.left.reshape(-1, x.left.shape[-1]) @ (x.right @ y.reshape(-1, d).T)
    else:
        flat = x.reshape(-1, d) @ y.reshape(-1, d).T
    return flat.reshape(n1, hd1, n2, hd2)


def _head_gram(f: Factor) -> torch.Tensor:
    """``[n, hd, hd]``: each head's ``f[i] f[i]^T``."""
    if isinstance(f, LowRank):
        return (f.left @ (f.right @ f.right.T)) @ f.left.transpose(1, 2)
    return f @ f.transpose(1, 2)


def _circuit_inner(a1: Factor, b1: Factor, g1: torch.Tensor, a2: Factor, b2: Factor,
                   g2: torch.Tensor) -> torch.Tensor:
    """``[H1, H2]`` Frobenius inner products ``<a1[i]^T b1[g1[i]], a2[j]^T b2[g2[j]]>``.

    ``<A^T B, C^T D> = tr(B^T A C^T D) = sum((A C^T) * (B D^T))``: Gram matrices of the factors
    (the KV factors' once per group pair) instead of ``H1 H2`` products of ``d x d`` matrices.
    """
    ga = _gram(a1, a2)
    gb = _gram(b1, b2)[g1][:, :, g2]
    return (ga * gb).sum(dim=(1, 3))


def _self_norms(a: Factor, b: Factor, g: torch.Tensor) -> torch.Tensor:
    """``||a[i]^T b[g[i]]||_F`` per head."""
    ga = _head_gram(a)
    gb = _head_gram(b)[g]
    return (ga * gb).sum(dim=(1, 2)).clamp_min(0.0).sqrt()


def _dense_cheaper(b: HeadCircuits, c: HeadCircuits) -> bool:
    """Whether forming the ``d x d`` circuits costs less than the Gram blocks: forming is
    ``~2 hd d^2`` per head, the blocks ``~2 hd^2 d`` per pair of heads; on a frame of the hidden
    space (``d = m`` about ``hd``) forming wins by the number of heads, at full width never."""
    hd, d = b.q.shape[1], b.q.shape[2]
    return d * (b.heads + c.heads) < b.heads * c.heads * hd


def _dense_similarity(b: HeadCircuits, c: HeadCircuits) -> torch.Tensor:
    """``head_similarity`` from the formed circuits (the same cosines)."""
    out = torch.zeros(b.heads, c.heads, dtype=torch.float64)
    for xb, xc in zip(b.dense(), c.dense(), strict=True):
        fb, fc = xb.reshape(b.heads, -1), xc.reshape(c.heads, -1)
        inner = (fb @ fc.T).cpu().double()
        norms = torch.outer(fb.norm(dim=1).cpu().double(), fc.norm(dim=1).cpu().double())
        out += inner / norms.clamp_min(1e-30)
    return out / 2.0


def head_similarity(b: HeadCircuits, c: HeadCircuits) -> torch.Tensor:
    """``[H_base, H_cand]`` mean of the QK and OV circuit cosines, by whichever way is
    cheaper for these shapes (the two agree to float32 rounding). Each head's (or KV group's)
    factor is first brought to magnitude one by a power of two (``magnitude``): the circuits
    multiply four weights, so rescaled models overflowed (or underflowed) float32 without it,
    and a model rescales each head's circuits apart from the others' at no cost."""
    b, c = b._map(_unit_each), c._map(_unit_each)
    return _dense_similarity(b, c) if _dense_cheaper(b, c) else _gram_similarity(b, c)


def _gram_similarity(b: HeadCircuits, c: HeadCircuits) -> torch.Tensor:
    """``head_similarity`` from Gram blocks of the factors, circuits never formed."""
    gb, gc = b.group_of(), c.group_of()
    out = torch.zeros(b.heads, c.heads, dtype=torch.float64)
    for fb, fc in (((b.q, b.k), (c.q, c.k)), ((b.o, b.v), (c.o, c.v))):
        # device sums in float32, the ratio in float64 on the CPU (no float64 on some devices)
        inner = _circuit_inner(fb[0], fb[1], gb, fc[0], fc[1], gc).cpu().double()
        norms = torch.outer(_self_norms(*fb, gb).cpu().double(),
                            _self_norms(*fc, gc).cpu().double())
        out += inner / norms.clamp_min(1e-30)
    return out / 2.0


class Geometry(NamedTuple):
    """A layer's attention heads: query heads, KV heads, and the head sizes of q/k and of
    v/o (MiMo-V2's values are narrower than its queries)."""

    heads: int
    kv: int
    qk_dim: int
    v_dim: int


class LatentGeometry(NamedTuple):
    """A multi-head latent attention layer: query heads, the per-head key sizes without and
    with rotary embedding (``nope``, ``rope``; the rotary key is one for all heads), the value
    head size and the key/value latent's width."""

    heads: int
    nope: int
    rope: int
    v_dim: int
    latent: int


#: roles a layer of standard multi-head attention holds, and one of multi-head latent attention
#: (``Q_B`` with ``Q_A`` or ``Q`` alone for the queries; ``KV_B``, or ``K_B`` and ``V_B`` as
#: llama.cpp splits it; ``Q_A_NORM`` where the model has it)
STANDARD_ROLES = (Q, K, V, O)
LATENT_ROLES = (KV_A, KV_A_NORM, O)
CIRCUIT_ROLES = (Q, K, V, O, Q_A, Q_A_NORM, Q_B, KV_A, KV_A_NORM, KV_B, K_B, V_B, ATTN_NORM)


def attention_form(roles: Collection[str]) -> str | None:
    """``"standard"`` for q, k, v and o; ``"latent"`` for multi-head latent attention's roles;
    None for a layer with neither (a Mamba block, an MLP block, a partial set)."""
    have = set(roles)
    if set(STANDARD_ROLES) <= have:
        return "standard"
    if (set(LATENT_ROLES) <= have and (Q in have or {Q_A, Q_B} <= have)
            and (KV_B in have or {K_B, V_B} <= have)):
        return "latent"
    return None


#: ``layer_types`` entries of the sliding-window layers whose query heads the config gives
#: apart as ``swa_num_attention_heads`` (Inkling)
SLIDING_LAYER_TYPES = ("hybrid_sliding",)


def _query_heads(model: Model, layer: int) -> int:
    """``layer``'s query heads: the config's per-layer list where it has one (Laguna), the
    sliding-window layers' own count where the config gives one (Inkling's
    ``swa_num_attention_heads``), else the model's head count."""
    config = model.config or {}
    for source in (config, config.get("text_config") or {}):
        per_layer = source.get("num_attention_heads_per_layer")
        if isinstance(per_layer, list) and layer < len(per_layer) and int(per_layer[layer]) > 0:
            return int(per_layer[layer])
        types, swa = source.get("layer_types"), source.get("swa_num_attention_heads")
        if (isinstance(types, list) and layer < len(types) and types[layer] in SLIDING_LAYER_TYPES
                and isinstance(swa, int) and swa > 0):
            return swa
    return model.layout.num_heads or 1


def _said(roles: Mapping[str, RoleRef], role: str, n: int, what: str) -> str:
    """Why a layer's heads do not split: ``role``'s tensor has ``n`` ``what``."""
    return f"{roles[role].tensor!r} has {n} {what}"


def _geometry(model: Model, layer: int,
              shape: Callable[[str], tuple[int, ...]]) -> Geometry | str:
    """``layer``'s heads from its query head count and the weights' shapes (``shape``: a
    role's ``[out, in]``), or why they do not split into heads. The head sizes and KV heads are
    read from the weights, not the config: models vary them by layer (Gemma 4's global layers
    have wider heads and other KV heads, MiMo-V2's sliding layers twice the KV heads) and
    q/k and v/o may differ (MiMo-V2)."""
    roles = model.layout.layers[layer].roles
    heads = _query_heads(model, layer)
    q, k, v, o_in = shape(Q)[0], shape(K)[0], shape(V)[0], shape(O)[1]

    if q % heads:
        return _said(roles, Q, q, f"rows, not a whole number for each of {heads} query heads")
    qk_dim = q // heads
    if k % qk_dim or heads % (k // qk_dim):
        return _said(roles, K, k, f"rows, not whole key heads of {qk_dim} that the {heads} "
                                  "query heads share evenly")
    kv = k // qk_dim
    if v % kv:
        return _said(roles, V, v, f"rows, not one value head for each of {kv} key heads")
    v_dim = v // kv
    if o_in != heads * v_dim:
        return _said(roles, O, o_in, f"inputs, not {heads} heads of {v_dim} ({heads * v_dim})")
    return Geometry(heads, kv, qk_dim, v_dim)


def _latent_geometry(model: Model, layer: int,
                     shape: Callable[[str], tuple[int, ...]]) -> LatentGeometry | str:
    """A latent attention layer's heads from the weights' shapes: the latent is as wide as its
    norm, the rotary key the rest of ``kv_a``'s rows; with ``H`` heads the output projection
    reads ``H`` value heads, ``kv_b`` writes ``H`` key and value heads and the queries ``H``
    key-sized heads, so the rotary width gives ``H`` itself (dots.3 Note's sliding layers have
    their own); the config's head count where the key has no rotary part."""
    roles = model.layout.layers[layer].roles
    queries = _latent_queries(roles)
    latent, kv_a = shape(KV_A_NORM)[0], shape(KV_A)[0]
    if kv_a < latent:
        return _said(roles, KV_A, kv_a, f"rows, fewer than its latent norm's {latent}")
    o_in = shape(O)[1]
    found = _kv_b_shape(roles, shape)
    if isinstance(found, str):
        return found
    kv_b, kv_b_in = found
    rope_rows = shape(queries)[0] - kv_b + o_in  # H x the rotary width
    heads = (rope_rows // (kv_a - latent) if kv_a > latent and rope_rows > 0
             and rope_rows % (kv_a - latent) == 0 else _query_heads(model, layer))
    if o_in % heads:
        return _said(roles, O, o_in, f"inputs, not a whole value head for each of {heads} heads")
    v_dim = o_in // heads
    if kv_b_in != latent or kv_b % heads or kv_b // heads < v_dim:
        return _said(roles, KV_B if KV_B in roles else K_B, kv_b,
                     f"rows of {kv_b_in} inputs, not a key and a value head of {v_dim} for each "
                     f"of {heads} heads from the {latent}-wide latent")
    nope, rope = kv_b // heads - v_dim, kv_a - latent
    q = shape(queries)[0]
    if q != heads * (nope + rope):
        return _said(roles, queries, q, f"rows, not {heads} query heads of {nope} + {rope}")
    if queries == Q_B and shape(Q_B)[1] != shape(Q_A)[0]:
        return _said(roles, Q_B, shape(Q_B)[1],
                     f"inputs, but the query latent has {shape(Q_A)[0]}")
    return LatentGeometry(heads, nope, rope, v_dim, latent)


def _kv_b_shape(roles: Mapping[str, RoleRef], shape: Callable[[str], tuple[int, ...]]
                ) -> tuple[int, int] | str:
    """``kv_b``'s ``[rows, latent]``: as stored, or from llama.cpp's split of it per head
    (``K_B`` ``[heads, latent, nope]``, ``V_B`` ``[heads, v, latent]``), whose parts must agree
    on the heads and the latent."""
    if KV_B in roles:
        return shape(KV_B)[0], shape(KV_B)[1]
    k_b, v_b = shape(K_B), shape(V_B)
    if len(k_b) != 3 or len(v_b) != 3 or k_b[0] != v_b[0] or k_b[1] != v_b[2]:
        return (f"{roles[K_B].tensor!r} {list(k_b)} and {roles[V_B].tensor!r} {list(v_b)} are "
                "not [heads, latent, key size] and [heads, value size, latent] of one latent")
    return k_b[0] * (k_b[2] + v_b[1]), k_b[1]


def _latent_queries(roles: Collection[str]) -> str:
    """The role a latent attention's queries come from: ``Q_B`` over ``Q_A``'s latent, else a
    plain ``Q`` (``attention_form`` asks for one of the two)."""
    return Q_B if Q_A in roles and Q_B in roles else Q


def _any_geometry(model: Model, layer: int, shape: Callable[[str], tuple[int, ...]]
                  ) -> Geometry | LatentGeometry | str:
    form = attention_form(model.layout.layers[layer].roles)
    if form == "latent":
        return _latent_geometry(model, layer, shape)
    if form == "standard":
        return _geometry(model, layer, shape)
    return "no q, k, v and o (nor a latent attention's projections)"


def _header_shape(model: Model, layer: int, shapes: Mapping[str, tuple[int, ...]]
                  ) -> Callable[[str], tuple[int, ...]]:
    """A role of ``layer`` -> its ``[out, in]`` shape from the headers (``shapes``)."""
    roles = model.layout.layers[layer].roles
    return lambda r: role_shape(roles[r], shapes[roles[r].tensor])


def circuit_misfit(model: Model, layer: int,
                   shapes: Mapping[str, tuple[int, ...]] | None = None) -> str | None:
    """Why ``layer``'s q, k, v and o do not split into heads (weights whose shapes contradict
    the config's head count, or an attention form this probe does not compare), from the
    headers alone (``shapes``: every tensor's, when the caller asks of many layers); None when
    they do."""
    if shapes is None:
        shapes = {t.name: t.shape for t in model.reader.tensors()}
    found = _any_geometry(model, layer, _header_shape(model, layer, shapes))
    return found if isinstance(found, str) else None


def circuit_shape(model: Model, layer: int,
                  shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int, int] | None:
    """The shape ``load_circuits`` gives ``layer``'s query factor, ``(heads, q/k head size,
    hidden)``, from the headers alone (``shapes``: every tensor's), or None where it gives
    none: deciding which layers to pair reads nothing, where loading a latent attention layer
    composes its factors."""
    shape = _header_shape(model, layer, shapes)
    found = _any_geometry(model, layer, shape)
    if isinstance(found, LatentGeometry):
        return found.heads, found.nope + found.rope, shape(KV_A)[1]
    if isinstance(found, Geometry):
        return found.heads, found.qk_dim, shape(Q)[1]
    return None


def load_circuits(model: Model, layer: int) -> HeadCircuits | None:
    """Circuits of ``layer`` as stored (``HeadCircuits``: the gain not folded, nothing
    copied), or None when it has no standard multi-head attention."""
    roles = model.layout.layers[layer].roles
    form = attention_form(roles)
    if form == "latent":
        return _mla_circuits(model, layer)
    if form is None:
        return None
    q, k, v, o = (model.load(roles[r]) for r in (Q, K, V, O))
    found = _geometry(model, layer, lambda r: tuple({Q: q, K: k, V: v, O: o}[r].shape))
    if isinstance(found, str):
        return None  # said in the report (``circuit_misfit``): not compared by this probe
    gamma = _attention_gain(model, layer)
    d = q.shape[1]
    return HeadCircuits(q=q.reshape(found.heads, found.qk_dim, d),
                        k=k.reshape(found.kv, found.qk_dim, d),
                        o=o.T.reshape(found.heads, found.v_dim, o.shape[0]),
                        v=v.reshape(found.kv, found.v_dim, d), gamma=gamma)


def _attention_gain(model: Model, layer: int) -> torch.Tensor | None:
    """The attention norm's gain that q, k and v read through (None after the sublayer, in a
    post-norm block), float32 at unit magnitude: folded into them in float32, a gain near 1e20
    overflowed there."""
    roles = model.layout.layers[layer].roles
    if ATTN_NORM not in roles or model.layout.post_norm:
        return None
    return unit_magnitude(model.load(roles[ATTN_NORM]).to(torch.float32))  # any dtype (FP8)


def _mla_circuits(model: Model, layer: int) -> HeadCircuits | None:
    """A latent attention layer's per-head factors over the hidden space, as products
    (``LowRank``, float32; one KV head per query head). Queries: ``q_b``'s head rows over the
    query latent (``q_a``, its norm's gain), or a plain ``q`` as stored. Keys: each head's own
    rows of ``kv_b`` over the key/value latent, then the rotary key that every head shares, as
    one product over the latent and rotary rows of ``kv_a`` (an identity block for the rotary
    rows). Values: ``kv_b``'s value rows over the latent. The key/value latent's gain sits
    between the factors and is multiplied in exactly: rescaling it would weigh each head's own
    key rows against the shared rotary ones. Nothing ``heads x head size x d`` is made: at
    DeepSeek-V3's width that was 1.9 GB and 0.8 TFLOP a layer."""
    with model.holding():  # each tensor read once (a quantised one is dequantised on load)
        return _mla_circuits_held(model, layer)


def _mla_circuits_held(model: Model, layer: int) -> HeadCircuits | None:
    roles = model.layout.layers[layer].roles
    queries = _latent_queries(roles)
    found = _latent_geometry(model, layer, lambda r: tuple(model.load(roles[r]).shape))
    if isinstance(found, str):
        return None  # said in the report (``circuit_misfit``)

    def f32(role: str) -> torch.Tensor:
        return model.load(roles[role]).to(torch.float32)

    heads, nope, rope, v_dim, latent = found
    q: Factor
    if queries == Q_B:
        q_latent = f32(Q_A)
        if Q_A_NORM in roles:  # a gain on the whole query: its magnitude does not matter
            q_latent = q_latent * unit_magnitude(f32(Q_A_NORM))[:, None]
        q = _product(f32(Q_B).reshape(heads, nope + rope, -1), q_latent)
    else:
        q = model.load(roles[Q]).reshape(heads, nope + rope, -1)
    kv_a = f32(KV_A)
    kv_latent = kv_a[:latent] * f32(KV_A_NORM)[:, None]
    kv_b = (f32(KV_B).reshape(heads, nope + v_dim, latent) if KV_B in roles
            else torch.cat([f32(K_B).transpose(1, 2), f32(V_B)], dim=1))
    k_left = torch.zeros(heads, nope + rope, latent + rope)
    k_left[:, :nope, :latent] = kv_b[:, :nope]
    k_left[:, nope:, latent:] = torch.eye(rope)
    k = _product(k_left, torch.cat([kv_latent, kv_a[latent:]]))
    v = _product(kv_b[:, nope:].contiguous(), kv_latent)
    o = model.load(roles[O])
    return HeadCircuits(q=q, k=k, v=v, o=o.T.reshape(heads, v_dim, o.shape[0]),
                        gamma=_attention_gain(model, layer))


def match_heads(b: HeadCircuits, c: HeadCircuits) -> float:
    """Mean matched head similarity under a KV-group-respecting assignment."""
    sim = head_similarity(b, c).numpy()
    require_finite(sim, "the head similarities")
    hb, hc = sim.shape
    per = hb // b.groups
    if per != hc // c.groups or per == 1 or b.groups > c.groups:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        return float(sim[rows, cols].mean())
    # group-respecting: query heads within each pair of KV groups, then the groups (a sampled
    # base has fewer groups than the candidate: a rectangular assignment of groups)
    group_score = np.zeros((b.groups, c.groups))
    for gb in range(b.groups):
        for gc in range(c.groups):
            block = sim[gb * per:(gb + 1) * per, gc * per:(gc + 1) * per]
            r, cc = linear_sum_assignment(block, maximize=True)
            group_score[gb, gc] = block[r, cc].sum()
    rows, cols = linear_sum_assignment(group_score, maximize=True)
    return float(group_score[rows, cols].sum() / hb)
