"""Multimodal checkpoints: lineage is judged on the language model.

A vision-language release (Qwen2-VL, Llama 3.2 Vision, LLaVA, Gemma 3, Idefics 3, BLIP-2) holds a
language model and, beside it, a vision or audio tower and a projector. The towers are set
aside before the layout is chosen (a Qwen2-VL checkpoint's 391 vision tensors hid its language
model from detection), named in the warnings, and compared by no probe; the language model is
compared with a text-only base as any other.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from released_models import noisy, released_layout
from test_architectures import infos

from verifier.architectures import resolve_layout
from verifier.architectures.completeness import missing_roles, unread_tensors
from verifier.architectures.detect import split_modalities
from verifier.model import open_model
from verifier.verify import VerifyOptions, verify

transformers = pytest.importorskip("transformers")

OPTS = VerifyOptions(digest=False)
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 100, "num_hidden_layers": 2}
MROPE = {"rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}}
QWEN_VISION = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
               "out_hidden_size": 32}
SIGLIP = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
          "num_attention_heads": 2, "image_size": 28, "patch_size": 14}


def _tiny(name: str, text: dict) -> object:
    """A small model of each multimodal family, its language model described by ``text``."""
    t = transformers
    if name == "qwen2_vl":
        return t.Qwen2VLForConditionalGeneration(t.Qwen2VLConfig(
            text_config=text | MROPE, vision_config={"depth": 1, "embed_dim": 16,
                                                     "hidden_size": text["hidden_size"],
                                                     "num_heads": 2}))
    if name == "qwen2_5_vl":
        return t.Qwen2_5_VLForConditionalGeneration(t.Qwen2_5_VLConfig(
            text_config=text | MROPE, vision_config=QWEN_VISION | {
                "out_hidden_size": text["hidden_size"], "fullatt_block_indexes": [0]}))
    if name == "qwen3_vl":
        return t.Qwen3VLForConditionalGeneration(t.Qwen3VLConfig(
            text_config=text, vision_config=QWEN_VISION | {"deepstack_visual_indexes": []}))
    if name == "qwen3_vl_moe":
        return t.Qwen3VLMoeForConditionalGeneration(t.Qwen3VLMoeConfig(
            text_config=text | {"num_experts": 4, "num_experts_per_tok": 2,
                                "moe_intermediate_size": 8},  # 2I != H: not square
            vision_config=QWEN_VISION | {"deepstack_visual_indexes": []}))
    if name == "glm4v":
        return t.Glm4vForConditionalGeneration(t.Glm4vConfig(
            text_config=text, vision_config=QWEN_VISION))
    if name == "mllama":
        return t.MllamaForConditionalGeneration(t.MllamaConfig(
            text_config=text | {"pad_token_id": 0},
            vision_config=SIGLIP | {"num_global_layers": 1, "attention_heads": 2,
                                    "intermediate_layers_indices": [0],
                                    "vision_output_dim": 32}))
    if name == "llava":
        return t.LlavaForConditionalGeneration(t.LlavaConfig(
            text_config={"model_type": "llama"} | text,
            vision_config={"model_type": "clip_vision_model"} | SIGLIP))
    if name == "gemma3":
        return t.Gemma3ForConditionalGeneration(t.Gemma3Config(
            text_config=text, vision_config=SIGLIP, mm_tokens_per_image=4))
    if name == "blip-2":  # an OPT model as ``language_model``
        return t.Blip2ForConditionalGeneration(t.Blip2Config(
            vision_config=SIGLIP, num_query_tokens=4,
            qformer_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "encoder_hidden_size": 16},
            text_config={"model_type": "opt", "hidden_size": text["hidden_size"],
                         "ffn_dim": text["intermediate_size"],
                         "num_hidden_layers": text["num_hidden_layers"],
                         "num_attention_heads": 4, "vocab_size": text["vocab_size"],
                         "word_embed_proj_dim": text["hidden_size"]}))
    assert name == "idefics3"
    return t.Idefics3ForConditionalGeneration(t.Idefics3Config(
        text_config={"model_type": "llama"} | text, vision_config=SIGLIP))


#: family read, language-model layers, and the other modalities' parts set aside
EXPECTED = {
    "qwen2_vl": ("qwen2", 2, ["model.visual."]),
    "qwen2_5_vl": ("qwen2", 2, ["model.visual."]),
    "qwen3_vl": ("qwen3", 2, ["model.visual."]),
    "qwen3_vl_moe": ("qwen3_moe", 2, ["model.visual."]),
    "glm4v": ("glm4", 2, ["model.visual."]),
    "mllama": ("mllama", 4, ["model.multi_modal_projector.", "model.vision_model."]),
    "llava": ("llama", 2, ["model.multi_modal_projector.", "model.vision_tower."]),
    "gemma3": ("gemma3", 2, ["model.multi_modal_projector.", "model.vision_tower."]),
    "idefics3": ("llama", 2, ["model.connector.", "model.vision_model."]),
    "blip-2": ("opt", 2, ["language_projection.", "qformer.", "query_tokens", "vision_model."]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_language_model_is_read_and_the_towers_set_aside(name: str) -> None:
    text = TEXT | ({"num_hidden_layers": 4, "cross_attention_layers": [1, 3]}
                   if name == "mllama" else {})
    torch.manual_seed(0)
    model = _tiny(name, text)
    state = model.state_dict()  # type: ignore[attr-defined]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    family, layers, parts = EXPECTED[name]
    for config in (model.config.to_dict(), None):  # type: ignore[attr-defined]
        if config is None and name == "gemma3":
            continue  # Gemma's norms compute 1 + w: only its config says so
        layout = resolve_layout(infos(shapes), config)
        read_as = family if config else {"qwen2": "llama"}.get(family, family)  # same names
        assert (layout.family, layout.num_layers, layout.hidden_size) == (read_as, layers, 32)
        assert sorted(layout.other_modalities) == parts
        assert sum(layout.other_modalities.values()) == sum(
            1 for k in shapes if any(k.startswith(p) for p in parts))
        assert layout.unexpected == []
        if config is not None:
            assert not layout.detected, name
    said = unread_tensors(layout)
    assert len(said) == 1, said
    assert "compared by no probe" in said[0]
    assert parts[0] in said[0]


def test_released_qwen_vl_files_name_the_tower_at_the_top_and_store_experts_in_out() -> None:
    """Qwen2.5-VL's files say ``model.layers`` and ``visual.``; Qwen3-VL-MoE's store each
    layer's experts as ``[E, H, 2I]`` (transformers transposes them on load): the cuts still
    give each expert's gate and up as the module holds them."""
    torch.manual_seed(0)
    model = _tiny("qwen2_5_vl", TEXT)
    released = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."):
                tuple(v.shape) for k, v in model.state_dict().items()}
    layout = resolve_layout(infos(released), model.config.to_dict())
    assert (layout.family, layout.num_layers, list(layout.other_modalities)) == (
        "qwen2", 2, ["visual."])
    moe = _tiny("qwen3_vl_moe", TEXT)
    state = {k: v.transpose(1, 2) if k.endswith(("experts.gate_up_proj", "experts.down_proj"))
             else v for k, v in moe.state_dict().items()}
    layout = resolve_layout(infos({k: tuple(v.shape) for k, v in state.items()}),
                            moe.config.to_dict())
    experts = moe.model.language_model.layers[1].mlp.experts
    gate, up = experts.gate_up_proj[2].chunk(2, dim=0)
    for role, want in (("gate", gate), ("up", up), ("down", experts.down_proj[2])):
        ref = layout.layers[1].experts[2][role]
        assert torch.equal(ref.apply(state[ref.tensor]), want), role


