"""Encoder-decoders (BART and the families built from it, Whisper, T5): the encoder's blocks,
then the decoder's, read as one sequence from the files transformers saves; their shared
hidden space aligned once for both stacks."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from released_models import noisy, released_layout
from safetensors.torch import load_file, save_file

from verifier.architectures.completeness import missing_roles, unread_tensors
from verifier.architectures.layout import EMBED, LM_HEAD, MLP_NORM, UP, Q
from verifier.errors import ArchitectureError
from verifier.model import open_model
from verifier.render import make_console, render_report
from verifier.verify import VerifyOptions, verify

transformers = pytest.importorskip("transformers")

OPTS = VerifyOptions(digest=False)
ENCODER, DECODER = 2, 3
#: every size key any of these configs knows; each takes those it has
SMALL: dict[str, Any] = {
    "d_model": 32, "encoder_layers": ENCODER, "decoder_layers": DECODER,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64, "num_layers": ENCODER, "num_decoder_layers": DECODER,
    "num_heads": 4, "d_kv": 8, "d_ff": 64, "vocab_size": 100, "max_position_embeddings": 64,
    "pad_token_id": 1, "decoder_start_token_id": 2,
    "num_experts": 4, "encoder_sparse_step": 2, "decoder_sparse_step": 2, "expert_capacity": 8}

#: model_type (":" the class that saves it, where not the seq2seq one) -> family read
FAMILY = {
    "bart": "bart", "bart:causal": "bart", "led": "bart", "marian": "bart", "plbart": "bart", "mvp": "bart",
    "blenderbot-small": "bart", "fsmt": "bart", "trocr:causal": "bart",
    "mbart": "mbart", "pegasus": "mbart", "blenderbot": "mbart", "m2m_100": "mbart",
    "whisper:speech": "mbart", "whisper:causal": "mbart", "speech_to_text:speech": "mbart",
    "bigbird_pegasus": "mbart", "pegasus_x": "mbart",
    "t5": "t5", "mt5": "t5", "umt5": "t5", "longt5": "t5", "switch_transformers": "t5",
    "t5:encoder": "t5", "umt5:encoder": "t5",
    "nllb-moe": "nllb-moe",
}


def _build(name: str, seed: int = 0, **sizes: Any) -> torch.nn.Module:
    model_type, _, kind = name.partition(":")
    config = transformers.AutoConfig.for_model(model_type)
    for key, value in (SMALL | sizes).items():
        if hasattr(config, key):
            setattr(config, key, value)
    if model_type == "longt5":
        config.encoder_attention_type = "transient-global"
    cls = {"causal": transformers.AutoModelForCausalLM,
           "speech": transformers.AutoModelForSpeechSeq2Seq,
           "encoder": transformers.AutoModelForTextEncoding}.get(
        kind, transformers.AutoModelForSeq2SeqLM)
    torch.manual_seed(seed)
    return cls.from_config(config).eval()


def _saved(name: str, folder: Path, seed: int = 0, **sizes: Any) -> torch.nn.Module:
    model = _build(name, seed, **sizes)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("name", list(FAMILY))
def test_every_tensor_is_read_and_the_decoders_blocks_follow_the_encoders(
        tmp_path: Path, name: str) -> None:
    """No tensor unread, no role missing; a decoder saved alone (``is_encoder_decoder:
    false``, or TrOCR's, which has no encoder) is its blocks only, as is an encoder saved
    alone (T5's as the text encoder of image generators)."""
    _saved(name, tmp_path)
    alone = name.endswith((":causal", ":encoder"))
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.hidden_size) == (FAMILY[name], 32)
        assert layout.num_layers == {"causal": DECODER, "encoder": ENCODER}.get(
            name.partition(":")[2], ENCODER + DECODER)
        assert (layout.num_heads, layout.head_dim) == (4, 8)
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
        assert layout.stacks == ({} if alone else {"encoder": ENCODER, "decoder": DECODER})
        # every second block of each stack sparse (the encoder's 1, the decoder's 1)
        sparse = [1, ENCODER + 1] if name in ("switch_transformers", "nllb-moe") else []
        assert layout.moe_layers == sparse


def _stacks(model: torch.nn.Module) -> list[Any]:
    """The module's blocks in the order the layout reads them: the encoder's, the decoder's."""
    if hasattr(model, "encoder"):  # T5
        return list(model.encoder.block) + list(model.decoder.block)
    inner = model.model
    return list(inner.encoder.layers) + list(inner.decoder.layers)


@pytest.mark.parametrize("name", ["bart", "mbart", "whisper:speech", "t5", "mt5"])
def test_each_block_reads_its_own_modules_weights(tmp_path: Path, name: str) -> None:
    """Layer i of the layout is the i-th block counting the encoder's first: its query, MLP
    input rows and MLP norm are that block's. In a T5 decoder block the MLP norm is
    ``layer.2``'s; ``layer.1.layer_norm`` there is the cross-attention's."""
    module = _saved(name, tmp_path)
    blocks = _stacks(module)
    with open_model(tmp_path) as model:
        assert model.layout.num_layers == len(blocks)
        for index, block in enumerate(blocks):
            roles = model.layout.layers[index].roles
            if hasattr(block, "layer"):  # T5: self-attention, [cross-attention,] MLP
                mlp = block.layer[-1]
                gated = hasattr(mlp.DenseReluDense, "wi_0")
                up = mlp.DenseReluDense.wi_1 if gated else mlp.DenseReluDense.wi
                expected = {Q: block.layer[0].SelfAttention.q.weight, UP: up.weight,
                            MLP_NORM: mlp.layer_norm.weight}
                assert ("gate" in roles) == gated
            else:
                expected = {Q: block.self_attn.q_proj.weight, UP: block.fc1.weight,
                            MLP_NORM: block.final_layer_norm.weight}
            for role, weight in expected.items():
                assert torch.equal(model.load(roles[role]).float(), weight.detach()), (index, role)


def test_an_embedding_tied_under_each_name_is_read_once(tmp_path: Path) -> None:
    """Older BART saves write the one tied embedding as ``model.shared``, both stacks'
    ``embed_tokens`` and ``lm_head``: ``shared`` is the embedding, the copies under the
    stacks' names are set aside without a warning."""
    saved, tied = tmp_path / "saved", tmp_path / "tied"
    module = _saved("bart", saved)
    state = {k: v.clone().contiguous() for k, v in module.state_dict().items()}
    names = {"model.shared.weight", "model.encoder.embed_tokens.weight",
             "model.decoder.embed_tokens.weight", "lm_head.weight"}
    assert names <= set(state)
    tied.mkdir()
    save_file(state, str(tied / "model.safetensors"))
    (tied / "config.json").write_text((saved / "config.json").read_text())
    with open_model(tied) as model:
        layout = model.layout
        assert layout.globals[EMBED].tensor == "model.shared.weight"
        assert layout.globals[LM_HEAD].tensor == "lm_head.weight"
        assert unread_tensors(layout) == []
        assert {"model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight"} <= set(layout.unassigned)


def _without(folder: Path, out: Path, prefix: str | None,
             config: dict[str, Any] | None = None) -> None:
    """``folder``'s model in ``out`` without the tensors under ``prefix``, its config updated."""
    out.mkdir()
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if prefix is None or not k.startswith(prefix)},
              str(out / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text()) | (config or {})
    (out / "config.json").write_text(json.dumps(cfg))


