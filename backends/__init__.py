"""Compute backends behind one interface, in auto-detection order (npu, cuda, cpu).

torch would otherwise auto-load an installed ``torch_npu`` at ``import torch`` and fail outright
on a host without the CANN toolkit; lineage turns that off (unless the user set it) so such a
host still gets a working CPU/CUDA tool, and imports torch_npu itself only in the npu backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")

from backends.base import Backend, BackendStatus  # noqa: E402
from backends.compute import DTYPE_POLICY, Capabilities, Compute  # noqa: E402
from backends.cpu import CPUBackend  # noqa: E402
from backends.cuda import CUDABackend  # noqa: E402
from backends.fake_npu import FakeNPUBackend  # noqa: E402
from backends.npu import NPUBackend  # noqa: E402
from verifier.errors import BackendError, UnknownBackendError  # noqa: E402

#: every backend, in the order "auto" tries them
BACKENDS: dict[str, Backend] = {
    b.name: b for b in (NPUBackend(), CUDABackend(), CPUBackend(), FakeNPUBackend())
}
ENV_OVERRIDE = "LINEAGE_BACKEND"


def statuses() -> list[BackendStatus]:
    """The real backends (test doubles such as fake-npu are left out)."""
    return [b.status() for b in BACKENDS.values() if b.auto]


def select(name: str = "auto") -> tuple[Backend, BackendStatus]:
    """The backend named (or the first available for "auto"); an absent one is an error. "auto"
    takes ``LINEAGE_BACKEND`` where it is set, and an error then names that variable."""
    said = f"backend {name!r}"
    if name == "auto" and os.environ.get(ENV_OVERRIDE, "auto") != "auto":
        name = os.environ[ENV_OVERRIDE]
        said = f"backend {name!r} (from {ENV_OVERRIDE})"
    if name == "auto":
        for backend in BACKENDS.values():
            if not backend.auto:
                continue
            st = backend.status()
            if st.available:
                return backend, st
    backend = BACKENDS.get(name)
    if backend is None:
        raise UnknownBackendError(
            f"unknown {said} (choose from auto, {', '.join(BACKENDS)})")
    st = backend.status()
    if not st.available:
        raise BackendError(f"{said} is not available here: {st.reason}")
    return backend, st


__all__ = [
    "BACKENDS",
    "DTYPE_POLICY",
    "Backend",
    "BackendStatus",
    "Capabilities",
    "Compute",
    "select",
    "statuses",
]
