"""Build the standard zoo (or some of it) into a folder and print what each model became.

    python scripts/build_zoo.py OUT_DIR [--only llama bert ...] [--threads N]

Folders already complete in OUT_DIR are reused, so the seconds column is then near zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from verifier.zoo import STANDARD, Zoo, read_spec, read_stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the lineage test-model zoo.")
    parser.add_argument("out", type=Path, help="cache folder (one sub-folder per model spec)")
    parser.add_argument("--only", nargs="+", choices=sorted(STANDARD), help="models to build")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training")
    args = parser.parse_args(argv)

    zoo = Zoo(args.out, threads=args.threads)
    names = args.only or zoo.names
    header = f"{'name':<20} {'family':<10} {'params':>8} {'steps':>5}  {'loss':<15} {'seconds':>7}  folder"
    print(header)
    print("-" * len(header))
    total = 0.0
    for name in names:
        t0 = time.perf_counter()
        folder = zoo.path(name)
        seconds = time.perf_counter() - t0
        total += seconds
        spec, stats = read_spec(folder), read_stats(folder)
        loss = f"{stats.initial_loss:.3f} -> {stats.final_loss:.3f}" if stats else "-"
        params = f"{stats.params:,}" if stats else "-"
        print(
            f"{name:<20} {spec.family:<10} {params:>8} {spec.steps:>5}  {loss:<15} "
            f"{seconds:>7.1f}  {folder.name}",
            flush=True,
        )
    print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
