"""Family tables, detection, fused/stacked cuts and role maps, on hand-built tensor lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from verifier.architectures import (
    FAMILIES,
    GGUF_TABLES,
    POST_ATTN_NORM,
    POST_MLP_NORM,
    ROUTER_CORRECTION,
    LayoutTable,
    load_role_map,
    parse_role_map,
    resolve_layout,
    role_shape,
)
from verifier.architectures.detect import CompiledTable
from verifier.architectures.layout import ModelLayout, RoleRef
from verifier.architectures.schema import ALL_LAYER_ROLES
from verifier.errors import ArchitectureError, ExitCode, UsageError
from verifier.readers.base import TensorInfo

H, FF, V, HEADS, KV, HD = 16, 32, 40, 4, 2, 4  # hidden, mlp width, vocab, heads, kv heads, head dim
ATTN = {"q", "k", "v", "o"}
DENSE = {"attn_norm", "mlp_norm", "q", "k", "v", "o", "gate", "up", "down"}


def infos(shapes: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
    return [TensorInfo(name, shape, "float32", "model.safetensors") for name, shape in shapes.items()]


def llama_shapes(prefix: str = "model.", layers: int = 2, *, bias: bool = False,
                 qk_norm: bool = False, mlp: bool = True) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {
        f"{prefix}embed_tokens.weight": (V, H), f"{prefix}norm.weight": (H,),
        "lm_head.weight": (V, H),
    }
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        s |= {
            p + "self_attn.q_proj.weight": (HEADS * HD, H),
            p + "self_attn.k_proj.weight": (KV * HD, H),
            p + "self_attn.v_proj.weight": (KV * HD, H),
            p + "self_attn.o_proj.weight": (H, HEADS * HD),
            p + "input_layernorm.weight": (H,),
            p + "post_attention_layernorm.weight": (H,),
        }
        if bias:
            s |= {p + "self_attn.q_proj.bias": (HEADS * HD,), p + "self_attn.k_proj.bias": (KV * HD,),
                  p + "self_attn.v_proj.bias": (KV * HD,)}
        if qk_norm:
            s |= {p + "self_attn.q_norm.weight": (HD,), p + "self_attn.k_norm.weight": (HD,)}
        if mlp:
            s |= {p + "mlp.gate_proj.weight": (FF, H), p + "mlp.up_proj.weight": (FF, H),
                  p + "mlp.down_proj.weight": (H, FF)}
    return s


def config(model_type: str, layers: int = 2, **extra: object) -> dict[str, object]:
    return {"model_type": model_type, "hidden_size": H, "intermediate_size": FF,
            "num_hidden_layers": layers, "num_attention_heads": HEADS, "num_key_value_heads": KV,
            "head_dim": HD, "vocab_size": V} | extra


def check_dims(layout: ModelLayout, layers: int = 2) -> None:
    assert layout.num_layers == layers
    assert (layout.hidden_size, layout.vocab_size) == (H, V)
    assert (layout.num_heads, layout.num_kv_heads, layout.head_dim) == (HEADS, KV, HD)


_GEN = torch.Generator().manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    """Fresh random values on every call, so that parts of a fused tensor never coincide."""
    return torch.randn(*shape, generator=_GEN)


# -- dense decoders -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["model.", ""])
def test_llama_with_and_without_model_prefix(prefix: str) -> None:
    layout = resolve_layout(infos(llama_shapes(prefix)), config("llama"))
    assert (layout.family, layout.model_type) == ("llama", "llama")
    check_dims(layout)
    assert layout.intermediate_size == FF
    assert set(layout.globals) == {"embed", "final_norm", "lm_head"}
    assert layout.globals["embed"] == RoleRef(f"{prefix}embed_tokens.weight")
    for layer in layout.layers:
        assert set(layer.roles) == DENSE
        assert layer.roles["q"].tensor == f"{prefix}layers.{layer.index}.self_attn.q_proj.weight"
        assert layer.roles["mlp_norm"].tensor.endswith("post_attention_layernorm.weight")
        assert not layer.is_moe
    assert layout.unassigned == []


def test_mistral_is_an_alias_of_the_llama_layout() -> None:
    layout = resolve_layout(infos(llama_shapes()), config("mistral"))
    assert (layout.family, layout.model_type) == ("llama", "mistral")


def test_qwen2_qkv_biases_become_bias_roles() -> None:
    layout = resolve_layout(infos(llama_shapes(bias=True)), config("qwen2"))
    assert layout.family == "qwen2"
    roles = layout.layers[1].roles
    assert set(roles) == DENSE | {"q.bias", "k.bias", "v.bias"}
    assert roles["k.bias"] == RoleRef("model.layers.1.self_attn.k_proj.bias")


def test_qwen3_qk_norm_and_detection_without_config() -> None:
    shapes = llama_shapes(qk_norm=True) | {"model.layers.0.self_attn.rotary_emb.inv_freq": (2,)}
    layout = resolve_layout(infos(shapes), None)
    assert layout.family == "qwen3"  # the llama table leaves q_norm/k_norm unclaimed
    assert set(layout.layers[0].roles) == DENSE | {"q_norm", "k_norm"}
    # without a config, head_dim comes from q_norm and head counts from q/k rows
    assert (layout.num_heads, layout.num_kv_heads, layout.head_dim) == (HEADS, KV, HD)
    assert layout.unassigned == ["model.layers.0.self_attn.rotary_emb.inv_freq"]


def test_padded_vocabulary_prefers_the_embedding_shape() -> None:
    layout = resolve_layout(infos(llama_shapes()), config("llama", vocab_size=V - 8))
    assert layout.vocab_size == V


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3"])
def test_gemma_sandwich_norms(model_type: str) -> None:
    shapes = llama_shapes(qk_norm=model_type == "gemma3")
    for i in range(2):
        p = f"model.layers.{i}."
        shapes |= {p + "pre_feedforward_layernorm.weight": (H,),
                   p + "post_feedforward_layernorm.weight": (H,)}
    layout = resolve_layout(infos(shapes), config(model_type))
    assert layout.family == model_type
    roles = layout.layers[0].roles
    assert roles["attn_norm"].tensor.endswith("input_layernorm.weight")
    assert roles[POST_ATTN_NORM].tensor.endswith("post_attention_layernorm.weight")
    assert roles["mlp_norm"].tensor.endswith("pre_feedforward_layernorm.weight")
    assert roles[POST_MLP_NORM].tensor.endswith("post_feedforward_layernorm.weight")


def test_gemma_v1_uses_the_llama_norm_names() -> None:
    layout = resolve_layout(infos(llama_shapes()), config("gemma"))
    assert layout.family == "gemma"
    assert layout.layers[0].roles["mlp_norm"].tensor.endswith("post_attention_layernorm.weight")


def test_gemma_norms_load_as_the_gain_they_multiply_by(tmp_path: Path) -> None:
    """Gemma's norms compute ``x * (1 + w)`` and store ``w``; llama.cpp's GGUF conversion
    stores ``1 + w``. Both load as the gain, so the two files' norms are equal (no drift, the
    same folds) and a norm stored as zeros is a gain of one, not a layer switched off."""
    from checkpoints import llama_tensors, write_llama_folder, write_llama_gguf

    from verifier.architectures.layout import ATTN_NORM, FINAL_NORM, MLP_NORM
    from verifier.model import open_model

    g = torch.Generator().manual_seed(3)
    tensors = {name: 0.1 * torch.randn(t.shape, generator=g) if name.endswith("norm.weight")
               else t for name, t in llama_tensors().items()}
    folder = write_llama_folder(tmp_path / "hf", tensors)
    conf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(
        conf | {"model_type": "gemma", "architectures": ["GemmaForCausalLM"]}))
    gguf = write_llama_gguf(folder, tmp_path / "gemma.gguf", quantise=False, arch="gemma")
    with open_model(folder) as hf, open_model(gguf) as gg:
        assert (hf.layout.family, gg.layout.family) == ("gemma", "gemma")
        pairs = [(hf.layout.globals[FINAL_NORM], gg.layout.globals[FINAL_NORM])] + [
            (a.roles[r], b.roles[r]) for a, b in zip(hf.layout.layers, gg.layout.layers,
                                                     strict=True) for r in (ATTN_NORM, MLP_NORM)]
        for a, b in pairs:
            gain = hf.load(a)
            assert torch.allclose(gain, 1 + tensors[a.tensor]), a.tensor
            assert torch.allclose(gain, gg.load(b).float(), atol=1e-6), (a.tensor, b.tensor)


def test_multimodal_wrapper_keeps_the_language_tower_and_sets_the_rest_aside() -> None:
    shapes = llama_shapes("model.language_model.", qk_norm=True)
    shapes |= {"model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8),
               "model.multi_modal_projector.mm_input_projection_weight": (8, H)}
    text = {k: v for k, v in config("gemma3_text").items()}
    layout = resolve_layout(infos(shapes), {"model_type": "gemma3", "text_config": text})
    assert (layout.family, layout.model_type) == ("gemma3", "gemma3")
    check_dims(layout)
    assert layout.unassigned == []
    assert layout.other_modalities == {"model.multi_modal_projector.": 1,
                                       "model.vision_tower.": 1}


# -- fused projections --------------------------------------------------------------------------


def test_phi3_fused_qkv_and_gate_up_cut_back_to_the_parts() -> None:
    q, k, v = rand(HEADS * HD, H), rand(KV * HD, H), rand(KV * HD, H)
    gate, up = rand(FF, H), rand(FF, H)
    tensors = {"model.embed_tokens.weight": rand(V, H), "model.norm.weight": rand(H)}
    for i in range(2):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.qkv_proj.weight": torch.cat([q, k, v]),  # modeling_phi3 slices q|k|v
            p + "self_attn.o_proj.weight": rand(H, HEADS * HD),
            p + "mlp.gate_up_proj.weight": torch.cat([gate, up]),  # .chunk(2, dim=-1): gate first
            p + "mlp.down_proj.weight": rand(H, FF),
            p + "input_layernorm.weight": rand(H), p + "post_attention_layernorm.weight": rand(H),
        }
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    for cfg in (config("phi3"), None):  # without a config q's width comes from o_proj
        layout = resolve_layout(infos(shapes), cfg)
        assert layout.family == "phi3"
        roles = layout.layers[1].roles
        assert set(roles) == DENSE
        for role, expected in {"q": q, "k": k, "v": v, "gate": gate, "up": up}.items():
            assert torch.equal(roles[role].apply(tensors[roles[role].tensor]), expected), role
    assert layout.intermediate_size == FF  # measured from the cut 'up'


def test_fused_qkv_inconsistent_with_config_is_an_error() -> None:
    shapes = {"model.embed_tokens.weight": (V, H),
              "model.layers.0.self_attn.qkv_proj.weight": (HEADS * HD + 2 * KV * HD, H),
              "model.layers.0.self_attn.o_proj.weight": (H, HEADS * HD)}
    with pytest.raises(ArchitectureError, match="kv heads"):
        resolve_layout(infos(shapes), config("phi3", layers=1, num_key_value_heads=1))


def gpt2_tensors(prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """GPT-2 tensors (Conv1D ``[in, out]``) and the nn.Linear-oriented parts they hold."""
    parts = {"q": rand(H, H), "k": rand(H, H), "v": rand(H, H), "o": rand(H, H),
             "up": rand(4 * H, H), "down": rand(H, 4 * H),
             "q.bias": rand(H), "k.bias": rand(H), "v.bias": rand(H)}
    t = {f"{prefix}wte.weight": rand(V, H), f"{prefix}wpe.weight": rand(64, H),
         f"{prefix}ln_f.weight": rand(H), f"{prefix}ln_f.bias": rand(H)}
    for i in range(2):
        p = f"{prefix}h.{i}."
        t |= {
            p + "ln_1.weight": rand(H), p + "ln_1.bias": rand(H),
            p + "attn.c_attn.weight": torch.cat([parts["q"], parts["k"], parts["v"]]).T,
            p + "attn.c_attn.bias": torch.cat([parts["q.bias"], parts["k.bias"], parts["v.bias"]]),
            p + "attn.c_proj.weight": parts["o"].T, p + "attn.c_proj.bias": rand(H),
            p + "ln_2.weight": rand(H), p + "ln_2.bias": rand(H),
            p + "mlp.c_fc.weight": parts["up"].T, p + "mlp.c_fc.bias": rand(4 * H),
            p + "mlp.c_proj.weight": parts["down"].T, p + "mlp.c_proj.bias": rand(H),
            p + "attn.bias": torch.ones(1, 1, 8, 8), p + "attn.masked_bias": torch.tensor(-1e4),
        }
    return t, parts


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_gpt2_conv1d_is_transposed_and_c_attn_split(prefix: str) -> None:
    tensors, parts = gpt2_tensors(prefix)
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    gpt2_config = {"model_type": "gpt2", "n_embd": H, "n_layer": 2, "n_head": HEADS,
                   "vocab_size": V, "n_inner": None}
    for cfg in (gpt2_config, None):
        layout = resolve_layout(infos(shapes), cfg)
        assert layout.family == "gpt2"
        assert (layout.num_layers, layout.hidden_size, layout.vocab_size) == (2, H, V)
        assert layout.intermediate_size == 4 * H
        assert set(layout.globals) == {"embed", "pos_embed", "final_norm", "final_norm.bias"}
        roles = layout.layers[0].roles
        for role, expected in parts.items():
            got = roles[role].apply(tensors[roles[role].tensor])
            assert torch.equal(got, expected), role
            assert role_shape(roles[role], tuple(tensors[roles[role].tensor].shape)) == got.shape
        assert roles["attn_norm.bias"] == RoleRef(f"{prefix}h.0.ln_1.bias")
        # the causal-mask buffers of old checkpoints are not the attention's bias
        assert f"{prefix}h.1.attn.bias" in layout.unassigned
        assert f"{prefix}h.1.attn.masked_bias" in layout.unassigned
    assert (layout.num_heads, layout.num_kv_heads) == (None, None)


def bert_shapes(legacy: bool = False) -> dict[str, tuple[int, ...]]:
    w, b = ("gamma", "beta") if legacy else ("weight", "bias")
    s: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (V, H),
        "bert.embeddings.position_embeddings.weight": (64, H),
        "bert.embeddings.token_type_embeddings.weight": (2, H),
        f"bert.embeddings.LayerNorm.{w}": (H,), f"bert.embeddings.LayerNorm.{b}": (H,),
        "bert.embeddings.position_ids": (1, 64),
        "bert.pooler.dense.weight": (H, H), "bert.pooler.dense.bias": (H,),
        "cls.predictions.decoder.weight": (V, H), "cls.predictions.bias": (V,),
    }
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for mod, shape in {"attention.self.query": (H, H), "attention.self.key": (H, H),
                           "attention.self.value": (H, H), "attention.output.dense": (H, H),
                           "intermediate.dense": (FF, H), "output.dense": (H, FF)}.items():
            s |= {p + mod + ".weight": shape, p + mod + ".bias": (shape[0],)}
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            s |= {f"{p}{norm}.{w}": (H,), f"{p}{norm}.{b}": (H,)}
    return s


@pytest.mark.parametrize("legacy", [False, True])
def test_bert_roles_and_legacy_gamma_beta(legacy: bool) -> None:
    layout = resolve_layout(infos(bert_shapes(legacy)), None)
    assert layout.family == "bert"
    assert (layout.num_layers, layout.hidden_size, layout.vocab_size) == (2, H, V)
    assert set(layout.globals) == {"embed", "pos_embed", "type_embed", "embed_norm",
                                   "embed_norm.bias", "lm_head"}
    roles = layout.layers[1].roles
    expected = {"q": "attention.self.query", "k": "attention.self.key",
                "v": "attention.self.value", "o": "attention.output.dense",
                "attn_norm": "attention.output.LayerNorm", "up": "intermediate.dense",
                "down": "output.dense", "mlp_norm": "output.LayerNorm"}
    for role, module in expected.items():
        assert roles[role].tensor.startswith(f"bert.encoder.layer.1.{module}."), role
        assert roles[role + ".bias"].tensor.startswith(f"bert.encoder.layer.1.{module}."), role
    assert "bert.embeddings.position_ids" in layout.unassigned
    assert "bert.pooler.dense.weight" in layout.unassigned


# -- mixture of experts -------------------------------------------------------------------------

E, EI = 4, 6  # experts, expert width (2 * EI != H, so stacks are not square)


def expert_parts() -> dict[str, torch.Tensor]:
    return {"gate": rand(EI, H), "up": rand(EI, H), "down": rand(H, EI)}


def test_mixtral_per_expert_files() -> None:
    shapes = llama_shapes(mlp=False)
    for i in range(2):
        p = f"model.layers.{i}.block_sparse_moe."
        shapes[p + "gate.weight"] = (E, H)
        for e in range(E):
            shapes |= {f"{p}experts.{e}.w1.weight": (EI, H), f"{p}experts.{e}.w3.weight": (EI, H),
                       f"{p}experts.{e}.w2.weight": (H, EI)}
    layout = resolve_layout(infos(shapes), config("mixtral", num_local_experts=E))
    assert layout.family == "mixtral"
    check_dims(layout)
    assert layout.intermediate_size == FF  # from the config; Mixtral has no dense MLP
    assert (layout.moe_layers, layout.num_experts, layout.num_shared_experts) == ([0, 1], E, 0)
    layer = layout.layers[1]
    assert set(layer.roles) == {"attn_norm", "mlp_norm", "router"} | ATTN
    assert layer.experts[2] == {
        "gate": RoleRef("model.layers.1.block_sparse_moe.experts.2.w1.weight"),
        "up": RoleRef("model.layers.1.block_sparse_moe.experts.2.w3.weight"),
        "down": RoleRef("model.layers.1.block_sparse_moe.experts.2.w2.weight"),
    }


def test_v5_stacked_experts_cut_back_to_each_expert() -> None:
    """transformers v5 merges experts: stack on dim 0, concatenate gate|up on dim 1."""
    parts = [expert_parts() for _ in range(E)]
    gate_up = torch.stack([torch.cat([p["gate"], p["up"]]) for p in parts])  # [E, 2*EI, H]
    down = torch.stack([p["down"] for p in parts])  # [E, H, EI]
    tensors = {"model.layers.0.mlp.experts.gate_up_proj": gate_up,
               "model.layers.0.mlp.experts.down_proj": down}
    shapes = {"model.embed_tokens.weight": (V, H), "model.layers.0.mlp.gate.weight": (E, H)}
    shapes |= {n: tuple(t.shape) for n, t in tensors.items()}
    for model_type in ("mixtral", "qwen3_moe", "qwen2_moe", "deepseek_v3"):
        layout = resolve_layout(infos(shapes), config(model_type, layers=1))
        experts = layout.layers[0].experts
        assert len(experts) == E
        assert experts[3]["gate"] == RoleRef(
            "model.layers.0.mlp.experts.gate_up_proj", expert=3, rows=(0, EI))
        for e, expected in enumerate(parts):
            for role, value in expected.items():
                ref = experts[e][role]
                assert torch.equal(ref.apply(tensors[ref.tensor]), value), (model_type, e, role)


def test_qwen2_moe_sparse_step_shared_expert_and_gate() -> None:
    shapes = llama_shapes(bias=True, mlp=False, layers=3)
    for i in range(3):
        p = f"model.layers.{i}.mlp."
        if (i + 1) % 2:  # decoder_sparse_step=2: layers 0 and 2 are dense
            shapes |= {p + "gate_proj.weight": (FF, H), p + "up_proj.weight": (FF, H),
                       p + "down_proj.weight": (H, FF)}
            continue
        shapes |= {p + "gate.weight": (E, H), p + "shared_expert_gate.weight": (1, H),
                   p + "shared_expert.gate_proj.weight": (2 * EI, H),
                   p + "shared_expert.up_proj.weight": (2 * EI, H),
                   p + "shared_expert.down_proj.weight": (H, 2 * EI)}
        for e in range(E):
            for proj, shape in {"gate_proj": (EI, H), "up_proj": (EI, H), "down_proj": (H, EI)}.items():
                shapes[f"{p}experts.{e}.{proj}.weight"] = shape
    cfg = config("qwen2_moe", layers=3, num_experts=E, decoder_sparse_step=2)
    layout = resolve_layout(infos(shapes), cfg)
    assert layout.family == "qwen2_moe"
    check_dims(layout, layers=3)
    assert (layout.moe_layers, layout.num_experts, layout.num_shared_experts) == ([1], E, 1)
    assert set(layout.layers[0].roles) == DENSE | {"q.bias", "k.bias", "v.bias"}
    moe = layout.layers[1]
    assert moe.roles["router"] == RoleRef("model.layers.1.mlp.gate.weight")
    assert moe.roles["shared_gate"] == RoleRef("model.layers.1.mlp.shared_expert_gate.weight")
    assert "gate" not in moe.roles
    assert moe.shared_experts == [{
        "gate": RoleRef("model.layers.1.mlp.shared_expert.gate_proj.weight"),
        "up": RoleRef("model.layers.1.mlp.shared_expert.up_proj.weight"),
        "down": RoleRef("model.layers.1.mlp.shared_expert.down_proj.weight"),
    }]
    assert moe.experts[3]["down"] == RoleRef("model.layers.1.mlp.experts.3.down_proj.weight")
    assert layout.intermediate_size == FF


def test_qwen3_moe_mlp_only_layers_are_dense() -> None:
    shapes = llama_shapes(qk_norm=True, mlp=False)
    shapes |= {"model.layers.0.mlp.gate_proj.weight": (FF, H), "model.layers.0.mlp.up_proj.weight": (FF, H),
               "model.layers.0.mlp.down_proj.weight": (H, FF), "model.layers.1.mlp.gate.weight": (E, H),
               "model.layers.1.mlp.experts.gate_up_proj": (E, 2 * EI, H),
               "model.layers.1.mlp.experts.down_proj": (E, H, EI)}
    layout = resolve_layout(infos(shapes), config("qwen3_moe", num_experts=E, mlp_only_layers=[0]))
    assert layout.family == "qwen3_moe"
    check_dims(layout)
    assert (layout.moe_layers, layout.num_experts, layout.num_shared_experts) == ([1], E, 0)
    assert {"q_norm", "k_norm", "router"} <= set(layout.layers[1].roles)


def deepseek_shapes(q_lora: bool, layers: int = 3, mtp: bool = False) -> dict[str, tuple[int, ...]]:
    rank, kv_rank, rope, nope, vdim = 12, 8, 4, 4, 8
    s: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,),
                                     "lm_head.weight": (V, H)}
    for i in range(layers + (1 if mtp else 0)):
        p = f"model.layers.{i}."
        s |= {p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
              p + "self_attn.kv_a_proj_with_mqa.weight": (kv_rank + rope, H),
              p + "self_attn.kv_a_layernorm.weight": (kv_rank,),
              p + "self_attn.kv_b_proj.weight": (HEADS * (nope + vdim), kv_rank),
              p + "self_attn.o_proj.weight": (H, HEADS * vdim)}
        if q_lora:
            s |= {p + "self_attn.q_a_proj.weight": (rank, H), p + "self_attn.q_a_layernorm.weight": (rank,),
                  p + "self_attn.q_b_proj.weight": (HEADS * (nope + rope), rank)}
        else:
            s[p + "self_attn.q_proj.weight"] = (HEADS * (nope + rope), H)
        if i == 0:  # first_k_dense_replace = 1
            s |= {p + "mlp.gate_proj.weight": (FF, H), p + "mlp.up_proj.weight": (FF, H),
                  p + "mlp.down_proj.weight": (H, FF)}
            continue
        s[p + "mlp.gate.weight"] = (E, H)
        if q_lora:
            s[p + "mlp.gate.e_score_correction_bias"] = (E,)
        for proj, shape in {"gate_proj": (EI, H), "up_proj": (EI, H), "down_proj": (H, EI)}.items():
            s[f"{p}mlp.shared_experts.{proj}.weight"] = (2 * shape[0], shape[1]) if proj != "down_proj" \
                else (shape[0], 2 * shape[1])
            for e in range(E):
                s[f"{p}mlp.experts.{e}.{proj}.weight"] = shape
        if i == layers:  # DeepSeek-V3's multi-token-prediction block
            s |= {p + "enorm.weight": (H,), p + "hnorm.weight": (H,), p + "eh_proj.weight": (H, 2 * H)}
    return s


def test_deepseek_v3_mla_dense_prefix_shared_experts_and_mtp_layer() -> None:
    cfg = config("deepseek_v3", layers=3, n_routed_experts=E, n_shared_experts=2,
                 first_k_dense_replace=1, num_nextn_predict_layers=1)
    layout = resolve_layout(infos(deepseek_shapes(q_lora=True, mtp=True)), cfg)
    assert layout.family == "deepseek_v3"
    check_dims(layout, layers=3)
    assert (layout.moe_layers, layout.num_experts) == ([1, 2], E)
    assert layout.num_shared_experts == 1  # one module of n_shared_experts * width neurons
    mla = {"q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b", "o"}
    assert set(layout.layers[0].roles) == mla | {"attn_norm", "mlp_norm", "gate", "up", "down"}
    assert set(layout.layers[2].roles) == mla | {"attn_norm", "mlp_norm", "router", ROUTER_CORRECTION}
    assert layout.layers[2].roles[ROUTER_CORRECTION] == RoleRef(
        "model.layers.2.mlp.gate.e_score_correction_bias")
    assert layout.layers[1].shared_experts[0]["up"] == RoleRef(
        "model.layers.1.mlp.shared_experts.up_proj.weight")
    # the MTP block (layer 3 of a 3-layer model) is listed, not merged into the stack
    assert all(name.startswith("model.layers.3.") for name in layout.unassigned)
    assert "model.layers.3.eh_proj.weight" in layout.unassigned


def test_deepseek_v2_without_q_lora_uses_q_proj() -> None:
    cfg = config("deepseek_v2", layers=3, n_routed_experts=E, first_k_dense_replace=1)
    layout = resolve_layout(infos(deepseek_shapes(q_lora=False)), cfg)
    assert layout.family == "deepseek_v2"
    assert {"q", "kv_a", "kv_b"} <= set(layout.layers[1].roles)
    assert "q_a" not in layout.layers[1].roles
    assert layout.moe_layers == [1, 2]


def test_llama4_stacks_are_stored_in_out_and_cut_in_halves() -> None:
    parts = [expert_parts() for _ in range(E)]
    gate_up = torch.stack([torch.cat([p["gate"], p["up"]]).T for p in parts])  # [E, H, 2*EI]
    down = torch.stack([p["down"].T for p in parts])  # [E, EI, H]
    # what Llama4TextExperts computes: x @ gate_up -> chunk(2, -1) -> gate, up
    x = rand(3, H)
    gate_ref, up_ref = torch.bmm(x.expand(E, 3, H), gate_up).chunk(2, dim=-1)
    tensors = {"language_model.model.layers.0.feed_forward.experts.gate_up_proj": gate_up,
               "language_model.model.layers.0.feed_forward.experts.down_proj": down}
    shapes = {"language_model.model.embed_tokens.weight": (V, H),
              "language_model.model.layers.0.feed_forward.router.weight": (E, H),
              "language_model.model.layers.0.feed_forward.shared_expert.gate_proj.weight": (EI, H)}
    shapes |= {n: tuple(t.shape) for n, t in tensors.items()}
    layout = resolve_layout(infos(shapes), {"model_type": "llama4",
                                            "text_config": config("llama4_text", layers=1)})
    assert layout.family == "llama4"
    experts = layout.layers[0].experts
    for e in range(E):
        gate = experts[e]["gate"].apply(gate_up)
        assert torch.allclose(x @ gate.T, gate_ref[e], atol=1e-5)
        assert torch.allclose(x @ experts[e]["up"].apply(gate_up).T, up_ref[e], atol=1e-5)
        assert torch.equal(experts[e]["down"].apply(down), parts[e]["down"])
    assert experts[0]["gate"].transpose


def test_gpt_oss_interleaved_gate_up_with_biases() -> None:
    gate_up = rand(E, H, 2 * EI)
    bias = rand(E, 2 * EI)
    down = rand(E, EI, H)
    tensors = {"model.layers.0.mlp.experts.gate_up_proj": gate_up,
               "model.layers.0.mlp.experts.gate_up_proj_bias": bias,
               "model.layers.0.mlp.experts.down_proj": down,
               "model.layers.0.mlp.experts.down_proj_bias": rand(E, H)}
    shapes = {"model.embed_tokens.weight": (V, H), "model.layers.0.mlp.router.weight": (E, H),
              "model.layers.0.mlp.router.bias": (E,), "model.layers.0.self_attn.sinks": (HEADS,)}
    shapes |= {n: tuple(t.shape) for n, t in tensors.items()}
    layout = resolve_layout(infos(shapes), config("gpt_oss", layers=1, num_local_experts=E))
    layer = layout.layers[0]
    assert {"router", "router.bias", "attn_sinks"} <= set(layer.roles)
    x = rand(5, H)
    for e in range(E):
        out = x @ gate_up[e] + bias[e]  # GptOssExperts: gate = [..., ::2], up = [..., 1::2]
        ex = layer.experts[e]
        gate = x @ ex["gate"].apply(gate_up).T + ex["gate.bias"].apply(bias)
        up = x @ ex["up"].apply(gate_up).T + ex["up.bias"].apply(bias)
        assert torch.allclose(gate, out[..., ::2], atol=1e-5)
        assert torch.allclose(up, out[..., 1::2], atol=1e-5)
        assert torch.equal(ex["down"].apply(down), down[e].T)
    assert layer.experts[1]["up"] == RoleRef("model.layers.0.mlp.experts.gate_up_proj", expert=1,
                                             transpose=True, rows=(1, 2 * EI), step=2)


def test_stack_orientation_follows_shapes_and_refuses_to_guess() -> None:
    # a family that declares [E, H, 2I] but whose file is [E, 2I, H]: shapes decide
    shapes = {"model.embed_tokens.weight": (V, H),
              "model.layers.0.feed_forward.experts.gate_up_proj": (E, 2 * EI, H),
              "model.layers.0.feed_forward.experts.down_proj": (E, H, EI)}
    layout = resolve_layout(infos(shapes), config("llama4", layers=1))
    assert not layout.layers[0].experts[0]["gate"].transpose
    # a role map without a declared layout: square stacks are ambiguous
    rmap = parse_role_map({"layer_prefix": "b.{layer}.", "globals": {"embed": "emb"},
                           "stacked": {"w13": {"roles": ["gate", "up"]}, "w2": {"roles": ["down"]}}})
    square = {"emb.weight": (V, H), "b.0.w13": (E, H, H), "b.0.w2": (E, H, H)}
    with pytest.raises(ArchitectureError, match="both orientations"):
        resolve_layout(infos(square), None, role_map=rmap)
    # a square gate/up stack (2I == H) lies as the block's down stack does, whose shape decides
    # (Qwen3-VL-MoE's files hold [E, H, 2I] and [E, I, H]; the table declares [E, 2I, H])
    for down, transposed in (((E, H // 2, H), True), ((E, H, H // 2), False)):
        half = {"emb.weight": (V, H), "b.0.w13": (E, H, H), "b.0.w2": down}
        expert = resolve_layout(infos(half), None, role_map=rmap).layers[0].experts[0]
        assert expert["gate"].transpose is expert["down"].transpose is transposed
    # neither orientation fits the hidden size
    bad = {"emb.weight": (V, H), "b.0.w13": (E, 2 * EI, H + 1), "b.0.w2": (E, H, EI)}
    with pytest.raises(ArchitectureError, match="fits neither"):
        resolve_layout(infos(bad), None, role_map=rmap)
    ok = {"emb.weight": (V, H), "b.0.w13": (E, H, 2 * EI), "b.0.w2": (E, EI, H)}
    experts = resolve_layout(infos(ok), None, role_map=rmap).layers[0].experts
    assert experts[0]["up"] == RoleRef("b.0.w13", expert=0, transpose=True, rows=(EI, 2 * EI))
    assert experts[0]["down"] == RoleRef("b.0.w2", expert=0, transpose=True)


# -- GGUF ---------------------------------------------------------------------------------------


def gguf_shapes(layers: int = 2, moe: bool = False) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, H), "output_norm.weight": (H,),
                                     "output.weight": (V, H), "rope_freqs.weight": (HD // 2,)}
    for i in range(layers):
        p = f"blk.{i}."
        s |= {p + "attn_norm.weight": (H,), p + "attn_q.weight": (HEADS * HD, H),
              p + "attn_k.weight": (KV * HD, H), p + "attn_v.weight": (KV * HD, H),
              p + "attn_output.weight": (H, HEADS * HD), p + "attn_q_norm.weight": (HD,),
              p + "attn_k_norm.weight": (HD,), p + "ffn_norm.weight": (H,)}
        if moe:
            s |= {p + "ffn_gate_inp.weight": (E, H), p + "ffn_gate_exps.weight": (E, EI, H),
                  p + "ffn_up_exps.weight": (E, EI, H), p + "ffn_down_exps.weight": (E, H, EI),
                  p + "ffn_gate_shexp.weight": (EI, H), p + "ffn_up_shexp.weight": (EI, H),
                  p + "ffn_down_shexp.weight": (H, EI), p + "ffn_gate_inp_shexp.weight": (H,)}
        else:
            s |= {p + "ffn_gate.weight": (FF, H), p + "ffn_up.weight": (FF, H),
                  p + "ffn_down.weight": (H, FF)}
    return s


def test_gguf_dense_names_and_family_from_config() -> None:
    layout = resolve_layout(infos(gguf_shapes()), config("qwen3"), fmt="gguf")
    assert (layout.family, layout.model_type) == ("qwen3", "qwen3")
    check_dims(layout)
    assert layout.globals["lm_head"] == RoleRef("output.weight")
    assert set(layout.layers[1].roles) == DENSE | {"q_norm", "k_norm"}
    assert layout.layers[1].roles["mlp_norm"] == RoleRef("blk.1.ffn_norm.weight")
    assert layout.unassigned == ["rope_freqs.weight"]
    # the same names are not a Hugging Face layout
    with pytest.raises(ArchitectureError):
        resolve_layout(infos(gguf_shapes()), config("qwen3"))


def test_gguf_without_config_and_unknown_arch() -> None:
    assert resolve_layout(infos(gguf_shapes()), None, fmt="gguf").family == "gguf"
    layout = resolve_layout(infos(gguf_shapes()), config("someday-arch"), fmt="gguf")
    assert (layout.family, layout.model_type) == ("someday-arch", "someday-arch")


def test_gguf_moe_stacks_and_shared_expert() -> None:
    layout = resolve_layout(infos(gguf_shapes(moe=True)), config("qwen2_moe", num_experts=E),
                            fmt="gguf")
    assert layout.family == "qwen2_moe"
    layer = layout.layers[0]
    assert layer.roles["router"] == RoleRef("blk.0.ffn_gate_inp.weight")
    assert layer.roles["shared_gate"] == RoleRef("blk.0.ffn_gate_inp_shexp.weight")
    assert layer.experts[2] == {"gate": RoleRef("blk.0.ffn_gate_exps.weight", expert=2),
                                "up": RoleRef("blk.0.ffn_up_exps.weight", expert=2),
                                "down": RoleRef("blk.0.ffn_down_exps.weight", expert=2)}
    assert layer.shared_experts == [{"gate": RoleRef("blk.0.ffn_gate_shexp.weight"),
                                     "up": RoleRef("blk.0.ffn_up_shexp.weight"),
                                     "down": RoleRef("blk.0.ffn_down_shexp.weight")}]


def test_gguf_phi3_fused_qkv_and_double_width_up() -> None:
    q, k, v = rand(HEADS * HD, H), rand(KV * HD, H), rand(KV * HD, H)
    gate, up = rand(FF, H), rand(FF, H)
    tensors = {"blk.0.attn_qkv.weight": torch.cat([q, k, v]), "blk.0.ffn_up.weight": torch.cat([gate, up])}
    shapes = {"token_embd.weight": (V, H), "blk.0.attn_output.weight": (H, HEADS * HD),
              "blk.0.ffn_down.weight": (H, FF), "blk.0.attn_norm.weight": (H,)}
    shapes |= {n: tuple(t.shape) for n, t in tensors.items()}
    layout = resolve_layout(infos(shapes), config("phi3", layers=1), fmt="gguf")
    assert layout.family == "phi3"
    roles = layout.layers[0].roles
    for role, expected in {"q": q, "k": k, "v": v, "gate": gate, "up": up}.items():
        assert torch.equal(roles[role].apply(tensors[roles[role].tensor]), expected), role


def test_gguf_gpt2_keeps_a_plain_up_projection() -> None:
    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, H), "position_embd.weight": (64, H),
                                     "output_norm.weight": (H,), "output_norm.bias": (H,)}
    for name, shape in {"attn_qkv": (3 * H, H), "attn_output": (H, H), "ffn_up": (4 * H, H),
                        "ffn_down": (H, 4 * H), "attn_norm": (H,), "ffn_norm": (H,)}.items():
        s |= {f"blk.0.{name}.weight": shape, f"blk.0.{name}.bias": (shape[0],)}
    cfg = {"model_type": "gpt2", "n_embd": H, "n_head": HEADS, "n_layer": 1, "vocab_size": V}
    layout = resolve_layout(infos(s), cfg, fmt="gguf")
    roles = layout.layers[0].roles
    assert "gate" not in roles
    assert roles["up"] == RoleRef("blk.0.ffn_up.weight")
    assert roles["k"] == RoleRef("blk.0.attn_qkv.weight", rows=(H, 2 * H))
    assert roles["v.bias"] == RoleRef("blk.0.attn_qkv.bias", rows=(2 * H, 3 * H))
    assert layout.globals["pos_embed"] == RoleRef("position_embd.weight")
    assert layout.intermediate_size == 4 * H


@pytest.mark.parametrize(("arch", "second_norm"), [
    ("falcon", None), ("falcon", "attn_norm_2"), ("phi", None), ("gpt_neox", "ffn_norm")])
def test_gguf_parallel_blocks_with_one_norm_give_it_to_the_mlp(arch: str,
                                                               second_norm: str | None) -> None:
    """llama.cpp keeps Falcon-7B's and Phi-2's one norm as ``attn_norm``; Falcon-40B's
    ``ln_mlp`` becomes ``attn_norm_2``, GPT-NeoX's second norm ``ffn_norm``."""
    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, H), "output_norm.weight": (H,)}
    for name, shape in {"attn_qkv": (3 * H, H), "attn_output": (H, H), "ffn_up": (4 * H, H),
                        "ffn_down": (H, 4 * H), "attn_norm": (H,)}.items():
        s[f"blk.0.{name}.weight"] = shape
    if second_norm:
        s[f"blk.0.{second_norm}.weight"] = (H,)
    cfg = {"model_type": arch, "hidden_size": H, "num_attention_heads": HEADS,
           "num_hidden_layers": 1, "vocab_size": V}
    roles = resolve_layout(infos(s), cfg, fmt="gguf").layers[0].roles
    assert roles["attn_norm"] == RoleRef("blk.0.attn_norm.weight")
    assert roles["mlp_norm"] == RoleRef(f"blk.0.{second_norm or 'attn_norm'}.weight")