def test_an_encoder_decoder_without_its_encoder_blocks_is_refused(tmp_path: Path) -> None:
    """Files that lack a whole stack the config counts are a missing shard, not a decoder
    saved alone, unless the config says the model is not an encoder-decoder."""
    _saved("bart", tmp_path / "full")
    _without(tmp_path / "full", tmp_path / "cut", "model.encoder.layers.")
    with pytest.raises(ArchitectureError, match=r"encoder\.layers.*missing shard"):
        open_model(tmp_path / "cut")
    _without(tmp_path / "full", tmp_path / "alone", "model.encoder.layers.",
             {"is_encoder_decoder": False})
    with open_model(tmp_path / "alone") as model:
        assert model.layout.num_layers == DECODER


def test_a_stack_deeper_than_its_config_says_is_refused(tmp_path: Path) -> None:
    _saved("t5", tmp_path / "full")
    _without(tmp_path / "full", tmp_path / "lying", None, {"num_decoder_layers": DECODER - 1})
    with pytest.raises(ArchitectureError, match=r"decoder\.block.*config counts 2"):
        open_model(tmp_path / "lying")


#: module names (their last part) whose weights read the hidden state (columns) or write it
#: (rows and bias); every other parameter is an embedding (columns) or a norm
_READS = {"q_proj", "k_proj", "v_proj", "fc1", "q", "k", "v", "wi", "wi_0", "wi_1", "lm_head"}
_WRITES = {"out_proj", "fc2", "o", "wo"}


