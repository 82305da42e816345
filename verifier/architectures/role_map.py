"""``--role-map FILE``: a user's description of a layout lineage does not know.

The file is a ``LayoutTable`` written as JSON or YAML, for example::

    family: mymodel
    layer_prefix: "backbone.blocks.{layer}."
    globals: {embed: "backbone.tok.weight", final_norm: "backbone.norm_f.weight",
              lm_head: "head.weight"}
    layer: {q: attn.wq, k: attn.wk, v: attn.wv, o: attn.wo,
            gate: ffn.w1, up: ffn.w3, down: ffn.w2, attn_norm: ln1, mlp_norm: ln2}
    experts: "ffn.experts.{expert}."      # optional: routed experts ...
    expert: {gate: w1, up: w3, down: w2}  # ... and the roles inside one
    transpose: []                         # optional: roles stored [in, out]

Names are matched exactly (no optional prefix unless ``prefixes`` lists some). Every mistake
(unreadable file, unknown key, unknown role, missing ``{layer}``) is a one-line ``UsageError``,
naming the file and the offending key, with a suggestion for near-miss spellings.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from verifier.architectures.schema import Fused, LayoutTable, RoleMap, Stacked
from verifier.errors import UsageError

_JSON_SUFFIXES = (".json",)
#: top-level keys whose values are nested models, for spelling hints inside them
_NESTED: dict[str, type[BaseModel]] = {"fused": Fused, "stacked": Stacked}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"role map {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"role map {path}: cannot read ({exc})") from exc
    try:
        if path.suffix.lower() in _JSON_SUFFIXES:
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        kind = "JSON" if path.suffix.lower() in _JSON_SUFFIXES else "YAML"
        detail = " ".join(str(exc).split())
        raise UsageError(f"role map {path}: not valid {kind} ({detail})") from exc


def _describe(error: dict[str, Any]) -> str:
    """One validation error as ``key.path: message`` with a spelling hint for unknown keys."""
    loc = ".".join(str(part) for part in error.get("loc", ())) or "(top level)"
    if error.get("type") == "extra_forbidden":
        loc_parts = tuple(error.get("loc", ()))
        field = str(loc_parts[-1]) if loc_parts else ""
        parent: type[BaseModel] = _NESTED.get(str(loc_parts[0]), LayoutTable) if len(
            loc_parts) > 1 else LayoutTable
        close = difflib.get_close_matches(field, list(parent.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{loc}: unknown key{hint}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{loc}: {message}"


def parse_role_map(data: Any, source: str = "role map") -> RoleMap:
    """Validate an already-parsed role map; errors become one-line ``UsageError``s."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of keys (family, layer_prefix, ...)")
    try:
        return RoleMap.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(e)) for e in exc.errors())
        raise UsageError(f"{source}: {problems}") from None


def load_role_map(path: Path) -> RoleMap:
    """Read a JSON (``.json``) or YAML (anything else) role map file and validate it."""
    path = Path(path)
    return parse_role_map(_read(path), source=f"role map {path}")
