"""Families read from the files their releases hold.

transformers renames several families' tensors when it loads them (EXAONE's
``transformer.h.N.ln_1``, Param2/Sarvam's fused ``query_key_value``, MiniCPM5's query and gate
in one ``q_proj``, Hy3's ``router.gate``), so a table written from the in-memory modules would
read nothing of a released checkpoint. Each tiny model here is saved with ``save_pretrained``,
which writes the released names, and opened as a user's folder is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from released_models import (
    SMALL,
    assert_heads_cut_as_computed,
    noisy,
    released_models,
    save_in_memory_names,
)
from safetensors.torch import load_file

from verifier.architectures.completeness import missing_roles, unread_tensors
from verifier.architectures.layout import DOWN, GATE, UP, K, O, Q, V
from verifier.architectures.schema import ATTN_GATE, SECOND_ROLES
from verifier.model import open_model
from verifier.report import Report
from verifier.verify import VerifyOptions, verify

transformers = pytest.importorskip("transformers")

OPTS = VerifyOptions(digest=False)

#: model_type -> (family read, MoE layers); variants of one family under their own names
EXPECTED: dict[str, tuple[str, list[int]]] = {
    "apertus": ("apertus", []), "arcee": ("arcee", []), "jais2": ("arcee", []),
    "hyperclovax": ("hyperclovax", []), "exaone": ("exaone", []), "olmo": ("olmo", []),
    "stablelm": ("stablelm", []), "stablelm_parallel": ("stablelm", []),
    "persimmon": ("persimmon", []), "openai-gpt": ("openai-gpt", []),
    "bitnet": ("bitnet", []), "granite_swa": ("granite_swa", []),
    "nanochat": ("nanochat", []), "xglm": ("xglm", []),
    "codegen": ("codegen", []), "gpt_neox_japanese": ("gpt_neox_japanese", []),
    "biogpt": ("biogpt", []),
    "afmoe": ("afmoe", [1]), "aria_text": ("aria_text", [0, 1]),
    "cohere2_moe": ("cohere2_moe", [1]), "param2moe": ("param2moe", [1]),
    "minicpm5_moe": ("minicpm5_moe", [1]), "hy_v3": ("hy_v3", [1]), "axk1": ("axk1", [1]),
    "flint": ("flint", [1]), "lara_mini": ("lara_mini", [0, 1]),
    "minimax": ("minimax", [0, 1]), "lfm3": ("lfm3", []),
    "granitemoe_swa": ("granitemoehybrid", [0, 1]),
    "mimo_v2_flash": ("mimo_v2_flash", [1]), "laguna": ("laguna", [1]),
    "kimi_linear": ("kimi_linear", [1]), "deepseek_v4": ("deepseek_v4", [0, 1]),
    "mamba": ("mamba", []), "falcon_mamba": ("mamba", []), "mamba2": ("mamba2", []),
    "hunyuan_v1_dense": ("hunyuan_v1_dense", []), "hunyuan_v1_moe": ("hunyuan_v1_dense", [0, 1]),
    "dots1": ("glm4_moe", [1]), "axk2": ("axk2", [1]), "hy_v4": ("hy_v4", [1]),
    "beam": ("beam", [1]), "kolibri1": ("kolibri1", [0, 1]),
    "kolibri1_1": ("kolibri1_1", [1]), "ergo": ("ergo", [1]),
    "longcat_flash": ("longcat_flash", [0, 1]), "jetmoe": ("jetmoe", [0, 1]),
    "zaya": ("zaya", [0, 1]),
    "dots3_note_text": ("dots3_note_text", [1]), "inkling_text": ("inkling_text", [1]),
    "inkling2_text": ("inkling2_text", [0, 1]),
    "inkling2_loop_text": ("inkling2_text", [0, 1]),
    "diffllama": ("diffllama", []), "recurrent_gemma": ("recurrent_gemma", []),
    "zamba": ("zamba", []), "zamba2": ("zamba2", []),
    "gemma3n_text": ("gemma3n", []),
    "phi4_multimodal": ("phi4_multimodal", []), "olmo_hybrid": ("olmo_hybrid", []),
    "rwkv": ("rwkv", []), "xlstm": ("xlstm", []),
    "doge": ("doge", []), "doge_moe": ("doge", []), "ctrl": ("ctrl", []),
    "modernbert-decoder": ("modernbert-decoder", []),
    "moshi": ("moshi", []), "hrm_text": ("hrm_text", []), "xlm": ("xlm", []),
    "dory": ("dory", []), "cpmant": ("cpmant", []),
    "git": ("git", []), "emu3_text_model": ("llama", []),
    "bailing_hybrid": ("bailing_hybrid", [1]),
    "electra": ("bert", []), "roc_bert": ("bert", []), "xmod": ("bert", []),
    "roberta-prelayernorm": ("bert-prenorm", []), "xlm-roberta-xl": ("bert-prenorm", []),
    "megatron-bert": ("bert-prenorm", []),
    "dbrx": ("dbrx", [0, 1]), "ministral": ("llama", []),
}


def _saved(name: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    cls, config = released_models()[name]
    torch.manual_seed(seed)
    model = cls.from_config(config) if cls is transformers.AutoModelForCausalLM else cls(config)
    model.save_pretrained(folder)
    return model


def test_every_family_has_a_tiny_model() -> None:
    assert set(EXPECTED) == set(released_models())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_released_names_are_read_whole_by_the_family_table(tmp_path: Path, name: str) -> None:
    """Every tensor of the saved files has a role or is one the table knows it leaves out; no
    warning that a tensor is unread, a table missing or a block incomplete."""
    _saved(name, tmp_path)
    family, moe = EXPECTED[name]
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.hidden_size) == (family, 2, 32)
        assert layout.moe_layers == moe
        # Phi-4-multimodal's image and audio towers are set aside, as other modalities are
        towers = {"phi4_multimodal": ["model.embed_tokens_extend."],
                  "git": ["git.image_encoder.", "git.visual_projection."]}.get(name, [])
        assert list(layout.other_modalities) == towers
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
        for layer in layout.layers:  # MLA blocks have no K or V; linear-attention ones no O
            assert O in layer.roles or name in ("lara_mini", "minimax", "lfm3", "deepseek_v4",
                                                "mamba", "falcon_mamba", "mamba2", "jetmoe",
                                                "zaya", "diffllama", "recurrent_gemma",
                                                "olmo_hybrid", "zamba", "zamba2",
                                                "rwkv"), layer.index
            assert DOWN in layer.roles or layer.experts


def test_deepseek_v4_in_deepseeks_own_names(tmp_path: Path) -> None:
    """DeepSeek's release names its tensors without ``model.`` (``embed``, ``head``,
    ``layers.N.attn.wq_a``, ``hc_head_fn``); transformers adds the prefix when it saves. Both
    read alike, the router's ``bias`` as its selection bias."""
    from safetensors.torch import save_file

    _saved("deepseek_v4", tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / "model.safetensors"))
    released = {}
    for name, w in state.items():
        name = name.removeprefix("model.").replace("embed_tokens", "embed")
        released[name.replace("hc_head.hc_", "hc_head_")] = w
    (tmp_path / "released").mkdir()
    save_file(released, str(tmp_path / "released" / "model.safetensors"))
    (tmp_path / "released" / "config.json").write_text(
        (tmp_path / "saved" / "config.json").read_text())
    layouts = []
    for folder in ("saved", "released"):
        with open_model(tmp_path / folder) as model:
            assert unread_tensors(model.layout) == []
            layouts.append(model.layout)
    saved, ours = layouts
    assert ours.globals["embed"].tensor == "embed.weight"
    assert ours.layers[1].roles["router_correction"].tensor == "layers.1.ffn.gate.bias"
    assert "router.bias" not in ours.layers[1].roles
    for a, b in zip(saved.layers, ours.layers, strict=True):
        assert sorted(a.roles) == sorted(b.roles)
        assert len(a.experts) == len(b.experts) == 4


#: e2m1 values of the 16 FP4 codes (DeepSeek-V4's ``convert.py`` table, low nibble first)
FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                           -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def _fp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w`` as DeepSeek-V4-Flash stores an expert: int8 ``[out, in / 2]`` (two FP4 codes a
    byte, the low nibble first), E8M0 exponents ``[out, in / 32]``; and the values they mean."""
    groups = w.float().unflatten(-1, (-1, 32))
    exponent = torch.ceil(torch.log2(groups.abs().amax(-1).clamp_min(1e-30) / 6.0))
    scale = torch.exp2(exponent)[..., None]
    codes = (groups / scale)[..., None].sub(FP4_VALUES).abs().argmin(-1)  # nearest e2m1
    values = (FP4_VALUES[codes] * scale).flatten(-2)
    pairs = codes.flatten(-2).unflatten(-1, (-1, 2))
    packed = (pairs[..., 0] | pairs[..., 1] << 4).to(torch.uint8).view(torch.int8)
    e8m0 = (exponent + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    return packed, e8m0, values


def _fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w`` as DeepSeek-V4 stores a dense matrix: float8_e4m3fn beside one E8M0 scale per
    128 x 128 block (one here: the tiny matrices are smaller), and the values they mean."""
    exponent = torch.ceil(torch.log2(w.float().abs().max() / 448.0))
    q = (w.float() / torch.exp2(exponent)).to(torch.float8_e4m3fn)
    e8m0 = (exponent + 127).reshape(1, 1).to(torch.uint8).view(torch.float8_e8m0fnu)
    return q, e8m0, q.float() * torch.exp2(exponent)