def _permute_hidden(model: torch.nn.Module, perm: torch.Tensor) -> None:
    """Reorder the hidden coordinates of both stacks (every tensor that reads or writes the
    residual stream, cross-attention included): the model computes the same function."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
            if "relative_attention_bias" in name:
                continue  # [buckets, heads]: no hidden axis
            if module in _READS:
                p.copy_(p[:, perm] if p.dim() == 2 else p)
            elif module in _WRITES or "norm" in module:
                p.copy_(p[perm])
            elif module in ("shared", "embed_tokens", "embed_positions"):
                p.copy_(p[:, perm])
            else:
                raise AssertionError(f"no rule for {name}")


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(3, 19).view(2, 8)
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=ids[:, :5]).logits


@pytest.mark.parametrize("name", ["bart", "t5"])
def test_a_noisy_copy_with_its_hidden_space_permuted_is_derived_and_another_start_is_not(
        tmp_path: Path, name: str) -> None:
    """One permutation of the shared hidden space, recovered once, lines up both stacks: each
    block maps to its own, encoder and decoder alike."""
    sizes = {"d_model": 64, "d_kv": 16, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256,
             "d_ff": 256, "vocab_size": 500}
    base = _saved(name, tmp_path / "base", **sizes)
    copy_ = copy.deepcopy(base)
    _permute_hidden(copy_, torch.randperm(64, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(_logits(copy_), _logits(base), rtol=1e-4, atol=1e-4)
    noisy(copy_, 0.3).save_pretrained(tmp_path / "copy")
    _saved(name, tmp_path / "other", seed=1, **sizes)
    derived = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert derived.verdict == "derived"
    assert [(e.candidate_layer, e.base_layer) for e in derived.layer_map] == [
        (i, i) for i in range(ENCODER + DECODER)]
    other = verify(tmp_path / "base", tmp_path / "other", OPTS)
    assert other.verdict == "independent"


def test_a_copy_with_its_decoder_cut_maps_each_stack_to_its_own(tmp_path: Path) -> None:
    """A Whisper whose decoder keeps only its first and last blocks (as distilled Whisper
    models start): the encoder's blocks map to the encoder's, the two decoder blocks to the
    base's first and last decoder blocks."""
    sizes = {"d_model": 64, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "vocab_size": 500,
             "decoder_layers": 4}
    base = _saved("whisper:speech", tmp_path / "base", **sizes)
    cut = _build("whisper:speech", 5, **(sizes | {"decoder_layers": 2}))
    renumber = {"0": "0", "3": "1"}  # base decoder block -> the cut copy's
    state = {}
    for key, value in base.state_dict().items():
        if key.startswith("model.decoder.layers."):
            index = key.split(".")[3]
            if index not in renumber:
                continue
            key = key.replace(f"layers.{index}.", f"layers.{renumber[index]}.", 1)
        state[key] = value
    cut.load_state_dict(state)
    noisy(cut, 0.1).save_pretrained(tmp_path / "cut")
    report = verify(tmp_path / "base", tmp_path / "cut", OPTS)
    assert report.verdict == "derived"
    assert [(e.candidate_layer, e.base_layer) for e in report.layer_map] == [
        (0, 0), (1, 1), (2, 2), (3, 5)]
    # the stacks travel with the report, and its layer table names them
    assert report.models.base.stacks == {"encoder": 2, "decoder": 4}
    assert report.models.candidate.stacks == {"encoder": 2, "decoder": 2}
    buf = io.StringIO()
    render_report(report, make_console(file=buf, force_terminal=False))
    rows = [line.split() for line in buf.getvalue().splitlines() if "(decoder" in line]
    assert [row[:6] for row in rows] == [["2", "(decoder", "0)", "2", "(decoder", "0)"],
                                         ["3", "(decoder", "1)", "5", "(decoder", "3)"]]


