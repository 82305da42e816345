"""Huawei Ascend NPUs through ``torch_npu``, imported only here and only when asked.

Detection follows accelerate's ``is_npu_available``: find the module spec first (cheap, no
import), then import inside ``try/except Exception`` (a missing CANN toolkit raises ImportError
for ``libhccl.so``; other driver faults raise other types), then count devices, catching
RuntimeError. ``torch_npu.contrib.transfer_to_npu`` is never used: it rewrites ``torch.cuda``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import torch

from backends.base import Backend, BackendStatus
from backends.compute import Capabilities

#: ops with no (or no trustworthy) Ascend kernel, computed on the CPU (see NPU notes: svd, eigh
#: and qr fall back or are float32-only; float64 is missing per op)
NPU_CPU_OPS = frozenset({"linalg_qr", "linalg_svd", "linalg_eigh"})


def npu_capabilities(bfloat16: bool = True) -> Capabilities:
    """The Ascend capability table (910B and newer have bfloat16; 910A lacks it)."""
    return Capabilities(float64=False, bfloat16=bfloat16, cpu_ops=NPU_CPU_OPS)


def _cann_version(torch_npu: Any) -> str | None:
    """The CANN toolkit's version as torch_npu reports it (``torch.version.cann``, or
    ``torch_npu.npu.utils.get_cann_version()`` on CANN >= 8.1), None when it cannot say."""
    version = getattr(torch.version, "cann", None)
    if not version:
        try:
            version = torch_npu.npu.utils.get_cann_version(module="CANN")
        except Exception:  # noqa: BLE001 - a version string is nice to have, never required
            version = None
    return str(version) if version else None


class NPUBackend(Backend):
    name = "npu"
    distributed = "hccl"

    def _fail(self, reason: str, versions: dict[str, str]) -> BackendStatus:
        return BackendStatus(
            name=self.name, available=False, reason=reason, versions=versions,
            distributed=self.distributed,
        )

    def status(self) -> BackendStatus:
        versions = {"torch": torch.__version__}
        if importlib.util.find_spec("torch_npu") is None:
            return self._fail("torch_npu is not installed (pip install 'lineage[npu]')", versions)
        try:
            torch_npu: Any = importlib.import_module("torch_npu")
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            return self._fail(
                f"torch_npu failed to import ({first}); is the CANN toolkit installed and "
                "its set_env.sh sourced?",
                versions,
            )
        versions["torch_npu"] = str(getattr(torch_npu, "__version__", "unknown"))
        cann = _cann_version(torch_npu)
        if cann:
            versions["cann"] = cann
        npu = getattr(torch, "npu", None)
        try:
            count = int(npu.device_count()) if npu is not None and npu.is_available() else 0
        except RuntimeError as exc:
            return self._fail(f"Ascend driver error: {exc}", versions)
        if count == 0:
            return self._fail("no Ascend NPU is visible (check ASCEND_RT_VISIBLE_DEVICES)", versions)
        return BackendStatus(
            name=self.name,
            available=True,
            device_count=count,
            devices=[str(npu.get_device_name(i)) for i in range(count)],
            versions=versions,
            distributed=self.distributed,
            capabilities=self.capabilities(),
        )

    def capabilities(self) -> Capabilities:
        npu = getattr(torch, "npu", None)
        try:
            bf16 = bool(npu.is_bf16_supported()) if npu is not None else False
        except (RuntimeError, AttributeError):
            bf16 = False
        return npu_capabilities(bfloat16=bf16)

    def prepare(self, index: int = 0) -> None:
        # HF32 is off by default on Ascend; say so explicitly, as TF32 is turned off on CUDA
        npu: Any = getattr(torch, "npu", None)
        matmul = getattr(npu, "matmul", None)
        if matmul is not None and hasattr(matmul, "allow_hf32"):
            matmul.allow_hf32 = False
        if npu is not None:
            npu.set_device(index)  # hccl collectives use the current device

    def synchronize(self, index: int = 0) -> None:
        npu: Any = getattr(torch, "npu", None)
        if npu is not None:
            npu.synchronize(index)
