"""Build zoo models into a folder cache, one sub-folder per spec hash.

Builds are reused whenever a complete folder for the same spec exists, so a cache directory can
be shared between test sessions. A spec that differs from another only in save format (dtype,
shards) is exported from that float32 single-file build instead of being trained again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from verifier.zoo import derive
from verifier.zoo.export import is_complete, load_model, load_state, read_stats, save_hf_folder
from verifier.zoo.specs import STANDARD, ModelSpec
from verifier.zoo.train import train


def trained_form(spec: ModelSpec) -> ModelSpec:
    """The float32 single-file spec whose training gives ``spec``'s weights."""
    return spec.model_copy(update={"dtype": "float32", "num_shards": 1})


def build_model(spec: ModelSpec, root: Path, *, threads: int = 1) -> Path:
    """The folder of ``spec`` under ``root``, training (and building parents) only if needed."""
    folder = Path(root) / spec.folder_name()
    if is_complete(folder):
        return folder
    base = trained_form(spec)
    if base != spec:
        source = build_model(base, root, threads=threads)
        model, stats = load_model(source), read_stats(source)
    else:
        init = None
        if spec.parent is not None:
            init = load_state(build_model(spec.parent, root, threads=threads))
            if spec.derivation is not None:
                init = derive.apply(spec.derivation, init, spec)
        model, stats = train(spec, init, threads=threads)
    if is_complete(folder):
        return folder
    return save_hf_folder(model, spec, folder, stats)


class Zoo:
    """Named specs built lazily under one root: ``zoo.llama`` or ``zoo["llama"]`` is a folder.

    Each model is trained the first time it is asked for, then served from the cache.
    """

    def __init__(
        self, root: Path, specs: Mapping[str, ModelSpec] = STANDARD, *, threads: int = 1
    ) -> None:
        self.root = Path(root)
        self.specs = dict(specs)
        self.threads = threads
        self._paths: dict[str, Path] = {}

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def spec(self, name: str) -> ModelSpec:
        if name not in self.specs:
            raise KeyError(f"no zoo model {name!r}; known: {', '.join(self.specs)}")
        return self.specs[name]

    def path(self, name: str) -> Path:
        if name not in self._paths:
            self._paths[name] = build_model(self.spec(name), self.root, threads=self.threads)
        return self._paths[name]

    def __getitem__(self, name: str) -> Path:
        return self.path(name)

    def __getattr__(self, name: str) -> Path:
        if name.startswith("_") or name not in self.__dict__.get("specs", {}):
            raise AttributeError(name)
        return self.path(name)
