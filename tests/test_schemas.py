"""docs/ publishes the current JSON Schemas; reports validate against them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from verifier.schemas import SCHEMAS, render
from verifier.verify import VerifyOptions, verify

DOCS = Path(__file__).resolve().parents[1] / "docs"
UPDATE = os.environ.get("LINEAGE_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_published_schema_is_current(name):
    if UPDATE:
        (DOCS / name).write_text(render(name))
    assert (DOCS / name).read_text() == render(name), (
        "run scripts/export_schemas.py (or LINEAGE_UPDATE_GOLDEN=1 pytest) after a schema change"
    )


def test_a_real_report_validates_against_the_published_schema(zoo):
    report = verify(zoo["llama"], zoo["llama_pruned"], VerifyOptions(digest=False))
    schema = json.loads((DOCS / "report.schema.json").read_text())
    jsonschema.validate(json.loads(report.to_json()), schema)
