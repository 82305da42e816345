"""FP8/INT8 matrices stored beside their scales load as the values they stand for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from checkpoints import llama_tensors, write_llama_folder
from safetensors.torch import load_file, save_file

from verifier.errors import ArchitectureError
from verifier.model import open_model
from verifier.verify import VerifyOptions, verify

FP8_MAX = 448.0  # largest float8_e4m3fn


def _blocks(w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Each block's largest magnitude, ``[ceil(rows / b0), ceil(cols / b1)]``."""
    rows, cols = w.shape
    out = torch.zeros(-(-rows // block[0]), -(-cols // block[1]))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = w[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]].abs().max()
    return out


def fp8_blockwise(tensors: dict[str, torch.Tensor], block: tuple[int, int]) -> dict[str, torch.Tensor]:
    """DeepSeek-V3's storage: every 2-D projection as float8 values and a ``weight_scale_inv``
    per block (the last blocks of a row or column cut short), multiplied back on load."""
    out = {}
    for name, w in tensors.items():
        if not name.endswith("proj.weight"):
            out[name] = w
            continue
        scale = _blocks(w.float(), block) / FP8_MAX
        full = scale.repeat_interleave(block[0], 0)[: w.shape[0]]
        full = full.repeat_interleave(block[1], 1)[:, : w.shape[1]]
        out[name] = (w.float() / full).to(torch.float8_e4m3fn)
        out[name.removesuffix("weight") + "weight_scale_inv"] = scale
    return out


def _with_quantisation_config(folder: Path, quant: dict) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"quantization_config": quant}))
    return folder


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def test_fp8_blocks_load_as_the_values_they_stand_for(tmp_path: Path) -> None:
    plain = llama_tensors()
    block = (8, 12)  # 16 columns: a block of 12 and one cut short to 4
    folder = _with_quantisation_config(
        write_llama_folder(tmp_path / "fp8", fp8_blockwise(plain, block)),
        {"quant_method": "fp8", "weight_block_size": list(block)})
    with open_model(folder) as model:
        scaled = [(role, ref) for layer in model.layout.layers
                  for role, ref in layer.roles.items() if ref.scale]
        assert {role for role, _ in scaled} == {"q", "k", "v", "o", "gate", "up", "down"}
        for role, ref in scaled:
            assert ref.block == block, role
            loaded = model.load(ref)
            assert loaded.dtype == torch.bfloat16  # as a bf16 checkpoint's, one rounding
            assert _relative_error(loaded, plain[ref.tensor]) < 0.05, (role, ref.tensor)
            # what the file holds is not the weight: its values are hundreds of times larger
            assert _relative_error(model.reader.load(ref.tensor), plain[ref.tensor]) > 10


def test_int8_per_channel_with_zero_points_loads_to_bfloat16_rounding(tmp_path: Path) -> None:
    """compressed-tensors' INT8 storage: ``(q - weight_zero_point) * weight_scale``, one scale
    and zero point per output row."""
    g = torch.Generator().manual_seed(1)
    plain = llama_tensors()
    stored = {}
    for name, w in plain.items():
        if not name.endswith("proj.weight"):
            stored[name] = w
            continue
        q = torch.randint(-128, 128, w.shape, generator=g, dtype=torch.int8)
        zero = torch.randint(-5, 5, (w.shape[0], 1), generator=g, dtype=torch.int8)
        scale = torch.rand(w.shape[0], 1, generator=g) + 0.1
        plain[name] = (q.float() - zero.float()) * scale
        stem = name.removesuffix("weight")
        stored |= {name: q, stem + "weight_scale": scale, stem + "weight_zero_point": zero}
    folder = write_llama_folder(tmp_path / "int8", stored)
    with open_model(folder) as model:
        for layer in model.layout.layers:
            for ref in layer.roles.values():
                if ref.scale:
                    assert ref.zero_point is not None
                    assert torch.allclose(model.load(ref).float(), plain[ref.tensor],
                                          rtol=2 ** -8, atol=0), ref.tensor  # bf16 rounding


def test_scales_that_do_not_tile_the_matrix_are_an_input_error(tmp_path: Path) -> None:
    folder = write_llama_folder(tmp_path / "fp8", fp8_blockwise(llama_tensors(), (8, 12)))
    with pytest.raises(ArchitectureError, match="equal blocks"):
        open_model(folder)  # 16 columns in 2 blocks, and no weight_block_size to say 12


