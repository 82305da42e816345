"""The probes' assignments: the solver's answer, with the solver skipped where every row's best
column is a different column (``probes.assignment``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from verifier.errors import NonFiniteError
from verifier.probes import assignment
from verifier.probes.assignment import max_assignment


def _planted(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Rows with a copy each among the columns: every row's best column is its own."""
    s = rng.normal(0.0, 0.1, (n, m))
    s[np.arange(n), rng.choice(m, n, replace=False)] += 1.0
    return s


@pytest.mark.parametrize("shape", [(30, 400), (400, 30), (50, 50), (1, 7), (7, 1)])
def test_the_assignment_is_the_solvers(shape):
    rng = np.random.default_rng(0)
    for s in (rng.normal(size=shape), _planted(*shape, rng) if shape[0] <= shape[1]
              else _planted(*shape[::-1], rng).T):
        rows, cols = max_assignment(s)
        want_rows, want_cols = linear_sum_assignment(s, maximize=True)
        assert np.array_equal(rows, want_rows)
        assert np.array_equal(cols, want_cols)


def test_the_solver_runs_only_where_best_columns_collide(monkeypatch):
    calls = []

    def solver(s):
        calls.append(s.shape)
        return linear_sum_assignment(s, maximize=True)

    monkeypatch.setattr(assignment, "solve", solver)
    rng = np.random.default_rng(1)
    max_assignment(_planted(64, 1000, rng))
    assert calls == []
    # two rows whose best column is the same: the row maxima are no assignment
    s = np.array([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0]])
    rows, cols = max_assignment(s)
    assert calls == [(2, 3)]
    assert s[rows, cols].sum() == pytest.approx(0.8 + 0.95)


@pytest.mark.parametrize("shape", [(3, 5), (64, 3000), (256, 2000), (300, 301), (200, 300)])
def test_the_wide_rectangle_solver_gives_scipys_assignment(shape):
    """lapx's rectangular Jonker-Volgenant (wide problems) against scipy's: the same rows and
    columns on collision-heavy random matrices (no shortcut applies), and NaN refused with
    scipy's error rather than solved into an undefined answer."""
    rng = np.random.default_rng(3)
    for scale in (1.0, 0.05):
        s = rng.normal(0.0, scale, shape)
        rows, cols = assignment.solve(s)
        want_rows, want_cols = linear_sum_assignment(s, maximize=True)
        assert np.array_equal(rows, want_rows)
        assert np.array_equal(cols, want_cols)
        assert rows.dtype == cols.dtype == np.int64
    s[0, 0] = np.nan
    with pytest.raises(ValueError, match="invalid"):
        assignment.solve(s)


def test_distinct_row_maxima_on_the_device_tensor_are_the_solvers_answer():
    """The shortcut taken where the probes make the matrix (float32, before any float64 copy):
    the solver's assignment when it applies, None where rows collide or outnumber columns."""
    rng = np.random.default_rng(2)
    planted = _planted(64, 1000, rng).astype(np.float32)
    known = assignment.distinct_row_maxima(torch.from_numpy(planted))
    assert known is not None
    want_rows, want_cols = linear_sum_assignment(planted.astype(np.float64), maximize=True)
    assert np.array_equal(known[0], want_rows)
    assert np.array_equal(known[1], want_cols)
    collide = torch.tensor([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0]])
    assert assignment.distinct_row_maxima(collide) is None
    assert assignment.distinct_row_maxima(torch.from_numpy(planted.T.copy())) is None



@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_shortcut_refuses_nan_and_inf_as_the_solver_path_does(bad):
    # the MoE probe calls the shortcut directly: a NaN was matched as its row's largest value
    planted = torch.from_numpy(_planted(8, 100, np.random.default_rng(3)).astype(np.float32))
    planted[2, 5] = bad
    with pytest.raises(NonFiniteError):
        assignment.distinct_row_maxima(planted)
    with pytest.raises(NonFiniteError):
        assignment.max_assignment(planted.double().numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("absolute", [False, True], ids=["signed", "absolute"])
def test_row_argmax_is_torchs_argmax_ties_and_nan_included(dtype, absolute):
    """The numpy road on the CPU picks what torch's argmax picks: the first of equal maxima
    (a value and its negation tie under ``absolute``), a NaN as the largest, on contiguous rows
    and on a strided view."""
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(64, 300, generator=gen, dtype=torch.float64).to(dtype)
    s[1, 7], s[1, 200] = 5.0, 5.0  # equal maxima
    s[2, 9], s[2, 4] = 6.0, -6.0  # equal under |.|: the first, column 4
    s[3, 50] = float("nan")
    s[4] = 0.0
    s[5, 3], s[5, 8], s[5, 10] = -7.0, 7.0, -7.0  # ties of both signs: column 3
    s[6, 20], s[6, 30] = float("nan"), -9.0  # a NaN before a larger magnitude
    s[7, 11], s[7, 12] = -8.0, float("nan")  # and after one
    s[8] = 0.0
    s[8, 2] = -0.0  # equal to 0.0: column 0
    views = {"rows": s, "strided": s.T.contiguous().T, "columns": s[:, ::3]}
    for name, v in views.items():
        want = (v.abs() if absolute else v).argmax(dim=1).numpy()
        got = assignment.row_argmax(v, absolute=absolute)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert assignment.row_argmax(s, absolute=absolute)[2] == (4 if absolute else 9)
    # another dtype (as a device without numpy's road would) gives the same through torch
    half = s.to(torch.bfloat16)
    np.testing.assert_array_equal(assignment.row_argmax(half, absolute=absolute),
                                  (half.abs() if absolute else half).argmax(dim=1).numpy())
