"""The compute interface: placement, the dtype policy, and per-op CPU fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backends
from backends.compute import Capabilities, Compute
from backends.npu import NPU_CPU_OPS


def test_weights_land_on_the_device_in_float32():
    c = Compute()
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        t = c.put(torch.ones(3, 2, dtype=dtype))
        assert t.dtype == torch.float32
        assert t.device.type == "cpu"


def test_statistics_leave_the_device_as_float64_numpy():
    out = Compute.numpy64(torch.tensor([0.5, 1.5], dtype=torch.float32))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64


def test_a_device_without_bfloat16_gets_float32_and_a_recorded_fallback():
    c = Compute(backend="old-npu", capabilities=Capabilities(bfloat16=False))
    t = c.put(torch.ones(2, dtype=torch.bfloat16))
    assert t.dtype == torch.float32
    assert [f.split(":")[0] for f in c.fallback_list()] == ["bfloat16"]


def test_qr_runs_on_the_cpu_where_the_device_has_no_kernel_and_says_so():
    g = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    native = Compute()
    q0, r0 = native.qr(g)
    assert native.fallback_list() == []
    fake = backends.select("fake-npu")[0].compute()
    q1, r1 = fake.qr(g)
    assert torch.equal(q0, q1)
    assert torch.equal(r0, r1)
    assert fake.fallback_list() == ["linalg_qr: no fake-npu kernel: computed on the CPU"]
    # recorded once, however often it happens
    fake.qr(g)
    assert len(fake.fallback_list()) == 1


def test_fake_npu_applies_the_npu_capability_table():
    fake = backends.BACKENDS["fake-npu"]
    assert fake.capabilities().cpu_ops == NPU_CPU_OPS
    assert fake.capabilities().float64 is False
    assert fake.status().available


def test_auto_never_picks_the_test_double(monkeypatch):
    monkeypatch.delenv(backends.ENV_OVERRIDE, raising=False)
    chosen, _ = backends.select("auto")
    assert chosen.name != "fake-npu"
    assert chosen.name in {"cpu", "cuda", "npu"}


def test_env_override_selects_a_backend(monkeypatch):
    monkeypatch.setenv(backends.ENV_OVERRIDE, "fake-npu")
    chosen, _ = backends.select("auto")
    assert chosen.name == "fake-npu"


def test_unknown_backend_is_a_backend_error():
    with pytest.raises(backends.BackendError, match="unknown backend"):
        backends.select("tpu")


def test_each_backend_names_its_collective_library():
    assert {n: b.distributed for n, b in backends.BACKENDS.items()} == {
        "npu": "hccl", "cuda": "nccl", "cpu": "gloo", "fake-npu": "gloo"}


def test_cpu_compute_describes_itself():
    c = backends.select("cpu")[0].compute()
    assert c.backend == "cpu"
    assert c.on_cpu
    assert "torch" in c.versions
