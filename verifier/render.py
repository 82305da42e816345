"""Human-readable renderings of lineage's models (rich tables); no decisions are made here.

Text goes to people at a terminal and to logs and CI output. Colour is for the terminal only:
``make_console`` lets rich detect whether the stream is a terminal and, when ``NO_COLOR`` is set
(https://no-color.org), writes no escape sequences at all (rich alone would drop colours but
keep bold and dim).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from backends import BackendStatus
    from verifier.demo import DemoRow
    from verifier.inspect import InspectReport
    from verifier.report import Report


def make_console(*, stderr: bool = False, file: TextIO | None = None,
                 force_terminal: bool | None = None) -> Console:
    """A rich console that styles only a terminal and writes plain text under ``NO_COLOR``.

    ``file`` and ``force_terminal`` exist for tests; the CLI passes neither, so rich resolves
    ``sys.stdout``/``sys.stderr`` at print time and detects a terminal itself.
    """
    plain = os.environ.get("NO_COLOR", "") != ""
    return Console(stderr=stderr, file=file, force_terminal=force_terminal,
                   no_color=plain or None, color_system=None if plain else "auto",
                   highlight=not plain)


def human_bytes(n: int) -> str:
    """A byte count in binary units (``1.5 MiB``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def render_inspect(report: InspectReport, console: Console) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    # names and paths come from the files and the command line: never read as markup ("[red]"
    # in a path vanished, "[/dim]" in a tensor name stopped the output with a MarkupError)
    head.add_row("model", escape(report.path))
    head.add_row("format", escape(report.format))
    head.add_row("architecture",
                 escape(f"{report.architecture} (model_type {report.model_type})"))
    head.add_row(
        "shape",
        f"{report.num_layers} layers{stacks_text(report.stacks)}, hidden {report.hidden_size}, "
        f"vocab {report.vocab_size}, ffn {report.intermediate_size}, "
        f"heads {report.num_heads}/{report.num_kv_heads} kv",
    )
    if report.moe:
        head.add_row(
            "moe",
            f"{report.moe.num_experts} experts in {len(report.moe.moe_layers)} layers, "
            f"{report.moe.shared_experts} shared",
        )
    head.add_row("dtype", ", ".join(f"{k}: {v:,} params" for k, v in report.dtypes.items()))
    head.add_row("parameters", f"{report.num_parameters:,} in {report.num_tensors} tensors")
    total = sum(f.size for f in report.files)
    head.add_row("files", f"{len(report.files)} ({human_bytes(total)})")
    console.print(head)

    roles = Table(title="roles", title_justify="left")
    roles.add_column("role")
    roles.add_column("tensors", justify="right")
    roles.add_column("shape")
    roles.add_column("first tensor", overflow="fold")
    for name, info in report.roles.items():
        roles.add_row(escape(name), str(info.count), "×".join(map(str, info.shape)),
                      escape(info.example))
    console.print(roles)

    files = Table(title="files", title_justify="left")
    files.add_column("path", overflow="fold")
    files.add_column("size", justify="right")
    files.add_column("sha256")
    for f in report.files:
        files.add_row(escape(f.path), human_bytes(f.size),
                      f.sha256[:16] + "…" if f.sha256 else "-")
    console.print(files)
    if report.unassigned:
        shown = escape(", ".join(report.unassigned[:8]))
        more = f" and {len(report.unassigned) - 8} more" if len(report.unassigned) > 8 else ""
        console.print(f"[dim]tensors without a role: {shown}{more}[/dim]")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")


def render_backends(items: list[BackendStatus], console: Console) -> None:
    table = Table()
    table.add_column("backend")
    table.add_column("available")
    table.add_column("devices")
    table.add_column("versions")
    table.add_column("why not")
    for st in items:
        table.add_row(
            st.name,
            "[green]yes[/green]" if st.available else "[red]no[/red]",
            # plain Text: a reason such as "pip install 'lineage[npu]'" is not markup
            Text(", ".join(st.devices) if st.available else "-"),
            Text(", ".join(f"{k} {v}" for k, v in st.versions.items())),
            Text(st.reason or ""),
        )
    console.print(table)


_VERDICT_STYLE = {"derived": "bold red", "independent": "bold green", "inconclusive": "bold yellow"}
#: what each verdict means, in one sentence (the HTML page uses the same words)
VERDICT_MEANING = {
    "derived": "the candidate was not trained independently of the base: it, or an ancestor "
    "they share, passed weights to it",
    "independent": "no evidence of shared weights, and the probes had the power to see it",
    "inconclusive": "the evidence does not support either answer at the chosen alpha",
}


def stack_label(layer: int, stacks: dict[str, int]) -> str:
    """A layer's number, with the stack and index in it where a model runs several stacks
    one after the other (``33 (decoder 1)``)."""
    start = 0
    for name, count in stacks.items():
        if layer < start + count:
            return f"{layer} ({name} {layer - start})"
        start += count
    return str(layer)


def stacks_text(stacks: dict[str, int]) -> str:
    """``" (encoder 32 + decoder 4)"``, or nothing for one stack."""
    return (" (" + " + ".join(f"{name} {count}" for name, count in stacks.items()) + ")"
            if stacks else "")


def format_p(p: float | None) -> str:
    """A p-value for people: 3 significant digits, "-" for none, a floor near float64's end."""
    if p is None:
        return "-"
    return "< 1e-290" if p < 1e-290 else f"{p:.3g}"  # float64 tails end near 1e-300


def render_report(report: Report, console: Console) -> None:
    """Verdict first (its first line is the verdict word and the combined p-value, so
    ``head -1`` and log greps find it), then its meaning and reason, one compact table of the
    probes, one table of the layers (layer map with each probe's per-layer p-value), and the
    warnings."""
    style = _VERDICT_STYLE[report.verdict]
    console.print(f"[{style}]{report.verdict.upper()}[/{style}]  p = {format_p(report.p_value)}"
                  f"  (alpha = {report.alpha:g})", highlight=False)
    console.print(f"[dim]{VERDICT_MEANING[report.verdict]}[/dim]", highlight=False)
    console.print(Text(report.reason), highlight=False)
    probes = Table(title="probes", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                   show_edge=False)
    for col in ("probe", "decisive", "statistic", "null mean", "p-value", "power p"):
        probes.add_column(col, justify="left" if col in ("probe", "decisive") else "right")
    nulls = []
    for pr in report.probes:
        means = [lv.null_mean for lv in pr.layers if lv.null_mean is not None]
        probes.add_row(pr.name, "yes" if pr.decisive else "no", f"{pr.statistic:.4f}",
                       f"{sum(means) / len(means):.4f}" if means else "-", format_p(pr.p_value),
                       format_p(pr.power_p_value))
        nulls.append((pr.name, pr.null))
    if report.norm_drift is not None:
        nd = report.norm_drift
        probes.add_row("std-profile r", "no",
                       "-" if nd.profile_correlation is None else f"{nd.profile_correlation:.3f}",
                       "-", format_p(nd.profile_correlation_p), "-")
        nulls.append(("std-profile r", nd.null))
    console.print(probes)
    for name, null in nulls:
        console.print(Text(f"{name} null: {null}", style="dim"), highlight=False)
    if report.layer_map:
        console.print(_layer_table(report))
    if report.moe is not None:
        moe = report.moe
        held = sum(e.coverage > 0 for e in moe.experts)
        console.print(f"experts: {'upcycled' if moe.upcycled else 'not upcycled'} "
                      f"(p = {format_p(moe.p_value)}); {held}/{len(moe.experts)} experts hold "
                      "base FFN neurons", highlight=False)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)


