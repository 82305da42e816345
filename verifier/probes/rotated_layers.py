"""Guard: a candidate whose layers are the base's turned by a rotation of the hidden space, then
trained on.

With the norm gains folded into the weights that read them, an RMSNorm transformer keeps its
function under any orthogonal turn ``Q`` of the residual stream (embeddings and readers ``W Q``,
writers ``Q^T W``). The probes undo signed permutations, not rotations, and their null *is* a
random rotation, so a rotated derivative looks independent to them. ``rotated_copy`` catches a
rotated copy by its token geometry; a rotated model that was trained on drifts below a copy's
agreement there, and was called independent.

What training does not undo is the correspondence of the FFN neurons, which no free change of
the residual stream touches beyond the turn itself. So this guard

1. recovers the turn from the shared tokens' embeddings by orthogonal Procrustes on a frame:
   ``P`` spans the base's ``FRAME`` leading token directions (all of them for narrow models),
   and the frames ``P_b = polar(X^T X P)`` (base) and ``P_c = polar(Y^T X P)`` (candidate)
   satisfy ``P_c = Q^T P_b`` exactly when ``Y = X Q`` (``polar(Q^T A) = Q^T polar(A)``), so
   a base neuron's weights ``v`` and the candidate's ``v Q`` have the same coordinates
   ``v P_b = (v Q) P_c`` on them;
2. for ``NEURONS`` base neurons in each of ``LAYERS`` layers (the candidate layer at the same
   relative depth), takes the best cosine with any candidate neuron (mean over gate, up and
   down, read on the frames);
3. does the same with the base's layers turned at random against its embeddings (a Haar frame
   in place of ``P_b``, ``DRAWS`` times), and counts the neurons whose best cosine exceeds the
   largest of all those draws.

A rotated derivative keeps a counterpart for most neurons; independently trained models keep a
few in their first layers, where both read the same tokens (test models: at most 0.32 of a
layer, 0.09 pooled; 276 independent calibration pairs: at most 0.13 pooled). At ``LEVEL`` or
more of the sampled neurons the verdict cannot be *independent* (``verifier.verdict``). Like
``rotated_copy``, the guard has no null for this fraction (independent models' first layers
show that the random turn is not one), so it never convicts: the pair is then inconclusive,
with the reason. It needs equal widths, dense FFNs in both models and a pre-norm family (a
turn does not commute with LayerNorm's centring).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from backends.compute import Compute
from verifier.probes.base import spread
from verifier.probes.body_alignment import relative_layer
from verifier.probes.magnitude import unit_magnitude
from verifier.probes.neuron_matching import FFNWeights
from verifier.probes.rotation_null import haar_frame

#: hidden directions of the frame (all of them in narrower models): reading the candidate's
#: neurons on it costs ``2 F d FRAME`` flops per role and layer (23 GFLOP at 7B width)
FRAME = 256
#: fewest frame directions worth a measurement
MIN_FRAME = 8
#: base neurons sampled per layer, and layers, spread over the depth
NEURONS = 64
LAYERS = 4
#: random turns of the base's layers per layer; a neuron counts when it beats all of them
DRAWS = 8
#: subspace iterations for the leading token directions (a randomized range finder)
RANGE_ITERS = 2
#: fraction of sampled neurons with a counterpart at which the guard holds
LEVEL = 0.5
#: rows of a stored candidate matrix read onto the frame at a time (float32 copies stay small)
CHUNK_ROWS = 1024
#: an FFN's roles, each a matrix with neurons as rows; gate and up read the normed stream
ROLES = ("gate", "up", "down")
READERS = frozenset({"gate", "up"})
#: keys of the hidden alignment probe's ``details`` that carry the measurement
MATCHED, MATCHED_LAYERS = "rotated_match_fraction", "rotated_match_layers"


@dataclass(frozen=True)
class Layer:
    """One dense FFN as stored (neurons as rows), with the gain of the norm its gate and up
    read (None where the family has none to fold)."""

    ffn: FFNWeights
    gain: torch.Tensor | None


def layer_pairs(base_layers: list[int], cand_layers: list[int], base_depth: int,
                cand_depth: int) -> list[tuple[int, int]]:
    """``(base layer, candidate layer)`` for ``LAYERS`` candidate dense-FFN layers spread over
    the depth, each with the base layer at its relative depth, where that one is dense too."""
    have = set(base_layers)
    return [(a, j) for j in spread(cand_layers, LAYERS)
            if (a := relative_layer(j, cand_depth, base_depth)) in have]


def measure(base_embed: torch.Tensor, cand_embed: torch.Tensor,
            layers: Iterable[tuple[Layer, Layer]], rng: np.random.Generator,
            compute: Compute) -> dict[str, float | int] | None:
    """``{MATCHED: fraction, MATCHED_LAYERS: count}`` for the shared tokens' embedding rows of
    both models (same token order) and the paired layers, read one pair at a time; None where
    the widths differ, too few tokens span a frame, or no layer pair was given."""
    if cand_embed.shape != base_embed.shape or _width(base_embed) < MIN_FRAME:
        return None
    pb, pc = frames(base_embed, cand_embed, rng, compute)
    hits = total = count = 0
    for b, c in layers:
        observed, null = _best_cosines(b, c, pb, pc, rng, compute)
        hits += int((observed > null.max()).sum())
        total += observed.numel()
        count += 1
    if not count:
        return None
    return {MATCHED: hits / total, MATCHED_LAYERS: count}


def is_turned(details: Mapping[str, object]) -> bool:
    """Whether a probe's ``details`` say the candidate's neurons are the base's under a turn."""
    value = details.get(MATCHED)
    return isinstance(value, float | int) and value >= LEVEL


