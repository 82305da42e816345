"""Derivations with known truth: function-preserving permutations and rescalings, layer pruning
and duplication, dtype and int8 round trips, and the ``LINEAGE`` models and ``PAIRS`` built on
them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from verifier.zoo import (
    STANDARD,
    ModelSpec,
    Zoo,
    build_model,
    build_module,
    derive,
    load_model,
    load_state,
    read_spec,
)
from verifier.zoo.derive import apply, derived_spec, expected_shapes, layer_sources, quantise_rows
from verifier.zoo.models import BertForMaskedLM, CausalLM
from verifier.zoo.pairs import LINEAGE, PAIRS, ZOO_SPECS, layer_map

State = dict[str, torch.Tensor]

#: Logits of a transformed model against its parent's, float32 on CPU. Logits are O(1-10) here
#: and the observed differences are below 1e-5 (rounding of rescaled weights and of reordered
#: sums); a real mistake (a head or coordinate out of place) moves them by O(0.1-1).
LOGITS_ATOL = 5e-5
#: A transformed tensor must differ from its parent's by at least this much (``rel_change``), so
#: that a derivation that silently did nothing fails.
MIN_CHANGE = 0.5

DECODERS = ["llama", "qwen2", "mistral", "mixtral", "qwen2_moe"]
#: The standard specs (8 layers, 4 heads, 2 KV heads) and one with 4 query heads per KV head.
SPECS = {name: STANDARD[name] for name in DECODERS} | {
    "llama_gqa4": ModelSpec(family="llama", num_layers=2, heads=8, kv_heads=2, hidden=64),
    "qwen2_moe_gqa4": ModelSpec(family="qwen2_moe", num_layers=2, heads=8, kv_heads=2, hidden=64,
                                intermediate=48, shared_intermediate=40, experts=3),
}
IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def lively(spec: ModelSpec, seed: int = 0) -> CausalLM | BertForMaskedLM:
    """A fresh model whose every part matters: the zoo's N(0, 0.02) init leaves attention
    logits near zero (uniform attention would hide a misplaced q/k head) and norm gains all equal
    (hiding a norm left unpermuted), so use N(0, 1/fan_in) matrices, gains in [0.5, 1.5] and
    nonzero biases."""
    model = build_module(spec)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def logits(spec: ModelSpec, state: State) -> torch.Tensor:
    model = build_module(spec)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model.eval()(IDS).logits


def rel_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """``|new - old|`` relative to ``old``'s spread about its mean: for matrices (mean ~ 0) the
    plain relative change; for norm gains (mean ~ 1) it counts a permutation as much as a
    matrix's, rather than diluting it by the shared offset."""
    return float((new - old).norm() / (old - old.mean()).norm())


def state_of(model: torch.nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- which tensors each option must change -------------------------------------------------------


def _attn(*leaves: str) -> Callable[[str], bool]:
    return lambda k: ".self_attn." in k and k.rsplit(".", 2)[-2] in leaves


def _every_matrix_and_norm(k: str) -> bool:
    return not k.endswith("bias")


def _ffn_blocks(k: str) -> bool:
    return k.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight",
                       "w1.weight", "w2.weight", "w3.weight"))


def _experts(k: str) -> bool:
    return ".experts." in k or k.endswith((".mlp.gate.weight", "block_sparse_moe.gate.weight"))


def _sign(k: str) -> bool:
    return k.endswith(".weight") and "norm" not in k


def _norms_and_readers(k: str) -> bool:
    return "norm" in k or (k.endswith(".weight") and "o_proj" not in k and "down_proj" not in k
                           and "w2" not in k and "embed" not in k)


def _up_down(k: str) -> bool:
    return k.endswith(("up_proj.weight", "down_proj.weight", "w3.weight", "w2.weight"))


def _everything(k: str) -> bool:
    return True


def _nothing(k: str) -> bool:
    return False


def _router(k: str) -> bool:
    return k.endswith((".mlp.gate.weight", "block_sparse_moe.gate.weight"))


def _expert_blocks(k: str) -> bool:
    return ".experts." in k


