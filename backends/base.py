"""The compute-backend interface: where probes put tensors, and what the device can do."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from pydantic import BaseModel, ConfigDict, Field

from backends.compute import Capabilities, Compute


class BackendStatus(BaseModel):
    """Whether a backend can run here, and if not, why (shown by `lineage backends`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    available: bool
    device_count: int = 0
    devices: list[str] = Field(default_factory=list)
    reason: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    distributed: str = "gloo"
    capabilities: Capabilities | None = None


class Backend(ABC):
    """One kind of device. Detection is lazy: nothing is imported until ``status()``."""

    name: str = ""
    #: torch.distributed backend for multi-device runs on this kind of device
    distributed: str = "gloo"
    #: tried by ``--backend auto`` (a test double such as fake-npu is only chosen by name)
    auto: bool = True

    @abstractmethod
    def status(self) -> BackendStatus:
        """Probe the host (import drivers, count devices); never raises."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this kind of device computes natively (called only when available)."""

    def device(self, index: int = 0) -> torch.device:
        return torch.device(self.name, index) if self.name != "cpu" else torch.device("cpu")

    def prepare(self, index: int = 0) -> None:
        """Per-process setup before the first op (numerics flags, current device); the CPU
        needs none."""
        return None

    def compute(self, index: int = 0) -> Compute:
        """The run context that probes compute through, on device ``index`` (a process's
        local rank in multi-device runs)."""
        st = self.status()
        self.prepare(index)
        device = self.device(index)
        label = st.devices[index] if index < len(st.devices) else str(device)
        return Compute(
            backend=self.name, device=device, capabilities=self.capabilities(),
            label=label, versions=st.versions, synchronize=lambda: self.synchronize(index),
        )

    def synchronize(self, index: int = 0) -> None:
        """Wait for queued device work (timings around asynchronous devices need it); the
        CPU is synchronous."""
        return None