def test_gguf_bert_names() -> None:
    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, H), "token_types.weight": (2, H),
                                     "position_embd.weight": (64, H), "token_embd_norm.weight": (H,),
                                     "token_embd_norm.bias": (H,)}
    for i in range(2):
        p = f"blk.{i}."
        for name, shape in {"attn_q": (H, H), "attn_k": (H, H), "attn_v": (H, H),
                            "attn_output": (H, H), "ffn_up": (FF, H), "ffn_down": (H, FF),
                            "attn_output_norm": (H,), "layer_output_norm": (H,)}.items():
            s |= {f"{p}{name}.weight": shape, f"{p}{name}.bias": (shape[0],)}
    for cfg in (config("bert", num_key_value_heads=HEADS), None):
        layout = resolve_layout(infos(s), cfg, fmt="gguf")
        assert set(layout.globals) == {"embed", "type_embed", "pos_embed", "embed_norm",
                                       "embed_norm.bias"}
        roles = layout.layers[1].roles
        assert roles["attn_norm"] == RoleRef("blk.1.attn_output_norm.weight")
        assert roles["mlp_norm.bias"] == RoleRef("blk.1.layer_output_norm.bias")
        assert {"up", "down", "q.bias"} <= set(roles)
    assert layout.family == "gguf-bert"


