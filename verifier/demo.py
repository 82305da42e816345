"""`lineage demo`: derive models of known lineage from a shipped tiny base and verify each.

The base is a trained 8-layer Llama-style model stored as package data (built by
``scripts/build_demo_base.py``). At run time the demo derives, with the same code the test-suite
uses (``verifier.zoo``): a fine-tune on other data, a function-preserving permutation of hidden
dimension, heads and neurons followed by a little training, a function-preserving rescaling, a
pruned model (two layers dropped) trained on, and an independent model trained from scratch with
another seed. Each is verified against the base; the table compares verdicts with the truth and
the reports are written to a folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from verifier.files import write_output
from verifier.report import Report
from verifier.verify import VerifyOptions, verify
from verifier.zoo import ModelSpec, Zoo, read_spec
from verifier.zoo.derive import derived_spec

BASE = "base"


class DemoCase(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    truth: str


class DemoRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    case: DemoCase
    verdict: str
    p_value: float | None
    layer_map: list[int | None]
    report: str
    seconds: float

    @property
    def correct(self) -> bool:
        return self.verdict == self.case.truth


CASES = (
    DemoCase(name="finetuned", description="fine-tuned 40 steps on other data", truth="derived"),
    DemoCase(name="permuted", description="hidden dim, heads and neurons permuted, then 20 steps",
             truth="derived"),
    DemoCase(name="rescaled", description="function-preserving rescaling and sign flips",
             truth="derived"),
    DemoCase(name="pruned", description="layers 2 and 5 dropped, then 30 steps", truth="derived"),
    DemoCase(name="independent", description="same recipe, trained from scratch with another seed",
             truth="independent"),
)


def base_folder() -> Path:
    """The shipped base model (inside the installed package)."""
    return Path(str(resources.files("verifier") / "data" / "demo-base"))


def demo_specs(base: ModelSpec) -> dict[str, ModelSpec]:
    return {
        BASE: base,
        "finetuned": derived_spec(base, None, domain="code", steps=40, seed=11),
        "permuted": derived_spec(base, "permute", {}, steps=20, seed=12),
        "rescaled": derived_spec(base, "rescale", {}, steps=0, seed=13),
        "pruned": derived_spec(base, "prune", {"drop": [2, 5]}, steps=30, seed=14),
        "independent": base.model_copy(update={"seed": 99}),
    }


def run_demo(
    out: Path,
    *,
    on_stage: Callable[[str], None] | None = None,
    options: VerifyOptions | None = None,
) -> list[DemoRow]:
    """Build the variants under ``out/models``, verify them, write ``out/reports/*.json``."""
    say = on_stage or (lambda _msg: None)
    source = base_folder()
    spec = read_spec(source)
    specs = demo_specs(spec)
    zoo = Zoo(out / "models", specs)
    seeded = out / "models" / spec.folder_name()
    if not seeded.exists():  # the shipped base, so that it is never retrained
        shutil.copytree(source, seeded)
    rows = []
    for case in CASES:
        say(f"deriving {case.name}: {case.description}")
        folder = zoo[case.name]
        say(f"verifying {case.name}")
        report: Report = verify(zoo[BASE], folder, options)
        target = out / "reports" / f"{case.name}.json"
        write_output(target, report.to_json() + "\n")
        rows.append(DemoRow(
            case=case, verdict=report.verdict, p_value=report.p_value,
            layer_map=[e.base_layer for e in report.layer_map], report=str(target),
            seconds=report.timings.get("total", 0.0),
        ))
    return rows
