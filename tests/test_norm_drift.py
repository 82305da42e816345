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


@pytest.mark.parametrize("candidate", ["llama_pruned", "llama_ft_code"])
def test_norm_drift_reads_no_tensor_the_probes_already_read(zoo, monkeypatch, candidate):
    # its statistics are taken as the probes read each layer (a pair larger than the page cache
    # would otherwise be read a second time); it computes only what no probe read (the pruned
    # candidate leaves base layers unmapped), and the numbers are those taken afterwards
    import re

    from verifier import verify as verify_module
    from verifier.model import open_model

    taken: list[tuple[str, str, str]] = []
    phase = ["probes"]
    role_stats, norm_drift = drift.role_stats, verify_module._Run.norm_drift

    def counted(model, ref, sample):
        taken.append((phase[0], str(model.path), ref.tensor))
        return role_stats(model, ref, sample)

    def after_probes(run):
        phase[0] = "norm drift"
        return norm_drift(run)

    monkeypatch.setattr(drift, "role_stats", counted)
    monkeypatch.setattr(verify_module._Run, "norm_drift", after_probes)
    report = verify_module.verify(zoo["llama"], zoo[candidate],
                                  verify_module.VerifyOptions(digest=False))
    monkeypatch.undo()
    assert [t for t in taken if t[0] == "probes"]
    assert len({t[1:] for t in taken}) == len(taken)  # each tensor once
    mapped = {e.base_layer for e in report.layer_map}
    for _, path, tensor in (t for t in taken if t[0] == "norm drift"):
        layer = int(re.search(r"layers\.(\d+)\.", tensor).group(1))
        assert path == str(zoo["llama"])
        assert layer not in mapped
    with open_model(zoo["llama"]) as mb, open_model(zoo[candidate]) as mc:
        sb, sc = (drift.layer_stats(m, drift.SAMPLE_ELEMENTS) for m in (mb, mc))
    assert len(taken) == sum(len(layer) for layer in sb + sc)
    rows = report.norm_drift.layers
    assert [(r.layer, r.role) for r in rows] == [(j, role) for j, layer in enumerate(sc)
                                                 for role in layer]
    for r in rows:
        assert r.candidate_norm == sc[r.layer][r.role].frobenius
        assert r.candidate_std == sc[r.layer][r.role].std
        if r.base_layer is not None:
            assert r.base_norm == sb[r.base_layer][r.role].frobenius


@pytest.mark.parametrize("candidate", ["llama_ft_code", "llama_upscaled", "llama_seed2"])
def test_aligned_drift_is_taken_while_the_neuron_phase_holds_both_layers(zoo, monkeypatch,
                                                                         candidate):
    # after the probes, a pair larger than the page cache would read every mapped FFN from the
    # disk again for its aligned drift; the neuron phase takes it for the pair the layer map
    # will likely keep, and norm drift computes only the pairs it guessed wrong. The section
    # must equal the one computed entirely after the probes.
    from verifier import verify as verify_module

    def run() -> tuple[object, list[tuple[str, int, int]]]:
        calls: list[tuple[str, int, int]] = []
        phase = ["probes"]
        aligned, norm_drift = verify_module._Run._aligned_drift, verify_module._Run.norm_drift

        def counted(run_, a, j):
            calls.append((phase[0], a, j))
            return aligned(run_, a, j)

        def after_probes(run_):
            phase[0] = "norm drift"
            return norm_drift(run_)

        monkeypatch.setattr(verify_module._Run, "_aligned_drift", counted)
        monkeypatch.setattr(verify_module._Run, "norm_drift", after_probes)
        report = verify_module.verify(zoo["llama"], zoo[candidate],
                                      verify_module.VerifyOptions(digest=False))
        monkeypatch.undo()
        return report, calls

    report, calls = run()
    monkeypatch.setattr(verify_module, "_drift_guess", lambda *args: None)
    afterwards, late = run()
    assert report.norm_drift == afterwards.norm_drift
    assert report.layer_map == afterwards.layer_map
    # the pairs norm drift aligned: the layer map's, or layer i against layer i when the map
    # is empty and the depths agree
    aligned = {(r.base_layer, r.layer) for r in report.norm_drift.layers
               if r.relative_drift is not None}
    assert aligned
    assert {(a, j) for phase, a, j in late if phase == "norm drift"} == aligned
    after = {(a, j) for phase, a, j in calls if phase == "norm drift"}
    assert not after  # each came from the neuron phase
