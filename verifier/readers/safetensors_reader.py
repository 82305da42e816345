"""safetensors checkpoints, single-file or sharded, read through the `safetensors` library.

The library validates headers (length, JSON, dtypes, offsets covering the data exactly) and
memory-maps the data, so ``get_tensor`` touches only the bytes of the tensor asked for. The
returned tensor is a view of the map and every page it touched stays resident while the map
lives, so a handle kept open for a whole sweep grows resident memory to the size of the file.
Each ``load`` therefore opens its own short-lived handle (re-parsing a header costs microseconds
per tensor): the pages are released with the tensor, and peak memory stays near one tensor.
This module adds what the library cannot know: shard indexes (``model.safetensors.index.json``),
missing shards, and messages that tell a user which file is broken and why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from verifier.errors import InputError
from verifier.readahead import will_need
from verifier.readers.base import CheckpointReader, TensorInfo, name_inside

INDEX_NAME = "model.safetensors.index.json"

# safetensors dtype names -> the short names lineage reports.
_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}

_REASONS = {
    "incomplete metadata": "the file is truncated, or its header describes more data than it holds",
    "header too large": "the header length is implausibly large (not a safetensors file?)",
    "header too small": "the file is too short to hold a safetensors header",
    "invalid header length": "the header length is larger than the file (truncated?)",
    "invalid shape, data type, or offset": "a tensor's offsets point past the end of its data",
    "unknown variant": "a tensor has a dtype safetensors does not know",
    "invalid JSON": "the header is not valid JSON",
}


def _explain(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for key, reason in _REASONS.items():
        if key in text:
            return f"{reason} [{text[:160]}]"
    return text[:200]


class SafetensorsCheckpoint(CheckpointReader):
    """One or more ``.safetensors`` files that together hold one model."""

    format = "safetensors"

    def __init__(self, root: Path, files: list[Path]) -> None:
        super().__init__(root, files)
        self._where: dict[str, Path] = {}
        self._infos: list[TensorInfo] = []
        for path in files:
            with self._open(path) as handle:
                _refuse_duplicate_names(path)
                self._index_file(path, handle)

    def _index_file(self, path: Path, handle: Any) -> None:
        for name in handle.keys():
            if name in self._where:
                raise InputError(
                    f"{self.relative(path)}: tensor {name!r} also appears in "
                    f"{self.relative(self._where[name])}; shards must not overlap"
                )
            self._where[name] = path
            sl = handle.get_slice(name)
            dtype = sl.get_dtype()
            self._infos.append(
                TensorInfo(
                    name=name,
                    shape=tuple(int(d) for d in sl.get_shape()),
                    dtype=_DTYPES.get(dtype, dtype.lower()),
                    file=self.relative(path),
                )
            )

    @classmethod
    def from_path(cls, path: Path) -> SafetensorsCheckpoint:
        """A folder (sharded via the index, or its ``*.safetensors`` files) or one file."""
        if path.is_file():
            return cls(path.parent, [path])
        index = path / INDEX_NAME
        if index.is_file():
            weight_map = read_weight_map(index)
            reader = cls(path, shards_from_weight_map(index, weight_map))
            reader._check_index(index, weight_map)
            return reader
        # regular files only: a FIFO named *.safetensors blocked the open forever
        files = sorted(p for p in path.glob("*.safetensors") if p.is_file())
        if not files:
            raise InputError(f"{path}: no .safetensors files in this folder")
        return cls(path, files)

    def _open(self, path: Path) -> Any:
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except SafetensorError as exc:
            raise InputError(f"{path}: not a readable safetensors file: {_explain(exc)}") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        return handle

    def _check_index(self, index: Path, weight_map: dict[str, str]) -> None:
        """Every tensor the index names must sit in the shard it names."""
        for name, shard in weight_map.items():
            where = self._where.get(name)
            if where is None or where.name != Path(shard).name:
                found = self.relative(where) if where else "no shard"
                raise InputError(
                    f"{index}: names tensor {name!r} in {shard!r}, but it is in {found}"
                )

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def load(self, name: str) -> torch.Tensor:
        path = self._where.get(name)
        if path is None:
            raise InputError(f"{self.root}: no tensor named {name!r} in this checkpoint")
        try:
            with self._open(path) as handle:
                return handle.get_tensor(name)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise InputError(f"{path}: cannot read tensor {name!r}: {_explain(exc)}") from exc

    def will_need(self, names: Iterable[str]) -> None:
        for name in names:
            path = self._where.get(name)
            if path is None:
                continue
            # a view of the file's map (zero-copy); the advice reads its pages, the view is
            # dropped at once, and the pages stay in the page cache for the load to find
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                will_need(handle.get_tensor(name))


def _refuse_duplicate_names(path: Path) -> None:
    """A header naming one tensor twice says two things; the library keeps the last entry
    silently, and another reader may keep the first. The library has checked the length and
    the JSON by now, so only the names are looked at here (a header is kilobytes)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise InputError(f"{path}: the safetensors header names {key!r} twice",
                                 hint="the file is damaged or was written by a faulty tool")
            seen.add(key)
        return dict(items)

    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        json.loads(fh.read(size), object_pairs_hook=pairs)


def read_weight_map(index: Path) -> dict[str, str]:
    """``weight_map`` of a Hugging Face shard index: ``{tensor name: shard file name}``."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # nesting past the parser's depth
        raise InputError(f"{index}: not a valid shard index ({exc})") from exc
    # said in words: the bare KeyError / TypeError texts were "('weight_map')" and "list
    # indices must be integers or slices, not str"
    if not isinstance(data, dict):
        problem = "not a JSON object"
    elif "weight_map" not in data:
        problem = "no weight_map"
    elif not isinstance(data["weight_map"], dict):
        problem = "weight_map is not an object"
    elif not all(isinstance(v, str) and "\x00" not in v for v in data["weight_map"].values()):
        problem = "weight_map names a shard by something other than a file name"
    else:
        return {str(k): v for k, v in data["weight_map"].items()}
    raise InputError(f"{index}: not a valid shard index ({problem})")


def shards_from_weight_map(index: Path, weight_map: dict[str, str]) -> list[Path]:
    """The shard files an index names, in a stable order; every one must exist.

    Shard names are relative to the index's folder; names that escape it are refused.
    """
    shards: dict[Path, Path] = {}  # by real path: "x", "./x" and an absolute name are one
    for shard in sorted(set(weight_map.values())):
        path = name_inside(index.parent, shard)
        if path is None:
            raise InputError(f"{index}: shard {shard!r} lies outside the model folder")
        if not path.is_file():
            raise InputError(
                f"{index}: shard {shard!r} is missing",
                hint="download the complete checkpoint; lineage never reads partial models",
            )
        shards.setdefault(Path(os.path.realpath(path)), index.parent / shard)
    return list(shards.values())