# -- role maps ----------------------------------------------------------------------------------

ROLE_MAP = {
    "family": "mymodel",
    "layer_prefix": "backbone.blocks.{layer}.",
    "globals": {"embed": "backbone.tok.weight", "final_norm": "backbone.norm_f.weight",
                "lm_head": "head.weight"},
    "layer": {"q": "attn.wq", "k": "attn.wk", "v": "attn.wv", "o": "attn.wo",
              "attn_norm": "ln1", "mlp_norm": "ln2", "router": "ffn.router"},
    "experts": "ffn.experts.{expert}.",
    "expert": {"gate": "w1", "up": "w3", "down": "w2"},
    "transpose": ["o"],
}
ROLE_MAP_YAML = """\
family: mymodel
layer_prefix: "backbone.blocks.{layer}."
globals: {embed: "backbone.tok.weight", final_norm: "backbone.norm_f.weight", lm_head: "head.weight"}
layer: {q: attn.wq, k: attn.wk, v: attn.wv, o: attn.wo, attn_norm: ln1, mlp_norm: ln2,
        router: ffn.router}
experts: "ffn.experts.{expert}."
expert: {gate: w1, up: w3, down: w2}
transpose: [o]
"""


def invented_shapes(layers: int = 3) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {"backbone.tok.weight": (V, H), "backbone.norm_f.weight": (H,),
                                     "head.weight": (V, H), "backbone.rope.freqs": (4,)}
    for i in range(layers):
        p = f"backbone.blocks.{i}."
        s |= {p + "attn.wq.weight": (H, H), p + "attn.wk.weight": (H, H), p + "attn.wv.weight": (H, H),
              p + "attn.wo.weight": (H, H), p + "ln1.weight": (H,), p + "ln2.weight": (H,),
              p + "ffn.router.weight": (E, H)}
        for e in range(E):
            s |= {f"{p}ffn.experts.{e}.w1.weight": (EI, H), f"{p}ffn.experts.{e}.w3.weight": (EI, H),
                  f"{p}ffn.experts.{e}.w2.weight": (H, EI)}
    return s


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_role_map_file_describes_an_invented_layout(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"roles{suffix}"
    path.write_text(json.dumps(ROLE_MAP) if suffix == ".json" else ROLE_MAP_YAML)
    rmap = load_role_map(path)
    assert isinstance(rmap, LayoutTable)
    with pytest.raises(ArchitectureError):  # nothing built-in knows these names
        resolve_layout(infos(invented_shapes()), None)
    # the role map wins even over a config that names a known family
    layout = resolve_layout(infos(invented_shapes()), config("llama", layers=3), role_map=rmap)
    assert (layout.family, layout.model_type) == ("mymodel", "llama")
    assert (layout.num_layers, layout.hidden_size, layout.vocab_size) == (3, H, V)
    assert layout.moe_layers == [0, 1, 2]
    assert layout.num_experts == E
    layer = layout.layers[2]
    assert layer.roles["o"] == RoleRef("backbone.blocks.2.attn.wo.weight", transpose=True)
    assert layer.roles["q"] == RoleRef("backbone.blocks.2.attn.wq.weight")
    assert layer.experts[1]["up"] == RoleRef("backbone.blocks.2.ffn.experts.1.w3.weight")
    assert layout.globals["final_norm"] == RoleRef("backbone.norm_f.weight")
    assert layout.unassigned == ["backbone.rope.freqs"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": {"q": "attn.wq"}}, "layers: unknown key (did you mean 'layer'?)"),
        ({"layer": {"qq": "attn.wq"}}, "unknown layer role 'qq'"),
        ({"layer_prefix": "backbone.blocks."}, "must contain {layer}"),
        ({"experts": "ffn.experts."}, "must contain {expert}"),
        ({"stacked": {"w": {"roles": ["gate"], "layot": "in_out"}}}, "did you mean 'layout'"),
        ({"transpose": "o"}, "transpose"),
        ({"fused": {"w": {"roles": ["q", "v", "k"], "split": "shards"}}}, "needs shards"),
        ({"fused": {"w": {"roles": ["q", "attn_gate"], "split": "halves",
                          "head_parts": [["head_dim"], ["head_dim"]]}}},
         "head_parts belongs to split 'per_head'"),
        ({"tied": ["pos_embed"]}, "'tied' names ['pos_embed']"),
        ({"stack_layers_key": ["encoder_layers", "decoder_layers"]}, "one key per"),
    ],
)
def test_role_map_mistakes_are_one_line_usage_errors(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    data = {k: v for k, v in ROLE_MAP.items() if not (set(change) & {"layers"} and k == "layer")}
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(data | change))
    with pytest.raises(UsageError) as info:
        load_role_map(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert str(path) in text
    assert info.value.exit_code == ExitCode.USAGE


def test_role_map_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_role_map(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layer: {q: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML") as info:
        load_role_map(bad)
    assert "\n" not in str(info.value)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_role_map(listed)


def test_role_map_giving_one_path_two_roles_is_a_usage_error() -> None:
    rmap = parse_role_map({"layer_prefix": "b.{layer}.", "layer": {"q": "w", "k": "w"}})
    with pytest.raises(UsageError, match="both as"):
        resolve_layout(infos({"b.0.w.weight": (H, H)}), None, role_map=rmap)


# -- detection failures and missing pieces ------------------------------------------------------


def test_unknown_layout_lists_patterns_and_hints_at_role_maps() -> None:
    shapes = invented_shapes(layers=2)
    extra = {f"backbone.misc_{chr(97 + i)}.weight": (1,) for i in range(15)}
    with pytest.raises(ArchitectureError) as info:
        resolve_layout(infos(shapes | extra), {"model_type": "mymodel"})
    err = info.value
    text = str(err)
    assert "\n" not in text
    assert "backbone.blocks.N.attn.wq.weight" in text
    assert "backbone.blocks.N.ffn.experts.N.wN.weight" in text  # digits collapse to N
    patterns = 3 + 1 + 6 + 1 + 15  # globals, rope, block (ln1/ln2 -> lnN), experts (wN), misc
    assert f"and {patterns - 12} more" in text
    assert "'mymodel'" in text
    assert err.hint == "pass --role-map FILE to describe this layout"
    assert "--role-map FILE" in text


def test_unknown_model_type_falls_back_to_names() -> None:
    layout = resolve_layout(infos(llama_shapes(bias=True)), config("brand_new_llama_clone"))
    assert (layout.family, layout.model_type) == ("llama", "brand_new_llama_clone")


def test_a_failed_reading_by_names_says_it_was_a_guess() -> None:
    """A hybrid whose names are Qwen3.5's but whose ``q_proj`` holds no output gate: the shape
    error names the model_type that has no table, so it does not read as a broken Qwen3.5."""
    shapes = llama_shapes(qk_norm=True)
    shapes |= {"model.layers.0.linear_attn.in_proj_qkvz.weight": (64, H)}
    cfg = config("brand_new_hybrid") | {"num_attention_heads": 4, "head_dim": H // 4}
    with pytest.raises(ArchitectureError, match=r"model_type 'brand_new_hybrid' has no table of "
                                                r"its own, and reading it with the 'qwen3_5' "
                                                r"layout"):
        resolve_layout(infos(shapes), cfg)


def test_empty_tensor_list_is_an_architecture_error() -> None:
    with pytest.raises(ArchitectureError, match="no tensors"):
        resolve_layout([], None)


def test_missing_middle_layer_is_named() -> None:
    shapes = {n: s for n, s in llama_shapes(layers=4).items() if ".layers.2." not in n}
    with pytest.raises(ArchitectureError, match="layer 2 has no tensors"):
        resolve_layout(infos(shapes), config("llama", layers=4))


def test_missing_trailing_layers_are_caught_through_the_config() -> None:
    with pytest.raises(ArchitectureError, match="config says 4 layers"):
        resolve_layout(infos(llama_shapes(layers=3)), config("llama", layers=4))
    with pytest.raises(ArchitectureError, match="belongs to layer 3"):
        resolve_layout(infos(llama_shapes(layers=4)), config("llama", layers=3))


def test_missing_expert_is_named() -> None:
    shapes = {n: s for n, s in deepseek_shapes(q_lora=True).items()
              if "layers.2.mlp.experts.1." not in n}
    with pytest.raises(ArchitectureError, match="layer 2: expert 1 has no tensors"):
        resolve_layout(infos(shapes), config("deepseek_v3", layers=3))
    half = {n: s for n, s in deepseek_shapes(q_lora=True).items()
            if n != "model.layers.1.mlp.experts.3.up_proj.weight"}
    with pytest.raises(ArchitectureError, match="expert 3 differs"):
        resolve_layout(infos(half), config("deepseek_v3", layers=3))
    with pytest.raises(ArchitectureError, match="config says 8"):
        resolve_layout(infos(deepseek_shapes(q_lora=True)),
                       config("deepseek_v3", layers=3, n_routed_experts=8))


def test_two_spellings_of_one_role_in_one_layer_conflict() -> None:
    shapes = llama_shapes(mlp=False) | {"model.layers.0.block_sparse_moe.gate.weight": (E, H),
                                        "model.layers.0.mlp.gate.weight": (E, H)}
    with pytest.raises(ArchitectureError, match="claim role 'router'"):
        resolve_layout(infos(shapes), config("mixtral"))


# -- the registry -------------------------------------------------------------------------------


def test_registry_tables_are_consistent() -> None:
    expected = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2", "bert",
                "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "llama4",
                "gpt_oss"}
    assert expected <= set(FAMILIES)
    seen: dict[str, str] = {}
    for name, table in {**FAMILIES, **GGUF_TABLES}.items():
        assert isinstance(table, LayoutTable)
        assert table.family == name
        CompiledTable(table)  # no path claims two roles
        for model_type in table.model_types if name in FAMILIES else ():
            assert model_type not in seen, (model_type, seen.get(model_type), name)
            seen[model_type] = name
        assert set(table.layer) <= set(ALL_LAYER_ROLES)


# -- real transformers models -------------------------------------------------------------------


def _tiny_models() -> dict[str, object]:
    transformers = pytest.importorskip("transformers")
    base = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    moe = {"moe_intermediate_size": 16, "num_experts_per_tok": 2}
    deepseek = {"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                "vocab_size": 100, "n_routed_experts": 4, "num_experts_per_tok": 2,
                "first_k_dense_replace": 1, "kv_lora_rank": 8, "qk_rope_head_dim": 4,
                "qk_nope_head_dim": 4, "v_head_dim": 8, "n_group": 1, "topk_group": 1}
    t = transformers
    return {
        "llama": (t.LlamaForCausalLM, t.LlamaConfig(**base)),
        "mistral": (t.MistralForCausalLM, t.MistralConfig(**base)),
        "qwen2": (t.Qwen2ForCausalLM, t.Qwen2Config(**base)),
        "qwen3": (t.Qwen3ForCausalLM, t.Qwen3Config(**base, head_dim=8)),
        "gemma2": (t.Gemma2ForCausalLM, t.Gemma2Config(**base, head_dim=8)),
        "gemma3": (t.Gemma3ForCausalLM, t.Gemma3TextConfig(**base, head_dim=8)),
        "phi3": (t.Phi3ForCausalLM, t.Phi3Config(**base, pad_token_id=0)),
        "gpt2": (t.GPT2LMHeadModel, t.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                                 n_positions=64)),
        "bert": (t.BertForMaskedLM, t.BertConfig(hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 vocab_size=100, max_position_embeddings=64)),
        "mixtral": (t.MixtralForCausalLM, t.MixtralConfig(**base, num_local_experts=4)),
        "qwen2_moe": (t.Qwen2MoeForCausalLM, t.Qwen2MoeConfig(
            **base, **moe, num_experts=4, shared_expert_intermediate_size=32,
            decoder_sparse_step=2)),
        "qwen3_moe": (t.Qwen3MoeForCausalLM, t.Qwen3MoeConfig(
            **base, **moe, num_experts=4, mlp_only_layers=[0])),
        "deepseek_v2": (t.DeepseekV2ForCausalLM, t.DeepseekV2Config(
            **deepseek, n_shared_experts=1, q_lora_rank=None)),
        "deepseek_v3": (t.DeepseekV3ForCausalLM, t.DeepseekV3Config(
            **deepseek, n_shared_experts=2, q_lora_rank=16)),
        "gpt_oss": (t.GptOssForCausalLM, t.GptOssConfig(**base, num_local_experts=4, head_dim=8)),
        "llama4": (t.Llama4ForCausalLM, t.Llama4TextConfig(
            **(base | {"intermediate_size": 16}), intermediate_size_mlp=64, num_local_experts=4,
            moe_layers=[1], head_dim=8)),
        **_classic_models(),
    }


def _classic_models() -> dict[str, object]:
    """The older open families (Pythia, Falcon, Bloom, OPT, GPT-J, Phi, StarCoder, OLMo-2,
    Cohere, Nemotron), each in the variants whose tensors differ."""
    t = pytest.importorskip("transformers")
    dense = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 100}
    falcon = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "vocab_size": 100}
    return {
        "gpt_neox": (t.GPTNeoXForCausalLM, t.GPTNeoXConfig(**dense)),
        # Falcon-40B/180B (grouped), Falcon-7B (multi-query, parallel, one norm), Falcon-RW
        # (per-head q/k/v, sequential norms, biases)
        "falcon": (t.FalconForCausalLM, t.FalconConfig(
            **falcon, num_kv_heads=2, new_decoder_architecture=True)),
        "falcon_7b": (t.FalconForCausalLM, t.FalconConfig(
            **falcon, multi_query=True, parallel_attn=True, new_decoder_architecture=False)),
        "falcon_rw": (t.FalconForCausalLM, t.FalconConfig(
            **falcon, multi_query=False, parallel_attn=False, new_decoder_architecture=False,
            bias=True, alibi=True)),
        "bloom": (t.BloomForCausalLM, t.BloomConfig(hidden_size=32, n_layer=2, n_head=4,
                                                    vocab_size=100)),
        "opt": (t.OPTForCausalLM, t.OPTConfig(**(dense | {"intermediate_size": 0}), ffn_dim=64,
                                              max_position_embeddings=64)),
        "gptj": (t.GPTJForCausalLM, t.GPTJConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                                 rotary_dim=4, n_positions=64)),
        "phi": (t.PhiForCausalLM, t.PhiConfig(**dense)),
        "starcoder2": (t.Starcoder2ForCausalLM, t.Starcoder2Config(**dense, num_key_value_heads=2)),
        "gpt_bigcode": (t.GPTBigCodeForCausalLM, t.GPTBigCodeConfig(
            n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, multi_query=True)),
        "olmo2": (t.Olmo2ForCausalLM, t.Olmo2Config(**dense)),
        "cohere": (t.CohereForCausalLM, t.CohereConfig(**dense, use_qk_norm=True)),
        "nemotron": (t.NemotronForCausalLM, t.NemotronConfig(**dense, num_key_value_heads=2,
                                                                head_dim=8)),
        "exaone4": (t.Exaone4ForCausalLM, t.Exaone4Config(**dense, num_key_value_heads=2)),
        "roberta": (t.RobertaForMaskedLM, t.RobertaConfig(**dense, max_position_embeddings=64)),
        "xlm-roberta": (t.XLMRobertaForMaskedLM, t.XLMRobertaConfig(
            **dense, max_position_embeddings=64)),
        # BERT's encoder under other prefixes: ERNIE (task-type embeddings), Data2Vec-Text,
        # RoFormer (sinusoidal positions)
        "ernie": (t.ErnieForMaskedLM, t.ErnieConfig(**dense, max_position_embeddings=64,
                                                    use_task_id=True)),
        "data2vec-text": (t.Data2VecTextForMaskedLM, t.Data2VecTextConfig(
            **dense, max_position_embeddings=64)),
        "roformer": (t.RoFormerForMaskedLM, t.RoFormerConfig(
            **dense, max_position_embeddings=64, embedding_size=32)),
        "gpt_neo": (t.GPTNeoForCausalLM, t.GPTNeoConfig(
            hidden_size=32, num_layers=2, num_heads=4, vocab_size=100,
            attention_types=[[["global", "local"], 1]], max_position_embeddings=64)),
        "mpt": (t.MptForCausalLM, t.MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=100)),
        "olmoe": (t.OlmoeForCausalLM, t.OlmoeConfig(**dense, num_experts=4,
                                                    num_experts_per_tok=2)),
        "phimoe": (t.PhimoeForCausalLM, t.PhimoeConfig(**dense, num_local_experts=4)),
        "granitemoe": (t.GraniteMoeForCausalLM, t.GraniteMoeConfig(**dense, num_local_experts=4)),
        "glm4_moe": (t.Glm4MoeForCausalLM, t.Glm4MoeConfig(
            **dense, n_routed_experts=4, moe_intermediate_size=16, first_k_dense_replace=1,
            pad_token_id=0)),
        "ernie4_5_moe": (t.Ernie4_5_MoeForCausalLM, t.Ernie4_5_MoeConfig(
            **dense, moe_num_experts=4, moe_intermediate_size=16, pad_token_id=0)),
        **_recent_models(),
    }