def _switch_from(dense: torch.nn.Module, seed: int, experts: int = 4) -> torch.nn.Module:
    """A Switch Transformer the size of T5 ``dense`` whose every expert starts as the dense
    block's MLP (sparse upcycling, Komatsuzaki et al.), its routers new."""
    config = transformers.SwitchTransformersConfig(
        **{k: getattr(dense.config, k) for k in ("d_model", "d_kv", "d_ff", "num_layers",
                                                 "num_decoder_layers", "num_heads",
                                                 "vocab_size", "pad_token_id")},
        num_experts=experts, encoder_sparse_step=2, decoder_sparse_step=2)
    torch.manual_seed(seed)
    switch = transformers.SwitchTransformersForConditionalGeneration(config).eval()
    source = dense.state_dict()
    state = switch.state_dict()
    for key in state:
        if ".router." not in key:  # a dense block's MLP, or one expert of a sparse block
            state[key] = source[re.sub(r"\.mlp\.(experts\.expert_\d+\.)?", ".DenseReluDense.",
                                       key)].clone()
    switch.load_state_dict(state)
    return switch


def test_a_switch_transformer_upcycled_from_t5_is_derived_and_one_from_scratch_is_not(
        tmp_path: Path) -> None:
    """T5 into Switch Transformers as Sparse Upcycling does it: each sparse block's experts
    start as the dense model's MLP, then train apart (noise). The MoE probe finds each
    expert's dense origin; a Switch Transformer from another start is independent."""
    sizes = {"d_model": 64, "d_kv": 16, "d_ff": 128, "vocab_size": 500}
    dense = _saved("t5", tmp_path / "dense", **sizes)
    noisy(_switch_from(dense, seed=1), 0.2).save_pretrained(tmp_path / "upcycled")
    scratch = _switch_from(_build("t5", 7, **sizes), seed=8)
    scratch.save_pretrained(tmp_path / "scratch")
    with open_model(tmp_path / "upcycled") as model:
        assert model.layout.moe_layers == [1, 3]
        assert unread_tensors(model.layout) == []
    upcycled = verify(tmp_path / "dense", tmp_path / "upcycled", OPTS)
    assert upcycled.verdict == "derived"
    moe = next(p for p in upcycled.probes if p.name == "moe_upcycling")
    assert moe.p_value is not None
    assert moe.p_value < 1e-6
    assert verify(tmp_path / "dense", tmp_path / "scratch", OPTS).verdict == "independent"


def _vit() -> Any:
    return transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, image_size=32, patch_size=16)


#: the decoders an image encoder feeds in TrOCR (its own), Donut and Nougat (mBART's), and
#: transformers' BERT and GPT-2 with cross-attention added
_DECODERS = {
    "bart": lambda: transformers.TrOCRConfig(
        d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
        vocab_size=100),
    "mbart": lambda: transformers.MBartConfig(
        **{k: SMALL[k] for k in ("d_model", "encoder_attention_heads", "decoder_attention_heads",
                                 "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size")},
        decoder_layers=2, is_decoder=True, add_cross_attention=True),
    "bert": lambda: transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=100, is_decoder=True, add_cross_attention=True),
    "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                            add_cross_attention=True),
}


@pytest.mark.parametrize("family", list(_DECODERS))
def test_an_image_encoders_language_decoder_is_read_and_the_encoder_set_aside(
        tmp_path: Path, family: str) -> None:
    """A vision-encoder-decoder checkpoint is judged on its decoder (``decoder.``, read with
    its own family's table through the ``decoder`` config); the image encoder (``encoder.``)
    is another modality; the decoder's cross-attention is known, not compared."""
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        _vit(), _DECODERS[family]())
    module = transformers.VisionEncoderDecoderModel(config)
    module.save_pretrained(tmp_path)
    encoder = sum(1 for k in module.state_dict() if k.startswith("encoder."))
    with open_model(tmp_path) as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.hidden_size) == (family, 2, 32)
        assert layout.other_modalities == {"encoder.": encoder}
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []


def test_a_speech_encoders_decoder_is_read_as_its_language_model(tmp_path: Path) -> None:
    encoder = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2)
    decoder = _build("bart:causal").config
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder,
                                                                                  decoder)
    transformers.SpeechEncoderDecoderModel(config).save_pretrained(tmp_path)
    with open_model(tmp_path) as model:
        assert (model.layout.family, model.layout.num_layers) == ("bart", DECODER)
        assert list(model.layout.other_modalities) == ["encoder."]


