"""Probe: which base layer each candidate layer came from (pruning, depth up-scaling).

Input: a ``[L_base, L_cand]`` matrix of z-scores, each the neuron-matching statistic of one
layer pair against its null. Output: a map ``candidate layer -> base layer or None`` that
maximises the total z-score along a path through the matrix, preferring the order a derivation
keeps. Steps cost nothing when the base index advances by one, a little when it repeats (a
duplicated layer) or skips (a pruned one), more when it jumps back (a block duplicated further
down, as in depth up-scaling by concatenation), and a candidate layer may map to nothing when no
base layer is significantly similar (a new layer). Dynamic programming (Viterbi) finds the
optimum exactly; the penalties are small next to the z-scores of a derived layer (tens to
hundreds) and decide only between near-ties, i.e. among unrelated layers.

Significance against the rotation null is not enough to map a layer: all layers of a derived
model share the base's residual stream, so even a layer with no counterpart (one the pruned base
lacks) reads the same hidden directions and scores z ~ 10-25 against every base layer, where a
true copy scores 40-100 after training. A pair is therefore mappable only when its z is at least
``RATIO`` times the best z of that base layer's row: copies of one layer (duplicates) stay
comparably close to it, layers that merely share the stream do not.
"""

from __future__ import annotations

import numpy as np

NAME = "layer_alignment"
#: z-score a pair must exceed to be mapped at all (one-sided, ~1e-6 before any correction)
MIN_Z = 5.0
RATIO = 0.6
REPEAT, SKIP, BACK = 1.0, 0.5, 3.0


def _step_cost(prev: int, cur: int) -> float:
    delta = cur - prev
    if delta == 1:
        return 0.0
    if delta == 0:
        return REPEAT
    if delta > 1:
        return SKIP * (delta - 1)
    return BACK


def align_layers(
    z: np.ndarray, *, min_z: float = MIN_Z, ratio: float = RATIO
) -> list[int | None]:
    """Best path through ``z`` (rows: base layers, columns: candidate layers)."""
    nb, nc = z.shape
    none = nb  # state index meaning "no base layer"
    # score of emitting candidate layer j from state s: the pair's z, or 0 when unmapped;
    # pairs that are not significant, or far below their row's best, may not be used.
    finite = np.where(np.isfinite(z), z, -np.inf)
    row_best = finite.max(axis=1, keepdims=True)
    emit = np.where((finite >= min_z) & (finite >= ratio * row_best), finite, -np.inf)
    emit = np.vstack([emit, np.zeros((1, nc))])
    score = emit[:, 0].copy()
    score[:nb] -= np.arange(nb) * SKIP  # starting late skips the first base layers
    back = np.zeros((nb + 1, nc), dtype=np.int64)
    for j in range(1, nc):
        new = np.full(nb + 1, -np.inf)
        for s in range(nb + 1):
            best, arg = -np.inf, none
            for prev in range(nb + 1):
                if s == none or prev == none:
                    cost = 0.0
                else:
                    cost = _step_cost(prev, s)
                cand = score[prev] - cost
                if cand > best:
                    best, arg = cand, prev
            new[s] = best + emit[s, j]
            back[s, j] = arg
        score = new
    state = int(np.argmax(score))
    path = [state]
    for j in range(nc - 1, 0, -1):
        state = int(back[state, j])
        path.append(state)
    path.reverse()
    return [None if s == none else s for s in path]
