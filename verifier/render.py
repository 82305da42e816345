"""Human-readable renderings of lineage's models (rich tables); no decisions are made here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from backends import BackendStatus
from verifier.demo import DemoRow
from verifier.inspect import InspectReport
from verifier.report import Report


def _human_bytes(n: int) -> str:
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
    head.add_row("model", report.path)
    head.add_row("format", report.format)
    head.add_row("architecture", f"{report.architecture} (model_type {report.model_type})")
    head.add_row(
        "shape",
        f"{report.num_layers} layers, hidden {report.hidden_size}, vocab {report.vocab_size}, "
        f"ffn {report.intermediate_size}, heads {report.num_heads}/{report.num_kv_heads} kv",
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
    head.add_row("files", f"{len(report.files)} ({_human_bytes(total)})")
    console.print(head)

    roles = Table(title="roles", title_justify="left")
    roles.add_column("role")
    roles.add_column("tensors", justify="right")
    roles.add_column("shape")
    roles.add_column("first tensor", overflow="fold")
    for name, info in report.roles.items():
        roles.add_row(name, str(info.count), "×".join(map(str, info.shape)), info.example)
    console.print(roles)

    files = Table(title="files", title_justify="left")
    files.add_column("path", overflow="fold")
    files.add_column("size", justify="right")
    files.add_column("sha256")
    for f in report.files:
        files.add_row(f.path, _human_bytes(f.size), f.sha256[:16] + "…" if f.sha256 else "-")
    console.print(files)
    if report.unassigned:
        shown = ", ".join(report.unassigned[:8])
        more = f" and {len(report.unassigned) - 8} more" if len(report.unassigned) > 8 else ""
        console.print(f"[dim]tensors without a role: {shown}{more}[/dim]")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


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
            ", ".join(st.devices) if st.available else "-",
            ", ".join(f"{k} {v}" for k, v in st.versions.items()),
            st.reason or "",
        )
    console.print(table)


_VERDICT_STYLE = {"derived": "bold red", "independent": "bold green", "inconclusive": "bold yellow"}
_VERDICT_MEANING = {
    "derived": "the candidate was not trained independently of the base: it, or an ancestor "
    "they share, passed weights to it",
    "independent": "no evidence of shared weights, and the probes had the power to see it",
    "inconclusive": "the evidence does not support either answer at the chosen alpha",
}


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "< 1e-290" if p < 1e-290 else f"{p:.3g}"  # float64 tails end near 1e-300


def render_report(report: Report, console: Console) -> None:
    """Verdict first, then one row per probe, the layer map and warnings."""
    style = _VERDICT_STYLE[report.verdict]
    console.print(f"[{style}]{report.verdict.upper()}[/{style}]  p = {_p(report.p_value)}  "
                  f"(alpha = {report.alpha:g})")
    console.print(f"[dim]{_VERDICT_MEANING[report.verdict]}[/dim]")
    console.print(report.reason, highlight=False)
    probes = Table(title="probes", title_justify="left")
    for col in ("probe", "statistic", "null mean", "p-value", "power p", "decisive"):
        probes.add_column(col, justify="left" if col == "probe" else "right")
    nulls = []
    for pr in report.probes:
        means = [lv.null_mean for lv in pr.layers if lv.null_mean is not None]
        probes.add_row(pr.name, f"{pr.statistic:.4f}",
                       f"{sum(means) / len(means):.4f}" if means else "-", _p(pr.p_value),
                       _p(pr.power_p_value), "yes" if pr.decisive else "no")
        nulls.append((pr.name, pr.null))
    if report.norm_drift is not None:
        nd = report.norm_drift
        probes.add_row("std-profile r",
                       "-" if nd.profile_correlation is None else f"{nd.profile_correlation:.3f}",
                       "-", _p(nd.profile_correlation_p), "-", "no")
        nulls.append(("std-profile r", nd.null))
    console.print(probes)
    for name, null in nulls:
        console.print(f"[dim]{name} null: {null}[/dim]", highlight=False)
    if report.layer_map:
        lm = Table(title="layer map (candidate -> base)", title_justify="left")
        lm.add_column("candidate layer", justify="right")
        lm.add_column("base layer", justify="right")
        lm.add_column("matched similarity", justify="right")
        for e in report.layer_map:
            lm.add_row(str(e.candidate_layer), "-" if e.base_layer is None else str(e.base_layer),
                       "-" if e.similarity is None else f"{e.similarity:.3f}")
        console.print(lm)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


def render_demo(rows: list[DemoRow], console: Console) -> None:
    table = Table(title="lineage demo: verdicts against the truth", title_justify="left")
    for col in ("candidate", "truth", "verdict", "p-value", "", "layer map"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        style = _VERDICT_STYLE[r.verdict]
        mapped = ",".join("-" if a is None else str(a) for a in r.layer_map)
        table.add_row(r.case.name, r.case.truth, f"[{style}]{r.verdict}[/{style}]",
                      _p(r.p_value), "[green]ok[/green]" if r.correct else "[red]WRONG[/red]",
                      mapped)
    console.print(table)
    for r in rows:
        console.print(f"[dim]{r.case.name}: {r.case.description}[/dim]", highlight=False)
    ok = sum(r.correct for r in rows)
    where = Path(rows[0].report).parent if rows else "-"
    console.print(f"{ok}/{len(rows)} verdicts match the truth; reports in {where}")
