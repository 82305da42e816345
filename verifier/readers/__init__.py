"""Checkpoint readers: one per storage format, chosen by what a path holds.

``open_checkpoint`` accepts a weights file, a model folder, or a Hugging Face repo id present
in the local cache, and returns a lazy ``CheckpointReader``. Formats register in ``FORMATS`` in
priority order: a folder holding both safetensors and a ``.bin`` is read as safetensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import InputError
from verifier.readers.base import CheckpointReader, TensorInfo
from verifier.readers.hub import looks_like_repo_id, resolve_cached_repo


def _safetensors(path: Path) -> CheckpointReader:
    from verifier.readers.safetensors_reader import SafetensorsCheckpoint

    return SafetensorsCheckpoint.from_path(path)


def _pytorch(path: Path) -> CheckpointReader:
    from verifier.readers.torch_reader import TorchCheckpoint

    return TorchCheckpoint.from_path(path)


def _gguf(path: Path) -> CheckpointReader:
    from verifier.readers.gguf_reader import GGUFCheckpoint

    return GGUFCheckpoint(_single(path, ".gguf"))


def _onnx(path: Path) -> CheckpointReader:
    from verifier.readers.onnx_reader import ONNXCheckpoint

    return ONNXCheckpoint(_single(path, ".onnx"))


def _single(path: Path, suffix: str) -> Path:
    """Formats stored as one file: a folder must hold exactly one such file."""
    if path.is_file():
        return path
    found = sorted(p for p in path.glob(f"*{suffix}") if p.is_file())  # not a FIFO or folder
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"{path}: holds {len(found)} {suffix} files ({names}); name one of them")
    return found[0]


@dataclass(frozen=True)
class Format:
    """A storage format: which file suffixes it owns and how to open a path holding them."""

    name: str
    suffixes: tuple[str, ...]
    open: Callable[[Path], CheckpointReader]
    index: str | None = None  # a shard index that marks a folder as this format

    def claims(self, file_names: list[str]) -> bool:
        return any(n.endswith(self.suffixes) or n == self.index for n in file_names)


FORMATS: tuple[Format, ...] = (
    Format("safetensors", (".safetensors",), _safetensors, "model.safetensors.index.json"),
    Format("pytorch", (".bin", ".pt", ".pth"), _pytorch, "pytorch_model.bin.index.json"),
    Format("gguf", (".gguf",), _gguf),
    Format("onnx", (".onnx",), _onnx),
)


def resolve_path(spec: str) -> Path:
    """A local path for ``spec``: the path itself if it exists, else a cached Hub snapshot.
    An empty ``spec`` is refused: ``Path("")`` is the current folder, and an unset shell
    variable (``lineage verify "$BASE" ...``) verified whatever folder the shell was in."""
    if not spec.strip():
        raise InputError("an empty model path: name a folder, a weights file or a repo id")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if looks_like_repo_id(spec):
        return resolve_cached_repo(spec)
    raise InputError(f"{spec}: no such file or folder")


def format_for(path: Path) -> Format:
    """The format of a file by suffix, or of a folder by the first format it holds files of."""
    if path.is_file():
        for fmt in FORMATS:
            if path.suffix.lower() in fmt.suffixes:
                return fmt
        known = ", ".join(s for f in FORMATS for s in f.suffixes)
        raise InputError(f"{path}: unknown weights format {path.suffix!r} (lineage reads {known})")
    if not path.is_dir():
        raise InputError(f"{path}: neither a file nor a folder")
    names = [p.name.lower() for p in path.iterdir() if p.is_file()]
    for fmt in FORMATS:
        if fmt.claims(names):
            return fmt
    raise InputError(
        f"{path}: no weights found in this folder",
        hint="expected .safetensors (optionally with model.safetensors.index.json), .bin, .gguf or .onnx",
    )


def open_checkpoint(spec: str | Path) -> CheckpointReader:
    """Open a weights file, a model folder, or a locally cached Hub repo id, lazily."""
    path = resolve_path(str(spec))
    return format_for(path).open(path)


__all__ = ["FORMATS", "CheckpointReader", "Format", "TensorInfo", "open_checkpoint", "resolve_path"]
