"""PyTorch pickles: plain state dicts load (memory-mapped); anything else is refused."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from verifier.errors import InputError
from verifier.readers import open_checkpoint


def test_plain_state_dict_loads_with_names_shapes_dtypes(tmp_path):
    state = {"w": torch.randn(4, 3), "b": torch.randn(4).half()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as reader:
        assert reader.format == "pytorch"
        infos = {t.name: (t.shape, t.dtype) for t in reader.tensors()}
        assert infos == {"w": ((4, 3), "float32"), "b": ((4,), "float16")}
        assert torch.equal(reader.load("w"), state["w"])


def test_state_dict_wrapped_by_a_trainer_is_unwrapped(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ckpt.pt")
    with open_checkpoint(tmp_path / "ckpt.pt") as reader:
        assert [t.name for t in reader.tensors()] == ["w"]


def test_sharded_bin_index(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.ones(3)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with open_checkpoint(tmp_path) as reader:
        assert torch.equal(reader.load("b"), torch.ones(3))
        assert torch.equal(reader.load("a"), torch.zeros(2))


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=1.0)}, tmp_path / "x.bin")
    with pytest.raises(InputError, match="refused.*other than plain weights"):
        open_checkpoint(tmp_path / "x.bin")


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    # protocol-0 pickle calling os.system: the classic payload, written as bytes
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    (tmp_path / "evil.bin").write_bytes(payload)
    with pytest.raises(InputError):
        open_checkpoint(tmp_path / "evil.bin")
    assert not marker.exists()


def test_pickle_of_a_tensor_list_is_not_a_state_dict(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a state dict"):
        open_checkpoint(tmp_path / "list.pt")


def test_a_safetensors_file_named_bin_is_told_to_be_renamed(tmp_path):
    # torch's unpickler refused it, and the message blamed "objects other than plain weights"
    from safetensors.torch import save_file

    f = tmp_path / "pytorch_model.bin"
    save_file({"w": torch.ones(2, 2)}, str(f))
    with pytest.raises(InputError, match="safetensors file under a pickle's name") as info:
        open_checkpoint(f)
    assert info.value.hint == "rename it to .safetensors"


def test_a_truncated_zip_checkpoint_is_called_damaged(tmp_path):
    # torch read it as a legacy pickle, and the message was "[Errno 22] Invalid argument"
    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(64, 64)}, f)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged or truncated PyTorch zip checkpoint"):
        open_checkpoint(f)
