"""MoE upcycling: which base FFN neurons each expert holds, tested against the rotation null.

Zoo pairs (``verifier.zoo.pairs.MOE_PAIRS``): sparse and fine-grained upcycling of the trained
``llama`` (whose derivations record which base neuron every expert neuron starts from), new
experts on the base's attention, and MoEs trained from scratch.
"""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from verifier.architectures.layout import DOWN, EMBED, GATE, UP
from verifier.model import Model, open_model
from verifier.probes import hidden_alignment as hidden
from verifier.probes import moe_upcycling as moe
from verifier.probes import neuron_matching as neurons
from verifier.probes.frame_pairing import FramePairing
from verifier.probes.pairing import LazyLayers, Pairing, Side
from verifier.stats import harmonic_combine
from verifier.zoo import Zoo, derive, load_state
from verifier.zoo.pairs import MOE_LINEAGE, MOE_PAIRS, STANDARD, ZOO_SPECS, MoEPair

ALPHA = 1e-6
DRAWS = 24
UPCYCLED = [p for p in MOE_PAIRS if p.upcycled]
NOT_UPCYCLED = [p for p in MOE_PAIRS if not p.upcycled]


def _side(model: Model, rows: np.ndarray) -> Side:
    side = Side(embed=model.load(model.layout.globals[EMBED])[torch.as_tensor(rows)].float())
    for i in range(model.layout.num_layers):
        ffn = neurons.load_ffn(model, i)
        if ffn is not None:
            side.ffn[i] = ffn
    return side


def _pairing(base: Model, cand: Model, seed: int = 0) -> tuple[Pairing, np.random.Generator]:
    ib, ic, _ = hidden.shared_token_rows(base.vocabulary(), cand.vocabulary(),
                                         base.layout.vocab_size, cand.layout.vocab_size)
    rng = np.random.default_rng(seed)
    return Pairing(_side(base, ib), _side(cand, ic), rng, DRAWS), rng


def _probe(base: Path, cand: Path, seed: int = 0, **kwargs):
    """The probe and the MoE section (None when the probe does not apply)."""
    with open_model(base) as mb, open_model(cand) as mc:
        pairing, rng = _pairing(mb, mc, seed)
        found = moe.upcycling_probe(mb, mc, pairing, None, rng, alpha=ALPHA, **kwargs)
    return None if found is None else found[:2]


def _analysis(base: Path, cand: Path, **kwargs) -> moe.UpcyclingAnalysis:
    with open_model(base) as mb, open_model(cand) as mc:
        pairing, _ = _pairing(mb, mc)
        pools = moe.base_pools(pairing.base.ffn, moe.load_moe(mb))
        result = moe.analyse(pairing, pools, moe.load_moe(mc), **kwargs)
    assert result is not None
    return result


@pytest.fixture(scope="module")
def results(zoo: Zoo):
    """Probe and MoE section of every MoE pair, computed once for the module."""
    return {p.name: _probe(zoo[p.base], zoo[p.candidate]) for p in MOE_PAIRS}


# --- the zoo material -------------------------------------------------------------------------


def test_moe_pairs_state_their_truth() -> None:
    assert not set(MOE_LINEAGE) & (set(ZOO_SPECS) - set(MOE_LINEAGE))
    truth = {p.name: (p.candidate, p.truth, p.upcycled) for p in MOE_PAIRS}
    assert truth == {
        "sparse_upcycled": ("llama_moe_coarse", "derived", True),
        "fine_grained_upcycled_shared_slice": ("llama_moe_fine", "derived", True),
        "fine_grained_upcycled_shared_new": ("llama_moe_fine_wide", "derived", True),
        "new_experts_on_base_attention": ("llama_moe_new_experts", "derived", False),
        "mixtral_from_scratch": ("mixtral", "independent", False),
        "qwen2_moe_from_scratch": ("qwen2_moe", "independent", False),
    }
    base = STANDARD["llama"]
    for spec in MOE_LINEAGE.values():
        assert spec.is_moe
        assert (spec.hidden, spec.heads, spec.vocab, spec.num_layers) == (
            base.hidden, base.heads, base.vocab, base.num_layers)


