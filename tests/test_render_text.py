"""`--format text`: the verdict comes first, colour only on a terminal, none at all under NO_COLOR."""

from __future__ import annotations

import io

import pytest

from verifier.cli import main
from verifier.render import make_console, render_report
from verifier.verify import VerifyOptions, verify

ANSI = "\x1b["


@pytest.fixture(scope="module")
def report(zoo):
    return verify(zoo["llama"], zoo["llama_pruned"], VerifyOptions(null_draws=8, null_layers=3))


def _render(report, *, terminal: bool) -> str:
    buf = io.StringIO()
    render_report(report, make_console(file=buf, force_terminal=terminal))
    return buf.getvalue()


def test_a_terminal_gets_colour(report, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert ANSI in _render(report, terminal=True)


def test_no_color_gives_plain_text_even_on_a_terminal(report, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    text = _render(report, terminal=True)
    assert ANSI not in text
    assert text.splitlines()[0].startswith("DERIVED  p = ")


def test_a_pipe_gets_no_escapes(report, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert ANSI not in _render(report, terminal=False)


def test_text_output_starts_with_the_verdict_and_tabulates_probes_and_layers(report, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    lines = _render(report, terminal=False).splitlines()
    assert lines[0].split()[0] == report.verdict.upper()
    probe_rows = [line for line in lines if line.strip().startswith(("neuron_matching ",
                                                                     "head_matching "))]
    assert len(probe_rows) >= 2
    # one row per candidate layer, mapping pruned layers 2 and 5 away
    layer_rows = [line.split() for line in lines
                  if line.strip()[:1].isdigit() and len(line.split()) >= 3]
    assert [row[1] for row in layer_rows[:6]] == ["0", "1", "3", "4", "6", "7"]


def test_verify_prints_the_verdict_on_its_first_line(zoo, capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(zoo["llama"]), str(zoo["llama_pruned"]), "--probes", "embeddings"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert ANSI not in out
    assert out.splitlines()[0].startswith("DERIVED  p = ")
