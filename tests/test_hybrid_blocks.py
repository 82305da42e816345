"""Hybrid blocks (Mamba, convolutions or attention in turn) and MoE models with a few dense blocks.

A hybrid's blocks do not all hold what each probe compares: Nemotron-H's blocks hold one mixer
each (Mamba-2, attention, an MLP or experts), Jamba's attention sits in one block of several,
DeepSeek-style MoE models keep dense MLPs in their first blocks only. The power checks, which
decide whether "no evidence" may read as *independent*, must disguise a block that holds what
each probe compares; Nemotron-H's Mamba-2 mixers are compared as Mamba-2's own are; a Mamba
mixer beside a block's MLP (Jamba, Bamba, Falcon-H1, Granite 4) joins the block's neurons; and
a block that runs experts beside a dense MLP (Gemma 4) offers both to the MoE probe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoints import write_float_gguf
from released_models import noisy, released_models

from verifier.architectures.completeness import unread_tensors
from verifier.architectures.schema import SECOND_ROLES
from verifier.model import open_model
from verifier.probes.neuron_matching import NAME as NEURONS
from verifier.probes.neuron_matching import load_ffn
from verifier.verify import VerifyOptions, power_layers, verify

transformers = pytest.importorskip("transformers")


def test_a_standard_models_power_check_disguises_its_middle_block() -> None:
    assert power_layers([0, 1, 2, 3], [0, 1, 2, 3]) == (2, 2)


def test_a_hybrids_power_check_takes_what_the_middle_block_lacks_from_the_middle_of_those_with_it(
) -> None:
    # Nemotron-H: Mamba (0), experts (1), attention (2), MLP (3); the Mamba block counts as FFN
    assert power_layers([0, 3], [2]) == (3, 2)
    # Jamba: attention in blocks 1 and 3 only, MLPs everywhere
    assert power_layers([0, 1, 2, 3], [1, 3]) == (2, 3)
    # DeepSeek-style: one dense block, then experts; attention everywhere
    assert power_layers([0], [0, 1, 2, 3]) == (0, 2)
    assert power_layers([], [0, 1]) == (None, 1)
    assert power_layers([], []) == (None, None)


def _nemotron_h(seed: int, noise: float = 0.0) -> torch.nn.Module:
    config = transformers.NemotronHConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, vocab_size=600, num_hidden_layers=4,
        layers_block_type=["mamba", "moe", "attention", "mlp"], n_routed_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=64, moe_shared_expert_intermediate_size=64,
        mamba_num_heads=8, mamba_head_dim=32, ssm_state_size=16, n_groups=1, pad_token_id=0)
    torch.manual_seed(seed)
    return noisy(transformers.NemotronHForCausalLM(config), noise)


def test_nemotron_h_mamba_blocks_are_matched_as_neurons_and_an_independent_start_is_independent(
        tmp_path: Path) -> None:
    """Its Mamba-2 block gives z, x and ``out_proj`` as gate, up and down (cut from ``in_proj``
    as Mamba-2's are); a noisy copy is derived with that block mapped, and another start is
    *independent*: before, the power check disguised only the middle (attention) block, left
    neuron matching unchecked and the verdict inconclusive."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        _nemotron_h(seed, noise).save_pretrained(tmp_path / folder)
    with open_model(tmp_path / "base") as model:
        mamba = model.layout.layers[0].roles
        assert mamba["down"].tensor.endswith("layers.0.mixer.out_proj.weight")
        shapes = {t.name: t.shape for t in model.reader.tensors()}
        inner = shapes[mamba["down"].tensor][1]
        for role, start in (("gate", 0), ("up", inner)):
            assert mamba[role].tensor.endswith("layers.0.mixer.in_proj.weight")
            assert mamba[role].rows == (start, start + inner)
    opts = VerifyOptions(digest=False)
    copy = verify(tmp_path / "base", tmp_path / "copy", opts)
    assert copy.verdict == "derived", copy.reason
    neurons = next(p for p in copy.probes if p.name == NEURONS)
    assert {(lv.layer, lv.base_layer) for lv in neurons.layers} >= {(0, 0), (3, 3)}
    other = verify(tmp_path / "base", tmp_path / "other", opts)
    assert other.verdict == "independent", other.reason


def _gemma4_moe(seed: int, noise: float = 0.0) -> torch.nn.Module:
    config = transformers.Gemma4TextConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, vocab_size=600, num_hidden_layers=2, hidden_size_per_layer_input=0,
        num_kv_shared_layers=0, enable_moe_block=True, num_experts=4, top_k_experts=2,
        moe_intermediate_size=64)
    torch.manual_seed(seed)
    return noisy(transformers.Gemma4ForCausalLM(config), noise)


