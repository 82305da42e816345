"""The reader interface: a checkpoint as a lazy collection of named tensors.

A reader knows the tensors' names, shapes and dtypes from headers alone and materialises one
tensor at a time on request, so that callers can keep peak memory bounded by a few tensors
rather than by the model. Every format (safetensors, PyTorch pickles, GGUF, ONNX) implements
this interface; nothing above the readers knows which format a model came in.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch


def name_inside(root: Path, name: str) -> Path | None:
    """``root / name`` when the name, as written, stays inside ``root`` (no ``..`` past it, an
    absolute path only into it, no NUL), else None. Links are not followed: the files of a
    Hugging Face snapshot are links into the cache's blob store, and they are the model's own;
    what is refused is an index or a graph that names files elsewhere."""
    if not name or "\x00" in name:
        return None
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, name))
    return Path(full) if full.startswith(base + os.sep) else None


@dataclass(frozen=True)
class TensorInfo:
    """What a header says about one tensor.

    ``shape`` is in PyTorch order (outermost first). ``dtype`` is the stored type as a short
    lower-case name (``bfloat16``, ``float16``, ``float32``, ``int8``, or a quantisation such as
    ``q4_k`` for GGUF); ``load`` may return a different, wider dtype for quantised storage.
    ``file`` is the path of the file that holds it, relative to the model's root.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class CheckpointReader(ABC):
    """A checkpoint opened for reading. Use as a context manager; never modifies its files."""

    #: short format name reported to users ("safetensors", "pytorch", "gguf", "onnx")
    format: str = ""

    def __init__(self, root: Path, files: list[Path]) -> None:
        self.root = root
        self.files = files

    @abstractmethod
    def tensors(self) -> list[TensorInfo]:
        """All tensors, from headers only, in a stable order."""

    @abstractmethod
    def load(self, name: str) -> torch.Tensor:
        """One tensor, materialised (quantised storage is dequantised to float32)."""

    def will_need(self, names: Iterable[str]) -> None:  # noqa: B027 - optional hook
        """Start reading these tensors' bytes into the page cache without waiting for them
        (``verifier.readahead``). Readers that map their files override it; for the others a
        tensor is read when loaded, and there is nothing to start early."""

    def config(self) -> dict[str, Any] | None:
        """A Hugging Face-style config, when the format carries one (GGUF metadata does)."""
        return None

    def vocabulary(self) -> list[str] | None:
        """Token strings by id, when the format carries a tokenizer."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles and maps."""

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def iter_tensors(self) -> Iterator[tuple[TensorInfo, torch.Tensor]]:
        """Every tensor in order, one at a time; the caller drops each before the next."""
        for info in self.tensors():
            yield info, self.load(info.name)

    def relative(self, path: Path) -> str:
        """A file's path relative to the model root, in POSIX form (stable across hosts)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name