def _v4_release(folder: Path, out: Path) -> dict[str, torch.Tensor]:
    """``folder``'s DeepSeek-V4 saved as the release stores it (bare names, FP8 matrices, FP4
    experts, ``X.scale`` beside ``X.weight``); what each quantised matrix means, by name."""
    from safetensors.torch import save_file

    released, means = {}, {}
    for name, w in load_file(str(folder / "model.safetensors")).items():
        name = name.removeprefix("model.").replace("embed_tokens", "embed")
        name = name.replace("hc_head.hc_", "hc_head_")
        if w.dim() == 2 and name.endswith(".weight") and name.startswith("layers."):
            q, scale, value = (_fp4 if ".experts." in name else _fp8)(w)
            released[name], released[name.removesuffix("weight") + "scale"] = q, scale
            means[name] = value
        else:
            released[name] = w
    out.mkdir()
    save_file(released, str(out / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config |= {"expert_dtype": "fp4", "quantization_config": {
        "quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128]}}
    (out / "config.json").write_text(json.dumps(config))
    return means


def test_deepseek_v4_release_storage_loads_as_the_values_it_stands_for(tmp_path: Path) -> None:
    """FP8 matrices beside E8M0 block scales and V4-Flash's FP4 experts (bytes of two e2m1
    codes, an exponent per 32) load as code times scale (the experts were read as int8 bytes of
    half the width, the scales not found)."""
    _saved("deepseek_v4", tmp_path / "saved")
    means = _v4_release(tmp_path / "saved", tmp_path / "release")
    with open_model(tmp_path / "release") as model:
        assert unread_tensors(model.layout) == []
        refs = {ref.tensor: ref for _, ref in model.layout.iter_roles()}
        read = [name for name in means if name in refs]
        assert any(".experts." in n for n in read)
        assert any(".attn." in n for n in read)
        for name in read:
            torch.testing.assert_close(_cut(model, refs[name]), means[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["bitnet", "deepseek_v4"])
def test_a_quantised_release_is_derived_from_the_weights_it_was_quantised_from(
        tmp_path: Path, name: str) -> None:
    """BitNet's ternary packing keeps each matrix's signs and drops its magnitudes;
    DeepSeek-V4's FP8 and FP4 storage rounds them: the release is still the model it was
    quantised from, and not another initialisation."""
    _wider(name, 0).save_pretrained(tmp_path / "bf16")
    _wider(name, 1).save_pretrained(tmp_path / "other")
    quantise: Callable[[Path, Path], object] = {"bitnet": _pack_ternary,
                                                "deepseek_v4": _v4_release}[name]
    quantise(tmp_path / "bf16", tmp_path / "release")
    report = verify(tmp_path / "bf16", tmp_path / "release", OPTS)
    assert report.verdict == "derived", report.reason
    other = verify(tmp_path / "other", tmp_path / "release", OPTS)
    assert other.verdict != "derived", other.reason


def _permute_mamba_channels(model: torch.nn.Module, seed: int) -> None:
    """Permute every mixer's inner channels, with everything that reads or writes them (the
    model computes the same function)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.backbone.layers:
            mixer = layer.mixer
            inner = mixer.out_proj.weight.shape[1]
            perm = torch.randperm(inner, generator=gen)
            mixer.in_proj.weight.copy_(mixer.in_proj.weight.unflatten(0, (2, inner))[:, perm]
                                       .flatten(0, 1))
            for p in (mixer.conv1d.weight, mixer.conv1d.bias, mixer.dt_proj.weight,
                      mixer.dt_proj.bias, mixer.A_log, mixer.D):
                p.copy_(p[perm])
            mixer.x_proj.weight.copy_(mixer.x_proj.weight[:, perm])
            mixer.out_proj.weight.copy_(mixer.out_proj.weight[:, perm])


def test_mamba_channels_are_matched_as_neurons(tmp_path: Path) -> None:
    """A Mamba block's inner channels (in_proj's x and z rows, out_proj's columns) can be
    permuted as an MLP's neurons can: a copy with its channels permuted (the same function) and
    noise added is derived through neuron matching; another initialisation is not."""
    config = transformers.MambaConfig(hidden_size=128, state_size=16, num_hidden_layers=3,
                                      vocab_size=600, expand=2)
    torch.manual_seed(0)
    base = transformers.MambaForCausalLM(config)
    copy = transformers.MambaForCausalLM(config)
    copy.load_state_dict(base.state_dict())
    _permute_mamba_channels(copy, seed=1)
    torch.manual_seed(1)
    _, other = _permuted_channels_are_derived(tmp_path, base, copy,
                                              transformers.MambaForCausalLM(config))
    assert other.verdict != "derived", other.reason


def _permuted_channels_are_derived(tmp_path: Path, base: torch.nn.Module, copy: torch.nn.Module,
                                   other: torch.nn.Module) -> tuple[Report, Report]:
    """``copy`` (``base`` with its mixer channels permuted) computes what ``base`` does, and
    with noise added verifies as derived through neuron matching; the reports of the copy and
    of ``other`` (another start) against ``base``."""
    base.save_pretrained(tmp_path / "base")
    tokens = torch.randint(0, 600, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(copy(tokens).logits, base(tokens).logits, rtol=1e-4,
                                   atol=1e-4)
    noisy(copy, 0.2).save_pretrained(tmp_path / "copy")
    other.save_pretrained(tmp_path / "other")
    report = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert report.verdict == "derived", report.reason
    assert "neuron_matching" in {p.name for p in report.probes if p.decisive}
    return report, verify(tmp_path / "base", tmp_path / "other", OPTS)


def _minimax_m3_release(folder: Path) -> dict[str, torch.Tensor]:
    """A tiny MiniMax-M3 language model saved as its VLM release names it (transformers
    renames it on load; saving the text model alone keeps the in-memory names): under
    ``language_model.``, Mixtral-named experts and separate gate/up under ``block_sparse_moe``,
    beside a vision tower and projectors. The in-memory state, by name."""
    from safetensors.torch import save_file

    config = transformers.MiniMaxM3VLTextConfig(
        **(SMALL | {"intermediate_size": 16}), num_experts_per_tok=2, num_local_experts=4,
        dense_intermediate_size=64, shared_intermediate_size=16, rotary_dim=4, index_n_heads=2,
        index_head_dim=8, mlp_layer_types=["dense", "sparse"])
    torch.manual_seed(0)
    state = transformers.MiniMaxM3VLForCausalLM(config).state_dict()
    files: dict[str, torch.Tensor] = {}
    for name, w in state.items():
        out = "language_model." + name
        moe = out.replace(".mlp.", ".block_sparse_moe.")
        if name.endswith("mlp.experts.gate_up_proj"):
            for e in range(w.shape[0]):
                gate, up = w[e].chunk(2)
                files |= {moe.replace("gate_up_proj", f"{e}.w1.weight"): gate.clone(),
                          moe.replace("gate_up_proj", f"{e}.w3.weight"): up.clone()}
        elif name.endswith("mlp.experts.down_proj"):
            files |= {moe.replace("down_proj", f"{e}.w2.weight"): w[e].clone()
                      for e in range(w.shape[0])}
        elif name.endswith("gate_up_proj.weight"):  # dense MLP and shared experts: gate first
            gate, up = w.chunk(2)
            where = moe if "shared_experts" in name else out
            files |= {where.replace("gate_up_proj", "gate_proj"): gate.clone(),
                      where.replace("gate_up_proj", "up_proj"): up.clone()}
        elif ".mlp.gate." in name or ".mlp.shared_experts." in name:
            files[moe.replace("gate.e_score", "e_score")] = w
        else:
            files[out] = w
    files |= {"vision_tower.vision_model.encoder.layers.0.fc1.weight": torch.randn(8, 8),
              "multi_modal_projector.linear_1.weight": torch.randn(8, 8),
              "patch_merge_mlp.linear_1.weight": torch.randn(8, 8)}
    folder.mkdir()
    save_file(files, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "minimax_m3_vl", "text_config": config.to_dict()}))
    return state


def test_minimax_m3_release_names_and_norms(tmp_path: Path) -> None:
    """MiniMax-M3's release: the language model under ``language_model.``, its experts and
    shared experts under ``block_sparse_moe``, the vision parts set aside; its norms compute
    ``x * (1 + w)`` and load as that gain (it was read as GLM-4-MoE by names, norms as ``w``,
    shared experts unread)."""
    state = _minimax_m3_release(tmp_path / "release")
    with open_model(tmp_path / "release") as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.moe_layers) == (
            "minimax_m3_vl_text", 2, [1])
        assert layout.unexpected == []
        assert sorted(layout.other_modalities) == [
            "multi_modal_projector.", "patch_merge_mlp.", "vision_tower."]
        layer = layout.layers[1]
        stack = state["model.layers.1.mlp.experts.gate_up_proj"]
        assert torch.equal(_cut(model, layer.experts[3][GATE]), stack[3, :16].float())
        shared = state["model.layers.1.mlp.shared_experts.gate_up_proj.weight"]
        assert torch.equal(_cut(model, layer.shared_experts[0][UP]), shared[16:].float())
        dense = state["model.layers.0.mlp.gate_up_proj.weight"]
        assert torch.equal(_cut(model, layout.layers[0].roles[UP]), dense[64:].float())
        norm = state["model.layers.0.input_layernorm.weight"]
        assert torch.equal(_cut(model, layout.layers[0].roles["attn_norm"]), 1.0 + norm.float())


def test_minimax_m3_in_memory_names_read_the_fused_shared_experts(tmp_path: Path) -> None:
    """The text model saved by transformers keeps its in-memory names: each shared expert's
    gate and up in one ``gate_up_proj`` (gate first), cut into the two (they were unread)."""
    state = _minimax_m3_release(tmp_path / "release")
    config = transformers.AutoConfig.from_pretrained(tmp_path / "release").text_config
    module = transformers.MiniMaxM3VLForCausalLM(config)
    module.load_state_dict(state)
    module.save_pretrained(tmp_path / "saved")
    with open_model(tmp_path / "saved") as model:
        layout = model.layout
        assert unread_tensors(layout) == []
        [shared] = layout.layers[1].shared_experts
        fused = state["model.layers.1.mlp.shared_experts.gate_up_proj.weight"]
        assert torch.equal(_cut(model, shared[GATE]), fused[:16].float())
        assert torch.equal(_cut(model, shared[UP]), fused[16:].float())
        assert torch.equal(_cut(model, shared[DOWN]),
                           state["model.layers.1.mlp.shared_experts.down_proj.weight"].float())


def test_mamba2_in_proj_gives_the_gate_and_input_its_mixer_splits(tmp_path: Path) -> None:
    """A Mamba-2 ``in_proj`` computes the gate ``z``, then ``x``, ``B`` and ``C``, then ``dt``
    (``Mamba2Mixer``'s split): the gate and up roles are its ``z`` and ``x`` rows."""
    module = _saved("mamba2", tmp_path)
    mixer = module.backbone.layers[0].mixer
    x = torch.randn(5, 32)
    with torch.no_grad():
        proj = mixer.in_proj(x)
        _, z, xbc, _ = proj.split([proj.shape[-1] - mixer.intermediate_size - mixer.conv_dim
                                   - mixer.num_heads, mixer.intermediate_size, mixer.conv_dim,
                                   mixer.num_heads], dim=-1)
    with open_model(tmp_path) as model:
        roles = model.layout.layers[0].roles
        torch.testing.assert_close(x @ _cut(model, roles[GATE]).T, z)
        torch.testing.assert_close(x @ _cut(model, roles[UP]).T,
                                   xbc[:, :mixer.intermediate_size])


def test_a_noisy_mamba2_copy_is_derived_and_another_start_is_not(tmp_path: Path) -> None:
    """Mamba-2's mixer channels are matched as neurons, as Mamba's are (see the
    channel-permuted Mamba copy above)."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        noisy(_wider("mamba2", seed), noise).save_pretrained(tmp_path / folder)
    copy = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert copy.verdict == "derived", copy.reason
    assert "neuron_matching" in {p.name for p in copy.probes if p.decisive}
    other = verify(tmp_path / "base", tmp_path / "other", OPTS)
    assert other.verdict != "derived", other.reason


def _cut(model, ref) -> torch.Tensor:  # noqa: ANN001
    return model.load(ref).float()


def test_codegen_fused_qkv_cut_by_its_shards_gives_what_its_attention_computes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CodeGen's ``qkv_proj`` is cut by its 4 model-parallel shards into query, value and key
    (``view(..., 4, 3 * hidden / 4).split(hidden / 4)``; two heads a shard here): neither a cut
    into q, k, v in turn nor one head by head gives those rows; the ``shards`` cut does. Its q,
    k and v times an input are what the module's attention receives, caught at position 0 (no
    rotation there); the output projection and the block's one norm are read as before."""
    from transformers.models.codegen import modeling_codegen

    module = _saved("codegen", tmp_path)
    attn = module.transformer.h[0].attn
    seen: dict[str, torch.Tensor] = {}
    eager = modeling_codegen.eager_attention_forward

    def catch(mod, query, key, value, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.update(q=query, k=key, v=value)
        return eager(mod, query, key, value, *args, **kwargs)

    monkeypatch.setattr(modeling_codegen, "eager_attention_forward", catch)
    module.set_attn_implementation("eager")
    x = torch.randn(5, 32)
    with torch.no_grad():
        at_zero = module.transformer.rotary_emb(x, torch.zeros(5, 1, dtype=torch.long))
        attn(x[:, None], position_embeddings=at_zero)  # five sequences of one token
        want = {r: seen[r].transpose(1, 2).reshape(5, 32) for r in (Q, K, V)}
        out = attn.qkv_proj(x)
    in_turn = out.split(32, dim=-1)
    per_head = [out.view(5, 8, 3, 4)[:, :, i].reshape(5, 32) for i in range(3)]
    for cut in (in_turn, per_head):
        for got, role in zip(cut, (Q, K, V), strict=True):
            assert not torch.allclose(got, want[role])
    with open_model(tmp_path) as model:
        layout = model.layout
        assert layout.unexpected == []
        roles = layout.layers[0].roles
        for role in (Q, K, V):
            assert roles[role].tensor == "transformer.h.0.attn.qkv_proj.weight"
            torch.testing.assert_close(x @ _cut(model, roles[role]).T, want[role])
        for i, layer in enumerate(layout.layers):
            block = module.transformer.h[i]
            assert torch.equal(_cut(model, layer.roles[O]), block.attn.out_proj.weight.detach())
            assert layer.roles["mlp_norm"] == layer.roles["attn_norm"]
            assert torch.equal(_cut(model, layer.roles[UP]), block.mlp.fc_in.weight.detach())


def test_query_and_gate_stored_per_head_in_one_projection_are_cut_apart(tmp_path: Path) -> None:
    """MiniCPM5-MoE's ``q_proj`` holds, head by head, the query then its output gate
    (``view(..., heads, 2 * head_dim).chunk(2, -1)``)."""
    module = _saved("minicpm5_moe", tmp_path)
    fused = module.model.layers[0].self_attn.q_gate_proj.weight.detach()
    per_head = fused.view(4, 2, 8, 32)  # heads, (query, gate), head_dim, hidden
    with open_model(tmp_path) as model:
        roles = model.layout.layers[0].roles
        assert torch.equal(_cut(model, roles[Q]), per_head[:, 0].reshape(32, 32))
        assert torch.equal(_cut(model, roles[ATTN_GATE]), per_head[:, 1].reshape(32, 32))


@pytest.mark.parametrize("name", ["param2moe", "persimmon", "ergo", "gpt_neox_japanese"])
def test_fused_qkv_cut_gives_the_projections_the_model_computes(tmp_path: Path,
                                                                name: str) -> None:
    """Param2's ``query_key_value`` is q, k, v one after another (transformers splits it into
    the modules' q/k/v on load); Persimmon's and GPT-NeoX-Japanese's are q, k, v head by head
    (their forwards' ``view(heads, 3, head_dim)``, ``view(heads, 3 * head_dim)``); Ergo's
    ``wqkv`` is q, k, v one after another (its forward's ``view(..., head_dim).split((heads,
    kv_heads, kv_heads))``)."""
    module = _saved(name, tmp_path)
    attn = (module.gpt_neox_japanese.layers[0].attention if name == "gpt_neox_japanese"
            else module.model.layers[0].self_attn)
    x = torch.randn(5, 32)
    with torch.no_grad():
        if name == "param2moe":
            want = [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)]
        elif name == "ergo":
            want = [h.flatten(-2) for h in attn.qkv_proj(x).view(5, 8, 8).split((4, 2, 2), 1)]
        else:
            qkv = attn.query_key_value(x).view(5, 4, 3, 8)
            want = [qkv[:, :, i].reshape(5, 32) for i in range(3)]
    with open_model(tmp_path) as model:
        roles = model.layout.layers[0].roles
        for role, expected in zip((Q, K, V), want, strict=True):
            got = x @ _cut(model, roles[role]).T
            if role + ".bias" in roles:
                got = got + _cut(model, roles[role + ".bias"])
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["aria_text", "afmoe", "hy_v3", "flint", "cohere2_moe", "axk2",
                                  "hy_v4"])
def test_experts_cut_from_the_files_compute_what_the_model_does(tmp_path: Path,
                                                                name: str) -> None:
    """An expert read from the saved files (Aria's ``fc1``/``fc2`` stacks as ``x @ W``, HY-V4's
    ``[E, 2I, H]`` stacks as saved, the others one file tensor per expert) computes the
    in-memory expert's gate, up and down."""
    module = _saved(name, tmp_path)
    experts = module.model.layers[1].mlp.experts
    gate_up, down = experts.gate_up_proj.detach(), experts.down_proj.detach()
    if name == "aria_text":  # stored as x @ W: [E, H, 2I] and [E, I, H]
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    inter = down.shape[2]
    with open_model(tmp_path) as model:
        layer = model.layout.layers[1]
        assert len(layer.experts) == 4
        assert len(layer.shared_experts) == 1
        for e, expert in enumerate(layer.experts):
            assert torch.equal(_cut(model, expert[GATE]), gate_up[e, :inter].float())
            assert torch.equal(_cut(model, expert[UP]), gate_up[e, inter:].float())
            assert torch.equal(_cut(model, expert[DOWN]), down[e].float())


def test_axk2_gated_norms_read_as_their_gain_and_their_gate_mlp_left_out(
        tmp_path: Path) -> None:
    """A.X K2's gated norms (RMSNorm, then a sigmoid gate on each channel from a low-rank MLP)
    are read as their RMSNorm's gain, on dense blocks the plain ``post_attention_layernorm``;
    the gate MLP holds no role: no table role would mean what it computes."""
    module = _saved("axk2", tmp_path)
    x = torch.randn(5, 32)
    saved = load_file(str(tmp_path / "model.safetensors"))
    with open_model(tmp_path) as model:
        layout = model.layout
        for i, layer in enumerate(layout.layers):
            block = module.model.layers[i]
            rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            with torch.no_grad():
                normed = block.input_layernorm.norm(x)
                gated = block.input_layernorm(x)
            torch.testing.assert_close(rms * _cut(model, layer.roles["attn_norm"]), normed)
            assert not torch.allclose(normed, gated)  # the gate is applied after the gain
            mlp_norm = block.post_attention_layernorm
            want = mlp_norm.weight if i == 0 else mlp_norm.norm.weight
            assert torch.equal(_cut(model, layer.roles["mlp_norm"]), want.detach())
        read = {ref.tensor for _, ref in layout.iter_roles()}
        left = set(saved) - read
        assert left
        assert all(".W_down." in n or ".W_up." in n or ".indexer." in n for n in left)
        assert layout.unexpected == []


def test_axk2_query_and_head_gate_cut_per_head_at_their_unequal_widths(tmp_path: Path) -> None:
    """A.X K2's ``q_b_proj`` writes per head the query (``qk_nope + qk_rope`` = 8 rows here)
    then a gate on the head's output (``v_head_dim`` = 4): cut so, ``q_b`` and ``attn_gate``
    times the normed and raw query latent side by side are the module's query and gate (an
    equal cut of each head would give both 6 rows a head). Their ``2 * q_lora_rank`` inputs are
    not ``q_a``'s rows, and head matching says so rather than compose them as DeepSeek's
    query."""
    from verifier.probes.head_matching import circuit_misfit

    module = _saved("axk2", tmp_path)
    attn = module.model.layers[0].self_attn
    x = torch.randn(5, 32)
    with torch.no_grad():  # the module's forward, up to the split of query and gate
        latent = attn.q_a_proj(x)
        both = torch.cat([attn.q_a_layernorm(latent), latent], dim=-1)
        fused = attn.q_gate_proj(both)
        query, gate = fused.view(5, 4, 12).split([8, 4], dim=-1)
    with open_model(tmp_path) as model:
        roles = model.layout.layers[0].roles
        assert roles["q_b"].tensor == roles[ATTN_GATE].tensor == (
            "model.layers.0.self_attn.q_b_proj.weight")
        torch.testing.assert_close(both @ _cut(model, roles["q_b"]).T, query.reshape(5, 32))
        torch.testing.assert_close(both @ _cut(model, roles[ATTN_GATE]).T, gate.reshape(5, 16))
        assert circuit_misfit(model, 0) == (
            "'model.layers.0.self_attn.q_b_proj.weight' has 32 inputs, but the query latent "
            "has 16")


def test_hy_v4_head_gates_sinks_and_mlp_gates_under_either_name(tmp_path: Path) -> None:
    """HY-V4's attention gate (``linear_gate``: a sigmoid on each head's output, from the hidden
    state) and sinks are read as such; the MLPs' gates are ``gate_proj`` in the modules and are
    saved as ``linear_gate`` (the attention gate's rename run backwards): both spellings read
    the same layout, and never the attention's gate as the MLP's."""
    from safetensors.torch import save_file

    module = _saved("hy_v4", tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / "model.safetensors"))
    renamed = {n.replace("mlp.linear_gate", "mlp.gate_proj")
               .replace("shared_experts.linear_gate", "shared_experts.gate_proj"): w
               for n, w in state.items()}
    assert set(renamed) != set(state)
    (tmp_path / "renamed").mkdir()
    save_file(renamed, str(tmp_path / "renamed" / "model.safetensors"))
    (tmp_path / "renamed" / "config.json").write_text(
        (tmp_path / "saved" / "config.json").read_text())
    x = torch.randn(5, 32)
    for folder in ("saved", "renamed"):
        with open_model(tmp_path / folder) as model:
            layout = model.layout
            assert unread_tensors(layout) == []
            assert missing_roles(layout) == []
            for i, layer in enumerate(layout.layers):
                block = module.model.layers[i]
                with torch.no_grad():
                    torch.testing.assert_close(x @ _cut(model, layer.roles[ATTN_GATE]).T,
                                               block.self_attn.gate_proj(x))
                assert torch.equal(_cut(model, layer.roles["attn_sinks"]),
                                   block.self_attn.sinks.detach().float())
            dense = module.model.layers[0].mlp
            assert torch.equal(_cut(model, layout.layers[0].roles[GATE]),
                               dense.gate_proj.weight.detach())
            shared = module.model.layers[1].mlp.shared_experts
            assert torch.equal(_cut(model, layout.layers[1].shared_experts[0][GATE]),
                               shared.gate_proj.weight.detach())


def test_ergo_experts_and_router_cut_from_its_release_compute_what_the_model_does(
        tmp_path: Path) -> None:
    """Ergo's release stores its expert stacks as ``x @ W`` (``up_proj`` ``[E, H, I]``,
    ``down_proj`` ``[E, I, H]``) and its router as ``gate_kernel`` ``[hidden, experts]``; read
    in ``nn.Linear`` orientation they compute the in-memory experts and router. Its shared
    expert (stored ``[in, out]`` beside dense blocks that are not) is left unread."""
    module = _saved("ergo", tmp_path)
    moe = module.model.layers[1].mlp
    x = torch.randn(5, 32)
    with open_model(tmp_path) as model:
        layer = model.layout.layers[1]
        assert len(layer.experts) == 4
        assert layer.shared_experts == []
        assert model.layout.layers[0].experts == []
        with torch.no_grad():
            torch.testing.assert_close(x @ _cut(model, layer.roles["router"]).T,
                                       moe.gate.linear(x))
            for e, expert in enumerate(layer.experts):
                assert set(expert) == {UP, DOWN}
                torch.testing.assert_close(x @ _cut(model, expert[UP]).T,
                                           x @ moe.experts.up_proj[e])
                h = torch.randn(5, 16)
                torch.testing.assert_close(h @ _cut(model, expert[DOWN]).T,
                                           h @ moe.experts.down_proj[e])
        assert torch.equal(_cut(model, layer.roles["router_correction"]),
                           moe.gate.e_score_correction_bias.float())


def _read_alike(release: Any, memory: Any, lost: Callable[[Any], set[str]]) -> None:
    """Two opened checkpoints of one module, under its released and in-memory names, load
    equal roles, but for those ``lost(layer)`` names in the released layer."""
    assert unread_tensors(memory.layout) == []
    assert memory.layout.unexpected == []
    for a, b in zip(release.layout.layers, memory.layout.layers, strict=True):
        assert set(a.roles) - set(b.roles) == lost(a)
        for role, ref in b.roles.items():
            assert torch.equal(_cut(release, a.roles[role]), _cut(memory, ref)), role
        assert len(a.experts) == len(b.experts)
        for ea, eb in zip(a.experts, b.experts, strict=True):
            for role in (UP, DOWN):
                assert torch.equal(_cut(release, ea[role]), _cut(memory, eb[role]))
    for role, ref in release.layout.globals.items():
        assert torch.equal(_cut(release, ref), _cut(memory, memory.layout.globals[role]))


def test_ergo_in_memory_names_read_as_its_release_does(tmp_path: Path) -> None:
    """Ergo's modules as transformers holds them (``model.layers.N.self_attn.qkv_proj``,
    ``mlp.experts.up_proj``, ``mlp.gate.linear``) load the same roles as its released names,
    save the router (``[experts, hidden]`` in memory, ``[hidden, experts]`` in the files), which
    is left unread there rather than read across."""
    module = _saved("ergo", tmp_path / "release")
    save_in_memory_names(module, tmp_path / "release", tmp_path / "memory")
    with open_model(tmp_path / "release") as release, open_model(tmp_path / "memory") as memory:
        _read_alike(release, memory, lambda layer: {"router"} if layer.experts else set())


def test_exaone_in_memory_names_read_as_its_release_does(tmp_path: Path) -> None:
    """EXAONE 3's modules in memory carry Llama's names (``model.layers.N.self_attn.q_proj``);
    saved under them, they load what its released names (``transformer.h.N.attn.attention.``)
    do."""
    module = _saved("exaone", tmp_path / "release")
    save_in_memory_names(module, tmp_path / "release", tmp_path / "memory")
    with open_model(tmp_path / "release") as release, open_model(tmp_path / "memory") as memory:
        assert release.layout.layers[0].roles[Q].tensor.startswith("transformer.h.0.")
        assert memory.layout.layers[0].roles[Q].tensor == "model.layers.0.self_attn.q_proj.weight"
        _read_alike(release, memory, lambda layer: set())


#: in-memory module path -> the role its saved tensor must be read as (norms on a sublayer's
#: output are post_attn_norm/post_mlp_norm; the norm feeding the MLP is mlp_norm)
_NORM_ROLES = {
    "beam": {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attn_norm",
             "pre_feedforward_layernorm": "mlp_norm",
             "post_feedforward_layernorm": "post_mlp_norm", "self_attn.q_norm": "q_norm",
             "self_attn.k_norm": "k_norm",
             "mlp.gate.e_score_correction_bias": "router_correction"},
    "kolibri1": {"input_layernorm": "attn_norm", "post_self_attn_layernorm": "post_attn_norm",
                 "post_attention_layernorm": "mlp_norm", "post_mlp_layernorm": "post_mlp_norm",
                 "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm",
                 "mlp.gate.e_score_correction_bias": "router_correction"},
    "ergo": {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attn_norm",
             "pre_feedforward_layernorm": "mlp_norm",
             "post_feedforward_layernorm": "post_mlp_norm", "self_attn.q_norm": "q_norm",
             "self_attn.k_norm": "k_norm",
             "mlp.gate.e_score_correction_bias": "router_correction"},
    # Gemma 3n's norms multiply by ``w`` (not Gemma 3's ``1 + w``); block 1 reuses block 0's
    # keys, so it has no k_norm
    "gemma3n_text": {"input_layernorm": "attn_norm",
                     "post_attention_layernorm": "post_attn_norm",
                     "pre_feedforward_layernorm": "mlp_norm",
                     "post_feedforward_layernorm": "post_mlp_norm",
                     "self_attn.q_norm": "q_norm"},
}


def _norms_apart(name: str, buffers: bool = False) -> torch.nn.Module:
    """``name``'s tiny model with every vector (norm gains, biases; with ``buffers`` the
    float32 vector buffers too, such as selection biases) drawn apart, so that each role can
    only be matched by the tensor the model applies there."""
    cls, config = released_models()[name]
    torch.manual_seed(0)
    module = cls(config)
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
        for _, b in module.named_buffers() if buffers else ():
            if b.dim() == 1 and b.dtype == torch.float32:
                b.copy_(torch.rand_like(b))
    return module


@pytest.mark.parametrize("name", list(_NORM_ROLES))
def test_each_norm_is_read_as_the_place_the_model_applies_it(tmp_path: Path, name: str) -> None:
    """Beam's and Ergo's ``post_attention_layernorm`` (``post_attention_norm`` in Ergo's files)
    is on the attention output, Kolibri's (GLM-4's names) feeds the MLP; Kolibri's files name
    its output norms ``post_attn_norm``/``post_ffn_norm`` and its selection bias
    ``moe.router.expert_bias``. With every norm and bias set apart, each loads as its role."""
    module = _norms_apart(name, buffers=True)
    module.save_pretrained(tmp_path)
    block = module.model.layers[1]
    with open_model(tmp_path) as model:
        roles = model.layout.layers[1].roles
        for path, role in _NORM_ROLES[name].items():
            want = block.get_submodule(path.rsplit(".", 1)[0]) if path.endswith("_bias") else None
            want = (getattr(want, path.rsplit(".", 1)[1]) if want is not None
                    else block.get_submodule(path).weight)
            assert torch.equal(_cut(model, roles[role]), want.detach().float()), (path, role)


#: pre-LayerNorm BERTs: model prefix -> (the norm before the attention, the one before the
#: MLP, inside a block; the final norm, from the prefix)
_PRE_NORM_BERTS = {
    "roberta-prelayernorm": ("roberta_prelayernorm", "attention.LayerNorm",
                             "intermediate.LayerNorm", "LayerNorm"),
    "xlm-roberta-xl": ("roberta", "attention.self_attn_layer_norm", "LayerNorm",
                       "encoder.LayerNorm"),
    "megatron-bert": ("bert", "attention.ln", "ln", "encoder.ln"),
}


@pytest.mark.parametrize("name", list(_PRE_NORM_BERTS))
def test_a_pre_norm_berts_norms_are_read_where_it_applies_them(tmp_path: Path,
                                                               name: str) -> None:
    """Each pre-LayerNorm BERT names its norms its own way; with every norm drawn apart, the
    attention norm, the MLP norm and the final norm each load as the one its module applies
    there, and the blocks are read as pre-norm (their gains fold into the projections)."""
    module = _norms_apart(name)
    module.save_pretrained(tmp_path)
    prefix, attn, mlp, final = _PRE_NORM_BERTS[name]
    body = module.get_submodule(prefix)
    block = body.encoder.layer[1]
    with open_model(tmp_path) as model:
        assert not model.layout.post_norm
        roles = model.layout.layers[1].roles
        for role, path in (("attn_norm", attn), ("mlp_norm", mlp)):
            assert torch.equal(_cut(model, roles[role]),
                               block.get_submodule(path).weight.detach()), role
        assert torch.equal(_cut(model, model.layout.globals["final_norm"]),
                           body.get_submodule(final).weight.detach())


@pytest.mark.parametrize("name", ["longcat_flash", "jetmoe", "zaya", "dbrx"])
def test_each_expert_read_from_the_files_computes_what_its_module_does(tmp_path: Path,
                                                                      name: str) -> None:
    """Every expert cut from the saved files (LongCat-Flash's per-expert files, JetMoE's
    ``input_linear``/``output_linear`` stacks, ZAYA's v5 stacks, DBRX's 2-D stacks of every
    expert's rows) computes, as ``down(act(gate x) * up x)``, what the model's expert module
    computes for tokens routed to it alone; LongCat-Flash's dense MLP is its first sublayer's
    (``mlps.0``), its second set of neurons the second sublayer's MLP (``mlps.1``)."""
    module = _saved(name, tmp_path)
    block = module.transformer.blocks[1] if name == "dbrx" else module.model.layers[1]
    experts = block.ffn.experts if name == "dbrx" else getattr(block.mlp, "experts", None)
    x = torch.randn(5, 32)
    with open_model(tmp_path) as model:
        layer = model.layout.layers[1]
        assert len(layer.experts) == 4
        act = torch.nn.functional.silu
        for e, expert in enumerate(layer.experts):
            with torch.no_grad():
                if name == "jetmoe":
                    sizes = [5 if i == e else 0 for i in range(4)]
                    gate, up = block.mlp.input_linear(x, sizes).chunk(2, dim=-1)
                    want = block.mlp.output_linear(act(gate) * up, sizes)
                else:
                    routed = torch.full((5, 1), e)
                    want = experts(x, routed, torch.ones(5, 1)).reshape(5, 32)
            got = (act(x @ _cut(model, expert[GATE]).T) * (x @ _cut(model, expert[UP]).T)
                   ) @ _cut(model, expert[DOWN]).T
            torch.testing.assert_close(got, want)
        if name == "longcat_flash":
            roles = layer.roles
            for sublayer, (gate, up, down) in enumerate(((GATE, UP, DOWN), SECOND_ROLES)):
                assert {roles[r].tensor.split(".")[4] for r in (gate, up, down)} == {
                    str(sublayer)}
                with torch.no_grad():
                    want = block.mlps[sublayer](x)
                got = (act(x @ _cut(model, roles[gate]).T) * (x @ _cut(model, roles[up]).T)
                       ) @ _cut(model, roles[down]).T
                torch.testing.assert_close(got, want)


def _pack_ternary(folder: Path, out: Path) -> dict[str, torch.Tensor]:
    """``folder``'s BitNet checkpoint as its packed release stores it (transformers'
    ``pack_weights``, ``weight_scale`` beside each matrix, ``quant_method`` "bitnet"); the
    matrices its layers then compute with, by name."""
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    packed, computes = {}, {}
    for name, w in load_file(str(folder / "model.safetensors")).items():
        if w.dim() == 2 and "embed" not in name and "lm_head" not in name:
            scale = 1 / w.float().abs().mean()
            ternary = (w.float() * scale).round().clamp(-1, 1)
            packed[name] = pack_weights(ternary.clone())
            packed[name.removesuffix("weight") + "weight_scale"] = scale.reshape(1)
            computes[name] = ternary / scale
        else:
            packed[name] = w
    out.mkdir()
    save_file(packed, str(out / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "bitlinear"}
    (out / "config.json").write_text(json.dumps(config))
    return computes


def test_packed_ternary_bitnet_loads_as_the_weights_its_layers_compute(tmp_path: Path) -> None:
    """BitNet b1.58's release packs four ternary weights a byte (``uint8`` rows a quarter of
    the matrix's) beside one ``weight_scale``: read as codes, its shapes were refused as wrong
    (or its values compared as nonsense); unpacked, each matrix is ``ternary / scale``."""
    _saved("bitnet", tmp_path / "bf16")
    computes = _pack_ternary(tmp_path / "bf16", tmp_path / "packed")
    with open_model(tmp_path / "packed") as model:
        assert unread_tensors(model.layout) == []
        refs = {ref.tensor: ref for _, ref in model.layout.iter_roles()}
        assert set(computes) <= set(refs)
        for name, want in computes.items():
            torch.testing.assert_close(_cut(model, refs[name]), want, rtol=1e-2, atol=0)


def _wider(name: str, seed: int) -> torch.nn.Module:
    """``name``'s tiny model at a width the statistics can speak at (hidden 128, 2 blocks)."""
    cls, small = released_models()[name]
    settings = small.to_dict()
    # widths a config derives from hidden_size once and then saves (xLSTM's embeddings, RWKV's
    # time mix) follow it
    derived = {key: 128 for key in ("embedding_dim", "attention_hidden_size") if key in settings}
    config = type(small)(**(settings | {
        "hidden_size": 128, "intermediate_size": 256, "head_dim": 32, "vocab_size": 600,
        "moe_intermediate_size": 64} | derived))
    torch.manual_seed(seed)
    return cls.from_config(config) if cls is transformers.AutoModelForCausalLM else cls(config)


@pytest.mark.parametrize("name", ["exaone", "afmoe", "minicpm5_moe", "mimo_v2_flash",
                                  "laguna", "kimi_linear", "hunyuan_v1_moe", "beam",
                                  "kolibri1_1", "ergo", "inkling_text",
                                  "gpt_neox_japanese", "biogpt", "recurrent_gemma",
                                  "gemma3n_text", "phi4_multimodal", "olmo_hybrid", "codegen"])
def test_a_noisy_copy_of_a_released_layout_is_derived_and_another_start_is_not(
        tmp_path: Path, name: str) -> None:
    """End to end on the released names: EXAONE's GPT-2-like names, AFMoE's four norms, gated
    attention and experts, MiniCPM5's query and gate in one tensor; MiMo-V2's and Laguna's
    heads, which differ from layer to layer, are matched (head matching did not run); Kimi
    Linear's delta-attention blocks beside MLA ones; Beam's gated attention; Kolibri 1.1's
    blocks without keys and values of their own beside those with; Ergo's fused ``wqkv``,
    ungated expert stacks and transposed router; Inkling's sliding-window layers, whose heads
    are their own; GPT-NeoX-Japanese's per-head ``query_key_value`` under its own prefix;
    BioGPT's biased projections and learned positions under ``biogpt.``; RecurrentGemma's
    local-attention block beside a recurrent one; Gemma 3n's blocks on AltUp's active stream,
    one of them without keys and values of its own; Phi-4-multimodal's fused blocks beside its
    towers; OLMo-Hybrid's attention blocks beside DeltaNet ones; CodeGen's ``qkv_proj`` cut by
    its model-parallel shards (head matching did not run). Families whose blocks are read as
    these are (xLSTM, Doge, CTRL, ModernBERT-Decoder, Moshi, HRM-Text, XLM) are checked by
    their cuts alone: each run here costs two verifications."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        noisy(_wider(name, seed), noise).save_pretrained(tmp_path / folder)
    copy = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert copy.verdict == "derived", copy.reason
    assert copy.models.base.architecture == EXPECTED[name][0]
    assert "head_matching" in {p.name for p in copy.probes if p.decisive}
    other = verify(tmp_path / "base", tmp_path / "other", OPTS)
    assert other.verdict == "independent", other.reason


def test_gemma3n_multimodal_release_is_read_on_its_language_model(tmp_path: Path) -> None:
    """Gemma 3n's release is its multimodal model: the language model under
    ``model.language_model.``, beside the vision and audio towers and their embedders
    (``embed_vision``, ``embed_audio``), which are set aside; the config's ``model_type`` is
    ``gemma3n`` with the text model's under ``text_config``. Its roles are the text model's,
    the norms loaded as the gains the blocks multiply by; the block reusing another's keys and
    values has no k, v or k_norm."""
    from safetensors.torch import save_file

    module = _saved("gemma3n_text", tmp_path / "text")
    state = load_file(str(tmp_path / "text" / "model.safetensors"))
    released = {"model.language_model." + k.removeprefix("model."): w for k, w in state.items()}
    for part in ("vision_tower.timm_model.conv_stem.conv", "audio_tower.conformer.0.ffw_layer_start",
                 "embed_vision.embedding", "embed_vision.embedding_projection",
                 "embed_audio.embedding", "embed_audio.embedding_projection"):
        released[f"model.{part}.weight"] = torch.randn(32, 16)
    (tmp_path / "mm").mkdir()
    save_file(released, str(tmp_path / "mm" / "model.safetensors"))
    text_config = json.loads((tmp_path / "text" / "config.json").read_text())
    (tmp_path / "mm" / "config.json").write_text(json.dumps(
        {"model_type": "gemma3n", "architectures": ["Gemma3nForConditionalGeneration"],
         "text_config": text_config}))
    with open_model(tmp_path / "mm") as model:
        layout = model.layout
        assert layout.family == "gemma3n"
        assert layout.unexpected == []
        assert missing_roles(layout) == []
        assert set(layout.other_modalities) == {
            "model.vision_tower.", "model.audio_tower.", "model.embed_vision.",
            "model.embed_audio."}
        assert {K, V, "k_norm"} <= set(layout.layers[0].roles)
        assert not {K, V, "k_norm"} & set(layout.layers[1].roles)
        for index, block in enumerate(module.model.layers):
            roles = layout.layers[index].roles
            assert torch.equal(_cut(model, roles["attn_norm"]),
                               block.input_layernorm.weight.detach().float())
            assert torch.equal(_cut(model, roles[Q]), block.self_attn.q_proj.weight.detach())
            assert torch.equal(_cut(model, roles[DOWN]), block.mlp.down_proj.weight.detach())


def test_inkling_sliding_layers_split_into_their_own_heads(tmp_path: Path) -> None:
    """Inkling's sliding-window layers have their own query heads (``swa_num_attention_heads``):
    the tiny model's has 8 heads of 4 where its full layer has 4 of 8, the same rows in q, k, v
    and o, so reading it with the model's head count fit the shapes and cut every head wrong."""
    module = _saved("inkling_text", tmp_path)
    with open_model(tmp_path) as model:
        assert_heads_cut_as_computed(model, module.model.layers, [(4, 2, 8), (8, 4, 4)],
                                     lambda attn: attn.q_proj.weight)


def test_recurrent_gemma_blocks_read_as_they_compute(tmp_path: Path) -> None:
    """RecurrentGemma's norms multiply by ``1 + w`` and load as that gain (the one before the
    token mixer, the one before the MLP, the final one); its MLP with biases, cut from the
    files, computes what ``mlp_block`` does; its attention block's q/k/v/o are the local
    attention's, while the recurrent block holds no attention role (its RG-LRU is not read)."""
    cls, config = released_models()["recurrent_gemma"]
    torch.manual_seed(0)
    module = cls(config)
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) - 0.5)
    module.save_pretrained(tmp_path)
    assert module.config.layers_block_type == ["linear_attention", "sliding_attention"]
    x = torch.randn(5, 32)
    with open_model(tmp_path) as model:
        layout = model.layout
        torch.testing.assert_close(_cut(model, layout.globals["final_norm"]),
                                   1 + module.model.final_norm.weight.detach())
        for index, layer in enumerate(layout.layers):
            block = module.model.layers[index]
            roles = layer.roles
            for role, norm in (("attn_norm", block.temporal_pre_norm),
                               ("mlp_norm", block.channel_pre_norm)):
                torch.testing.assert_close(_cut(model, roles[role]), 1 + norm.weight.detach())
            act = torch.nn.functional.gelu

            w = {role: _cut(model, roles[role]) for role in (GATE, UP, DOWN)}
            b = {role: _cut(model, roles[role + ".bias"]) for role in (GATE, UP, DOWN)}
            hidden = act(x @ w[GATE].T + b[GATE], approximate="tanh") * (x @ w[UP].T + b[UP])
            got = hidden @ w[DOWN].T + b[DOWN]
            with torch.no_grad():
                torch.testing.assert_close(got, block.mlp_block(x))
            attn = block.temporal_block
            if index == 0:
                assert not {Q, K, V, O} & set(roles)
                continue
            for role, proj in ((Q, attn.q_proj), (K, attn.k_proj), (V, attn.v_proj),
                               (O, attn.o_proj)):
                assert torch.equal(_cut(model, roles[role]), proj.weight.detach())
            assert torch.equal(_cut(model, roles["o.bias"]), attn.o_proj.bias.detach())


def test_differential_attention_is_not_read_as_heads(tmp_path: Path) -> None:
    """DiffLlama's attention pairs query heads ``h`` and ``h + H/2`` and writes each pair's
    two value heads through ``2 * head_dim`` columns of ``o_proj``: its q/k/v/o carry no head
    roles and head matching does not run, while its norms and MLP are Llama's. Without a
    config its files (whose ``lambda_*`` Llama's table does not know) are read as DiffLlama's,
    and a Llama checkpoint without a config stays Llama's."""
    from verifier.probes.head_matching import load_circuits

    module = _saved("diffllama", tmp_path / "diff")
    attn = module.model.layers[0].self_attn
    # the model this table describes: a head pair's output is 2 * head_dim wide
    assert attn.o_proj.in_features == attn.config.num_attention_heads * attn.head_dim
    assert attn.groupnorm.normalized_shape == (2 * attn.head_dim,)
    with open_model(tmp_path / "diff") as model:
        for layer in model.layout.layers:
            assert not {Q, K, V, O} & set(layer.roles)
            assert load_circuits(model, layer.index) is None
            block = module.model.layers[layer.index]
            assert torch.equal(_cut(model, layer.roles["mlp_norm"]),
                               block.post_attention_layernorm.weight.detach())
            assert torch.equal(_cut(model, layer.roles[GATE]), block.mlp.gate_proj.weight.detach())
    (tmp_path / "diff" / "config.json").unlink()
    with open_model(tmp_path / "diff") as model:
        assert model.layout.family == "diffllama"
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL))
    llama.save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "config.json").unlink()
    with open_model(tmp_path / "llama") as model:
        assert model.layout.family == "llama"
        assert O in model.layout.layers[0].roles