def test_experts_beside_a_dense_mlp_are_matched_to_the_bases_experts(tmp_path: Path) -> None:
    """Gemma 4's MoE blocks run experts beside a dense MLP: a copy's experts come from the
    base's experts, so the base offers both (its pool held the dense MLP alone, and a noisy
    copy's MoE layers read as not derived, p = 1); another start's experts match neither."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        _gemma4_moe(seed, noise).save_pretrained(tmp_path / folder)
    opts = VerifyOptions(digest=False)
    moe = {}
    for folder in ("copy", "other"):
        report = verify(tmp_path / "base", tmp_path / folder, opts)
        moe[folder] = next(p for p in report.probes if p.name == "moe_upcycling")
    p_copy, p_other = moe["copy"].p_value, moe["other"].p_value
    assert p_copy is not None
    assert p_copy < 1e-6
    assert p_other is not None
    assert p_other > 0.01


@pytest.mark.parametrize("name", ["jetmoe", "zaya"])
def test_experts_beside_attention_not_compared_still_reach_independent(tmp_path: Path,
                                                                      name: str) -> None:
    """JetMoE's attention experts and ZAYA's convolutional attention are not compared and every
    block is MoE: no block holds what neuron or head matching compares, yet the hidden
    alignment's power check (embeddings alone) still runs, so another start is *independent*
    (it was inconclusive: "hidden_alignment lacked the power")."""
    cls, small = released_models()[name]
    config = type(small)(**(small.to_dict() | {"hidden_size": 128, "intermediate_size": 256,
                                               "vocab_size": 600}))
    for folder, seed in (("base", 0), ("other", 1)):
        torch.manual_seed(seed)
        cls(config).save_pretrained(tmp_path / folder)
    other = verify(tmp_path / "base", tmp_path / "other", VerifyOptions(digest=False))
    assert other.verdict == "independent", other.reason
    assert {p.name for p in other.probes if p.power_p_value is not None} >= {
        "hidden_alignment", "moe_upcycling"}


#: tiny Mamba hybrids, each with a Mamba block first: (model class, config, the MLP of a block)
_MAMBA = {"mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_n_groups": 1}
_SMALL = {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 100, "pad_token_id": 0}


def _mamba_hybrids() -> dict[str, tuple[type, object, str]]:
    t = transformers
    return {
        "jamba": (t.JambaForCausalLM, t.JambaConfig(
            **_SMALL, num_hidden_layers=2, num_experts=4, num_experts_per_tok=2,
            attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
            expert_layer_offset=1, mamba_d_state=8, mamba_expand=2, mamba_dt_rank=4),
            "feed_forward"),
        "bamba": (t.BambaForCausalLM, t.BambaConfig(
            **_SMALL, **_MAMBA, num_hidden_layers=2, attn_layer_indices=[1]), "feed_forward"),
        "falcon_h1": (t.FalconH1ForCausalLM, t.FalconH1Config(
            **_SMALL, **_MAMBA, num_hidden_layers=2, mamba_d_ssm=64), "feed_forward"),
        "granitemoehybrid": (t.GraniteMoeHybridForCausalLM, t.GraniteMoeHybridConfig(
            **(_SMALL | {"intermediate_size": 16}), **_MAMBA, shared_intermediate_size=48,
            num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
            layer_types=["mamba", "attention"]), "shared_mlp"),
    }


@pytest.mark.parametrize("name", ["jamba", "bamba", "falcon_h1", "granitemoehybrid"])
def test_a_mamba_mixer_beside_the_mlp_joins_the_blocks_neurons(tmp_path: Path, name: str) -> None:
    """The Mamba block's neurons are its MLP's, then the mixer's channels: each channel's gate
    and input are what the mixer's ``in_proj`` gives as ``z`` and ``x`` (Jamba's Mamba: x,
    then z; the others' Mamba-2: z, then x, then B, C and dt), its output column
    ``out_proj``'s. The block with attention alone has no mixer roles."""
    cls, config, mlp = _mamba_hybrids()[name]
    torch.manual_seed(0)
    module = cls(config)
    module.save_pretrained(tmp_path)
    block = module.model.layers[0]
    mixer = block.mamba
    inner = mixer.out_proj.weight.shape[1]
    x = torch.randn(5, 32)
    with torch.no_grad():
        projected = mixer.in_proj(x)
        if name == "jamba":
            want_x, want_z = projected.chunk(2, dim=-1)
        else:
            want_z, want_x = projected[:, :inner], projected[:, inner:2 * inner]
        mlp_rows = getattr(block, mlp).down_proj.weight.shape[1] if name != (
            "granitemoehybrid") else block.shared_mlp.output_linear.weight.shape[1]
    with open_model(tmp_path) as model:
        ffn = load_ffn(model, 0)
        assert ffn is not None
        assert ffn.up.shape[0] == mlp_rows + inner
        assert ffn.gate is not None
        torch.testing.assert_close(x @ ffn.gate[mlp_rows:].float().T, want_z)
        torch.testing.assert_close(x @ ffn.up[mlp_rows:].float().T, want_x)
        assert torch.equal(ffn.down[mlp_rows:].float(), mixer.out_proj.weight.detach().T)
        if name != "falcon_h1":  # Falcon-H1 runs a Mamba mixer in every block
            assert not set(SECOND_ROLES) & set(model.layout.layers[1].roles)


