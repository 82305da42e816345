"""The run context every probe computes through: device placement, the dtype policy, and
per-op fallbacks to the CPU where a device lacks a kernel.

Policy (the same on every backend, so that every backend reaches the same verdict):

- weights are upcast to float32 and moved to the device (``put``) where a probe uses them (a
  layer is cached as stored, so a sample of its rows is upcast, not all of it); similarity
  matrices, norms and the rotations of the null model are computed there in float32 with TF32 /
  HF32 off (reduced-precision matmuls would move the matched similarities by ~1e-3, the size of
  a weak derivation's signal);
- everything that decides (assignment, means over matched pairs, p-values, the verdict) happens
  on the CPU in float64: ``numpy64`` is the only way a device tensor reaches it;
- an op the device has no kernel for (``Capabilities.cpu_ops``: QR on Ascend, say) runs on the
  CPU and comes back; each such op is recorded once in ``fallbacks`` and lands in the report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

#: what the report says about numerics, whichever device ran
DTYPE_POLICY = ("weights upcast to float32 on the device; similarities, norms and rotations in "
                "float32 with TF32/HF32 off; assignment, statistics and verdict in float64 on the "
                "CPU")


class Capabilities(BaseModel):
    """What a kind of device computes natively."""

    model_config = ConfigDict(frozen=True)

    float64: bool = True
    bfloat16: bool = True
    #: ops that run on the CPU instead (no device kernel, or one too inexact to trust)
    cpu_ops: frozenset[str] = frozenset()


class Compute:
    """One process's device, its capabilities, and the fallbacks taken so far."""

    def __init__(self, backend: str = "cpu", device: torch.device | str = "cpu",
                 capabilities: Capabilities | None = None, label: str | None = None,
                 versions: dict[str, str] | None = None,
                 synchronize: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.device = torch.device(device)
        self.capabilities = capabilities or Capabilities()
        self.label = label or str(self.device)
        self.versions = dict(versions or {})
        self._synchronize = synchronize or (lambda: None)
        self.fallbacks: dict[str, str] = {}

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """A weight on the device in float32. A bfloat16 or float16 tensor crosses in its own
        dtype (half the bytes) when the device has the dtype, and is upcast there."""
        if t.dtype == torch.bfloat16 and not self.capabilities.bfloat16:
            self.fallback("bfloat16", "upcast to float32 on the CPU before the transfer")
            t = t.to(torch.float32)
        return t.to(self.device).to(torch.float32)

    @staticmethod
    def numpy64(t: torch.Tensor) -> np.ndarray:
        """A device tensor on the CPU as float64 numpy: the only road to the statistics. The
        tensor leaves the device in its own dtype (devices without float64 never see one)."""
        return t.detach().to("cpu").to(torch.float64).numpy()

    def fallback(self, op: str, why: str) -> None:
        """Record that ``op`` ran on the CPU (once per op; the report lists them)."""
        self.fallbacks.setdefault(op, why)

    def qr(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.linalg.qr`` on the device, or on the CPU where the device has no kernel."""
        if "linalg_qr" in self.capabilities.cpu_ops:
            self.fallback("linalg_qr", f"no {self.backend} kernel: computed on the CPU")
            q, r = torch.linalg.qr(g.to("cpu"))
            return q.to(self.device), r.to(self.device)
        return torch.linalg.qr(g.to(self.device))

    def synchronize(self) -> None:
        self._synchronize()

    def fallback_list(self) -> list[str]:
        return [f"{op}: {why}" for op, why in sorted(self.fallbacks.items())]


__all__ = ["DTYPE_POLICY", "Capabilities", "Compute"]
