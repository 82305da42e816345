"""Session fixtures for the model zoo: tiny trained checkpoints with known lineage.

Each model is trained the first time a test asks for it. Set ``LINEAGE_ZOO_CACHE`` to a folder to
keep builds between runs (folders are keyed by a hash of their spec, so stale builds are never
reused).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verifier.report import Report
from verifier.verify import VerifyOptions, verify
from verifier.zoo import Zoo
from verifier.zoo.pairs import ZOO_SPECS


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("LINEAGE_ZOO_CACHE")
    if cache:
        root = Path(cache).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo(zoo_root: Path) -> Zoo:
    """The standard set and the lineage set (``verifier.zoo.pairs``): ``zoo.llama`` is the
    folder of that model."""
    return Zoo(zoo_root, ZOO_SPECS)


class PairReports:
    """Reports of zoo models, each verified (``options``: the defaults, digests off) the first
    time a test asks for it and kept for the session: the verdict, map, backend and HTML tests
    read the same reports, and each verification of a zoo pair costs about a second. Each call
    gives its own copy, so no test sees another's changes."""

    options = VerifyOptions(digest=False)

    def __init__(self, zoo: Zoo) -> None:
        self.zoo = zoo
        self._done: dict[tuple[str, str], Report] = {}

    def __call__(self, base: str, candidate: str) -> Report:
        key = (base, candidate)
        if key not in self._done:
            self._done[key] = verify(self.zoo[base], self.zoo[candidate], self.options)
        return self._done[key].model_copy(deep=True)


@pytest.fixture(scope="session")
def pair_reports(zoo: Zoo) -> PairReports:
    return PairReports(zoo)
