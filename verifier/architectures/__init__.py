"""Family adapters: tensor names -> canonical roles (see ``layout.py`` for the roles).

``resolve_layout`` is the entry point: it picks a layout table (a ``--role-map`` file, the
config's ``model_type``, or the built-in table that claims nearly every tensor) and returns a
checked ``ModelLayout``. ``FAMILIES`` lists the built-in tables by family name.
"""

from __future__ import annotations

from verifier.architectures.detect import detect_table, resolve_layout, role_shape, score
from verifier.architectures.families import FAMILIES, GGUF_TABLES, family_for_model_type
from verifier.architectures.role_map import load_role_map, parse_role_map
from verifier.architectures.schema import (
    ATTN_GATE,
    ATTN_SINKS,
    EXTRA_LAYER_ROLES,
    POST_ATTN_NORM,
    POST_MLP_NORM,
    ROUTER_CORRECTION,
    Fused,
    LayoutTable,
    RoleMap,
    Stacked,
)

__all__ = [
    "ATTN_GATE",
    "ATTN_SINKS",
    "EXTRA_LAYER_ROLES",
    "FAMILIES",
    "GGUF_TABLES",
    "POST_ATTN_NORM",
    "POST_MLP_NORM",
    "ROUTER_CORRECTION",
    "Fused",
    "LayoutTable",
    "RoleMap",
    "Stacked",
    "detect_table",
    "family_for_model_type",
    "load_role_map",
    "parse_role_map",
    "resolve_layout",
    "role_shape",
    "score",
]