def _recent_models() -> dict[str, object]:
    """Gemma 4 (plain norms, per-layer inputs), GLM-4 (fused gate/up, sandwich norms) and the
    Qwen3-Next/3.5 hybrids (linear attention in three blocks of four, gated attention)."""
    t = pytest.importorskip("transformers")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 100}
    hybrid = small | {
        "num_hidden_layers": 4, "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 8,
        "linear_value_head_dim": 8}
    return {
        "gemma4": (t.Gemma4ForCausalLM, t.Gemma4TextConfig(
            **small, num_hidden_layers=2, hidden_size_per_layer_input=8,
            vocab_size_per_layer_input=100, num_kv_shared_layers=0)),
        "gemma4_moe": (t.Gemma4ForCausalLM, t.Gemma4TextConfig(
            **small, num_hidden_layers=2, hidden_size_per_layer_input=0, num_kv_shared_layers=0,
            enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16)),
        "glm": (t.GlmForCausalLM, t.GlmConfig(**small, num_hidden_layers=2, pad_token_id=0)),
        "glm4": (t.Glm4ForCausalLM, t.Glm4Config(**small, num_hidden_layers=2, pad_token_id=0)),
        "qwen3_5": (t.Qwen3_5ForCausalLM, t.Qwen3_5TextConfig(**hybrid)),
        "qwen3_next": (t.Qwen3NextForCausalLM, t.Qwen3NextConfig(
            **hybrid, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16)),
        "flex_olmo": (t.FlexOlmoForCausalLM, t.FlexOlmoConfig(
            **small, num_hidden_layers=2, num_experts=4, num_experts_per_tok=2, pad_token_id=0)),
        "minimax_m2": (t.MiniMaxM2ForCausalLM, t.MiniMaxM2Config(
            **small, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2)),
        # Granite 4: Mamba-2 blocks and attention blocks, each with experts and a shared MLP
        "granitemoehybrid": (t.GraniteMoeHybridForCausalLM, t.GraniteMoeHybridConfig(
            **(small | {"intermediate_size": 16}), shared_intermediate_size=32,
            num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
            layer_types=["mamba", "attention"], mamba_n_heads=4, mamba_d_head=16,
            mamba_d_state=8, mamba_n_groups=1)),
        # Nemotron-H: one mixer per block, of each kind
        "nemotron_h": (t.NemotronHForCausalLM, t.NemotronHConfig(
            **(small | {"num_hidden_layers": 4}),
            layers_block_type=["mamba", "moe", "attention", "mlp"], n_routed_experts=4,
            num_experts_per_tok=2, moe_intermediate_size=16,
            moe_shared_expert_intermediate_size=16, mamba_num_heads=4, mamba_head_dim=16,
            ssm_state_size=8, n_groups=1)),
        # Mamba hybrids: Jamba (Mamba or attention; MLP or experts), Bamba (Mamba-2 or
        # attention), Falcon-H1 (both side by side); LFM2 (short convolutions or attention)
        "jamba": (t.JambaForCausalLM, t.JambaConfig(
            **(small | {"num_hidden_layers": 4}), num_experts=4, num_experts_per_tok=2,
            attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
            expert_layer_offset=1, mamba_d_state=8, mamba_expand=2, mamba_dt_rank=4,
            use_mamba_kernels=False, pad_token_id=0)),
        "bamba": (t.BambaForCausalLM, t.BambaConfig(
            **small, num_hidden_layers=2, attn_layer_indices=[1], mamba_n_heads=4,
            mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, pad_token_id=0)),
        "falcon_h1": (t.FalconH1ForCausalLM, t.FalconH1Config(
            **small, num_hidden_layers=2, mamba_n_heads=4, mamba_d_head=16, mamba_d_ssm=64,
            mamba_d_state=8, mamba_n_groups=1, pad_token_id=0)),
        "lfm2": (t.Lfm2ForCausalLM, t.Lfm2Config(
            **small, num_hidden_layers=2, layer_types=["conv", "full_attention"],
            pad_token_id=0)),
        "lfm2_moe": (t.Lfm2MoeForCausalLM, t.Lfm2MoeConfig(
            **small, num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
            num_dense_layers=1, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=16, pad_token_id=0)),
        # DeepSeek-V3's blocks and a lightning indexer per attention
        "deepseek_v32": (t.DeepseekV32ForCausalLM, t.DeepseekV32Config(
            hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, vocab_size=100, n_routed_experts=4,
            num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=8, qk_rope_head_dim=4,
            qk_nope_head_dim=4, v_head_dim=8, n_group=1, topk_group=1, n_shared_experts=1,
            q_lora_rank=16, index_n_heads=2, index_head_dim=8, index_topk=4)),
    }


