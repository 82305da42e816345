"""Multi-device runs: layers sharded across the ranks of a torch.distributed process group.

Launched by ``torchrun --nproc-per-node N -m verifier verify ...`` or ``accelerate launch``
(both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address). Every rank
opens both models and repeats the cheap, seeded work (hidden alignment, null rotations, power
check) so that all ranks hold the same alignment without shipping matrices; the per-layer work
(neuron and head matching and their null draws) is dealt out by layer; each rank reads only its
layers; rank 0 gathers the per-layer results and writes the report. All draws depend only on the
seed, never on the rank, so the report is the same for any world size (timings aside).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

from backends.base import Backend, BackendStatus
from verifier.errors import BackendError, UsageError

T = TypeVar("T")


class Shards:
    """This process's place in the group (rank 0 of 1 when not launched distributed)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (round-robin: neighbouring layers, which cost about
        the same, go to different ranks)."""
        return list(items[self.rank::self.world])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable Python objects of
        floats and ints only: they are small per-layer results, never tensors)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        try:
            torch.distributed.all_gather_object(out, obj)
        except RuntimeError as exc:  # a peer that failed (its own error says why) or left
            raise BackendError(f"another rank of the process group failed or left ({exc}); "
                               "its own error says why") from exc
        return out

    def require_same(self, what: str, value: str) -> None:
        """Refuse (``UsageError``, on every rank alike) a run whose ranks were given different
        ``value``s: each rank computes its share from its own arguments, so a rank with another
        seed or probe list gave a report that mixed two runs, or a crash."""
        if not self.distributed:
            return
        values = self.gather(value)
        odd = [rank for rank, v in enumerate(values) if v != values[0]]
        if odd:
            raise UsageError(f"rank {odd[0]} was given other {what} than rank 0: every rank "
                             "must run the same command")

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not a whole number "
                         "(set by the launcher: torchrun or accelerate)") from None


def launched() -> bool:
    """Whether this process was started by torchrun / accelerate with more than one rank."""
    return _env_int("WORLD_SIZE", 1) > 1


def join(backend: str, device: torch.device | None = None) -> Shards:
    """Join the process group the launcher set up (``backend``: gloo, nccl or hccl). A launch
    environment that is half set or out of range is a usage error, said before waiting for
    peers that would never come."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return Shards()
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise UsageError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
                         "torchrun or accelerate, or unset WORLD_SIZE for a single process")
    if not 0 <= rank < world or local < 0:
        raise UsageError(f"RANK={rank} (LOCAL_RANK={local}) is outside a group of WORLD_SIZE="
                         f"{world}")
    if not torch.distributed.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=60)}
        if device is not None and device.type != "cpu":
            kwargs["device_id"] = device
        torch.distributed.init_process_group(**kwargs)
    return Shards(rank=rank, world=world, local_rank=local)


def join_group(backend: Backend, status: BackendStatus) -> Shards:
    """This process's shards: a lone process, or a rank of the group the launcher set up, on
    the device of its local rank, with the backend's collective library (gloo on CPU)."""
    if not launched():
        return Shards()
    local = _env_int("LOCAL_RANK", 0)
    if backend.name != "cpu" and local >= status.device_count:
        raise BackendError(
            f"local rank {local} has no {backend.name} device ({status.device_count} visible): "
            "launch at most one process per device"
        )
    return join(backend.distributed, backend.device(local))


__all__ = ["Shards", "join", "join_group", "launched"]
