"""The base's side of a frame's null draws, kept in a cache folder for the next candidate.

On a frame of the hidden space (``probes.frame_pairing``) every null draw ``k`` of a tested
layer projects the base's sampled neurons and sampled heads onto the draw's ``d x m`` frame:
``S x d`` times ``d x m`` for each FFN role, four factors of the sampled heads likewise, about
30% of a later verification's time once its power check comes from the cache (a 12-layer
7B-shaped pair: 2.9 s of neurons and 4.5 s of heads in 25 s). None of it depends on the
candidate: the frames, the sample and the layer are the base's, drawn from the seed. A
``KeptDraws`` keeps those products per (kind, layer) as one safetensors file of all the
draws, written atomically when the layer's last draw is computed and mapped back (zero-copy)
by the next verification with the same base, seed and options: the tensors then live in the
page cache, not in the run's private memory (about 80 MiB of neurons and 260 MiB of heads for
8 tested layers, whatever the model's width).

The file's name is a digest of everything that determines its numbers (``ModelCache
.base_draws``: the base's files and layout, lineage's version, the frame's coordinates and
rotations, the sample's seed and size, the device); a file whose metadata names another key,
that lacks a draw, or whose tensors disagree in kind or shape is ignored and recomputed; so is
one whose first draw asked for differs from that draw computed again (one draw of the
``draws``, computed in every run: the check that the file holds what this run would compute).
Reading it back gives the computed float32 numbers bit for bit, so the report is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

Tensors = dict[str, torch.Tensor]


class KeptDraws:
    """Per (kind, layer), the ``draws`` tensor sets of the base's side of the null draws."""

    def __init__(self, folder: Path, key: str, draws: int, write: Callable[[Path, bytes], None],
                 count: Callable[[bool], None]) -> None:
        """``write(path, data)``: stores a file atomically (and deals with its failure);
        ``count(hit)``: told of every draw served, from the folder or computed."""
        self.folder, self.key, self.draws = folder, key, draws
        self._write, self._count = write, count
        self._found: dict[tuple[str, int], list[Tensors] | None] = {}
        self._pending: dict[tuple[str, int], dict[int, Tensors]] = {}

    def get(self, kind: str, layer: int, k: int, compute: Callable[[], Tensors]) -> Tensors:
        """Draw ``k`` of ``kind`` at base ``layer``: from the folder when a whole layer is
        there, else ``compute()`` (kept, and the layer's file written once all its draws
        are)."""
        slot = (kind, layer)
        if slot not in self._found:
            self._found[slot] = self._load(slot)
            if self._found[slot] is not None:
                # the first draw asked for is computed all the same and must equal the kept
                # one bit for bit, or the file is not used: a file of the right name whose
                # tensors do not fit (edited, or from a lineage that computed otherwise) failed
                # the run's products, or would have given other statistics
                out = compute()
                self._count(False)
                kept = self._found[slot][k]  # type: ignore[index]
                if kept.keys() == out.keys() and all(
                        kept[r].shape == out[r].shape and torch.equal(kept[r], out[r].to("cpu"))
                        for r in out):
                    return out
                self._found[slot] = None
                return self._record(slot, k, out)
        found = self._found[slot]
        self._count(found is not None)
        if found is not None:
            return found[k]
        out = compute()
        return self._record(slot, k, out)

    def _record(self, slot: tuple[str, int], k: int, out: Tensors) -> Tensors:
        """Keep a computed draw; once all of a layer's are, write its file."""
        pending = self._pending.setdefault(slot, {})
        pending[k] = out
        if len(pending) == self.draws:
            del self._pending[slot]
            self._store(slot, pending)
            del self._found[slot]  # asked again, the layer is mapped from its file
        return out

    def _path(self, slot: tuple[str, int]) -> Path:
        return self.folder / f"{self.key}-{slot[0]}-{slot[1]}.safetensors"

    def _store(self, slot: tuple[str, int], draws: dict[int, Tensors]) -> None:
        flat = {f"{k}.{name}": t.detach().to("cpu").contiguous()
                for k, tensors in sorted(draws.items()) for name, t in tensors.items()}
        self._write(self._path(slot), save(flat, metadata={"key": self.key,
                                                          "draws": str(self.draws)}))

    def _load(self, slot: tuple[str, int]) -> list[Tensors] | None:
        """The layer's draws as the folder holds them, or None when absent or not trusted."""
        path = self._path(slot)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("key") != self.key or meta.get("draws") != str(self.draws):
                    return None
                flat = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except (OSError, SafetensorError, ValueError, RuntimeError):
            return None
        draws: list[Tensors] = [{} for _ in range(self.draws)]
        for name, t in flat.items():
            k, _, role = name.partition(".")
            if not k.isdigit() or int(k) >= self.draws or not role:
                return None
            draws[int(k)][role] = t
        first = draws[0]
        same = all(d.keys() == first.keys() and all(
            d[r].dtype == torch.float32 and d[r].shape == first[r].shape for r in d)
            for d in draws)
        return draws if first and same else None


__all__ = ["KeptDraws", "Tensors"]
