"""The `lineage` command line: parse, call one library function, render. Nothing else.

Exit codes (a contract; see docs/exit-codes.md):
  0 ran (and the verdict matches --expect if given)   1 verdict contradicts --expect
  2 usage error   3 inconclusive while --expect was given   4 unreadable or invalid input
  5 signature or integrity failure
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from verifier import __version__
from verifier.errors import ExitCode, LineageError, UsageError
from verifier.render import make_console

if TYPE_CHECKING:
    from verifier.model_cache import ModelCache
    from verifier.signing import PrivateKey

#: the command line's parse errors (a missing argument, an unknown option): click's
#: ``ClickException``, found through typer because typer 0.2x carries its own copy of click,
#: whose errors are not click's classes (catching click's let them through as tracebacks)
PARSE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _alpha(value: float) -> float:
    """``--alpha``: a significance level, in (0, 0.5] (said in words: a bound of 1e-300 was
    printed as 300 decimal digits)."""
    if not 0.0 < value <= 0.5:
        raise typer.BadParameter("must be above 0 and at most 0.5")
    return value


def _path(value: str | Path) -> Path:
    """A path option that lineage writes to: an empty one (``--out ""``, a variable left unset)
    would be read as the current folder and fill it, so it is a usage error. A default arrives
    already a ``Path``."""
    if isinstance(value, str) and not value.strip():
        raise typer.BadParameter("is empty; name a folder or file to write to")
    return Path(value)


def _written(*names: str, **kwargs: Any) -> Any:
    """``typer.Option`` for a path lineage writes to (a file or a folder): parsed by ``_path``,
    shown as ``<path>`` like typer's own path options."""
    return typer.Option(*names, parser=_path, metavar="<path>", **kwargs)


