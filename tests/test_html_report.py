"""The HTML report: one self-contained page that a real browser loads without errors, showing the
verdict and every plot, with report text escaped; `lineage render` and `verify --html`.

Browser tests drive Debian's headless chromium and skip, saying so, where it is not installed
(CI installs it: see the README's test command).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from checkpoints import run_cli

from verifier.html_report import clustering_figure, expert_overlap, render_html
from verifier.probes.moe_upcycling import NOT_MATCHED, ExpertEntry
from verifier.report import Report
from verifier.signing import generate_key, public_key_pem, sign_report
from verifier.verify import VerifyOptions, verify
from verifier.zoo.pairs import MOE_PAIRS, PAIRS

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless chromium is not installed (apt-get install chromium)")

#: cheap but complete runs: fewer null draws and tested layers than the defaults
FAST = VerifyOptions(null_draws=8, null_layers=3)
DENSE_FIGURES = ("fig-layer-map", "fig-layer-evidence", "fig-norm-profiles", "fig-norm-drift")
MOE_FIGURES = ("fig-layer-map", "fig-norm-profiles", "fig-expert-coverage", "fig-expert-map",
               "fig-expert-clustering")
MOE_PROBES = ("hidden_alignment", "moe_upcycling", "norm_drift")
#: (base, candidate, options, the verdict the zoo's truth gives, the figures the page must show)
CASES = {
    "derived": ("llama", "llama_pruned", FAST, "derived", DENSE_FIGURES),
    "independent": ("llama", "llama_seed2", FAST, "independent", DENSE_FIGURES),
    "moe": ("llama", "llama_moe_fine",
            FAST.model_copy(update={"probes": MOE_PROBES}),
            "derived", MOE_FIGURES),
}


@pytest.fixture(scope="module")
def reports(zoo) -> dict[str, Report]:
    return {name: verify(zoo[b], zoo[c], opts) for name, (b, c, opts, _, _) in CASES.items()}


def browse(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM headless chromium built from ``page``, and every console message it logged
    (script errors and Content-Security-Policy violations, such as a blocked network load)."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def figure_has_svg(dom: str, fig_id: str) -> bool:
    return re.search(rf'<figure id="{fig_id}"[^>]*>\s*<svg\b', dom) is not None


# --- in a real browser --------------------------------------------------------------------------


@needs_chromium
@pytest.mark.parametrize("case", list(CASES))
def test_page_loads_in_chromium_with_verdict_plots_hashes_and_no_console_errors(
        case, reports, tmp_path):
    report = reports[case]
    expected_verdict, figures = CASES[case][3], CASES[case][4]
    assert report.verdict == expected_verdict, report.reason
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    dom, console = browse(page, tmp_path)
    assert console == []
    assert f'<div class="word">{expected_verdict.upper()}</div>' in dom
    assert "combined p = " in dom
    for fig_id in figures:
        assert figure_has_svg(dom, fig_id), fig_id
    for probe in report.probes:
        assert f"<td>{probe.name}</td>" in dom
    for side in (report.models.base, report.models.candidate):
        for f in side.files:
            assert len(f.sha256) == 64
            assert f.sha256 in dom
    assert ('id="moe"' in dom) is (case == "moe")


@needs_chromium
@pytest.mark.parametrize("pair", [*PAIRS, *MOE_PAIRS], ids=lambda p: p.name)
def test_every_test_pair_renders_its_verdict_and_plots_in_chromium(pair, pair_reports, tmp_path):
    """Each pair of known lineage, verified (the session's shared reports) and rendered: the
    page shows the true verdict and every plot its report supports, and the browser logs
    nothing."""
    moe = pair in MOE_PAIRS
    report = pair_reports(pair.base, pair.candidate)
    assert report.verdict == pair.truth, report.reason
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    dom, console = browse(page, tmp_path)
    assert console == []
    assert f'<div class="word">{pair.truth.upper()}</div>' in dom
    paired = report.norm_drift is not None and any(
        row.base_layer is not None for row in report.norm_drift.layers)
    for fig_id in (MOE_FIGURES if moe else DENSE_FIGURES):
        # drift needs paired layers: absent for an unmapped pair of different depths
        assert figure_has_svg(dom, fig_id) is (fig_id != "fig-norm-drift" or paired), fig_id
    if not paired:
        assert "no per-layer drift to show" in dom


@needs_chromium
def test_the_browser_check_sees_script_errors_and_blocked_loads(tmp_path):
    """The console check above could pass vacuously; on a broken page it must not."""
    page = tmp_path / "broken.html"
    policy = "default-src 'none'; script-src 'unsafe-inline'"
    page.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                    f'content="{policy}"></head><body><img src="https://example.org/x.png">'
                    "<script>throw new Error('kaboom')</script></body></html>")
    _, console = browse(page, tmp_path)
    assert any("kaboom" in line for line in console)
    assert any("example.org" in line for line in console)


# --- the page itself ----------------------------------------------------------------------------


def test_page_is_self_contained(reports):
    for report in reports.values():
        page = render_html(report)
        assert "<script" not in page
        assert "<link" not in page
        assert re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) is None
        assert "default-src 'none'" in page  # the browser itself refuses any load


def test_report_text_is_escaped(reports):
    report = reports["derived"]
    hostile = "<script>alert(1)</script>"
    candidate = report.models.candidate.model_copy(update={"path": f"/models/{hostile}"})
    tampered = report.model_copy(update={
        "warnings": [f"vocabularies differ {hostile}"],
        "reason": f"because {hostile} & more",
        "models": report.models.model_copy(update={"candidate": candidate}),
    })
    page = render_html(tampered)
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "because &lt;script&gt;" in page


def test_same_report_gives_the_same_page(reports):
    report = reports["moe"]
    assert render_html(report) == render_html(report)


def test_expert_clustering_is_the_overlap_of_held_base_neurons():
    def expert(k: int, neurons: list[int]) -> ExpertEntry:
        return ExpertEntry(layer=0, expert=k, base_layer=0, coverage=0.5, similarity=0.5,
                           base_neurons=neurons)

    m = expert_overlap([expert(0, [1, 2, 3, 4]), expert(1, [3, 4, -1, -1]),
                        expert(2, [7, 8, 9, 10]), expert(3, [-1, -1, -1, -1])])
    assert m[0][1] == m[1][0] == 1.0  # expert 1 holds two neurons, both held by expert 0
    assert m[0][2] == 0.0
    assert m[3] == [0.0, 0.0, 0.0, 0.0]
    assert m[0][0] == 1.0


def test_layers_matched_on_a_sample_are_named_and_kept_out_of_maps_and_clustering(reports):
    """A MoE layer without null draws matched on a sample (``NOT_MATCHED`` neurons) has no
    whole map: the page names it, draws maps and clustering of the wholly mapped layers only,
    and counts held neurons among the matched ones."""
    report = reports["moe"]
    assert report.moe is not None
    experts = [e if e.layer in (0, 7) else e.model_copy(update={"base_neurons": [
        NOT_MATCHED] * (len(e.base_neurons) - 2) + e.base_neurons[-2:]})
        for e in report.moe.experts]
    sampled = report.model_copy(update={"moe": report.moe.model_copy(
        update={"experts": experts})})
    page = render_html(sampled)
    assert "Layers 1-6 had no null draws of their own" in page
    assert "Layers 1-6" not in render_html(report)
    found = clustering_figure(sampled)
    assert found is not None
    assert found[1] == [0, 7]
    held = sum(n >= 0 for n in experts[-1].base_neurons)
    assert f"<td class=\"num\">{held}/{len(experts[-1].base_neurons)}</td>" in page
    middle = next(e for e in experts if e.layer == 3)
    assert f"{sum(n >= 0 for n in middle.base_neurons)}/2</td>" in page


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def saved(reports, tmp_path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(reports["derived"].to_json() + "\n")
    return path


def test_render_writes_the_page_next_to_the_report(saved, capsys):
    code, out, _ = run_cli(["render", saved], capsys)
    page = saved.with_suffix(".html")
    assert code == 0
    assert str(page) in out
    text = page.read_text()
    assert '<div class="word">DERIVED</div>' in text
    assert "not signed" in text


def test_render_bad_input_is_one_line_and_exit_4(tmp_path, capsys):
    not_report = tmp_path / "x.json"
    not_report.write_text('{"verdict": "derived"}')
    broken = tmp_path / "y.json"
    broken.write_text("{not json")
    for path, needle in ((tmp_path / "missing.json", "cannot read report"),
                         (not_report, "not a lineage report"),
                         (broken, "not a lineage report")):
        code, out, err = run_cli(["render", path, "-o", tmp_path / "out.html"], capsys)
        assert code == 4
        assert "Traceback" not in err
        assert err.splitlines()[0].startswith("error: ")
        assert needle in err.splitlines()[0]
        assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out.html").exists()


def test_render_states_the_signature(saved, tmp_path, capsys):
    key = generate_key()
    saved.with_name("report.sigstore.json").write_bytes(sign_report(saved.read_bytes(), key))
    pub = tmp_path / "k.pub.pem"
    pub.write_bytes(public_key_pem(key))
    page = tmp_path / "page.html"

    assert run_cli(["render", saved, "-o", page], capsys)[0] == 0
    assert "bundle report.sigstore.json present, not verified (no key given)" in page.read_text()

    assert run_cli(["render", saved, "-o", page, "--key", pub], capsys)[0] == 0
    assert "signature verified with key" in page.read_text()

    other = tmp_path / "other.pub.pem"
    other.write_bytes(public_key_pem(generate_key()))
    code, _, err = run_cli(["render", saved, "-o", page, "--key", other], capsys)
    assert code == 5
    assert "does not verify" in err
    assert "does not verify" in page.read_text()

    # a key that is no usable public key: an input error, no page (5 promises a page)
    page.unlink()
    junk = tmp_path / "junk.pub.pem"
    junk.write_text("not a key\n")
    code, _, err = run_cli(["render", saved, "-o", page, "--key", junk], capsys)
    assert code == 4
    assert "not a valid PEM public key" in err
    assert not page.exists()


def test_verify_html_writes_the_page_too(zoo, tmp_path, capsys):
    page = tmp_path / "v.html"
    code, out, _ = run_cli(["verify", zoo["llama"], zoo["llama_pruned"], "--probes",
                            "embeddings", "--html", page, "--format", "json"], capsys)
    assert code == 0
    report = Report.from_json(out)
    text = page.read_text()
    assert f'<div class="word">{report.verdict.upper()}</div>' in text
    assert figure_has_svg(text, "fig-layer-map")
    assert report.models.candidate.files[0].sha256 in text