def _best_cosines(b: Layer, c: Layer, pb: torch.Tensor, pc: torch.Tensor,
                  rng: np.random.Generator, compute: Compute) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sampled base neuron's best cosine with a candidate neuron on the frames (mean over
    the roles both have), and the same for every null draw, pooled (``[NEURONS * DRAWS]``)."""
    roles = [r for r in ROLES if _role(b.ffn, r) is not None and _role(c.ffn, r) is not None]
    n = _role(b.ffn, ROLES[-1]).shape[0]  # down: every FFN has it
    rows = torch.linspace(0, n - 1, min(n, NEURONS)).round().long().unique()
    sampled = {r: _rows(_role(b.ffn, r).index_select(0, rows), b.gain if r in READERS else None,
                        pb.device) for r in roles}
    cand = {r: _on_frame(_role(c.ffn, r), c.gain if r in READERS else None, pc) for r in roles}

    def best(frame: torch.Tensor) -> torch.Tensor:
        sim = sum(_unit(sampled[r] @ frame) @ cand[r].T for r in roles) / len(roles)
        return sim.max(dim=1).values

    observed = best(pb)
    d, m = pb.shape
    null = torch.cat([best(haar_frame(d, m, rng, compute).to(pb.device)) for _ in range(DRAWS)])
    return observed.cpu(), null.cpu()


def _role(ffn: FFNWeights, role: str) -> torch.Tensor | None:
    return {"gate": ffn.gate, "up": ffn.up, "down": ffn.down}[role]


def _rows(w: torch.Tensor, gain: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Rows of a stored matrix in float32 (magnitude one), the norm gain folded in."""
    w = unit_magnitude(w.to(device, torch.float32))
    if gain is not None and gain.shape[0] == w.shape[1]:
        w = w * unit_magnitude(gain.to(device, torch.float32))
    return w


def _on_frame(w: torch.Tensor, gain: torch.Tensor | None, frame: torch.Tensor) -> torch.Tensor:
    """Every row of ``w`` (as stored) read on ``frame`` and brought to unit norm, ``CHUNK_ROWS``
    rows at a time."""
    return torch.cat([_unit(_rows(w[s:s + CHUNK_ROWS], gain, frame.device) @ frame)
                      for s in range(0, w.shape[0], CHUNK_ROWS)])


def _unit(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)


def frames(base: torch.Tensor, cand: torch.Tensor, rng: np.random.Generator,
           compute: Compute) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P_b, P_c)``, ``d x m`` orthonormal frames of the base's and the candidate's hidden
    spaces with ``P_c = Q^T P_b`` when the candidate's embeddings are the base's turned by
    ``Q`` (module docstring). ``base``, ``cand``: the shared tokens' embedding rows."""
    x, y = _centred(base), _centred(cand)
    m = _width(x)
    # P = the identity where the frame is the whole space (n >= 2 d tokens)
    xp = x if m == x.shape[1] else x @ _leading(x, m, rng, compute)
    return _polar(x.T @ xp), _polar(y.T @ xp)


def _width(e: torch.Tensor) -> int:
    """Directions of the frame for ``n x d`` embedding rows: ``FRAME``, at most ``d``, and at
    most half the tokens (so that they span it)."""
    return min(FRAME, e.shape[1], e.shape[0] // 2)


def _centred(e: torch.Tensor) -> torch.Tensor:
    e = unit_magnitude(e.to(torch.float32))
    return e - e.mean(dim=0, keepdim=True)


def _leading(x: torch.Tensor, m: int, rng: np.random.Generator,
             compute: Compute) -> torch.Tensor:
    """An orthonormal ``d x m`` basis of ``x``'s leading right singular directions, by
    subspace iteration from a Gaussian start drawn from ``rng`` (so that every device and every
    run takes the same frame; ``torch.svd_lowrank`` draws from torch's global generator)."""
    g = torch.as_tensor(rng.standard_normal((x.shape[1], m)), dtype=torch.float32)
    p = compute.qr(g.to(x.device))[0]
    for _ in range(RANGE_ITERS):
        p = compute.qr(x.T @ (x @ p))[0]
    return p


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The orthonormal polar factor ``U V^T`` of ``a`` (``d x m``), on the CPU in float64: an
    SVD of ``d m^2`` flops that no accelerator's solver needs to be trusted with."""
    u, _, vh = torch.linalg.svd(a.to("cpu", torch.float64), full_matrices=False)
    return (u @ vh).to(a.device, torch.float32)