EXIT_CODES_HELP = (
    "Exit codes: 0 ran (verdict matches --expect if given); 1 verdict contradicts --expect; "
    "2 usage error; 3 inconclusive while --expect was given; 4 unreadable or invalid input; "
    "5 signature or integrity failure; 70 internal error (a bug)."
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

# Styles only on a terminal; plain text under NO_COLOR (see verifier.render.make_console).
stdout = make_console()
stderr = make_console(stderr=True)


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


def _progress(enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        # off unless stderr is a terminal: elsewhere rich draws nothing but ends with a blank
        # line, which made every error two lines
        disable=not enabled or not stderr.is_terminal,
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
        Path | None, _written("--output", "-o", help="Also write the report JSON here.")
    ] = None,
    expect: Annotated[
        Expect | None, typer.Option("--expect", help="Gate on the verdict (see exit codes).")
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Significance level for 'derived' (above 0, at "
                            "most 0.5).", callback=_alpha)
    ] = 1e-6,
    probes: Annotated[
        str | None,
        typer.Option("--probes", help="Comma-separated subset: hidden_alignment, "
                     "neuron_matching, head_matching, norm_drift, moe_upcycling, body_alignment "
                     "(short: embeddings, neurons, heads, drift, moe, body)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**64 - 1,
                                      help="Seed of the null draws.")] = 0,
    role_map: RoleMapOption = None,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Skip the sha256 of each file (faster).")
    ] = False,
    neuron_sample: Annotated[
        int, typer.Option("--neuron-sample", min=16, help="Base neurons per layer matched "
                          "against every candidate neuron; wider layers are sampled.")
    ] = 256,
    null_layers: Annotated[
        int, typer.Option("--null-layers", min=1, help="Candidate layers tested against their "
                          "own null draws (spread over the depth), dense and MoE layers each; "
                          "the rest are mapped only (MoE layers on their --moe-sample neurons, "
                          "unless --full).")
    ] = 8,
    moe_sample: Annotated[
        int, typer.Option("--moe-sample", min=64, help="Expert neurons per MoE layer tested "
                          "against null draws (wider layers are sampled). MoE layers without "
                          "null draws are matched on this sample only, unless --full; the "
                          "expert maps of layers with null draws cover every neuron.")
    ] = 2048,
    hidden_sample: Annotated[
        int, typer.Option("--hidden-sample", min=8, help="Hidden directions the probes compare "
                          "in wider dense models (a frame of the hidden space, the same kind "
                          "in the observed pair and every null draw).")
    ] = 128,
    full: Annotated[
        bool, typer.Option("--full", help="The exact, unreduced path: every hidden coordinate, "
                           "every base layer against every candidate layer (equal-depth "
                           "large models otherwise compare layer i with layer i), and an expert "
                           "map of every MoE layer.")
    ] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="Private key PEM: also write a signed attestation "
                     "beside --output (report.json -> report.sigstore.json)."),
    ] = None,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", help="Environment variable holding the --sign-key "
                     "passphrase (else prompted if the key is encrypted)."),
    ] = None,
    html: Annotated[
        Path | None,
        _written("--html", help="Also write the report as one self-contained HTML page."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        _written("--cache-dir", envvar="LINEAGE_CACHE_DIR",
                     help="Keep per-model work in this folder for later runs: each file's "
                     "sha256 (reused while the file's path, size, inode and modification and "
                     "change times are unchanged; verify-report always rehashes), layer statistics, a "
                     "base's power check and its side of the null draws (~340 MiB per base "
                     "at any width). The report is the same with it and without. "
                     "Single-process runs only."),
    ] = None,
) -> int:
    """Verify whether CANDIDATE was derived from BASE; print the verdict and the evidence.

    Exit codes: 0 ran (verdict matches --expect if given); 1 verdict contradicts --expect;
    3 inconclusive while --expect was given; 2 usage error; 4 unreadable or invalid input.
    """
    from backends import select
    from backends.distributed import join_group
    from verifier.architectures import load_role_map
    from verifier.files import check_outputs, files_read, write_output
    from verifier.probes import ALIASES, PROBES, resolve_probe
    from verifier.render import render_report
    from verifier.signing import bundle_path_for
    from verifier.verify import VerifyOptions
    from verifier.verify import verify as run_verify

    key = _sign_key_for_verify(sign_key, passphrase_env, output, no_hash)
    # never over a file the run reads: the models' files, the signing key, the role map
    read = [*files_read(base), *files_read(candidate),
            *(p for p in (sign_key, role_map) if p is not None)]
    outputs: dict[str, Path | None] = {"--output": output, "--html": html}
    check_outputs(outputs, read)  # first: a folder given as --output has no bundle name
    if key and output:
        check_outputs(outputs | {"the signed bundle": bundle_path_for(output)}, read)
    asked = [p.strip() for p in probes.split(",") if p.strip()] if probes is not None else []
    if probes is not None and not asked:  # "--probes ," ran every probe without a word
        raise UsageError(f"--probes {probes!r} names no probe; choose from {', '.join(PROBES)}")
    unknown = [p for p in asked if resolve_probe(p) is None]
    if unknown:
        raise UsageError(f"unknown probe(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(PROBES)} (or {', '.join(ALIASES)})")
    chosen = tuple(dict.fromkeys(str(resolve_probe(p)) for p in asked)) if asked else None
    chosen_backend, status = select(backend)
    shards = join_group(chosen_backend, status)
    options = VerifyOptions(alpha=alpha, probes=chosen, seed=seed, digest=not no_hash,
                            full=full, neuron_sample=neuron_sample, null_layers=null_layers,
                            moe_sample=moe_sample, hidden_sample=hidden_sample)
    rmap = load_role_map(role_map) if role_map else None
    cache = _model_cache(cache_dir, shards.distributed)
    compute = chosen_backend.compute(shards.local_rank)
    try:
        shards.require_same("arguments", json.dumps(
            [str(base), str(candidate), options.model_dump(mode="json"),
             None if rmap is None else rmap.model_dump(mode="json")], sort_keys=True))
        with _progress(enabled=shards.is_main) as progress:
            task = progress.add_task("verifying", total=None)

            def on_progress(stage: str, done: int, total: int) -> None:
                progress.update(task, description=stage, completed=done, total=total)

            report = run_verify(base, candidate, options, role_maps=(rmap, rmap),
                                progress=on_progress, compute=compute, shards=shards,
                                cache=cache)
    finally:
        shards.close()
    if not shards.is_main:
        return 0  # rank 0 writes and prints the report
    if cache is not None:
        _say_cache(cache)
    text = report.to_json()
    bundle = None
    if output is not None:
        write_output(output, text + "\n")
        if key is not None:
            bundle = _write_signed(output, (text + "\n").encode("utf-8"), key)
    if html is not None:
        from verifier.html_report import render_html, signed_by_this_run, write_html

        signature = None if bundle is None else signed_by_this_run(bundle)
        write_html(html, render_html(report, signature))
    if format is OutputFormat.json:
        sys.stdout.write(text + "\n")
    else:
        render_report(report, stdout)
    return int(expectation_exit_code(report.verdict, expect))


