"""Inkling 2 and its loop variant read as their modules compute.

Inkling 2's release (``model.llm.``: ``attn.wq_du``..., ``attn.gate_attn``,
``mlp.experts.w13_weight`` with gate and up interleaved row by row) and the names transformers
holds in memory (``self_attn.q_proj.linear``..., ``o_proj.gate_proj``, ``gate_up_proj`` gate
first) load the same roles; each role is checked against what its module computes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from released_models import (
    assert_heads_cut_as_computed,
    noisy,
    released_models,
    save_in_memory_names,
)
from safetensors import safe_open

from verifier.architectures.completeness import missing_roles, unread_tensors
from verifier.architectures.layout import DOWN, GATE, UP, K, O, Q, V
from verifier.architectures.schema import ATTN_GATE
from verifier.model import open_model
from verifier.verify import VerifyOptions, verify

transformers = pytest.importorskip("transformers")

NAMES = ("inkling2_text", "inkling2_loop_text")


def _module(name: str, seed: int = 0, **wider: int) -> torch.nn.Module:
    """``name``'s tiny model, every vector (norm gains, the selection bias) drawn apart so that
    each role can only be matched by the tensor the model applies there."""
    cls, small = released_models()[name]
    config = type(small)(**(small.to_dict() | wider)) if wider else small
    torch.manual_seed(seed)
    module = cls(config)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
        for layer in module.model.layers:
            layer.mlp.gate.e_score_correction_bias.copy_(torch.rand(4))
    return module


def _cut(model, ref) -> torch.Tensor:  # noqa: ANN001
    return model.load(ref).float()


@pytest.mark.parametrize("name", NAMES)
def test_roles_read_from_the_release_are_the_weights_each_module_applies(
        tmp_path: Path, name: str) -> None:
    """q, k, v, o, the output gate, the router and its selection bias, each expert's gate, up
    and down (gate and up interleaved in ``w13_weight``), and the norms: the sliding layer's one
    input norm, each layer's norm in front of the experts, the embedding's norm and the final
    one. The full layer's three input norms have no role."""
    module = _module(name)
    module.save_pretrained(tmp_path)
    text = module.model
    with open_model(tmp_path) as model:
        layout = model.layout
        assert layout.family == "inkling2_text"
        for index, block in enumerate(text.layers):
            roles, attn, moe = layout.layers[index].roles, block.self_attn, block.mlp
            for role, linear in ((Q, attn.q_proj.linear), (K, attn.k_proj.linear),
                                 (V, attn.v_proj.linear), (O, attn.o_proj.linear),
                                 (ATTN_GATE, attn.o_proj.gate_proj), ("router", moe.gate)):
                assert torch.equal(_cut(model, roles[role]), linear.weight.detach()), role
            assert torch.equal(_cut(model, roles["router_correction"]),
                               moe.gate.e_score_correction_bias)
            assert torch.equal(_cut(model, roles["mlp_norm"]),
                               block.post_attention_layernorm.weight.detach())
            if index == 0:
                assert torch.equal(_cut(model, roles["attn_norm"]),
                                   block.input_layernorm.weight.detach())
            else:
                assert "attn_norm" not in roles
                assert hasattr(block, "q_input_layernorm")
            half = moe.experts.gate_up_proj.shape[1] // 2
            experts = layout.layers[index].experts
            assert experts[0][GATE].tensor.endswith(".mlp.experts.w13_weight")
            for e, expert in enumerate(experts):
                gate_up = moe.experts.gate_up_proj[e].detach()
                assert torch.equal(_cut(model, expert[GATE]), gate_up[:half])
                assert torch.equal(_cut(model, expert[UP]), gate_up[half:])
                assert torch.equal(_cut(model, expert[DOWN]), moe.experts.down_proj[e].detach())
        g = layout.globals
        assert torch.equal(_cut(model, g["embed_norm"]),
                           text.embed_tokens.embed_norm.weight.detach())
        assert torch.equal(_cut(model, g["final_norm"]), text.norm.weight.detach())
        assert torch.equal(_cut(model, g["lm_head"]), module.lm_head.weight.detach())


def test_an_expert_and_the_gated_output_computed_from_their_roles_are_the_models(
        tmp_path: Path) -> None:
    """Through the model's own activation (which softcaps gate and up apart, so a swap of the
    two shows), an expert built from its read roles gives what the experts module gives for a
    token routed to it alone; the attention output through the read gate and ``o`` is the
    module's ``o_proj``; the sliding layer's q from its read norm gain and ``q`` is the
    module's."""
    module = _module("inkling2_text")
    module.save_pretrained(tmp_path)
    block = module.model.layers[0]
    x = torch.randn(3, 32)
    with open_model(tmp_path) as model, torch.no_grad():
        roles = model.layout.layers[0].roles
        experts = block.mlp.experts
        for e, expert in enumerate(model.layout.layers[0].experts):
            w = {r: _cut(model, expert[r]) for r in (GATE, UP, DOWN)}
            mine = experts.act_fn(x @ w[GATE].T, x @ w[UP].T) @ w[DOWN].T
            theirs = experts(x, torch.full((3, 1), e), torch.ones(3, 1))
            torch.testing.assert_close(mine, theirs)
        attn_out = torch.randn(3, 32)
        mine = (attn_out * torch.sigmoid(x @ _cut(model, roles[ATTN_GATE]).T)) @ _cut(
            model, roles[O]).T
        torch.testing.assert_close(mine, block.self_attn.o_proj(attn_out, x))
        unit = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + block.input_layernorm.variance_epsilon)
        mine = (unit * _cut(model, roles["attn_norm"])) @ _cut(model, roles[Q]).T
        torch.testing.assert_close(mine, block.self_attn.q_proj.linear(block.input_layernorm(x)))


