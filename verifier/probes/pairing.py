"""One base/candidate comparison: the observed hidden alignment, the null draws, and the
statistics of every probe under both, computed lazily and cached.

``Pairing`` is used twice per verification: on the real pair, and in the power check on the
base against a noisy, signed-permuted copy of itself, so that both go through exactly the same
procedure (alignment recovery included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from verifier.probes import head_matching as heads
from verifier.probes import hidden_alignment as hidden
from verifier.probes import neuron_matching as neurons
from verifier.probes.rotation_null import haar_rotation


@dataclass
class Side:
    """What the probes need of one model: embedding rows of the shared tokens (``[n, d]``, the
    same token order on both sides), dense FFNs and attention circuits by layer."""

    embed: torch.Tensor
    ffn: dict[int, neurons.FFNWeights] = field(default_factory=dict)
    circuits: dict[int, heads.HeadCircuits] = field(default_factory=dict)


class Pairing:
    """Observed alignment plus ``draws`` null alignments of a Haar-rotated base."""

    def __init__(self, base: Side, cand: Side, rng: np.random.Generator, draws: int) -> None:
        self.base, self.cand = base, cand
        d = base.embed.shape[1]
        ys = hidden.standardise(cand.embed)
        self.align, self.embed_stat = hidden.recover(
            hidden.standardise(base.embed), ys, (base.embed.std(dim=0), cand.embed.std(dim=0))
        )
        self.rotations: list[torch.Tensor] = []
        self.null_aligns: list[hidden.HiddenAlignment] = []
        self.embed_null: list[float] = []
        for _ in range(draws):
            rot = haar_rotation(d, rng)
            align, stat = hidden.recover(hidden.standardise(base.embed @ rot), ys)
            self.rotations.append(rot)
            self.null_aligns.append(align)
            self.embed_null.append(stat)
        self._fb: dict[tuple[int, int], neurons.NeuronFeatures] = {}
        self._fc: dict[tuple[int, int], neurons.NeuronFeatures] = {}

    # k == -1 is the observed pair; k >= 0 the k-th null draw.
    def _align(self, k: int) -> hidden.HiddenAlignment:
        return self.align if k < 0 else self.null_aligns[k]

    def _base_features(self, a: int, k: int) -> neurons.NeuronFeatures:
        if (a, k) not in self._fb:
            ffn = self.base.ffn[a] if k < 0 else self.base.ffn[a].rotated(self.rotations[k])
            self._fb[(a, k)] = neurons.NeuronFeatures.of(ffn)
        return self._fb[(a, k)]

    def _cand_features(self, j: int, k: int) -> neurons.NeuronFeatures:
        if (j, k) not in self._fc:
            self._fc[(j, k)] = neurons.NeuronFeatures.of(self.cand.ffn[j].aligned(self._align(k)))
        return self._fc[(j, k)]

    def ffn_stat(self, a: int, j: int, k: int = -1) -> float:
        """Mean matched neuron similarity of base layer ``a`` and candidate layer ``j``."""
        return neurons.match(
            neurons.similarity(self._base_features(a, k), self._cand_features(j, k))
        )[0]

    def ffn_null(self, a: int, j: int) -> list[float]:
        return [self.ffn_stat(a, j, k) for k in range(len(self.rotations))]

    def head_stat(self, a: int, j: int, k: int = -1) -> float:
        b = self.base.circuits[a] if k < 0 else self.base.circuits[a].rotated(self.rotations[k])
        return heads.match_heads(b, self.cand.circuits[j].aligned(self._align(k)))

    def head_null(self, a: int, j: int) -> list[float]:
        return [self.head_stat(a, j, k) for k in range(len(self.rotations))]


def fake_derivative(
    base: Side, layers: list[int], drift: float, rng: np.random.Generator, gen: torch.Generator
) -> Side:
    """The base's ``layers`` as a vendor might hide them: Gaussian noise of relative size
    ``drift`` on every matrix, a random signed permutation of the hidden space, and random
    permutations of the FFN neurons (used to check that the probes have power)."""
    d = base.embed.shape[1]
    pi = torch.as_tensor(rng.permutation(d))
    sign = torch.as_tensor(rng.choice([-1.0, 1.0], d), dtype=torch.float32)

    def noisy(w: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float32)
        return w + noise * (drift * w.norm() / noise.norm().clamp_min(1e-12))

    def hide(w: torch.Tensor) -> torch.Tensor:  # candidate column c holds base column pi[c]
        return (noisy(w) * sign)[..., pi]

    out = Side(embed=hide(base.embed))
    for a in layers:
        if a in base.ffn:
            ffn = base.ffn[a]
            tau = torch.as_tensor(rng.permutation(ffn.up.shape[0]))
            out.ffn[a] = neurons.FFNWeights(
                gate=hide(ffn.gate)[tau] if ffn.gate is not None else None,
                up=hide(ffn.up)[tau], down=hide(ffn.down)[tau],
            )
        if a in base.circuits:
            c = base.circuits[a]

            def both(m: torch.Tensor) -> torch.Tensor:
                m = noisy(m) * sign[None, :, None] * sign[None, None, :]
                return m[:, pi][:, :, pi]

            out.circuits[a] = heads.HeadCircuits(qk=both(c.qk), ov=both(c.ov), groups=c.groups)
    return out