def _model_cache(directory: Path | None, distributed: bool) -> ModelCache | None:
    """The ``--cache-dir`` cache, made ready before any work: a folder that can't be made is a
    usage error now, not a lost verification later. Ranks of a multi-device run would each
    find or miss entries at their own pace and could then disagree on which collective steps
    to take, so they run without it (and say so)."""
    from verifier.model_cache import ModelCache

    if directory is None:
        return None
    if distributed:
        stderr.print(Text("warning: --cache-dir is ignored in multi-device runs"), soft_wrap=True)
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--cache-dir {directory}: cannot use it as a folder: "
                         f"{exc.strerror or exc}") from exc
    return ModelCache(directory)


def _say_cache(cache: ModelCache) -> None:
    """One line on stderr: what the cache spared this run, and whether it could keep the rest."""
    c = cache.counts
    line = (f"cache: {c.file_hits} file digest(s) reused, {c.files_hashed} hashed; layer "
            f"statistics {c.stats_hits} reused, {c.stats_computed} computed; power check "
            f"{c.power_hits} reused, {c.power_computed} computed; the base's side of the null "
            f"draws {c.draws_hits} reused, {c.draws_computed} computed")
    stderr.print(Text(line, style="dim"), soft_wrap=True)
    if cache.write_error is not None:
        stderr.print(Text(f"warning: cache not written: {cache.write_error}"), soft_wrap=True)


@app.command()
def render(
    report: Annotated[Path, typer.Argument(help="A report JSON written by `lineage verify`.")],
    output: Annotated[
        Path | None,
        _written("--output", "-o", help="The HTML file (default: REPORT with .html)."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Public key PEM: verify the bundle beside the report "
                     "(report.json -> report.sigstore.json) and show the result."),
    ] = None,
) -> int:
    """Render a report as one self-contained HTML page (plots inline, nothing loaded).

    Exit codes: 0 written; 4 the report is missing or not a lineage report; 5 --key was given
    and the bundle beside the report does not verify (the page is written and says so).
    """
    from verifier.errors import InputError, IntegrityError
    from verifier.files import check_outputs
    from verifier.html_report import load_report, render_html, signature_status, write_html
    from verifier.signing import bundle_path_for

    if not report.name or report.is_dir():
        raise InputError(f"{report}: is a folder; name a report JSON")
    target = output or report.with_suffix(".html")
    # never over the report it renders, the bundle beside it or the key that checks it
    check_outputs({"--output": target},
                  [report, *((key, bundle_path_for(report)) if key is not None else ())])
    rep = load_report(report)
    status = signature_status(report, rep, key)
    write_html(target, render_html(rep, status))
    stdout.print(Text(f"wrote {target}"), soft_wrap=True)
    if status.state == "failed":
        raise IntegrityError(status.message)
    return 0


