"""glibc's allocator set for a run of many large, short-lived arrays (the CLI's choice).

A verify run makes and frees thousands of arrays of 1–32 MiB (similarities of a null draw,
features on a frame, float64 copies for the solver). glibc serves each from a fresh ``mmap``
or hands a freed heap top back to the OS, so the next array faults its pages in one by one:
on the 8-layer 7B slice about 2 million minor faults and 6–9 s of system time in a 36 s run.
With the largest ``mmap`` threshold glibc allows (32 MiB on 64-bit) and a trim threshold that
keeps freed memory for the next array, the same run takes 1 million faults and 30–31 s, with
the same peak memory (``docs/performance.md``). Answers do not depend on it.

Process-wide, so the library never calls it: the command line does, once, before any work.
Nothing is changed where the user chose allocator settings already (``MALLOC_*`` or
``GLIBC_TUNABLES`` in the environment), on a C library other than glibc, or with
``LINEAGE_SYSTEM_MALLOC=1``.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

#: environment variable that leaves the allocator as the system set it
OPT_OUT_ENV = "LINEAGE_SYSTEM_MALLOC"
#: settings by which a user already chose glibc's behaviour; lineage then leaves it alone
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
#: ``mallopt`` parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: arrays below this come from the heap and reuse freed blocks (glibc's largest: 4 MiB times
#: sizeof(long) on 64-bit; glibc refuses more)
MMAP_THRESHOLD = 32 << 20
#: free memory at the heap's top kept rather than returned to the OS (``mallopt`` takes an int).
#: Setting one threshold turns off glibc's adjustment of both, so the two go together: the
#: mmap threshold alone left the heap trimmed after every array, and the trim threshold alone
#: doubled the 8-layer run
TRIM_THRESHOLD = 2**31 - 1


def tune_allocator(environ: Mapping[str, str] | None = None) -> str:
    """Set glibc's thresholds for large arrays (module docstring); what was done, in words:
    ``"tuned"`` or why not."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_ENV, "").strip() not in ("", "0"):
        return f"left as the system set it ({OPT_OUT_ENV})"
    chosen = [name for name in USER_SETTINGS if name in env]
    if chosen:
        return f"left as the user set it ({', '.join(chosen)})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "left as it is (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "left as it is (no mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first (it is the one glibc may refuse)
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return "left as it is (mallopt refused the mmap threshold)"
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return "tuned"


__all__ = ["OPT_OUT_ENV", "tune_allocator"]
