"""Verify every zoo pair of known lineage and compare with the public std-profile statistic.

Builds (or reuses) the zoo models under ``--root``, runs `verify` on each pair of
``verifier.zoo.pairs.PAIRS`` in both directions, and prints per pair: truth, verdict, combined
p-value, each decisive probe's statistic and p-value, the layer map check, the run time, and the
2025 public analysis' statistic (Pearson r of per-layer attention std profiles) with the verdict
its proposed reading gives (r >= 0.9 read as "derived"). Then the MoE pairs
(``MOE_PAIRS``): verdict, whether the experts were found upcycled, the upcycling p-value, mean
expert coverage, and the fraction of copied expert neurons whose base neuron the report names
correctly (the derivation records which base neuron each expert neuron started from). Usage:
``python scripts/evaluate_pairs.py --root /path/to/zoo-cache [--markdown]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from verifier.verify import VerifyOptions, verify
from verifier.zoo import Zoo
from verifier.zoo.pairs import MOE_PAIRS, PAIRS, ZOO_SPECS, MoEPair

PUBLIC_THRESHOLD = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="zoo cache folder")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    zoo = Zoo(args.root, ZOO_SPECS)
    rows = []
    for pair in PAIRS:
        for direction, (b, c) in (("->", (pair.base, pair.candidate)),
                                  ("<-", (pair.candidate, pair.base))):
            t0 = time.perf_counter()
            r = verify(zoo[b], zoo[c], VerifyOptions(digest=False))
            seconds = time.perf_counter() - t0
            probes = {p.name: p for p in r.probes}
            nd = r.norm_drift
            rr = nd.profile_correlation if nd else None
            public = "derived" if rr is not None and rr >= PUBLIC_THRESHOLD else "independent"
            lm = [e.base_layer for e in r.layer_map]
            lm_ok = "" if pair.layer_map is None or direction == "<-" else (
                "exact" if tuple(lm) == tuple(pair.layer_map) else "WRONG")
            rows.append((pair.name, direction, pair.truth, r.verdict, r.p_value,
                         *(probes[n].statistic if n in probes else float("nan")
                           for n in ("hidden_alignment", "neuron_matching", "head_matching")),
                         *(probes[n].p_value if n in probes else float("nan")
                           for n in ("hidden_alignment", "neuron_matching", "head_matching")),
                         lm_ok, seconds, rr, public))
    _table(("pair", "dir", "truth", "verdict", "p", "T_emb", "T_ffn", "T_head", "p_emb", "p_ffn",
            "p_head", "layer map", "s", "std-profile r", "r>=0.9 says"), rows, args.markdown)
    ours = sum(r[3] == r[2] for r in rows)
    public = sum(r[-1] == r[2] for r in rows)
    print(f"\nlineage: {ours}/{len(rows)} verdicts right; std-profile r >= {PUBLIC_THRESHOLD}: "
          f"{public}/{len(rows)}")
    print()
    moe_rows = [_moe_row(zoo, pair) for pair in MOE_PAIRS]
    _table(("pair", "truth", "verdict", "p", "upcycled (truth)", "upcycled", "p_moe",
            "coverage", "named right", "s", "std-profile r", "r>=0.9 says"), moe_rows,
           args.markdown)
    right = sum(r[1] == r[2] and r[4] == r[5] for r in moe_rows)
    print(f"\nMoE: {right}/{len(moe_rows)} verdicts and upcycling calls right")


def _moe_row(zoo: Zoo, pair: MoEPair) -> tuple[object, ...]:
    t0 = time.perf_counter()
    r = verify(zoo[pair.base], zoo[pair.candidate], VerifyOptions(digest=False))
    seconds = time.perf_counter() - t0
    moe = r.moe
    named: float | str = "-"
    if moe is not None and pair.sources is not None:
        hit = kept = 0
        for e in moe.experts:
            plan = pair.sources
            routed = plan.experts[e.layer]
            truth = np.asarray(routed[e.expert] if e.expert < len(routed)
                               else plan.shared[e.layer])
            got = np.asarray(e.base_neurons)
            hit += int((got[truth >= 0] == truth[truth >= 0]).sum())
            kept += int((truth >= 0).sum())
        named = hit / kept if kept else "-"
    rr = r.norm_drift.profile_correlation if r.norm_drift else None
    public = "derived" if rr is not None and rr >= PUBLIC_THRESHOLD else "independent"
    return (pair.name, pair.truth, r.verdict, r.p_value, pair.upcycled,
            None if moe is None else moe.upcycled, None if moe is None else moe.p_value,
            None if moe is None else float(np.mean([e.coverage for e in moe.experts])),
            named, seconds, rr, public)


def _table(head: tuple[str, ...], rows: list[tuple[object, ...]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("  ".join(head))
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        print(("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells))


if __name__ == "__main__":
    main()