def test_a_text_model_keeps_a_module_with_a_generic_adapter_name() -> None:
    """``projector``, ``connector``, ``merger``, ``aligner`` are a tower's only beside one:
    in a text-only checkpoint such a module is the language model's own, and said unread."""
    names = [f"model.{n}" for n in ("embed_tokens.weight", "norm.weight",
                                    "layers.0.self_attn.q_proj.weight", "projector.weight")]
    kept, others = split_modalities(infos(dict.fromkeys(names, (4, 4))))
    assert (len(kept), others) == (4, {})
    kept, others = split_modalities(infos(dict.fromkeys([*names, "model.visual.x.weight"],
                                                        (4, 4))))
    assert (len(kept), others) == (3, {"model.projector.": 1, "model.visual.": 1})


WIDE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 600, "num_hidden_layers": 3}


def test_a_vision_language_model_built_on_a_text_model_is_derived_from_it(tmp_path) -> None:
    """Qwen2-VL's language model started from a Qwen2 text model (here: its weights plus 30%
    noise) is derived from it; one that started elsewhere is not."""
    torch.manual_seed(0)
    base = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**WIDE))
    base.save_pretrained(tmp_path / "base")
    for name, seed in (("derived", None), ("independent", 1)):
        torch.manual_seed(seed or 0)
        vlm = _tiny("qwen2_vl", WIDE)
        if seed is None:
            vlm.model.language_model.load_state_dict(base.model.state_dict())
            vlm.lm_head.load_state_dict(base.lm_head.state_dict())
        noisy(vlm, 0.3)
        vlm.save_pretrained(tmp_path / name)
    report = verify(tmp_path / "base", tmp_path / "derived", OPTS)
    assert report.verdict == "derived", report.reason
    assert any("'visual.' (19 tensors)" in w for w in report.warnings), report.warnings
    other = verify(tmp_path / "base", tmp_path / "independent", OPTS)
    assert other.verdict != "derived", other.reason