def _bamba(seed: int) -> torch.nn.Module:
    config = transformers.BambaConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=600, num_hidden_layers=4, attn_layer_indices=[3], mamba_n_heads=8,
        mamba_d_head=32, mamba_d_state=16, mamba_n_groups=1, pad_token_id=0)
    torch.manual_seed(seed)
    return transformers.BambaForCausalLM(config)


def test_a_copy_with_new_mlps_is_matched_by_its_mamba_channels(tmp_path: Path) -> None:
    """A noisy copy of a Bamba model whose every MLP was drawn again keeps only its Mamba
    mixers' channels among its blocks' neurons: its Mamba blocks still match the base's, each
    to its own (their neurons held the MLP alone before, and a copy with new MLPs read as
    unrelated there); another start's do not."""
    _bamba(0).save_pretrained(tmp_path / "base")
    copy, fresh = noisy(_bamba(0), 0.3), _bamba(2)
    with torch.no_grad():
        for block, new in zip(copy.model.layers, fresh.model.layers, strict=True):
            for mine, theirs in zip(block.feed_forward.parameters(),
                                    new.feed_forward.parameters(), strict=True):
                mine.copy_(theirs)
    copy.save_pretrained(tmp_path / "copy")
    _bamba(1).save_pretrained(tmp_path / "other")
    opts = VerifyOptions(digest=False)
    matched = {}
    for folder in ("copy", "other"):
        report = verify(tmp_path / "base", tmp_path / folder, opts)
        probe = next(p for p in report.probes if p.name == NEURONS)
        matched[folder] = {lv.layer: (lv.base_layer, lv.p_value) for lv in probe.layers}
    mamba_layers = [0, 1, 2]
    tested = [i for i in mamba_layers if i in matched["copy"]]
    assert tested
    for i in tested:
        base_layer, p = matched["copy"][i]
        assert base_layer == i
        assert p is not None
        assert p < 1e-6
    assert all(p is None or p > 1e-3 for _, p in matched["other"].values())


