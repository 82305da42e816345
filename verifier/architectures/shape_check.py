"""Every matrix a probe reads has the shape its role needs, checked from the headers alone.

A model whose tensors are named right but shaped wrong (one layer's up projection stored
transposed, a 1-D attention weight, an embedding narrower than the layers) is not one lineage
can compare: without this check the probes met it as torch's own shape errors, tracebacks deep
inside a run. Roles are checked as the probes see them (``role_shape``: after an expert is
taken out of its stack, a transpose, a slice of a fused tensor).
"""

from __future__ import annotations

from collections.abc import Mapping

from verifier.architectures.detect import role_shape
from verifier.architectures.layout import DOWN, EMBED, GATE, UP, K, ModelLayout, O, Q, RoleRef, V
from verifier.errors import ArchitectureError

#: roles that read the hidden state (hidden size last) and that write it (hidden size first)
READS_HIDDEN = (Q, K, V, GATE, UP)
WRITES_HIDDEN = (O, DOWN)


def check_shapes(layout: ModelLayout, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise ``ArchitectureError`` naming the first tensor whose shape does not fit its role."""
    hidden = layout.hidden_size

    def shape(ref: RoleRef) -> tuple[int, ...]:
        return role_shape(ref, shapes[ref.tensor])

    def refuse(ref: RoleRef, role: str, need: str) -> ArchitectureError:
        return ArchitectureError(
            f"tensor {ref.tensor!r} ({role}) has shape {list(shape(ref))}, but {need} "
            f"(hidden size {hidden}, from the embedding)")

    embed = layout.globals.get(EMBED)
    if embed is not None and (len(shape(embed)) != 2 or shape(embed)[1] != hidden):
        raise refuse(embed, EMBED, "an embedding is [vocab, hidden]")
    for layer in layout.layers:
        for roles in (layer.roles, *layer.experts, *layer.shared_experts):
            for role in READS_HIDDEN:
                ref = roles.get(role)
                if ref is not None and (len(shape(ref)) != 2 or shape(ref)[1] != hidden):
                    raise refuse(ref, role, "it reads the hidden state: [outputs, hidden]")
            for role in WRITES_HIDDEN:
                ref = roles.get(role)
                if ref is not None and (len(shape(ref)) != 2 or shape(ref)[0] != hidden):
                    raise refuse(ref, role, "it writes the hidden state: [hidden, inputs]")
            up, down, gate = roles.get(UP), roles.get(DOWN), roles.get(GATE)
            if up is not None and down is not None and shape(up)[0] != shape(down)[1]:
                raise refuse(down, DOWN, f"its inputs must be the up projection's "
                             f"{shape(up)[0]} neurons")
            if up is not None and gate is not None and shape(gate) != shape(up):
                raise refuse(gate, GATE, f"the gate must match the up projection "
                             f"{list(shape(up))}")


__all__ = ["check_shapes"]
