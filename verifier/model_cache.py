"""Per-model results reused across verifications: file digests, per-layer norm statistics, the
base's power check and, on a frame, the base's side of the null draws.

Verifying N bases against M candidates pairs every base with every candidate, but several parts
of a verification depend on one model only: the sha256 of each of its files (a whole read of the
model), its per-layer weight statistics (``norm_drift.layer_stats``, a read of every dense
tensor) and, for a base, the power check (``verify``'s test of the base against a noisy,
signed-permuted copy of itself: a fifth of a dense verification's time). A ``ModelCache``
computes each once per model, so N x M verifications read each model for these N + M times,
not N x M, and run N power checks, not N x M. With a folder it also keeps, per base, the
products of its sampled neurons and heads with each null draw's frame (``kept_draws``: ~30% of
a later verification on a wide model).

Entries are keyed by what determines them: a file digest by the file's resolved path, size,
modification and status-change times (nanoseconds) and inode, so an edited or replaced file is
rehashed even when its size and mtime were put back; layer statistics by the fingerprints of
all the model's files plus its layout (which tensor plays which role, as the architecture
adapter or a role map decided, and the head geometry the config gives); a power check by those,
the version of lineage, and everything else it reads (``power_check``). The cache lives in
memory and, given a folder, also as one small JSON file per entry, written atomically, so later
runs reuse it. A corrupt or foreign entry, or one that does not fit the model (a layer or role
missing, no p-values), is ignored and recomputed; entries are read only from regular files not
reached through a link, and a link or FIFO planted where an entry goes is replaced, never
written through. An entry forged to fit (the right key, plausible numbers) is not detected:
the folder is the user's own, and the draws, the costliest entries, are checked against one
draw computed again (``kept_draws``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from verifier import __version__
from verifier.files import FileRecord, describe_files, sha256_file, write_atomic
from verifier.kept_draws import KeptDraws
from verifier.model import Model
from verifier.probes import DECISIVE
from verifier.probes.norm_drift import STAT_ROLES, RoleStats

#: bumped when the meaning of an entry changes, so old cache folders are not misread (2: layer
#: statistics as ordered [role, stats] pairs; 3: files keyed by inode and change time too,
#: models by their head geometry and every role, experts' and globals' included; 4: head
#: matching reads each layer's heads from its weights, so a power check or null draws kept
#: before may have left out layers it now compares; 5: a hybrid's power check disguises its
#: middle FFN and its middle attention even where no one block holds both, and latent
#: attention's heads are matched; 6: latent attention's power check disguises the parts of
#: its factors, not the formed factors)
CACHE_FORMAT = 6
LayerStats = list[dict[str, RoleStats]]


@dataclass
class CacheCounts:
    """What the cache did: digests and statistics computed versus reused, and bytes hashed."""

    files_hashed: int = 0
    bytes_hashed: int = 0
    file_hits: int = 0
    stats_computed: int = 0
    stats_hits: int = 0
    power_computed: int = 0
    power_hits: int = 0
    draws_computed: int = 0
    draws_hits: int = 0


@dataclass(frozen=True)
class FileKey:
    """A file's identity for caching: resolved path, size, modification time, inode and
    status-change time. The last two are what a user cannot set back: content written over a
    file with its old size and ``touch -r``'s old mtime still moves ``ctime``, and a file
    replaced by another (a rename over it) has another inode."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        from verifier.errors import InputError

        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"{path}: cannot stat: {exc.strerror or exc}") from exc
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def digest(self) -> str:
        return _hash(["file", CACHE_FORMAT, self.path, self.size, self.mtime_ns, self.inode,
                      self.ctime_ns])


