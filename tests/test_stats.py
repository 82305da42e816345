"""Statistical building blocks: combination under dependence, Monte-Carlo p-values, layer paths."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.probes.layer_alignment import align_layers
from verifier.probes.rotation_null import haar_rotation
from verifier.stats import empirical_p, gaussian_tail_p, harmonic_combine


def test_harmonic_combination_is_valid_for_independent_uniform_pvalues():
    rng = np.random.default_rng(0)
    combined = np.array([harmonic_combine(rng.uniform(size=8)) for _ in range(4000)])
    for level in (0.01, 0.05, 0.2):
        assert np.mean(combined < level) <= level * 1.1


def test_harmonic_combination_is_valid_for_identical_pvalues():
    """Perfectly dependent tests: never smaller than the common p-value."""
    for p in (0.3, 1e-3, 1e-40):
        assert harmonic_combine([p] * 6) >= p


def test_a_pvalue_of_one_cannot_cancel_strong_evidence():
    assert harmonic_combine([1e-30, 1.0, 1.0, 1.0]) < 1e-28
    assert harmonic_combine([1e-30, 1.0]) == pytest.approx(2e-30)


def test_student_t_tail_is_calibrated_for_24_draws():
    """A new draw from the null falls below p = 0.01 about 1% of the time."""
    rng = np.random.default_rng(3)
    ps = [gaussian_tail_p(rng.normal(), rng.normal(size=24))[1] for _ in range(20000)]
    assert abs(np.mean(np.array(ps) < 0.01) - 0.01) < 0.003
    assert abs(np.mean(np.array(ps) < 0.1) - 0.1) < 0.01


def test_empirical_p_is_never_zero():
    assert empirical_p(10.0, [0.0] * 99) == pytest.approx(0.01)
    assert empirical_p(-10.0, [0.0] * 99) == 1.0


def test_gaussian_tail_of_a_null_draw_is_moderate():
    rng = np.random.default_rng(1)
    null = rng.normal(0.2, 0.01, 24)
    assert 0.05 < gaussian_tail_p(0.2, null)[1] < 0.95
    assert gaussian_tail_p(0.3, null)[1] < 1e-8  # z ~ 10 under a t with 23 df


def test_haar_rotation_is_orthogonal():
    r = haar_rotation(16, np.random.default_rng(0)).double()
    assert np.allclose((r.T @ r).numpy(), np.eye(16), atol=1e-5)


def _z(nb: int, pairs: dict[int, int], nc: int, high: float = 50.0) -> np.ndarray:
    z = np.random.default_rng(0).normal(0, 1, (nb, nc))
    for j, a in pairs.items():
        z[a, j] = high
    return z


def test_layer_path_recovers_pruning_and_duplication():
    pruned = {0: 0, 1: 1, 2: 3, 3: 4, 4: 6, 5: 7}
    assert align_layers(_z(8, pruned, 6)) == [0, 1, 3, 4, 6, 7]
    order = [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]
    assert align_layers(_z(8, dict(enumerate(order)), 12)) == order


def test_layer_path_leaves_unrelated_layers_unmapped():
    assert align_layers(_z(8, {}, 8)) == [None] * 8
    # a new layer inserted in the middle maps to nothing
    assert align_layers(_z(4, {0: 0, 1: 1, 3: 2, 4: 3}, 5)) == [0, 1, None, 2, 3]


def test_layer_that_only_shares_the_residual_stream_is_not_mapped():
    z = _z(3, {0: 0, 1: 1, 2: 2}, 4)
    z[:, 3] = 18.0  # significant against the rotation null, far below the true copies
    assert align_layers(z) == [0, 1, 2, None]
