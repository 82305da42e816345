"""The GGUF reader: PyTorch-order shapes, dequantisation, Q/K row order, config, bad files.

Every file is written with ``gguf.GGUFWriter`` into pytest's tmp_path. Types that
``gguf.quants`` can quantise (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16) are quantised by it and checked
against the originals within each type's rounding bound; K-quant blocks are encoded here by hand
from ggml's documented block layouts.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter
from gguf.quants import quantize

from verifier.architectures import family_for_model_type
from verifier.errors import InputError
from verifier.readers import open_checkpoint
from verifier.readers.gguf_reader import GGUFCheckpoint

HIDDEN, N_HEAD, N_KV, FFN, VOCAB = 32, 4, 2, 64, 16
HEAD_DIM = HIDDEN // N_HEAD
TOKENS = ["<unk>", "<s>", "</s>", "▁the", "é", "<0x0A>"] + [f"t{i}" for i in range(VOCAB - 6)]


def converter_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py), HF row order -> GGUF."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape
    )


def hf_tensors() -> dict[str, torch.Tensor]:
    """A one-layer llama in Hugging Face layout, under GGUF names."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return {
        "token_embd.weight": r(VOCAB, HIDDEN),
        "blk.0.attn_norm.weight": r(HIDDEN),
        "blk.0.attn_q.weight": r(HIDDEN, HIDDEN),
        "blk.0.attn_q.bias": r(HIDDEN),
        "blk.0.attn_k.weight": r(N_KV * HEAD_DIM, HIDDEN),
        "blk.0.attn_v.weight": r(N_KV * HEAD_DIM, HIDDEN),
        "blk.0.attn_output.weight": r(HIDDEN, HIDDEN),
        "blk.0.ffn_gate.weight": r(FFN, HIDDEN),
        "blk.0.ffn_up.weight": r(FFN, HIDDEN),
        "blk.0.ffn_down.weight": r(HIDDEN, FFN),
        "output.weight": r(VOCAB, HIDDEN),
    }


# How each tensor of the tiny llama is stored.
STORAGE = {
    "token_embd.weight": Q.F16,
    "blk.0.attn_norm.weight": Q.F32,
    "blk.0.attn_q.weight": Q.F32,
    "blk.0.attn_q.bias": Q.F32,
    "blk.0.attn_k.weight": Q.Q8_0,
    "blk.0.attn_v.weight": Q.Q4_0,
    "blk.0.attn_output.weight": Q.BF16,
    "blk.0.ffn_gate.weight": Q.Q4_1,
    "blk.0.ffn_up.weight": Q.Q5_0,
    "blk.0.ffn_down.weight": Q.Q5_1,
    "output.weight": Q.Q8_0,
}


def write_gguf(
    path: Path,
    arch: str,
    tensors: dict[str, torch.Tensor],
    storage: dict[str, Q],
    *,
    tokens: list[str] | None = TOKENS,
    **meta: Any,
) -> Path:
    """A GGUF file: llama-style hyperparameters, ``tokens``, and each tensor in its storage."""
    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    for key, value in meta.items():
        getattr(w, f"add_{key}")(value)
    if tokens is not None:
        w.add_token_list(tokens)
    for name, t in tensors.items():
        qtype = storage[name]
        arr = t.numpy().astype(np.float32)
        if qtype == Q.F32:
            w.add_tensor(name, arr)
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_file(
    tmp_path: Path, arch: str = "llama", **meta: Any
) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The tiny llama as llama.cpp's converter writes it: Q/K rows permuted for llama."""
    hf = hf_tensors()
    stored = dict(hf)
    if arch == "llama":
        stored["blk.0.attn_q.weight"] = converter_permute(hf["blk.0.attn_q.weight"], N_HEAD)
        stored["blk.0.attn_q.bias"] = converter_permute(hf["blk.0.attn_q.bias"], N_HEAD)
        stored["blk.0.attn_k.weight"] = converter_permute(hf["blk.0.attn_k.weight"], N_KV)
    path = write_gguf(tmp_path / "model.gguf", arch, stored, STORAGE, **meta)
    return path, hf, stored