def _layer_table(report: Report) -> Table:
    """Candidate layer, its base layer and similarity, and each probe's per-layer p-value."""
    per_layer = [(pr.name, {lv.layer: lv.p_value for lv in pr.layers if lv.layer >= 0})
                 for pr in report.probes]
    per_layer = [(name, values) for name, values in per_layer if values]
    table = Table(title="layers (candidate -> base)", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for col in ("layer", "base", "similarity", *(f"p {name}" for name, _ in per_layer)):
        table.add_column(col, justify="right")
    cand, base = report.models.candidate.stacks, report.models.base.stacks
    for e in report.layer_map:
        table.add_row(stack_label(e.candidate_layer, cand),
                      "-" if e.base_layer is None else stack_label(e.base_layer, base),
                      "-" if e.similarity is None else f"{e.similarity:.3f}",
                      *(format_p(values.get(e.candidate_layer)) for _, values in per_layer))
    return table


def render_demo(rows: list[DemoRow], console: Console) -> None:
    table = Table(title="lineage demo: verdicts against the truth", title_justify="left")
    for col in ("candidate", "truth", "verdict", "p-value", "", "layer map"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        style = _VERDICT_STYLE[r.verdict]
        mapped = ",".join("-" if a is None else str(a) for a in r.layer_map)
        table.add_row(r.case.name, r.case.truth, f"[{style}]{r.verdict}[/{style}]",
                      format_p(r.p_value), "[green]ok[/green]" if r.correct else "[red]WRONG[/red]",
                      mapped)
    console.print(table)
    for r in rows:
        console.print(f"[dim]{r.case.name}: {r.case.description}[/dim]", highlight=False)
    ok = sum(r.correct for r in rows)
    where = Path(rows[0].report).parent if rows else "-"
    console.print(Text(f"{ok}/{len(rows)} verdicts match the truth; reports in {where}"))
