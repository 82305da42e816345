"""NVIDIA GPUs through torch's CUDA build."""

from __future__ import annotations

import torch

from backends.base import Backend, BackendStatus
from backends.compute import Capabilities


class CUDABackend(Backend):
    name = "cuda"
    distributed = "nccl"

    def status(self) -> BackendStatus:
        versions = {"torch": torch.__version__}
        if torch.version.cuda is None:
            return BackendStatus(
                name=self.name,
                available=False,
                reason=f"this torch ({torch.__version__}) was built without CUDA",
                versions=versions,
                distributed=self.distributed,
            )
        versions["cuda"] = str(torch.version.cuda)
        try:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except RuntimeError as exc:  # broken driver installs raise instead of returning False
            return BackendStatus(
                name=self.name, available=False, reason=f"CUDA driver error: {exc}",
                versions=versions, distributed=self.distributed,
            )
        if count == 0:
            return BackendStatus(
                name=self.name, available=False, reason="no CUDA device is visible",
                versions=versions, distributed=self.distributed,
            )
        return BackendStatus(
            name=self.name,
            available=True,
            device_count=count,
            devices=[torch.cuda.get_device_name(i) for i in range(count)],
            versions=versions,
            distributed=self.distributed,
            capabilities=self.capabilities(),
        )

    def capabilities(self) -> Capabilities:
        return Capabilities(float64=True, bfloat16=bool(torch.cuda.is_bf16_supported()))

    def prepare(self, index: int = 0) -> None:
        # TF32 would round every float32 product to a 10-bit mantissa: matched similarities
        # would move by ~1e-3 and the verdict could differ from the CPU's
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.set_device(index)  # nccl collectives use the current device

    def synchronize(self, index: int = 0) -> None:
        torch.cuda.synchronize(index)
