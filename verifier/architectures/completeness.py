"""Roles that some layers of a model hold and others of the same kind lack.

A checkpoint with one layer's up projection missing (a tensor dropped by a broken conversion,
a shard written short) still opens: every tensor it has is named right and shaped right. The
probes then leave that layer's FFN out, and a report that only shows an unmapped layer would
hide why. Layers are compared with layers of their own kind (dense with dense, MoE with MoE,
as models that mix them do on purpose), and experts with the other experts of their layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from verifier.architectures.layout import BIAS, ModelLayout, RoleRef


def missing_roles(layout: ModelLayout) -> list[str]:
    """One line per role that layers of one kind hold unevenly, naming the layers that lack
    it; and per layer whose experts hold roles unevenly, the experts that lack one."""
    said: list[str] = []
    for moe in (False, True):
        kind = [layer for layer in layout.layers if layer.is_moe == moe]
        said += _uneven(((f"layer {layer.index}", _checked(layout, layer.roles)) for layer in kind),
                        "MoE layers" if moe else "layers")
    for layer in layout.layers:
        said += _uneven(((f"expert {e}", roles) for e, roles in enumerate(layer.experts)),
                        f"experts of layer {layer.index}")
    return said


def unread_tensors(layout: ModelLayout, shown: int = 3) -> list[str]:
    """What the layout leaves unread and may matter: tensors that no role claims and the
    table does not expect, and a layout chosen by names for a ``model_type`` with no table."""
    said = []
    if layout.detected:
        said.append(f"model_type {layout.model_type!r} has no table of its own: read with the "
                    f"{layout.family!r} layout, whose tensor names it matches (a family whose "
                    "norms or fused tensors differ would need a --role-map)")
    if layout.other_modalities:
        parts = ", ".join(f"{p!r} ({n} tensors)" for p, n in layout.other_modalities.items())
        said.append(f"a multimodal checkpoint: its other modalities' parts are compared by no "
                    f"probe, {parts}; lineage is judged on its language model")
    if layout.unexpected:
        n = len(layout.unexpected)
        said.append(f"{n} {'tensor has' if n == 1 else 'tensors have'} no role in the "
                    f"{layout.family!r} layout and {'is' if n == 1 else 'are'} compared by no "
                    f"probe, e.g. "
                    f"{', '.join(repr(n) for n in layout.unexpected[:shown])}")
    return said


def _checked(layout: ModelLayout, roles: Mapping[str, RoleRef]) -> Mapping[str, RoleRef]:
    """The roles every layer of its kind should hold: those a block may lack by design
    (``ModelLayout.optional_roles``) left out."""
    if not layout.optional_roles:
        return roles
    return {r: ref for r, ref in roles.items()
            if r.removesuffix(BIAS) not in layout.optional_roles}


def _uneven(groups: Iterable[tuple[str, Mapping[str, RoleRef]]], what: str) -> list[str]:
    groups = list(groups)
    out = []
    roles: dict[str, RoleRef] = {}  # each role with the first tensor that holds it
    for _, held in groups:
        for role, ref in held.items():
            roles.setdefault(role, ref)
    for role, example in roles.items():
        lacking = [name for name, held in groups if role not in held]
        if lacking:
            out.append(
                f"no {role} in {_names(lacking)} ({len(groups) - len(lacking)} of {len(groups)} "
                f"{what} have one, e.g. {example.tensor!r}): an incomplete checkpoint? the "
                "probes leave out what it lacks")
    return out


def _names(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more"
                                       if len(names) > shown else "")


__all__ = ["missing_roles", "unread_tensors"]
