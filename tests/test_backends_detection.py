"""Backend detection: every failure mode of torch_npu gives a reason, never an exception."""

from __future__ import annotations

import importlib
import importlib.util
import types

import pytest
import torch

import backends
from backends.npu import NPUBackend
from verifier.errors import BackendError, ExitCode


@pytest.fixture
def npu_installed(monkeypatch):
    """Pretend torch_npu is installed (a spec exists) without importing anything real."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return object() if name == "torch_npu" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _fake_torch_npu(monkeypatch, *, available=True, count=2, count_raises=False, bf16=True):
    module = types.ModuleType("torch_npu")
    module.__version__ = "2.13.0.post1"
    module.npu = types.SimpleNamespace(utils=types.SimpleNamespace(
        get_cann_version=lambda module="CANN": "8.3.RC1"))
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module",
        lambda name, *a: module if name == "torch_npu" else real_import(name, *a),
    )

    def device_count():
        if count_raises:
            raise RuntimeError("drvDeviceGetCount failed")
        return count

    npu = types.SimpleNamespace(
        is_available=lambda: available, device_count=device_count,
        get_device_name=lambda i: f"Ascend910B{i}", is_bf16_supported=lambda: bf16,
        current=[], set_device=None, synchronize=lambda i=0: None,
        matmul=types.SimpleNamespace(allow_hf32=True),
    )
    npu.set_device = npu.current.append
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    return npu


def test_npu_not_installed_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a, **k: None if n == "torch_npu" else real(n)
    )
    st = NPUBackend().status()
    assert not st.available
    assert "lineage[npu]" in st.reason


def test_npu_import_failure_names_the_cause(monkeypatch, npu_installed):
    def boom(name, *a):
        raise ImportError("libhccl.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(importlib, "import_module", boom)
    st = NPUBackend().status()
    assert not st.available
    assert "libhccl.so" in st.reason
    assert "CANN" in st.reason


def test_npu_device_count_raising_is_reported(monkeypatch, npu_installed):
    _fake_torch_npu(monkeypatch, count_raises=True)
    st = NPUBackend().status()
    assert not st.available
    assert "drvDeviceGetCount" in st.reason


def test_npu_present_but_unavailable(monkeypatch, npu_installed):
    _fake_torch_npu(monkeypatch, available=False)
    st = NPUBackend().status()
    assert not st.available
    assert "no Ascend NPU is visible" in st.reason


def test_npu_available_reports_devices_versions_and_hccl(monkeypatch, npu_installed):
    _fake_torch_npu(monkeypatch, count=2)
    st = NPUBackend().status()
    assert st.available
    assert st.device_count == 2
    assert st.devices == ["Ascend910B0", "Ascend910B1"]
    assert st.versions["torch_npu"] == "2.13.0.post1"
    assert st.versions["cann"] == "8.3.RC1"
    assert st.distributed == "hccl"


@pytest.mark.parametrize("bf16", [True, False], ids=["910B", "910A"])
def test_npu_compute_context_applies_the_capability_table(monkeypatch, npu_installed, bf16):
    """Routing with a stubbed torch_npu: the compute context of rank 1 selects device 1,
    turns HF32 off, and carries the Ascend table (no float64; QR on the CPU; bfloat16 only
    where the chip has it). The device itself is the CPU here: there is no NPU to put data on."""
    npu = _fake_torch_npu(monkeypatch, count=2, bf16=bf16)
    monkeypatch.setattr(NPUBackend, "device", lambda self, index=0: torch.device("cpu"))
    compute = NPUBackend().compute(1)
    assert npu.current == [1]
    assert npu.matmul.allow_hf32 is False
    assert compute.backend == "npu"
    assert compute.label == "Ascend910B1"
    assert compute.capabilities.float64 is False
    assert compute.capabilities.bfloat16 is bf16
    compute.qr(torch.eye(3))
    assert compute.put(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    ops = [f.split(":")[0] for f in compute.fallback_list()]
    assert ops == (["linalg_qr"] if bf16 else ["bfloat16", "linalg_qr"])


def test_cpu_is_always_available():
    st = backends.BACKENDS["cpu"].status()
    assert st.available
    assert st.device_count == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="host has a GPU")
def test_cuda_absent_has_a_reason():
    st = backends.BACKENDS["cuda"].status()
    assert not st.available
    assert st.reason


def test_auto_selects_the_first_available(monkeypatch):
    monkeypatch.delenv(backends.ENV_OVERRIDE, raising=False)
    backend, st = backends.select("auto")
    expected = next(s.name for s in backends.statuses() if s.available)
    assert backend.name == st.name == expected


def test_env_override_applies_to_auto(monkeypatch):
    monkeypatch.setenv(backends.ENV_OVERRIDE, "cpu")
    backend, _ = backends.select("auto")
    assert backend.name == "cpu"


def test_asking_for_an_absent_backend_is_exit_4(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a, **k: None if n == "torch_npu" else real(n)
    )
    with pytest.raises(BackendError, match="not available here") as err:
        backends.select("npu")
    assert err.value.exit_code == ExitCode.INVALID_INPUT


def test_unknown_backend_name_is_a_usage_error():
    # a misspelt name (--backend CPU) is a mistake in the command line, not an absent backend
    with pytest.raises(BackendError, match="unknown backend") as err:
        backends.select("tpu")
    assert err.value.exit_code == ExitCode.USAGE


def test_a_bad_backend_from_the_environment_names_the_variable(monkeypatch):
    # "auto" took the name from LINEAGE_BACKEND: the user typed no --backend, so the error
    # must say where the name came from
    monkeypatch.setenv(backends.ENV_OVERRIDE, "bogus")
    with pytest.raises(BackendError, match="'bogus' \\(from LINEAGE_BACKEND\\)") as err:
        backends.select("auto")
    assert err.value.exit_code == ExitCode.USAGE
    # an explicit name wins over the variable, and its error does not mention it
    with pytest.raises(BackendError, match="unknown backend 'tpu' \\(choose"):
        backends.select("tpu")


@pytest.mark.parametrize(("preset", "expected"), [(None, "0"), ("1", "1")])
def test_importing_lineage_disables_torch_device_autoload_unless_set(preset, expected):
    """A broken torch_npu install must not break `import torch` for CPU/CUDA users."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
    if preset is not None:
        env["TORCH_DEVICE_BACKEND_AUTOLOAD"] = preset
    code = "import verifier, os; print(os.environ['TORCH_DEVICE_BACKEND_AUTOLOAD'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected


def test_backends_command_lists_all_three_with_reasons(capsys):
    import json

    from verifier.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["backends", "--format", "json"])
    assert exit_info.value.code == 0
    items = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert set(items) == {"cpu", "cuda", "npu"}
    assert items["cpu"]["available"]
    for b in items.values():
        assert b["available"] or b["reason"]


def test_backends_text_shows_the_install_hint_literally(monkeypatch, capsys):
    from verifier.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a, **k: None if n == "torch_npu" else real(n)
    )
    with pytest.raises(SystemExit):
        main(["backends"])
    assert "lineage[npu]" in capsys.readouterr().out.replace("\n", "")