#: Hugging Face module names -> llama.cpp's, for the hybrids' blocks
_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "pre_ff_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "feed_forward.gate_proj": "ffn_gate",
    "feed_forward.up_proj": "ffn_up", "feed_forward.down_proj": "ffn_down",
    "mamba.in_proj": "ssm_in", "mamba.out_proj": "ssm_out", "mamba.conv1d": "ssm_conv1d",
    "mamba.A_log": "ssm_a", "mamba.D": "ssm_d", "mamba.dt_bias": "ssm_dt.bias",
    "mamba.norm": "ssm_norm", "mamba.x_proj": "ssm_x", "mamba.dt_proj": "ssm_dt",
    "mamba.dt_layernorm": "ssm_dt_norm", "mamba.b_layernorm": "ssm_b_norm",
    "mamba.c_layernorm": "ssm_c_norm",
}


def _hybrid_gguf(module: torch.nn.Module, arch: str, out: Path) -> Path:
    """A Mamba hybrid as llama.cpp's converters write it: ``ssm_*`` names, ``A_log`` stored as
    ``-exp(A_log)``, the convolution squeezed to ``[channels, width]``, Mamba-2's per-head
    vectors as ``[heads, 1]``."""
    mamba2 = arch != "jamba"
    tensors = {"token_embd.weight": module.model.embed_tokens.weight,
               "output_norm.weight": module.model.final_layernorm.weight,
               "output.weight": module.lm_head.weight}
    for name, t in module.model.layers.named_parameters():
        index, rest = name.split(".", 1)
        part, _, kind = rest.rpartition(".")
        if part == "mamba":  # a parameter of the mixer itself: A_log, D, dt_bias
            part, kind = rest, ""
        t = t.detach()
        if part == "mamba.A_log":
            t = -torch.exp(t)
        if part == "mamba.conv1d" and kind == "weight":
            t = t.squeeze(1)
        if mamba2 and part in ("mamba.A_log", "mamba.D"):
            t = t.reshape(-1, 1)
        # a parameter of the mixer itself keeps llama.cpp's bare name (``ssm_a``, ``ssm_d``,
        # ``ssm_dt.bias``)
        tensors[f"blk.{index}.{_GGUF_NAMES[part]}" + (f".{kind}" if kind else "")] = t
    return write_float_gguf(out, arch, module.config, tensors)


@pytest.mark.parametrize(("name", "arch"), [("falcon_h1", "falcon-h1"), ("jamba", "jamba")])
def test_a_llama_cpp_hybrid_gives_the_mamba_channels_of_its_hugging_face_file(
        tmp_path: Path, name: str, arch: str) -> None:
    """llama.cpp's names for a Mamba mixer (``ssm_in``, ``ssm_out``; Falcon-H1's Mamba-2 and
    Jamba's Mamba) give the Mamba block the neurons the Hugging Face file it was converted from
    gives: the MLP's, then the mixer's channels, every value the same; the state-space tensors
    are known and not read."""
    cls, config, _ = _mamba_hybrids()[name]
    if name == "jamba":  # dense MLPs only: the experts' GGUF stacks are another test's matter
        config = type(config)(**(config.to_dict() | {"num_experts": 1}))
    torch.manual_seed(0)
    module = cls(config)
    module.save_pretrained(tmp_path / "hf")
    path = _hybrid_gguf(module, arch, tmp_path / "m.gguf")
    loaded = {}
    for key, where in (("hf", tmp_path / "hf"), ("gguf", path)):
        with open_model(where) as model:
            assert unread_tensors(model.layout) == []
            ffn = load_ffn(model, 0)
            assert ffn is not None
            loaded[key] = ffn
    hf, gg = loaded["hf"], loaded["gguf"]
    assert hf.gate is not None
    assert gg.gate is not None
    assert hf.up.shape[0] > config.intermediate_size  # the mixer's channels are there
    for a, b in ((hf.gate, gg.gate), (hf.up, gg.up), (hf.down, gg.down)):
        assert torch.equal(a.float(), b.float())
