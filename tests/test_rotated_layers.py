"""The guard against a rotated derivative (``verifier.probes.rotated_layers``): the turn recovered
from the embeddings maps a base neuron onto its counterpart exactly, a turned and perturbed copy
keeps a counterpart for its neurons, an unrelated model does not, and what cannot be measured
is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.compute import Compute
from verifier.probes import rotated_layers as turned
from verifier.probes.neuron_matching import FFNWeights
from verifier.probes.rotation_null import haar_rotation

D, F, TOKENS = 48, 96, 400


def _gaussian(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _embeddings(seed: int) -> torch.Tensor:
    # anisotropic, as trained embeddings are: a few directions carry most of the variance
    scales = torch.logspace(0, -1.5, D)
    return _gaussian(TOKENS, D, seed=seed) * scales


def _layer(seed: int) -> turned.Layer:
    return turned.Layer(FFNWeights(gate=_gaussian(F, D, seed=seed), up=_gaussian(F, D, seed=seed + 1),
                                   down=_gaussian(F, D, seed=seed + 2)),
                        gain=1.0 + 0.3 * _gaussian(D, seed=seed + 3).abs())


def _turned(layer: turned.Layer, rot: torch.Tensor, noise: float, seed: int) -> turned.Layer:
    """``layer`` with its gain folded, its hidden space turned by ``rot``, its neurons shuffled
    and Gaussian noise of relative size ``noise`` added (a rotated model trained on)."""
    perm = torch.randperm(F, generator=torch.Generator().manual_seed(seed))
    gain = layer.gain

    def move(w: torch.Tensor, reads: bool, k: int) -> torch.Tensor:
        w = (w * gain if reads else w) @ rot
        return w[perm] + noise * w.std() * _gaussian(*w.shape, seed=seed + k)

    ffn = layer.ffn
    return turned.Layer(FFNWeights(gate=move(ffn.gate, True, 1), up=move(ffn.up, True, 2),
                                   down=move(ffn.down, False, 3)), gain=None)


def _measure(base: torch.Tensor, cand: torch.Tensor, pairs, seed: int = 0):
    return turned.measure(base, cand, pairs, np.random.default_rng(seed), Compute())


@pytest.mark.parametrize("frame", [turned.FRAME, 16], ids=["whole-space", "16-direction-frame"])
def test_the_recovered_frames_carry_a_turned_copy_onto_the_base(frame, monkeypatch):
    monkeypatch.setattr(turned, "FRAME", frame)
    x = _embeddings(1)
    q = haar_rotation(D, np.random.default_rng(2))
    pb, pc = turned.frames(x, 3.0 * x @ q, np.random.default_rng(0), Compute())
    assert pb.shape == pc.shape == (D, min(frame, D))
    assert torch.allclose(pb.T @ pb, torch.eye(pb.shape[1]), atol=1e-5)
    # a base row v and the candidate's v Q read the same on the two frames
    assert torch.allclose(q.T @ pb, pc, atol=1e-4)


@pytest.mark.parametrize("frame", [turned.FRAME, 24], ids=["whole-space", "24-direction-frame"])
def test_a_turned_and_perturbed_copy_keeps_counterparts_and_an_unrelated_model_does_not(
        frame, monkeypatch):
    monkeypatch.setattr(turned, "FRAME", frame)
    x = _embeddings(1)
    rot = haar_rotation(D, np.random.default_rng(3))
    y = x @ rot + 0.1 * x.std() * _gaussian(TOKENS, D, seed=4)
    layers = [_layer(10 * i) for i in range(3)]
    copy = _measure(x, y, [(b, _turned(b, rot, 0.5, 7 + i)) for i, b in enumerate(layers)])
    assert copy == {turned.MATCHED: pytest.approx(1.0, abs=0.05), turned.MATCHED_LAYERS: 3}
    assert turned.is_turned(copy)
    other = _measure(x, _embeddings(5), [(b, _layer(100 + 10 * i)) for i, b in enumerate(layers)])
    assert other is not None
    assert other[turned.MATCHED] < 0.1
    assert not turned.is_turned(other)


def test_it_is_not_measured_across_widths_without_tokens_enough_or_layers():
    x, layer = _embeddings(1), _layer(0)
    assert _measure(x, torch.cat([x, x], dim=1), [(layer, layer)]) is None
    assert _measure(x[:10], x[:10], [(layer, layer)]) is None
    assert _measure(x, x, []) is None


def test_layers_pair_by_relative_depth_where_the_base_layer_is_dense():
    assert turned.layer_pairs(list(range(8)), list(range(8)), 8, 8) == [(0, 0), (2, 2), (5, 5),
                                                                          (7, 7)]
    assert turned.layer_pairs(list(range(8)), list(range(6)), 8, 6) == [(0, 0), (3, 2), (4, 3),
                                                                          (7, 5)]
    # a base layer at that depth without a dense FFN (e.g. MoE) is left out
    assert turned.layer_pairs([0, 1, 3, 4, 5, 6, 7], list(range(8)), 8, 8)[1:2] == [(5, 5)]
