"""A checkpoint opened for analysis: its reader, its config and its role layout.

This is the one place that ties a path to everything lineage knows about it; probes, ``inspect``
and ``verify`` start from ``open_model``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from verifier.architectures import RoleMap, resolve_layout
from verifier.architectures.completeness import missing_roles, unread_tensors
from verifier.architectures.layout import ModelLayout, RoleRef, load_role
from verifier.architectures.shape_check import check_shapes
from verifier.errors import InputError
from verifier.readahead import Readahead
from verifier.readers import open_checkpoint, resolve_path
from verifier.readers.base import CheckpointReader

CONFIG_NAME = "config.json"
TOKENIZER_NAME, VOCAB_NAME = "tokenizer.json", "vocab.txt"
#: the files beside the weights that a model is read with (``files.files_read`` protects them)
SIDE_FILES = (CONFIG_NAME, TOKENIZER_NAME, VOCAB_NAME)


@dataclass
class Model:
    """An opened model. Use as a context manager; it holds file maps, never the weights."""

    spec: str
    path: Path
    reader: CheckpointReader
    config: dict[str, Any] | None
    layout: ModelLayout
    warnings: list[str] = field(default_factory=list)
    #: starts reading layers the analysis will visit next (``will_need``)
    readahead: Readahead = field(default_factory=Readahead, repr=False)
    #: per thread, the roles loaded inside ``holding`` (None outside it)
    _held: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @property
    def format(self) -> str:
        return self.reader.format

    def load(self, ref: RoleRef) -> torch.Tensor:
        """One role in canonical ``[out, in]`` orientation (inside ``holding``, the tensor an
        earlier load of ``ref`` gave)."""
        held: dict[RoleRef, torch.Tensor] | None = getattr(self._held, "roles", None)
        if held is None:
            return load_role(self.reader, ref)
        if ref not in held:
            held[ref] = load_role(self.reader, ref)
        return held[ref]

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Within it, each role this thread loads is loaded once and given again to later
        loads; after it, nothing is kept. A layer's probe and its statistics read the same
        roles: from a mapped file that costs nothing twice, but an FP8 or INT8 role was
        dequantised twice (on a 7B-shaped FP8 pair, 8.7 s of an 84 s verify)."""
        outer = getattr(self._held, "roles", None)
        if outer is None:
            self._held.roles = {}
        try:
            yield
        finally:
            if outer is None:
                self._held.roles = None

    def will_need(self, layer: int, roles: Collection[str] | None = None) -> None:
        """Start reading ``layer``'s tensors (those holding ``roles``; all of the layer's when
        None, its experts' included) in the background, for the analysis to find in the page
        cache when it gets there. A hint: it changes no result, and does nothing for readers
        that load by copying."""
        if not 0 <= layer < len(self.layout.layers):
            return
        ll = self.layout.layers[layer]
        refs = [*ll.roles.items()] + [
            item for group in (*ll.experts, *ll.shared_experts) for item in group.items()]
        names = list(dict.fromkeys(name for role, ref in refs
                                   if roles is None or role in roles
                                   for name in (ref.tensor, ref.scale) if name))
        if names:
            self.readahead.submit(lambda: self.reader.will_need(names))

    @cached_property
    def side_files(self) -> list[Path]:
        """The config and tokenizer files beside the weights that this model is read with
        (``side_files_read``); asked for by the digests and the report alike, looked up once
        (a GGUF file's tokenizer is parsed to tell)."""
        return side_files_read(self.reader)

    def vocabulary(self) -> list[str] | None:
        """Token strings by id from the format itself or tokenizer files beside the weights."""
        return self.reader.vocabulary() or read_vocabulary(self.reader.root)

    def close(self) -> None:
        self.readahead.close()  # before the reader: a request may be using it
        self.reader.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def side_files_read(reader: CheckpointReader) -> list[Path]:
    """``config.json`` beside the weights when the format carries no config of its own, and
    ``tokenizer.json`` and ``vocab.txt`` when it carries no tokenizer (both, where both are
    there: which one answers depends on the first's content), as the model is opened
    (``open_model``) and its vocabulary read (``Model.vocabulary``)."""
    names = ([] if reader.config() is not None else [CONFIG_NAME]) + (
        [] if reader.vocabulary() is not None else [TOKENIZER_NAME, VOCAB_NAME])
    return [reader.root / n for n in names if (reader.root / n).is_file()]


def read_config(folder: Path) -> dict[str, Any] | None:
    """``config.json`` beside the weights, if any; a broken one is an error, not a guess."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object")
    return config


def read_vocabulary(folder: Path) -> list[str] | None:
    """Token strings by id from ``tokenizer.json`` (model.vocab) or ``vocab.txt`` (BERT)."""
    # a tokenizer file that is not one counts as none (the run then says it assumed the rows
    # line up), never as a traceback: nested past the parser's depth, ids that are not
    # integers, a vocab.txt that is not UTF-8
    tok = folder / TOKENIZER_NAME
    if tok.is_file():
        try:
            vocab = json.loads(tok.read_text(encoding="utf-8"))["model"]["vocab"]
            if isinstance(vocab, dict) and vocab:
                by_id = sorted(((int(i), str(t)) for t, i in vocab.items()), key=lambda p: p[0])
                return [t for _, t in by_id]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass
    txt = folder / VOCAB_NAME
    if txt.is_file():
        try:
            return txt.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError):
            return None
    return None


def open_model(spec: str | Path, *, role_map: RoleMap | None = None) -> Model:
    """Open ``spec`` (folder, weights file or cached repo id) and map its tensors to roles."""
    path = resolve_path(str(spec))
    reader = open_checkpoint(path)
    try:
        config = reader.config() or read_config(path if path.is_dir() else path.parent)
        layout = resolve_layout(reader.tensors(), config, fmt=reader.format, role_map=role_map)
        check_shapes(layout, {t.name: t.shape for t in reader.tensors()})
    except BaseException:
        reader.close()
        raise
    return Model(spec=str(spec), path=path, reader=reader, config=config, layout=layout,
                 warnings=unread_tensors(layout) + missing_roles(layout))