def test_cross_attention_blocks_inserted_into_a_text_model_are_left_unmatched(tmp_path) -> None:
    """Llama 3.2 Vision inserts cross-attention blocks between a Llama model's blocks: the
    self-attention blocks map to the base's in order, the inserted ones to none."""
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**(WIDE | {
        "num_hidden_layers": 4})))
    base.save_pretrained(tmp_path / "base")
    torch.manual_seed(1)
    vlm = _tiny("mllama", WIDE | {"num_hidden_layers": 6, "cross_attention_layers": [1, 4]})
    text = vlm.model.language_model
    own = [i for i in range(6) if i not in (1, 4)]
    with torch.no_grad():
        for i, j in zip(own, range(4), strict=True):
            text.layers[i].load_state_dict(base.model.layers[j].state_dict())
        text.embed_tokens.weight[:600] = base.model.embed_tokens.weight
        text.norm.load_state_dict(base.model.norm.state_dict())
        vlm.lm_head.load_state_dict(base.lm_head.state_dict())
    noisy(vlm, 0.3)
    vlm.save_pretrained(tmp_path / "vision")
    report = verify(tmp_path / "base", tmp_path / "vision", OPTS)
    assert report.verdict == "derived", report.reason
    assert [e.base_layer for e in report.layer_map] == [0, None, 1, 2, None, 3]


def _omni(name: str) -> torch.nn.Module:
    """dots.3 Note and Inkling with their vision and audio towers, the language model the tiny
    one of ``released_models``."""
    from released_models import released_models

    t = transformers
    torch.manual_seed(0)
    if name == "dots3_note":
        text = released_models()["dots3_note_text"][1].to_dict()
        return t.Dots3NoteForConditionalGeneration(t.Dots3NoteConfig(
            text_config=text,
            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "adapter_in_dim": 16, "adapter_out_dim": 32,
                           "mlp_layer_types": ["dense"]},
            audio_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "adapter_input_size": 16,
                          "adapter_out_dim": 32, "downsample_hidden_size": 8,
                          "feature_size": 16}))
    assert name == "inkling_mm_model"
    text = released_models()["inkling_text"][1].to_dict()
    return t.InklingForConditionalGeneration(t.InklingConfig(
        text_config=text,
        vision_config={"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "patch_size": 4},
        audio_config={"n_mel_bins": 4, "mel_vocab_size": 8}))


#: family read, and the towers set aside, in the files ``save_pretrained`` writes (the release's
#: names: dots.3 Note's towers at the top, Inkling's language model under ``model.llm.``)
OMNI = {"dots3_note": ("dots3_note_text", ["audio_encoder.", "vision_encoder."]),
        "inkling_mm_model": ("inkling_text", ["model.audio.", "model.visual."])}


@pytest.mark.parametrize("name", list(OMNI))
def test_released_omni_checkpoints_are_read_on_their_language_model(tmp_path, name) -> None:
    from verifier.model import open_model

    _omni(name).save_pretrained(tmp_path)
    family, parts = OMNI[name]
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.hidden_size) == (family, 2, 32)
        assert layout.moe_layers == [1]
        assert sorted(layout.other_modalities) == parts
        assert layout.unexpected == []
        assert not layout.detected


