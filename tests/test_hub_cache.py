"""Hub repo ids resolve from the local cache only; a missing repo never triggers a download."""

from __future__ import annotations

import pytest
from checkpoints import write_llama_folder
from huggingface_hub import constants

from verifier.errors import InputError
from verifier.readers import resolve_path
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