@pytest.mark.parametrize("name", list(MOE_LINEAGE))
def test_upcycle_plan_slices_shuffled_replicas(name: str) -> None:
    spec = MOE_LINEAGE[name]
    plan = derive.upcycle_plan(spec)
    dense = STANDARD["llama"].intermediate
    replicas = spec.experts * spec.intermediate // dense
    reinit = spec.derivation_args.get("reinit", 0.0)
    for layer in plan.experts:
        assert [len(e) for e in layer] == [spec.intermediate] * spec.experts
        held = np.concatenate(layer)
        kept = held[held >= 0]
        assert kept.size == round((1 - reinit) * spec.intermediate) * spec.experts
        # every base neuron at most once per replica, never twice in one expert
        assert np.bincount(kept, minlength=dense).max() <= replicas
        assert all(len(set(e) - {-1}) == sum(i >= 0 for i in e) for e in layer)


def test_upcycle_derivation_copies_the_planned_neurons(zoo: Zoo) -> None:
    """Before training, each kept expert neuron *is* its planned base neuron (down rescaled);
    attention and embeddings are the base's; router and re-initialised neurons are new."""
    spec = MOE_LINEAGE["llama_moe_fine"]
    parent = load_state(zoo["llama"])
    state = derive.apply("upcycle", parent, spec)
    plan = derive.upcycle_plan(spec)
    scale = spec.derivation_args["down_scale"]
    for layer in (0, 5):
        pre = f"model.layers.{layer}.mlp."
        g, u, d = (parent[f"{pre}{n}_proj.weight"] for n in ("gate", "up", "down"))
        for e, src in enumerate(plan.experts[layer]):
            idx = torch.as_tensor(src)
            keep = idx >= 0
            ex = f"{pre}experts.{e}."
            assert torch.equal(state[ex + "gate_proj.weight"][keep], g[idx[keep]])
            assert torch.equal(state[ex + "up_proj.weight"][keep], u[idx[keep]])
            assert torch.allclose(state[ex + "down_proj.weight"][:, keep], scale * d[:, idx[keep]])
            fresh = torch.nn.functional.normalize(state[ex + "up_proj.weight"][~keep], dim=1)
            assert (fresh @ torch.nn.functional.normalize(u, dim=1).T).abs().max() < 0.8
        shared = torch.as_tensor(plan.shared[layer])
        assert torch.equal(state[f"{pre}shared_expert.up_proj.weight"], u[shared])
    assert torch.equal(state["model.embed_tokens.weight"], parent["model.embed_tokens.weight"])
    assert torch.equal(state["model.layers.3.self_attn.o_proj.weight"],
                       parent["model.layers.3.self_attn.o_proj.weight"])
    assert not state["model.layers.3.self_attn.q_proj.bias"].any()


def test_upcycle_refuses_what_it_cannot_build() -> None:
    base = STANDARD["llama"]
    with pytest.raises(ValueError, match="whole number of copies"):
        derive.upcycle_plan(derive.derived_spec(base, "upcycle", {}, family="mixtral",
                                                intermediate=48, experts=3))
    with pytest.raises(ValueError, match="no shared expert"):
        derive.upcycle_plan(derive.derived_spec(base, "upcycle", {"shared": "new"},
                                                family="mixtral"))
    with pytest.raises(ValueError, match="needs shared"):
        derive.upcycle_plan(derive.derived_spec(base, "upcycle", {}, family="qwen2_moe",
                                                intermediate=64))


# --- verdicts on the pairs --------------------------------------------------------------------


def _truth(pair: MoEPair, layer: int, expert: int) -> np.ndarray:
    plan = pair.sources
    assert plan is not None
    routed = plan.experts[layer]
    return np.asarray(routed[expert] if expert < len(routed) else plan.shared[layer])


@pytest.mark.parametrize("pair", UPCYCLED, ids=lambda p: p.name)
def test_upcycled_experts_name_their_base_neurons(pair: MoEPair, results) -> None:
    probe, section = results[pair.name]
    assert section.upcycled
    assert section.p_value < ALPHA
    assert probe.p_value == section.p_value
    assert probe.decisive
    assert len(probe.layers) == 8
    correct = kept_total = wrongly_matched = reinit_total = 0
    for entry in section.experts:
        truth = _truth(pair, entry.layer, entry.expert)
        got = np.asarray(entry.base_neurons)
        kept = truth >= 0
        assert entry.base_layer == entry.layer
        assert len(got) == len(truth)
        # coverage close to the fraction kept (re-initialised neurons match nothing)
        assert abs(entry.coverage - kept.mean()) <= 0.1, entry
        correct += int((got[kept] == truth[kept]).sum())
        kept_total += int(kept.sum())
        wrongly_matched += int((got[~kept] >= 0).sum())
        reinit_total += int((~kept).sum())
    assert correct >= 0.9 * kept_total
    assert wrongly_matched <= 0.01 * max(reinit_total, 1)