def test_an_ocr_models_decoder_started_from_a_language_model_is_derived_from_it(
        tmp_path: Path) -> None:
    """Donut and Nougat start their decoder from a text model (mBART's): that text model
    against the trained image-to-text model is derived, block by block; another start's is
    not."""
    sizes = {"d_model": 64, "decoder_ffn_dim": 256, "encoder_ffn_dim": 256, "vocab_size": 500,
             "decoder_layers": 3}
    text = _saved("mbart:causal", tmp_path / "text", **sizes)
    other = _build("mbart:causal", 1, **sizes)
    for name, decoder in (("ocr", noisy(copy.deepcopy(text), 0.3)), ("other", other)):
        config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            _vit(), decoder.config)
        torch.manual_seed(2)
        module = transformers.VisionEncoderDecoderModel(config)
        module.decoder.load_state_dict(decoder.state_dict())
        module.save_pretrained(tmp_path / name)
    with open_model(tmp_path / "ocr") as model:  # its image encoder is narrower
        assert list(model.layout.other_modalities) == ["enc_to_dec_proj.", "encoder."]
        model.layout.other_modalities = {}
        assert unread_tensors(model.layout) == []
    derived = verify(tmp_path / "text", tmp_path / "ocr", OPTS)
    assert derived.verdict == "derived"
    assert [(e.candidate_layer, e.base_layer) for e in derived.layer_map] == [
        (i, i) for i in range(3)]
    assert verify(tmp_path / "text", tmp_path / "other", OPTS).verdict == "independent"


def _gguf_name(name: str) -> str | None:
    """llama.cpp's name for a T5 tensor (its converter's mapping), or None for none."""
    if name == "shared.weight":
        return "token_embd.weight"
    if name.endswith("final_layer_norm.weight"):
        return ("enc" if name.startswith("encoder") else "dec") + ".output_norm.weight"
    m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.(.+)\.weight", name)
    if m is None:
        return None
    stack, block, sub, rest = m.groups()
    cross = stack == "decoder" and sub == "1"
    mlp = sub == ("2" if stack == "decoder" else "1")
    part = {"SelfAttention.q": "attn_q", "SelfAttention.k": "attn_k",
            "SelfAttention.v": "attn_v", "SelfAttention.o": "attn_o",
            "SelfAttention.relative_attention_bias": "attn_rel_b",
            "EncDecAttention.q": "cross_attn_q", "EncDecAttention.k": "cross_attn_k",
            "EncDecAttention.v": "cross_attn_v", "EncDecAttention.o": "cross_attn_o",
            "DenseReluDense.wi_0": "ffn_gate", "DenseReluDense.wi_1": "ffn_up",
            "DenseReluDense.wo": "ffn_down"}.get(rest)
    if rest == "layer_norm":
        part = "ffn_norm" if mlp else "cross_attn_norm" if cross else "attn_norm"
    return f"{stack[:3]}.blk.{block}.{part}.weight"


def test_a_t5_converted_by_llama_cpp_reads_the_roles_of_its_source(tmp_path: Path) -> None:
    """llama.cpp's T5 names (``enc.blk.N.``, ``dec.blk.N.``, ``cross_attn_*``) read as the
    encoder's blocks, then the decoder's, each role the tensor of its Hugging Face source."""
    from types import SimpleNamespace

    from checkpoints import write_float_gguf

    module = _saved("mt5", tmp_path / "hf")  # gated MLP: ffn_gate and ffn_up
    tensors = {g: v for k, v in module.state_dict().items()
               if (g := _gguf_name(k)) is not None}
    assert len(tensors) == len({_gguf_name(k) for k in module.state_dict()} - {None})
    config = SimpleNamespace(num_hidden_layers=ENCODER, hidden_size=32, intermediate_size=64,
                             num_attention_heads=4, num_key_value_heads=4, vocab_size=100)
    gguf = write_float_gguf(tmp_path / "t5.gguf", "t5", config, tensors,
                            more=lambda w: w.add_decoder_block_count(DECODER))
    with open_model(tmp_path / "hf") as hf, open_model(gguf) as gg:
        assert (gg.layout.family, gg.layout.num_layers) == ("t5", ENCODER + DECODER)
        assert gg.layout.stacks == {"enc": ENCODER, "dec": DECODER}
        assert unread_tensors(gg.layout) == []
        for a, b in zip(hf.layout.layers, gg.layout.layers, strict=True):
            assert set(a.roles) == set(b.roles)
            for role, ref in a.roles.items():
                assert torch.equal(hf.load(ref).float(), gg.load(b.roles[role]).float()), role