def _phi4_release(folder: Path, out: Path) -> None:
    """``folder``'s Phi-4-multimodal as its release stores it (``phi4mm``): the projections the
    vision and speech LoRA adapters wrap under ``X.base_layer``, beside ``X.lora_A.<adapter>``
    and ``X.lora_B.<adapter>``."""
    from safetensors.torch import save_file

    wrapped = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    files = {}
    for name, w in load_file(str(folder / "model.safetensors")).items():
        stem = name.removesuffix(".weight")
        if "embed_tokens_extend" in name or stem.rsplit(".", 1)[-1] not in wrapped:
            files[name] = w
            continue
        files[f"{stem}.base_layer.weight"] = w
        for adapter in ("vision", "speech"):
            files[f"{stem}.lora_A.{adapter}.weight"] = torch.randn(4, w.shape[1])
            files[f"{stem}.lora_B.{adapter}.weight"] = torch.randn(w.shape[0], 4)
    out.mkdir()
    save_file(files, str(out / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text()) | {"model_type": "phi4mm"}
    (out / "config.json").write_text(json.dumps(config))


def test_phi4_multimodal_release_reads_the_base_weights_and_leaves_the_adapters(
        tmp_path: Path) -> None:
    """Phi-4-multimodal's release wraps ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and
    ``down_proj`` in vision and speech LoRA layers (``X.base_layer``, ``X.lora_A.vision``...):
    the base weights, which text runs on, are the roles, cut as the model cuts them (q, k, v
    by head counts; gate, then up); the adapters and the towers are compared by no probe."""
    module = _saved("phi4_multimodal", tmp_path / "saved")
    _phi4_release(tmp_path / "saved", tmp_path / "release")
    x = torch.randn(5, 32)
    with open_model(tmp_path / "release") as model:
        layout = model.layout
        assert (layout.family, layout.num_layers) == ("phi4_multimodal", 2)
        assert layout.unexpected == []
        assert list(layout.other_modalities) == ["model.embed_tokens_extend."]
        assert missing_roles(layout) == []
        read = {ref.tensor for _, ref in layout.iter_roles()}
        assert not any(".lora_" in n for n in read)
        for i, layer in enumerate(layout.layers):
            block = module.model.layers[i]
            with torch.no_grad():
                q, k, v = block.self_attn.qkv_proj(x).split((32, 16, 16), dim=-1)
                gate, up = block.mlp.gate_up_proj(x).chunk(2, dim=-1)
            for role, want in ((Q, q), (K, k), (V, v), (GATE, gate), (UP, up)):
                assert layer.roles[role].tensor.endswith(".base_layer.weight")
                torch.testing.assert_close(x @ _cut(model, layer.roles[role]).T, want)
            assert torch.equal(_cut(model, layer.roles[O]), block.self_attn.o_proj.weight.detach())
            assert torch.equal(_cut(model, layer.roles[DOWN]), block.mlp.down_proj.weight.detach())


def test_olmo_hybrid_norms_are_read_only_where_a_name_means_one_place(tmp_path: Path) -> None:
    """OLMo-Hybrid's DeltaNet blocks are pre-norm and its attention blocks post-norm:
    ``attention_layer_norm`` (``input_layernorm`` in memory) feeds the DeltaNet mixer and
    ``post_feedforward_layernorm`` is on the attention block's MLP output, but
    ``feedforward_layer_norm`` (``post_attention_layernorm`` in memory) is the DeltaNet block's
    MLP input norm and the attention block's attention output norm: it takes no role, in the
    saved names or the in-memory ones. The DeltaNet mixer is not read as attention."""
    module = _norms_apart("olmo_hybrid")
    module.save_pretrained(tmp_path / "saved")
    save_in_memory_names(module, tmp_path / "saved", tmp_path / "memory")
    linear, attention = module.model.layers
    want = [{"attn_norm": linear.input_layernorm.weight},
            {"post_mlp_norm": attention.post_feedforward_layernorm.weight,
             "q_norm": attention.self_attn.q_norm.weight,
             "k_norm": attention.self_attn.k_norm.weight}]
    for folder in ("saved", "memory"):
        with open_model(tmp_path / folder) as model:
            layout = model.layout
            assert layout.unexpected == []
            assert not {Q, K, V, O} & set(layout.layers[0].roles)
            assert {Q, K, V, O} <= set(layout.layers[1].roles)
            for layer, norms in zip(layout.layers, want, strict=True):
                held = {r for r in layer.roles if r.endswith("norm")}
                assert held == set(norms), (folder, layer.index)
                for role, w in norms.items():
                    assert torch.equal(_cut(model, layer.roles[role]), w.detach().float())
                for role, path in ((GATE, "gate_proj"), (UP, "up_proj"), (DOWN, "down_proj")):
                    block = module.model.layers[layer.index]
                    assert torch.equal(_cut(model, layer.roles[role]),
                                       getattr(block.mlp, path).weight.detach())


@pytest.mark.parametrize("family", ["gemma4", "gemma3n"])
def test_blocks_that_reuse_earlier_keys_and_values_set_aside_what_they_store(
        tmp_path: Path, family: str) -> None:
    """The last ``num_kv_shared_layers`` blocks of Gemma 3n and Gemma 4's E models read an
    earlier block's keys and values. transformers saves no k/v for them (no block is then
    "incomplete"); Google's release files still hold their unused ``k_proj``, ``v_proj`` and
    ``k_norm``, which compute nothing: they take no role and are no surprise."""
    from safetensors.torch import save_file

    small = SMALL | {"num_hidden_layers": 4}
    if family == "gemma4":
        cls, config = transformers.Gemma4ForCausalLM, transformers.Gemma4TextConfig(
            **small, hidden_size_per_layer_input=0, num_kv_shared_layers=2,
            layer_types=["sliding_attention", "full_attention"] * 2)
    else:
        cls, config = transformers.Gemma3nForCausalLM, transformers.Gemma3nTextConfig(
            **small, vocab_size_per_layer_input=100, hidden_size_per_layer_input=8,
            laurel_rank=4, num_kv_shared_layers=2, activation_sparsity_pattern=[0.0] * 4)
    torch.manual_seed(0)
    cls(config).save_pretrained(tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / "model.safetensors"))
    unused = {f"model.layers.{i}.self_attn.{name}.weight": torch.randn(
        state[f"model.layers.{i - 2}.self_attn.{name}.weight"].shape)
        for i in (2, 3) for name in ("k_proj", "v_proj", "k_norm")}
    (tmp_path / "release").mkdir()
    save_file(state | unused, str(tmp_path / "release" / "model.safetensors"))
    (tmp_path / "release" / "config.json").write_text(
        (tmp_path / "saved" / "config.json").read_text())
    for folder in ("saved", "release"):
        with open_model(tmp_path / folder) as model:
            layout = model.layout
            assert missing_roles(layout) == []
            assert unread_tensors(layout) == []
            held = [{K, V, "k_norm"} & set(layer.roles) for layer in layout.layers]
            assert held == [{K, V, "k_norm"}] * 2 + [set()] * 2
            assert set(unused) <= set(layout.unassigned) or folder == "saved"


