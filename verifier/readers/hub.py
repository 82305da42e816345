"""Hugging Face repo ids, resolved from the local cache only.

lineage never downloads: an audit must name the exact bytes it read, and a network fetch in the
middle of a verification would make that ambiguous. ``huggingface_hub`` knows the cache layout
(``models--org--name/snapshots/<commit>``), ``HF_HUB_CACHE`` / ``HF_HOME`` and revisions.
"""

from __future__ import annotations

import re
from pathlib import Path

from verifier.errors import InputError

# org/name[@revision], as the Hub allows them (letters, digits, - _ .).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def looks_like_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec)) and not spec.startswith((".", "/"))


def resolve_cached_repo(spec: str) -> Path:
    """The local snapshot folder of ``org/name[@revision]``, or an ``InputError``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, _, revision = spec.partition("@")
    try:
        folder = snapshot_download(
            repo_id, revision=revision or None, local_files_only=True
        )
    except LocalEntryNotFoundError as exc:
        raise InputError(
            f"{spec}: not a local path, and not found in the local Hugging Face cache",
            hint=f"lineage never downloads; fetch it first, e.g. `hf download {repo_id}`",
        ) from exc
    except Exception as exc:  # malformed ids, unreadable cache folders
        raise InputError(f"{spec}: cannot resolve from the local Hugging Face cache: {exc}") from exc
    return Path(folder)
