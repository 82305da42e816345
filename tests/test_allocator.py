"""The command line sets glibc's allocator for large short-lived arrays, and only where the user
has not chosen otherwise (``verifier.allocator``)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from verifier import allocator, cli

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a fresh interpreter: where does a 16 MiB block come from, before and after tuning?
PROBE = """
import ctypes, sys
from verifier.allocator import tune_allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.malloc.argtypes, libc.sbrk.argtypes = (ctypes.c_size_t,), (ctypes.c_ssize_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def from_heap():
    p = libc.malloc(16 << 20)
    heap = p < libc.sbrk(0)  # the main heap lies below the break; mmap'd blocks far above
    libc.free(p)
    return heap

before = from_heap()
done = tune_allocator({})
print(before, done, from_heap())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_after_tuning_large_arrays_come_from_the_heap_and_are_reused() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "tuned", "True"]


def test_the_users_own_allocator_settings_are_left_alone() -> None:
    said = allocator.tune_allocator({"MALLOC_ARENA_MAX": "2"})
    assert said.startswith("left as the user set it")
    assert "MALLOC_ARENA_MAX" in said


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_system_allocator_on_request(value: str) -> None:
    said = allocator.tune_allocator({allocator.OPT_OUT_ENV: value})
    assert said.startswith("left as the system set it")


def test_the_command_line_tunes_once_before_any_work(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: calls.append(1) or "tuned")
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert calls == [1]