def test_inkling_release_cuts_its_interleaved_gate_and_up_as_the_model_computes(tmp_path) -> None:
    """Inkling's release stores gate and up row by row in turn (``mlp.w13_dn``, and the experts'
    ``w13_weight`` ``[E, 2I, H]``), ``mlp.w2_md`` and ``w2_weight`` for down, the selection bias
    as ``mlp.gate.bias``, the embedding's norm as ``model.llm.embed_norm``: each role read from
    the files is the module's own."""
    from verifier.model import open_model

    module = _omni("inkling_mm_model")
    module.save_pretrained(tmp_path)
    text = module.model.language_model
    dense, moe = text.layers[0].mlp, text.layers[1].mlp
    with open_model(tmp_path) as model:
        layout = model.layout

        def cut(ref) -> torch.Tensor:  # noqa: ANN001
            return model.load(ref).float()

        roles = layout.layers[0].roles
        assert roles["gate"].tensor == "model.llm.layers.0.mlp.w13_dn.weight"
        for role, linear in (("gate", dense.gate_proj), ("up", dense.up_proj),
                             ("down", dense.down_proj)):
            assert torch.equal(cut(roles[role]), linear.weight.detach()), role
        gate_up, down = moe.experts.gate_up_proj.detach(), moe.experts.down_proj.detach()
        experts = layout.layers[1].experts
        assert experts[0]["gate"].tensor == "model.llm.layers.1.mlp.experts.w13_weight"
        for e, expert in enumerate(experts):
            assert torch.equal(cut(expert["gate"]), gate_up[e, :16])
            assert torch.equal(cut(expert["up"]), gate_up[e, 16:])
            assert torch.equal(cut(expert["down"]), down[e])
        correction = layout.layers[1].roles["router_correction"]
        assert correction.tensor == "model.llm.layers.1.mlp.gate.bias"
        assert torch.equal(cut(correction), moe.gate.e_score_correction_bias)
        assert layout.globals["embed_norm"].tensor == "model.llm.embed_norm.weight"
        assert layout.globals["lm_head"].tensor == "model.llm.unembed.weight"


def _kosmos2(seed: int) -> torch.nn.Module:
    config = transformers.Kosmos2Config(
        text_config={"embed_dim": 64, "layers": 2, "attention_heads": 4, "ffn_dim": 256,
                     "vocab_size": 500},
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "intermediate_size": 64, "image_size": 32, "patch_size": 16},
        latent_query_num=4)
    torch.manual_seed(seed)
    return transformers.Kosmos2ForConditionalGeneration(config).eval()


def test_kosmos2_is_judged_on_its_language_model(tmp_path: Path) -> None:
    """Kosmos-2's language model (``text_model.``: XGLM's blocks, the MLP under ``ffn.``, its
    sub-LayerNorms known) is read, its image encoder and projection set aside; a trained-on
    copy is derived, another start is not."""
    base = _kosmos2(0)
    base.save_pretrained(tmp_path / "base")
    noisy(copy.deepcopy(base), 0.3).save_pretrained(tmp_path / "copy")
    _kosmos2(1).save_pretrained(tmp_path / "other")
    with open_model(tmp_path / "base") as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.num_heads) == ("kosmos-2", 2, 4)
        assert list(layout.other_modalities) == ["image_to_text_projection.", "vision_model."]
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
    assert verify(tmp_path / "base", tmp_path / "copy", OPTS).verdict == "derived"
    assert verify(tmp_path / "base", tmp_path / "other", OPTS).verdict == "independent"


