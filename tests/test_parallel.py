"""Assignments solved side by side give exactly the report solved one at a time."""

from __future__ import annotations

import threading
import time

import pytest

from verifier import parallel
from verifier.verify import VerifyOptions, verify

OPTS = VerifyOptions(digest=False)
VOLATILE = {"created", "timings"}


def test_results_come_back_in_input_order_whatever_finishes_first():
    def slow_for_small(x: int) -> int:
        time.sleep(0.002 * (10 - x))
        return x * x

    assert list(parallel.ordered_map(slow_for_small, range(10), workers=4)) == [
        x * x for x in range(10)]


def test_items_are_produced_lazily_and_never_far_ahead():
    produced, in_flight = [], []
    lock = threading.Lock()

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    def work(i: int) -> int:
        with lock:
            in_flight.append(len(produced) - i)
        return i

    out = list(parallel.ordered_map(work, items(), workers=3))
    assert out == list(range(20))
    assert max(in_flight) <= 3 + 1


def test_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    assert parallel.default_workers() == 3
    monkeypatch.delenv(parallel.THREADS_ENV)
    assert 1 <= parallel.default_workers() <= parallel.MAX_THREADS


@pytest.mark.parametrize("candidate", ["llama_permuted", "llama_moe_fine"])
def test_one_thread_and_four_threads_write_the_same_report(zoo, monkeypatch, candidate):
    monkeypatch.setenv(parallel.THREADS_ENV, "1")
    serial = verify(zoo["llama"], zoo[candidate], OPTS)
    monkeypatch.setenv(parallel.THREADS_ENV, "4")
    threaded = verify(zoo["llama"], zoo[candidate], OPTS)
    assert threaded.model_dump(exclude=VOLATILE) == serial.model_dump(exclude=VOLATILE)