def _zamba(name: str, seed: int, hidden: int = 32, vocab: int = 100) -> torch.nn.Module:
    """A Zamba (two shared-block uses, Mamba blocks between) or Zamba2 (two shared blocks
    used in turn, four uses) model of ``hidden`` width."""
    common = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": vocab, "pad_token_id": 0,
              "mamba_d_state": 8}
    if name == "zamba":
        config = transformers.ZambaConfig(
            **common, num_hidden_layers=4, n_mamba_heads=2,
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid"])
        cls = transformers.ZambaForCausalLM
    else:
        config = transformers.Zamba2Config(
            **common, num_hidden_layers=6, n_mamba_heads=hidden // 16, adapter_rank=4,
            use_shared_attention_adapter=True, num_mem_blocks=2,
            layers_block_type=["mamba", "hybrid", "hybrid", "mamba", "hybrid", "hybrid"])
        cls = transformers.Zamba2ForCausalLM
    torch.manual_seed(seed)
    return cls(config)


def _zamba_mixer(block: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A Zamba block's Mamba mixer and the norm in front of it (a hybrid block's are inside
    its ``mamba_decoder``)."""
    inner = getattr(block, "mamba_decoder", block)
    return inner.mamba, inner.input_layernorm


@pytest.mark.parametrize("name", ["zamba", "zamba2"])
def test_zamba_blocks_read_their_mamba_mixers_and_no_shared_block(tmp_path: Path,
                                                                  name: str) -> None:
    """Each block's Mamba mixer is read as Mamba's: in a run of the model, the ``mlp_norm``
    gain times the RMS-normed input of the norm is what the mixer reads, and its
    ``in_proj`` cut into up and gate gives the input ``x`` and gate ``z`` the mixer splits
    (Zamba: interleaved channel by channel; Zamba2: Mamba-2's ``z``, then ``x``). The shared
    transformer blocks (stored at their first uses only) and each use's ``linear`` take no
    role and are expected: the attention reads the residual stream beside the embeddings,
    twice the hidden width."""
    module = _zamba(name, seed=0)
    module.save_pretrained(tmp_path)
    seen: dict[tuple[int, str], torch.Tensor] = {}

    def keep(index: int, what: str) -> Callable[..., None]:
        def hook(_m: object, args: tuple, kwargs: dict, _out: object) -> None:
            seen[index, what] = args[0] if args else kwargs["hidden_states"]
        return hook

    hooks = []
    for i, block in enumerate(module.model.layers):
        mixer, norm = _zamba_mixer(block)
        hooks += [norm.register_forward_hook(keep(i, "norm"), with_kwargs=True),
                  mixer.register_forward_hook(keep(i, "mixer"), with_kwargs=True)]
    with torch.no_grad():
        module(torch.randint(0, 100, (1, 6)))
    for hook in hooks:
        hook.remove()
    hidden = module.config.hidden_size
    shared = "shared_transf." if name == "zamba" else "shared_transformer."
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.unexpected, missing_roles(layout)) == (name, [], [])
        for index, layer in enumerate(layout.layers):
            block = module.model.layers[index]
            mixer, _ = _zamba_mixer(block)
            roles = layer.roles
            assert set(roles) == {"mlp_norm", GATE, UP, DOWN}
            before, read = seen[index, "norm"], seen[index, "mixer"]
            normed = before * torch.rsqrt(before.pow(2).mean(-1, keepdim=True) + 1e-5)
            torch.testing.assert_close(normed * _cut(model, roles["mlp_norm"]), read)
            x = torch.randn(5, hidden)
            with torch.no_grad():
                proj = mixer.in_proj(x)
                torch.testing.assert_close(_cut(model, roles[DOWN]), mixer.out_proj.weight)
            if name == "zamba":
                want_x, want_z = proj.view(5, -1, 2).unbind(-1)
            else:
                want_z, want_x = proj[:, :mixer.intermediate_size], proj[
                    :, mixer.intermediate_size:2 * mixer.intermediate_size]
            torch.testing.assert_close(x @ _cut(model, roles[UP]).T, want_x)
            torch.testing.assert_close(x @ _cut(model, roles[GATE]).T, want_z)
        read = {ref.tensor for _, ref in layout.iter_roles()}
        assert not any(shared in t or ".linear." in t for t in read)
        stored = sorted({int(t.split(".")[2]) for t in layout.unassigned if shared in t})
        hybrid = [i for i, kind in enumerate(module.config.layers_block_type) if kind == "hybrid"]
        assert stored == hybrid[:getattr(module.config, "num_mem_blocks", 1)]
        assert all(f"model.layers.{i}.linear.weight" in layout.unassigned for i in hybrid)
    attn = module.model.layers[hybrid[0]].__getattr__(shared[:-1]).self_attn
    assert attn.q_proj.in_features == 2 * hidden


def _permute_zamba_channels(model: torch.nn.Module, seed: int) -> None:
    """Permute every Zamba mixer's inner channels within their heads, and the heads, with
    everything that reads or writes them (the model computes the same function)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.model.layers:
            mixer, _ = _zamba_mixer(block)
            heads, size = mixer.n_mamba_heads, mixer.mamba_head_dim
            order = torch.randperm(heads, generator=gen)
            within = torch.stack([torch.randperm(size, generator=gen) for _ in range(heads)])
            perm = (order[:, None] * size + within).flatten()
            mixer.in_proj.weight.copy_(mixer.in_proj.weight.unflatten(0, (-1, 2))[perm]
                                       .flatten(0, 1))
            for p in (mixer.conv1d.weight, mixer.conv1d.bias):
                p.copy_(p[perm])
            mixer.out_proj.weight.copy_(mixer.out_proj.weight[:, perm])
            mixer.x_proj_weight.copy_(torch.stack(
                [mixer.x_proj_weight[h][:, w] for h, w in zip(order, within, strict=True)]))
            for p in (mixer.dt_proj_weight, mixer.dt_proj_bias, mixer.A_log, mixer.D):
                p.copy_(torch.stack([p[h][w] for h, w in zip(order, within, strict=True)]))


def test_zamba_channels_are_matched_as_neurons(tmp_path: Path) -> None:
    """Zamba's mixer channels (interleaved in ``in_proj``) permute within their heads, and
    heads permute, as an MLP's neurons do: a copy so permuted (the same function) with noise
    added is derived through neuron matching; another initialisation is independent."""
    base = _zamba("zamba", seed=0, hidden=128, vocab=600)
    copy = _zamba("zamba", seed=0, hidden=128, vocab=600)
    _permute_zamba_channels(copy, seed=1)
    report, other = _permuted_channels_are_derived(
        tmp_path, base, copy, _zamba("zamba", seed=1, hidden=128, vocab=600))
    assert report.models.base.architecture == "zamba"
    assert other.verdict == "independent", other.reason


def _token_blend(mix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """RWKV's token shift: each token's state blended, coordinate by coordinate, with the
    previous token's (zeros before the first token)."""
    return x * mix + torch.nn.functional.pad(x, (0, 0, 1, -1)) * (1 - mix)


def test_rwkv_channel_mix_is_read_as_the_mlp_it_computes(tmp_path: Path) -> None:
    """RWKV-4's channel mix, cut from the files, computes what ``feed_forward`` does:
    ``sigmoid(receptance @ r) * (value @ relu(key @ k) ** 2)``, where ``k`` and ``r`` blend
    each token's normed state with the previous token's; ``key`` and ``value`` are its up and
    down, the receptance gate (outside the neurons) is not read. ``ln2``'s gain and bias are
    what those inputs are normed by, ``ln1`` is the norm in front of the time mix,
    ``blocks.0.pre_ln`` the embeddings' norm and ``ln_out`` the final one; nothing of the time
    mix (``attention.*``) is read."""
    cls, config = released_models()["rwkv"]
    torch.manual_seed(0)
    module = cls(config)
    with torch.no_grad():  # norms away from their initial ones and zeros
        for _, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    module.save_pretrained(tmp_path)
    body = module.rwkv
    h = torch.randn(1, 5, 32)
    with open_model(tmp_path) as model:
        layout = model.layout
        for role, norm in (("embed_norm", body.blocks[0].pre_ln), ("final_norm", body.ln_out)):
            assert torch.equal(_cut(model, layout.globals[role]), norm.weight.detach())
            assert torch.equal(_cut(model, layout.globals[role + ".bias"]), norm.bias.detach())
        for index, layer in enumerate(layout.layers):
            block, roles = body.blocks[index], layer.roles
            assert not {Q, K, V, O, GATE} & set(roles)
            for role, norm in (("attn_norm", block.ln1), ("mlp_norm", block.ln2)):
                assert torch.equal(_cut(model, roles[role]), norm.weight.detach())
                assert torch.equal(_cut(model, roles[role + ".bias"]), norm.bias.detach())
            ffn = block.feed_forward
            up, down = _cut(model, roles[UP]), _cut(model, roles[DOWN])
            gain, shift = _cut(model, roles["mlp_norm"]), _cut(model, roles["mlp_norm.bias"])
            with torch.no_grad():
                want, _ = ffn(block.ln2(h))
                normed = torch.nn.functional.layer_norm(h, (32,), eps=block.ln2.eps)
                # the gain folded into the up rows, the bias blended and read through them
                mix = ffn.time_mix_key
                pre = (_token_blend(mix, normed) @ (up * gain).T
                       + _token_blend(mix, shift.expand_as(h)) @ up.T)
                hidden = torch.relu(pre) ** 2
                gate = torch.sigmoid(ffn.receptance(_token_blend(ffn.time_mix_receptance,
                                                                 block.ln2(h))))
            torch.testing.assert_close(gate * (hidden @ down.T), want)
        read = {ref.tensor for _, ref in layout.iter_roles()}
        assert not any(".attention." in n or "receptance" in n or "time_" in n for n in read)
        assert all(".attention." in n or ".feed_forward." in n for n in layout.unassigned)


def test_rwkv_channel_mix_neurons_are_matched_and_another_start_is_not(tmp_path: Path) -> None:
    """A copy of an RWKV-4 model whose channel-mix neurons are permuted (``key`` rows with
    ``value`` columns: the same function) and noised is derived through neuron matching, with
    no head matching (the time mix has no heads); another initialisation is not derived."""
    base = _wider("rwkv", 0)
    base.save_pretrained(tmp_path / "base")
    copy = _wider("rwkv", 0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in copy.rwkv.blocks:
            ffn = block.feed_forward
            perm = torch.randperm(ffn.key.weight.shape[0], generator=gen)
            ffn.key.weight.copy_(ffn.key.weight[perm])
            ffn.value.weight.copy_(ffn.value.weight[:, perm])
    tokens = torch.randint(0, 600, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(copy(tokens).logits, base(tokens).logits)
    noisy(copy, 0.2).save_pretrained(tmp_path / "copy")
    _wider("rwkv", 1).save_pretrained(tmp_path / "other")
    report = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert report.verdict == "derived", report.reason
    decisive = {p.name for p in report.probes if p.decisive}
    assert "neuron_matching" in decisive
    assert "head_matching" not in decisive
    other = verify(tmp_path / "base", tmp_path / "other", OPTS)
    assert other.verdict != "derived", other.reason


def test_xlstm_heads_split_as_the_mlstm_computes_them(tmp_path: Path) -> None:
    """xLSTM's mLSTM heads: queries and keys of ``qk_dim / heads``, values and output columns of
    ``v_dim / heads`` (twice as wide here), read from ``q``/``k``/``v``/``out_proj`` as the
    layer reshapes them; permuting whole heads (with their gates, norm and output gate: the
    same function) permutes the heads the probe reads and nothing else. The output gate
    ``ogate_preact`` is the heads' output gate; its SwiGLU FFN, cut from the files, computes
    what ``ffn`` does, behind ``norm_ffn``; ``norm_mlstm`` is the norm q, k and v read."""
    from verifier.probes.head_matching import load_circuits

    module = _saved("xlstm", tmp_path / "base")
    heads, qk, hv = 4, 4, 8
    x = torch.randn(1, 6, 32)
    with open_model(tmp_path / "base") as model:
        base = [load_circuits(model, i) for i in range(2)]
        for index, layer in enumerate(model.layout.layers):
            block, roles = module.backbone.blocks[index], layer.roles
            mlstm = block.mlstm_layer
            assert base[index] is not None
            assert (base[index].heads, base[index].groups) == (heads, heads)
            assert torch.equal(base[index].q.float(), mlstm.q.weight.detach().view(heads, qk, 32))
            assert torch.equal(base[index].v.float(), mlstm.v.weight.detach().view(heads, hv, 32))
            assert torch.equal(base[index].o.float(),
                               mlstm.out_proj.weight.detach().T.reshape(heads, hv, 32))
            assert torch.equal(_cut(model, roles[ATTN_GATE]), mlstm.ogate_preact.weight.detach())
            assert torch.equal(_cut(model, roles["attn_norm"]), block.norm_mlstm.weight.detach())
            assert torch.equal(_cut(model, roles["mlp_norm"]), block.norm_ffn.weight.detach())
            w = {role: _cut(model, roles[role]) for role in (GATE, UP, DOWN)}
            with torch.no_grad():
                got = (torch.nn.functional.silu(x @ w[GATE].T) * (x @ w[UP].T)) @ w[DOWN].T
                torch.testing.assert_close(got, block.ffn(x))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        for block in module.backbone.blocks:
            mlstm = block.mlstm_layer
            want, _ = mlstm(x)
            for proj, size in ((mlstm.q, qk), (mlstm.k, qk), (mlstm.v, hv),
                               (mlstm.ogate_preact, hv)):
                proj.weight.copy_(proj.weight.view(heads, size, 32)[perm].flatten(0, 1))
            for gate in (mlstm.igate_preact, mlstm.fgate_preact):
                gate.weight.copy_(gate.weight[perm])
                gate.bias.copy_(gate.bias[perm])
            norm = mlstm.multihead_norm.weight
            norm.copy_(norm.view(heads, hv)[perm].flatten())
            out = mlstm.out_proj.weight
            out.copy_(out.view(32, heads, hv)[:, perm].flatten(1))
            torch.testing.assert_close(mlstm(x)[0], want)
    module.save_pretrained(tmp_path / "permuted")
    with open_model(tmp_path / "permuted") as model:
        for index in range(2):
            moved = load_circuits(model, index)
            assert moved is not None
            for part in ("q", "k", "v", "o"):
                assert torch.equal(getattr(moved, part), getattr(base[index], part)[perm])
def _vectors_apart(name: str) -> torch.nn.Module:
    """``name``'s tiny model in eval mode with every vector (gains, biases, scales) drawn apart,
    so that each role can only be matched by the tensor the model applies there."""
    return _norms_apart(name).eval()


def _attend(x: torch.Tensor, w: dict[str, torch.Tensor], heads: int, kv_heads: int,
            rope: tuple[torch.Tensor, torch.Tensor] | None = None,
            qk_norm_eps: float | None = None) -> torch.Tensor:
    """Causal softmax attention over ``x`` ``[T, hidden]`` computed from the roles read (``q``,
    ``k``, ``v``, ``o``, their biases, per-head RMS ``q_norm``/``k_norm``), key/value head
    ``h // (heads // kv_heads)`` serving query head ``h``, RoPE from ``rope`` (cos, sin)."""
    tokens = x.shape[0]

    def project(role: str, n: int) -> torch.Tensor:
        out = x @ w[role].T + w.get(f"{role}.bias", 0)
        out = out.view(tokens, n, -1).transpose(0, 1)  # [n, T, head_dim]
        if qk_norm_eps is not None and f"{role}_norm" in w:
            out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + qk_norm_eps)
            out = out * w[f"{role}_norm"]
        if rope is not None and role != V:
            cos, sin = rope
            half = out.shape[-1] // 2
            rotated = torch.cat((-out[..., half:], out[..., :half]), dim=-1)
            out = out * cos + rotated * sin
        return out

    q, k, v = project(Q, heads), project(K, kv_heads), project(V, kv_heads)
    k, v = (t.repeat_interleave(heads // kv_heads, dim=0) for t in (k, v))
    scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5 + _causal_mask(tokens)[0, 0]
    out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(tokens, -1)
    return out @ w[O].T + w.get("o.bias", 0)


def _causal_mask(tokens: int) -> torch.Tensor:
    """The additive causal mask ``[1, 1, T, T]`` the models' attention takes."""
    return torch.full((tokens, tokens), float("-inf")).triu(1)[None, None]


def _cut_all(model, roles: dict) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {role: _cut(model, ref) for role, ref in roles.items()}


def test_doge_heads_norms_and_shared_mlp_read_as_they_compute(tmp_path: Path) -> None:
    """Doge's q/k/v/o, with per-head q/k norms and RoPE, compute its attention whenever its
    dynamic mask is flat (``A`` = 0 adds the same bias to every score); with ``A`` set, the
    mask computed from the values by ``dt_proj`` moves the scores, which is why ``dt_proj``
    and ``A`` are not read. With the cross-domain MoE, the MLP read is the always-on shared
    expert: it computes the block's MLP once the single-neuron retrieval experts are silenced
    (their ``up_embed`` zeroed); ``router_gate``, ``down_embed`` and ``up_embed`` take no role.
    The norms in front of attention and MLP and the q/k norms load as the modules' gains."""
    module = _vectors_apart("doge_moe")
    module.save_pretrained(tmp_path)
    config = module.config
    x = torch.randn(6, 32)
    positions = torch.arange(6)[None]
    with open_model(tmp_path) as model:
        read = {ref.tensor for _, ref in model.layout.iter_roles()}
        for name in ("dt_proj", "self_attn.A", "router_gate", "down_embed", "up_embed",
                     "residual"):
            assert not any(name in tensor for tensor in read), name
        for layer in model.layout.layers:
            block = module.model.layers[layer.index]
            w = _cut_all(model, layer.roles)
            for role, norm in (("attn_norm", block.input_layernorm),
                               ("mlp_norm", block.post_attention_layernorm),
                               ("q_norm", block.self_attn.q_norm),
                               ("k_norm", block.self_attn.k_norm)):
                assert torch.equal(w[role], norm.weight.detach()), role
            attn = block.self_attn
            with torch.no_grad():
                cos, sin = module.model.rotary_emb(x[None], positions)
                got = _attend(x, w, 4, 2, rope=(cos[0], sin[0]),
                              qk_norm_eps=config.rms_norm_eps)
                attn.dt_proj.weight.normal_()  # a mask that differs from key to key
                moved = attn(x[None], (cos, sin), _causal_mask(6))[0][0]
                assert not torch.allclose(got, moved, atol=1e-4)
                attn.A.zero_()
                torch.testing.assert_close(got, attn(x[None], (cos, sin), _causal_mask(6))[0][0])
                act = torch.nn.functional.silu
                mlp = (act(x @ w[GATE].T) * (x @ w[UP].T)) @ w[DOWN].T
                assert not torch.allclose(mlp, block.mlp(x[None])[0][0], atol=1e-4)
                block.mlp.up_embed.weight.zero_()
                torch.testing.assert_close(mlp, block.mlp(x[None])[0][0])


def test_ctrl_blocks_computed_from_their_roles_are_the_models(tmp_path: Path) -> None:
    """CTRL's pre-LayerNorm block, computed from the roles read: ``x + attn(ln1(x))``, then
    ``h + ffn(ln2(h))`` with q/k/v/o and the ReLU MLP with their biases, equals the model's
    block; the final norm is ``transformer.layernorm`` and the head is tied to ``w`` with a
    bias of its own."""
    module = _vectors_apart("ctrl")
    module.save_pretrained(tmp_path)
    x = torch.randn(6, 32)
    with open_model(tmp_path) as model:
        layout = model.layout
        g = _cut_all(model, layout.globals)
        assert torch.equal(g["embed"], module.transformer.w.weight.detach())
        assert torch.equal(g["final_norm"], module.transformer.layernorm.weight.detach())
        assert torch.equal(g["lm_head.bias"], module.lm_head.bias.detach())
        for layer in layout.layers:
            w = _cut_all(model, layer.roles)

            def norm(h: torch.Tensor, role: str, w: dict = w) -> torch.Tensor:
                return torch.nn.functional.layer_norm(h, (32,), w[role], w[f"{role}.bias"],
                                                      eps=1e-6)

            h = x + _attend(norm(x, "attn_norm"), w, 4, 4)
            up = torch.relu(norm(h, "mlp_norm") @ w[UP].T + w["up.bias"])
            got = h + up @ w[DOWN].T + w["down.bias"]
            with torch.no_grad():
                want = module.transformer.h[layer.index](x[None], attention_mask=_causal_mask(6))
            torch.testing.assert_close(got, want[0])


def _gate_first_gives(want: torch.Tensor, h: torch.Tensor, w: dict[str, torch.Tensor],
                      act: Callable[[torch.Tensor], torch.Tensor],
                      norm: Callable[[torch.Tensor, str], torch.Tensor], index: int) -> None:
    """A GLU block's output from ``h`` (the attention's residual sum) with ``w``'s gate and up
    is ``want``; with the two swapped it is not (the cut of a fused ``[gate; up]`` is read the
    right way round)."""
    for gate, up, match in ((w[GATE], w[UP], True), (w[UP], w[GATE], False)):
        got = h + (act(norm(h, "mlp_norm") @ gate.T) * (norm(h, "mlp_norm") @ up.T)) @ w[DOWN].T
        assert torch.allclose(got, want, atol=1e-5) == match, index


def test_modernbert_decoder_glu_and_norms_read_where_the_model_applies_them(
        tmp_path: Path) -> None:
    """ModernBERT-Decoder's ``mlp.Wi`` computes ``act(first half) * second half``: the first
    half is the gate (the code's ``input``), the second the up projection (the code's
    ``gate``); cut so, the roles compute the model's blocks (the halves swapped do not). The
    first block has no attention norm (it reads the normed embeddings: ``embed_norm``), the
    others' ``attn_norm`` is in front of attention; the prediction head in front of the tied
    ``decoder`` takes no role."""
    module = _vectors_apart("modernbert-decoder")
    module.save_pretrained(tmp_path)
    config = module.config
    x = torch.randn(6, 32)
    positions = torch.arange(6)[None]
    with open_model(tmp_path) as model:
        layout = model.layout
        g = _cut_all(model, layout.globals)
        assert torch.equal(g["embed_norm"], module.model.embeddings.norm.weight.detach())
        assert torch.equal(g["final_norm"], module.model.final_norm.weight.detach())
        assert torch.equal(g["lm_head.bias"], module.decoder.bias.detach())
        assert set(layout.unassigned) == {"lm_head.dense.weight", "lm_head.norm.weight"}
        assert "attn_norm" not in layout.layers[0].roles
        for layer in layout.layers:
            block = module.model.layers[layer.index]
            w = _cut_all(model, layer.roles)

            def norm(h: torch.Tensor, role: str, w: dict = w) -> torch.Tensor:
                if role not in w:
                    return h
                return torch.nn.functional.layer_norm(h, (32,), w[role], eps=config.norm_eps)

            act = torch.nn.functional.gelu
            with torch.no_grad():
                cos, sin = module.model.rotary_emb(x[None], positions,
                                                   config.layer_types[layer.index])
                want = block(x[None], position_embeddings=(cos, sin),
                             attention_mask=_causal_mask(6))[0]
            h = x + _attend(norm(x, "attn_norm"), w, 4, 4, rope=(cos[0], sin[0]))
            _gate_first_gives(want, h, w, act, norm, layer.index)


def test_moshi_blocks_computed_from_their_roles_are_the_models(tmp_path: Path) -> None:
    """Moshi's text transformer: ``fc1`` computes ``act(first half) * second half``, so its
    first half is the gate and its second the up projection; cut so, with q/k/v/o under
    ``.linear`` and the RMSNorm gains read where the block applies them, the roles compute
    the model's block (the halves swapped do not)."""
    module = _vectors_apart("moshi")
    module.save_pretrained(tmp_path)
    config = module.config
    x = torch.randn(6, 32)
    positions = torch.arange(6)[None]
    with open_model(tmp_path) as model:
        layout = model.layout
        g = _cut_all(model, layout.globals)
        assert torch.equal(g["embed"], module.model.embed_tokens.weight.detach())
        assert torch.equal(g["final_norm"], module.model.norm.weight.detach())
        for layer in layout.layers:
            block = module.model.layers[layer.index]
            w = _cut_all(model, layer.roles)

            def norm(h: torch.Tensor, role: str, w: dict = w) -> torch.Tensor:
                return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps
                                       ) * w[role]

            with torch.no_grad():
                cos, sin = block.self_attn.rotary_emb(x[None], positions)
                want = block(x[None], attention_mask=_causal_mask(6), position_ids=positions)[0]
            h = x + _attend(norm(x, "attn_norm"), w, 4, 2, rope=(cos[0], sin[0]))
            act = transformers.activations.ACT2FN[config.hidden_act]
            _gate_first_gives(want, h, w, act, norm, layer.index)


def test_moshi_release_is_read_on_its_text_transformer(tmp_path: Path) -> None:
    """A Moshi release holds the text transformer under ``decoder.`` beside the audio
    codebooks' embeddings, the depth decoder and the Mimi codec: the roles are the text
    transformer's, the codebook embeddings and the depth decoder are known and unread, the
    codec is set aside as another modality."""
    from safetensors.torch import save_file

    _saved("moshi", tmp_path / "text")
    state = load_file(str(tmp_path / "text" / "model.safetensors"))
    released = {"decoder." + k: w for k, w in state.items()}
    for part in ("embed_tokens.0", "embed_tokens.1", "depth_decoder.text_embed_tokens",
                 "depth_decoder.layers.0.self_attn.q_proj.linear", "depth_decoder.lm_heads",
                 "audio_encoder.encoder.layers.0.conv"):
        released[f"{part}.weight"] = torch.randn(4, 16, 8)
    (tmp_path / "release").mkdir()
    save_file(released, str(tmp_path / "release" / "model.safetensors"))
    (tmp_path / "release" / "config.json").write_text(
        (tmp_path / "text" / "config.json").read_text())
    with open_model(tmp_path / "release") as model:
        layout = model.layout
        assert layout.family == "moshi"
        assert set(layout.other_modalities) == {"audio_encoder."}
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
        assert layout.globals["embed"].tensor == "decoder.model.embed_tokens.weight"
        assert layout.globals["lm_head"].tensor == "decoder.lm_head.weight"
        read = {ref.tensor for _, ref in layout.iter_roles()}
        assert not any(n.startswith(("embed_tokens.", "depth_decoder.")) for n in read)
        assert len(layout.layers) == 2


@pytest.mark.parametrize("names", ["released", "in_memory"])
def test_hrm_text_fused_projections_cut_as_transformers_loads_them(tmp_path: Path,
                                                                   names: str) -> None:
    """HRM-Text's release fuses the attention's output gate, q, k and v in ``gqkv_proj`` and
    the MLP's gate and up in ``gate_up_proj``; cut into equal parts in that order they are the
    modules transformers loads them into (``gate_proj``, ``q_proj``...; a cut in another order
    is not). The L stack's blocks come first, then the H stack's. A state dict saved under the
    modules' own names reads the same."""
    from safetensors.torch import save_file

    module = _vectors_apart("hrm_text")
    module.save_pretrained(tmp_path)
    o_name = "attn.o_proj"
    if names == "in_memory":
        save_file({k: v.detach().clone().contiguous() for k, v in module.state_dict().items()},
                  str(tmp_path / "model.safetensors"))
        o_name = "self_attn.o_proj"
    stacks = [*module.model.L_module.layers, *module.model.H_module.layers]
    with open_model(tmp_path) as model:
        layout = model.layout
        assert unread_tensors(layout) == []
        assert [layer.roles[O].tensor for layer in layout.layers] == [
            f"model.{s}_module.layers.0.{o_name}.weight" for s in "LH"]
        for layer, block in zip(layout.layers, stacks, strict=True):
            w = _cut_all(model, layer.roles)
            attn, mlp = block.self_attn, block.mlp
            for role, linear in ((ATTN_GATE, attn.gate_proj), (Q, attn.q_proj), (K, attn.k_proj),
                                 (V, attn.v_proj), (O, attn.o_proj), (GATE, mlp.gate_proj),
                                 (UP, mlp.up_proj), (DOWN, mlp.down_proj)):
                assert torch.equal(w[role], linear.weight.detach()), role
            assert not torch.equal(w[Q], attn.gate_proj.weight.detach())


def test_xlm_post_norm_blocks_computed_from_their_roles_are_the_models(tmp_path: Path) -> None:
    """XLM's block, computed from the roles read across its per-sublayer lists: ``h =
    LN1(x + attn(x))``, then ``LN2(h + ffn(h))`` with q/k/v/o, ``lin1``/``lin2`` and both
    LayerNorms with their biases, equals the model's; the embeddings' LayerNorm is
    ``layer_norm_emb`` and the head's bias ``pred_layer.proj.bias``."""
    module = _vectors_apart("xlm")
    module.save_pretrained(tmp_path)
    body = module.transformer
    x = torch.randn(6, 32)
    with open_model(tmp_path) as model:
        layout = model.layout
        g = _cut_all(model, layout.globals)
        assert torch.equal(g["embed_norm"], body.layer_norm_emb.weight.detach())
        assert torch.equal(g["lm_head.bias"], module.pred_layer.proj.bias.detach())
        for layer in layout.layers:
            i = layer.index
            w = _cut_all(model, layer.roles)

            def norm(h: torch.Tensor, role: str, w: dict = w) -> torch.Tensor:
                return torch.nn.functional.layer_norm(h, (32,), w[role], w[f"{role}.bias"],
                                                      eps=module.config.layer_norm_eps)

            h = norm(x + _attend(x, w, 4, 4), "attn_norm")
            act = torch.nn.functional.gelu
            got = norm(h + act(h @ w[UP].T + w["up.bias"]) @ w[DOWN].T + w["down.bias"],
                       "mlp_norm")
            with torch.no_grad():
                attn = body.attentions[i](x[None], torch.ones(6, 6).tril()[None])[0]
                hh = body.layer_norm1[i](x[None] + attn)
                want = body.layer_norm2[i](hh + body.ffns[i](hh))[0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_dory_release_reads_attention_and_mlp_blocks_apart(tmp_path: Path) -> None:
    """Dory's release stores each block as an attention block ``layers.2i.mixer.*`` (gate
    ``g_proj``, rate ``attn_alpha``) and an MLP block ``layers.2i+1.mixer.*`` (``mlp_alpha``),
    as transformers' loader reads it (checked: the file below loads back to the module's
    weights); read as stored, one mixer per layer, each role the module's weight. The names
    transformers saves hold both in one block, while its config counts the release's blocks."""
    from safetensors.torch import save_file

    module = _saved("dory", tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / "model.safetensors"))
    released = {}
    for name, w in state.items():
        parts = name.split(".")
        if parts[1] != "layers":
            released[name] = w
            continue
        i, rest = int(parts[2]), parts[3:]
        block = 2 * i + (rest[0] in ("mlp", "lambda_2"))
        rest = {"lambda_1": ["attn_alpha"], "lambda_2": ["mlp_alpha"]}.get(
            rest[0], ["mixer", *rest[1:]])
        released[".".join(["backbone", "layers", str(block), *rest])] = w
    (tmp_path / "release").mkdir()
    save_file(released, str(tmp_path / "release" / "model.safetensors"))
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["num_hidden_layers"] == 4  # the release's blocks, written by transformers
    (tmp_path / "release" / "config.json").write_text(json.dumps(config))
    reloaded = transformers.DoryForCausalLM.from_pretrained(tmp_path / "release")
    for (name, want), got in zip(module.state_dict().items(), reloaded.state_dict().values(),
                                 strict=True):
        assert torch.equal(want, got), name
    with open_model(tmp_path / "saved") as model:
        assert model.layout.num_layers == 2
        for layer in model.layout.layers:
            block = module.model.layers[layer.index]
            assert torch.equal(_cut(model, layer.roles[ATTN_GATE]),
                               block.self_attn.gate_proj.weight.detach())
            assert torch.equal(_cut(model, layer.roles[UP]), block.mlp.up_proj.weight.detach())
    with open_model(tmp_path / "release") as model:
        layout = model.layout
        assert layout.family == "dory"
        assert layout.num_layers == 4
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
        for layer in layout.layers:
            block = module.model.layers[layer.index // 2]
            if layer.index % 2 == 0:
                assert set(layer.roles) == {Q, K, V, O, ATTN_GATE}
                for role, path in ((Q, "q_proj"), (K, "k_proj"), (V, "v_proj"), (O, "o_proj"),
                                   (ATTN_GATE, "gate_proj")):
                    want = getattr(block.self_attn, path).weight.detach()
                    assert torch.equal(_cut(model, layer.roles[role]), want), role
            else:
                assert set(layer.roles) == {GATE, UP, DOWN}
                for role, path in ((GATE, "gate_proj"), (UP, "up_proj"), (DOWN, "down_proj")):
                    want = getattr(block.mlp, path).weight.detach()
                    assert torch.equal(_cut(model, layer.roles[role]), want), role


def test_cpmant_blocks_computed_from_their_roles_are_the_models(tmp_path: Path) -> None:
    """CPM-Ant's MLP computed from its roles (RMSNorm gain ``layernorm_before_ffn``, the gate
    ``w_in.w_0`` through GELU times the up ``w_in.w_1``, then ``w_out``) is the module's MLP
    sublayer, and the gate and up swapped are not; q, k, v and o are the attention's
    projections; the embedding holds the vocabulary, then the prompt tokens' rows."""
    module = _vectors_apart("cpmant")
    module.save_pretrained(tmp_path)
    x = torch.randn(1, 5, 32)
    act = torch.nn.functional.gelu
    with open_model(tmp_path) as model:
        layout = model.layout
        config = module.config
        assert _cut(model, layout.globals["embed"]).shape == (
            config.vocab_size + config.prompt_types * config.prompt_length, 32)
        for layer in layout.layers:
            block = module.cpmant.encoder.layers[layer.index]
            w = _cut_all(model, layer.roles)
            with torch.no_grad():
                want = block.ffn(x)
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w["mlp_norm"]

            def mlp(gate: torch.Tensor, up: torch.Tensor, h: torch.Tensor = h,
                    w: dict = w) -> torch.Tensor:
                return x + (act(h @ gate.T) * (h @ up.T)) @ w[DOWN].T

            torch.testing.assert_close(mlp(w[GATE], w[UP]), want)
            assert not torch.allclose(mlp(w[UP], w[GATE]), want, atol=1e-3)
            attention = block.self_att.self_attention
            for role, linear in ((Q, attention.project_q), (K, attention.project_k),
                                 (V, attention.project_v), (O, attention.attention_out)):
                assert torch.equal(w[role], linear.weight.detach()), role


def test_git_reads_bert_blocks_under_git_and_sets_its_image_encoder_aside(
        tmp_path: Path) -> None:
    """GIT's text decoder is BERT's blocks under ``git.``: the roles are its modules' weights,
    the head ``output`` with its bias; the image encoder and its projection are another
    modality."""
    module = _saved("git", tmp_path)
    with open_model(tmp_path) as model:
        layout = model.layout
        assert set(layout.other_modalities) == {"git.image_encoder.", "git.visual_projection."}
        g = _cut_all(model, layout.globals)
        assert torch.equal(g["lm_head"], module.output.weight.detach())
        assert torch.equal(g["lm_head.bias"], module.output.bias.detach())
        for layer in layout.layers:
            block = module.git.encoder.layer[layer.index]
            w = _cut_all(model, layer.roles)
            assert torch.equal(w[Q], block.attention.self.query.weight.detach())
            assert torch.equal(w[DOWN], block.output.dense.weight.detach())
            assert torch.equal(w["mlp_norm"], block.output.LayerNorm.weight.detach())


def test_ling_hybrid_release_names_give_each_blocks_attention(tmp_path: Path) -> None:
    """Ling's hybrid as transformers saves it (its release's names: ``word_embeddings``,
    ``attention.dense``, the router's ``gate.expert_bias``): the delta-attention block's q, k,
    v and output are the module's projections, the MLA block's low-rank queries and key/value
    latent too, and each block's ``g_proj`` is its output gate."""
    module = _saved("bailing_hybrid", tmp_path)
    with open_model(tmp_path) as model:
        layout = model.layout
        assert layout.globals["embed"].tensor == "model.word_embeddings.weight"
        kda, mla = (module.model.layers[i].self_attn for i in (0, 1))
        for index, attn, roles in ((0, kda, (Q, K, V)), (1, mla, ("q_a", "q_b", "kv_a", "kv_b"))):
            got = _cut_all(model, layout.layers[index].roles)
            paths = {Q: "q_proj", K: "k_proj", V: "v_proj", "q_a": "q_a_proj", "q_b": "q_b_proj",
                     "kv_a": "kv_a_proj_with_mqa", "kv_b": "kv_b_proj"}
            for role in roles:
                assert torch.equal(got[role], getattr(attn, paths[role]).weight.detach()), role
            assert torch.equal(got[O], attn.o_proj.weight.detach())
            assert torch.equal(got[ATTN_GATE], attn.g_proj.weight.detach())
        assert layout.layers[1].roles["router_correction"].tensor.endswith("gate.expert_bias")
