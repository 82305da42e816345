"""The per-model cache: digests, layer statistics and a base's power check computed once,
recomputed when a file changes, kept on disk when given a folder, and a corrupt entry never
trusted."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import llama_tensors, run_cli, write_llama_folder

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
    """A 2 x 2 matrix hashes 4 models once each (not twice) and gives the uncached reports."""
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
    # each model's weights and config.json once (8 files), each reused once
    assert cache.counts.files_hashed == 8
    assert cache.counts.file_hits == 8
    assert cache.counts.stats_computed == 4
    assert cache.counts.stats_hits == 4


def _streams(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def _check(rng: np.random.Generator, gen: torch.Generator) -> dict[str, float]:
    """A stand-in power check that draws from both streams, as the real one does."""
    return {"neuron_matching": float(rng.random()),
            "head_matching": float(torch.rand(1, generator=gen))}


def test_a_power_check_runs_once_per_base_and_leaves_the_streams_where_it_would(model_dir,
                                                                                 tmp_path):
    """A hit returns the first run's p-values and moves both random streams as the check
    would have: what the verification draws next is the same with the cache and without."""
    folder = tmp_path / "cache"
    with open_model(model_dir) as m:
        rng, gen = _streams(3)
        plain = _check(rng, gen)
        after = (rng.random(), float(torch.rand(1, generator=gen)))
        for cache in (ModelCache(folder), ModelCache(folder)):  # the second from disk
            for _ in range(2):
                rng, gen = _streams(3)
                got = cache.power_check(m, ["rows"], rng, gen, lambda r=rng, g=gen: _check(r, g))
                assert got == plain
                assert (rng.random(), float(torch.rand(1, generator=gen))) == after
        assert cache.counts.power_computed == 0
        assert cache.counts.power_hits == 2


def test_a_power_check_is_recomputed_when_anything_it_reads_differs(model_dir, tmp_path):
    """Other shared tokens or options, either random stream elsewhere, another version of the
    files: a miss. A corrupt entry on disk: recomputed, never trusted."""
    folder = tmp_path / "cache"
    cache = ModelCache(folder)

    def run(m, parts: list[object], np_seed: int = 3, torch_seed: int = 3) -> dict[str, float]:
        rng, gen = np.random.default_rng(np_seed), torch.Generator().manual_seed(torch_seed)
        return cache.power_check(m, parts, rng, gen, lambda: _check(rng, gen))

    with open_model(model_dir) as m:
        first = run(m, ["rows"])
        assert run(m, ["rows"]) == first
        assert cache.counts.power_computed == 1
        run(m, ["other rows"])
        run(m, ["rows"], np_seed=4)
        run(m, ["rows"], torch_seed=4)
        assert cache.counts.power_computed == 4
        for entry in (folder / "power").glob("*.json"):
            entry.write_text(entry.read_text().replace('"gen": "', '"gen": "zz'))
        cache = ModelCache(folder)
        assert run(m, ["rows"]) == first
        assert cache.counts.power_computed == 1
    _bump_mtime(next(model_dir.glob("*.safetensors")))
    with open_model(model_dir) as m:
        run(m, ["rows"])
        assert cache.counts.power_computed == 2


@pytest.mark.parametrize("frame", [None, 8], ids=["whole-space", "frame"])
def test_verify_with_a_cache_runs_one_power_check_per_base_and_reports_the_same(tmp_path,
                                                                                 frame):
    """One base against three candidates: one power check, three reports equal to the
    uncached ones (p-values of the power check included), on the whole hidden space and on a
    frame of it."""
    from verifier.verify import VerifyOptions, verify

    base = write_llama_folder(tmp_path / "base", llama_tensors())
    cands = [write_llama_folder(tmp_path / f"c{i}", {k: v + 0.01 * (i + 1) for k, v in
                                                     llama_tensors().items()}) for i in range(3)]
    opts = VerifyOptions(null_draws=8, null_layers=1, digest=False,
                         **({} if frame is None else {"hidden_sample": frame}))
    cache = ModelCache()
    volatile = {"created", "timings"}
    for c in cands:
        cached = verify(base, c, opts, cache=cache)
        assert cached.model_dump(exclude=volatile) == verify(base, c, opts).model_dump(
            exclude=volatile)
        assert all(p.power_p_value is not None for p in cached.probes if p.decisive)
        assert cached.options["hidden_directions"] == (frame or 16)
    assert cache.counts.power_computed == 1
    assert cache.counts.power_hits == 2


def test_the_matrix_script_runs_one_power_check_per_base_and_keeps_it(tmp_path, capsys,
                                                                     monkeypatch):
    """scripts/verify_matrix.py on one base and two candidates: one power check run, one
    reused; run again on the same cache folder, both reused and the same summary written."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "verify_matrix.py"
    spec = importlib.util.spec_from_file_location("verify_matrix", script)
    assert spec is not None
    assert spec.loader is not None
    matrix = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, matrix)  # its dataclasses look themselves up
    spec.loader.exec_module(matrix)
    base = write_llama_folder(tmp_path / "base", llama_tensors())
    cands = [str(write_llama_folder(tmp_path / f"c{i}", {k: v + 0.01 * (i + 1) for k, v in
                                                         llama_tensors().items()}))
             for i in range(2)]
    summaries = []
    for run, expected in ((1, "1 run, 1 reused"), (2, "0 run, 2 reused")):
        out = tmp_path / f"out{run}"
        argv = ["--bases", str(base), "--candidates", *cands, "--out", str(out), "--no-hash",
                "--null-layers", "1", "--cache-dir", str(tmp_path / "cache")]
        assert matrix.main(argv) == 0
        assert f"power checks: {expected}" in capsys.readouterr().out
        summaries.append((out / "summary.csv").read_text().replace(str(out), "OUT"))
        assert len(summaries[-1].strip().splitlines()) == 3  # header and two pairs
    assert summaries[0] == summaries[1]

    # one broken model among the candidates: the others are verified, its pairs say why
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x00" * 7)
    out = tmp_path / "out3"
    argv = ["--bases", str(base), "--candidates", cands[0], str(broken), "--out", str(out),
            "--no-hash", "--null-layers", "1"]
    assert matrix.main(argv) == 4
    rows = (out / "summary.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[2] for row in rows] == ["derived", "error"]
    assert (out / "reports" / "base__c0.json").is_file()
    assert "cannot be verified" in capsys.readouterr().err
    # options out of range and an --out that is a file: one line, exit 2, before any work
    for bad in (["--alpha", "0"], ["--seed", "-1"], ["--null-layers", "0"],
                ["--out", str(base / "model.safetensors")], ["--probes", ","]):
        argv = ["--bases", str(base), "--candidates", cands[0], "--out", str(tmp_path / "o4"),
                "--no-hash", *bad]
        assert matrix.main(argv) == 2, bad
        assert capsys.readouterr().err.startswith("error: "), bad


def test_the_command_line_keeps_a_base_s_work_for_its_next_verification(tmp_path, capsys,
                                                                       monkeypatch):
    """`lineage verify --cache-dir` (or LINEAGE_CACHE_DIR): a second candidate against the same
    base reuses the base's digests, statistics and power check from the folder (a new
    process's view: a new cache object), says so on stderr, and prints the report it prints
    without the cache."""
    base = write_llama_folder(tmp_path / "base", llama_tensors())
    cands = [str(write_llama_folder(tmp_path / f"c{i}", {k: v + 0.01 * (i + 1) for k, v in
                                                         llama_tensors().items()}))
             for i in range(2)]
    common = ["--format", "json", "--null-layers", "1", "--seed", "5"]
    volatile = ("created", "timings")

    def report(text: str) -> dict[str, object]:
        import json

        return {k: v for k, v in json.loads(text).items() if k not in volatile}

    cache = str(tmp_path / "cache")
    code, _, err = run_cli(["verify", str(base), cands[0], *common, "--cache-dir", cache], capsys)
    assert code == 0
    assert "0 file digest(s) reused, 4 hashed" in err  # two weight files, two configs
    assert "power check 0 reused, 1 computed" in err
    monkeypatch.setenv("LINEAGE_CACHE_DIR", cache)
    code, cached, err = run_cli(["verify", str(base), cands[1], *common], capsys)
    assert code == 0
    assert "2 file digest(s) reused, 2 hashed" in err  # the base's files; the candidate's are new
    assert "layer statistics 1 reused, 1 computed" in err
    assert "power check 1 reused, 0 computed" in err
    monkeypatch.delenv("LINEAGE_CACHE_DIR")
    code, plain, err = run_cli(["verify", str(base), cands[1], *common], capsys)
    assert code == 0
    assert "cache:" not in err
    assert report(cached) == report(plain)


def test_a_cache_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys, model_dir):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    code, out, err = run_cli(["verify", str(model_dir), str(model_dir), "--cache-dir",
                           str(blocker)], capsys)
    assert code == 2
    assert "--cache-dir" in err
    assert "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_a_cache_that_cannot_be_written_loses_no_verification(tmp_path, monkeypatch, model_dir):
    """A full disk under the cache folder: the verification finishes with the report it gives
    without a cache, the entries stay in memory, and the first failure is kept to be said."""
    import errno

    from verifier import model_cache
    from verifier.verify import VerifyOptions, verify

    def full_disk(path: Path, data: object, **_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(model_cache, "write_atomic", full_disk)
    cache = ModelCache(tmp_path / "cache")
    opts = VerifyOptions(null_draws=8, null_layers=1)
    cached = verify(model_dir, model_dir, opts, cache=cache)
    volatile = {"created", "timings"}
    assert cached.model_dump(exclude=volatile) == verify(model_dir, model_dir, opts).model_dump(
        exclude=volatile)
    assert cache.write_error is not None
    assert "No space left" in cache.write_error
    assert cache.sha256(next(model_dir.glob("*.safetensors"))) == \
        cached.models.base.files[0].sha256
    assert cache.counts.file_hits == 1


def test_a_frame_s_null_draws_of_the_base_are_kept_for_the_next_candidate(tmp_path):
    """On a frame, the base's sampled neurons and heads projected onto each null draw's frame
    are kept in the cache folder: the next candidate against the same base (a new process's
    view: a new cache object) computes none of them, and every report equals the uncached
    one. Another seed draws other frames: nothing is reused. A truncated or foreign file is
    recomputed, never trusted."""
    from safetensors.torch import load_file, save_file

    from verifier.verify import VerifyOptions, verify

    base = write_llama_folder(tmp_path / "base", llama_tensors())
    cands = [write_llama_folder(tmp_path / f"c{i}", {k: v + 0.01 * (i + 1) for k, v in
                                                     llama_tensors().items()}) for i in range(2)]
    folder = tmp_path / "cache"
    opts = VerifyOptions(null_draws=8, null_layers=1, digest=False, hidden_sample=8)
    volatile = {"created", "timings"}

    def run(cand: Path, options: VerifyOptions = opts) -> ModelCache:
        cache = ModelCache(folder)
        cached = verify(base, cand, options, cache=cache)
        assert cached.model_dump(exclude=volatile) == verify(base, cand, options).model_dump(
            exclude=volatile)
        return cache

    first = run(cands[0])
    computed = first.counts.draws_computed
    assert computed == 2 * 8  # one tested layer: its neurons' and heads' 8 draws
    assert first.counts.draws_hits == 0
    files = sorted((folder / "draws").glob("*.safetensors"))
    assert len(files) == 2
    second = run(cands[1])
    # one draw per file computed all the same: the check that the file holds this run's numbers
    assert (second.counts.draws_hits, second.counts.draws_computed) == (computed - 2, 2)

    other_seed = run(cands[1], VerifyOptions(null_draws=8, null_layers=1, digest=False,
                                             hidden_sample=8, seed=1))
    assert (other_seed.counts.draws_hits, other_seed.counts.draws_computed) == (0, computed)

    neurons_file = next(f for f in files if "-neurons-" in f.name)
    heads_file = next(f for f in files if "-heads-" in f.name)
    neurons_file.write_bytes(neurons_file.read_bytes()[:-100])
    save_file(load_file(heads_file), heads_file, metadata={"key": "another", "draws": "8"})
    again = run(cands[1])
    assert (again.counts.draws_hits, again.counts.draws_computed) == (0, computed)
    assert run(cands[0]).counts.draws_hits == computed - 2  # rewritten whole by the run before
    # the right name and metadata, tensors that do not fit: the run's products failed on them
    kept = load_file(heads_file)
    meta = {"key": heads_file.name.split("-heads-")[0], "draws": "8"}
    save_file({name: torch.zeros(1, 1) for name in kept}, heads_file, metadata=meta)
    forged = run(cands[1])
    # the neurons: one check draw and 7 kept; the heads: all 8 computed again
    assert (forged.counts.draws_hits, forged.counts.draws_computed) == (7, 1 + 8)


def test_statistics_kept_on_disk_come_back_in_the_order_they_were_computed(model_dir,
                                                                           tmp_path):
    """A model's layer statistics read back from the folder keep their roles' order, which is
    the order of the report's norm drift rows (a candidate's statistics from the folder gave
    its rows in alphabetical order)."""
    with open_model(model_dir) as m:
        computed = ModelCache(tmp_path).layer_stats(m, lambda: drift.layer_stats(m))
        loaded = ModelCache(tmp_path).layer_stats(m, lambda: [])
    assert [list(layer) for layer in loaded] == [list(layer) for layer in computed]
    assert loaded == computed
    assert list(computed[0]) != sorted(computed[0])


def test_a_multi_device_run_goes_without_the_cache_and_says_so(tmp_path, capsys):
    """Ranks would meet cache entries at their own pace and could disagree on the collective
    steps: `--cache-dir` is ignored there, with a warning, and no folder is made."""
    from verifier.cli import _model_cache

    folder = tmp_path / "cache"
    assert _model_cache(folder, distributed=True) is None
    assert "ignored in multi-device runs" in capsys.readouterr().err
    assert not folder.exists()
    assert isinstance(_model_cache(folder, distributed=False), ModelCache)
    assert folder.is_dir()


def test_new_content_under_the_old_size_and_mtime_is_rehashed(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 10)
    cache = ModelCache()
    first = cache.sha256(f)
    st = f.stat()
    f.write_bytes(b"b" * 10)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the old mtime back
    assert cache.sha256(f) == hashlib.sha256(b"b" * 10).hexdigest() != first


def test_a_config_edited_beside_unchanged_weights_changes_the_model_key(model_dir):
    # the head counts split attention into heads: kept draws and power checks of the old
    # split gave another head matching than a run without the cache
    with open_model(model_dir) as m:
        before = ModelCache().model_key(m)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_attention_heads=config["num_attention_heads"] // 2, num_key_value_heads=1)
    (model_dir / "config.json").write_text(json.dumps(config))
    with open_model(model_dir) as m:
        assert ModelCache().model_key(m) != before


def test_entries_that_parse_but_do_not_fit_the_model_are_recomputed(model_dir, tmp_path):
    folder = tmp_path / "cache"
    with open_model(model_dir) as m:
        good = ModelCache(folder).layer_stats(m, lambda: drift.layer_stats(m))
    [entry] = (folder / "stats").glob("*.json")
    stored = json.loads(entry.read_text())
    for edit in ("a layer short", "a role short"):
        broken = json.loads(json.dumps(stored))
        if edit == "a layer short":
            broken["layers"].pop()
        else:
            broken["layers"][0].pop()
        entry.write_text(json.dumps(broken))
        cache = ModelCache(folder)
        with open_model(model_dir) as m:
            assert cache.layer_stats(m, lambda: drift.layer_stats(m)) == good, edit  # noqa: B023
        assert cache.counts.stats_computed == 1, edit
    # a power check whose p-values were emptied read as "no power": recomputed
    rng, gen = _streams(0)
    with open_model(model_dir) as m:
        ModelCache(folder).power_check(m, ["x"], rng, gen, lambda: _check(rng, gen))
        [power] = (folder / "power").glob("*.json")
        stored = json.loads(power.read_text())
        power.write_text(json.dumps(stored | {"power": {}}))
        cache = ModelCache(folder)
        rng, gen = _streams(0)
        assert cache.power_check(m, ["x"], rng, gen, lambda: _check(rng, gen)) == stored["power"]
        assert cache.counts.power_computed == 1


@pytest.mark.skipif(sys.platform == "win32", reason="links and FIFOs as on POSIX")
def test_links_and_fifos_planted_in_the_cache_are_neither_followed_nor_waited_on(tmp_path):
    folder = tmp_path / "cache"
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    ModelCache(folder).sha256(f)
    [entry] = (folder / "files").glob("*.json")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    entry.unlink()
    entry.symlink_to(victim)
    cache = ModelCache(folder)
    assert cache.sha256(f) == hashlib.sha256(b"x" * 100).hexdigest()
    assert victim.read_text() == "keep me"  # the link was replaced, not written through
    assert entry.is_file()
    assert not entry.is_symlink()
    entry.unlink()
    os.mkfifo(entry)
    cache = ModelCache(folder)  # reading the FIFO would wait for a writer forever
    assert cache.sha256(f) == hashlib.sha256(b"x" * 100).hexdigest()
    assert cache.counts.files_hashed == 1