#: variants of one family, and families whose names another family's table claims first when
#: no config says which (identical names: the first table listed wins)
FAMILY_OF = {"mistral": "llama", "falcon_7b": "falcon", "falcon_rw": "falcon",
             "exaone4": "olmo2", "olmoe": "qwen3_moe", "phimoe": "mixtral", "gemma4_moe": "gemma4",
             "deepseek_v32": "deepseek_v3", "roberta": "bert", "xlm-roberta": "bert",
             "ernie": "bert", "data2vec-text": "bert", "roformer": "bert",
             "lfm2_moe": "lfm2"}
WITHOUT_CONFIG = {"qwen2": "llama", "mistral": "llama", "cohere": "qwen3", "nemotron": "llama",
                  "falcon_h1": "bamba"}
#: fused q/k/v cut by head counts, which only the config gives
NEEDS_CONFIG = {"gpt_neox", "falcon", "falcon_7b", "falcon_rw", "bloom", "qwen3_5", "qwen3_next"}


MOE_LAYERS = {"mixtral": [0, 1], "qwen2_moe": [1], "qwen3_moe": [1], "deepseek_v2": [1],
              "deepseek_v3": [1], "gpt_oss": [0, 1], "llama4": [1], "olmoe": [0, 1],
              "phimoe": [0, 1], "granitemoe": [0, 1], "glm4_moe": [1], "ernie4_5_moe": [1], "gemma4_moe": [0, 1],
              "qwen3_next": [0, 1, 2, 3], "deepseek_v32": [1], "flex_olmo": [0, 1],
              "minimax_m2": [0, 1], "granitemoehybrid": [0, 1], "nemotron_h": [1],
              "jamba": [1, 3], "lfm2_moe": [1, 2]}


