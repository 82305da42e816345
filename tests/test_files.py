"""File digests: every file's own sha256 whichever thread hashed it, digests of a failed run
abandoned rather than waited for, and a verify report naming the bytes of both models; and
outputs: written whole, with the mode a user expects, never over an input, a link or a device."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from checkpoints import llama_tensors, write_llama_folder

from verifier import files
from verifier.errors import UsageError
from verifier.files import (
    Hashing,
    HashingCancelled,
    check_outputs,
    describe_files,
    files_read,
    sha256_file,
    write_atomic,
)
from verifier.verify import VerifyOptions, verify


def _plain(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_hashed_side_by_side_each_get_their_own_digest(tmp_path):
    sizes = [0, 1, files.CHUNK - 1, files.CHUNK, 3 * files.CHUNK + 17, 5, 1000]
    paths = []
    for k, size in enumerate(sizes):
        p = tmp_path / "sub" / f"w{k}.bin" if k % 2 else tmp_path / f"w{k}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes((k * 31 + i) % 251 for i in range(size)))
        paths.append(p)
    with Hashing(threads=4) as hashing:
        hashing.submit(reversed(paths))
        hashing.submit(paths[:2])  # submitted twice, hashed once
        seen: list[tuple[int, int]] = []
        digests = hashing.wait(lambda done, total: seen.append((done, total)))
    assert seen == [(k, len(paths)) for k in range(1, len(paths) + 1)]
    assert digests == {p: _plain(p) for p in paths}
    records = files.records(tmp_path, paths, digests)
    assert [r.path for r in records] == sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    by_path = {r.path: r for r in records}
    for p, size in zip(paths, sizes, strict=True):
        rec = by_path[p.relative_to(tmp_path).as_posix()]
        assert (rec.sha256, rec.size) == (_plain(p), size)
    assert describe_files(tmp_path, paths) == records
    assert [r.sha256 for r in describe_files(tmp_path, paths, digest=False)] == [""] * len(paths)


def test_a_digest_told_to_stop_is_abandoned_at_its_next_chunk(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"x" * 10)
    stop = threading.Event()
    assert sha256_file(p, stop) == _plain(p)
    stop.set()
    with pytest.raises(HashingCancelled):
        sha256_file(p, stop)


def test_a_failing_run_abandons_the_digests_it_started_and_never_starts_the_rest(tmp_path):
    paths = [tmp_path / f"w{k}.bin" for k in range(4)]
    for p in paths:
        p.write_bytes(b"w")
    started, told_to_stop = [], []

    def slow_hasher(path: Path, stop: threading.Event | None) -> str:
        started.append(path)
        assert stop is not None
        told_to_stop.append(stop.wait(timeout=30))  # a hash that would take a long time
        raise HashingCancelled(str(path))

    def failing_run() -> None:
        with Hashing(slow_hasher, threads=1) as hashing:
            hashing.submit(paths)
            while not started:
                threading.Event().wait(0.01)
            raise RuntimeError("analysis failed")

    with pytest.raises(RuntimeError, match="analysis failed"):
        failing_run()
    assert started == paths[:1]
    assert told_to_stop == [True]


def test_verify_records_every_shards_digest_of_both_models(tmp_path):
    base = write_llama_folder(tmp_path / "base", shards=3)
    rescaled = {name: w * 1.5 for name, w in llama_tensors().items()}
    cand = write_llama_folder(tmp_path / "cand", rescaled, shards=2)
    report = verify(base, cand, VerifyOptions())
    for folder, info in ((base, report.models.base), (cand, report.models.candidate)):
        weights = sorted(folder.glob("*.safetensors"))
        assert [(f.path, f.sha256, f.size) for f in info.files] == [
            (p.name, _plain(p), p.stat().st_size) for p in weights]
    assert "hashing" in report.timings


# --- how outputs land ---------------------------------------------------------------------------


def test_a_written_file_gets_the_mode_open_would_give_and_an_existing_one_keeps_its_own(tmp_path):
    old_mask = os.umask(0o027)
    try:
        files._UMASK = 0o027  # read once at import; this test sets its own
        write_atomic(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o604)
        write_atomic(kept, "{}")
    finally:
        os.umask(old_mask)
        files._UMASK = old_mask
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640  # not mkstemp's 0600
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    assert kept.read_text() == "{}"


def test_writing_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to("real.json")
    write_atomic(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "real.json").read_text() == "new"


def test_a_fifo_is_written_into_not_replaced_by_a_file(tmp_path):
    # a device or pipe named as the output (/dev/null, /dev/stdout) stays what it is: the
    # rename put a plain file in its place (as root, in place of /dev/null)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, "report")
    reader.join(timeout=30)
    assert got == [b"report"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("name", ["folder", ""])
def test_a_folder_is_refused_as_an_output(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(Path(name), "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no temporary file left


def test_outputs_that_land_on_an_input_a_folder_or_each_other_are_usage_errors(tmp_path):
    model = write_llama_folder(tmp_path / "model")
    (model / "report.json").write_text("{}")  # written there by an earlier run: replaceable
    (model / "extra.bin").write_bytes(b"not opened to be listed")
    inputs = files_read(str(model))
    assert {p.name for p in inputs} == {"model.safetensors", "config.json", "extra.bin"}
    assert {p.name for p in files_read(str(model / "model.safetensors"))} == {
        "model.safetensors", "config.json"}
    report = tmp_path / "report.json"
    check_outputs({"--output": report, "--html": tmp_path / "report.html"}, inputs)  # fine
    for outputs, said in [
        ({"--output": model / "model.safetensors"}, "a file this run reads"),
        ({"--output": model / "config.json"}, "a file this run reads"),
        ({"--html": model}, "is a folder"),
        ({"--output": report, "--html": tmp_path / "." / "report.json"}, "name the same file"),
    ]:
        with pytest.raises(UsageError, match=said):
            check_outputs(outputs, inputs)
