"""Norm drift's per-tensor statistics: exact under ``--full``, otherwise estimated from a fixed
stride of rows, which must stay close to the whole tensor's and read only those rows."""

from __future__ import annotations

import pytest
import torch

from verifier.probes import norm_drift as drift
from verifier.sweep import tensor_stats


def test_a_stride_of_rows_covers_at_least_the_asked_elements():
    t = torch.zeros(1000, 64)
    part = drift.rows_sample(t, 4096)
    assert part.numel() >= 4096
    assert part.numel() < t.numel() / 10
    assert part.data_ptr() == t.data_ptr()  # a view: only those rows are touched
    assert drift.rows_sample(t, None) is t
    assert drift.rows_sample(t, 10**6) is t  # small tensors are read whole
    assert drift.rows_sample(torch.zeros(10**5), 10).numel() == 10**5  # vectors too


def test_sampled_statistics_estimate_the_whole_tensor():
    gen = torch.Generator().manual_seed(0)
    # rows of different scale, as trained FFNs have: the stride must not pick a biased set
    t = (torch.randn(4096, 512, generator=gen) * torch.linspace(0.5, 2.0, 4096)[:, None]
         ).to(torch.bfloat16)
    exact = tensor_stats("w", t)
    part = drift.rows_sample(t, 1 << 16)
    est = tensor_stats("w", part)
    scale = (t.numel() / part.numel()) ** 0.5
    assert est.frobenius * scale == pytest.approx(exact.frobenius, rel=0.02)
    assert est.std == pytest.approx(exact.std, rel=0.02)
    assert est.mean_abs == pytest.approx(exact.mean_abs, rel=0.02)


def test_default_verify_samples_and_full_reads_everything(zoo):
    from verifier.model import open_model

    with open_model(zoo["llama"]) as model:
        exact = drift.layer_stats(model)
        assert drift.layer_stats(model, drift.SAMPLE_ELEMENTS) == exact  # zoo tensors are small
        tiny = drift.layer_stats(model, 256)
    up_exact, up_tiny = exact[0]["up"], tiny[0]["up"]
    assert up_tiny != up_exact
    assert up_tiny.frobenius == pytest.approx(up_exact.frobenius, rel=0.2)