def test_every_tensor_of_real_tiny_models_is_assigned_or_known() -> None:
    torch.manual_seed(0)
    for name, (cls, cfg) in _tiny_models().items():
        model = cls(cfg)  # type: ignore[operator]
        state = model.state_dict()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        for conf in (cfg.to_dict(), None):  # type: ignore[attr-defined]
            if conf is None and name in NEEDS_CONFIG:
                with pytest.raises(ArchitectureError, match="no head count"):
                    resolve_layout(infos(shapes), conf)
                continue
            layout = resolve_layout(infos(shapes), conf)
            family = FAMILY_OF.get(name, name)
            if conf is None:
                family = WITHOUT_CONFIG.get(name, family)
            assert layout.family == family, name
            assert layout.num_layers == cfg.num_hidden_layers, name  # type: ignore[attr-defined]
            assert layout.hidden_size == 32, name
            assert layout.vocab_size == 100, name
            assert layout.moe_layers == MOE_LAYERS.get(name, []), name
            known = CompiledTable(FAMILIES[layout.family])
            assert all(known.is_known(n) for n in layout.unassigned), (name, layout.unassigned)
        refs = list(layout.globals.values())
        for layer in layout.layers:
            refs += list(layer.roles.values())
            refs += [r for ex in layer.experts + layer.shared_experts for r in ex.values()]
        for ref in refs:  # every cut applies and role_shape predicts its shape
            out = ref.apply(state[ref.tensor])
            assert tuple(out.shape) == role_shape(ref, shapes[ref.tensor]), (name, ref)


