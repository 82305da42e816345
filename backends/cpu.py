"""The CPU backend: always available; the reference every other backend is compared with."""

from __future__ import annotations

import platform

import torch

from backends.base import Backend, BackendStatus
from backends.compute import Capabilities


class CPUBackend(Backend):
    name = "cpu"
    distributed = "gloo"

    def status(self) -> BackendStatus:
        return BackendStatus(
            name=self.name,
            available=True,
            device_count=1,
            devices=[platform.processor() or platform.machine()],
            versions={"torch": torch.__version__, "threads": str(torch.get_num_threads())},
            distributed=self.distributed,
            capabilities=self.capabilities(),
        )

    def capabilities(self) -> Capabilities:
        return Capabilities()