@pytest.mark.parametrize("pair", NOT_UPCYCLED, ids=lambda p: p.name)
def test_experts_trained_from_scratch_are_not_upcycled(pair: MoEPair, results) -> None:
    probe, section = results[pair.name]
    assert not section.upcycled
    assert section.p_value > 1e-3
    assert np.mean([e.coverage for e in section.experts]) < 0.01
    assert probe.details["agreeing_neurons"] <= 5


def test_new_experts_on_base_attention_are_near_but_not_copies(zoo: Zoo) -> None:
    """Experts trained in the base's residual stream read its directions: their matched
    similarity is far above the rotation null, yet no neuron reproduces a base neuron's gate,
    up and down at once; the agreement statistic is what tells copies from neighbours."""
    result = _analysis(zoo["llama"], zoo["llama_moe_new_experts"])
    z = [(np.nanmean(lr.observed.sim) - np.mean(lr.null_similarity))
         / np.std(lr.null_similarity, ddof=1) for lr in result.layers]
    assert min(z) > 5  # a mean-similarity test would call every layer a copy
    assert not result.upcycled
    assert sum(lr.agree for lr in result.layers) <= 5


def test_expert_clustering_separates_upcycled_from_scratch(results, zoo: Zoo) -> None:
    """Per layer, the fraction of expert neurons that agree with one base neuron: the
    upcycled layers' lowest is far above every other layer's highest; the expert-by-expert
    overlap of held base neurons shows how each MoE was cut."""
    up = [lv.statistic for p in UPCYCLED for lv in results[p.name][0].layers]
    other = [lv.statistic for p in NOT_UPCYCLED for lv in results[p.name][0].layers]
    assert min(up) > 0.3
    assert max(other) < 0.02
    assert all(lv.statistic > lv.null_mean + 10 * lv.null_std
               for p in UPCYCLED for lv in results[p.name][0].layers)
    coarse = _analysis(zoo["llama"], zoo["llama_moe_coarse"]).layers[3].overlap()
    assert coarse.min() > 0.95  # every expert holds the whole FFN
    fine = _analysis(zoo["llama"], zoo["llama_moe_fine"])
    plan = derive.upcycle_plan(MOE_LINEAGE["llama_moe_fine"])
    ov = fine.layers[3].overlap()
    # experts 0-3 cut from the first replica, 4-7 from the second: disjoint within a replica
    for e in range(4):
        for f in range(4):
            if e != f:
                assert ov[e, f] == 0.0
                assert ov[4 + e, 4 + f] == 0.0
    kept = [set(x for x in plan.experts[3][e] if x >= 0) for e in range(8)]
    assert ov[0, 4] == pytest.approx(len(kept[0] & kept[4]) / min(len(kept[0]), len(kept[4])))
    assert results["mixtral_from_scratch"][0].details["mean_expert_overlap"] == 0.0


def test_shared_experts_copied_or_new(results) -> None:
    sliced = [e for e in results["fine_grained_upcycled_shared_slice"][1].experts if e.expert == 8]
    new = [e for e in results["fine_grained_upcycled_shared_new"][1].experts if e.expert == 4]
    assert len(sliced) == len(new) == 8
    assert min(e.coverage for e in sliced) > 0.95
    assert max(e.coverage for e in new) < 0.02


def test_power_check_finds_noisy_upcycled_experts(results, zoo: Zoo) -> None:
    assert all(r[0].power_p_value is not None and r[0].power_p_value < ALPHA
               for r in results.values())
    assert all(r[0].details["power_drift"] == 1.0 for r in results.values())
    with open_model(zoo["llama"]) as mb:
        pairing, rng = _pairing(mb, mb)
        base = pairing.base
    gen = torch.Generator().manual_seed(0)
    fake, layer = moe.fake_upcycled(base, base.ffn[4], 1.0, rng, gen)
    assert [u.up.shape[0] for u in layer.experts] == [64] * 4
    p = moe.power_p(pairing, {4: base.ffn[4]}, rng, drift=1.0)
    assert p is not None
    assert p < ALPHA


