"""Read-ahead: the layers the analysis visits next are read from the disk in the background.

The advice changes no result (the verify reports of the test models are the same with it, as
every other test of verify shows); what is tested here is that it reaches the kernel for the
whole of each tensor, that lazily read layers ask for the right layers in their visiting order,
and that a model asks its reader for exactly the tensors of the roles named.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.checkpoints import write_llama_folder
from verifier import readahead
from verifier.model import open_model
from verifier.probes.pairing import LazyLayers

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")


def _resident(path: Path) -> float:
    """Fraction of the file's pages in the page cache (``mincore`` on a map of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
        view = np.frombuffer(mm, dtype=np.uint8)
        vec = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), vec) == 0
        del view
    return float(np.mean(np.frombuffer(vec, dtype=np.uint8) & 1))


def _settled(path: Path, wanted: float) -> float:
    """The resident fraction once it reaches ``wanted``, or after 20 s (the reads the advice
    started run in the background)."""
    deadline = time.monotonic() + 20
    while (got := _resident(path)) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@linux
def test_will_need_reads_the_whole_tensor_into_the_page_cache(tmp_path):
    # 48 MiB: larger than any readahead window, which the kernel caps one advice at
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.ones(48 << 18, dtype=torch.float32)}, str(path))
    os.sync()
    _evict(path)
    if _resident(path) > 0.05:
        pytest.skip("this filesystem keeps the file cached (tmpfs?): nothing to read ahead")
    with safe_open(str(path), framework="pt") as handle:
        tensor = handle.get_tensor("w")
    assert readahead.will_need(tensor)
    assert _settled(path, 0.999) > 0.999


def test_will_need_declines_what_it_cannot_advise():
    assert not readahead.will_need(torch.zeros(0))


def test_lazy_layers_read_ahead_in_the_visiting_order():
    advised: list[int] = []
    loaded: list[int] = []

    def load(i: int) -> int:
        loaded.append(i)
        return i * 10

    layers = LazyLayers(list(range(8)), load, will_need=advised.append)
    assert advised == []  # nothing starts before the order is known
    order = [6, 0, 1, 7, 2, 3]
    layers.expect(order)
    assert advised == order[:readahead.READ_AHEAD]
    for k, i in enumerate(order):
        assert layers[i] == i * 10
        # every layer is advised before it is loaded, in the order it will be visited
        assert advised == order[:min(len(order), k + 1 + readahead.READ_AHEAD)]
    assert loaded == order
    # a layer already held is not advised again
    layers.expect([3, 4])
    assert advised[-1] == 4


def test_lazy_layers_without_read_ahead_load_as_before():
    layers = LazyLayers([0, 1, 2], lambda i: -i)
    layers.expect([2, 1])
    assert [layers[i] for i in (2, 1, 0)] == [-2, -1, 0]


@pytest.mark.skipif(readahead._MADVISE is None, reason="no madvise here: read-ahead is off")
def test_a_model_asks_its_reader_for_the_tensors_of_the_roles_named(tmp_path, monkeypatch):
    folder = write_llama_folder(tmp_path / "m", shards=2)
    asked: list[list[str]] = []
    with open_model(folder) as model:
        monkeypatch.setattr(model.reader, "will_need", lambda names: asked.append(sorted(names)))
        model.will_need(1, ("gate", "up", "down"))
        model.will_need(5)  # no such layer: nothing
        model.readahead.close()  # waits for the requests
    assert asked == [[f"model.layers.1.mlp.{p}_proj.weight" for p in ("down", "gate", "up")]]


@linux
def test_reading_ahead_a_real_model_fills_the_page_cache(tmp_path):
    folder = write_llama_folder(tmp_path / "m")
    path = folder / "model.safetensors"
    os.sync()
    _evict(path)
    if _resident(path) > 0.05:
        pytest.skip("this filesystem keeps the file cached (tmpfs?): nothing to read ahead")
    with open_model(folder) as model:
        for layer in range(len(model.layout.layers)):
            model.will_need(layer)
    # every layer's tensors were advised; the file's other bytes (embeddings, header) need not be
    assert _settled(path, 0.5) > 0.5


def test_the_head_probe_reads_ahead_only_the_layers_it_tests(zoo, monkeypatch):
    # it pairs layers by head shape from the headers and reads only the layers it tests; a
    # shape check that read each layer started reading the three after it in depth (untested
    # ones: 1.7 GB of attention nobody used on a 7B-shaped pair)
    from verifier import verify as verify_module
    from verifier.architectures.layout import Q
    from verifier.model import Model

    phase, advised = ["other"], []
    heads, will_need = verify_module._Run._heads, Model.will_need

    def during_heads(run, *args):
        phase[0] = "heads"
        try:
            return heads(run, *args)
        finally:
            phase[0] = "other"

    def recorded(model, layer, roles=None):
        if phase[0] == "heads" and roles is not None and Q in roles:
            advised.append(layer)
        return will_need(model, layer, roles)

    monkeypatch.setattr(verify_module._Run, "_heads", during_heads)
    monkeypatch.setattr(Model, "will_need", recorded)
    report = verify_module.verify(zoo["llama"], zoo["llama_ft_code"],
                                  verify_module.VerifyOptions(digest=False, null_layers=2))
    tested = {lv.layer for p in report.probes if p.name == "head_matching" for lv in p.layers}
    assert len(tested) == 2
    assert report.layer_map[0].base_layer is not None  # a derived pair: layer j is base j
    assert advised
    assert set(advised) <= tested
