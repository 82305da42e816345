"""Multi-head latent attention (DeepSeek-V2/V3 and the families built on it) compared as heads.

Its queries, keys and values reach the hidden state through low-rank latents and their norms;
the products of those factors are each head's factors over the hidden space, so head matching
compares the same QK and OV circuits it compares for standard attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from checkpoints import write_float_gguf
from released_models import noisy

from backends.compute import Compute
from verifier.model import open_model
from verifier.probes import head_matching as heads
from verifier.verify import VerifyOptions, verify

transformers = pytest.importorskip("transformers")


def _deepseek(seed: int = 0, q_lora_rank: int | None = 16, hidden: int = 32,
              vocab: int = 100, dense: int = 1) -> torch.nn.Module:
    config = transformers.DeepseekV3Config(
        hidden_size=hidden, intermediate_size=2 * hidden, moe_intermediate_size=hidden // 2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab,
        n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=dense, kv_lora_rank=8,
        q_lora_rank=q_lora_rank, qk_rope_head_dim=4, qk_nope_head_dim=6, v_head_dim=8,
        n_group=1, topk_group=1, n_shared_experts=1, pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.DeepseekV3ForCausalLM(config)
    with torch.no_grad():  # norm gains away from 1, so that folding them in is checked
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _rms(y: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    return torch.sqrt(y.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)


def _close_but_a_power_of_two(got: torch.Tensor, want: torch.Tensor) -> None:
    """``got`` is ``want`` times one power of two (a head's factor is kept at magnitude one:
    a positive factor on the whole head, the rotary key rows with the head's own)."""
    ratio = float((got * want).sum() / (want * want).sum())
    assert ratio > 0
    assert abs(math.log2(ratio) - round(math.log2(ratio))) < 1e-4
    torch.testing.assert_close(got, want * 2.0 ** round(math.log2(ratio)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("q_lora_rank", [16, None])
def test_latent_circuits_compute_each_heads_query_key_and_value(tmp_path: Path,
                                                                q_lora_rank: int | None) -> None:
    """Applied to a normalised hidden state, the composed factors (the block's norm gain folded
    in) give the module's query, key and value of each head, up to the latents' per-token RMS
    and one power of two per head: the query times its latent's, the head's own key rows and
    its value times the key/value latent's, the shared rotary key rows as they are."""
    module = _deepseek(q_lora_rank=q_lora_rank)
    module.save_pretrained(tmp_path)
    block = module.model.layers[1]
    attn = block.self_attn
    n = torch.randn(5, 32)
    n = n / _rms(n, block.input_layernorm)  # what the block's norm gives before its gain
    with open_model(tmp_path) as model:
        found = heads.load_circuits(model, 1)
        assert found is not None
        circuits = found.placed(Compute()).formed()
    assert (circuits.heads, circuits.groups) == (4, 4)
    with torch.no_grad():
        x = n * block.input_layernorm.weight
        if q_lora_rank is None:
            q, r_q = attn.q_proj(x), torch.ones(5, 1)
        else:
            latent = attn.q_a_proj(x)
            q, r_q = attn.q_b_proj(attn.q_a_layernorm(latent)), _rms(latent, attn.q_a_layernorm)
        kv_latent, k_rot = attn.kv_a_proj_with_mqa(x).split([8, 4], dim=-1)
        r_kv = _rms(kv_latent, attn.kv_a_layernorm)
        k_nope, v = attn.kv_b_proj(attn.kv_a_layernorm(kv_latent)).view(5, 4, 14).split([6, 8], -1)
    q = q.view(5, 4, 10)
    for h in range(4):
        _close_but_a_power_of_two(n @ circuits.q[h].T, q[:, h] * r_q)
        want_k = torch.cat([k_nope[:, h] * r_kv, k_rot], dim=-1)
        _close_but_a_power_of_two(n @ circuits.k[h].T, want_k)
        _close_but_a_power_of_two(n @ circuits.v[h].T, v[:, h] * r_kv)
        torch.testing.assert_close(circuits.o[h].T, attn.o_proj.weight[:, 8 * h:8 * (h + 1)])


def test_latent_shapes_that_contradict_the_head_count_are_named(tmp_path: Path) -> None:
    """A ``kv_b_proj`` whose rows are not a key and a value head for each query head says so
    (the layer's attention is then not compared by this probe), as standard attention does."""
    from safetensors.torch import load_file, save_file

    _deepseek().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.1.self_attn.kv_b_proj.weight"
    state[name] = torch.cat([state[name], state[name][:3]])
    save_file(state, str(tmp_path / "model.safetensors"))
    with open_model(tmp_path) as model:
        assert heads.circuit_misfit(model, 0) is None
        why = heads.circuit_misfit(model, 1)
        assert heads.load_circuits(model, 1) is None
    assert why is not None
    assert name in why


def test_a_noisy_deepseek_copy_matches_heads_and_another_start_does_not(tmp_path: Path) -> None:
    """End to end: head matching runs on DeepSeek-V3's latent attention (it did not: no q, k
    and v roles), finds a noisy copy and not another start, and its power check passes."""
    for folder, seed, scale in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        noisy(_deepseek(seed, hidden=128, vocab=600), scale).save_pretrained(tmp_path / folder)
    opts = VerifyOptions(digest=False)
    found = {}
    for folder in ("copy", "other"):
        report = verify(tmp_path / "base", tmp_path / folder, opts)
        found[folder] = (report, next(p for p in report.probes if p.name == heads.NAME))
    copy, copy_heads = found["copy"]
    assert copy.verdict == "derived", copy.reason
    assert copy_heads.p_value is not None
    assert copy_heads.p_value < 1e-6
    other, other_heads = found["other"]
    assert other.verdict == "independent", other.reason
    assert other_heads.p_value is not None
    assert other_heads.p_value > 0.01
    assert other_heads.power_p_value is not None
    assert other_heads.power_p_value < 1e-6


def test_a_latent_layers_head_count_is_read_from_its_weights(tmp_path: Path) -> None:
    """dots.3 Note's sliding-window layers have heads and ranks of their own, which the
    config's ``num_attention_heads`` does not give: the rotary key's width does (queries minus
    key and value heads, plus value heads, is the heads times the rotary width)."""
    from released_models import released_models

    cls, config = released_models()["dots3_note_text"]
    torch.manual_seed(0)
    cls(config).save_pretrained(tmp_path)
    with open_model(tmp_path) as model:
        assert model.layout.num_heads == 4
        shapes = []
        for layer in (0, 1):
            circuits = heads.load_circuits(model, layer)
            assert circuits is not None
            shapes.append((circuits.heads, circuits.q.shape[1], circuits.v.shape[1]))
    assert shapes == [(4, 8, 8), (2, 12, 4)]


def _loaded(tmp_path: Path, seed: int, scale: float = 0.0) -> heads.HeadCircuits:
    folder = tmp_path / f"m{seed}-{scale}"
    noisy(_deepseek(seed, hidden=64), scale).save_pretrained(folder)
    with open_model(folder) as model:
        found = heads.load_circuits(model, 1)
    assert found is not None
    return found.placed(Compute())


def test_latent_factors_are_kept_as_products_and_compare_as_formed(tmp_path: Path) -> None:
    """Queries, keys and values stay products of their latent projections: no tensor of heads x
    head size x hidden is made (at DeepSeek-V3's width one layer's took 1.9 GB). Every
    similarity the probe computes from the products equals the one from the formed factors, on
    the full hidden space (Gram blocks) and on a frame of it (formed circuits), aligned,
    rotated and with a sample of the base's heads."""
    from verifier.probes.hidden_alignment import HiddenAlignment

    base, cand = _loaded(tmp_path, 0), _loaded(tmp_path, 1)
    for f in (base.q, base.k, base.v):
        assert isinstance(f, heads.LowRank)
        assert f.right.shape[0] < f.right.shape[1]  # through a latent narrower than hidden
        top = f.left.abs().amax(dim=(1, 2))  # each head's left at magnitude one, kept there
        assert bool(((top >= 0.5) & (top < 1.0)).all())
    d = 64
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(d, generator=gen).numpy()
    sign = torch.where(torch.rand(d, generator=gen) < 0.5, -1.0, 1.0).numpy()
    align = HiddenAlignment(perm, sign, np.ones(d), np.ones(d))
    rot = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    frame = rot[:, :12]  # few coordinates: the similarity forms the circuits
    sampled = base.select_groups(torch.tensor([0, 2]))
    for b, c in ((base, cand.aligned(align)), (base.rotated(rot), cand),
                 (sampled.rotated(frame), cand.rotated(frame)), (sampled, cand)):
        got = heads.head_similarity(b, c)
        want = heads.head_similarity(b.formed(), c.formed())
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert heads._dense_cheaper(sampled.rotated(frame), cand.rotated(frame))
    assert not heads._dense_cheaper(base, cand)


def test_a_frame_takes_a_products_coordinates_as_from_the_formed_factors(
        tmp_path: Path) -> None:
    """The frame path reads a candidate's factors hidden-major and takes the coordinates an
    alignment maps to (signed, gain folded): for products that is their ``right``'s rows, and
    the taken factors are those of the formed circuits."""
    from verifier.probes.hidden_alignment import HiddenAlignment

    folder = tmp_path / "m"
    _deepseek(0, hidden=64).save_pretrained(folder)
    with open_model(folder) as model:
        stored = heads.load_circuits(model, 1)
    assert stored is not None
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))[:16].numpy()
    sign = torch.ones(16).numpy()
    sign[::3] = -1.0
    align = HiddenAlignment(perm, sign, np.ones(16), np.ones(16))
    got = stored.hidden_major().take(align, Compute()).formed()
    want = stored.placed(Compute()).formed().aligned(align)
    for a, b in zip((got.q, got.k, got.o, got.v), (want.q, want.k, want.o, want.v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


#: Hugging Face DeepSeek names -> llama.cpp's (its ``deepseek2`` converter)
_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_a_proj": "attn_q_a", "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b", "self_attn.q_proj": "attn_q",
    "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa", "self_attn.kv_a_layernorm": "attn_kv_a_norm",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _deepseek_gguf(module: torch.nn.Module, out: Path,
                   edit: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """``module`` (dense MLPs) as llama.cpp's converter writes it: ``kv_b_proj`` split per head
    into ``attn_k_b`` (the key rows, transposed: ``[heads, latent, nope]``) and ``attn_v_b``
    (``[heads, v, latent]``), with no ``attn_kv_b``; ``edit`` changes the tensors first."""
    cfg = module.config

    def latent_keys(w: Any) -> None:  # noqa: ANN401 - gguf's writer
        w.add_kv_lora_rank(cfg.kv_lora_rank)
        if cfg.q_lora_rank:
            w.add_q_lora_rank(cfg.q_lora_rank)
        w.add_key_length(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
        w.add_value_length(cfg.v_head_dim)
        w.add_rope_dimension_count(cfg.qk_rope_head_dim)

    heads, nope, v = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    tensors = {"token_embd.weight": module.model.embed_tokens.weight,
               "output_norm.weight": module.model.norm.weight, "output.weight": module.lm_head.weight}
    for name, t in module.model.layers.named_parameters():
        index, rest = name.split(".", 1)
        part = rest.removesuffix(".weight")
        if part == "self_attn.kv_b_proj":
            k_b, v_b = t.view(heads, nope + v, -1).split([nope, v], dim=1)
            tensors[f"blk.{index}.attn_k_b.weight"] = k_b.transpose(1, 2)
            tensors[f"blk.{index}.attn_v_b.weight"] = v_b
        else:
            tensors[f"blk.{index}.{_GGUF_NAMES[part]}.weight"] = t
    if edit is not None:
        edit(tensors)
    return write_float_gguf(out, "deepseek2", cfg, tensors, more=latent_keys)


@pytest.mark.parametrize("q_lora_rank", [16, None])
def test_llama_cpps_split_key_and_value_latents_give_the_same_heads(tmp_path: Path,
                                                                    q_lora_rank: int | None
                                                                    ) -> None:
    """llama.cpp's converters store DeepSeek's ``kv_b_proj`` split per head (``attn_k_b``,
    transposed, and ``attn_v_b``) and drop it: the heads read from such a GGUF are the ones
    read from the Hugging Face file it was converted from (head matching did not run on it)."""
    module = _deepseek(q_lora_rank=q_lora_rank, dense=2)
    module.save_pretrained(tmp_path / "hf")
    gguf_path = _deepseek_gguf(module, tmp_path / "m.gguf")
    loaded = {}
    for key, path in (("hf", tmp_path / "hf"), ("gguf", gguf_path)):
        with open_model(path) as model:
            assert heads.circuit_misfit(model, 1) is None
            found = heads.load_circuits(model, 1)
            assert found is not None
            loaded[key] = found.placed(Compute()).formed()
    hf, gg = loaded["hf"], loaded["gguf"]
    assert (gg.heads, gg.groups) == (hf.heads, hf.groups) == (4, 4)
    for a, b in zip((hf.q, hf.k, hf.o, hf.v), (gg.q, gg.k, gg.o, gg.v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_split_latents_that_disagree_are_named(tmp_path: Path) -> None:
    """An ``attn_k_b`` and ``attn_v_b`` of different head counts are not one ``kv_b``: the
    layer's heads are not compared, and the reason names both tensors."""
    def drop_a_value_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["blk.1.attn_v_b.weight"] = tensors["blk.1.attn_v_b.weight"][:3]

    path = _deepseek_gguf(_deepseek(dense=2), tmp_path / "m.gguf", edit=drop_a_value_head)
    with open_model(path) as model:
        assert heads.circuit_misfit(model, 0) is None
        why = heads.circuit_misfit(model, 1)
        assert heads.load_circuits(model, 1) is None
    assert why is not None
    assert "blk.1.attn_k_b.weight" in why
    assert "blk.1.attn_v_b.weight" in why