#: (derivation, args, tensors that must change, tensors that may change); every other tensor
#: must stay bit-identical. Experts may stay in place under an expert permutation (only the
#: permutation as a whole is never the identity), so their tensors may or may not move.
CASES: dict[str, tuple[str, dict[str, object], Callable[[str], bool], Callable[[str], bool]]] = {
    "permute-hidden": ("permute", {"parts": ["hidden"]}, _every_matrix_and_norm, _nothing),
    "permute-heads": ("permute", {"parts": ["heads"]},
                      _attn("q_proj", "k_proj", "v_proj", "o_proj"), _nothing),
    "permute-ffn": ("permute", {"parts": ["ffn"]}, _ffn_blocks, _nothing),
    "permute-experts": ("permute", {"parts": ["experts"]}, _router, _expert_blocks),
    "permute-all": ("permute", {}, _every_matrix_and_norm, _everything),
    "rescale-sign": ("rescale", {"parts": ["sign"]}, _sign, _nothing),
    "rescale-norms": ("rescale", {"parts": ["norms"]}, _norms_and_readers, _nothing),
    "rescale-qk-head": ("rescale", {"parts": ["qk"]}, _attn("q_proj", "k_proj"), _nothing),
    "rescale-qk-pair": ("rescale", {"parts": ["qk"], "qk_per": "pair"},
                        _attn("q_proj", "k_proj"), _nothing),
    "rescale-vo-head": ("rescale", {"parts": ["vo"]}, _attn("v_proj", "o_proj"), _nothing),
    "rescale-vo-dim": ("rescale", {"parts": ["vo"], "vo_per": "dim"},
                       _attn("v_proj", "o_proj"), _nothing),
    "rescale-ffn": ("rescale", {"parts": ["ffn"]}, _up_down, _nothing),
    "rescale-all": ("rescale", {}, _every_matrix_and_norm, _everything),
    "rescale-all-fine": ("rescale", {"qk_per": "pair", "vo_per": "dim"},
                         _every_matrix_and_norm, _everything),
    "rotate": ("rotate", {}, _every_matrix_and_norm, _nothing),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_transformation_preserves_logits_and_changes_weights(spec_name: str, case: str) -> None:
    """Before any training, the derived model computes the parent's logits (within
    ``LOGITS_ATOL``), every tensor the option must change moved by ``MIN_CHANGE`` or more (so a
    no-op fails), and every tensor it has no business with is untouched (so an option does only
    what it says)."""
    spec = SPECS[spec_name]
    name, args, must, may = CASES[case]
    if case == "permute-experts" and not spec.is_moe:
        pytest.skip("dense models have no experts")
    parent = state_of(lively(spec))
    child = derived_spec(spec, name, args, seed=101)
    state = apply(name, parent, child)
    assert state.keys() == parent.keys()
    torch.testing.assert_close(logits(child, state), logits(spec, parent), atol=LOGITS_ATOL, rtol=0)
    changed = [k for k in parent if must(k)]
    assert changed
    for key in changed:
        assert rel_change(state[key], parent[key]) > MIN_CHANGE, key
    for key in parent:
        if not (must(key) or may(key)):
            assert torch.equal(state[key], parent[key]), key


def test_a_misplaced_head_or_gain_is_caught() -> None:
    """The tolerance is meaningful: moving query heads without o's columns, or permuting the
    hidden dimension everywhere but one norm gain, changes logits by far more than LOGITS_ATOL."""
    spec = SPECS["llama_gqa4"]
    parent = state_of(lively(spec))
    ref = logits(spec, parent)
    q = "model.layers.1.self_attn.q_proj.weight"
    rows = torch.arange(spec.hidden).view(spec.heads, -1)[[1, 0, *range(2, spec.heads)]].flatten()
    broken = parent | {q: parent[q][rows]}
    assert (logits(spec, broken) - ref).abs().max() > 1e3 * LOGITS_ATOL
    child = derived_spec(spec, "permute", {"parts": ["hidden"]}, seed=101)
    state = apply("permute", parent, child)
    gain = "model.layers.0.post_attention_layernorm.weight"
    assert (logits(child, state | {gain: parent[gain]}) - ref).abs().max() > 1e3 * LOGITS_ATOL


def test_permutations_respect_kv_groups_and_head_blocks() -> None:
    """Each query head block stays whole and stays with its KV head: the child's query head ``h``
    is some parent head whose KV head is the one now at position ``h // rep``."""
    spec = SPECS["llama_gqa4"]
    parent = state_of(lively(spec))
    child = derived_spec(spec, "permute", {"parts": ["heads"]}, seed=7)
    state = apply("permute", parent, child)
    hd, rep = spec.head_dim, spec.heads // spec.num_kv_heads
    p = "model.layers.0.self_attn."

    def blocks(t: torch.Tensor) -> list[torch.Tensor]:
        return list(t.view(-1, hd, t.shape[1]))

    old_q, new_q = blocks(parent[p + "q_proj.weight"]), blocks(state[p + "q_proj.weight"])
    old_k, new_k = blocks(parent[p + "k_proj.weight"]), blocks(state[p + "k_proj.weight"])
    source = [next(i for i, b in enumerate(old_q) if torch.equal(b, nb)) for nb in new_q]
    kv_source = [next(i for i, b in enumerate(old_k) if torch.equal(b, nb)) for nb in new_k]
    assert sorted(source) == list(range(spec.heads))
    assert source != list(range(spec.heads))
    assert all(source[h] // rep == kv_source[h // rep] for h in range(spec.heads))


@pytest.mark.parametrize("name", ["permute", "rescale"])
def test_transformations_are_seeded_by_the_child_spec(name: str) -> None:
    spec = SPECS["llama_gqa4"]
    parent = state_of(lively(spec))
    a = apply(name, parent, derived_spec(spec, name, seed=1))
    b = apply(name, parent, derived_spec(spec, name, seed=1))
    c = apply(name, parent, derived_spec(spec, name, seed=2))
    key = "model.layers.0.mlp.down_proj.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])


def test_transformations_of_the_trained_standard_llama(lineage_zoo: Zoo) -> None:
    """The same identities hold on trained weights (the LINEAGE base itself)."""
    spec = lineage_zoo.spec("llama")
    parent = load_state(lineage_zoo.llama)
    ref = logits(spec, parent)
    for name, args in [("permute", {}), ("rescale", {"qk_per": "pair", "vo_per": "dim"})]:
        child = derived_spec(spec, name, args, seed=5)
        state = apply(name, parent, child)
        torch.testing.assert_close(logits(child, state), ref, atol=LOGITS_ATOL, rtol=0)
        assert min(rel_change(state[k], v) for k, v in parent.items() if v.ndim == 2) > MIN_CHANGE


def test_bad_transformation_arguments_are_refused() -> None:
    spec = SPECS["llama_gqa4"]
    parent = state_of(lively(spec))
    with pytest.raises(ValueError, match="unknown permute parts"):
        apply("permute", parent, derived_spec(spec, "permute", {"parts": ["rows"]}))
    with pytest.raises(ValueError, match="bad arguments"):
        derived_spec(spec, "rescale", {"drop": [1]})
    stale = ModelSpec(**(spec.model_dump() | {"parent": spec, "derivation": "rescale",
                                              "derivation_args": {"drop": [1]}}))
    with pytest.raises(ValueError, match="bad arguments"):
        apply("rescale", parent, stale)
    with pytest.raises(ValueError, match="bad arguments"):
        derived_spec(spec, "prune", {"order": [0]})
    with pytest.raises(ValueError, match="needs a decoder"):
        apply("permute", state_of(lively(STANDARD["bert"])),
              derived_spec(STANDARD["bert"], "permute"))


# --- depth ------------------------------------------------------------------------------------


def layer_state(state: State, n: int) -> State:
    prefix = f"model.layers.{n}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("name", "args", "sources"),
    [
        ("prune", {}, [0, 1, 3, 4, 6, 7]),
        ("prune", {"drop": [0, 7]}, [1, 2, 3, 4, 5, 6]),
        ("duplicate", {}, [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]),
        ("duplicate", {"order": [0, 0, 1, 7]}, [0, 0, 1, 7]),
    ],
)
@pytest.mark.parametrize("family", ["llama", "qwen2_moe"])
def test_depth_changes_copy_the_listed_layers(family: str, name: str, args: dict[str, object],
                                              sources: list[int]) -> None:
    spec = ModelSpec(family=family, hidden=32, intermediate=16, shared_intermediate=16, experts=2)
    assert spec.num_layers == 8
    parent = state_of(lively(spec))
    child = derived_spec(spec, name, args, seed=3)
    assert child.num_layers == len(sources)
    assert layer_sources(name, 8, args) == sources
    state = apply(name, parent, child)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(child)
    for n, src in enumerate(sources):
        got, want = layer_state(state, n), layer_state(parent, src)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    for key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(state[key], parent[key])
    assert logits(child, state).shape == (*IDS.shape, spec.vocab)


def test_prune_works_for_encoders_too() -> None:
    spec = ModelSpec(family="bert", num_layers=3, hidden=32, intermediate=48)
    parent = state_of(lively(spec))
    child = derived_spec(spec, "prune", {"drop": [1]})
    state = apply("prune", parent, child)
    assert child.num_layers == 2
    assert torch.equal(state["bert.encoder.layer.1.output.dense.weight"],
                       parent["bert.encoder.layer.2.output.dense.weight"])


def test_child_depth_must_match_the_derivation(tmp_path: Path) -> None:
    """``derived_spec`` sets ``num_layers`` from the derivation; a hand-written child spec that
    keeps the parent's depth is refused with a message naming ``num_layers``."""
    spec = ModelSpec(family="llama", num_layers=4, hidden=32, intermediate=32, steps=6,
                     corpus_bytes=8192)
    with pytest.raises(ValueError, match="gives 3 layers"):
        derived_spec(spec, "prune", {"drop": [1]}, num_layers=4)
    stale = ModelSpec(**(spec.model_dump() | {"parent": spec, "derivation": "prune",
                                              "derivation_args": {"drop": [1]}, "steps": 0}))
    with pytest.raises(ValueError, match="num_layers=4"):
        build_model(stale, tmp_path)
    with pytest.raises(ValueError, match="cannot drop"):
        derived_spec(spec, "prune", {"drop": [4]})
    with pytest.raises(ValueError, match="does not index"):
        derived_spec(spec, "duplicate", {"order": [0, 9]})
    child = derived_spec(spec, "duplicate", {"order": [0, 1, 1, 2, 3]}, steps=0)
    folder = build_model(child, tmp_path)
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 5
    assert read_spec(folder) == child
    parent_state, state = load_state(build_model(spec, tmp_path)), load_state(folder)
    assert torch.equal(state["model.layers.2.mlp.up_proj.weight"],
                       parent_state["model.layers.1.mlp.up_proj.weight"])
    assert load_model(folder).spec.num_layers == 5


# --- precision --------------------------------------------------------------------------------


def test_cast_rounds_through_bf16_then_fp16() -> None:
    """Each value moves by at most 2^-8 of itself (bf16's half ulp, fp16 then adds nothing but its
    subnormal spacing near zero); most values do move."""
    spec = SPECS["qwen2"]
    parent = state_of(lively(spec))
    state = apply("cast", parent, derived_spec(spec, "cast"))
    moved = 0
    for key, old in parent.items():
        new = state[key]
        assert new.dtype == torch.float32
        assert torch.equal(new, old.bfloat16().half().float())
        assert ((new - old).abs() <= 2**-8 * old.abs() + 2**-24).all(), key
        moved += int((new != old).sum())
    assert moved > 0.9 * sum(v.numel() for v in parent.values())
    fp16 = apply("cast", parent, derived_spec(spec, "cast", {"dtypes": ["float16"]}))
    key = "model.layers.0.mlp.up_proj.weight"
    assert 0 < rel_change(fp16[key], parent[key]) < 2**-11


def test_int8_quantises_every_matrix_per_row() -> None:
    """Every 2-D weight lands on 255 symmetric levels per row, each value within half a step
    (``absmax / 254``) of the original, under 1% relative error overall; 1-D tensors untouched."""
    spec = SPECS["mixtral"]
    parent = state_of(lively(spec))
    state = apply("int8", parent, derived_spec(spec, "int8"))
    for key, old in parent.items():
        new = state[key]
        if old.ndim != 2:
            assert torch.equal(new, old), key
            continue
        step = old.abs().amax(dim=1, keepdim=True) / 127
        assert ((new - old).abs() <= step / 2 * (1 + 1e-5)).all(), key
        levels = new / step
        assert torch.allclose(levels, levels.round(), atol=1e-3), key
        assert 0 < rel_change(new, old) < 0.01, key
    assert torch.equal(quantise_rows(torch.zeros(2, 3)), torch.zeros(2, 3))


# --- LINEAGE and PAIRS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lineage_zoo(zoo_root: Path) -> Zoo:
    """Standard and LINEAGE models in the session's zoo cache."""
    return Zoo(zoo_root, ZOO_SPECS)


def test_pairs_have_the_stated_truth_and_layer_maps() -> None:
    assert not set(LINEAGE) & set(STANDARD)
    identity = tuple(range(8))
    expected = {
        "self": ("llama", "derived", identity),
        "finetune_other_data": ("llama_ft_code", "derived", identity),
        "long_high_lr": ("llama_long", "derived", identity),
        "permuted_then_trained": ("llama_permuted", "derived", identity),
        "rescaled_then_trained": ("llama_rescaled", "derived", identity),
        "pruned_then_trained": ("llama_pruned", "derived", (0, 1, 3, 4, 6, 7)),
        "upscaled_then_trained": ("llama_upscaled", "derived", (0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7)),
        "cast_bf16_fp16": ("llama_cast", "derived", identity),
        "int8_roundtrip": ("llama_int8", "derived", identity),
        "other_seed": ("llama_seed2", "independent", None),
        "other_data_from_scratch": ("llama_other_data", "independent", None),
        "other_depth_other_seed": ("llama_6layer_seed8", "independent", None),
        "qwen2_same_shapes": ("qwen2", "independent", None),
        "mistral_same_shapes": ("mistral", "independent", None),
    }
    assert {p.name: (p.candidate, p.truth, p.layer_map) for p in PAIRS} == expected
    assert all(p.base == "llama" for p in PAIRS)
    long = LINEAGE["llama_long"]
    assert long.steps == 3 * STANDARD["llama"].steps
    assert long.lr > 2 * STANDARD["llama"].lr
    pruned = LINEAGE["llama_pruned"]
    twice = derived_spec(pruned, "prune", {"drop": [0]})
    assert layer_map(STANDARD["llama"], twice) == (1, 3, 4, 6, 7)
    assert layer_map(pruned, STANDARD["llama"]) is None


@pytest.mark.slow
def test_lineage_models_build_and_load(lineage_zoo: Zoo) -> None:
    """Every model a pair mentions builds and loads; configs state the candidate's depth;
    untrained derivations hold exactly the derived weights, trained ones moved away from them."""
    names = sorted({p.candidate for p in PAIRS} | {p.base for p in PAIRS})
    folders = {name: lineage_zoo[name] for name in names if name not in LINEAGE}
    folders |= {name: lineage_zoo[name] for name in LINEAGE}
    base = load_state(folders["llama"])
    for pair in PAIRS:
        folder, spec = folders[pair.candidate], lineage_zoo.spec(pair.candidate)
        assert read_spec(folder) == spec
        config = json.loads((folder / "config.json").read_text())
        assert config["num_hidden_layers"] == spec.num_layers
        if pair.layer_map is not None:
            assert len(pair.layer_map) == spec.num_layers
        model = load_model(folder)
        with torch.no_grad():
            assert torch.isfinite(model(IDS).logits).all()
        if spec.derivation is None or spec.parent is None:
            continue
        state, start = load_state(folder), apply(spec.derivation, base, spec)
        if spec.steps == 0:
            assert all(torch.equal(state[k], start[k]) for k in start), pair.name
        else:
            assert any(not torch.equal(state[k], start[k]) for k in start), pair.name


def test_registry_lists_every_derivation() -> None:
    assert {"permute", "rescale", "rotate", "prune", "duplicate", "cast", "int8"} <= set(
        derive.DERIVATIONS)
