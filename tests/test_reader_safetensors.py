"""The safetensors reader: lazy, sharded, dtype-faithful, and precise about broken files."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from checkpoints import llama_tensors, write_llama_folder
from safetensors.torch import save_file

from verifier.errors import InputError
from verifier.readers import open_checkpoint
from verifier.readers.safetensors_reader import SafetensorsCheckpoint


def test_single_file_lists_headers_and_loads_exact_values(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.randn(2, 2).to(torch.float16),
        "d": torch.randint(-128, 127, (4, 4), dtype=torch.int8),
    }
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with open_checkpoint(tmp_path / "w.safetensors") as reader:
        infos = {t.name: t for t in reader.tensors()}
        assert {n: (i.shape, i.dtype) for n, i in infos.items()} == {
            "a": ((3, 5), "float32"),
            "b": ((7,), "bfloat16"),
            "c": ((2, 2), "float16"),
            "d": ((4, 4), "int8"),
        }
        assert all(i.file == "w.safetensors" for i in infos.values())
        for name, t in tensors.items():
            loaded = reader.load(name)
            assert loaded.dtype == t.dtype
            assert torch.equal(loaded, t)


def test_sharded_folder_reads_every_tensor_from_its_shard(tmp_path):
    tensors = llama_tensors()
    folder = write_llama_folder(tmp_path / "m", tensors, shards=3)
    with open_checkpoint(folder) as reader:
        assert isinstance(reader, SafetensorsCheckpoint)
        assert len(reader.files) == 3
        assert {t.name for t in reader.tensors()} == set(tensors)
        files = {t.file for t in reader.tensors()}
        assert files == {f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)}
        for name, t in tensors.items():
            assert torch.equal(reader.load(name), t)


def test_index_naming_a_missing_shard_is_an_input_error(tmp_path):
    folder = write_llama_folder(tmp_path / "m", shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="model-00002-of-00002.safetensors.*missing"):
        open_checkpoint(folder)


def test_index_that_misplaces_a_tensor_is_an_input_error(tmp_path):
    folder = write_llama_folder(tmp_path / "m", shards=2)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    other = {"model-00001-of-00002.safetensors": "model-00002-of-00002.safetensors",
             "model-00002-of-00002.safetensors": "model-00001-of-00002.safetensors"}
    index["weight_map"][name] = other[index["weight_map"][name]]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        open_checkpoint(folder)


def test_one_shard_named_two_ways_in_the_index_is_read_once(tmp_path):
    # "./x" or the absolute path of a shard inside the folder is the same file: it was opened
    # twice and refused as two shards holding the same tensors
    folder = write_llama_folder(tmp_path / "m", shards=2)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = "model-00001-of-00002.safetensors"
    first, second = sorted(k for k, v in index["weight_map"].items() if v == shard)[:2]
    index["weight_map"][first] = str((folder / shard).resolve())
    index["weight_map"][second] = f"./{shard}"
    index_path.write_text(json.dumps(index))
    with open_checkpoint(folder) as reader:
        assert sorted(p.name for p in reader.files) == [
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        assert {t.file for t in reader.tensors()} == {
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


@pytest.mark.parametrize(("text", "said"), [
    ("[1, 2]", "not a JSON object"),
    ('{"metadata": {}}', "no weight_map"),
    ('{"weight_map": [1]}', "weight_map is not an object"),
    ('{"weight_map": {"x": 3}}', "other than a file name"),
    ("{oops", "not a valid shard index"),
])
def test_an_index_that_is_not_a_shard_index_says_what_is_wrong(tmp_path, text, said):
    folder = write_llama_folder(tmp_path / "m", shards=2)
    (folder / "model.safetensors.index.json").write_text(text)
    with pytest.raises(InputError, match=said) as info:
        open_checkpoint(folder)
    assert "indices must be" not in info.value.message  # Python's own words, not the file's


def test_shards_that_overlap_are_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    save_file({"x": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(InputError, match="also appears"):
        open_checkpoint(tmp_path)


def test_unknown_tensor_name_is_an_input_error(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    with open_checkpoint(tmp_path) as reader, pytest.raises(InputError, match="no tensor named"):
        reader.load("y")


def test_loading_is_lazy_memory_mapped(tmp_path):
    """A tensor comes from the file map, not from a copy made when the file was opened."""
    save_file({"x": torch.arange(10.0)}, str(tmp_path / "a.safetensors"))
    with open_checkpoint(tmp_path) as reader:
        assert reader.tensors()[0].numel == 10
        # nothing is materialised until asked for: opening holds only the header
        assert torch.equal(reader.load("x"), torch.arange(10.0))


def test_a_fifo_named_like_a_shard_is_not_opened(tmp_path):
    # globbed as a shard, the FIFO blocked the open forever
    folder = write_llama_folder(tmp_path / "m")
    os.mkfifo(folder / "extra.safetensors")
    (folder / "more.safetensors").mkdir()
    opened: list[int] = []

    def open_it() -> None:
        with open_checkpoint(folder) as reader:
            opened.append(len(reader.files))

    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert opened == [1]


def test_a_header_naming_a_tensor_twice_is_refused(tmp_path):
    # the library keeps the last entry; the first, pointing at another tensor's bytes, was
    # accepted without a word
    f = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.ones(4)}, str(f))
    raw = f.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    lie = json.dumps({"dtype": "F32", "shape": [4], "data_offsets": header["b"]["data_offsets"]})
    text = ('{"a": ' + lie + ", " + json.dumps(header)[1:]).encode()
    text += b" " * (-len(text) % 8)
    f.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
    with pytest.raises(InputError, match="header names 'a' twice"):
        open_checkpoint(f)