def block_error(
    got: torch.Tensor, want: torch.Tensor, block: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block max |error|, max |x|, and value range (the quantities quant bounds use)."""
    g = got.float().numpy().reshape(-1, block)
    w = want.float().numpy().reshape(-1, block)
    return np.abs(g - w).max(axis=1), np.abs(w).max(axis=1), w.max(axis=1) - w.min(axis=1)


def test_shapes_are_reported_in_pytorch_order_with_gguf_names_and_types(tmp_path):
    path, hf, _ = llama_file(tmp_path)
    with open_checkpoint(path) as reader:
        assert isinstance(reader, GGUFCheckpoint)
        assert reader.format == "gguf"
        assert reader.files == [path]
        assert reader.root == tmp_path
        infos = {t.name: t for t in reader.tensors()}
    assert list(infos) == list(hf)  # file order
    assert {n: i.shape for n, i in infos.items()} == {n: tuple(t.shape) for n, t in hf.items()}
    assert {n: i.dtype for n, i in infos.items()} == {n: q.name.lower() for n, q in STORAGE.items()}
    assert {i.file for i in infos.values()} == {"model.gguf"}
    # the file itself stores ggml order, innermost first: ffn_down is [in=64, out=32] there
    raw = {t.name: t.shape.tolist() for t in GGUFReader(path).tensors}
    assert raw["blk.0.ffn_down.weight"] == [FFN, HIDDEN]
    assert infos["blk.0.ffn_down.weight"].shape == (HIDDEN, FFN)


def test_plain_types_load_exactly_in_their_dtype(tmp_path):
    path, hf, _ = llama_file(tmp_path)
    with open_checkpoint(path) as reader:
        norm = reader.load("blk.0.attn_norm.weight")
        embd = reader.load("token_embd.weight")
        out = reader.load("blk.0.attn_output.weight")
    assert norm.dtype == torch.float32
    assert torch.equal(norm, hf["blk.0.attn_norm.weight"])
    assert embd.dtype == torch.float16
    assert torch.equal(embd, hf["token_embd.weight"].half())
    # BF16 is written by gguf's round-to-nearest-even; torch's .bfloat16() rounds the same way
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, hf["blk.0.attn_output.weight"].bfloat16())


def test_q8_0_matches_an_independent_decoding_of_its_blocks(tmp_path):
    """Q8_0 block = f16 scale d, then 32 int8 q; value = d * q (ggml's block_q8_0)."""
    path, hf, _ = llama_file(tmp_path)
    raw = {t.name: t for t in GGUFReader(path).tensors}["output.weight"].data
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    expected = torch.from_numpy((d * q).reshape(VOCAB, HIDDEN))
    with open_checkpoint(path) as reader:
        got = reader.load("output.weight")
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    err, amax, _ = block_error(got, hf["output.weight"])
    # round-to-nearest with step amax/127, plus the f16 rounding of d
    assert (err <= amax / 127 * 0.5 + amax * 2e-3).all()


@pytest.mark.parametrize(
    ("name", "bound"),
    [
        # Q4_0: d = -max/8 over 16 levels; the opposite extreme clips, so one step amax/8
        ("blk.0.attn_v.weight", lambda amax, rng: amax / 8 * 1.01),
        # Q4_1: min + d*q with d = range/15, round to nearest: half a step
        ("blk.0.ffn_gate.weight", lambda amax, rng: rng / 15 * 0.51 + amax * 2e-3),
        # Q5_0: d = -max/16 over 32 levels; clipping costs at most one step amax/16
        ("blk.0.ffn_up.weight", lambda amax, rng: amax / 16 * 1.01),
        # Q5_1: min + d*q with d = range/31: half a step
        ("blk.0.ffn_down.weight", lambda amax, rng: rng / 31 * 0.51 + amax * 2e-3),
    ],
)
def test_quantised_values_are_close_to_the_originals(tmp_path, name, bound):
    path, hf, _ = llama_file(tmp_path)
    with open_checkpoint(path) as reader:
        got = reader.load(name)
    assert got.dtype == torch.float32
    assert got.shape == hf[name].shape
    err, amax, rng = block_error(got, hf[name])
    assert (err <= bound(amax, rng)).all()
    assert err.max() > 0  # it really was quantised


def test_llama_q_and_k_come_back_in_hugging_face_row_order(tmp_path):
    path, hf, stored = llama_file(tmp_path)
    q = hf["blk.0.attn_q.weight"]
    assert not torch.equal(stored["blk.0.attn_q.weight"], q)  # the permutation is not trivial
    with open_checkpoint(path) as reader:
        assert torch.equal(reader.load("blk.0.attn_q.weight"), q)
        assert torch.equal(reader.load("blk.0.attn_q.bias"), hf["blk.0.attn_q.bias"])
        k = reader.load("blk.0.attn_k.weight")  # Q8_0, permuted with the kv head count
    err, amax, _ = block_error(k, hf["blk.0.attn_k.weight"])
    assert (err <= amax / 127 * 0.5 + amax * 2e-3).all()


def test_qwen2_q_and_k_are_returned_as_stored(tmp_path):
    path, hf, stored = llama_file(tmp_path, arch="qwen2")
    with open_checkpoint(path) as reader:
        assert torch.equal(reader.load("blk.0.attn_q.weight"), stored["blk.0.attn_q.weight"])
        assert torch.equal(reader.load("blk.0.attn_q.weight"), hf["blk.0.attn_q.weight"])


def test_head_counts_that_do_not_fit_the_tensor_are_an_input_error(tmp_path):
    tensors = {"blk.0.attn_q.weight": torch.randn(30, HIDDEN)}
    path = write_gguf(tmp_path / "m.gguf", "llama", tensors, {"blk.0.attn_q.weight": Q.F32})
    with GGUFCheckpoint(path) as reader, pytest.raises(InputError, match="attn_q.*heads"):
        reader.load("blk.0.attn_q.weight")


def test_config_is_synthesised_from_metadata(tmp_path):
    path, _, _ = llama_file(tmp_path)
    with open_checkpoint(path) as reader:
        assert reader.config() == {
            "model_type": "llama",
            "gguf_architecture": "llama",
            "num_hidden_layers": 1,
            "hidden_size": HIDDEN,
            "intermediate_size": FFN,
            "num_attention_heads": N_HEAD,
            "num_key_value_heads": N_KV,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 128,
            "vocab_size": VOCAB,
            "tie_word_embeddings": False,
        }
        assert reader.vocabulary() == TOKENS


def test_llama_with_experts_is_mixtral(tmp_path):
    path, _, _ = llama_file(tmp_path, expert_count=8, expert_used_count=2)
    with open_checkpoint(path) as reader:
        cfg = reader.config()
    assert cfg["model_type"] == "mixtral"
    assert (cfg["num_local_experts"], cfg["num_experts"], cfg["num_experts_per_tok"]) == (8, 8, 2)


def test_qwen3moe_config_and_vocab_size_from_the_embedding(tmp_path):
    tensors = {"token_embd.weight": torch.randn(VOCAB, HIDDEN)}
    path = write_gguf(
        tmp_path / "m.gguf", "qwen3moe", tensors, {"token_embd.weight": Q.F32}, tokens=None,
        expert_count=4, expert_used_count=2, expert_feed_forward_length=48,
    )
    with open_checkpoint(path) as reader:
        cfg = reader.config()
        assert reader.vocabulary() is None
    assert cfg["model_type"] == "qwen3_moe"
    assert cfg["moe_intermediate_size"] == 48
    assert cfg["vocab_size"] == VOCAB  # no token list: rows of token_embd
    assert cfg["tie_word_embeddings"] is True


@pytest.mark.parametrize(("arch", "model_type", "family"), [
    ("qwen2vl", "qwen2_vl", "qwen2"), ("qwen3vlmoe", "qwen3_vl_moe", "qwen3_moe"),
    ("gpt-oss", "gpt_oss", "gpt_oss"), ("kimi-linear", "kimi_linear", "kimi_linear"),
    ("granitehybrid", "granitemoehybrid", "granitemoehybrid"), ("apertus", "apertus", "apertus"),
    ("exaone-moe", "exaone_moe", "glm4_moe"), ("mimo2", "mimo_v2_flash", "mimo_v2_flash")])
def test_llama_cpp_architecture_names_give_the_hugging_face_family(tmp_path, arch, model_type,
                                                                     family):
    """A vision-language model's GGUF holds its language model (the tower is a separate
    mmproj file) under llama.cpp's name for the architecture."""
    path = write_gguf(tmp_path / "m.gguf", arch, {"token_embd.weight": torch.randn(VOCAB, HIDDEN)},
                      {"token_embd.weight": Q.F32}, tokens=None)
    with open_checkpoint(path) as reader:
        assert reader.config()["model_type"] == model_type
    assert family_for_model_type(model_type).family == family


def _q4_k_block(d: float, dmin: float, sc: list[int], m: list[int], q: list[int]) -> bytes:
    """One block_q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.

    Sub-block s (32 values) decodes to ``d*sc[s]*q - dmin*m[s]``. Scales and mins 0-3 sit in the
    low 6 bits of bytes 0-3 and 4-7; those of 4-7 put their low 4 bits in bytes 8-11 (scale low
    nibble, min high nibble) and their top 2 bits in the top bits of bytes 0-3 / 4-7 (ggml's
    get_scale_min_k4). Each 64-value chunk shares 32 bytes: low nibbles first half, high second.
    """
    scales = bytearray(12)
    for j in range(4):
        scales[j] = sc[j] & 63 | (sc[j + 4] >> 4) << 6
        scales[j + 4] = m[j] & 63 | (m[j + 4] >> 4) << 6
        scales[j + 8] = sc[j + 4] & 15 | (m[j + 4] & 15) << 4
    qs = bytearray(128)
    for c in range(4):
        for i in range(32):
            qs[32 * c + i] = q[64 * c + i] | q[64 * c + 32 + i] << 4
    return struct.pack("<ee", d, dmin) + bytes(scales) + bytes(qs)


def _q6_k_block(d: float, sc: list[int], q: list[int]) -> bytes:
    """One block_q6_K: ql[128] low nibbles, qh[64] 2-bit highs, int8 scales[16], f16 d.

    Value i decodes to ``d*sc[i//16]*(q[i]-32)``. In each 128-value half, lane l of
    ``ql``/``qh`` carries values l, l+32, l+64, l+96 (ggml's dequantize_row_q6_K).
    """
    ql, qh = bytearray(128), bytearray(64)
    for n in range(2):
        y = q[128 * n : 128 * (n + 1)]
        for lane in range(32):
            q1, q2, q3, q4 = y[lane], y[lane + 32], y[lane + 64], y[lane + 96]
            ql[64 * n + lane] = q1 & 15 | (q3 & 15) << 4
            ql[64 * n + lane + 32] = q2 & 15 | (q4 & 15) << 4
            qh[32 * n + lane] = q1 >> 4 | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
    return bytes(ql) + bytes(qh) + struct.pack("<16b", *sc) + struct.pack("<e", d)


def test_k_quants_decode_as_their_documented_block_layouts(tmp_path):
    """Q4_K and Q6_K: blocks encoded here from chosen integers must decode to exactly the
    values the layout defines. Q2_K, Q3_K, Q5_K: random blocks (with finite f16 scales) must
    load with the right shape and finite values; their values are not checked."""
    rng = np.random.default_rng(0)
    rows = 2
    q4_expected, q4_bytes = [], b""
    q6_expected, q6_bytes = [], b""
    for _ in range(rows):
        d, dmin = 0.5, 0.25
        sc, m = rng.integers(0, 64, 8), rng.integers(0, 64, 8)
        q = rng.integers(0, 16, 256)
        q4_bytes += _q4_k_block(d, dmin, sc.tolist(), m.tolist(), q.tolist())
        q4_expected.append(d * np.repeat(sc, 32) * q - dmin * np.repeat(m, 32))
        sc6, q6 = rng.integers(-128, 128, 16), rng.integers(0, 64, 256)
        q6_bytes += _q6_k_block(0.125, sc6.tolist(), q6.tolist())
        q6_expected.append(0.125 * np.repeat(sc6, 16) * (q6 - 32))

    def random_blocks(size: int, f16_at: tuple[int, ...]) -> np.ndarray:
        blocks = rng.integers(0, 256, (rows, size), dtype=np.uint8)
        for at in f16_at:
            blocks[:, at : at + 2] = np.frombuffer(struct.pack("<e", 0.5), np.uint8)
        return blocks

    raw = {
        "q4k": (Q.Q4_K, np.frombuffer(q4_bytes, np.uint8).reshape(rows, 144)),
        "q6k": (Q.Q6_K, np.frombuffer(q6_bytes, np.uint8).reshape(rows, 210)),
        "q2k": (Q.Q2_K, random_blocks(84, (80, 82))),
        "q3k": (Q.Q3_K, random_blocks(110, (108,))),
        "q5k": (Q.Q5_K, random_blocks(176, (0, 2))),
    }
    w = GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    for name, (qtype, blocks) in raw.items():
        w.add_tensor(name, blocks, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_checkpoint(tmp_path / "k.gguf") as reader:
        infos = {t.name: t for t in reader.tensors()}
        assert {n: (i.shape, i.dtype) for n, i in infos.items()} == {
            n: ((rows, 256), q.name.lower()) for n, (q, _) in raw.items()
        }
        loaded = {n: reader.load(n) for n in raw}
    assert torch.equal(loaded["q4k"], torch.tensor(np.array(q4_expected), dtype=torch.float32))
    assert torch.equal(loaded["q6k"], torch.tensor(np.array(q6_expected), dtype=torch.float32))
    for name in ("q2k", "q3k", "q5k"):
        assert loaded[name].dtype == torch.float32
        assert torch.isfinite(loaded[name]).all()
        assert loaded[name].abs().sum() > 0


def test_a_type_gguf_cannot_dequantise_is_an_input_error(tmp_path):
    w = GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tensor("x", np.zeros((1, 292), np.uint8), raw_dtype=Q.Q8_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_checkpoint(tmp_path / "m.gguf") as reader:
        assert reader.tensors()[0].dtype == "q8_k"
        with pytest.raises(InputError, match="Q8_K"):
            reader.load("x")


def test_unknown_tensor_name_is_an_input_error(tmp_path):
    path, _, _ = llama_file(tmp_path)
    with open_checkpoint(path) as reader, pytest.raises(InputError, match="blk.9.attn_q.weight"):
        reader.load("blk.9.attn_q.weight")


def test_reading_leaves_the_file_unchanged(tmp_path):
    path, hf, _ = llama_file(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_checkpoint(path) as reader:
        for info in reader.tensors():
            reader.load(info.name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_truncated_file_is_an_input_error(tmp_path):
    path, _, _ = llama_file(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="model.gguf"):
        GGUFCheckpoint(path)


def test_file_truncated_inside_the_header_is_an_input_error(tmp_path):
    path, _, _ = llama_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable GGUF file.*file ends at byte 100"):
        GGUFCheckpoint(path)


def test_garbage_bytes_are_an_input_error(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="model.gguf.*not a readable GGUF file"):
        GGUFCheckpoint(path)


def test_empty_file_is_an_input_error(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        GGUFCheckpoint(path)


def test_an_array_length_past_the_end_fails_at_once(tmp_path):
    """A header claiming a 2**62-element uint8 array must fail, not loop over empty reads."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)  # version 3, no tensors, one key
    header += struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, 2**62)  # array of uint8
    path = tmp_path / "model.gguf"
    path.write_bytes(header + b"\x00" * 16)
    with pytest.raises(InputError, match="truncated or corrupt"):
        GGUFCheckpoint(path)


def test_agrees_with_the_transformers_gguf_loader(tmp_path):
    """Hugging Face's own GGUF loader (dequantise, reverse the llama Q/K permutation) must give
    the same tensors under the matching state-dict names."""
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError:
        pytest.skip("this transformers has no GGUF loader")
    path, _, _ = llama_file(tmp_path)
    with GGUFCheckpoint(path) as reader:
        cfg = {k: v for k, v in reader.config().items() if k != "gguf_architecture"}
        model = LlamaForCausalLM(LlamaConfig(**cfg, attention_bias=True))
        theirs = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
        names = {
            "token_embd.weight": "model.embed_tokens.weight",
            "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_q.bias": "model.layers.0.self_attn.q_proj.bias",
            "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
            "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
            "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
            "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
            "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
            "output.weight": "lm_head.weight",
        }
        for ours, hf_name in names.items():
            expected = torch.as_tensor(theirs["tensors"][hf_name]).float()
            assert torch.equal(reader.load(ours).float(), expected), ours


def _with_tensor_offset(path: Path, index: int, relative: int) -> None:
    """Rewrite the data offset that tensor ``index``'s header record gives."""
    record = GGUFReader(path).tensors[index].field
    at = record.offset + sum(part.nbytes for part in record.parts[:5])  # name, dims, type
    raw = bytearray(path.read_bytes())
    raw[at:at + 8] = struct.pack("<Q", relative)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("relative", "said"), [
    (3, "not a multiple of the file's alignment"),
    (0, "overlap in the file"),  # the second tensor pointed at the first one's bytes
])
def test_a_header_pointing_tensors_at_wrong_bytes_is_an_input_error(tmp_path, relative, said):
    # both were read as weights that were never written, without a word
    path, _, _ = llama_file(tmp_path)
    _with_tensor_offset(path, 1, relative)
    with pytest.raises(InputError, match=f"not a readable GGUF file.*{said}"):
        GGUFCheckpoint(path)
