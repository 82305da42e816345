"""File digests and atomic writes: what a report says about its inputs, and how it lands.

Reports name every input file by relative POSIX path, size and whole-file sha256, so a signed
report pins the exact bytes that were analysed. Outputs are written to a temporary sibling and
renamed into place, so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from verifier.errors import InputError


class FileRecord(BaseModel):
    """One input file: path relative to the model root (POSIX), sha256 hex digest, size."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from exc


def describe_files(root: Path, files: Iterable[Path], *, digest: bool = True,
                   hasher: Callable[[Path], str] = sha256_file) -> list[FileRecord]:
    """Records of ``files`` sorted by relative path; ``digest=False`` leaves sha256 empty;
    ``hasher`` computes (or looks up) a file's sha256."""
    records = []
    for path in files:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.name
        records.append(
            FileRecord(
                path=rel, sha256=hasher(path) if digest else "", size=path.stat().st_size
            )
        )
    return sorted(records, key=lambda r: r.path)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
