"""A streaming pass over every tensor: finiteness and the norms that probes and users need.

Each tensor is read, reduced in chunks (so the float32 upcast of a bf16 embedding never
doubles its footprint) and dropped before the next, so peak memory is about one tensor.
Chunk sums are accumulated in float64: a 10^9-element running sum would exhaust float32's
mantissa.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict

from verifier.errors import InputError
from verifier.readers.base import CheckpointReader, TensorInfo

# Elements upcast at once: 4 Mi float32 = 16 MiB of scratch whatever the tensor size.
CHUNK_ELEMENTS = 1 << 22


class TensorStats(BaseModel):
    """Summary statistics of one tensor, computed in float64."""

    model_config = ConfigDict(frozen=True)

    name: str
    numel: int
    frobenius: float
    std: float
    mean_abs: float
    nonfinite: int


def _sums(chunk: torch.Tensor) -> tuple[float, float, float]:
    """Sum, sum of squares and sum of |x| of one chunk.

    torch reduces float32 with cascade (pairwise) summation, accurate to ~1e-6 relative for a
    4 Mi chunk and 10-100x faster than asking for float64 accumulation; chunk results are then
    added in float64. NaN and Inf propagate into the sums, so finite sums prove a finite chunk.
    """
    return (
        float(chunk.sum()),
        float(torch.linalg.vector_norm(chunk)) ** 2,
        float(torch.linalg.vector_norm(chunk, ord=1)),
    )


def tensor_stats(name: str, tensor: torch.Tensor) -> TensorStats:
    """Frobenius norm, population std and mean |w| over the finite entries, chunk by chunk."""
    flat = tensor.reshape(-1)
    total = s1 = s2 = sabs = 0.0
    bad = 0
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        try:
            chunk = flat[start : start + CHUNK_ELEMENTS].to(torch.float32)
        except (RuntimeError, NotImplementedError) as exc:  # packed FP4 has no conversion
            raise InputError(f"tensor {name!r}: torch cannot read its dtype "
                             f"{str(tensor.dtype).removeprefix('torch.')} as numbers") from exc
        sums = _sums(chunk)
        if not all(math.isfinite(v) for v in sums):
            # NaN/Inf present (or float32 squares overflowed): count and drop non-finite entries
            finite = torch.isfinite(chunk)
            bad += chunk.numel() - int(finite.sum())
            chunk = chunk[finite].to(torch.float64)
            sums = _sums(chunk)
        total += chunk.numel()
        s1, s2, sabs = s1 + sums[0], s2 + sums[1], sabs + sums[2]
    mean = s1 / total if total else 0.0
    var = max(s2 / total - mean * mean, 0.0) if total else 0.0
    return TensorStats(
        name=name,
        numel=flat.numel(),
        frobenius=math.sqrt(s2),
        std=math.sqrt(var),
        mean_abs=sabs / total if total else 0.0,
        nonfinite=bad,
    )


def sweep(
    reader: CheckpointReader,
    *,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> list[TensorStats]:
    """Stats of every tensor in reader order; ``on_tensor`` is called after each (progress)."""
    out: list[TensorStats] = []
    for info in reader.tensors():
        tensor = reader.load(info.name)
        out.append(tensor_stats(info.name, tensor))
        del tensor
        if on_tensor is not None:
            on_tensor(info)
    return out


def nonfinite_warnings(stats: list[TensorStats]) -> list[str]:
    """One warning per tensor holding NaN or Inf, naming it."""
    return [
        f"tensor {s.name!r} holds {s.nonfinite} NaN/Inf values of {s.numel}"
        for s in stats
        if s.nonfinite
    ]
