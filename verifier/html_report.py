"""A report as one self-contained HTML page: the verdict, the evidence and the plots behind it.

A reader who is not at a terminal (a release page, an audit file, a browser on another host)
gets the same report as ``--format text`` plus what a table cannot show: where each candidate
layer came from, how the weight norms of both models run with depth, and, for a mixture of
experts, which base neurons each expert holds. The page loads nothing: no scripts, no fonts, no
style sheets from elsewhere; plots are inline SVG drawn with matplotlib's object API (no pyplot,
so no process-wide backend is switched) and every piece of report text is HTML-escaped, since
paths, warnings and file names come from the models being judged.

Only what the report stores is drawn. The full base-by-candidate layer similarity matrix that
``verify`` computes is not part of the report schema, so the layer plot fills the cells the
report does hold (the per-layer statistics of each probe, at the base layer they were tested
against) and draws the layer map over them. The expert clustering matrix is likewise not
stored; it is recomputed here from the experts' ``base_neurons`` with the probe's own
definition (``|B_e & B_f| / min(|B_e|, |B_f|)``), which is exact for what the report records.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from verifier.errors import InputError, IntegrityError, LineageError
from verifier.probes.base import spread
from verifier.probes.moe_upcycling import NOT_MATCHED
from verifier.render import VERDICT_MEANING, format_p, human_bytes, stacks_text
from verifier.report import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from verifier.probes.base import ProbeResult
    from verifier.probes.moe_upcycling import ExpertEntry

#: the probes whose per-layer values fill the layer plot, most informative first
_LAYER_PROBES = ("neuron_matching", "moe_upcycling", "head_matching")
#: at most this many MoE layers get their own clustering matrix (spread over the depth)
_MAX_CLUSTER_PANELS = 8
#: base-neuron slices in the expert map (wider FFNs are binned)
_MAX_SLICES = 64
_BASE_COLOUR, _CAND_COLOUR = "#1f5fa8", "#d9661f"
_VERDICT_COLOUR = {"derived": "#b3261e", "independent": "#1e7b34", "inconclusive": "#a86b00"}

SignatureState = Literal["absent", "unverified", "verified", "failed", "signed"]


@dataclass(frozen=True)
class SignatureStatus:
    """What the page says about a signed bundle: ``state`` and a one-line explanation."""

    state: SignatureState
    message: str


# --- reading and checking ----------------------------------------------------------------------


def load_report(path: Path) -> Report:
    """The report at ``path``; ``InputError`` (exit 4) with one line when the file is missing
    or is not a lineage report (not JSON, another schema, unknown keys)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read report: {exc.strerror or exc}") from exc
    try:
        return Report.from_json(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        more = f"; {len(errors) - 1} more" if len(errors) > 1 else ""
        raise InputError(f"{path}: not a lineage report ({where}: {first['msg']}{more})",
                         hint="pass a report JSON written by `lineage verify --output`") from exc


def signature_status(report_path: Path, report: Report, key: Path | None) -> SignatureStatus:
    """The state of the bundle beside ``report_path`` (``report.json`` ->
    ``report.sigstore.json``).

    Without a key the page can only say that a bundle exists: a signature is worth something
    only against a public key the reader chose. With a key, the bundle is verified by
    ``verifier.signing.verify_bundle`` and its signed report must equal ``report``, so a valid
    bundle for another report is not passed off as this one's. A failure is returned, not
    raised, so the page can show it; the CLI then exits 5.
    """
    from verifier.signing import bundle_path_for, load_public_key, verify_bundle

    # an unreadable or invalid key is the user's input error (exit 4), raised before anything
    # (``load_public_key`` calls an invalid key an integrity failure, as verify-report's pinned
    # key; here no page is written, and exit 5 promises one)
    try:
        pinned = load_public_key(key) if key is not None else None
    except IntegrityError as exc:
        raise InputError(exc.message, hint=exc.hint) from exc
    bundle = bundle_path_for(report_path)
    if not bundle.is_file():
        if pinned is not None:
            return SignatureStatus("failed", f"no bundle {bundle.name} beside the report to "
                                   "verify with the given key")
        return SignatureStatus("absent", "not signed: no bundle beside the report")
    if pinned is None:
        return SignatureStatus("unverified",
                               f"bundle {bundle.name} present, not verified (no key given)")
    try:
        result = verify_bundle(bundle.read_bytes(), pinned)
    except IntegrityError as exc:
        return SignatureStatus("failed", f"bundle {bundle.name} does not verify: {exc.message}")
    except OSError as exc:
        return SignatureStatus("failed", f"bundle {bundle.name} cannot be read: "
                               f"{exc.strerror or exc}")
    if result.report != report:
        return SignatureStatus("failed", f"bundle {bundle.name} has a valid signature by key "
                               f"{result.key_id}, but it signs a different report")
    return SignatureStatus("verified", f"bundle {bundle.name}: signature verified with key "
                           f"{result.key_id}; it signs exactly this report")


def signed_by_this_run(bundle: Path) -> SignatureStatus:
    """The state `verify --sign-key --html` reports: it wrote and signed the bundle itself."""
    return SignatureStatus("signed", f"signed by this run: bundle {bundle.name} beside the "
                           "report")


def write_html(path: Path, page: str) -> None:
    """Write the page atomically (temporary sibling, then rename)."""
    from verifier.files import write_atomic

    try:
        write_atomic(path, page)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc


# --- figures -----------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _svg(fig: Figure, salt: str) -> str:
    """The figure as an inline ``<svg>`` element. Text stays text (searchable, scalable); the
    hash salt differs per figure so the element ids of several inline SVGs never collide, and is
    fixed so the same report gives the same page."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"lineage-{salt}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    if start < 0:  # pragma: no cover - matplotlib always writes one
        raise LineageError("matplotlib wrote no <svg> element")
    return text[start:]


def _z(value: float, mean: float | None, std: float | None) -> float | None:
    if mean is None or std is None or std <= 0 or not math.isfinite(value):
        return None
    return (value - mean) / std


def _layer_probe(report: Report) -> ProbeResult | None:
    by_name = {p.name: p for p in report.probes}
    for name in _LAYER_PROBES:
        probe = by_name.get(name)
        if probe is not None and any(lv.layer >= 0 and lv.base_layer is not None
                                     for lv in probe.layers):
            return probe
    return None


def layer_figure(report: Report) -> Figure:
    """Base layers (rows) by candidate layers (columns): the z-score of the most informative
    per-layer probe in each cell the report holds, blank elsewhere, with the layer map drawn as
    the alignment path (unmapped candidate layers marked above the grid)."""
    import numpy as np

    nb = report.models.base.num_layers
    nc = report.models.candidate.num_layers
    grid = np.full((max(nb, 1), max(nc, 1)), np.nan)
    probe = _layer_probe(report)
    label = f"{probe.name} z-score vs its null" if probe is not None else None
    if report.layer_similarity:
        # every compared pair's matched neuron similarity (the search the layer map came from)
        label = "matched neuron similarity"
        for a, row in enumerate(report.layer_similarity[:nb]):
            for j, v in enumerate(row[:nc]):
                if v is not None:
                    grid[a, j] = v
    elif probe is not None:
        for lv in probe.layers:
            z = _z(lv.statistic, lv.null_mean, lv.null_std)
            if lv.layer >= 0 and lv.base_layer is not None and z is not None \
                    and lv.base_layer < nb and lv.layer < nc:
                grid[lv.base_layer, lv.layer] = z
    width = min(12.0, max(6.5, 0.45 * nc + 3.0))
    height = min(10.0, max(3.8, 0.38 * nb + 1.8))
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.set_facecolor("#eeeeee")
    finite = grid[np.isfinite(grid)]
    if report.layer_similarity:
        vmin, vmax = 0.0, 1.0
    else:
        vmax = max(5.0, float(finite.max())) if finite.size else 5.0
        vmin = min(0.0, *finite.tolist()) if finite.size else 0.0
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    if label is not None:
        fig.colorbar(image, ax=ax, label=label)
    mapped = [(e.candidate_layer, e.base_layer) for e in report.layer_map
              if e.base_layer is not None]
    if mapped:
        xs, ys = zip(*mapped, strict=True)
        ax.plot(xs, ys, color="white", lw=3.5, zorder=2)
        ax.plot(xs, ys, color="#c0392b", lw=1.6, marker="o", ms=6, zorder=3,
                label="layer map (candidate -> base)")
    unmapped = [e.candidate_layer for e in report.layer_map if e.base_layer is None]
    if unmapped:
        ax.plot(unmapped, [-0.5] * len(unmapped), linestyle="none", marker="x", color="#555555",
                ms=8, clip_on=False, label="candidate layer mapped to no base layer")
    if nc <= 16 and nb <= 16:
        sims = {e.candidate_layer: e.similarity for e in report.layer_map}
        for j, a in mapped:
            s = sims.get(j)
            if s is not None:
                ax.annotate(f"{s:.2f}", (j, a), xytext=(0, -14), textcoords="offset points",
                            ha="center", fontsize=8, color="black",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                  "alpha": 0.85})
    ax.set_xlabel("candidate layer")
    ax.set_ylabel("base layer")
    ax.set_xticks(_ticks(nc))
    ax.set_yticks(_ticks(nb))
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(nb - 0.5, -0.5)
    if mapped or unmapped:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8,
                  frameon=False)
    ax.set_title("layer alignment")
    return fig


def _ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / 16))
    return list(range(0, n, step))


def evidence_figure(report: Report) -> Figure | None:
    """Per candidate layer and probe, ``-log10 p`` of that layer's test, with ``alpha`` drawn:
    where the evidence sits in depth. None when no probe has per-layer p-values."""
    series = []
    for probe in report.probes:
        pts = sorted((lv.layer, lv.p_value) for lv in probe.layers
                     if lv.layer >= 0 and lv.p_value is not None)
        if pts:
            series.append((probe.name, pts))
    if not series:
        return None
    fig = _figure(9.0, 3.8)
    ax = fig.add_subplot()
    for k, (name, pts) in enumerate(series):
        xs = [x for x, _ in pts]
        ys = [-math.log10(max(p, 1e-300)) for _, p in pts]
        ax.plot(xs, ys, marker="os^vD"[k % 5], lw=1.4, label=name)
    ax.axhline(-math.log10(report.alpha), color="#b3261e", ls="--", lw=1.0,
               label=f"alpha = {report.alpha:g}")
    ax.set_xlabel("candidate layer")
    ax.set_ylabel("-log10 p (per layer)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    ax.set_title("per-layer evidence")
    return fig


def _drift_roles(report: Report) -> list[str]:
    assert report.norm_drift is not None
    order = ("q", "k", "v", "o", "gate", "up", "down", "attn_norm", "mlp_norm")
    roles = {r.role for r in report.norm_drift.layers}
    return [r for r in order if r in roles] + sorted(roles - set(order))


def norm_profile_figure(report: Report) -> Figure | None:
    """Per role, the weight std of every base layer the report holds (by base layer) and of
    every candidate layer (by candidate layer): the two models' norm profiles side by side."""
    if report.norm_drift is None or not report.norm_drift.layers:
        return None
    roles = _drift_roles(report)
    ncols = min(4, len(roles))
    nrows = math.ceil(len(roles) / ncols)
    fig = _figure(2.6 * ncols + 0.6, 2.1 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    rows = report.norm_drift.layers
    for k, role in enumerate(roles):
        ax = axes[k // ncols][k % ncols]
        base = sorted({(r.base_layer, r.base_std) for r in rows
                       if r.role == role and r.base_layer is not None and r.base_std is not None})
        cand = sorted((r.layer, r.candidate_std) for r in rows if r.role == role)
        if base:
            ax.plot([x for x, _ in base], [y for _, y in base], marker="o", ms=4,
                    color=_BASE_COLOUR, label="base (by base layer)")
        ax.plot([x for x, _ in cand], [y for _, y in cand], marker="s", ms=4,
                color=_CAND_COLOUR, label="candidate (by candidate layer)")
        ax.set_title(role, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(roles), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("layer", fontsize=9)
    for row in axes:
        row[0].set_ylabel("weight std", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("norm profiles (std of each role's weights)", fontsize=11)
    return fig


def drift_figure(report: Report) -> Figure | None:
    """Per candidate layer: the Frobenius-norm ratio candidate / mapped base layer for every
    role, and the relative drift ``||W_c - W_b|| / ||W_b||`` of the aligned FFN roles."""
    if report.norm_drift is None:
        return None
    rows = report.norm_drift.layers
    ratio_rows = [r for r in rows if r.base_norm]
    drift_rows = [r for r in rows if r.relative_drift is not None]
    if not ratio_rows and not drift_rows:
        return None
    panels = int(bool(ratio_rows)) + int(bool(drift_rows))
    fig = _figure(5.0 * panels + 0.5, 3.6)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    left = axes.pop(0) if ratio_rows else None
    right = axes.pop(0) if drift_rows else None
    roles = _drift_roles(report)
    if left is not None:
        for role in roles:
            pts = sorted((r.layer, r.candidate_norm / r.base_norm) for r in ratio_rows
                         if r.role == role and r.base_norm)
            if pts:
                left.plot([x for x, _ in pts], [y for _, y in pts], marker=".", lw=1.1,
                          label=role)
        left.axhline(1.0, color="#777777", lw=0.8, ls=":")
        left.set_title("norm ratio, candidate / mapped base layer", fontsize=10)
        left.set_xlabel("candidate layer")
        left.set_ylabel("Frobenius norm ratio")
        left.grid(alpha=0.3)
        left.legend(fontsize=7, ncol=3)
    if right is not None:
        for role in roles:
            pts = sorted((r.layer, r.relative_drift) for r in drift_rows if r.role == role
                         and r.relative_drift is not None)
            if pts:
                right.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=4, lw=1.2,
                           label=role)
        right.set_title("relative drift of aligned FFN weights", fontsize=10)
        right.set_xlabel("candidate layer")
        right.set_ylabel("||W_cand - W_base|| / ||W_base||")
        right.set_ylim(bottom=0)
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    return fig


def _by_layer(experts: Iterable[ExpertEntry]) -> dict[int, list[ExpertEntry]]:
    out: dict[int, list[ExpertEntry]] = {}
    for e in experts:
        out.setdefault(e.layer, []).append(e)
    return {k: sorted(v, key=lambda e: e.expert) for k, v in sorted(out.items())}


def _runs(numbers: Sequence[int]) -> str:
    """Sorted integers as runs: ``1-6, 9``."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _mapped_layers(experts: Iterable[ExpertEntry]) -> dict[int, list[ExpertEntry]]:
    """The layers whose every expert neuron was matched (a whole expert map): a layer matched
    on a sample of its neurons says little of which base neurons its experts hold or share."""
    return {k: v for k, v in _by_layer(experts).items()
            if all(NOT_MATCHED not in e.base_neurons for e in v)}


def expert_overlap(experts: Sequence[ExpertEntry]) -> list[list[float]]:
    """Expert-by-expert clustering of one layer: ``|B_e & B_f| / min(|B_e|, |B_f|)`` over the
    base neurons each expert holds (0 where either holds none), as ``moe_upcycling`` defines
    it. Upcycled experts overlap (they are cut from the same FFN), experts trained from
    scratch hold nothing."""
    held = [{n for n in e.base_neurons if n >= 0} for e in experts]
    out = []
    for a in held:
        row = []
        for b in held:
            low = min(len(a), len(b))
            row.append(len(a & b) / low if low else 0.0)
        out.append(row)
    return out


def coverage_figure(report: Report) -> Figure | None:
    """Candidate layers (rows) by experts (columns): each expert's coverage, the fraction of its
    neurons matched significantly to a base FFN neuron (1: a copy, 0: trained from scratch)."""
    import numpy as np

    if report.moe is None or not report.moe.experts:
        return None
    layers = _by_layer(report.moe.experts)
    n_exp = max(len(v) for v in layers.values())
    cov = np.full((len(layers), n_exp), np.nan)
    for i, entries in enumerate(layers.values()):
        for k, e in enumerate(entries):
            cov[i, k] = e.coverage
    fig = _figure(min(12.0, max(5.0, 0.5 * n_exp + 2.5)),
                  min(10.0, max(2.6, 0.36 * len(layers) + 1.5)))
    ax = fig.add_subplot()
    ax.set_facecolor("#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(cov), cmap="viridis", vmin=0, vmax=1, aspect="auto",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="coverage")
    ax.set_xlabel("expert")
    ax.set_ylabel("candidate layer")
    ax.set_yticks(range(len(layers)), [str(k) for k in layers])
    ax.set_xticks(_ticks(n_exp))
    if cov.size <= 160:
        for (i, k), v in np.ndenumerate(cov):
            if np.isfinite(v):
                ax.text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if v > 0.6 else "white")
    ax.set_title("expert coverage")
    return fig


def expert_map_figure(report: Report) -> Figure | None:
    """For every expert (rows, ``layer:expert``), the fraction of each slice of base FFN
    neurons it holds (columns): a whole copy fills its row, a fine-grained expert holds
    scattered neurons or blocks, a fresh expert stays empty."""
    import numpy as np

    if report.moe is None:
        return None
    layers = _mapped_layers(report.moe.experts)
    if not layers:
        return None
    width = max([n for v in layers.values() for e in v for n in e.base_neurons] + [-1]) + 1
    slices = max(1, min(_MAX_SLICES, width))
    per = max(1, math.ceil(width / slices)) if width else 1
    rows = [e for entries in layers.values() for e in entries]
    held = np.zeros((len(rows), slices))
    for r, e in enumerate(rows):
        for n in e.base_neurons:
            if n >= 0:
                held[r, min(slices - 1, n // per)] += 1.0 / per
    fig = _figure(10.0, min(14.0, max(3.0, 0.13 * len(rows) + 1.6)))
    ax = fig.add_subplot()
    im = ax.imshow(held, cmap="Blues", vmin=0, vmax=max(1.0, float(held.max())),
                   aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of the slice held", shrink=0.8)
    ax.set_xlabel(f"base FFN neuron slice ({per} neuron{'s' if per > 1 else ''} each)")
    ax.set_ylabel("layer:expert")
    step = max(1, math.ceil(len(rows) / 40))
    ax.set_yticks(range(0, len(rows), step),
                  [f"{rows[r].layer}:{rows[r].expert}" for r in range(0, len(rows), step)],
                  fontsize=7)
    for r in range(1, len(rows)):  # a rule between layers
        if rows[r].layer != rows[r - 1].layer:
            ax.axhline(r - 0.5, color="#999999", lw=0.6)
    ax.set_title("base neurons held by each expert")
    return fig


def clustering_figure(report: Report) -> tuple[Figure, list[int]] | None:
    """The expert clustering matrix of up to ``_MAX_CLUSTER_PANELS`` MoE layers (spread over
    the depth), and which layers were drawn."""
    import numpy as np

    if report.moe is None:
        return None
    layers = _mapped_layers(report.moe.experts)
    if not layers:
        return None
    shown = spread(list(layers), _MAX_CLUSTER_PANELS)
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(2.7 * ncols + 1.2, 2.6 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, layer in enumerate(shown):
        ax = axes[k // ncols][k % ncols]
        m = np.asarray(expert_overlap(layers[layer]))
        im = ax.imshow(m, cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xticks(_ticks(m.shape[0]))
        ax.set_yticks(_ticks(m.shape[0]))
        ax.tick_params(labelsize=7)
    for k in range(len(shown), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, label="shared base neurons / min held", shrink=0.8)
    fig.suptitle("expert clustering (expert x expert)", fontsize=11)
    return fig, shown


# --- the page ----------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "",
           numeric: Sequence[int] = ()) -> str:
    """An escaped table; ``numeric`` columns are right-aligned and never wrapped."""
    def cell(tag: str, k: int, value: object) -> str:
        attr = ' class="num"' if k in numeric else ""
        return f"<{tag}{attr}>{_e(value)}</{tag}>"

    out = [f'<table class="{_e(cls)}"><thead><tr>']
    out += [cell("th", k, h) for k, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell("td", k, c) for k, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column key/value table without a header row."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _figure_html(fig_id: str, fig: Figure, caption: str, *, wide: bool = True) -> str:
    """One ``<figure>`` with an id (tests and links find plots by it) and a caption; ``wide``
    figures fill the page width, the others keep their drawn size."""
    svg = _svg(fig, fig_id)
    cls = ' class="wide"' if wide else ""
    return (f'<figure id="{_e(fig_id)}"{cls}>{svg}<figcaption>{_e(caption)}</figcaption>'
            "</figure>")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0 auto;max-width:1100px;padding:1.5rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.verdict{border-left:8px solid var(--c);background:#f7f7f7;padding:.8rem 1rem;margin:1rem 0}
.verdict .word{font-size:1.6rem;font-weight:700;color:var(--c);letter-spacing:.04em}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d6d6d6;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}table.kv th{white-space:nowrap;font-weight:600}td.num,th.num{text-align:right;white-space:nowrap}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.85rem;
word-break:break-all}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figure.wide svg{width:100%}
figcaption{font-size:.88rem;color:#444}.note{color:#555;font-size:.9rem}
.sig-verified{color:#1e7b34}.sig-failed{color:#b3261e;font-weight:700}
.warn{color:#8a5a00}table.files td:first-child code{word-break:normal}
"""


def _verdict_html(report: Report) -> str:
    colour = _VERDICT_COLOUR[report.verdict]
    sentence = (f"{VERDICT_MEANING[report.verdict][0].upper()}{VERDICT_MEANING[report.verdict][1:]}"
                f" (combined p = {format_p(report.p_value)}, alpha = {report.alpha:g}).")
    return (f'<section id="verdict" class="verdict" style="--c:{colour}">'
            f'<div class="word">{_e(report.verdict.upper())}</div>'
            f'<p class="meaning">{_e(sentence)}</p>'
            f'<p class="reason">{_e(report.reason)}</p></section>')


def _probes_html(report: Report) -> str:
    rows = []
    for p in report.probes:
        rows.append((p.name, "yes" if p.decisive else "no (reported only)",
                     _num(p.statistic), format_p(p.p_value), format_p(p.power_p_value), p.null))
    nd = report.norm_drift
    if nd is not None:
        rows.append(("std-profile correlation", "no (reported only)",
                     _num(nd.profile_correlation, ".3f"), format_p(nd.profile_correlation_p),
                     "-", nd.null))
    table = _table(("probe", "decisive", "statistic", "p-value", "power p-value",
                    "null (what the p-value is measured against)"), rows, "probes",
                   numeric=(2, 3, 4))
    return (f'<section id="probes"><h2>Probes</h2>{table}<p class="note">The power p-value is '
            "the same probe run on the base against a noisy, permuted copy of itself: below "
            "alpha, the probe could see a derivation of that kind. Only decisive probes enter "
            "the combined p-value.</p></section>")


def _layers_html(report: Report) -> str:
    parts = ['<section id="layers"><h2>Layer map</h2>']
    probe = _layer_probe(report)
    if report.layer_similarity:
        cells = ("the matched neuron similarity of every layer pair compared while searching "
                 "for the layer map (grey: not compared, e.g. outside the diagonal of a "
                 "diagonal search, or no dense FFN)")
    else:
        cells = (f"the z-score of {probe.name if probe else 'a per-layer probe'} for the pairs "
                 "the report holds (grey: not stored in the report)")
    caption = (f"Rows: base layers; columns: candidate layers. Coloured cells: {cells}. Red "
               "path: the layer map; numbers, where the pair has dense FFNs: its matched neuron "
               "similarity.")
    if not report.layer_map and probe is None:
        parts.append('<p class="note">No layer map: the models could not be aligned layer by '
                     "layer (see the warnings).</p>")
    parts.append(_figure_html("fig-layer-map", layer_figure(report), caption, wide=False))
    evidence = evidence_figure(report)
    if evidence is not None:
        parts.append(_figure_html(
            "fig-layer-evidence", evidence,
            "Per candidate layer, -log10 of each probe's layer p-value (higher: stronger "
            "evidence of shared weights); the dashed line is alpha.", wide=False))
    if report.layer_map:
        parts.append("<details><summary>layer map as a table</summary>")
        parts.append(_table(("candidate layer", "base layer", "matched similarity"), (
            (e.candidate_layer, "-" if e.base_layer is None else e.base_layer,
             _num(e.similarity, ".3f")) for e in report.layer_map), numeric=(0, 1, 2)))
        parts.append("</details>")
    parts.append("</section>")
    return "".join(parts)


def _drift_html(report: Report) -> str:
    if report.norm_drift is None:
        return ('<section id="norm-drift"><h2>Norm drift</h2><p class="note">Not measured '
                "(norm_drift was not among the probes run).</p></section>")
    nd = report.norm_drift
    parts = ['<section id="norm-drift"><h2>Norm drift</h2>',
             f"<p>Std-profile correlation r = {_e(_num(nd.profile_correlation, '.3f'))}, "
             f"p = {_e(format_p(nd.profile_correlation_p))}: the statistic of the 2025 public "
             "analysis, with its null; unrelated models of similar shape share such profiles, so "
             "it is reported only.</p>"]
    profile = norm_profile_figure(report)
    if profile is not None:
        parts.append(_figure_html(
            "fig-norm-profiles", profile,
            "Weight std per layer and role for both models. Base values are recorded for the "
            "base layers the candidate's layers map to (all layers when the depths match)."))
    drift = drift_figure(report)
    if drift is None:
        parts.append('<p class="note">No candidate layer is paired with a base layer (no layer '
                     "map, and the depths differ), so there is no per-layer drift to show.</p>")
    else:
        parts.append(_figure_html(
            "fig-norm-drift", drift,
            "Norm ratio: Frobenius norm of each candidate layer's roles over its mapped base "
            "layer's (1 = unchanged; a function-preserving rescaling moves it freely). Relative "
            "drift, where FFN neurons were aligned: the change of the aligned FFN weights "
            "(0 = a copy).", wide=False))
    parts.append("</section>")
    return "".join(parts)


def _moe_html(report: Report) -> str:
    moe = report.moe
    if moe is None:
        return ""
    verdict = "upcycled from the base's FFNs" if moe.upcycled else "not upcycled"
    parts = ['<section id="moe"><h2>Experts</h2>',
             f"<p>The candidate's experts are <strong>{_e(verdict)}</strong> "
             f"(p = {_e(format_p(moe.p_value))}); {len(moe.experts)} experts in "
             f"{len(_by_layer(moe.experts))} layers.</p>"]
    routed = report.models.candidate.num_experts
    shared = (f" Experts numbered {routed} and up are shared experts."
              if routed and any(e.expert >= routed for e in moe.experts) else "")
    coverage = coverage_figure(report)
    if coverage is not None:
        parts.append(_figure_html(
            "fig-expert-coverage", coverage,
            "Coverage: the fraction of an expert's neurons matched significantly to a base FFN "
            "neuron (1: a copy; 0: re-initialised or trained from scratch)." + shared,
            wide=False))
    layers = _by_layer(moe.experts)
    sampled = [k for k in layers if k not in _mapped_layers(moe.experts)]
    partial = (f" Layers {_runs(sampled)} had no null draws of their own and were matched on "
               "a sample of their expert neurons (coverage and similarity there are estimates "
               "from it); they are left out here (--full maps every layer)." if sampled else "")
    fig = expert_map_figure(report)
    if fig is not None:
        parts.append(_figure_html(
            "fig-expert-map", fig,
            "Which base FFN neurons each expert holds, in slices of the base FFN's neurons (in "
            "the base's neuron order)." + shared + partial))
    clustered = clustering_figure(report)
    if clustered is not None:
        cfig, shown = clustered
        parts.append(_figure_html(
            "fig-expert-clustering", cfig,
            "Expert clustering, recomputed from the base neurons each expert holds: shared base "
            "neurons over the smaller expert's count. Layers shown: "
            + ", ".join(map(str, shown)) + "." + partial))
    parts.append("<details><summary>expert map as a table</summary>")
    parts.append(_table(("layer", "expert", "base layer", "coverage", "similarity",
                         "neurons held / matched"), (
        (e.layer, e.expert, "-" if e.base_layer is None else e.base_layer,
         f"{e.coverage:.2f}", f"{e.similarity:.3f}",
         f"{sum(n >= 0 for n in e.base_neurons)}/"
         f"{sum(n != NOT_MATCHED for n in e.base_neurons)}")
        for e in moe.experts), numeric=(0, 1, 2, 3, 4, 5)))
    parts.append("</details></section>")
    return "".join(parts)


def _models_html(report: Report) -> str:
    parts = ['<section id="models"><h2>Models</h2>']
    for side, info in (("base", report.models.base), ("candidate", report.models.candidate)):
        shape = (f"{info.num_layers} layers{stacks_text(info.stacks)}, hidden "
                 f"{info.hidden_size}, vocab {info.vocab_size}"
                 + (f", {info.num_experts} experts" if info.num_experts else ""))
        parts.append(f'<div class="model" id="model-{side}"><h3>{_e(side)}</h3>')
        parts.append(_kv((("path", info.path), ("format", info.format),
                          ("architecture", f"{info.architecture} (model_type {info.model_type})"),
                          ("shape", shape))))
        parts.append('<table class="files"><thead><tr><th>file</th><th class="num">size</th>'
                     "<th>sha256</th></tr></thead><tbody>")
        for f in [*info.files, *info.side_files]:  # the weights, then config and tokenizer
            digest = f.sha256 or "not hashed (--no-hash)"
            parts.append(f"<tr><td><code>{_e(f.path)}</code></td>"
                         f'<td class="num">{_e(human_bytes(f.size))}</td>'
                         f"<td><code>{_e(digest)}</code></td></tr>")
        parts.append("</tbody></table></div>")
    parts.append("</section>")
    return "".join(parts)


def _signature_html(status: SignatureStatus | None) -> str:
    if status is None:
        status = SignatureStatus("absent", "not signed")
    return (f'<section id="signature"><h2>Signature</h2><p class="sig-{_e(status.state)}">'
            f"{_e(status.message)}</p><p class=\"note\">Anyone can check a bundle offline: "
            "<code>lineage verify-report BUNDLE --key PUB.pem --models BASE CANDIDATE</code>."
            "</p></section>")


def _provenance_html(report: Report) -> str:
    env = report.environment
    rows = [("tool", f"{report.tool} {report.tool_version} (report schema "
                     f"{report.schema_version})"),
            ("created", report.created.isoformat()),
            ("backend", f"{env.backend} on {env.device}; {env.dtype_policy}"),
            ("versions", ", ".join(f"{k} {v}" for k, v in sorted(env.versions.items())))]
    rows += [(f"option {k}", "-" if v is None else v) for k, v in sorted(report.options.items())]
    if report.timings:
        rows.append(("timings", ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items())))
    return f'<section id="provenance"><h2>Run</h2>{_kv(rows)}</section>'


def render_html(report: Report, signature: SignatureStatus | None = None) -> str:
    """The whole page for ``report``: verdict, probes, layer map, norm drift, experts (MoE
    candidates), models with their file hashes, signature state and run details."""
    title = (f"lineage: {report.verdict} - {Path(report.models.candidate.path).name} vs "
             f"{Path(report.models.base.path).name}")
    warnings = ""
    if report.warnings:
        warnings = ('<section id="warnings"><h2>Warnings</h2><ul>'
                    + "".join(f'<li class="warn">{_e(w)}</li>' for w in report.warnings)
                    + "</ul></section>")
    body = "".join((
        f"<header><h1>Lineage report</h1><p>Was <code>{_e(report.models.candidate.path)}</code> "
        f"derived from <code>{_e(report.models.base.path)}</code>?</p></header>",
        _verdict_html(report), warnings, _probes_html(report), _layers_html(report),
        _drift_html(report), _moe_html(report), _models_html(report), _signature_html(signature),
        _provenance_html(report),
    ))
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


__all__ = [
    "SignatureStatus",
    "clustering_figure",
    "coverage_figure",
    "drift_figure",
    "evidence_figure",
    "expert_map_figure",
    "expert_overlap",
    "layer_figure",
    "load_report",
    "norm_profile_figure",
    "render_html",
    "signature_status",
    "signed_by_this_run",
    "write_html",
]
