"""Write the JSON Schemas of lineage's outputs to docs/ (the report and `inspect --format json`).

Usage: ``python scripts/export_schemas.py``. tests/test_schemas.py fails when docs/ is stale.
"""

from __future__ import annotations

from pathlib import Path

from verifier.schemas import SCHEMAS, render

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    for name in SCHEMAS:
        (DOCS / name).write_text(render(name))
        print(f"wrote docs/{name}")


if __name__ == "__main__":
    main()