def test_real_fused_cuts_match_the_modules_own_projections() -> None:
    models = _tiny_models()
    x = torch.randn(3, 32)
    with torch.no_grad():
        cls, cfg = models["gpt2"]
        model = cls(cfg)  # type: ignore[operator]
        state = model.state_dict()
        layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}), cfg.to_dict())  # type: ignore[attr-defined]
        roles = layout.layers[0].roles
        q, k, v = model.transformer.h[0].attn.c_attn(x).split(32, dim=-1)
        for role, want in {"q": q, "k": k, "v": v}.items():
            got = torch.nn.functional.linear(x, roles[role].apply(state[roles[role].tensor]),
                                             roles[role + ".bias"].apply(state[roles[role + ".bias"].tensor]))
            assert torch.allclose(got, want, atol=1e-5), role

        cls, cfg = models["phi3"]
        model = cls(cfg)  # type: ignore[operator]
        state = model.state_dict()
        layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}), cfg.to_dict())  # type: ignore[attr-defined]
        roles = layout.layers[0].roles
        qkv = model.model.layers[0].self_attn.qkv_proj(x)
        gate, up = model.model.layers[0].mlp.gate_up_proj(x).chunk(2, dim=-1)
        want = {"q": qkv[:, :32], "k": qkv[:, 32:48], "v": qkv[:, 48:], "gate": gate, "up": up}
        for role, value in want.items():
            got = torch.nn.functional.linear(x, roles[role].apply(state[roles[role].tensor]))
            assert torch.allclose(got, value, atol=1e-5), role


def _split_as_the_module_does(name: str, out: torch.Tensor, heads: int, kv: int,
                              hd: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[tokens, heads * head_dim]`` from a fused projection's output, as each
    family's modeling code splits it (transformers' GPTNeoXAttention, BloomAttention._reshape,
    FalconAttention.forward's three layouts, GPTBigCodeAttention)."""
    n = out.shape[0]
    if name == "gpt_neox":
        q, k, v = out.view(n, heads, 3 * hd).chunk(3, dim=-1)
    elif name in ("bloom", "falcon_rw"):
        q, k, v = out.view(n, heads, 3, hd).unbind(-2)
    elif name == "falcon":
        grouped = out.view(n, kv, -1, hd)
        q, k, v = grouped[..., :-2, :], grouped[..., -2, :], grouped[..., -1, :]
    else:  # falcon_7b, gpt_bigcode: all queries, then one key and one value head
        q, k, v = out.view(n, -1, hd).split([heads, kv, kv], dim=-2)
    return q.reshape(n, -1), k.reshape(n, -1), v.reshape(n, -1)


@pytest.mark.parametrize("name", ["gpt_neox", "bloom", "falcon", "falcon_7b", "falcon_rw",
                                  "gpt_bigcode"])
def test_fused_qkv_cuts_give_the_heads_the_module_computes(name: str) -> None:
    cls, cfg = _classic_models()[name]
    model = cls(cfg)  # type: ignore[operator]
    state = model.state_dict()
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            cfg.to_dict())  # type: ignore[attr-defined]
    heads, kv, hd = layout.num_heads, layout.num_kv_heads, layout.head_dim
    assert (heads, hd) == (4, 8)
    assert kv == {"falcon": 2, "falcon_7b": 1, "gpt_bigcode": 1}.get(name, 4)
    fused = next(m for n, m in model.named_modules()
                 if n.endswith(("query_key_value", "c_attn")))
    x = torch.randn(3, 32)
    with torch.no_grad():
        want = _split_as_the_module_does(name, fused(x), heads, kv, hd)
        roles = layout.layers[0].roles
        for role, value in zip("qkv", want, strict=True):
            bias = roles.get(role + ".bias")
            got = torch.nn.functional.linear(
                x, roles[role].apply(state[roles[role].tensor]),
                None if bias is None else bias.apply(state[bias.tensor]))
            assert torch.allclose(got, value, atol=1e-5), (name, role)