def test_a_blockwise_fp8_copy_of_a_model_is_derived_from_it(zoo, tmp_path: Path) -> None:
    original = zoo["llama"]
    copy = shutil.copytree(original, tmp_path / "fp8")
    weights = copy / "model.safetensors"
    save_file(fp8_blockwise(load_file(str(weights)), (16, 16)), str(weights),
              metadata={"format": "pt"})
    _with_quantisation_config(copy, {"quant_method": "fp8", "weight_block_size": [16, 16]})
    report = verify(original, copy, VerifyOptions(digest=False))
    assert report.verdict == "derived", report.reason
    # the weights compared are the weights: FP8 rounding is all that drifted (read without
    # their scales, the copy's projections were ~4000x their norm)
    drifts = [layer.relative_drift for layer in report.norm_drift.layers
              if layer.role in ("gate", "up", "down") and layer.relative_drift is not None]
    assert len(drifts) == 3 * report.models.candidate.num_layers  # every FFN matrix, aligned
    assert max(drifts) < 0.05, drifts


# -- gpt-oss MXFP4 ------------------------------------------------------------------------------

FP4 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MXFP4 as gpt-oss's files hold it: ``[..., in]`` -> blocks ``[..., in / 32, 16]``
    (two e2m1 codes a byte, the even element in the low nibble) and ``[..., in / 32]`` e8m0
    exponents, each group's largest value scaled into [4, 8)."""
    groups = rows.float().unflatten(-1, (-1, 32))
    top = groups.abs().amax(-1).clamp_min(2.0 ** -120)
    exponent = torch.floor(torch.log2(top)) - 2
    codes = (groups.unsqueeze(-1) / torch.exp2(exponent)[..., None, None] - FP4).abs().argmin(-1)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    return packed, (exponent + 127).to(torch.uint8)


def test_gpt_oss_mxfp4_experts_load_as_transformers_dequantises_them(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    config = transformers.GptOssConfig(
        hidden_size=128, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=1000, num_local_experts=4)
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(config)
    model.save_pretrained(tmp_path / "bf16")
    state, packed = model.state_dict(), {}
    for name, w in state.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):  # [E, in, out]
            packed[name + "_blocks"], packed[name + "_scales"] = mxfp4(w.transpose(1, 2))
        else:
            packed[name] = w.contiguous()
    folder = tmp_path / "mxfp4"
    folder.mkdir()
    save_file(packed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tmp_path / "bf16" / "config.json", folder / "config.json")

    with open_model(folder) as loaded:
        layer = loaded.layout.layers[1]
        assert layer.is_moe
        stem = "model.layers.1.mlp.experts."
        theirs = {s: convert_moe_packed_tensors(packed[f"{stem}{s}_blocks"],
                                                packed[f"{stem}{s}_scales"], dtype=torch.bfloat16)
                  for s in ("gate_up_proj", "down_proj")}  # [E, in, out], as the module uses
        for e, expert in enumerate(layer.experts):
            want = {"gate": theirs["gate_up_proj"][e][:, 0::2].T,  # gpt-oss interleaves
                    "up": theirs["gate_up_proj"][e][:, 1::2].T, "down": theirs["down_proj"][e].T}
            for role, value in want.items():
                got = loaded.load(expert[role])
                assert torch.equal(got, value), (e, role)
                original = {"gate": state[stem + "gate_up_proj"][e][:, 0::2].T,
                            "up": state[stem + "gate_up_proj"][e][:, 1::2].T,
                            "down": state[stem + "down_proj"][e].T}[role]
                assert _relative_error(got, original) < 0.2, (e, role)

    report = verify(tmp_path / "bf16", folder, VerifyOptions(digest=False))
    assert report.verdict == "derived", report.reason


def test_a_layers_statistics_reuse_the_roles_its_probe_dequantised(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """While a probe reads a layer, norm drift's statistics of it are taken from the same
    tensors: each FP8 role is dequantised once (twice before, a second full copy and pass per
    tensor), and nothing is kept once the layer is read."""
    from collections import Counter

    import numpy as np

    import verifier.model as model_module
    from backends.compute import Compute
    from verifier.probes import norm_drift
    from verifier.verify import _side

    block = (8, 12)
    folder = _with_quantisation_config(
        write_llama_folder(tmp_path / "fp8", fp8_blockwise(llama_tensors(), block)),
        {"quant_method": "fp8", "weight_block_size": list(block)})
    loads: Counter[str] = Counter()
    real = model_module.load_role

    def counted(reader, ref):  # noqa: ANN001, ANN202 - the patched function's own signature
        if ref.scale is not None:
            loads[ref.tensor] += 1
        return real(reader, ref)

    monkeypatch.setattr(model_module, "load_role", counted)
    with open_model(folder) as model:
        stats = norm_drift.StatsWhileRead(model, None)
        side = _side(model, np.arange(4), Compute(), stats)
        for i in range(len(model.layout.layers)):
            assert side.ffn[i] is not None
            assert side.circuits[i] is not None
        assert set(stats.known[0]) >= {"q", "k", "v", "o", "gate", "up", "down"}
        assert loads
        assert set(loads.values()) == {1}, loads
        assert getattr(model._held, "roles", None) is None
        model.load(model.layout.layers[0].roles["up"])
    assert loads["model.layers.0.mlp.up_proj.weight"] == 2  # outside a layer's read: loaded anew
