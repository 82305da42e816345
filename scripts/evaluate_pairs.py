"""Verify every zoo pair of known lineage and compare with the public std-profile statistic.

Builds (or reuses) the zoo models under ``--root``, runs `verify` on each pair of
``verifier.zoo.pairs.PAIRS`` in both directions, and prints per pair: truth, verdict, combined
p-value, each decisive probe's statistic and p-value, the layer map check, the run time, and the
2025 public analysis' statistic (Pearson r of per-layer attention std profiles) with the verdict
its proposed reading gives (r >= 0.9 read as "derived"). Usage:
``python scripts/evaluate_pairs.py --root /path/to/zoo-cache [--markdown]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from verifier.verify import VerifyOptions, verify
from verifier.zoo import Zoo
from verifier.zoo.pairs import PAIRS, ZOO_SPECS

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
    head = ("pair", "dir", "truth", "verdict", "p", "T_emb", "T_ffn", "T_head", "p_emb", "p_ffn",
            "p_head", "layer map", "s", "std-profile r", "r>=0.9 says")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.3g}")
            else:
                cells.append(str(v))
        print(("| " + " | ".join(cells) + " |") if args.markdown else "  ".join(cells))
    ours = sum(r[3] == r[2] for r in rows)
    public = sum(r[-1] == r[2] for r in rows)
    print(f"\nlineage: {ours}/{len(rows)} verdicts right; std-profile r >= {PUBLIC_THRESHOLD}: "
          f"{public}/{len(rows)}")


if __name__ == "__main__":
    main()