def test_what_the_layout_leaves_unread_is_said() -> None:
    """A model_type without a table read by a table whose names it matches, and tensors that
    no role claims and the table does not expect, are warnings (GLM-4's fused gate_up was
    silently left out when it was read as Llama)."""
    from verifier.architectures.completeness import unread_tensors

    shapes = llama_shapes()
    layout = resolve_layout(infos(shapes), config("some_llama_like"))
    assert (layout.family, layout.detected) == ("llama", True)
    assert "model_type 'some_llama_like' has no table of its own" in unread_tensors(layout)[0]
    shapes["model.layers.0.mlp.gate_up_proj.weight"] = (2 * FF, H)
    layout = resolve_layout(infos(shapes), config("llama"))
    assert not layout.detected
    assert unread_tensors(layout) == [
        "1 tensor has no role in the 'llama' layout and is compared by no probe, e.g. "
        "'model.layers.0.mlp.gate_up_proj.weight'"]
    assert unread_tensors(resolve_layout(infos(llama_shapes()), config("llama"))) == []


def test_older_names_of_pythia_and_falcon_checkpoints() -> None:
    """Pythia on the Hub keeps ``embed_out`` (transformers v5 calls it ``lm_head``); Falcon's
    remote-code configs (``RefinedWeb``) say ``n_head``/``n_head_kv``/``n_layer``."""
    cls, cfg = _classic_models()["gpt_neox"]
    shapes = {k.replace("lm_head", "embed_out"): tuple(v.shape)
              for k, v in cls(cfg).state_dict().items()}  # type: ignore[operator]
    layout = resolve_layout(infos(shapes), cfg.to_dict())  # type: ignore[attr-defined]
    assert layout.globals["lm_head"] == RoleRef("embed_out.weight")

    cls, cfg = _classic_models()["falcon"]
    shapes = {k: tuple(v.shape) for k, v in cls(cfg).state_dict().items()}  # type: ignore[operator]
    remote = {"model_type": "RefinedWeb", "hidden_size": 32, "n_head": 4, "n_head_kv": 2,
              "n_layer": 2, "vocab_size": 100, "parallel_attn": True}
    layout = resolve_layout(infos(shapes), remote)
    assert (layout.family, layout.num_heads, layout.num_kv_heads) == ("falcon", 4, 2)
    assert layout.layers[0].roles["mlp_norm"].tensor.endswith("ln_mlp.weight")


def test_gated_attention_splits_query_from_gate_and_linear_attention_blocks_are_by_design(
) -> None:
    """Qwen3.5's ``q_proj`` holds per head the query then its output gate; its linear-attention
    blocks hold no attention roles, which is no incomplete checkpoint; its norms are gains
    ``1 + w`` (Gemma 4's, unlike Gemma 3's, are the weight itself)."""
    from verifier.architectures.completeness import missing_roles

    cls, cfg = _recent_models()["qwen3_5"]
    model = cls(cfg)  # type: ignore[operator]
    state = model.state_dict()
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            cfg.to_dict())  # type: ignore[attr-defined]
    attention = model.model.layers[3].self_attn
    x = torch.randn(3, 32)
    with torch.no_grad():
        query, gate = attention.q_proj(x).view(3, 4, 16).chunk(2, dim=-1)
        roles = layout.layers[3].roles
        for role, want in (("q", query), ("attn_gate", gate)):
            got = torch.nn.functional.linear(x, roles[role].apply(state[roles[role].tensor]))
            assert torch.allclose(got, want.reshape(3, -1), atol=1e-5), role
    assert not {"q", "k", "v", "o"} & set(layout.layers[0].roles)
    assert missing_roles(layout) == []
    assert layout.layers[0].roles["attn_norm"].offset == 1.0

    cls, cfg = _recent_models()["gemma4"]
    state = cls(cfg).state_dict()  # type: ignore[operator]
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            cfg.to_dict())  # type: ignore[attr-defined]
    assert layout.family == "gemma4"
    assert all(ref.offset == 0.0 for layer in layout.layers for ref in layer.roles.values())


def test_blocks_that_hold_one_mixer_each_are_complete_by_design() -> None:
    """Nemotron-H's blocks hold Mamba-2, attention, an MLP or experts, each behind the block's
    one norm: no block is "incomplete", and each kind's roles are where they belong (the Mamba
    block's z, x and ``out_proj`` as gate, up and down; the MLP is not gated)."""
    from verifier.architectures.completeness import missing_roles

    cls, cfg = _recent_models()["nemotron_h"]
    state = cls(cfg).state_dict()  # type: ignore[operator]
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            cfg.to_dict())  # type: ignore[attr-defined]
    assert missing_roles(layout) == []
    kinds = [({"q", "k", "v", "o"} <= set(layer.roles), "gate" in layer.roles,
              "up" in layer.roles, layer.is_moe) for layer in layout.layers]
    assert kinds == [(False, True, True, False), (False, False, False, True),
                     (True, False, False, False), (False, False, True, False)]
    assert all(layer.roles["mlp_norm"] == layer.roles["attn_norm"] for layer in layout.layers)


def test_parallel_blocks_with_one_norm_give_it_to_the_mlp_too() -> None:
    """GPT-J, Phi-2, Falcon-7B and Cohere feed one norm's output to attention and MLP alike,
    so its gain is the MLP's as well; blocks with two norms keep their own."""
    for name, (cls, cfg) in _classic_models().items():
        state = cls(cfg).state_dict()  # type: ignore[operator]
        layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                                cfg.to_dict())  # type: ignore[attr-defined]
        roles = layout.layers[1].roles
        if name in ("olmo2", "exaone4", "flex_olmo"):  # norms on the sublayers' outputs only
            assert not {"attn_norm", "mlp_norm"} & set(roles)
            continue
        if name == "nemotron_h":  # one norm before each block's one mixer
            assert roles["mlp_norm"] == roles["attn_norm"]
            continue
        shared = roles["mlp_norm"] == roles["attn_norm"]
        assert shared == (name in ("gptj", "phi", "falcon_7b", "cohere")), name


def test_embeddings_projected_into_the_blocks_are_refused_with_the_reason() -> None:
    cls, cfg = _classic_models()["opt"]
    state = cls(cfg).state_dict()  # type: ignore[operator]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    shapes |= {"model.decoder.embed_tokens.weight": (100, 16),
               "model.decoder.project_in.weight": (32, 16),
               "model.decoder.project_out.weight": (16, 32)}
    with pytest.raises(ArchitectureError, match="word_embed_proj_dim"):
        resolve_layout(infos(shapes), cfg.to_dict() | {"word_embed_proj_dim": 16})  # type: ignore[attr-defined]


def test_electra_embeddings_narrower_than_its_blocks_are_refused_with_the_reason(
        tmp_path: Path) -> None:
    """ELECTRA-small's embeddings (``embedding_size`` 128) reach its 256-wide blocks through
    ``embeddings_project``: refused, as OPT-350m's are, not read as a 128-wide model."""
    from verifier.model import open_model

    t = pytest.importorskip("transformers")
    config = t.ElectraConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, vocab_size=100)
    t.ElectraForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(ArchitectureError, match=r"16 wide .* blocks' 32 \(embedding_size"):
        open_model(tmp_path)


@pytest.mark.parametrize(("family", "conf", "post"), [
    ("opt", {"do_layer_norm_before": False}, True), ("opt", {}, False),
    ("bert", {}, True), ("llama", {}, False)])
def test_post_norm_comes_from_the_table_or_the_config(family: str, conf: dict, post: bool) -> None:
    cls, cfg = (_tiny_models() | _classic_models())[family]
    state = cls(cfg).state_dict()  # type: ignore[operator]
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            cfg.to_dict() | conf)  # type: ignore[attr-defined]
    assert layout.post_norm is post


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "phimoe", "olmoe", "granitemoe",
                                  "glm4_moe", "ernie4_5_moe", "flex_olmo", "minimax_m2",
                                  "qwen3_next", "gemma4_moe", "granitemoehybrid",
                                  "nemotron_h", "jamba", "lfm2_moe"])
def test_saved_per_expert_files_match_the_in_memory_stacks(tmp_path: Path, name: str) -> None:
    """transformers v5 saves experts one by one (Granite-MoE and Gemma 4: as 3-D stacks, the
    former under other names) and stacks them in memory: both cuts agree."""
    from safetensors.torch import load_file

    cls, cfg = _tiny_models()[name]
    model = cls(cfg)  # type: ignore[operator]
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    memory = model.state_dict()
    conf = json.loads((tmp_path / "config.json").read_text())
    on_disk = resolve_layout(infos({k: tuple(v.shape) for k, v in saved.items()}), conf)
    stacked = resolve_layout(infos({k: tuple(v.shape) for k, v in memory.items()}), conf)
    last = on_disk.moe_layers[-1]
    assert last == stacked.moe_layers[-1]
    assert all(r.expert is not None for r in stacked.layers[last].experts[0].values())
    for a, b in zip(on_disk.layers, stacked.layers, strict=True):
        assert len(a.experts) == len(b.experts)
        for ea, eb in zip(a.experts, b.experts, strict=True):
            assert set(ea) == set(eb)
            for role in ea:
                assert torch.equal(ea[role].apply(saved[ea[role].tensor]),
                                   eb[role].apply(memory[eb[role].tensor])), role


def test_a_gemma4_drafter_is_read_whole_its_projections_to_the_backbone_known() -> None:
    """Gemma 4's drafter (``gemma4_unified_assistant``, built on the meta device at its default
    size) is Gemma 4's blocks plus projections from and to its backbone's hidden space, which
    no probe compares: no tensor is left unexplained."""
    from verifier.architectures.completeness import unread_tensors

    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model("gemma4_unified_assistant")
    with torch.device("meta"):
        module = transformers.AutoModelForCausalLM.from_config(config)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert {"pre_projection.weight", "post_projection.weight"} <= set(shapes)
    layout = resolve_layout(infos(shapes), config.to_dict())
    assert layout.family == "gemma4"
    assert unread_tensors(layout) == []
