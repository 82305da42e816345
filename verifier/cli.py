"""The `lineage` command line: parse, call one library function, render. Nothing else.

Exit codes (a contract; see docs/exit-codes.md):
  0 ran (and the verdict matches --expect if given)   1 verdict contradicts --expect
  2 usage error   3 inconclusive while --expect was given   4 unreadable or invalid input
  5 signature or integrity failure
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from verifier import __version__
from verifier.errors import ExitCode, LineageError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 ran (verdict matches --expect if given); 1 verdict contradicts --expect; "
    "2 usage error; 3 inconclusive while --expect was given; 4 unreadable or invalid input; "
    "5 signature or integrity failure."
)

app = typer.Typer(
    name="lineage",
    help="Verify from weights alone whether one language model was derived from another.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    # Pretty tracebacks print local variables, which can include key material.
    pretty_exceptions_enable=False,
)

stdout = Console()
stderr = Console(stderr=True)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class _State:
    verbose = False


def _version(value: bool) -> None:
    if value:
        stdout.print(f"lineage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    _State.verbose = verbose


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    )


RoleMapOption = Annotated[
    Path | None,
    typer.Option("--role-map", help="JSON/YAML file mapping an unknown layout's tensors to roles."),
]


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Model folder, weights file or cached repo id.")],
    format: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = (
        OutputFormat.text
    ),
    role_map: RoleMapOption = None,
    scan: Annotated[
        bool, typer.Option("--scan", help="Read every tensor and warn about NaN/Inf values.")
    ] = False,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Skip the sha256 of each file (faster).")
    ] = False,
) -> None:
    """Architecture, roles found, shapes, dtype and files of one model."""
    from verifier.architectures import load_role_map
    from verifier.inspect import inspect_model
    from verifier.model import open_model
    from verifier.render import render_inspect

    rmap = load_role_map(role_map) if role_map else None
    with open_model(model, role_map=rmap) as m:
        if scan:
            with _progress() as progress:
                task = progress.add_task("scanning tensors", total=len(m.reader.tensors()))
                report = inspect_model(
                    m, digest=not no_hash, scan=True,
                    on_tensor=lambda _info: progress.advance(task),
                )
        else:
            report = inspect_model(m, digest=not no_hash)
    if format is OutputFormat.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        render_inspect(report, stdout)


class Expect(str, Enum):
    derived = "derived"
    independent = "independent"


def expectation_exit_code(verdict: str, expect: Expect | None) -> ExitCode:
    """The exit code contract of `verify` (see docs/exit-codes.md)."""
    if expect is None:
        return ExitCode.OK
    if verdict == "inconclusive":
        return ExitCode.INCONCLUSIVE
    return ExitCode.OK if verdict == expect.value else ExitCode.EXPECTATION_FAILED


@app.command()
def verify(
    base: Annotated[str, typer.Argument(help="The base model (folder, file or cached repo id).")],
    candidate: Annotated[str, typer.Argument(help="The model that may derive from the base.")],
    backend: Annotated[
        str, typer.Option("--backend", help="auto, cpu, cuda or npu.")
    ] = "auto",
    format: Annotated[OutputFormat, typer.Option("--format", help="text or json (json: the report "
                                                 "alone on stdout).")] = OutputFormat.text,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the report JSON here.")
    ] = None,
    expect: Annotated[
        Expect | None, typer.Option("--expect", help="Gate on the verdict (see exit codes).")
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Significance level for 'derived'.", min=1e-300,
                            max=0.5)
    ] = 1e-6,
    probes: Annotated[
        str | None,
        typer.Option("--probes", help="Comma-separated subset: hidden_alignment, "
                     "neuron_matching, head_matching, norm_drift."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the null draws.")] = 0,
    role_map: RoleMapOption = None,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Skip the sha256 of each file (faster).")
    ] = False,
) -> int:
    """Verify whether CANDIDATE was derived from BASE; print the verdict and the evidence.

    Exit codes: 0 ran (verdict matches --expect if given); 1 verdict contradicts --expect;
    3 inconclusive while --expect was given; 2 usage error; 4 unreadable or invalid input.
    """
    from backends import select
    from verifier.architectures import load_role_map
    from verifier.files import write_atomic
    from verifier.probes import PROBES
    from verifier.render import render_report
    from verifier.verify import VerifyOptions
    from verifier.verify import verify as run_verify

    chosen = tuple(p.strip() for p in probes.split(",") if p.strip()) if probes else None
    unknown = [p for p in chosen or () if p not in PROBES]
    if unknown:
        raise UsageError(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(PROBES)}")
    device, status = select(backend)
    options = VerifyOptions(alpha=alpha, probes=chosen, seed=seed, digest=not no_hash)
    rmap = load_role_map(role_map) if role_map else None
    with _progress() as progress:
        task = progress.add_task("verifying", total=None)

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=total)

        report = run_verify(base, candidate, options, role_maps=(rmap, rmap),
                            progress=on_progress)
    if status.name != "cpu":
        report = report.model_copy(update={"warnings": [
            *report.warnings,
            f"backend {status.name} is available, but this version computes every probe on "
            "the CPU",
        ]})
    del device
    text = report.to_json()
    if output is not None:
        write_atomic(output, text + "\n")
    if format is OutputFormat.json:
        sys.stdout.write(text + "\n")
    else:
        render_report(report, stdout)
    return int(expectation_exit_code(report.verdict, expect))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the models and reports.")] = Path(
        "lineage-demo"
    ),
) -> int:
    """Derive tiny models of known lineage from a shipped base, verify each, show the verdicts.

    Exits 0 when every verdict matches the truth, 1 otherwise.
    """
    from verifier.demo import run_demo
    from verifier.render import render_demo

    with stderr.status("starting") as status:
        rows = run_demo(out, on_stage=lambda msg: status.update(msg))
    render_demo(rows, stdout)
    return 0 if all(r.correct for r in rows) else int(ExitCode.EXPECTATION_FAILED)


@app.command()
def backends(
    format: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = (
        OutputFormat.text
    ),
) -> None:
    """Which compute backends (cpu, cuda, npu) are available here, and why not."""
    import json

    from backends import statuses
    from verifier.render import render_backends

    items = statuses()
    if format is OutputFormat.json:
        sys.stdout.write(json.dumps([s.model_dump() for s in items], indent=2) + "\n")
    else:
        render_backends(items, stdout)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning lineage errors into one line and an exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except LineageError as exc:
        if _State.verbose:
            raise
        # One line each, never wrapped, and never parsed as markup (messages quote file names).
        stderr.print(Text.assemble(("error: ", "bold red"), exc.message), soft_wrap=True)
        if exc.hint:
            stderr.print(Text(f"hint: {exc.hint}", style="dim"), soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    except click.exceptions.Abort:
        stderr.print("aborted")
        sys.exit(130)
    sys.exit(int(result) if isinstance(result, int) else 0)
