"""The same probes on every backend reach the same verdict (``tests/parity.py`` states the
tolerances): fake-npu (the CPU under the Ascend capability table, so every fallback path runs
here) always; cuda and npu where such a device is present."""

from __future__ import annotations

import pytest
from parity import ONE_OF_EACH_KIND, differences

import backends
from backends.distributed import Shards
from verifier.verify import VerifyOptions, verify
from verifier.zoo.pairs import MOE_PAIRS, PAIRS

OPTS = VerifyOptions(digest=False)
ALL_PAIRS = [*PAIRS, *MOE_PAIRS]


def _available(name: str) -> bool:
    return backends.BACKENDS[name].status().available


BACKEND_PARAMS = [
    pytest.param("fake-npu"),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not _available("cuda"), reason="no CUDA device here")]),
    pytest.param("npu", marks=[pytest.mark.npu, pytest.mark.skipif(
        not _available("npu"), reason="no Ascend NPU here (torch_npu absent or unusable)")]),
]


@pytest.fixture(scope="module")
def cpu_reports(pair_reports):
    """The CPU's report of a pair (the session's shared reports, verified with ``OPTS``)."""
    assert pair_reports.options == OPTS
    return lambda pair: pair_reports(pair.base, pair.candidate)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_every_pair_gets_the_cpu_verdict_and_statistics(name, zoo, cpu_reports):
    """On a device, every pair; fake-npu computes on the CPU and must match it bit for bit,
    so one pair of each kind runs its fallback paths."""
    backend, _ = backends.select(name)
    failures = {}
    for pair in ONE_OF_EACH_KIND if name == "fake-npu" else ALL_PAIRS:
        compute = backend.compute()
        report = verify(zoo[pair.base], zoo[pair.candidate], OPTS, compute=compute,
                        shards=Shards())
        assert report.environment.backend == name
        diff = differences(cpu_reports(pair), report, exact=compute.on_cpu)
        if diff:
            failures[pair.name] = diff
        assert report.verdict == pair.truth, (pair.name, report.reason)
    assert not failures, failures


def test_fake_npu_reports_the_ops_it_ran_on_the_cpu(zoo):
    backend, _ = backends.select("fake-npu")
    report = verify(zoo["llama"], zoo["llama_permuted"], OPTS, compute=backend.compute())
    assert report.environment.backend == "fake-npu"
    assert any(f.startswith("linalg_qr:") for f in report.environment.fallbacks)


def test_the_cpu_reports_no_fallbacks(zoo, cpu_reports):
    report = cpu_reports(PAIRS[3])
    assert report.environment.backend == "cpu"
    assert report.environment.fallbacks == []


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("pair", [PAIRS[3], PAIRS[9]], ids=lambda p: p.name)
def test_the_hidden_frame_gets_the_cpu_answer_on_every_backend(name, pair, zoo):
    """The frame path (wide models' default, forced here: 32 of 64 directions) computes on the
    device too: Haar frames through the backend's QR, hidden-major copies, the fake layer.
    16 draws: with 8, the Student-t tail of so few draws leaves the power checks of a 32-
    direction frame near alpha (4.9e-6 for neuron matching), and the independent pair was
    inconclusive on every backend alike."""
    opts = VerifyOptions(digest=False, hidden_sample=32, null_draws=16)
    cpu = verify(zoo[pair.base], zoo[pair.candidate], opts)
    compute = backends.select(name)[0].compute()
    report = verify(zoo[pair.base], zoo[pair.candidate], opts, compute=compute, shards=Shards())
    assert report.options["hidden_directions"] == 32
    assert report.verdict == cpu.verdict == pair.truth
    assert not differences(cpu, report, exact=compute.on_cpu)
