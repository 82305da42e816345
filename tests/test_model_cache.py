"""The per-model cache: digests and layer statistics computed once, recomputed when a file changes,
kept on disk when given a folder, and a corrupt entry never trusted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from checkpoints import llama_tensors, write_llama_folder

from verifier.files import describe_files
from verifier.model import open_model
from verifier.model_cache import ModelCache
from verifier.probes import norm_drift as drift


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return write_llama_folder(tmp_path / "model")


def test_second_digest_is_a_hit_and_matches_a_plain_hash(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    cache = ModelCache()
    assert cache.sha256(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert cache.sha256(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert (cache.counts.files_hashed, cache.counts.bytes_hashed, cache.counts.file_hits) == (
        1, 1000, 1)


def test_a_changed_mtime_or_size_is_rehashed(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 10)
    cache = ModelCache()
    cache.sha256(f)
    _bump_mtime(f)
    cache.sha256(f)
    assert cache.counts.files_hashed == 2
    st = f.stat()
    f.write_bytes(b"b" * 11)  # new size; the mtime is put back, so only the size tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.sha256(f) == hashlib.sha256(b"b" * 11).hexdigest()
    assert cache.counts.files_hashed == 3
    assert cache.counts.file_hits == 0


def test_describe_files_equals_the_uncached_records(model_dir):
    with open_model(model_dir) as m:
        plain = describe_files(m.reader.root, m.reader.files)
        cache = ModelCache()
        assert cache.describe_files(m.reader.root, m.reader.files) == plain
        assert cache.describe_files(m.reader.root, m.reader.files) == plain
        assert cache.counts.files_hashed == len(plain)
        assert cache.counts.file_hits == len(plain)
        no_digest = cache.describe_files(m.reader.root, m.reader.files, digest=False)
        assert [r.sha256 for r in no_digest] == [""] * len(plain)


def test_layer_stats_computed_once_per_model_and_again_after_a_change(model_dir):
    cache = ModelCache()
    calls = []

    def stats_of(m):
        def compute():
            calls.append(1)
            return drift.layer_stats(m)
        return compute

    with open_model(model_dir) as m:
        first = cache.layer_stats(m, stats_of(m))
        assert first == drift.layer_stats(m)
        assert cache.layer_stats(m, stats_of(m)) is first
    assert len(calls) == 1
    assert cache.counts.stats_hits == 1
    _bump_mtime(model_dir / "model.safetensors")
    with open_model(model_dir) as m:
        cache.layer_stats(m, stats_of(m))
    assert len(calls) == 2


def test_a_folder_cache_is_reused_by_a_new_process_and_ignores_corrupt_entries(model_dir,
                                                                               tmp_path):
    folder = tmp_path / "cache"
    with open_model(model_dir) as m:
        first = ModelCache(folder)
        records = first.describe_files(m.reader.root, m.reader.files)
        stats = first.layer_stats(m, lambda: drift.layer_stats(m))
        second = ModelCache(folder)  # a later run: nothing in memory
        assert second.describe_files(m.reader.root, m.reader.files) == records
        assert second.layer_stats(m, lambda: pytest.fail("recomputed")) == stats
        assert second.counts.files_hashed == 0
        assert second.counts.stats_computed == 0
        for entry in folder.rglob("*.json"):
            entry.write_text('{"format": 1, "sha256": "not-a-digest", "layers": [1]}')
        third = ModelCache(folder)
        assert third.describe_files(m.reader.root, m.reader.files) == records
        assert third.layer_stats(m, lambda: drift.layer_stats(m)) == stats
        assert third.counts.files_hashed == len(records)
        assert third.counts.stats_computed == 1


def test_model_key_is_stable_and_tells_copies_apart(tmp_path):
    """Two byte-identical copies in two folders are two entries (a copy may be edited later);
    the same folder gives the same key in every cache."""
    a = write_llama_folder(tmp_path / "a", llama_tensors(layers=2))
    b = write_llama_folder(tmp_path / "b", llama_tensors(layers=2))
    cache = ModelCache()
    with open_model(a) as ma, open_model(b) as mb:
        assert cache.model_key(ma) != cache.model_key(mb)
        assert cache.model_key(ma) == ModelCache().model_key(ma)


def test_verify_with_a_cache_reads_each_model_once_and_reports_the_same(tmp_path):
    """A 2 x 2 matrix hashes 4 models once each (not 8 times) and gives the uncached reports."""
    from verifier.verify import VerifyOptions, verify

    bases = [write_llama_folder(tmp_path / f"b{i}", {k: v * (1 + i / 10) for k, v in
                                                     llama_tensors().items()}) for i in range(2)]
    cands = [write_llama_folder(tmp_path / f"c{i}", {k: v + 0.01 * i for k, v in
                                                     llama_tensors().items()}) for i in range(2)]
    opts = VerifyOptions(null_draws=8, null_layers=1, probes=("hidden_alignment", "norm_drift"))
    cache = ModelCache()
    volatile = {"created", "timings"}
    for b in bases:
        for c in cands:
            cached = verify(b, c, opts, cache=cache)
            assert cached.model_dump(exclude=volatile) == verify(b, c, opts).model_dump(
                exclude=volatile)
    assert cache.counts.files_hashed == 4
    assert cache.counts.file_hits == 4
    assert cache.counts.stats_computed == 4
    assert cache.counts.stats_hits == 4
