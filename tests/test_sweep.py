"""The tensor sweep: statistics agree with a float64 reference; NaN/Inf are counted, not hidden."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verifier import sweep
from verifier.sweep import tensor_stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_stats_match_a_float64_reference_across_chunks(dtype, monkeypatch):
    monkeypatch.setattr(sweep, "CHUNK_ELEMENTS", 1000)  # many chunks, one partial
    t = (torch.randn(37, 101, generator=torch.Generator().manual_seed(1)) * 3 + 0.5).to(dtype)
    ref = t.double().numpy().ravel()
    s = tensor_stats("w", t)
    assert s.numel == ref.size
    assert s.nonfinite == 0
    assert math.isclose(s.frobenius, float(np.sqrt((ref**2).sum())), rel_tol=1e-6)
    assert math.isclose(s.std, float(ref.std()), rel_tol=1e-5)
    assert math.isclose(s.mean_abs, float(np.abs(ref).mean()), rel_tol=1e-6)


def test_nonfinite_values_are_counted_and_excluded(monkeypatch):
    monkeypatch.setattr(sweep, "CHUNK_ELEMENTS", 7)
    t = torch.arange(20, dtype=torch.float32)
    t[3], t[11], t[12] = float("nan"), float("inf"), float("-inf")
    s = tensor_stats("w", t)
    finite = np.delete(np.arange(20.0), [3, 11, 12])
    assert s.nonfinite == 3
    assert math.isclose(s.mean_abs, float(finite.mean()), rel_tol=1e-6)
    assert math.isclose(s.frobenius, float(np.sqrt((finite**2).sum())), rel_tol=1e-6)


def test_huge_finite_values_are_not_mistaken_for_inf():
    t = torch.tensor([3e30, -3e30, 1.0])  # squares overflow float32, values do not
    s = tensor_stats("w", t)
    assert s.nonfinite == 0
    assert math.isclose(s.frobenius, math.sqrt(2 * 9e60 + 1), rel_tol=1e-6)
