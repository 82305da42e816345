"""Registry of derivations: how a child model's starting weights come from its parent's.

A derived ``ModelSpec`` names a ``parent`` and optionally a ``derivation``. ``build_model`` builds
the parent, passes its state dict (as saved, float32) and the child spec to the registered
function, loads the result into a fresh model of the child spec and trains ``child.steps`` more
steps (zero for a pure transformation). Continued training needs no derivation at all: a parent
plus steps on the child's domain is exactly that. Permutations, rescaling, pruning, layer
duplication and MoE upcycling are registered here by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from verifier.zoo.specs import ModelSpec

#: parent state dict, child spec -> child's initial state dict (keys and shapes of the child).
#: Parameters of a derivation (which layers, which permutation seed) live in
#: ``child.derivation_args``, so they are part of the child's hash.
Derivation = Callable[[dict[str, torch.Tensor], ModelSpec], dict[str, torch.Tensor]]

DERIVATIONS: dict[str, Derivation] = {}


def register(name: str) -> Callable[[Derivation], Derivation]:
    """Decorator adding a derivation under ``name`` (names are unique)."""

    def add(fn: Derivation) -> Derivation:
        if name in DERIVATIONS:
            raise ValueError(f"derivation {name!r} is already registered")
        DERIVATIONS[name] = fn
        return fn

    return add


def apply(name: str, parent_state: dict[str, torch.Tensor], child: ModelSpec) -> dict[str, torch.Tensor]:
    if name not in DERIVATIONS:
        known = ", ".join(sorted(DERIVATIONS)) or "none"
        raise ValueError(f"unknown derivation {name!r}; registered: {known}")
    return DERIVATIONS[name](parent_state, child)
