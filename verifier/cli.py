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
from verifier.errors import ExitCode, LineageError

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