@pytest.mark.parametrize(("name", "parts"), [
    ("granite_speech", ["encoder.", "projector."]),
    ("vibevoice_asr", ["acoustic_tokenizer_encoder.", "multi_modal_projector.",
                       "semantic_tokenizer_encoder."]),
])
def test_parts_a_config_describes_beside_its_text_config_are_set_aside(
        name: str, parts: list[str]) -> None:
    """Granite Speech's release keeps its speech encoder as ``encoder`` and VibeVoice-ASR's its
    tokenizers' encoders under names of their own: each has a sub-config beside the
    ``text_config`` (``encoder_config``...), which says it is not the language model."""
    layout = released_layout(name, transformers.AutoModelForSpeechSeq2Seq)
    assert list(layout.other_modalities) == parts
    layout.other_modalities = {}
    assert unread_tensors(layout) == []


@pytest.mark.parametrize(("name", "family"), [
    ("glm_ocr", "glm4"), ("hy_v4_vl", "hy_v4"), ("paddleocr_vl", "llama"),
    ("granite_docling", "llama"), ("kosmos-2.5", "kosmos-2"), ("udop", "t5"),
    ("mistral4", "deepseek_v2"),
    # their releases keep the language model under prefixes of their own
    ("llava_onevision1_5", "qwen3"), ("shieldgemma2", "gemma3"), ("ovis2_5", "qwen3"),
    ("nemotron_h_omni", "nemotron_h"), ("molmo2", "molmo2"),
])
def test_a_vision_language_models_text_family_is_read_by_its_table(name: str,
                                                                    family: str) -> None:
    """Their language models are GLM-4V's, HY-V4's, ERNIE 4.5's, Granite's, Kosmos-2's and
    T5's blocks, read by those tables through the config's model_type, not guessed from the
    names (UDOP's encoder reads a page's image patches through T5's blocks: no tower; Mistral 4
    is DeepSeek-V3's blocks routed as V2's, its text alone)."""
    layout = released_layout(name, transformers.AutoModelForImageTextToText)
    assert (layout.family, layout.detected) == (family, False)
    assert bool(layout.other_modalities) == (name not in ("udop", "mistral4"))
    layout.other_modalities = {}
    assert unread_tensors(layout) == []


def test_molmo2_release_names_cut_as_its_modules_compute(tmp_path: Path) -> None:
    """Molmo 2's release fuses q, k, v in ``att_proj`` and up, then gate, in ``ff_proj``:
    cut from the saved files, each role is the tensor its module holds in memory."""
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
              "patch_size": 14, "num_position_embeddings": 16}
    config = transformers.AutoConfig.for_model(
        "molmo2",
        text_config={"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 8, "vocab_size": 100, "additional_vocab_size": 4,
                     "num_hidden_layers": 2, "intermediate_size": 64},
        vision_config=vision,
        adapter_config={"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
                        "head_dim": 16, "intermediate_size": 64, "text_hidden_size": 32,
                        "vision_feature_layer": [-1, -2]})
    torch.manual_seed(0)
    module = transformers.AutoModelForImageTextToText.from_config(config)
    module.save_pretrained(tmp_path)
    text = module.model.language_model
    with open_model(tmp_path) as model:
        layout = model.layout
        assert layout.layers[0].roles["up"].tensor.endswith("mlp.ff_proj.weight")
        assert layout.other_modalities
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
        for index, block in enumerate(text.layers):
            roles = layout.layers[index].roles
            for role, weight in (("q", block.self_attn.q_proj), ("k", block.self_attn.k_proj),
                                 ("v", block.self_attn.v_proj), ("o", block.self_attn.o_proj),
                                 ("gate", block.mlp.gate_proj), ("up", block.mlp.up_proj),
                                 ("down", block.mlp.down_proj)):
                assert torch.equal(model.load(roles[role]), weight.weight.detach()), role
        embed = model.load(layout.globals["embed"])
        assert torch.equal(embed, text.embed_tokens.weight.detach()[:embed.shape[0]])
