"""Calibration of the null: p-values of many independently trained pairs should be uniform.

Trains ``--models`` small Llama-style models (4 layers, hidden 32, 80 AdamW steps) with distinct
seeds, alternating corpus domains, then for every pair computes the selection-free p-values of
each probe (embedding alignment; neuron and head matching of layer i against layer i, no search
over layers), and the full `verify` verdict with its second look's p-value (``body_alignment``,
which runs on every pair the embeddings do not convict). Prints Kolmogorov-Smirnov statistics
against the uniform distribution, a 10-bin histogram per probe, the false-positive count at the
default alpha, the verdicts, the rotated-copy guard's Gram agreements, and the fractions the
rotated-layers guard measured (where the verdict would be independent;
``probes.rotated_layers``). ``--hidden-sample M`` calibrates the frame path instead (M of the
32 hidden directions, ``probes.frame_pairing``). Usage: ``python scripts/calibrate_null.py
[--models 12] [--root DIR] [--hidden-sample 16]``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from backends.compute import Compute
from verifier.model import open_model
from verifier.probes import frame_pairing as frame
from verifier.probes import rotated_copy
from verifier.probes import rotated_layers as turned
from verifier.probes.hidden_alignment import MAX_TOKENS, shared_token_rows
from verifier.probes.pairing import Pairing
from verifier.stats import gaussian_tail_p
from verifier.verify import VerifyOptions, _side, verify
from verifier.zoo import ModelSpec, Zoo
from verifier.zoo.corpus import DOMAINS


def spec(seed: int) -> ModelSpec:
    return ModelSpec(family="llama", num_layers=4, hidden=32, intermediate=64, heads=4,
                     steps=80, seed=1000 + seed, domain=DOMAINS[seed % len(DOMAINS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--draws", type=int, default=24)
    parser.add_argument("--root", type=Path, help="zoo cache (default: a temp dir)")
    parser.add_argument("--hidden-sample", type=int, default=None,
                        help="calibrate the frame path on this many hidden directions")
    args = parser.parse_args()
    m = args.hidden_sample
    opts = VerifyOptions(digest=False, null_draws=args.draws,
                         **({"hidden_sample": m} if m else {}))
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Zoo(args.root or Path(tmp), {f"m{i}": spec(i) for i in range(args.models)})
        t0 = time.perf_counter()
        folders = [zoo[f"m{i}"] for i in range(args.models)]
        print(f"trained {args.models} models in {time.perf_counter() - t0:.1f} s")
        pvals: dict[str, list[float]] = {"hidden_alignment": [], "neuron_matching (per layer)": [],
                                         "head_matching (per layer)": [], "combined (verify)": [],
                                         "body_alignment (verify)": []}
        false_positive = 0
        verdicts: dict[str, int] = {}
        matched: list[float] = []
        geometry: list[tuple[float, float]] = []  # (Gram agreement, copy level) per pair
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for a, b in itertools.combinations(folders, 2):
            with open_model(a) as ma, open_model(b) as mb:
                budget = frame.token_budget(ma.layout.hidden_size, m) if m else MAX_TOKENS
                ib, ic, _ = shared_token_rows(None, None, ma.layout.vocab_size,
                                              mb.layout.vocab_size, budget)
                sides = _side(ma, ib, Compute()), _side(mb, ic, Compute())
                pairing = (frame.FramePairing(*sides, rng, args.draws, width=m) if m
                           else Pairing(*sides, rng, args.draws))
                pvals["hidden_alignment"].append(
                    gaussian_tail_p(pairing.embed_stat, pairing.embed_null)[1])
                for i in range(ma.layout.num_layers):
                    pvals["neuron_matching (per layer)"].append(
                        gaussian_tail_p(pairing.ffn_stat(i, i), pairing.ffn_null(i, i))[1])
                    pvals["head_matching (per layer)"].append(
                        gaussian_tail_p(pairing.head_stat(i, i), pairing.head_null(i, i))[1])
            report = verify(a, b, opts)
            assert not m or report.options["hidden_directions"] == m
            pvals["combined (verify)"].append(report.p_value or 1.0)
            # the second look runs where the embeddings did not convict (all pairs here)
            looked = [p.p_value for p in report.probes if p.name == "body_alignment"]
            if looked and looked[0] is not None:
                pvals["body_alignment (verify)"].append(looked[0])
            false_positive += report.verdict == "derived"
            verdicts[report.verdict] = verdicts.get(report.verdict, 0) + 1
            # the rotated-layers guard, measured where the verdict would be independent
            [embedding] = [p for p in report.probes if p.name == "hidden_alignment"]
            if turned.MATCHED in embedding.details:
                matched.append(float(embedding.details[turned.MATCHED] or 0.0))
            if rotated_copy.AGREEMENT in embedding.details:
                geometry.append((float(embedding.details[rotated_copy.AGREEMENT] or 0.0),
                                 float(embedding.details[rotated_copy.COPY_LEVEL] or 0.0)))
        pairs = args.models * (args.models - 1) // 2
        print(f"{pairs} independent pairs in {time.perf_counter() - t0:.1f} s; "
              f"verdict 'derived' on {false_positive} of them\n")
        print(f"{'probe':<30}{'n':>5}{'KS D':>8}{'KS p':>9}  histogram of p (10 bins)")
        for name, ps in pvals.items():
            arr = np.asarray(ps)
            if not arr.size:
                continue
            ks = stats.kstest(arr, "uniform")
            hist = np.histogram(arr, bins=10, range=(0, 1))[0]
            print(f"{name:<30}{arr.size:>5}{ks.statistic:>8.3f}{ks.pvalue:>9.3f}  "
                  + " ".join(f"{h:3d}" for h in hist))
        print("\nfraction below level:  " + "  ".join(
            f"{lvl}: " + "/".join(f"{np.mean(np.asarray(ps) < lvl):.3f}" for ps in pvals.values())
            for lvl in (0.01, 0.05, 0.1)))
        smallest = {name: f"{min(ps):.2g}" for name, ps in pvals.items() if ps}
        print(f"smallest p: {smallest}")
        print(f"verdicts: {verdicts}")
        if geometry:
            agree, level = np.asarray(geometry).T
            print(f"rotated-copy guard on {agree.size} pairs: Gram agreement median "
                  f"{np.median(agree):.3f}, largest {agree.max():.3f}; copy level smallest "
                  f"{level.min():.3f}; held on {int((agree >= level).sum())}")
        if matched:
            arr = np.asarray(matched)
            print(f"rotated-layers guard on {arr.size} pairs: fraction of neurons matched through "
                  f"a turn: median {np.median(arr):.3f}, 99th percentile "
                  f"{np.quantile(arr, 0.99):.3f}, largest {arr.max():.3f} (level {turned.LEVEL}); "
                  f"held on {int((arr >= turned.LEVEL).sum())}")


if __name__ == "__main__":
    main()