@pytest.mark.parametrize(("name", "family"), [("bart", "bart"), ("mbart", "mbart"),
                                              ("t5", "t5")])
def test_files_without_a_config_are_read_by_their_names(tmp_path: Path, name: str,
                                                         family: str) -> None:
    """A state dict saved alone: the pre-norm family is the one whose stacks end in a norm
    (mBART's ``encoder.layer_norm``), which no post-norm BART has."""
    saved, bare = tmp_path / "saved", tmp_path / "bare"
    _saved(name, saved)
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    with open_model(bare) as model:
        assert (model.layout.family, model.layout.num_layers) == (family, ENCODER + DECODER)
        assert model.layout.post_norm == (family == "bart")
        assert unread_tensors(model.layout) == []


def _led_from_bart(bart: torch.nn.Module) -> torch.nn.Module:
    """LED made from BART as its authors made it: BART's weights, each encoder attention
    projection copied to Longformer's local and global ones, the encoder's positions tiled to
    LED's longer input (BART's first two rows are an offset LED does not have)."""
    c = bart.config
    config = transformers.LEDConfig(
        **{k: getattr(c, k) for k in ("d_model", "encoder_layers", "decoder_layers",
                                      "encoder_attention_heads", "decoder_attention_heads",
                                      "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size",
                                      "pad_token_id")},
        max_encoder_position_embeddings=4 * c.max_position_embeddings,
        max_decoder_position_embeddings=c.max_position_embeddings, attention_window=[8] * 2)
    led = transformers.LEDForConditionalGeneration(config).eval()
    source = bart.state_dict()
    state = led.state_dict()
    for key, value in state.items():
        origin = re.sub(r"longformer_self_attn\.(query|key|value)(_global)?",
                        lambda m: {"query": "q", "key": "k", "value": "v"}[m[1]] + "_proj",
                        key.replace("led.", "model.", 1)).replace("self_attn.output",
                                                                   "self_attn.out_proj")
        rows = source[origin]
        if "embed_positions" in key:
            rows = rows[2:].repeat(value.shape[0] // (rows.shape[0] - 2), 1)
        state[key] = rows.clone()
    led.load_state_dict(state)
    return led


def test_led_made_from_bart_is_derived_from_it(tmp_path: Path) -> None:
    """LED (Longformer attention in BART's encoder, under ``led.``) started from BART's
    weights: derived block by block across the two families' names; one made from another
    BART is independent."""
    sizes = {"d_model": 64, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "vocab_size": 500}
    bart = _saved("bart", tmp_path / "bart", **sizes)
    noisy(_led_from_bart(bart), 0.1).save_pretrained(tmp_path / "led")
    _led_from_bart(_build("bart", 4, **sizes)).save_pretrained(tmp_path / "other")
    derived = verify(tmp_path / "bart", tmp_path / "led", OPTS)
    assert derived.verdict == "derived"
    assert derived.models.candidate.architecture == "bart"
    assert derived.models.candidate.model_type == "led"
    assert [(e.candidate_layer, e.base_layer) for e in derived.layer_map] == [
        (i, i) for i in range(ENCODER + DECODER)]
    assert verify(tmp_path / "bart", tmp_path / "other", OPTS).verdict == "independent"


def _pix2struct(seed: int, hidden: int = 32) -> torch.nn.Module:
    text = transformers.Pix2StructTextConfig(hidden_size=hidden, d_kv=hidden // 4,
                                             d_ff=4 * hidden, num_layers=2, num_heads=4,
                                             vocab_size=500)
    vision = transformers.Pix2StructVisionConfig(hidden_size=32, d_kv=8, d_ff=64,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 patch_embed_hidden_size=16)
    torch.manual_seed(seed)
    return transformers.Pix2StructForConditionalGeneration(transformers.Pix2StructConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict())).eval()


