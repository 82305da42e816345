"""Train the tiny base model that `lineage demo` ships, and store it as package data.

The base is the zoo's standard ``llama`` recipe (8 layers, hidden 64, byte vocabulary, 150 AdamW
steps on the generated corpus): about 1.3 MB of float32 safetensors. Usage:
``python scripts/build_demo_base.py`` (rewrites verifier/data/demo-base/).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from verifier.zoo import STANDARD, build_model

TARGET = Path(__file__).resolve().parents[1] / "verifier" / "data" / "demo-base"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(STANDARD["llama"], Path(tmp))
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "training.json"):
            shutil.copy2(folder / name, TARGET / name)
    size = sum(f.stat().st_size for f in TARGET.iterdir())
    print(f"wrote {TARGET.name}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
