"""The model zoo: corpus, specs, training, HF layout and equivalence with ``transformers``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from verifier.zoo import (
    DOMAINS,
    STANDARD,
    ModelSpec,
    Zoo,
    build_model,
    corpus,
    derive,
    hf_config,
    load_model,
    load_state,
    read_spec,
    read_stats,
    save_hf_folder,
    train,
)
from verifier.zoo import export as zoo_export
from verifier.zoo.train import segment_ids

LN_VOCAB = math.log(256)
#: Every standard model must end this far below its initial held-out loss ...
MIN_LOSS_DROP = 2.0
#: ... and below this absolute loss (unigram byte entropy of the corpus is about 3.06 nats).
MAX_FINAL_LOSS = 2.5
#: Our forward vs transformers' forward, float32 on CPU (observed differences are <= 1e-6).
LOGITS_ATOL = 1e-5

TINY = ModelSpec(family="llama", num_layers=2, hidden=32, intermediate=64, steps=12, corpus_bytes=8192)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the HF checkpoint of ``spec``, written out independently."""
    h, i, v, e = spec.hidden, spec.intermediate, spec.vocab, spec.experts
    if spec.family == "bert":
        out: dict[str, tuple[int, ...]] = {
            "bert.embeddings.word_embeddings.weight": (v, h),
            "bert.embeddings.position_embeddings.weight": (spec.max_positions, h),
            "bert.embeddings.token_type_embeddings.weight": (2, h),
            "bert.embeddings.LayerNorm.weight": (h,),
            "bert.embeddings.LayerNorm.bias": (h,),
            "cls.predictions.transform.dense.weight": (h, h),
            "cls.predictions.transform.dense.bias": (h,),
            "cls.predictions.transform.LayerNorm.weight": (h,),
            "cls.predictions.transform.LayerNorm.bias": (h,),
            "cls.predictions.bias": (v,),
        }
        for n in range(spec.num_layers):
            p = f"bert.encoder.layer.{n}."
            for lin in ("attention.self.query", "attention.self.key", "attention.self.value",
                        "attention.output.dense"):
                out[f"{p}{lin}.weight"], out[f"{p}{lin}.bias"] = (h, h), (h,)
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                out[f"{p}{ln}.weight"], out[f"{p}{ln}.bias"] = (h,), (h,)
            out[f"{p}intermediate.dense.weight"], out[f"{p}intermediate.dense.bias"] = (i, h), (i,)
            out[f"{p}output.dense.weight"], out[f"{p}output.dense.bias"] = (h, i), (h,)
        return out
    q, kv = spec.heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(spec.num_layers):
        p = f"model.layers.{n}."
        out |= {
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
        if spec.family in ("qwen2", "qwen2_moe"):
            out |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                    p + "self_attn.v_proj.bias": (kv,)}
        if spec.family == "mixtral":
            out[p + "block_sparse_moe.gate.weight"] = (e, h)
            for x in range(e):
                ex = f"{p}block_sparse_moe.experts.{x}."
                out |= {ex + "w1.weight": (i, h), ex + "w3.weight": (i, h), ex + "w2.weight": (h, i)}
            continue
        mlps = [(p + "mlp.", i)]
        if spec.family == "qwen2_moe":
            s = spec.shared_intermediate
            out |= {p + "mlp.gate.weight": (e, h), p + "mlp.shared_expert_gate.weight": (1, h)}
            mlps = [(f"{p}mlp.experts.{x}.", i) for x in range(e)] + [(p + "mlp.shared_expert.", s)]
        for m, width in mlps:
            out |= {m + "gate_proj.weight": (width, h), m + "up_proj.weight": (width, h),
                    m + "down_proj.weight": (h, width)}
    return out


