"""The README's promises: CI runs exactly its test command, and `lineage demo` is the main job."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [line.strip() for line in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = next(c for c in readme if "pytest" in c)
    assert test_command in [line.strip() for line in ci]


def test_readme_main_command_runs_the_demo_after_pinning_cpu_torch():
    readme = _commands((ROOT / "README.md").read_text())
    main = next(c for c in readme if "lineage demo" in c)
    assert main.index("pip install torch==2.13.0") < main.index("pip install -e .")


def test_package_requirement_on_torch_is_a_range_not_the_pin():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=' in pyproject
    assert "torch==" not in pyproject
