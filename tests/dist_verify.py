"""Run by ``torchrun`` from ``test_distributed.py``: every rank verifies the same pairs with its
shard of the layers; rank 0 writes each report as ``OUT/<pair>.json``.

usage: torchrun --nproc-per-node N tests/dist_verify.py ZOO_ROOT OUT PAIR...
"""

from __future__ import annotations

import sys
from pathlib import Path

import backends
from backends.distributed import join_group
from verifier.files import write_atomic
from verifier.verify import VerifyOptions, verify
from verifier.zoo import Zoo
from verifier.zoo.pairs import MOE_PAIRS, PAIRS, ZOO_SPECS


def main(argv: list[str]) -> None:
    zoo_root, out, names = Path(argv[0]), Path(argv[1]), set(argv[2:])
    zoo = Zoo(zoo_root, ZOO_SPECS)
    backend, status = backends.select("cpu")
    shards = join_group(backend, status)
    try:
        for pair in [p for p in [*PAIRS, *MOE_PAIRS] if p.name in names]:
            # digests too: the ranks deal the files out and gather their sha256
            report = verify(zoo[pair.base], zoo[pair.candidate], VerifyOptions(),
                            compute=backend.compute(), shards=shards)
            if shards.is_main:
                write_atomic(out / f"{pair.name}.json", report.to_json() + "\n")
    finally:
        shards.close()


if __name__ == "__main__":
    main(sys.argv[1:])