@pytest.mark.parametrize("name", NAMES)
def test_in_memory_names_read_as_the_release_does(tmp_path: Path, name: str) -> None:
    """The modules' own names (``self_attn.q_proj.linear``, ``o_proj.gate_proj``,
    ``mlp.experts.gate_up_proj`` gate first, ``embed_tokens.embed_norm``, ``lm_head``) load the
    same roles as the release's, and every other tensor is one the table leaves out."""
    module = _module(name)
    module.save_pretrained(tmp_path / "release")
    save_in_memory_names(module, tmp_path / "release", tmp_path / "memory")
    with open_model(tmp_path / "release") as release, open_model(tmp_path / "memory") as memory:
        assert memory.layout.family == "inkling2_text"
        assert unread_tensors(memory.layout) == []
        assert memory.layout.unexpected == []
        assert missing_roles(memory.layout) == []
        for a, b in zip(release.layout.layers, memory.layout.layers, strict=True):
            assert set(a.roles) == set(b.roles)
            assert b.experts[0][GATE].tensor.endswith(".mlp.experts.gate_up_proj")
            for role, ref in b.roles.items():
                assert torch.equal(_cut(release, a.roles[role]), _cut(memory, ref)), role
            for ea, eb in zip(a.experts, b.experts, strict=True):
                for role in (GATE, UP, DOWN):
                    assert torch.equal(_cut(release, ea[role]), _cut(memory, eb[role])), role
        for role, ref in release.layout.globals.items():
            assert torch.equal(_cut(release, ref), _cut(memory, memory.layout.globals[role]))


def test_sliding_and_full_layers_split_into_their_own_heads(tmp_path: Path) -> None:
    """The sliding layer has 8 query heads of 4 (``swa_num_attention_heads``), the full one 4
    of 8: the same rows in q, k, v and o, each cut into the module's heads."""
    module = _module("inkling2_text")
    module.save_pretrained(tmp_path)
    with open_model(tmp_path) as model:
        assert_heads_cut_as_computed(model, module.model.layers, [(8, 4, 4), (4, 2, 8)],
                                     lambda attn: attn.q_proj.linear.weight)


def test_the_loop_blocks_are_read_once_each_in_stored_order(tmp_path: Path) -> None:
    """The loop variant runs its second block twice (``loop_num_passes``) over the same weights:
    the files hold it once, and it is read as one layer, the second, its message gates
    (``controllers.*``) and the message queries set aside."""
    module = _module("inkling2_loop_text")
    module.save_pretrained(tmp_path)
    config = module.config
    assert config.total_num_hidden_layers == 3
    assert config.num_hidden_layers == 2
    with open_model(tmp_path) as model:
        layout = model.layout
        assert layout.num_layers == 2
        loop = module.model.layers[1]
        assert hasattr(loop, "q_message_gate")
        assert torch.equal(_cut(model, layout.layers[1].roles[Q]),
                           loop.self_attn.q_proj.linear.weight.detach())
        assert unread_tensors(layout) == []
        assert layout.unexpected == []
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as files:
        names = list(files.keys())
    assert any(n.startswith("model.llm.layers.1.controllers.") for n in names)
    assert not any(".controllers." in n for n in names if ".layers.0." in n)
    assert "model.llm.middle_cycle_cross_pass_queries" in names


def test_the_multimodal_release_is_read_on_its_language_model(tmp_path: Path) -> None:
    """``inkling2`` keeps the language model under ``model.llm.`` beside ``model.visual.``,
    which is set aside."""
    text = released_models()["inkling2_text"][1].to_dict()
    torch.manual_seed(0)
    transformers.Inkling2ForConditionalGeneration(transformers.Inkling2Config(
        text_config=text, vision_config={
            "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "patch_size": 4, "projection_hidden_dim": 16, "text_hidden_size": 32,
            "posemb_grid_size": 4})).save_pretrained(tmp_path)
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.moe_layers) == ("inkling2_text", 2, [0, 1])
        assert list(layout.other_modalities) == ["model.visual."]
        assert layout.unexpected == []
        assert missing_roles(layout) == []


@pytest.mark.parametrize("name", NAMES[:1])
def test_a_noisy_copy_is_derived_and_another_start_is_not(tmp_path: Path, name: str) -> None:
    """End to end at a width the statistics can speak at, on the released names (the loop
    variant's blocks are read as these are: ``test_the_loop_blocks_are_read_once_each``)."""
    wider = {"hidden_size": 128, "head_dim": 32, "vocab_size": 600, "unpadded_vocab_size": 600,
             "moe_intermediate_size": 64}
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        noisy(_module(name, seed, **wider), noise).save_pretrained(tmp_path / folder)
    opts = VerifyOptions(digest=False)
    copy = verify(tmp_path / "base", tmp_path / "copy", opts)
    assert copy.verdict == "derived", copy.reason
    assert copy.models.base.architecture == "inkling2_text"
    assert "head_matching" in {p.name for p in copy.probes if p.decisive}
    other = verify(tmp_path / "base", tmp_path / "other", opts)
    assert other.verdict == "independent", other.reason
