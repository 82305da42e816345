"""Verify N bases against M candidates; write one report per pair and a summary table.

A dispute or an audit rarely asks about one pair: which of these candidate releases derive from
which of these bases? Every pair is verified (``verifier.verify.verify``), and the work that
depends on one model only, the sha256 of each of its files, its per-layer norm statistics, a
base's power check and, on a frame of a wide model's hidden space, the base's side of the null
draws (``verifier.kept_draws``), goes through one ``ModelCache``: each model is hashed and its
statistics read once, N + M times in all rather than N x M times (2 N M model-hashings without
the cache), and each base's power check and draws run once, not M times (the reports are the
same). Without ``--cache-dir`` the cache lives in a temporary folder for the run. The script prints
what it measured: per model, the time and bytes of that one pass; then what the cache did over
the whole matrix, next to what the same matrix costs without it.

Writes to ``--out``: ``summary.csv`` (one row per pair), ``summary.html`` (bases by candidates,
self-contained), ``reports/B__C.json`` per pair and, with ``--html``, ``reports/B__C.html``.
With ``--cache-dir`` the per-model results persist between runs (invalidated when a file
changes). A model that cannot be opened is said on stderr and its pairs are marked "error" in
the summaries; the others are verified, and the script then exits 4. Usage::

    python scripts/verify_matrix.py --bases A B --candidates C D E --out matrix/ \\
        [--cache-dir DIR] [--html] [--compare] [--alpha 1e-6] [--probes ...] [--null-layers 8]
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from verifier.errors import ExitCode, LineageError, UsageError
from verifier.files import write_atomic
from verifier.model import open_model
from verifier.model_cache import ModelCache
from verifier.probes import resolve_probe
from verifier.render import format_p
from verifier.report import Report
from verifier.verify import VerifyOptions, model_layer_stats, verify


@dataclass(frozen=True)
class ModelCost:
    """One model's one-time work: files, bytes hashed and seconds (hashing, statistics)."""

    name: str
    files: int
    bytes_hashed: int
    hash_seconds: float
    stats_seconds: float


@dataclass(frozen=True)
class PairRow:
    """One pair's outcome: its report, or (``report`` None) why a model of it could not be
    verified."""

    base: str
    candidate: str
    report: Report | None
    path: Path
    seconds: float
    error: str | None = None


def _key(path: str) -> str:
    """One model, however it is named: the resolved path (a model listed as a base and as a
    candidate, or under two labels, is warmed once)."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _names(paths: list[str]) -> list[str]:
    """Short, file-name-safe, unique labels for the models (folder or file names)."""
    out: list[str] = []
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(p.rstrip("/")).name or p) or "model"
        name, k = stem, 2
        while name in out:
            name, k = f"{stem}-{k}", k + 1
        out.append(name)
    return out


def warm(path: str, name: str, cache: ModelCache, digest: bool) -> ModelCost:
    """Hash the model's files and read its layer statistics into ``cache``, timing each."""
    with open_model(path) as model:
        before = cache.counts.bytes_hashed
        t0 = time.perf_counter()
        records = cache.describe_files(model.reader.root, model.reader.files, digest=digest)
        t1 = time.perf_counter()
        model_layer_stats(model, cache=cache)
        t2 = time.perf_counter()
    return ModelCost(name, len(records), cache.counts.bytes_hashed - before, t1 - t0, t2 - t1)


def summary_csv(rows: list[PairRow], out: Path) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["base", "candidate", "verdict", "p_value", "alpha", "mapped_layers",
                     "candidate_layers", "report"])
    for r in rows:
        if r.report is None:
            writer.writerow([r.base, r.candidate, "error", "", "", "", "", r.error])
            continue
        mapped = sum(e.base_layer is not None for e in r.report.layer_map)
        writer.writerow([r.base, r.candidate, r.report.verdict,
                         "" if r.report.p_value is None else f"{r.report.p_value:.6g}",
                         f"{r.report.alpha:g}", mapped, r.report.models.candidate.num_layers,
                         r.path.relative_to(out).as_posix()])
    return buf.getvalue()


_COLOURS = {"derived": "#f6d5d3", "independent": "#d5ecd9", "inconclusive": "#f7e6c4"}