def read_entry(path: Path) -> bytes:
    """A cache entry's bytes, only from a regular file reached without following a link
    (``OSError`` otherwise): a FIFO planted in the folder hung the run, a link read
    whatever it pointed at. Non-blocking, so a FIFO is seen for what it is, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _hash(parts: Iterable[object]) -> str:
    return hashlib.sha256(json.dumps(list(parts), default=str).encode("utf-8")).hexdigest()


class ModelCache:
    """File digests and layer statistics per model, in memory and optionally in ``directory``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.counts = CacheCounts()
        self._sha: dict[FileKey, str] = {}
        self._stats: dict[str, LayerStats] = {}
        self._power: dict[str, PowerEntry] = {}
        self._lock = threading.Lock()  # files are hashed in threads (``files.Hashing``)
        #: the first failure to store an entry (a full disk, a read-only folder): the
        #: verification goes on, the entry is only kept in memory
        self.write_error: str | None = None

    # --- file digests --------------------------------------------------------------------------

    def sha256(self, path: Path, stop: threading.Event | None = None) -> str:
        """The sha256 of ``path``, hashed only if this (path, size, mtime) was never hashed;
        ``stop`` abandons the hashing as in ``files.sha256_file``."""
        key = FileKey.of(path)
        cached = self._sha.get(key)
        if cached is None:
            cached = self._load_sha(key)
        if cached is not None:
            with self._lock:
                self.counts.file_hits += 1
                self._sha[key] = cached
            return cached
        digest = sha256_file(path, stop)
        with self._lock:
            self.counts.files_hashed += 1
            self.counts.bytes_hashed += key.size
            self._sha[key] = digest
        self._store(f"files/{key.digest()}.json", {"format": CACHE_FORMAT, "key": key.__dict__,
                                                   "sha256": digest})
        return digest

    def describe_files(self, root: Path, files: Iterable[Path], *,
                       digest: bool = True) -> list[FileRecord]:
        """``verifier.files.describe_files`` with cached digests: same records, same order."""
        return describe_files(root, files, digest=digest, hasher=self.sha256)

    # --- layer statistics ------------------------------------------------------------------------

    def model_key(self, model: Model) -> str:
        """Fingerprint of what a model's cached results depend on: every file's identity, the
        layout's role assignment (dense roles, experts, shared experts, globals) and the shapes
        the config decides (head counts and head size split the attention into heads: a config
        edited beside unchanged weights changes head matching, so it changes the key)."""
        lay = model.layout
        files = sorted((FileKey.of(p) for p in model.reader.files), key=lambda k: k.path)

        def roles(group: dict[str, object]) -> list[tuple[str, str]]:
            return sorted((role, repr(ref)) for role, ref in group.items())

        layers = [[roles(layer.roles), [roles(e) for e in layer.experts],
                   [roles(e) for e in layer.shared_experts]] for layer in lay.layers]
        geometry = [lay.family, lay.model_type, lay.hidden_size, lay.vocab_size,
                    lay.intermediate_size, lay.num_heads, lay.num_kv_heads, lay.head_dim]
        # the version too: statistics computed by another lineage may have been computed
        # otherwise (power checks and draws carry it as well)
        return _hash(["stats", CACHE_FORMAT, __version__, [k.__dict__ for k in files],
                      roles(lay.globals), layers, geometry])

    def has_layer_stats(self, model: Model, variant: str = "") -> bool:
        """Whether ``layer_stats`` would answer without computing."""
        return self._known_stats(model, self._stats_key(model, variant)) is not None

    def layer_stats(self, model: Model, compute: Callable[[], LayerStats],
                    variant: str = "") -> LayerStats:
        """The model's per-layer role statistics; ``compute()`` runs only on a miss. ``variant``
        tells apart statistics computed differently (e.g. from a sample of rows)."""
        key = self._stats_key(model, variant)
        cached = self._known_stats(model, key)
        if cached is not None:
            self.counts.stats_hits += 1
            return cached
        stats = compute()
        self.counts.stats_computed += 1
        self._stats[key] = stats
        self._store(f"stats/{key}.json", {
            "format": CACHE_FORMAT, "key": key,
            # [role, stats] pairs: the entry is written with sorted keys, and the roles' order
            # is the order of the report's norm drift rows
            "layers": [[[role, s.model_dump()] for role, s in layer.items()] for layer in stats],
        })
        return stats

    # --- power checks ----------------------------------------------------------------------------

    def power_check(self, model: Model, parts: list[object], rng: np.random.Generator,
                    gen: torch.Generator, compute: Callable[[], dict[str, float]],
                    ) -> dict[str, float]:
        """The power check of base ``model``: its p-values by probe, ``compute()`` run only on
        a miss. ``parts``: everything besides the model's files and layout that the check reads
        (the shared token rows, the options, the device). The random streams it draws from are
        part of the key as they stand on entry, and a hit leaves them where ``compute()`` left
        them, so the rest of the verification draws what it would have drawn: a report is the
        same with the cache and without it."""
        key = _hash(["power", CACHE_FORMAT, __version__, self.model_key(model), parts,
                     rng.bit_generator.state, _torch_state(gen)])
        entry = self._power.get(key) or self._load_power(key, rng, gen)
        if entry is not None:
            self.counts.power_hits += 1
            self._power[key] = entry
            rng.bit_generator.state = entry.rng
            gen.set_state(entry.torch_state())
            return dict(entry.power)
        power = compute()
        self.counts.power_computed += 1
        entry = PowerEntry(dict(power), rng.bit_generator.state, _torch_state(gen))
        self._power[key] = entry
        self._store(f"power/{key}.json", {"format": CACHE_FORMAT, "key": key,
                                          "power": entry.power, "rng": entry.rng,
                                          "gen": entry.gen})
        return power

    # --- the base's side of a frame's null draws -----------------------------------------------

    def base_draws(self, model: Model, parts: list[object], draws: int) -> KeptDraws | None:
        """Where a frame pairing of base ``model`` keeps its base's side of the null draws
        (``verifier.kept_draws``); ``parts``: what fixes them besides the model (the frame's
        fingerprint, the device). None without a folder: held in memory instead of mapped
        from the page cache they would add ~340 MiB of private memory per base at any width."""
        if self.directory is None:
            return None
        key = _hash(["draws", CACHE_FORMAT, __version__, self.model_key(model), parts, draws])
        return KeptDraws(self.directory / "draws", key, draws, self._write, self._count_draw)

    def _count_draw(self, hit: bool) -> None:
        if hit:
            self.counts.draws_hits += 1
        else:
            self.counts.draws_computed += 1

    # --- persistence -------------------------------------------------------------------------------

    def _store(self, name: str, entry: dict[str, object]) -> None:
        if self.directory is not None:
            self._write(self.directory / name, json.dumps(entry, sort_keys=True).encode("utf-8"))

    def _write(self, path: Path, data: bytes) -> None:
        """Store ``data`` at ``path`` atomically; a failure is kept (the first), not raised."""
        try:
            write_atomic(path, data, follow=False)  # a planted link is replaced, not followed
        except OSError as exc:
            with self._lock:
                if self.write_error is None:
                    self.write_error = f"{path}: {exc.strerror or exc}"

    def _read(self, name: str) -> dict[str, object] | None:
        if self.directory is None:
            return None
        try:
            entry = json.loads(read_entry(self.directory / name).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return entry if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT else None

    def _load_sha(self, key: FileKey) -> str | None:
        entry = self._read(f"files/{key.digest()}.json")
        if entry is None or entry.get("key") != key.__dict__:
            return None
        sha = entry.get("sha256")
        ok = isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        return sha if ok else None

    def _stats_key(self, model: Model, variant: str) -> str:
        return self.model_key(model) + (f"-{variant}" if variant else "")

    def _known_stats(self, model: Model, key: str) -> LayerStats | None:
        """Statistics held in memory or stored (then held), without computing any."""
        cached = self._stats.get(key)
        if cached is None:
            cached = self._load_stats(model, key)
            if cached is not None:
                self._stats[key] = cached
        return cached

    def _load_stats(self, model: Model, key: str) -> LayerStats | None:
        """Stored statistics that fit ``model``: one entry per layer, each with exactly the
        roles ``norm_drift`` takes statistics of, in its order (an entry that parses but lacks
        a layer or a role crashed norm drift, or shrank its table)."""
        entry = self._read(f"stats/{key}.json")
        if entry is None or entry.get("key") != key or not isinstance(entry.get("layers"), list):
            return None
        try:
            found = [{role: RoleStats.model_validate(s) for role, s in layer}
                     for layer in entry["layers"]]
        except (ValidationError, AttributeError, TypeError, ValueError):
            return None
        want = [[r for r in STAT_ROLES if r in layer.roles] for layer in model.layout.layers]
        return found if [list(layer) for layer in found] == want else None

    def _load_power(self, key: str, rng: np.random.Generator,
                    gen: torch.Generator) -> PowerEntry | None:
        """A stored power check whose p-values are p-values and whose random states the two
        streams accept (tried on fresh generators of the same kinds, never on the run's)."""
        entry = self._read(f"power/{key}.json")
        if entry is None or entry.get("key") != key:
            return None
        power, state, gstate = entry.get("power"), entry.get("rng"), entry.get("gen")
        # p-values of decisive probes, at least one: an emptied entry read as "no power"
        if not (isinstance(power, dict) and power and set(power) <= set(DECISIVE)
                and isinstance(state, dict) and isinstance(gstate, str)) or not all(
                isinstance(k, str) and isinstance(v, float) and 0.0 <= v <= 1.0
                for k, v in power.items()):
            return None
        found = PowerEntry(power, state, gstate)
        try:
            type(rng.bit_generator)().state = state
            torch.Generator(device=gen.device).set_state(found.torch_state())
        except (TypeError, ValueError, KeyError, RuntimeError):
            return None
        return found


@dataclass(frozen=True)
class PowerEntry:
    """A power check's p-values and where it left the run's two random streams (numpy's state
    as its bit generator reports it, torch's as hex bytes)."""

    power: dict[str, float]
    rng: dict[str, object]
    gen: str

    def torch_state(self) -> torch.Tensor:
        return torch.tensor(list(bytes.fromhex(self.gen)), dtype=torch.uint8)


def _torch_state(gen: torch.Generator) -> str:
    return bytes(gen.get_state().tolist()).hex()


__all__ = ["CACHE_FORMAT", "CacheCounts", "FileKey", "LayerStats", "ModelCache", "PowerEntry"]