@app.command()
def demo(
    out: Annotated[Path, _written("--out", help="Folder for the models and reports.")] = Path(
        "lineage-demo"
    ),
) -> int:
    """Derive tiny models of known lineage from a shipped base, verify each, show the verdicts.

    Exits 0 when every verdict matches the truth, 1 otherwise.
    """
    from verifier.demo import run_demo
    from verifier.errors import InputError
    from verifier.render import render_demo

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; the demo needs a folder for its models "
                         "and reports")
    with stderr.status("starting") as status:
        try:
            rows = run_demo(out, on_stage=lambda msg: status.update(msg))
        except OSError as exc:  # the folder cannot be made or written (a read-only place)
            raise InputError(f"--out {out}: cannot write: {exc.strerror or exc}") from exc
    render_demo(rows, stdout)
    return 0 if all(r.correct for r in rows) else int(ExitCode.EXPECTATION_FAILED)


# --- signing: keygen, sign, verify-report (see docs/signing.md) --------------------------------

PassphraseEnvOption = Annotated[
    str | None,
    typer.Option("--passphrase-env", help="Name of an environment variable holding the key's "
                 "passphrase (never the passphrase itself)."),
]


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _load_signing_key(path: Path, passphrase_env: str | None) -> PrivateKey:
    """A private key from PEM; encrypted ones take the passphrase from the env var or a prompt."""
    from verifier.errors import InputError
    from verifier.signing import is_encrypted, load_private_key, passphrase_from_env

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read private key: {exc.strerror or exc}") from exc
    passphrase = None
    if is_encrypted(pem):
        if passphrase_env:
            passphrase = passphrase_from_env(passphrase_env)
        elif _stdin_is_tty():
            passphrase = typer.prompt(f"Passphrase for {path}", hide_input=True).encode("utf-8")
        else:
            raise UsageError(f"{path}: the private key is encrypted and no passphrase was given",
                             hint="pass --passphrase-env VAR naming a variable that holds it")
    return load_private_key(pem, passphrase, name=str(path))


def _sign_key_for_verify(
    sign_key: Path | None, passphrase_env: str | None, output: Path | None, no_hash: bool
) -> PrivateKey | None:
    """`verify --sign-key`: checked and loaded before any model is read."""
    if sign_key is None:
        if passphrase_env:
            raise UsageError("--passphrase-env is for --sign-key; no --sign-key was given")
        return None
    if output is None:
        raise UsageError("--sign-key needs --output: the attestation is written beside the report")
    if no_hash:
        raise UsageError("--sign-key needs the sha256 of every model file; drop --no-hash")
    return _load_signing_key(sign_key, passphrase_env)


def _write_signed(report_path: Path, report_bytes: bytes, key: PrivateKey) -> Path:
    """Sign the report's exact bytes and write the bundle beside it; say where, on stderr."""
    from verifier.signing import bundle_path_for, key_id, sign_report, write_bundle

    target = bundle_path_for(report_path)
    write_bundle(target, sign_report(report_bytes, key))
    stderr.print(Text(f"signed: {target} (key {key_id(key)})"), soft_wrap=True)
    return target


class KeyAlgorithmChoice(str, Enum):
    ecdsa_p256 = "ecdsa-p256"
    ed25519 = "ed25519"


@app.command()
def keygen(
    out: Annotated[Path, _written("--out", help="Folder for the key pair.")],
    algorithm: Annotated[
        KeyAlgorithmChoice, typer.Option("--algorithm", help="ecdsa-p256 or ed25519.")
    ] = KeyAlgorithmChoice.ecdsa_p256,
    name: Annotated[
        str, typer.Option("--name", help="File stem: NAME.key.pem and NAME.pub.pem.")
    ] = "lineage",
    passphrase_env: PassphraseEnvOption = None,
    passphrase_prompt: Annotated[
        bool, typer.Option("--passphrase-prompt", help="Encrypt the private key with a "
                           "passphrase typed twice at a prompt.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing key pair of that name.")
    ] = False,
) -> None:
    """Generate a signing key pair: private key PEM (mode 0600) and public key PEM beside it.

    Prints the file names and the key id (hex sha256 of the public key's DER), never key
    material.
    """
    from verifier.signing import generate_key, passphrase_from_env, write_key_pair

    if passphrase_env and passphrase_prompt:
        raise UsageError("give --passphrase-env or --passphrase-prompt, not both")
    passphrase = None
    if passphrase_env:
        passphrase = passphrase_from_env(passphrase_env)
    elif passphrase_prompt:
        if not _stdin_is_tty():
            raise UsageError("--passphrase-prompt needs a terminal",
                             hint="use --passphrase-env VAR in scripts")
        passphrase = typer.prompt("Passphrase", hide_input=True,
                                  confirmation_prompt=True).encode("utf-8")
    pair = write_key_pair(out, generate_key(algorithm.value), passphrase=passphrase, name=name,
                          overwrite=force)
    protection = "encrypted" if pair.encrypted else "unencrypted"
    stdout.print(Text(f"private key: {pair.private} ({pair.algorithm.value}, {protection}, "
                      "mode 0600)"), soft_wrap=True)
    stdout.print(Text(f"public key:  {pair.public}"), soft_wrap=True)
    stdout.print(Text(f"key id:      {pair.key_id}"), soft_wrap=True)


