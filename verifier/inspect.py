"""`lineage inspect`: what a checkpoint is, from headers (and optionally a full sweep).

The JSON keys of ``InspectReport`` are a contract with scripts (see docs/report-format.md):
architecture, model_type, num_layers, hidden_size, vocab_size, moe, dtype, files, roles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from verifier.architectures import role_shape
from verifier.files import FileRecord, describe_files
from verifier.model import Model
from verifier.readers.base import TensorInfo
from verifier.sweep import nonfinite_warnings, sweep


class MoEInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_experts: int
    moe_layers: list[int]
    shared_experts: int


class RoleInfo(BaseModel):
    """How often a role occurs (layers x experts), the shape of its first occurrence after any
    cut (fused qkv, expert stacks), and the stored tensor that holds it."""

    model_config = ConfigDict(frozen=True)

    count: int
    shape: list[int]
    example: str


class InspectReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    format: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    intermediate_size: int | None
    num_heads: int | None
    num_kv_heads: int | None
    head_dim: int | None
    moe: MoEInfo | None
    #: blocks of each stack in reading order (an encoder-decoder's), layers numbered across
    stacks: dict[str, int] = Field(default_factory=dict)
    dtype: str
    dtypes: dict[str, int]
    num_parameters: int
    num_tensors: int
    largest_tensor: str
    files: list[FileRecord]
    roles: dict[str, RoleInfo]
    unassigned: list[str]
    warnings: list[str] = Field(default_factory=list)


def _dominant_dtype(tensors: list[TensorInfo]) -> tuple[str, dict[str, int]]:
    """The dtype holding most parameters, and parameters per dtype."""
    counts: Counter[str] = Counter()
    for t in tensors:
        counts[t.dtype] += t.numel
    if not counts:
        return "none", {}
    return counts.most_common(1)[0][0], dict(sorted(counts.items()))


def inspect_model(
    model: Model,
    *,
    digest: bool = True,
    scan: bool = False,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> InspectReport:
    """Describe ``model``. ``scan`` reads every tensor to find NaN/Inf (slow, bounded memory)."""
    layout = model.layout
    tensors = model.reader.tensors()
    shapes = {t.name: t.shape for t in tensors}
    dtype, dtypes = _dominant_dtype(tensors)
    roles: dict[str, RoleInfo] = {}
    for role, refs in sorted(layout.role_refs().items()):
        first = refs[0]
        roles[role] = RoleInfo(
            count=len(refs), shape=list(role_shape(first, shapes[first.tensor])), example=first.tensor
        )
    moe = None
    if layout.moe_layers:
        moe = MoEInfo(
            num_experts=layout.num_experts,
            moe_layers=layout.moe_layers,
            shared_experts=layout.num_shared_experts,
        )
    warnings = list(model.warnings)
    if scan:
        warnings += nonfinite_warnings(sweep(model.reader, on_tensor=on_tensor))
    largest = max(tensors, key=lambda t: t.numel) if tensors else None
    return InspectReport(
        path=str(model.path),
        format=model.format,
        architecture=layout.family,
        model_type=layout.model_type,
        num_layers=layout.num_layers,
        hidden_size=layout.hidden_size,
        vocab_size=layout.vocab_size,
        intermediate_size=layout.intermediate_size,
        num_heads=layout.num_heads,
        num_kv_heads=layout.num_kv_heads,
        head_dim=layout.head_dim,
        moe=moe,
        stacks=layout.stacks,
        dtype=dtype,
        dtypes=dtypes,
        num_parameters=sum(t.numel for t in tensors),
        num_tensors=len(tensors),
        largest_tensor=largest.name if largest else "",
        files=describe_files(model.reader.root, model.reader.files, digest=digest),
        roles=roles,
        unassigned=layout.unassigned,
        warnings=warnings,
    )