def test_pix2struct_is_judged_on_its_text_decoder(tmp_path: Path) -> None:
    """Pix2Struct (and MatCha, DePlot, trained on from it): its text decoder is read, its image
    encoder set aside; a trained-on copy is derived, another start is not."""
    base = _pix2struct(0, hidden=64)
    base.save_pretrained(tmp_path / "base")
    noisy(copy.deepcopy(base), 0.3).save_pretrained(tmp_path / "copy")
    _pix2struct(1, hidden=64).save_pretrained(tmp_path / "other")
    with open_model(tmp_path / "base") as model:
        layout = model.layout
        assert (layout.family, layout.num_layers, layout.head_dim) == ("pix2struct", 2, 16)
        assert list(layout.other_modalities) == ["encoder."]
        layout.other_modalities = {}
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
    assert verify(tmp_path / "base", tmp_path / "copy", OPTS).verdict == "derived"
    assert verify(tmp_path / "base", tmp_path / "other", OPTS).verdict == "independent"


_GEMMA2 = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 3, "vocab_size": 500,
           "query_pre_attn_scalar": 16}


def _gemma2(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**_GEMMA2)).eval()


def _t5gemma_from(gemma: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A T5Gemma made as Google made it: encoder and decoder each start as the Gemma 2
    decoder, block for block; the cross-attention starts as the self-attention."""
    config = transformers.T5GemmaConfig(encoder=_GEMMA2, decoder=_GEMMA2, vocab_size=500)
    torch.manual_seed(seed)
    t5gemma = transformers.T5GemmaForConditionalGeneration(config).eval()
    source = gemma.state_dict()
    state = t5gemma.state_dict()
    renames = (("model.encoder.", "model."), ("model.decoder.", "model."),
               ("lm_head.out_proj", "lm_head"), ("cross_attn", "self_attn"),
               ("pre_self_attn_layernorm", "input_layernorm"),
               ("pre_cross_attn_layernorm", "input_layernorm"),
               ("post_self_attn_layernorm", "post_attention_layernorm"),
               ("post_cross_attn_layernorm", "post_attention_layernorm"))
    for key in state:
        origin = key
        for old, new in renames:
            origin = origin.replace(old, new)
        state[key] = source[origin].clone()
    t5gemma.load_state_dict(state)
    return t5gemma


def test_t5gemma_made_from_gemma2_maps_both_stacks_to_its_blocks(tmp_path: Path) -> None:
    """T5Gemma's encoder and decoder both start as Gemma 2's blocks: against that Gemma 2 it is
    derived, the encoder's blocks mapping to its blocks and the decoder's to them again; one
    made from another Gemma 2 is independent."""
    base = _gemma2(0)
    base.save_pretrained(tmp_path / "gemma2")
    noisy(_t5gemma_from(base, 1), 0.1).save_pretrained(tmp_path / "t5gemma")
    _t5gemma_from(_gemma2(5), 2).save_pretrained(tmp_path / "other")
    with open_model(tmp_path / "t5gemma") as model:
        layout = model.layout
        assert (layout.family, layout.stacks) == ("t5gemma", {"encoder": 3, "decoder": 3})
        assert (layout.num_heads, layout.num_kv_heads, layout.head_dim) == (4, 2, 16)
        assert unread_tensors(layout) == []
        assert missing_roles(layout) == []
    derived = verify(tmp_path / "gemma2", tmp_path / "t5gemma", OPTS)
    assert derived.verdict == "derived"
    assert [(e.candidate_layer, e.base_layer) for e in derived.layer_map] == [
        (0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2)]
    assert verify(tmp_path / "gemma2", tmp_path / "other", OPTS).verdict == "independent"


def test_t5gemma2_release_is_read_as_its_two_stacks() -> None:
    """T5Gemma 2 (from Gemma 3; its encoder also reads images) at its released size, by the
    names its release holds: 26 encoder blocks counted in the encoder's ``text_config``, then
    26 decoder blocks; its image tower known, nothing unread."""
    layout = released_layout("t5gemma2", transformers.AutoModelForSeq2SeqLM)
    assert (layout.family, layout.stacks) == ("t5gemma2", {"encoder": 26, "decoder": 26})
    assert (layout.num_heads, layout.num_kv_heads, layout.head_dim) == (8, 4, 256)
    assert "q_norm" in layout.layers[30].roles
    assert unread_tensors(layout) == []
    assert missing_roles(layout) == []
