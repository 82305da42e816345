"""`lineage demo`, the README's main command: every verdict matches the truth."""

from __future__ import annotations

import json

import pytest

from verifier.cli import main
from verifier.demo import CASES, base_folder


def test_shipped_base_is_small_and_complete():
    folder = base_folder()
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 4_000_000


def test_demo_verdicts_match_the_truth_and_reports_are_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert f"{len(CASES)}/{len(CASES)} verdicts match the truth" in out
    for case in CASES:
        report = json.loads((tmp_path / "demo" / "reports" / f"{case.name}.json").read_text())
        assert report["verdict"] == case.truth
    pruned = json.loads((tmp_path / "demo" / "reports" / "pruned.json").read_text())
    assert [e["base_layer"] for e in pruned["layer_map"]] == [0, 1, 3, 4, 6, 7]
