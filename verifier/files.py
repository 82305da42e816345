"""File digests and atomic writes: what a report says about its inputs, and how it lands.

Reports name every input file by relative POSIX path, size and whole-file sha256, so a signed
report pins the exact bytes that were analysed. Outputs are written to a temporary sibling and
renamed into place, so an interrupted run never leaves a half-written report.

sha256 runs at about 2 GB/s on one core, against 10-25 GB/s for reading a warm page cache: for
a 7B pair (27 GB) the digests alone are ~14 s on one core, several times the read. ``Hashing``
therefore hashes files side by side in threads (hashlib and file reads release the GIL), and
``verify`` starts it before the analysis and collects it after, so the digests take cores the
analysis leaves idle rather than wall time of their own.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict, Field

from verifier.errors import InputError, LineageError, UsageError
from verifier.parallel import usable_cores

#: bytes read and hashed between checks for cancellation
CHUNK = 1 << 20
#: a file's sha256 (hex), given the event that abandons it
Hasher = Callable[[Path, threading.Event | None], str]


class FileRecord(BaseModel):
    """One input file: path relative to the model root (POSIX), sha256 hex digest, size."""

    model_config = ConfigDict(frozen=True)

    path: str
    #: lowercase hex, or empty for a report written with --no-hash
    sha256: str = Field(pattern=r"^([0-9a-f]{64})?$")
    size: int = Field(ge=0)


class HashingCancelled(Exception):
    """A digest abandoned because the run it served failed first."""


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """The whole file's sha256. Read in chunks (``hashlib.file_digest`` cannot be interrupted)
    so that a run failing elsewhere need not wait for a many-GB file: ``stop`` set by another
    thread abandons the digest with ``HashingCancelled``."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with path.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                if stop is not None and stop.is_set():
                    raise HashingCancelled(str(path))
                digest.update(view[:n])
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from exc
    return digest.hexdigest()


class Hashing:
    """sha256 of many files in background threads, one file per thread at a time.

    ``submit`` starts hashing files; ``wait`` blocks until every submitted file is hashed
    (reporting progress) and gives their digests. Leaving the ``with`` block because of an
    error abandons the digests still running, at their next chunk."""

    def __init__(self, hasher: Hasher = sha256_file, threads: int | None = None) -> None:
        self._hasher = hasher
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=threads or usable_cores(),
                                        thread_name_prefix="lineage-sha256")
        self._futures: dict[Path, Future[str]] = {}

    def __enter__(self) -> Hashing:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:  # queued files first, so none starts after the stop
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._stop.set()
        self._pool.shutdown(wait=True)

    def submit(self, files: Iterable[Path]) -> None:
        """Start hashing ``files`` (each file once, however often it is submitted)."""
        for path in files:
            if path not in self._futures:
                self._futures[path] = self._pool.submit(self._hasher, path, self._stop)

    def wait(self, progress: Callable[[int, int], None] | None = None) -> dict[Path, str]:
        """Every submitted file's sha256, once all are done (the first failure is raised);
        ``progress(done, total)`` after each."""
        total = len(self._futures)
        out = {}
        for done, (path, future) in enumerate(self._futures.items(), 1):
            out[path] = future.result()
            if progress is not None:
                progress(done, total)
        return out


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def records(root: Path, files: Iterable[Path],
            digests: Mapping[Path, str] | None) -> list[FileRecord]:
    """Records of ``files`` sorted by relative path, with their sha256 from ``digests`` (empty
    when None: the run was asked not to hash)."""
    return sorted((FileRecord(path=_relative(p, root),
                              sha256=digests[p] if digests is not None else "",
                              size=p.stat().st_size) for p in files), key=lambda r: r.path)


def describe_files(root: Path, files: Iterable[Path], *, digest: bool = True,
                   hasher: Hasher = sha256_file) -> list[FileRecord]:
    """Records of ``files`` sorted by relative path; ``digest=False`` leaves sha256 empty;
    ``hasher`` computes (or looks up) a file's sha256. Files are hashed side by side."""
    paths = list(files)
    if not digest:
        return records(root, paths, None)
    with Hashing(hasher) as hashing:
        hashing.submit(paths)
        return records(root, paths, hashing.wait())


def _umask() -> int:
    """The process's umask (read by setting it, so once, at import, before any thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_atomic(path: Path, data: bytes | str, mode: int | None = None, *,
                 follow: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename, so a
    reader sees the old file or the new one, never a part of either.

    * A symbolic link is followed: the file it points to is replaced, the link stays.
    * An existing file that is not a regular one (``/dev/null``, a FIFO) is written into as it
      is: a rename would put a plain file in its place (as root, in place of ``/dev/null``).
    * The file gets ``mode``, else an existing file's own permissions, else what ``open`` would
      give a new one (0o666 less the umask): mkstemp's 0600 would otherwise become the mode of
      every report. The temporary file has that mode before any byte is written.
    * A folder is refused (``IsADirectoryError``; ``""`` names the current folder).

    ``follow=False`` is for files lineage owns (cache entries): a link or special file found
    at ``path`` is not followed or written into but replaced, by the rename, with a regular
    file (a link planted in a cache folder would otherwise steer lineage's writes anywhere)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if follow and path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if follow and path.exists() and not path.is_file():
        with path.open("wb") as fh:
            fh.write(payload)
        return
    if mode is None:
        regular = path.is_file() and (follow or not path.is_symlink())
        mode = path.stat().st_mode & 0o7777 if regular else 0o666 & ~_UMASK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_output(path: Path, data: bytes | str) -> None:
    """``write_atomic`` for a file the user named: a failure is one clear line (exit 4)."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def files_read(spec: str) -> list[Path]:
    """The local files a run may read for model ``spec``, told without opening the model
    (a pickle or an ONNX graph would be read whole): a weights file and the config and
    tokenizer beside it; for a folder, every file in it except the JSON and HTML files lineage
    does not read (a report written there earlier may be replaced). None where ``spec`` names
    nothing (the run itself then says why)."""
    from verifier.model import SIDE_FILES
    from verifier.readers import resolve_path

    try:
        path = resolve_path(spec)
    except LineageError:
        return []
    if path.is_file():
        beside = [path.parent / name for name in SIDE_FILES]
        return [path, *(p for p in beside if p.is_file())]

    def read(p: Path) -> bool:
        if p.suffix.lower() not in (".json", ".html"):
            return True  # weights, shards, external data, vocab.txt, anything unknown
        return p.name in SIDE_FILES or p.name.endswith(".index.json")

    return [p for p in sorted(path.iterdir()) if p.is_file() and read(p)]


def check_outputs(outputs: Mapping[str, Path | None], inputs: Iterable[Path]) -> None:
    """Before any work: refuse outputs (by option name) that would overwrite one of the
    ``inputs`` or each other, or that name a folder (``UsageError``, exit 2). Input files are
    never modified; a run that cannot write where asked should say so before it runs."""
    def key(path: Path) -> str:
        return os.path.realpath(path)

    read = {key(p) for p in inputs}
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        where = key(path)
        if os.path.isdir(where):
            raise UsageError(f"{option} {path}: is a folder; name a file")
        if where in read:
            raise UsageError(f"{option} {path}: is a file this run reads; lineage never "
                             "overwrites its inputs")
        if where in seen:
            raise UsageError(f"{option} and {seen[where]} name the same file ({path})")
        seen[where] = option