@app.command()
def sign(
    report: Annotated[Path, typer.Argument(help="A report JSON written by `lineage verify`.")],
    key: Annotated[Path, typer.Option("--key", help="Private key PEM.")],
    out: Annotated[
        Path | None,
        _written("--out", help="Bundle path (default: REPORT with .sigstore.json)."),
    ] = None,
    passphrase_env: PassphraseEnvOption = None,
) -> None:
    """Sign a report: an in-toto attestation in a Sigstore bundle beside it.

    The subjects are the sha256 recorded in the report for every file of both models; the
    models are not re-read. A report written with --no-hash cannot be signed.
    """
    from verifier.errors import InputError
    from verifier.files import check_outputs
    from verifier.signing import bundle_path_for, key_id, sign_report, write_bundle

    signing_key = _load_signing_key(key, passphrase_env)
    try:
        data = report.read_bytes()
    except OSError as exc:
        raise InputError(f"{report}: cannot read report: {exc.strerror or exc}") from exc
    target = out or bundle_path_for(report)
    check_outputs({"--out": target}, [report, key])
    write_bundle(target, sign_report(data, signing_key))
    stdout.print(Text(f"signed: {target} (key {key_id(signing_key)})"), soft_wrap=True)


def _printable(text: str) -> str:
    """``text`` with newlines, terminal escapes and other control characters written as
    escapes: a signed report's strings are the signer's, and printed raw they could draw a
    line this command never wrote (a forged "files: ... hold exactly the signed weight
    files")."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@app.command("verify-report")
def verify_report(
    bundle: Annotated[Path, typer.Argument(help="A .sigstore.json bundle (or DSSE envelope).")],
    key: Annotated[Path, typer.Option("--key", help="The pinned public key PEM.")],
    models: Annotated[
        tuple[str, str] | None,
        typer.Option("--models", help="BASE CANDIDATE: rehash both and require the exact "
                     "weight-file set the report names.", show_default=False),
    ] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = (
        OutputFormat.text
    ),
) -> None:
    """Verify a signed report offline against a pinned public key (exit 5 on any failure).

    Checks the signature, the in-toto statement and its subjects; with --models, also that the
    two folders hold exactly the signed files (weights, and the config and tokenizer read
    beside them).
    """
    from verifier.errors import InputError
    from verifier.signing import load_public_key, verify_bundle

    pinned = load_public_key(key)
    try:
        data = bundle.read_bytes()
    except OSError as exc:
        raise InputError(f"{bundle}: cannot read bundle: {exc.strerror or exc}") from exc
    result = verify_bundle(data, pinned, models=models)
    rep = result.report
    sides = {"base": rep.models.base, "candidate": rep.models.candidate}
    if format is OutputFormat.json:
        summary = {
            "verified": True, "key_id": result.key_id, "payload_type": result.payload_type,
            "predicate_type": result.predicate_type, "verdict": rep.verdict,
            "p_value": rep.p_value, "alpha": rep.alpha,
            "models": {side: {"path": info.path, "files": len(info.files)}
                       for side, info in sides.items()},
            "files_checked": None if result.models is None else {
                side: {"path": str(check.path), "files": list(check.files),
                       "unread": list(check.unread)}
                for side, check in zip(sides, result.models, strict=True)},
        }
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    p = "n/a" if rep.p_value is None else f"{rep.p_value:.3g}"
    lines = [
        f"verified:  signature by key {result.key_id}",
        f"statement: in-toto Statement v1, predicateType {result.predicate_type}",
        f"verdict:   {rep.verdict} (p = {p}, alpha = {rep.alpha:g}), as claimed by the signer",
    ]
    for side, info in sides.items():
        n = len(info.files)
        beside = "".join(f" + {_printable(f.path)}" for f in info.side_files)
        lines.append(f"{side + ':':<10} {_printable(info.path)} ({n} weight "
                     f"file{'' if n == 1 else 's'}{beside}, {_printable(info.architecture)})")
    if result.models is None:
        lines.append("files:     not checked (pass --models BASE CANDIDATE to rehash them)")
    else:
        base_check, cand_check = result.models
        lines.append(f"files:     {base_check.path} and {cand_check.path} hold exactly the "
                     "signed files")
        for side, check in zip(sides, result.models, strict=True):
            if check.unread:
                lines.append(f"note:      {side} also holds "
                             f"{_printable(', '.join(check.unread))}, which "
                             "lineage does not read: not covered by the signature")
    for line in lines:
        stdout.print(Text(line), soft_wrap=True)


@app.command()
def backends(
    format: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = (
        OutputFormat.text
    ),
) -> None:
    """Which compute backends (cpu, cuda, npu) are available here, and why not."""
    from backends import statuses
    from verifier.render import render_backends

    items = statuses()
    if format is OutputFormat.json:
        sys.stdout.write(json.dumps([s.model_dump(mode="json") for s in items], indent=2) + "\n")
    else:
        render_backends(items, stdout)


@contextmanager
def _ended_by_closed_pipe() -> Iterator[None]:
    """Writing to a pipe whose reader has quit (``lineage verify ... | head``) ends lineage by
    SIGPIPE, exit status 141 in a shell, as it ends cat or grep. Python ignores SIGPIPE, and
    typer turns the write's EPIPE error into exit 1, the code that says a verdict contradicts
    --expect. Output files are renamed into place before anything is printed, so what the run
    wrote is whole. The previous handler comes back afterwards (for in-process callers), once
    what is buffered for stdout has been written under this one."""
    if not hasattr(signal, "SIGPIPE"):  # Windows has no SIGPIPE
        yield
        return
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        finally:
            signal.signal(signal.SIGPIPE, previous)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning lineage errors into one line and an exit code."""
    from verifier.allocator import tune_allocator

    tune_allocator()  # process-wide, so here and not in the library (its docstring)
    try:
        with _ended_by_closed_pipe():
            result = app(args=argv, standalone_mode=False)
    except LineageError as exc:
        if _State.verbose:
            raise
        # One line each, never wrapped, and never parsed as markup (messages quote file names).
        stderr.print(Text.assemble(("error: ", "bold red"), exc.message), soft_wrap=True)
        if exc.hint:
            stderr.print(Text(f"hint: {exc.hint}", style="dim"), soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except PARSE_ERROR as exc:
        exc.show()  # type: ignore[attr-defined]  # click's usage message and hint
        sys.exit(int(ExitCode.USAGE))
    except typer.Abort:
        stderr.print("aborted")
        sys.exit(130)
    except Exception as exc:  # a bug: said in one line, and an exit code of its own
        if _State.verbose:
            raise
        stderr.print(Text.assemble(("error: ", "bold red"),
                                   f"internal error: {type(exc).__name__}: {exc}"), soft_wrap=True)
        stderr.print(Text("hint: a bug in lineage; `lineage --verbose ...` prints the traceback "
                          "to report", style="dim"), soft_wrap=True)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(int(result) if isinstance(result, int) else 0)
