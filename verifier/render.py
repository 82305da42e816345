"""Human-readable renderings of lineage's models (rich tables); no decisions are made here."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from backends import BackendStatus
from verifier.inspect import InspectReport


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
