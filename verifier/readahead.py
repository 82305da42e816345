"""Reading the next layer from the disk while this one is computed.

A checkpoint whose pages are not in the page cache (just copied, larger than memory, or evicted)
is read on first touch: every page fault of a mapped tensor waits for the disk while the CPU
idles, and the analysis then costs its compute *plus* the read. Telling the kernel which bytes
come next (``madvise(MADV_WILLNEED)`` on the tensors' mapped ranges) starts their reads in the
background; by the time the analysis reaches them they are in the page cache, so reading
overlaps computing. Nothing is copied or held: the advice fills the page cache, which is shared,
reclaimable and not the process's private memory, and a tensor the analysis never touches costs
only its read.

The advice is a hint: on a platform without ``madvise``, for memory that is not a file map
(readers that copy, such as dequantised GGUF), or when the kernel refuses, nothing happens and
the analysis reads on first touch as before. Results never depend on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

#: layers read ahead of the one being computed (``LazyLayers``): a layer with null draws takes
#: 2-3 s of compute at 7B width on one CPU core, reading a 7B layer pair from a disk at 0.6 GB/s
#: about 1 s, so three layers ahead keep the disk busy through it (≈ 1.6 GB of page cache)
READ_AHEAD = 3

#: bytes per advice: the smallest readahead window Linux uses by default, so none is cut short
CHUNK = 128 << 10


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_WILLNEED"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def will_need(tensor: torch.Tensor) -> bool:
    """Ask the kernel to start reading the pages under ``tensor`` (CPU memory) into the page
    cache, without waiting for them. True when the advice was taken; False where it cannot be
    given (no ``madvise``, not CPU memory, an empty tensor, or the kernel refused)."""
    if _MADVISE is None or tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    # the bytes spanned by the tensor's elements (a view's strides may skip some: they are
    # read too, which is what the kernel's own readahead would do)
    lo = tensor.data_ptr()
    extent = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True))
    hi = lo + (extent + 1) * tensor.element_size()
    start = lo - lo % mmap.PAGESIZE  # madvise takes page-aligned addresses
    # Linux reads at most one readahead window per call (``force_page_cache_ra`` caps the
    # request at the device's readahead size, 128 KiB by default): one call per window
    return all(_MADVISE(at, min(CHUNK, hi - at), mmap.MADV_WILLNEED) == 0
               for at in range(start, hi, CHUNK))


class Readahead:
    """One background thread that runs read-ahead requests in the order they come.

    The requests only advise the kernel, but opening a file map and submitting a layer's reads
    can block for milliseconds when the disk's queue is full; in a thread, the analysis never
    waits for them. Requests still queued at ``close`` are dropped."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, request: Callable[[], object]) -> Future[object] | None:
        """Run ``request`` in the background; None when read-ahead is not available here."""
        if _MADVISE is None:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage-readahead")
        return self._pool.submit(_quietly, request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _quietly(request: Callable[[], object]) -> object:
    # a hint that fails (a broken file, say) is not an error: the analysis's own read of the
    # same bytes reports it, with its message
    try:
        return request()
    except Exception:  # noqa: BLE001 - see above
        return None
