"""JSON Schemas of lineage's machine-readable outputs, as published in docs/."""

from __future__ import annotations

import json

from pydantic import BaseModel

from verifier.inspect import InspectReport
from verifier.report import SCHEMA_VERSION, Report

SCHEMAS: dict[str, type[BaseModel]] = {
    "report.schema.json": Report,
    "inspect.schema.json": InspectReport,
}


def render(name: str) -> str:
    """The schema file's exact text (stable key order, trailing newline)."""
    schema = SCHEMAS[name].model_json_schema()
    schema["$id"] = f"lineage/{name}"
    schema["description"] = f"lineage {name.split('.')[0]} (schema_version {SCHEMA_VERSION})"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
