"""Maximum-weight linear assignment, exact, with the solver skipped where its answer is known.

Every probe ends in a rectangular assignment (scipy's ``linear_sum_assignment``, Hungarian /
Jonker-Volgenant): each row of a similarity matrix gets a different column, the total as large as
possible. When every row's best column is a different column, those best columns *are* an
optimal assignment: no assignment can beat the sum of the row maxima, and this one reaches it.
That is the common case exactly where the solver is slowest: a derived model's neurons each have
their own copy (an upcycled expert of 688 neurons against 11 008 base neurons: ≈ 0.1 s per
expert in the solver, 64 experts per layer), and a sample of 32 expert neurons of a null draw
rarely picks one column twice. Otherwise (an independent layer's 688 neurons collide on some
best columns) the solver runs as before. The answer is the solver's, up to ties between equal
totals, which similarities in floating point do not have in practice.

Which solver: the probes' problems are wide rectangles (a sample of 256 base neurons against
11 008 candidate neurons, an expert's 688-2 560 neurons against a dense FFN), which lapx's
Jonker-Volgenant (``lap.lapjvr``) solves natively, without padding to a square, 4-7x faster
than scipy here (256 x 11 008: 3-5 against 10-20 ms; 2 560 x 13 824: 47 against 280 ms; the
same assignments); square problems (the full-space alignment's 4 096 x 4 096) stay with scipy,
which is as fast there (1.0 against 1.1 s). Both release the GIL, so the solver threads of
``parallel`` still run side by side.
"""

from __future__ import annotations

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from verifier.errors import NonFiniteError


def max_assignment(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of a maximum-weight assignment of ``s`` (``min(n, m)`` pairs, rows in
    increasing order), as ``linear_sum_assignment(s, maximize=True)`` returns them."""
    n, m = s.shape
    if n == 0 or m == 0:
        return linear_sum_assignment(s, maximize=True)
    if n <= m:
        known = distinct_row_maxima(torch.from_numpy(s))  # refuses NaN and Inf on the way
        if known is not None:
            return known
    require_finite(s)
    if n > m:
        best = s.argmax(axis=0)
        if np.unique(best).size == m:
            order = np.argsort(best)
            return best[order], order
    return solve(s)


def require_finite(s: np.ndarray, what: str = "a probe's similarities") -> None:
    """Refuse a matrix with NaN or Inf (``NonFiniteError``, exit 4) before an assignment:
    scipy's solver raises a bare ValueError, and an argmax would match a NaN as the largest."""
    if not np.isfinite(s).all():
        raise NonFiniteError(what)


def solve(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The solver itself (no shortcut): lapx for wide rectangles, scipy otherwise (module
    docstring); rows in increasing order."""
    n, m = s.shape
    if n < m and np.isfinite(s).all():  # lapx does not check for NaN; scipy refuses it
        _, rows, cols = lap.lapjvr(np.negative(s), extend_cost=True)
        order = np.argsort(rows)
        return rows[order].astype(np.int64), cols[order].astype(np.int64)
    return linear_sum_assignment(s, maximize=True)


def distinct_row_maxima(s: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """``max_assignment``'s shortcut where the matrix is (on the device, in float32, as the
    probes make it): ``(rows, cols)`` when ``s`` has no more rows than columns and every row's
    best column (the first of equal maxima, as numpy takes it) is a different column; None
    when the solver is needed. Spares the float64 copy the solver reads."""
    n, m = s.shape
    if n == 0 or n > m:
        return None
    best = row_argmax(s)
    # a row holding NaN or +Inf has it as its maximum (row_argmax takes a NaN as largest), so
    # the row maxima are finite exactly when every row is usable: n values read, not the matrix
    # (``NonFiniteError``, as ``require_finite``; the MoE probe calls this shortcut directly)
    top = s.gather(1, torch.as_tensor(best, device=s.device)[:, None])
    if not bool(torch.isfinite(top).all()):
        raise NonFiniteError("a probe's similarities")
    if np.unique(best).size != n:
        return None
    return np.arange(n), best


def row_argmax(s: torch.Tensor, absolute: bool = False) -> np.ndarray:
    """Per row of ``s``, the column of its largest value (of its largest ``|value|`` with
    ``absolute``): the first of equal maxima, a NaN counting as largest, as torch and numpy
    both take it. On the CPU through numpy, whose vectorised argmax reads a row several times
    faster than torch's (256 x 11 008 float32: 0.2 against 1.3 ms; with the absolute value
    0.6 against 1.7 ms, ``_abs_argmax``); on a device with torch, and only the indices
    cross."""
    if s.device.type == "cpu" and s.dtype in (torch.float32, torch.float64):
        x = s.detach().numpy()
        return _abs_argmax(x) if absolute else x.argmax(axis=1)
    return (s.abs() if absolute else s).argmax(dim=1).cpu().numpy()


def _abs_argmax(x: np.ndarray) -> np.ndarray:
    """``np.abs(x).argmax(axis=1)`` without the absolute values: the larger in magnitude of
    each row's maximum and minimum, the earlier of the two where they tie (each is the first
    of its kind, and every largest ``|value|`` is one or the other; a NaN row's first NaN is
    both). Two reading passes instead of a written copy and a pass (2 048 x 11 008: 6-7
    against 18 ms)."""
    hi, lo = x.argmax(axis=1), x.argmin(axis=1)
    rows = np.arange(x.shape[0])
    top, bottom = x[rows, hi], -x[rows, lo]
    return np.where(top > bottom, hi, np.where(top < bottom, lo, np.minimum(hi, lo)))


__all__ = ["distinct_row_maxima", "max_assignment", "require_finite", "row_argmax", "solve"]
