"""The probes are blind to what a vendor can change for free, and see what it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verifier.probes import head_matching as heads
from verifier.probes import hidden_alignment as hidden
from verifier.probes import neuron_matching as neurons
from verifier.probes import rotated_copy
from verifier.probes.hidden_alignment import HiddenAlignment
from verifier.probes.magnitude import unit_magnitude
from verifier.probes.pairing import Pairing, Side, fake_derivative

G = torch.Generator().manual_seed(0)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def test_alignment_recovers_a_signed_permutation_and_scales_through_noise():
    x = randn(400, 32)
    perm = torch.randperm(32, generator=G)
    sign = torch.where(torch.rand(32, generator=G) < 0.5, -1.0, 1.0)
    scale = torch.exp(randn(32) * 0.5)
    # candidate column c holds base column perm[c], flipped and scaled
    y = (x * sign * scale)[:, perm] + 0.05 * randn(400, 32)
    align, stat = hidden.recover(hidden.standardise(x), hidden.standardise(y),
                                 (x.std(dim=0), y.std(dim=0)))
    inverse = torch.argsort(perm).numpy()
    assert np.array_equal(align.perm, inverse)
    assert np.array_equal(align.sign, sign.numpy())
    assert np.allclose(align.scale, scale.numpy(), rtol=0.1)
    assert stat > 0.9
    # mapping the candidate back gives the base (up to scale and noise)
    back = align.cols(y) / torch.as_tensor(align.scale, dtype=torch.float32)
    assert torch.nn.functional.cosine_similarity(back.T, x.T).min() > 0.9


def _ffn(f: int = 48, d: int = 32) -> neurons.FFNWeights:
    return neurons.FFNWeights(gate=randn(f, d), up=randn(f, d), down=randn(f, d))


def _score(a: neurons.FFNWeights, b: neurons.FFNWeights) -> float:
    return neurons.match(neurons.similarity(neurons.NeuronFeatures.of(a),
                                            neurons.NeuronFeatures.of(b)))[0]


def test_neuron_matching_ignores_neuron_order_and_swiglu_rescaling():
    a = _ffn()
    tau = torch.randperm(48, generator=G)
    c = torch.exp(randn(48, 1)) * torch.where(torch.rand(48, 1, generator=G) < 0.5, -1.0, 1.0)
    b = neurons.FFNWeights(gate=a.gate[tau], up=(a.up * c)[tau], down=(a.down / c)[tau])
    assert _score(a, b) > 0.999


def test_neuron_matching_ignores_per_coordinate_rescaling_of_the_inputs():
    a = _ffn()
    s = torch.exp(randn(32))  # a norm gain folded into the input columns
    b = neurons.FFNWeights(gate=a.gate * s, up=a.up * s, down=a.down)
    assert _score(a, b) > 0.999


def _balanced_in_place(w: torch.Tensor) -> torch.Tensor:
    """The balancing as its definition reads, in float64: columns to norm sqrt(rows), then
    rows to unit norm, ``BALANCE_ITERS`` times, the matrix itself rescaled each step."""
    w = w.double().clone()
    for _ in range(neurons.BALANCE_ITERS):
        cols = w.square().sum(dim=0, keepdim=True).sqrt()
        w = w * torch.where(cols == 0, 0.0, w.shape[0] ** 0.5 / cols)
        rows = w.square().sum(dim=1, keepdim=True).sqrt()
        w = w * torch.where(rows == 0, 0.0, 1.0 / rows)
    return w


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (64, 4096)], ids=str)
def test_balancing_by_scale_vectors_equals_rescaling_the_matrix_step_by_step(shape):
    n, m = shape
    w = randn(n, m) * torch.exp(2 * randn(n, 1)) * torch.exp(2 * randn(1, m))
    w[3] = 0.0  # a pruned neuron and a dead coordinate stay zero
    w[:, 5] = 0.0
    want = _balanced_in_place(w).float()
    assert torch.allclose(neurons._unit_rows(w), want, atol=2e-6)
    # a hidden-major copy seen as [n, m] is balanced as it lies, and stays in its layout
    view = w.T.contiguous().T
    got = neurons._unit_rows(view)
    assert got.stride() == view.stride()
    assert torch.allclose(got, want, atol=2e-6)


def test_balancing_tiny_weights_on_many_coordinates_neither_overflows_nor_loses_them():
    # the scale pair has a free common factor that grows ~m per iteration if left alone
    # (4096^8 / 1e-16 overflows float32); the balanced form does not depend on w's scale
    w = randn(64, 4096)
    tiny = neurons._unit_rows(w * 1e-8)
    assert torch.isfinite(tiny).all()
    assert torch.allclose(tiny, neurons._unit_rows(w), atol=2e-6)


def test_a_nan_weight_is_not_balanced_away():
    w = randn(20, 10)
    w[2, 3] = float("nan")
    assert neurons._unit_rows(w).isnan().any()


def test_negating_gates_is_not_free_and_is_seen():
    a = _ffn()
    b = neurons.FFNWeights(gate=-a.gate, up=a.up, down=a.down)
    assert _score(a, b) < 0.75


def test_unrelated_ffns_score_near_the_random_level():
    assert _score(_ffn(), _ffn()) < 0.4


def _circuits(heads_n: int = 4, kv: int = 2, hd: int = 8, d: int = 32):
    q, k, v, o = randn(heads_n * hd, d), randn(kv * hd, d), randn(kv * hd, d), randn(d, heads_n * hd)
    return q, k, v, o


def _as_circuits(q, k, v, o, heads_n=4, kv=2, hd=8) -> heads.HeadCircuits:
    d = q.shape[1]
    return heads.HeadCircuits(q=q.reshape(heads_n, hd, d), k=k.reshape(kv, hd, d),
                              o=o.T.reshape(heads_n, hd, d), v=v.reshape(kv, hd, d))


def _dense_similarity(b: heads.HeadCircuits, c: heads.HeadCircuits) -> torch.Tensor:
    """The definition: cosines of the flattened d x d circuits, averaged over QK and OV."""
    out = 0.0
    for mb, mc in zip(b.dense(), c.dense(), strict=True):
        fb = mb.reshape(mb.shape[0], -1).double()
        fc = mc.reshape(mc.shape[0], -1).double()
        out = out + (fb / fb.norm(dim=1, keepdim=True)) @ (fc / fc.norm(dim=1, keepdim=True)).T
    return out / 2.0


def test_factored_head_similarity_equals_the_dense_circuit_cosines():
    b, c = _as_circuits(*_circuits()), _as_circuits(*_circuits())
    rot = torch.linalg.qr(randn(32, 32))[0]
    align = HiddenAlignment(np.random.default_rng(0).permutation(32),
                            np.random.default_rng(1).choice([-1.0, 1.0], 32), np.ones(32),
                            np.ones(32))
    for x, y in ((b, c), (b, b), (b.rotated(rot), c.aligned(align))):
        assert torch.allclose(heads.head_similarity(x, y), _dense_similarity(x, y), atol=1e-5)
        # both of the probe's own ways: Gram blocks (full width) and formed circuits (a frame)
        assert torch.allclose(heads._gram_similarity(x, y), _dense_similarity(x, y), atol=1e-5)
        assert torch.allclose(heads._dense_similarity(x, y), _dense_similarity(x, y), atol=1e-5)
    # rotating the factors is rotating the circuits: R^T M R
    for m_rot, m in zip(b.rotated(rot).dense(), b.dense(), strict=True):
        assert torch.allclose(m_rot, rot.T @ m @ rot, atol=1e-4)


def test_head_circuits_ignore_qk_vo_rescaling_and_shared_rotations():
    q, k, v, o = _circuits()
    base = _as_circuits(q, k, v, o)
    rot = torch.linalg.qr(randn(8, 8))[0]  # one rotation for q and k heads of group 0
    q2, k2 = q.clone(), k.clone()
    q2[0:8], q2[8:16], k2[0:8] = rot @ q[0:8], rot @ q[8:16], rot @ k[0:8]
    q2, k2 = q2 * 3.0, k2 / 3.0
    v2, o2 = v * 0.25, o * 4.0
    # swap the two KV groups (with their query heads)
    order = torch.tensor([2, 3, 0, 1])
    q3 = q2.reshape(4, 8, -1)[order].reshape(32, -1)
    k3 = k2.reshape(2, 8, -1)[torch.tensor([1, 0])].reshape(16, -1)
    v3 = v2.reshape(2, 8, -1)[torch.tensor([1, 0])].reshape(16, -1)
    o3 = o2.reshape(32, 4, 8)[:, order].reshape(32, 32)
    assert heads.match_heads(base, _as_circuits(q3, k3, v3, o3)) > 0.999
    assert heads.match_heads(base, _as_circuits(*_circuits())) < 0.3


def test_a_hidden_noisy_copy_is_found_and_a_stranger_is_not():
    base = Side(embed=randn(300, 32), ffn={0: _ffn()}, circuits={0: _as_circuits(*_circuits())})
    rng = np.random.default_rng(0)
    fake = fake_derivative(base, [0], 1.0, rng, torch.Generator().manual_seed(1))
    pairing = Pairing(base, fake, rng, 16)
    assert pairing.embed_stat > max(pairing.embed_null) + 0.1
    assert pairing.ffn_stat(0, 0) > max(pairing.ffn_null(0, 0))
    assert pairing.head_stat(0, 0) > max(pairing.head_null(0, 0))
    stranger = Side(embed=randn(300, 32), ffn={0: _ffn()}, circuits={0: _as_circuits(*_circuits())})
    pairing = Pairing(base, stranger, rng, 16)
    assert min(pairing.embed_null) <= pairing.embed_stat + 0.05


def test_candidate_coordinate_features_equal_aligning_the_candidate():
    """Pairing compares in the candidate's basis (base features moved by the alignment); that
    equals the definition (candidate aligned into the base's basis, then balanced), observed
    and under a null draw."""
    base = Side(embed=randn(300, 32), ffn={0: _ffn()})
    rng = np.random.default_rng(0)
    cand = fake_derivative(base, [0], 0.5, rng, torch.Generator().manual_seed(1))
    pairing = Pairing(base, cand, rng, 8)
    for k in (-1, 0, 3):
        align = pairing.align if k < 0 else pairing.null_aligns[k]
        b = base.ffn[0] if k < 0 else base.ffn[0].rotated(pairing.rotations[k])
        sim = neurons.similarity(neurons.NeuronFeatures.of(b),
                                 neurons.NeuronFeatures.of(cand.ffn[0].aligned(align)))
        assert torch.allclose(pairing.ffn_similarity(0, 0, k), sim, atol=1e-5)


def test_sampled_base_neurons_keep_the_test_and_its_matches():
    """A wide base layer is represented by a fixed sample of its neurons, the same in the
    observed pair and every null draw; each sampled neuron still finds its own copy."""
    base = Side(embed=randn(300, 32), ffn={0: _ffn(f=96)})
    rng = np.random.default_rng(0)
    cand = fake_derivative(base, [0], 0.3, rng, torch.Generator().manual_seed(1))
    pairing = Pairing(base, cand, rng, 12, sample=24)
    rows = pairing.base_rows(0)
    assert rows is not None
    assert rows.numel() == 24
    assert torch.equal(rows, pairing.base_rows(0))  # fixed: the same sample for every draw
    assert pairing.ffn_similarity(0, 0).shape == (24, 96)
    assert pairing.ffn_stat(0, 0) > max(pairing.ffn_null(0, 0))
    stranger = Side(embed=randn(300, 32), ffn={0: _ffn(f=96)})
    other = Pairing(base, stranger, rng, 12, sample=24)
    assert other.ffn_stat(0, 0) < max(other.ffn_null(0, 0)) + 0.05


def test_rotated_correlations_equal_rotating_the_embedding():
    x, y = randn(200, 16) * torch.linspace(0.5, 2.0, 16) + 0.3, randn(200, 16)
    ys = hidden.standardise(y)
    rot = torch.linalg.qr(randn(16, 16))[0]
    direct = hidden.standardise(x @ rot).T @ ys
    assert torch.allclose(hidden.RotatedCorrelations(x, ys)(rot), direct, atol=1e-5)


def test_sampled_base_heads_keep_whole_groups_and_find_their_copy():
    q, k, v, o = _circuits(heads_n=16, kv=4)
    base_c = _as_circuits(q, k, v, o, heads_n=16, kv=4)
    base = Side(embed=randn(300, 32), ffn={0: _ffn()}, circuits={0: base_c})
    rng = np.random.default_rng(0)
    cand = fake_derivative(base, [0], 0.3, rng, torch.Generator().manual_seed(1))
    pairing = Pairing(base, cand, rng, 12)
    groups = pairing.base_groups(0)
    assert groups is not None
    assert groups.numel() == 2  # 8 query heads = 2 groups of 4
    picked = base_c.select_groups(groups)
    assert picked.heads == 8
    assert picked.groups == 2
    assert torch.equal(picked.k, base_c.k[groups])
    assert pairing.head_stat(0, 0) > max(pairing.head_null(0, 0))
    # all heads matched against themselves: the sampled statistic is the full one's value
    assert heads.match_heads(picked, base_c) == pytest.approx(1.0, abs=1e-5)


def test_circuits_are_formed_only_where_that_is_cheaper():
    def shaped(n_heads: int, kv: int, hd: int, d: int) -> heads.HeadCircuits:
        return heads.HeadCircuits(q=torch.zeros(n_heads, hd, d), k=torch.zeros(kv, hd, d),
                                  o=torch.zeros(n_heads, hd, d), v=torch.zeros(kv, hd, d))

    # 7B full width: Gram blocks; the same heads on a 128-direction frame: formed circuits
    assert not heads._dense_cheaper(shaped(8, 2, 128, 4096), shaped(32, 8, 128, 4096))
    assert heads._dense_cheaper(shaped(8, 2, 128, 128), shaped(32, 8, 128, 128))
    # the test models (hidden 64, 4 heads of 16) keep the Gram blocks
    assert not heads._dense_cheaper(shaped(4, 2, 16, 64), shaped(4, 2, 16, 64))


@pytest.mark.parametrize("layout", ["rows", "transposed view"])
@pytest.mark.parametrize("order", ["random", "increasing", "with repeats"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_taking_hidden_coordinates_equals_index_select(layout, order, dtype):
    # the gather reads a stored matrix by whole runs (a transposed view's columns are its
    # storage's rows; a row-major matrix's entries in increasing order) and gives exactly
    # index_select's contiguous tensor, whatever the order of the coordinates
    gen = torch.Generator().manual_seed(0)
    stored = torch.randn(40, 96, generator=gen).to(dtype)
    w = stored if layout == "rows" else stored.T
    idx = torch.randperm(w.shape[1], generator=gen)[:17]
    if order == "increasing":
        idx = idx.sort().values
    elif order == "with repeats":
        idx[3] = idx[11] = idx[0]
    for dim, i in ((1, idx), (0, idx[idx < w.shape[0]])):
        want = w.index_select(dim, i)
        got = hidden.select(w, dim, i)
        assert torch.equal(got, want)
        assert got.is_contiguous()
    align = HiddenAlignment(np.array([5, -1, 2, 2]), np.array([1.0, 1.0, -1.0, 1.0]),
                            np.ones(4), np.ones(4))
    want = w.index_select(1, torch.tensor([5, 0, 2, 2])).float() * torch.tensor([1, 0, -1, 1.0])
    assert torch.equal(align.cols(w).float(), want)


@pytest.mark.parametrize("c", [1e20, 1e-20])
def test_an_extreme_swiglu_rescaling_is_free_and_still_seen(c):
    # up by c and down by 1/c leaves the function unchanged, and bf16 holds either; float32
    # squares of 1e20-sized weights overflowed to NaN, of 1e-20-sized ones underflowed to 0
    a = _ffn()
    b = neurons.FFNWeights(gate=a.gate, up=a.up * c, down=a.down / c)
    assert _score(a, b) > 0.999


@pytest.mark.parametrize("c", [1e25, 1e-25])
def test_circuits_and_embeddings_of_extreme_scale_are_compared_as_any_others(c):
    q, k, v, o = _circuits()
    base = _as_circuits(q, k, v, o)
    assert heads.match_heads(base, _as_circuits(q * c, k * c, v * c, o * c)) > 0.999
    x = randn(400, 32)
    _, stat = hidden.recover(hidden.standardise(x), hidden.standardise(x * c))
    assert stat > 0.999


@pytest.mark.parametrize("power", [40, -40])
def test_weights_scaled_far_by_a_power_of_two_give_the_same_similarities_bit_for_bit(power):
    # why the magnitude is set by a power of two: the scaled weights are compared exactly as
    # the unscaled ones, which (of ordinary size) are not scaled at all
    c = 2.0**power
    a = _ffn()
    assert torch.equal(neurons._unit_rows(a.up), neurons._unit_rows(a.up * c))
    q, k, v, o = _circuits()
    x, y = _as_circuits(q, k, v, o), _as_circuits(*_circuits())
    scaled = _as_circuits(q * c, k * c, v * c, o * c)
    assert torch.equal(heads.head_similarity(x, y), heads.head_similarity(scaled, y))
    e = randn(400, 32)
    assert torch.equal(hidden.standardise(e), hidden.standardise(e * c))


def _powers_of_two(n: int, widest: int) -> torch.Tensor:
    """``n`` factors ``2^k``, ``k`` drawn from ``[-widest, widest]``, as a column."""
    k = torch.randint(-widest, widest + 1, (n, 1), generator=G)
    return torch.ldexp(torch.ones(n, 1), k)


def test_neurons_rescaled_one_by_one_beyond_what_float32_squares_hold_are_still_seen():
    # each neuron's up row by 2^k and down column by 2^-k, k up to +-60: the function is
    # unchanged and bf16 stores it, but one scale for the whole matrix brought the small
    # neurons' squares below float32's range, and the probe stopped with a false "NaN weights"
    a = _ffn()
    c = _powers_of_two(48, 60)
    b = neurons.FFNWeights(gate=a.gate, up=a.up * c, down=a.down / c)
    assert _score(a, b) > 0.999
    s = _powers_of_two(32, 60).T  # the same across the hidden coordinates (a folded norm gain)
    b = neurons.FFNWeights(gate=a.gate * s, up=a.up * s, down=a.down)
    assert _score(a, b) > 0.999


def test_balancing_a_matrix_of_extreme_row_and_column_scales_follows_its_definition():
    w = randn(300, 40) * _powers_of_two(300, 60) * _powers_of_two(40, 40).T
    w[3] = 0.0
    got = neurons._unit_rows(w)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, _balanced_in_place(w).float(), atol=2e-6)


def test_heads_rescaled_group_by_group_beyond_what_float32_holds_are_still_seen():
    # each KV group's query heads by c and its key by 1/c, its value by e and its heads' output
    # columns by 1/e, the factors 2^+-60 apart: the function is unchanged, but one power of two
    # for the whole matrix left the small groups' circuits to underflow and the match fell apart
    q, k, v, o = _circuits()
    base = _as_circuits(q, k, v, o)
    c = torch.tensor([[2.0**60], [2.0**-60]])
    e = torch.tensor([[2.0**-60], [2.0**60]])
    per_head = lambda f: f.repeat_interleave(2, dim=0).repeat_interleave(8, dim=0)  # noqa: E731
    q2 = q * per_head(c)
    k2 = k / c.repeat_interleave(8, dim=0)
    v2 = v * e.repeat_interleave(8, dim=0)
    o2 = o / per_head(e).T
    assert heads.match_heads(base, _as_circuits(q2, k2, v2, o2)) > 0.999
    # and each head is compared as it would be unscaled
    assert torch.allclose(heads.head_similarity(base, _as_circuits(q2, k2, v2, o2)),
                          heads.head_similarity(base, base), atol=1e-6)


def test_token_geometry_survives_a_rotation_and_tells_a_stranger_apart():
    x = randn(2000, 48) @ torch.diag(torch.exp(randn(48)))  # anisotropic, as embeddings are
    rot = torch.linalg.qr(randn(48, 48))[0]
    copy = rotated_copy.measure(x, x @ rot * 3.0)  # rotated and scaled as a whole
    assert copy is not None
    assert copy["gram_agreement"] > 1 - 1e-5
    assert copy["gram_agreement"] >= copy["rotated_copy_level"]
    stranger = rotated_copy.measure(x, randn(2000, 48))
    assert stranger is not None
    assert stranger["gram_agreement"] < stranger["rotated_copy_level"]
    # narrower candidate (its own width), and too few tokens to say
    assert rotated_copy.measure(x, (x @ rot)[:, :40]) is not None
    assert rotated_copy.measure(x[:8], x[:8]) is None
    # a base with no token geometry (all-zero embeddings) is nobody's rotated copy
    flat = rotated_copy.measure(torch.zeros(2000, 48), x)
    assert flat is not None
    assert not rotated_copy.is_rotated_copy(flat)


@pytest.mark.parametrize("c", [1e-38, 2.0**-130])
def test_rescalings_to_the_edge_of_float32_are_still_compared(c):
    # weights near 1e-39 need a factor near 2^130 to reach magnitude one: past float32's
    # largest power of two, it made every weight inf and the run a false "NaN weights"
    a = _ffn()
    a = neurons.FFNWeights(gate=a.gate, up=a.up, down=a.down * 0.01)  # room for down / c
    b = neurons.FFNWeights(gate=a.gate, up=a.up * c, down=a.down / c)
    assert torch.isfinite(b.up).all()
    assert torch.isfinite(b.down).all()
    assert _score(a, b) > 0.999
    assert torch.isfinite(unit_magnitude(torch.full((2, 3), 1.2e-39))).all()
    q, k, v, o = _circuits()
    assert heads.match_heads(_as_circuits(q, k, v, o),
                             _as_circuits(q * c, k, v, o * c)) > 0.999