# --- storage and layout variants ---------------------------------------------------------------


def test_fused_expert_stacks_give_the_same_answer(zoo: Zoo, tmp_path: Path) -> None:
    """transformers v5 stores experts as 3-D ``gate_up_proj`` / ``down_proj`` stacks."""
    src = zoo["llama_moe_coarse"]
    state = load_file(str(src / "model.safetensors"))
    fused = {k: v for k, v in state.items() if ".block_sparse_moe." not in k}
    spec = MOE_LINEAGE["llama_moe_coarse"]
    for layer in range(spec.num_layers):
        p = f"model.layers.{layer}.block_sparse_moe."
        w = [[state[f"{p}experts.{e}.{n}.weight"] for n in ("w1", "w3", "w2")]
             for e in range(spec.experts)]
        fused[f"model.layers.{layer}.mlp.gate.weight"] = state[p + "gate.weight"]
        fused[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([g, u]) for g, u, _ in w])
        fused[f"model.layers.{layer}.mlp.experts.down_proj"] = torch.stack([d for _, _, d in w])
    save_file(fused, str(tmp_path / "model.safetensors"))
    shutil.copy(src / "config.json", tmp_path / "config.json")
    a = _probe(zoo["llama"], src)
    b = _probe(zoo["llama"], tmp_path)
    assert b[1] == a[1]
    assert b[0].p_value == a[0].p_value


