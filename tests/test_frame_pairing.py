"""Wide models are compared on a frame of their hidden space (``probes.frame_pairing``): the
observed pair on sampled base coordinates, each null draw on the first columns of a Haar
rotation. The frame must keep the test's meaning: a hidden copy is found on it, a stranger is
not, and the frame's pieces are what they claim to be."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.compute import Compute
from verifier.probes import head_matching as heads
from verifier.probes import neuron_matching as neurons
from verifier.probes.frame_pairing import FramePairing, token_budget
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.pairing import Side, fake_derivative
from verifier.probes.rotation_null import haar_frame

G = torch.Generator().manual_seed(0)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def _side(d: int = 48, f: int = 96, n_heads: int = 8, kv: int = 4) -> Side:
    hd = d // n_heads
    circuits = heads.HeadCircuits(q=randn(n_heads, hd, d), k=randn(kv, hd, d),
                                  o=randn(n_heads, hd, d), v=randn(kv, hd, d))
    ffn = neurons.FFNWeights(gate=randn(f, d), up=randn(f, d), down=randn(f, d))
    return Side(embed=randn(400, d), ffn={0: ffn}, circuits={0: circuits})


def test_haar_frames_are_orthonormal_and_unbiased():
    rng = np.random.default_rng(0)
    frames = [haar_frame(32, 8, rng) for _ in range(200)]
    assert all(torch.allclose(u.T @ u, torch.eye(8), atol=1e-5) for u in frames)
    # every direction of a Haar frame is uniform on the sphere: E[u u^T] = I / d
    mean = torch.stack([u[:, 0:1] @ u[:, 0:1].T for u in frames]).mean(dim=0)
    assert torch.allclose(mean, torch.eye(32) / 32, atol=0.02)


def test_a_hidden_noisy_copy_is_found_on_the_frame_and_a_stranger_is_not():
    base = _side()
    rng = np.random.default_rng(0)
    fake = fake_derivative(base, [0], 1.0, rng, torch.Generator().manual_seed(1))
    pairing = FramePairing(base, fake, rng, 16, width=16)
    assert pairing.width == 16
    assert pairing.embed_stat > max(pairing.embed_null) + 0.1
    assert pairing.ffn_stat(0, 0) > max(pairing.ffn_null(0, 0))
    assert pairing.head_stat(0, 0) > max(pairing.head_null(0, 0))
    stranger = FramePairing(base, _side(), rng, 16, width=16)
    assert min(stranger.embed_null) <= stranger.embed_stat + 0.05
    assert stranger.ffn_stat(0, 0) < max(stranger.ffn_null(0, 0)) + 0.05


def test_the_observed_frame_maps_each_sampled_coordinate_to_its_copy():
    """A signed permutation without noise: every sampled base coordinate is matched to the
    candidate coordinate that holds it, with its sign."""
    base = _side()
    rng = np.random.default_rng(0)
    d = base.embed.shape[1]
    pi = torch.as_tensor(rng.permutation(d))
    sign = torch.as_tensor(rng.choice([-1.0, 1.0], d), dtype=torch.float32)
    cand = Side(embed=(base.embed * sign)[:, pi])
    pairing = FramePairing(base, cand, rng, 8, width=12)
    held = np.argsort(pi.numpy())  # candidate column holding base coordinate i
    assert np.array_equal(pairing.align.perm, held[pairing.coords])
    assert np.array_equal(pairing.align.sign, sign.numpy()[pairing.coords])
    assert pairing.embed_stat > 0.999


def test_hidden_major_columns_equal_the_aligned_layer():
    """Null draws take the candidate's columns from a hidden-major copy: the same numbers as
    aligning the layer as stored."""
    base = _side()
    rng = np.random.default_rng(0)
    cand = fake_derivative(base, [0], 0.5, rng, torch.Generator().manual_seed(1))
    pairing = FramePairing(base, cand, rng, 4, width=16)
    for align in (pairing.align, pairing.null_aligns[2]):
        direct = cand.ffn[0].aligned(align)
        taken = cand.ffn[0].hidden_major().take_hidden(align, Compute())
        assert torch.equal(direct.up, taken.up)
        assert direct.gate is not None
        assert taken.gate is not None
        assert torch.equal(direct.gate, taken.gate)
        assert torch.equal(direct.down, taken.down)
    # the heads' hidden-major path gives the circuits aligned as stored
    c = pairing._cand_circuits(0, 1)
    direct_c = cand.circuits[0].aligned(pairing.null_aligns[1])
    assert torch.equal(c.q, direct_c.q)
    assert torch.equal(c.v, direct_c.v)


def test_the_power_check_reuses_the_frames():
    base = _side()
    rng = np.random.default_rng(0)
    observed = FramePairing(base, _side(), rng, 6, width=16)
    fake = fake_derivative(base, [0], 3.0, rng, torch.Generator().manual_seed(2))
    sibling = observed.sibling(fake, rng)
    assert isinstance(sibling, FramePairing)
    assert np.array_equal(sibling.coords, observed.coords)
    assert sibling.rotations is observed.rotations


def test_frames_need_fewer_tokens_than_the_full_alignment():
    assert token_budget(4096, 256) == 2048
    assert token_budget(4096, 1024) == 8192
    assert token_budget(64, 32) == 2048
    assert token_budget(4096, 4096) == 16384  # never more than the full alignment's own budget


def test_balancing_a_hidden_major_view_equals_balancing_the_copy():
    x = randn(12, 200) * torch.linspace(0.1, 5.0, 12)[:, None]  # [m, F]: coordinates as rows
    view = x.T  # [F, m], not contiguous
    assert not view.is_contiguous()
    assert torch.allclose(neurons._unit_rows(view), neurons._unit_rows(view.contiguous()),
                          atol=1e-6)


def _stored_circuits(dtype: torch.dtype) -> heads.HeadCircuits:
    """Circuits as ``load_circuits`` gives them: factors as stored, the gain not folded."""
    d, hd = 48, 6
    o = randn(d, 8 * hd).to(dtype)  # the output projection as stored: [d, heads * hd]
    return heads.HeadCircuits(q=randn(8, hd, d).to(dtype), k=randn(4, hd, d).to(dtype),
                              o=o.T.reshape(8, hd, d), v=randn(4, hd, d).to(dtype),
                              gamma=(1.0 + randn(d).abs()).to(dtype))


def test_stored_circuits_are_placed_with_the_gain_folded_into_q_k_and_v():
    c = _stored_circuits(torch.bfloat16)
    placed = c.placed(Compute())
    gamma = c.gamma.float()
    assert placed.gamma is None
    assert placed.q.dtype == torch.float32
    assert torch.equal(placed.q, c.q.float() * gamma)
    assert torch.equal(placed.k, c.k.float() * gamma)
    assert torch.equal(placed.v, c.v.float() * gamma)
    assert torch.equal(placed.o, c.o.float())  # an output: no gain
    assert placed.placed(Compute()).q is placed.q  # placing placed circuits is free
    with pytest.raises(ValueError, match="place"):
        c.aligned(HiddenAlignment.identity(48))


def test_a_frame_takes_the_same_circuit_numbers_from_the_hidden_major_copy():
    """``HiddenMajorCircuits.take`` upcasts only the frame's rows, yet gives exactly what
    placing the whole layer and aligning it gives, unmatched coordinates zero."""
    rng = np.random.default_rng(3)
    m = 10
    perm = rng.choice(48, m, replace=False)
    perm[4] = -1  # a frame direction the candidate could not match
    sign = rng.choice([-1.0, 1.0], m)
    align = HiddenAlignment(perm, sign, np.ones(m), np.ones(m))
    for dtype in (torch.float32, torch.bfloat16):
        c = _stored_circuits(dtype)
        want = c.placed(Compute()).aligned(align)
        got = c.hidden_major().take(align, Compute())
        for a, b in zip((want.q, want.k, want.o, want.v), (got.q, got.k, got.o, got.v),
                        strict=True):
            assert a.shape == b.shape
            assert torch.equal(a, b)
        assert bool((got.q[..., 4] == 0).all())


def test_a_pooled_moe_layer_is_laid_out_hidden_major_on_a_frame():
    """The frame pools a MoE layer's experts as ``[d, N]`` matrices and takes each draw's rows
    from them: the same features as gathering columns of the neuron-major pool."""
    base = _side()
    experts = [neurons.FFNWeights(gate=randn(24, 48).bfloat16(), up=randn(24, 48).bfloat16(),
                                  down=randn(48, 24).bfloat16().T) for _ in range(3)]
    rng = np.random.default_rng(0)
    pairing = FramePairing(base, _side(), rng, 4, width=16)
    hm = pairing.pool(experts)
    assert hm.up.shape == (48, 72)
    assert hm.up.dtype == torch.bfloat16
    rows = neurons.concat(experts)
    assert torch.equal(hm.up, rows.up.T)
    assert torch.equal(hm.down, rows.down.T)
    for k in (-1, 0, 3):
        a = pairing.pooled_features_of(hm, k)
        b = pairing.cand_features_of(rows, k)
        for x, y in ((a.gate, b.gate), (a.up, b.up), (a.down, b.down)):
            assert torch.allclose(x, y, atol=1e-6)


def test_the_power_checks_noisy_copy_never_touches_the_base():
    """The noisy layer is built in buffers of its own, also where the base's float32 down
    projection is already the hidden-major ``[d, F]`` it starts from; its circuits are made
    when first asked for."""
    base = _side()
    stored = torch.randn(48, 96, generator=G)  # the down projection as stored: [d, F]
    base.ffn[0] = neurons.FFNWeights(gate=base.ffn[0].gate, up=base.ffn[0].up, down=stored.T)
    before = {name: w.clone() for name, w in (("gate", base.ffn[0].gate), ("up", base.ffn[0].up),
                                               ("down", stored))}
    rng = np.random.default_rng(0)
    fake = fake_derivative(base, [0], 1.0, rng, torch.Generator().manual_seed(1),
                           hidden_major=True)
    assert torch.equal(base.ffn[0].gate, before["gate"])
    assert torch.equal(base.ffn[0].up, before["up"])
    assert torch.equal(stored, before["down"])
    assert not torch.equal(fake.ffn[0].down, stored.T)
    assert 0 in fake.circuits
    assert fake.circuits[0] is fake.circuits[0]  # made once, kept