def summary_html(rows: list[PairRow], bases: list[str], candidates: list[str], out: Path,
                 pages: bool) -> str:
    """Bases (rows) by candidates (columns): verdict and p-value per cell, linked to the pair's
    report. Self-contained; every name is escaped."""
    e = html.escape
    cells = {(r.base, r.candidate): r for r in rows}
    head = "".join(f"<th>{e(c)}</th>" for c in candidates)
    body = []
    for b in bases:
        tds = []
        for c in candidates:
            r = cells[(b, c)]
            if r.report is None:
                tds.append(f'<td style="background:#e0e0e0">error<br><small>{e(r.error or "")}'
                           "</small></td>")
                continue
            link = r.path.with_suffix(".html" if pages else ".json").relative_to(out).as_posix()
            tds.append(f'<td style="background:{_COLOURS[r.report.verdict]}">'
                       f'<a href="{e(link)}">{e(r.report.verdict)}</a><br>'
                       f"<small>p = {e(format_p(r.report.p_value))}</small></td>")
        body.append(f"<tr><th>{e(b)}</th>{''.join(tds)}</tr>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>lineage: verification matrix</title><style>body{font-family:system-ui,"
            "sans-serif;margin:1.5rem}table{border-collapse:collapse}th,td{border:1px solid "
            "#ccc;padding:.4rem .7rem;text-align:center}</style></head><body>"
            "<h1>Verification matrix</h1><p>Rows: bases; columns: candidates. Each cell: the "
            "verdict for <em>candidate derived from base</em> and its combined p-value.</p>"
            f"<table><tr><th>base \\ candidate</th>{head}</tr>{''.join(body)}</table>"
            "</body></html>\n")


