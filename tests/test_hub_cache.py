"""Hub repo ids resolve from the local cache only; a missing repo never triggers a download."""

from __future__ import annotations

import hashlib

import pytest
from checkpoints import llama_tensors, write_llama_folder
from huggingface_hub import constants

from verifier.errors import InputError
from verifier.readers import open_checkpoint, resolve_path
from verifier.readers.hub import looks_like_repo_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    write_llama_folder(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_repo_id_resolves_to_its_cached_snapshot(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    path = resolve_path("acme/tiny-llama")
    assert path.name == COMMIT
    assert (path / "model.safetensors").is_file()


def test_revision_suffix_selects_a_snapshot(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path(f"acme/tiny-llama@{COMMIT}").name == COMMIT


def test_uncached_repo_is_a_clear_error_naming_the_fix(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="not found in the local Hugging Face cache") as err:
        resolve_path("acme/other-model")
    assert "never downloads" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("spec", "is_repo"),
    [("org/name", True), ("org/name@main", True), ("./org/name", False), ("/abs/path", False),
     ("name", False), ("a/b/c", False)],
)
def test_repo_id_syntax(spec, is_repo):
    assert looks_like_repo_id(spec) is is_repo


def _as_hub_snapshot(cache, name, folder):
    """``folder``'s files laid out as the Hub's cache does: each a link to a blob by digest."""
    repo = cache / f"models--acme--{name}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in sorted(folder.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        (repo / "blobs" / digest).write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(f"../../blobs/{digest}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_a_sharded_model_in_the_hub_cache_reads_through_its_blob_links(hub_cache, tmp_path,
                                                                        monkeypatch):
    # the snapshot's shards are links into ../../blobs: resolved, they looked like files
    # outside the model folder, and every sharded cached model was refused
    _as_hub_snapshot(hub_cache, "sharded", write_llama_folder(tmp_path / "src", shards=2))
    monkeypatch.chdir(tmp_path)
    with open_checkpoint("acme/sharded") as reader:
        assert len(reader.files) == 2
        assert {t.name for t in reader.tensors()} == set(llama_tensors())
