"""The compute-backend interface: where probes put tensors, and what the device can do."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from pydantic import BaseModel, ConfigDict, Field


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


class Backend(ABC):
    """One kind of device. Detection is lazy: nothing is imported until ``status()``."""

    name: str = ""
    #: torch.distributed backend for multi-device runs on this kind of device
    distributed: str = "gloo"

    @abstractmethod
    def status(self) -> BackendStatus:
        """Probe the host (import drivers, count devices); never raises."""

    def device(self, index: int = 0) -> torch.device:
        return torch.device(self.name, index) if self.name != "cpu" else torch.device("cpu")