def run(args: argparse.Namespace, scratch: Path) -> int:
    """The matrix; ``scratch``: the cache's folder when ``--cache-dir`` names none (a frame's
    null draws of a base are kept only in a folder, ``verifier.kept_draws``)."""
    asked = [p.strip() for p in args.probes.split(",") if p.strip()] if args.probes else []
    unknown = [p for p in asked if resolve_probe(p) is None]
    if unknown or (args.probes is not None and not asked):
        raise UsageError(f"--probes {args.probes!r}: unknown or no probe(s)")
    probes = tuple(dict.fromkeys(str(resolve_probe(p)) for p in asked)) if asked else None
    try:
        options = VerifyOptions(alpha=args.alpha, probes=probes, seed=args.seed,
                                null_layers=args.null_layers, digest=not args.no_hash)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; name a folder for the reports")
    cache = ModelCache(args.cache_dir or scratch)
    base_names, cand_names = _names(args.bases), _names(args.candidates)
    key_of = {name: _key(path) for name, path in zip(base_names, args.bases, strict=True)}
    key_of_cand = {name: _key(path) for name, path in zip(cand_names, args.candidates,
                                                         strict=True)}

    print(f"per-model work, once each ({len(args.bases)} bases, {len(args.candidates)} "
          "candidates):")
    costs: dict[str, ModelCost] = {}
    broken: dict[str, str] = {}  # a model that cannot be opened: its pairs are skipped
    for name, path in [*zip(base_names, args.bases, strict=True),
                       *zip(cand_names, args.candidates, strict=True)]:
        if _key(path) in costs or _key(path) in broken:
            continue
        try:
            cost = warm(path, name, cache, digest=not args.no_hash)
        except LineageError as exc:
            broken[_key(path)] = exc.message
            print(f"  {name:<28} cannot be verified: {exc.message}", file=sys.stderr)
            continue
        costs[_key(path)] = cost
        print(f"  {cost.name:<28} {cost.files:>3} files  {cost.bytes_hashed / 2**20:9.1f} MiB "
              f"hashed in {1e3 * cost.hash_seconds:8.1f} ms  layer stats "
              f"{1e3 * cost.stats_seconds:8.1f} ms")
    warm_counts = (cache.counts.files_hashed, cache.counts.bytes_hashed,
                   cache.counts.stats_computed)

    rows: list[PairRow] = []
    t_matrix = time.perf_counter()
    for b, bpath in zip(base_names, args.bases, strict=True):
        for c, cpath in zip(cand_names, args.candidates, strict=True):
            target = out / "reports" / f"{b}__{c}.json"
            why = broken.get(_key(bpath)) or broken.get(_key(cpath))
            if why is None:
                try:
                    t0 = time.perf_counter()
                    report = verify(bpath, cpath, options, cache=cache)
                except LineageError as exc:
                    why = exc.message
            if why is not None:
                rows.append(PairRow(b, c, None, target, 0.0, error=why))
                print(f"  {b} -> {c}: error: {why}")
                continue
            seconds = time.perf_counter() - t0
            write_atomic(target, report.to_json() + "\n")
            if args.html:
                from verifier.html_report import render_html

                write_atomic(target.with_suffix(".html"), render_html(report))
            rows.append(PairRow(b, c, report, target, seconds))
            print(f"  {b} -> {c}: {report.verdict} (p = {format_p(report.p_value)}), "
                  f"{seconds:.1f} s")
    matrix_seconds = time.perf_counter() - t_matrix
    write_atomic(out / "summary.csv", summary_csv(rows, out))
    write_atomic(out / "summary.html",
                 summary_html(rows, base_names, cand_names, out, pages=args.html))

    n, m, pairs = len(args.bases), len(args.candidates), len(rows)
    uncached_bytes = sum(costs[key_of[b]].bytes_hashed + costs[key_of_cand[c]].bytes_hashed
                         for b in base_names for c in cand_names
                         if key_of[b] in costs and key_of_cand[c] in costs)
    c = cache.counts
    print(f"\n{pairs} verifications of {n} bases x {m} candidates ({len(costs)} distinct models)")
    print(f"  with the cache:    {c.files_hashed} files hashed ({c.bytes_hashed / 2**20:.1f} "
          f"MiB), layer statistics read {c.stats_computed} times "
          f"(all before the matrix: {warm_counts[0]} files, {warm_counts[2]} reads); reused "
          f"{c.file_hits} digests and {c.stats_hits} statistics")
    print(f"  power checks: {c.power_computed} run, {c.power_hits} reused (one per base and "
          "set of shared tokens)")
    print(f"  the bases' side of the null draws on a frame: {c.draws_computed} computed, "
          f"{c.draws_hits} reused")
    print(f"  without the cache: {2 * pairs} model hashings ({uncached_bytes / 2**20:.1f} MiB), "
          f"{2 * pairs} layer-statistics reads (2 per pair) and {pairs} power checks")
    print(f"  hashing ratio without / with: {uncached_bytes / max(c.bytes_hashed, 1):.1f}x "
          f"(2NM / (N+M) = {2 * n * m / max(n + m, 1):.1f} for distinct models)")
    warm_seconds = sum(x.hash_seconds + x.stats_seconds for x in costs.values())
    print(f"  wall time: per-model work {warm_seconds:.2f} s, then {matrix_seconds:.2f} s for "
          f"the {pairs} verifications")
    if args.compare:
        t0 = time.perf_counter()
        for bpath in args.bases:
            for cpath in args.candidates:
                if _key(bpath) not in broken and _key(cpath) not in broken:
                    verify(bpath, cpath, options)
        plain = time.perf_counter() - t0
        print(f"  measured without the cache: {plain:.2f} s for the same {pairs} verifications "
              f"(with: {warm_seconds + matrix_seconds:.2f} s including the per-model work)")
    if cache.write_error is not None:
        print(f"warning: cache not written: {cache.write_error}", file=sys.stderr)
    failed = [r for r in rows if r.report is None]
    print(f"wrote {out / 'summary.csv'}, {out / 'summary.html'} and {pairs - len(failed)} "
          "reports")
    if failed:
        print(f"error: {len(failed)} of {pairs} pairs could not be verified (see summary.csv)",
              file=sys.stderr)
        return int(ExitCode.INVALID_INPUT)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bases", nargs="+", required=True, help="base models")
    parser.add_argument("--candidates", nargs="+", required=True, help="candidate models")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep per-model digests, statistics and power checks here "
                        "between runs")
    parser.add_argument("--html", action="store_true", help="also write each pair's HTML page")
    parser.add_argument("--alpha", type=float, default=1e-6)
    parser.add_argument("--probes", default=None, help="comma-separated subset, as in verify")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--null-layers", type=int, default=8)
    parser.add_argument("--no-hash", action="store_true", help="skip sha256 (no file digests)")
    parser.add_argument("--compare", action="store_true",
                        help="run the matrix again without the cache and print both times")
    args = parser.parse_args(argv)
    from verifier.allocator import tune_allocator

    tune_allocator()  # as the command line does: many verifications, one process
    try:
        with tempfile.TemporaryDirectory(prefix="lineage-matrix-") as scratch:
            return run(args, Path(scratch))
    except LineageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