def stored_tensors(folder: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype, str]]:
    """name -> (shape, dtype, file) read straight from the safetensors files."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            assert sf.metadata() == {"format": "pt"}
            for name in sf.keys():
                t = sf.get_tensor(name)
                out[name] = (tuple(t.shape), t.dtype, f.name)
    return out


# --- corpus -----------------------------------------------------------------------------------


def test_corpus_is_deterministic_bytes_of_the_requested_size() -> None:
    a, b = corpus("prose", 5000), corpus("prose", 5000)
    assert a.dtype == torch.uint8
    assert a.shape == (5000,)
    assert torch.equal(a, b)
    assert not torch.equal(a, corpus("prose", 5000, seed=1))
    with pytest.raises(ValueError, match="unknown corpus domain"):
        corpus("klingon", 100)


@pytest.mark.parametrize(("d1", "d2"), [("prose", "code"), ("prose", "tables"), ("code", "tables")])
def test_corpus_domains_are_really_different_data(d1: str, d2: str) -> None:
    def hist(d: str) -> torch.Tensor:
        h = torch.bincount(corpus(d, 20_000).long(), minlength=256).float()
        return h / h.sum()

    total_variation = 0.5 * (hist(d1) - hist(d2)).abs().sum().item()
    assert total_variation > 0.3
    assert set(DOMAINS) >= {d1, d2}


# --- specs ------------------------------------------------------------------------------------


def test_spec_is_frozen_validated_and_hashed_stably() -> None:
    with pytest.raises(ValueError, match="frozen"):
        TINY.seed = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="domain"):
        ModelSpec(family="llama", domain="nope")
    with pytest.raises(ValueError, match="kv_heads"):
        ModelSpec(family="llama", heads=4, kv_heads=3)
    with pytest.raises(ValueError, match="bert"):
        ModelSpec(family="bert", kv_heads=2)
    same = ModelSpec.model_validate_json(TINY.model_dump_json())
    assert same.digest() == TINY.digest()
    assert TINY.model_copy(update={"seed": 1}).digest() != TINY.digest()
    assert TINY.folder_name().startswith("llama-")
    assert ModelSpec(family="llama").num_kv_heads == 2 < ModelSpec(family="llama").heads


# --- training ---------------------------------------------------------------------------------


def test_training_is_deterministic_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    m1, s1 = train(TINY)
    m2, s2 = train(TINY)
    assert torch.get_num_threads() == threads
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert s1.final_loss == s2.final_loss
    assert s1.curve == s2.curve
    m3, _ = train(TINY.model_copy(update={"seed": 1}))
    assert not torch.equal(sd1["model.embed_tokens.weight"], m3.state_dict()["model.embed_tokens.weight"])


def test_train_from_init_starts_where_the_init_ends() -> None:
    parent, ps = train(TINY)
    child_spec = TINY.model_copy(update={"steps": 0})
    child, cs = train(child_spec, init=parent.state_dict())
    assert cs.initial_loss == pytest.approx(ps.final_loss, abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(parent.state_dict().values(),
                                                  child.state_dict().values(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STANDARD))
def test_standard_model_trained_and_loss_dropped(zoo: Zoo, name: str) -> None:
    stats = read_stats(zoo[name])
    assert stats is not None
    assert stats.initial_loss > LN_VOCAB - 0.5
    assert stats.final_loss < MAX_FINAL_LOSS
    assert stats.initial_loss - stats.final_loss > MIN_LOSS_DROP
    assert read_spec(zoo[name]) == zoo.spec(name)


# --- HF layout --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STANDARD))
def test_standard_model_has_the_hf_layout(zoo: Zoo, name: str) -> None:
    folder, spec = zoo[name], zoo.spec(name)
    stored = stored_tensors(folder)
    expected = expected_shapes(spec)
    assert set(stored) == set(expected)
    assert {k: v[0] for k, v in stored.items()} == expected
    assert {v[1] for v in stored.values()} == {_DTYPES[spec.dtype]}
    config = json.loads((folder / "config.json").read_text())
    assert config == hf_config(spec)
    assert config["model_type"] == spec.family
    assert config["num_hidden_layers"] == spec.num_layers
    if spec.family != "bert":
        assert config["tie_word_embeddings"] is False
        assert config["num_key_value_heads"] < config["num_attention_heads"]
    provenance = json.loads((folder / "training.json").read_text())
    assert provenance["seed"] == spec.seed
    assert provenance["digest"] == spec.digest()
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_sharded_model_index_matches_its_shards(zoo: Zoo) -> None:
    folder, spec = zoo.qwen2_moe_sharded, zoo.spec("qwen2_moe_sharded")
    assert spec.num_shards == 3
    assert spec.dtype == "bfloat16"
    names = [f"model-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)]
    assert sorted(p.name for p in folder.glob("*.safetensors")) == names
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    stored = stored_tensors(folder)
    assert index["weight_map"] == {k: v[2] for k, v in stored.items()}
    sizes = {k: math.prod(v[0]) * 2 for k, v in stored.items()}
    assert index["metadata"]["total_size"] == sum(sizes.values())
    per_file = [sum(s for k, s in sizes.items() if stored[k][2] == f) for f in names]
    assert min(per_file) > 0.5 * max(per_file)
    base = load_state(zoo.qwen2_moe)
    assert all(torch.equal(base[k].to(torch.bfloat16), t) for k, t in load_state(folder).items())


def test_build_reuses_complete_folders_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = build_model(TINY, tmp_path)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_model(TINY, tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = build_model(TINY, tmp_path / "again")
    assert (other / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(zoo_export, "save_file", broken)
    model = load_model(folder)
    with pytest.raises(OSError, match="disk full"):
        save_hf_folder(model, TINY, folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["again", folder.name])


def test_derived_spec_starts_from_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def double_norms(state: dict[str, torch.Tensor], child: ModelSpec) -> dict[str, torch.Tensor]:
        return {k: v * 2 if k.endswith("norm.weight") else v for k, v in state.items()}

    monkeypatch.setitem(derive.DERIVATIONS, "double_norms", double_norms)
    child = ModelSpec(**(TINY.model_dump() | {"parent": TINY, "derivation": "double_norms",
                                              "steps": 0}))
    parent_state = load_state(build_model(TINY, tmp_path))
    child_state = load_state(build_model(child, tmp_path))
    assert all(torch.equal(child_state[k], v) for k, v in double_norms(parent_state, child).items())
    with pytest.raises(ValueError, match="unknown derivation"):
        build_model(child.model_copy(update={"derivation": "nope"}), tmp_path)
    with pytest.raises(ValueError, match="needs a parent"):
        ModelSpec(family="llama", derivation="double_norms")


def test_zoo_builds_lazily(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path, {"tiny": TINY})
    assert list(tmp_path.iterdir()) == []
    assert zoo.tiny == zoo["tiny"] == tmp_path / TINY.folder_name()
    with pytest.raises(KeyError):
        zoo.path("nope")
    with pytest.raises(AttributeError):
        _ = zoo.nope


@pytest.mark.slow
def test_build_script_prints_the_table(zoo: Zoo, zoo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo.path("llama")
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_zoo.py"
    module_spec = importlib.util.spec_from_file_location("build_zoo", script)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert module.main([str(zoo_root), "--only", "llama"]) == 0
    out = capsys.readouterr().out
    assert "llama" in out
    assert "->" in out
    assert STANDARD["llama"].folder_name() in out


# --- transformers equivalence -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STANDARD))
def test_transformers_loads_it_and_computes_the_same_logits(zoo: Zoo, name: str) -> None:
    """No missing/unexpected/mismatched keys in the matching ``AutoModelFor...`` class, and the
    same float32 logits as our forward, MoE included: routing matches HF (fp32 softmax over all
    experts, top-k, renormalised for Mixtral, ``norm_topk_prob`` for Qwen2-MoE, sigmoid-gated
    shared expert), and the per-expert files are fused by transformers' own converters."""
    transformers = pytest.importorskip("transformers")
    folder, spec = zoo[name], zoo.spec(name)
    auto = transformers.AutoModelForMaskedLM if spec.is_encoder else transformers.AutoModelForCausalLM
    hf, info = auto.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    assert {k: v for k, v in info.items() if v} == {}
    assert type(hf).__name__ == hf_config(spec)["architectures"][0]
    hf.eval()
    ours = load_model(folder)
    ids = torch.randint(32, 127, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if spec.is_encoder:
            types = segment_ids(ids)
            theirs = hf(input_ids=ids, token_type_ids=types).logits
            mine = ours(ids, types).logits
        else:
            theirs = hf(input_ids=ids).logits
            mine = ours(ids).logits
    torch.testing.assert_close(mine, theirs, atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "mixtral", "qwen2_moe", "bert"])
def test_layout_equals_what_transformers_itself_saves(tmp_path: Path, family: str) -> None:
    """From our ``config.json``, transformers builds and saves a model with exactly our tensor
    names and shapes (it writes MoE experts back in the classic per-expert form too)."""
    transformers = pytest.importorskip("transformers")
    spec = ModelSpec(family=family, num_layers=2, hidden=32, intermediate=48, experts=3,
                     shared_intermediate=40)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(spec)))
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    auto = transformers.AutoModelForMaskedLM if spec.is_encoder else transformers.AutoModelForCausalLM
    auto.from_config(config).save_pretrained(tmp_path / "hf")
    theirs = {k: v[0] for k, v in stored_tensors(tmp_path / "hf").items()}
    assert theirs == expected_shapes(spec)
