"""PyTorch ``.bin`` / ``.pt`` / ``.pth`` state dicts, loaded with ``weights_only=True`` only.

A pickle can run arbitrary code when unpickled. ``torch.load(weights_only=True)`` uses
PyTorch's restricted unpickler, which accepts tensors, containers and primitive types and
refuses every other global; lineage never falls back to full unpickling. Zip-format checkpoints
(PyTorch >= 1.6) are memory-mapped (``mmap=True``) so tensors are read on first touch; shards of
a ``pytorch_model.bin.index.json`` are opened one at a time.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from verifier.errors import InputError
from verifier.readers.base import CheckpointReader, TensorInfo
from verifier.readers.safetensors_reader import read_weight_map, shards_from_weight_map

INDEX_NAME = "pytorch_model.bin.index.json"
SUFFIXES = (".bin", ".pt", ".pth")
# Wrappers that training code commonly puts around a state dict.
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does: a little-endian header length that
    fits the file, then a JSON object."""
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return (len(head) == 9 and head[8:9] == b"{"
            and 0 < int.from_bytes(head[:8], "little") <= size - 8)


def _starts_as_zip(path: Path) -> bool:
    """Whether ``path`` starts with a zip local-file header, as ``torch.save`` (>= 1.6) writes."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from one pickle file, or an ``InputError`` saying why not."""
    if _is_safetensors(path):  # was refused as "a pickle with objects other than weights"
        raise InputError(f"{path}: a safetensors file under a pickle's name",
                         hint="rename it to .safetensors")
    mmap = zipfile.is_zipfile(path)  # legacy (pre-1.6) pickles cannot be memory-mapped
    if not mmap and _starts_as_zip(path):
        # torch would read it as a legacy pickle and fail with "[Errno 22] Invalid argument"
        raise InputError(f"{path}: a damaged or truncated PyTorch zip checkpoint (its zip "
                         "directory, written last, is missing)",
                         hint="copy or download the file again")
    try:
        # torch's own warnings (an old pickle protocol) would break the one-line error contract
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(  # noqa: TID251 - the one sanctioned call, always weights_only
                path, map_location="cpu", weights_only=True, mmap=mmap
            )
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except Exception as exc:  # the restricted unpickler raises UnpicklingError, RuntimeError...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise InputError(
                f"{path}: refused: the pickle holds objects other than plain weights; "
                "lineage never unpickles code",
                hint="convert the checkpoint to safetensors with the framework that wrote it",
            ) from exc
        raise InputError(f"{path}: not a readable PyTorch checkpoint: {first[:200]}") from exc
    return _flatten(path, obj)


def _flatten(path: Path, obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"{path}: not a plain state dict: {len(bad)} entries are not tensors "
            f"(e.g. {', '.join(bad[:3])})"
        )
    # sparse, quantised and complex tensors load under weights_only, but are no dense real
    # matrices: every probe failed on them with torch's own RuntimeError
    odd = [f"{k} ({v.layout if v.layout is not torch.strided else v.dtype})"
           for k, v in obj.items()
           if v.layout is not torch.strided or v.is_quantized or v.is_complex()]
    if odd:
        raise InputError(
            f"{path}: holds {len(odd)} tensors that are not dense real numbers (e.g. "
            f"{', '.join(odd[:3])}); lineage reads dense weights",
            hint="dequantise or densify the checkpoint with the framework that wrote it",
        )
    names = [str(k) for k in obj]
    if len(set(names)) != len(names):  # {1: a, "1": b} would keep only one of them
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}: two entries share the name {twice!r}")
    return {str(k): v for k, v in obj.items()}


class TorchCheckpoint(CheckpointReader):
    """One ``.bin``/``.pt`` file, or the shards of a ``pytorch_model.bin.index.json``."""

    format = "pytorch"

    def __init__(self, root: Path, files: list[Path]) -> None:
        super().__init__(root, files)
        self._infos: list[TensorInfo] = []
        self._where: dict[str, Path] = {}
        self._current: tuple[Path, dict[str, torch.Tensor]] | None = None
        for path in files:
            state = self._state(path)
            for name, tensor in state.items():
                if name in self._where:
                    raise InputError(f"{path}: tensor {name!r} appears in two shards")
                self._where[name] = path
                self._infos.append(
                    TensorInfo(
                        name=name,
                        shape=tuple(tensor.shape),
                        dtype=_dtype_name(tensor.dtype),
                        file=self.relative(path),
                    )
                )

    @classmethod
    def from_path(cls, path: Path) -> TorchCheckpoint:
        if path.is_file():
            return cls(path.parent, [path])
        index = path / INDEX_NAME
        if index.is_file():
            return cls(path, shards_from_weight_map(index, read_weight_map(index)))
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{path}: no .bin/.pt files in this folder")
        return cls(path, files)

    def _state(self, path: Path) -> dict[str, torch.Tensor]:
        # One shard stays open at a time: with mmap its tensors cost address space, not memory.
        if self._current is None or self._current[0] != path:
            self._current = (path, load_state_dict(path))
        return self._current[1]

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def load(self, name: str) -> torch.Tensor:
        path = self._where.get(name)
        if path is None:
            raise InputError(f"{self.root}: no tensor named {name!r} in this checkpoint")
        return self._state(path)[name]

    def close(self) -> None:
        self._current = None
