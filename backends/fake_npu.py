"""A test double: the CPU, dressed in the Ascend capability table.

It computes on the CPU (so it runs anywhere) but takes every decision the npu backend takes:
no float64 on the device, QR / SVD / eigh on the CPU as recorded fallbacks, hccl's absence
replaced by gloo. Parity tests run the whole test-model set through it, so every fallback path
runs in CI although no Ascend hardware is present. Chosen only by name (``--backend
fake-npu``), never by ``auto``.
"""

from __future__ import annotations

import platform

import torch

from backends.base import Backend, BackendStatus
from backends.compute import Capabilities
from backends.npu import npu_capabilities


class FakeNPUBackend(Backend):
    name = "fake-npu"
    distributed = "gloo"
    auto = False

    def status(self) -> BackendStatus:
        return BackendStatus(
            name=self.name, available=True, device_count=1,
            devices=[f"CPU emulating the Ascend capability table ({platform.machine()})"],
            versions={"torch": torch.__version__},
            reason="test double: CPU compute under the NPU capability table",
            distributed=self.distributed, capabilities=self.capabilities(),
        )

    def capabilities(self) -> Capabilities:
        return npu_capabilities(bfloat16=True)

    def device(self, index: int = 0) -> torch.device:
        return torch.device("cpu")