def test_dense_and_moe_layers_interleaved(zoo: Zoo, tmp_path: Path) -> None:
    """Even layers dense (the base's own FFN, ``mlp_only_layers``), odd layers upcycled: only
    MoE layers are tested, each with the same result as in the all-MoE model."""
    src = zoo["llama_moe_fine"]
    state = load_file(str(src / "model.safetensors"))
    base = load_file(str(zoo["llama"] / "model.safetensors"))
    dense = (0, 2, 4, 6)
    mixed = {k: v for k, v in state.items()
             if not any(k.startswith(f"model.layers.{i}.mlp.") for i in dense)}
    for i in dense:
        for n in ("gate_proj", "up_proj", "down_proj"):
            key = f"model.layers.{i}.mlp.{n}.weight"
            mixed[key] = base[key]
    save_file(mixed, str(tmp_path / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config |= {"mlp_only_layers": list(dense), "intermediate_size": STANDARD["llama"].intermediate}
    (tmp_path / "config.json").write_text(json.dumps(config))
    full = _analysis(zoo["llama"], src)
    part = _analysis(zoo["llama"], tmp_path)
    assert [lr.layer for lr in part.layers] == [1, 3, 5, 7]
    for lr in part.layers:
        same = full.layers[lr.layer]
        assert np.array_equal(lr.base_neurons(), same.base_neurons())
        assert lr.p_value == same.p_value
    assert part.upcycled


def test_untested_moe_layers_are_called_against_the_nearest_tested_layers_null(zoo: Zoo) -> None:
    """Null draws for a spread of MoE layers (``tested``): every other layer keeps its
    observed matching (the same expert maps' assignments) and is called against the nearest
    tested layer's null, its threshold and counts; the probe's p-value combines the tested
    layers alone."""
    pairs = {p.name: p for p in MOE_PAIRS}
    for pair in (pairs["fine_grained_upcycled_shared_slice"], pairs["mixtral_from_scratch"]):
        full = _analysis(zoo[pair.base], zoo[pair.candidate])
        part = _analysis(zoo[pair.base], zoo[pair.candidate], tested={0, 7})
        assert [lr.layer for lr in part.layers] == list(range(8))
        assert [lr.null_layer for lr in part.layers] == [0, 0, 0, 0, 7, 7, 7, 7]
        for lr in part.layers:
            same = full.layers[lr.layer]
            assert np.array_equal(lr.observed.index, same.observed.index)
            assert np.array_equal(lr.observed.sim, same.observed.sim)
            assert lr.tested_agree == same.tested_agree
            if lr.own_null:
                assert lr.p_value == same.p_value
                assert lr.threshold == same.threshold
            else:
                assert lr.threshold == full.layers[lr.null_layer].threshold
                assert lr.null_agree == []
                assert lr.value().p_value is None
            # the borrowed call is the layer's own call on these models
            assert lr.upcycled is same.upcycled is pair.upcycled
        assert part.p_value == harmonic_combine([full.layers[0].p_value,
                                                 full.layers[7].p_value])
        assert part.upcycled is pair.upcycled


def test_an_untested_layer_is_matched_on_its_tested_sample_unless_every_map_is_asked_for(
        zoo: Zoo) -> None:
    """Without ``map_all`` a layer without null draws matches only the neurons its call counts
    (64 of 256-320 here): the same call, p-value and agreement of those neurons as when every
    neuron is matched, coverage estimated from them (within sampling error of the whole map's),
    and ``NOT_MATCHED`` for the rest; layers with null draws keep their whole maps."""
    pairs = {p.name: p for p in MOE_PAIRS}
    for pair in (pairs["fine_grained_upcycled_shared_slice"], pairs["mixtral_from_scratch"]):
        every = _analysis(zoo[pair.base], zoo[pair.candidate], tested={0, 7}, sample=64)
        part = _analysis(zoo[pair.base], zoo[pair.candidate], tested={0, 7}, sample=64,
                         map_all=False)
        assert [lr.mapped for lr in part.layers] == [True] + [False] * 6 + [True]
        assert part.p_value == every.p_value
        for lr, whole in zip(part.layers, every.layers, strict=True):
            assert (lr.upcycled, lr.p_value, lr.tested_agree) == (
                whole.upcycled, whole.p_value, whole.tested_agree)
            bn = lr.base_neurons()
            if lr.mapped:
                assert np.array_equal(bn, whole.base_neurons())
                continue
            idx = lr.matched_only
            assert lr.matched == idx.size == 64 < lr.neurons
            assert np.array_equal(lr.observed.agree[idx], whole.observed.agree[idx])
            assert (np.delete(bn, idx) == moe.NOT_MATCHED).all()
            assert (bn[idx] != moe.NOT_MATCHED).all()
            # coverage of the sample against the whole map's: 64 neurons, sd <= 0.0625
            assert abs(lr.significant[idx].mean() - whole.significant.mean()) < 0.2
            for entry in lr.experts():
                matched = [n for n in entry.base_neurons if n != moe.NOT_MATCHED]
                if matched:
                    assert entry.coverage == sum(n >= 0 for n in matched) / len(matched)
        if pair.upcycled:
            assert 0.4 < part.statistic < 0.8
            assert abs(part.statistic - every.statistic) < 0.1
        else:
            assert part.statistic == every.statistic == 0.0


def test_an_untested_layers_observed_features_need_no_pool(zoo: Zoo) -> None:
    """A layer without null draws takes the observed pairing's features straight from its
    experts and the base FFN as stored (on a frame: the frame's columns only): the same numbers,
    bit for bit, as through the pooled copy and the float32 base, full space or frame, float32
    or bf16 weights."""
    with open_model(zoo["llama"]) as mb, open_model(zoo["llama_moe_fine"]) as mc:
        pairing, rng = _pairing(mb, mc)
        layer = moe.load_moe(mc)[3]
        pool = pairing.base.ffn[3]
        framed = FramePairing(pairing.base, pairing.cand, rng, 4, width=32)

        def bf16(f: neurons.FFNWeights) -> neurons.FFNWeights:
            return neurons.FFNWeights(gate=f.gate.bfloat16(), up=f.up.bfloat16(),
                                      down=f.down.T.contiguous().bfloat16().T)

        for units, base in ((layer.units, pool), ([bf16(u) for u in layer.units], bf16(pool))):
            for p in (pairing, framed):
                got = p.observed_pool_features(units)
                want = p.pooled_features_of(p.pool(units), -1)
                got_base = p.observed_base_features(base)
                want_base = p.base_features_of(base.placed(p.compute), -1)
                for role in ("gate", "up", "down"):
                    assert torch.equal(getattr(got, role), getattr(want, role))
                    assert torch.equal(getattr(got_base, role), getattr(want_base, role))


def test_a_borrowed_null_is_scaled_to_the_layers_tested_neurons() -> None:
    """A layer testing twice the neurons of the one whose null it borrows sees twice the
    chance agreements: the same rate, the same call as counts drawn at its own size."""
    def result(layer: int, trials: int, agree: int, counts: list[int]) -> moe.LayerResult:
        obs = moe.Matching(np.zeros(trials, dtype=np.int64), np.zeros(trials),
                           np.zeros(trials, dtype=bool), np.zeros(trials, dtype=np.int64))
        return moe.LayerResult(
            layer=layer, base_layer=layer, widths=[trials], routed=1, observed=obs,
            trials=trials, tested_agree=agree, null_agree=counts, null_similarity=[],
            threshold=0.5, p_value=1.0, phi=1.0, bonferroni=1, alpha=ALPHA,
            null_layer=layer if counts else None)

    tested = result(3, 1000, 0, [2, 4, 3, 5] * 6)
    wide = result(4, 2000, 30, []).borrow(tested)
    assert wide.null_layer == 3
    assert not wide.own_null
    assert wide.threshold == tested.threshold
    assert wide.p_value == moe.agreement_p(30, 2000, [4, 8, 6, 10] * 6)[0]
    assert result(4, 2000, 12, []).borrow(tested).p_value > 0.05  # the null rate, not a signal


def test_base_layer_found_by_the_statistic_when_depths_differ(zoo: Zoo) -> None:
    result = _analysis(zoo["llama"], zoo["llama_moe_fine"], same_depth=False)
    assert [lr.base_layer for lr in result.layers] == list(range(8))
    assert all(lr.bonferroni == 8 for lr in result.layers)
    assert result.upcycled
    mapped = _analysis(zoo["llama"], zoo["llama_moe_fine"], layer_map={3: 2})
    assert mapped.layers[3].base_layer == 2
    assert mapped.layers[3].agree < 0.1 * result.layers[3].agree


def test_moe_base(zoo: Zoo) -> None:
    """A MoE base offers its experts' neurons pooled (routed, then shared): the model against
    itself holds its own neurons; an independent MoE holds none."""
    fine = zoo["llama_moe_fine"]
    probe, section = _probe(fine, fine)
    assert section.upcycled
    offset = 0
    for entry in section.experts[:9]:
        width = len(entry.base_neurons)
        assert entry.base_neurons == list(range(offset, offset + width))
        offset += width
    _, other = _probe(zoo["qwen2_moe"], fine)
    assert not other.upcycled
    assert probe.power_p_value is not None
    assert probe.power_p_value < ALPHA


def test_a_moe_bases_layers_are_pooled_one_at_a_time(zoo: Zoo, monkeypatch) -> None:
    """Pooling copies a layer's experts: a MoE base's pools are made when a layer is asked
    for, the last one kept, never all at once, and asking whether a layer is there reads
    nothing."""
    made: list[int] = []
    pooled = moe.MoELayer.pooled

    def counting(layer: moe.MoELayer) -> neurons.FFNWeights:
        made.append(sum(layer.widths))
        return pooled(layer)

    monkeypatch.setattr(moe.MoELayer, "pooled", counting)
    with open_model(zoo["llama_moe_fine"]) as mb:
        pools = moe.base_pools({}, moe.load_moe(mb))
        layers = sorted(pools)
        assert len(layers) == mb.layout.num_layers
        assert all(i in pools for i in layers)
        assert made == []
        first = pools[layers[0]]
        assert pools[layers[0]] is first
        assert len(made) == 1
        for i in layers:
            assert pools[i].up.shape[0] == made[-1]
        assert len(made) == len(layers)


def test_the_probe_reads_a_moe_candidate_one_layer_at_a_time_reading_ahead(zoo: Zoo) -> None:
    """A MoE layer is read when its turn comes, in depth order, never all of them at once
    (a reader that copies would hold every expert of the model), and each layer has been
    advised before it is read, the next ones while it is matched; the same result as with
    every layer in memory."""
    events: list[tuple[str, int]] = []
    alive: list[weakref.ref[moe.MoELayer]] = []
    most = 0
    with open_model(zoo["llama"]) as mb, open_model(zoo["llama_moe_fine"]) as mc:
        pairing, _ = _pairing(mb, mc)
        stored = moe.load_moe(mc)

        def load(i: int) -> moe.MoELayer:
            nonlocal most
            most = max(most, sum(r() is not None for r in alive))
            events.append(("load", i))
            layer = stored[i]
            alive.append(weakref.ref(layer))
            return layer

        layers = LazyLayers(sorted(stored), load, keep=1,
                            will_need=lambda i: events.append(("advise", i)))
        pools = moe.base_pools(pairing.base.ffn, {})
        lazy = moe.analyse(pairing, pools, layers, tested={0, 7})
        held = moe.analyse(pairing, pools, {i: stored[i] for i in sorted(stored)},
                           tested={0, 7})
    assert lazy is not None
    assert held is not None
    loads = [i for e, i in events if e == "load"]
    assert loads == sorted(stored)
    for i in loads:
        assert events.index(("advise", i)) < events.index(("load", i))
    # when a layer is read, at most the one before it is still alive (kept by the reader)
    assert most <= 1
    assert [lr.p_value for lr in lazy.layers] == [lr.p_value for lr in held.layers]
    for a, b in zip(lazy.layers, held.layers, strict=True):
        assert np.array_equal(a.base_neurons(), b.base_neurons())


def test_moe_layers_and_pools_pass_reading_ahead_to_where_the_weights_are(
        zoo: Zoo, monkeypatch) -> None:
    """A MoE model's layers advise its experts' FFN tensors (not the attention); a pool
    advises the dense layer or the MoE layer it is made from."""
    with open_model(zoo["llama_moe_fine"]) as mc:
        names: list[str] = []
        monkeypatch.setattr(mc.reader, "will_need", names.extend)
        mc.will_need(1, (GATE, UP, DOWN))
        mc.readahead.close()  # waits for the request
        layer = mc.layout.layers[1]
        assert names
        assert sorted(names) == sorted(
            ref.tensor for roles in (*layer.experts, *layer.shared_experts)
            for ref in roles.values())
        asked: list[tuple[int, tuple[str, ...] | None]] = []
        monkeypatch.setattr(mc, "will_need", lambda i, roles=None: asked.append((i, roles)))
        layers = moe.load_moe(mc)
        layers.expect([5, 2])
        assert asked == [(5, (GATE, UP, DOWN)), (2, (GATE, UP, DOWN))]
    advised: list[tuple[str, int]] = []
    dense = LazyLayers([0, 1], lambda i: i, will_need=lambda i: advised.append(("dense", i)))
    experts = LazyLayers([2, 3], lambda i: i, will_need=lambda i: advised.append(("moe", i)))
    moe.base_pools(dense, experts).expect([3, 0, 2])  # type: ignore[arg-type]
    assert advised == [("moe", 3), ("dense", 0), ("moe", 2)]


def test_dense_candidate_has_no_moe_section(zoo: Zoo) -> None:
    assert _probe(zoo["llama"], zoo["llama"]) is None


# --- the tail -----------------------------------------------------------------------------------


def test_agreement_tail() -> None:
    assert moe.agreement_p(0, 256, [0] * 24) == (1.0, 1.0)
    p1, _ = moe.agreement_p(1, 256, [0] * 24)
    p3, _ = moe.agreement_p(3, 256, [0] * 24)
    assert 1e-3 < p1 < 1.0
    assert p3 < p1
    assert moe.agreement_p(150, 256, [0] * 24)[0] < 1e-100
    # over-dispersed null counts widen the tail
    tight, phi_tight = moe.agreement_p(20, 256, [5] * 12 + [4, 6] * 6)
    wide, phi_wide = moe.agreement_p(20, 256, [0, 10] * 12)
    assert phi_tight == 1.0
    assert phi_wide > 1.0
    assert wide > tight


def test_power_check_counts_what_the_layer_test_counts(zoo: Zoo) -> None:
    """The power check needs the test's p-value alone: the agreement of the sampled neurons,
    without the assignments that make expert maps. Same neurons, same counts, same p."""
    with open_model(zoo["llama"]) as mb:
        pairing, rng = _pairing(mb, mb)
        pool = pairing.base.ffn[4]
        gen = torch.Generator().manual_seed(0)
        fake, layer = moe.fake_upcycled(pairing.base, pool, 1.0, rng, gen)
        framed = FramePairing(pairing.base, pairing.cand, rng, DRAWS, width=32)
        for observed, sample in ((pairing, 100), (pairing, moe.MAX_NULL_NEURONS),
                                 (framed, 100)):  # sampled or every neuron; full or framed
            sibling = observed.sibling(fake, rng)
            full = moe._test_layer(sibling, pool, layer, 4, 4, 1, ALPHA, sample=sample)
            assert moe._agreement_test(sibling, pool, layer, 4, sample) == full.p_value
            feats = sibling.pooled_features_of(sibling.pool(layer.units), -1)
            base = sibling.base_features_of(pool.placed(sibling.compute), -1)
            counted = moe.match_layer(base, feats, layer.widths, assign=False)
            assigned = moe.match_layer(base, feats, layer.widths)
            assert np.array_equal(counted.agree, assigned.agree)
            assert np.isnan(counted.sim).all()
            assert not np.isnan(assigned.sim).any()


def test_the_power_checks_experts_are_kept_as_the_base_stores_them(zoo: Zoo) -> None:
    """Two noisy replicas of a wide FFN in float32 would double a layer's memory: the fake
    experts keep the base's dtype, on the CPU, like a candidate's."""
    with open_model(zoo["llama"]) as mb:
        pairing, rng = _pairing(mb, mb)
    pool = pairing.base.ffn[4]
    bf16 = neurons.FFNWeights(gate=pool.gate.bfloat16(), up=pool.up.bfloat16(),
                              down=pool.down.bfloat16())
    _, layer = moe.fake_upcycled(pairing.base, bf16, 1.0, rng, torch.Generator().manual_seed(0))
    assert {u.up.dtype for u in layer.units} == {torch.bfloat16}
    assert {u.up.device.type for u in layer.units} == {"cpu"}
    assert sum(layer.widths) == 2 * pool.up.shape[0]


def test_experts_are_cut_into_products_of_at_most_so_many_rows() -> None:
    widths = [7, 1, 40, 13, 300, 5, 5]
    groups = moe._product_groups(widths, 50)
    assert groups == [[7, 1, 40], [13], [300], [5, 5]]
    assert [w for g in groups for w in g] == widths


@pytest.mark.parametrize("rows", [1, 64, 10_000])
def test_grouping_experts_into_one_product_changes_no_matching(monkeypatch, rows: int) -> None:
    """Narrow experts (a sampled null draw's ~32 neurons each) share one similarity product;
    every reduction is per row, so each expert's agreement, assignment and similarities are
    the ones of a product of its own (up to rounding): one expert per product (``rows`` = 1),
    a few, or all."""
    gen = torch.Generator().manual_seed(5)
    f, m = 300, 24
    base = neurons.NeuronFeatures(*(torch.randn(f, m, generator=gen) for _ in range(3)))
    widths = [7, 1, 40, 13, 90, 5, 5, 31]
    n = sum(widths)
    # half the expert neurons are noisy copies of base neurons (solved by their row maxima),
    # half are fresh (their best columns collide: the solver runs)
    kept, order = torch.randperm(f, generator=gen)[: n // 2], torch.randperm(n, generator=gen)
    feats = []
    for role in (base.gate, base.up, base.down):
        fresh = torch.randn(n - n // 2, m, generator=gen)
        copies = role[kept] + 0.3 * torch.randn(n // 2, m, generator=gen)
        feats.append(torch.cat([copies, fresh])[order])
    cand = neurons.NeuronFeatures(*feats)
    reference = moe.match_layer(base, cand, widths)  # the default grouping
    monkeypatch.setattr(moe, "PRODUCT_ROWS", rows)
    grouped = moe.match_layer(base, cand, widths)
    assert reference.agree.any()
    assert not reference.agree.all()
    assert np.array_equal(grouped.index, reference.index)
    assert np.array_equal(grouped.agree, reference.agree)
    assert np.array_equal(grouped.separate, reference.separate)
    # a one-row product takes another kernel: the same sums, rounded differently
    np.testing.assert_allclose(grouped.sim, reference.sim, rtol=1e-6)
    counted = moe.match_layer(base, cand, widths, assign=False)
    assert np.array_equal(counted.agree, reference.agree)


def test_a_cached_power_check_leaves_the_moe_probe_its_own_draws(zoo: Zoo) -> None:
    """The MoE probe draws its power check's fake after the dense power check: with that check
    reused from a cache (one base, two MoE candidates), both reports are the uncached ones."""
    from verifier.model_cache import ModelCache
    from verifier.verify import VerifyOptions, verify

    opts = VerifyOptions(null_draws=8, null_layers=1, digest=False)
    cache = ModelCache()
    for cand in ("llama_moe_coarse", "mixtral"):
        cached = verify(zoo.llama, zoo[cand], opts, cache=cache)
        plain = verify(zoo.llama, zoo[cand], opts)
        assert cached.moe is not None
        assert cached.model_dump(exclude={"created", "timings"}) == plain.model_dump(
            exclude={"created", "timings"})
    assert cache.counts.power_computed == 1
    assert cache.counts.power_hits == 1
