"""`lineage verify` on pairs of known lineage: verdicts both ways, layer maps, CLI contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from checkpoints import llama_tensors, run_cli, write_llama_folder

from verifier import verify as verify_module
from verifier.cli import main
from verifier.probes import moe_upcycling as moe
from verifier.probes import rotated_layers as turned
from verifier.probes.base import spread
from verifier.report import Report
from verifier.verdict import vouches
from verifier.verify import VerifyOptions, verify
from verifier.zoo import STANDARD, Zoo
from verifier.zoo.derive import derived_spec
from verifier.zoo.pairs import MOE_PAIRS, PAIRS, ROTATED_PAIRS, ROTATED_TRAINED_PAIRS

DERIVED = [p for p in PAIRS if p.truth == "derived"]
INDEPENDENT = [p for p in PAIRS if p.truth == "independent"]
OPTS = VerifyOptions(digest=False)


@pytest.fixture(scope="module")
def reports(pair_reports):
    """Each pair verified in both directions (with ``OPTS``: the session's shared reports)."""
    assert pair_reports.options == OPTS
    return {key: report for pair in PAIRS for key, report in (
        ((pair.name, "forward"), pair_reports(pair.base, pair.candidate)),
        ((pair.name, "backward"), pair_reports(pair.candidate, pair.base)))}


@pytest.mark.parametrize("pair", DERIVED, ids=[p.name for p in DERIVED])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_derived_pairs_are_derived_at_the_default_alpha(pair, direction, reports):
    report = reports[(pair.name, direction)]
    assert report.verdict == "derived", report.reason
    assert report.p_value < report.alpha
    assert {p.name for p in report.probes if p.decisive} >= {"hidden_alignment", "neuron_matching"}


@pytest.mark.parametrize("pair", INDEPENDENT, ids=[p.name for p in INDEPENDENT])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_independent_pairs_are_not_derived(pair, direction, reports):
    report = reports[(pair.name, direction)]
    assert report.verdict != "derived", report.reason
    # and the probes could have seen a derivation: the power checks found a noisy copy
    assert all(p.power_p_value is not None and p.power_p_value < report.alpha
               for p in report.probes if vouches(p))


def _turned_pair_details(zoo, pair, direction) -> dict:
    """A rotated pair's report must be inconclusive, saying that the probes do not undo the
    turn; the hidden alignment probe's details say which guard held."""
    base, cand = zoo[pair.base], zoo[pair.candidate]
    report = verify(base, cand, OPTS) if direction == "forward" else verify(cand, base, OPTS)
    assert report.verdict == "inconclusive", report.reason
    assert "rotation of the hidden space" in report.reason
    [embedding] = [p for p in report.probes if p.name == "hidden_alignment"]
    return embedding.details


@pytest.mark.parametrize("pair", ROTATED_PAIRS, ids=[p.name for p in ROTATED_PAIRS])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_rotated_copy_is_inconclusive_and_says_why(pair, direction, zoo):
    # the base with its hidden space turned by a random rotation (same function): no probe
    # undoes it and the null cannot tell it from independent training, so the probes see
    # nothing; the verdict was "independent", which the token geometry contradicts
    assert _turned_pair_details(zoo, pair, direction)["gram_agreement"] > 1 - 1e-4


@pytest.mark.parametrize("pair", ROTATED_TRAINED_PAIRS, ids=[p.name for p in ROTATED_TRAINED_PAIRS])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_rotated_model_trained_on_is_inconclusive_and_says_why(pair, direction, zoo):
    # turned like the rotated copy, then trained 3x the base's steps at 2.5x its learning rate:
    # its token geometry no longer shows the turn, its FFN neurons (read through the turn the
    # embeddings give) do; the verdict was "independent"
    details = _turned_pair_details(zoo, pair, direction)
    assert details["gram_agreement"] < details["rotated_copy_level"]
    assert details[turned.MATCHED] >= turned.LEVEL


@pytest.mark.parametrize("pair", INDEPENDENT, ids=[p.name for p in INDEPENDENT])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_independent_models_keep_few_neurons_through_a_turn(pair, direction, reports):
    # where the verdict is independent, the guard against a turned derivative ran and stayed
    # below its level (independent models share a few neurons of their first layers)
    report = reports[(pair.name, direction)]
    if report.verdict == "independent":
        [embedding] = [p for p in report.probes if p.name == "hidden_alignment"]
        assert embedding.details[turned.MATCHED] < turned.LEVEL
        assert embedding.details[turned.MATCHED_LAYERS] == turned.LAYERS


def test_the_power_checks_do_not_depend_on_a_free_change_of_the_base(zoo, zoo_root):
    # hidden coordinates negated everywhere (a signed permutation: the same function) must not
    # change whether the probes could see a derivation. The zoo base was initialised from torch's
    # stream for seed 0; the power check drew its noise from that very stream (the default
    # --seed 0), and on this base the neuron and head power checks failed (p 0.57, 0.08)
    spec = derived_spec(STANDARD["llama"], "rescale", {"parts": ["sign"]}, steps=0, seed=13)
    signed = Zoo(zoo_root, {"llama_signed": spec})["llama_signed"]
    report = verify(signed, zoo["qwen2"], OPTS)
    assert report.verdict == "independent", report.reason
    assert all(p.power_p_value is not None and p.power_p_value < report.alpha
               for p in report.probes if vouches(p))


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.layer_map], ids=lambda p: p.name)
def test_layer_map_is_exact(pair, reports):
    report = reports[(pair.name, "forward")]
    assert tuple(e.base_layer for e in report.layer_map) == tuple(pair.layer_map)


def test_pruned_model_maps_every_base_layer_it_kept_when_read_backwards(reports):
    """From the pruned model's side, the dropped base layers (2 and 5) map to nothing."""
    report = reports[("pruned_then_trained", "backward")]
    assert [e.base_layer for e in report.layer_map] == [0, 1, None, 2, 3, None, 4, 5]


def test_std_profile_correlation_is_reported_but_never_decisive(reports):
    report = reports[("other_seed", "forward")]
    assert report.norm_drift is not None
    assert report.norm_drift.profile_correlation is not None
    assert all(p.name != "norm_drift" for p in report.probes)


def test_relative_drift_is_small_for_a_cast_and_large_for_long_training(reports):
    def ffn_drift(name: str) -> float:
        rows = reports[(name, "forward")].norm_drift.layers
        values = [r.relative_drift for r in rows if r.role == "up" and r.relative_drift is not None]
        return sum(values) / len(values)

    assert ffn_drift("cast_bf16_fp16") < 0.01
    assert ffn_drift("finetune_other_data") > 0.1
    assert ffn_drift("long_high_lr") > ffn_drift("finetune_other_data")


def test_report_is_deterministic_apart_from_timestamps(zoo):
    a = verify(zoo["llama"], zoo["llama_pruned"], OPTS)
    b = verify(zoo["llama"], zoo["llama_pruned"], OPTS)
    strip = {"created", "timings"}
    assert a.model_dump(exclude=strip) == b.model_dump(exclude=strip)


def test_report_round_trips_and_refuses_unknown_keys(reports):
    report = reports[("self", "forward")]
    again = Report.from_json(report.to_json())
    assert again == report
    data = json.loads(report.to_json())
    data["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        Report.from_json(json.dumps(data))


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *map(str, args), "--no-hash"])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    ("candidate", "expect", "code"),
    [("llama_pruned", None, 0), ("llama_pruned", "derived", 0), ("llama_pruned", "independent", 1),
     ("llama_seed2", "independent", 0), ("llama_seed2", "derived", 1)],
)
def test_expect_exit_codes(zoo, capsys, candidate, expect, code):
    args = [zoo["llama"], zoo[candidate]] + (["--expect", expect] if expect else [])
    got, _, err = _cli(capsys, *args)
    assert got == code, err


def test_inconclusive_with_expect_exits_3(zoo, capsys):
    # only the non-decisive norm-drift probe: nothing can decide
    got, out, _ = _cli(capsys, zoo["llama"], zoo["llama_pruned"], "--probes", "norm_drift",
                       "--expect", "derived", "--format", "json")
    assert got == 3
    assert json.loads(out)["verdict"] == "inconclusive"


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
def test_a_reader_that_quits_ends_verify_by_sigpipe_not_exit_1(zoo, tmp_path):
    # `lineage verify ... --expect derived | head` in a pipefail script: the exit status must not
    # be 1, which says the verdict contradicts --expect (typer turns EPIPE into exit 1)
    target = tmp_path / "report.json"
    read, write = os.pipe()
    os.close(read)  # the reader has quit before the report is printed
    try:
        out = subprocess.run(
            [sys.executable, "-m", "verifier", "verify", zoo["llama"], zoo["llama_pruned"],
             "--no-hash", "--expect", "derived", "--format", "json", "--output", target],
            stdout=write, stderr=subprocess.PIPE, text=True,
        )
    finally:
        os.close(write)
    assert out.returncode == -signal.SIGPIPE, out.stderr
    assert "Traceback" not in out.stderr
    assert json.loads(target.read_text())["verdict"] == "derived"  # written whole, before printing


def test_json_format_prints_the_report_alone_and_output_writes_it(zoo, capsys, tmp_path):
    target = tmp_path / "out" / "report.json"
    got, out, _ = _cli(capsys, zoo["llama"], zoo["llama_permuted"], "--format", "json",
                       "--output", target)
    assert got == 0
    report = json.loads(out)
    for key in ("verdict", "p_value", "alpha", "probes", "layer_map", "norm_drift", "moe",
                "models"):
        assert key in report
    assert report["verdict"] == "derived"
    assert json.loads(target.read_text()) == report
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temp files left


def test_unknown_probe_is_a_usage_error(zoo, capsys):
    got, _, err = _cli(capsys, zoo["llama"], zoo["llama"], "--probes", "magic")
    assert got == 2
    assert "unknown probe" in err
    for nothing in (",", " ", ""):  # ran every probe, as if --probes had not been given
        got, _, err = _cli(capsys, zoo["llama"], zoo["llama"], "--probes", nothing)
        assert got == 2
        assert "names no probe" in err


def test_absent_backend_is_exit_4(zoo, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a, **k: None if n == "torch_npu" else real(n, *a, **k))
    got, _, err = _cli(capsys, zoo["llama"], zoo["llama"], "--backend", "npu")
    assert got == 4
    assert "not available" in err


# --- MoE candidates: the upcycling probe runs inside verify -------------------------------------


@pytest.fixture(scope="module")
def moe_reports(pair_reports):
    assert pair_reports.options == OPTS
    return {p.name: pair_reports(p.base, p.candidate) for p in MOE_PAIRS}


@pytest.mark.parametrize("pair", MOE_PAIRS, ids=lambda p: p.name)
def test_moe_candidates_get_their_verdict_and_moe_section(pair, moe_reports):
    report = moe_reports[pair.name]
    assert report.verdict == pair.truth, report.reason
    assert report.moe is not None
    assert report.moe.upcycled is pair.upcycled
    names = [p.name for p in report.probes]
    assert "moe_upcycling" in names
    # all of these candidates' FFNs are experts: no dense neuron matching to run
    assert "neuron_matching" not in names


@pytest.mark.parametrize("pair", [p for p in MOE_PAIRS if p.upcycled], ids=lambda p: p.name)
def test_upcycled_moe_layers_enter_the_layer_map(pair, moe_reports):
    report = moe_reports[pair.name]
    assert [e.base_layer for e in report.layer_map] == list(range(len(report.layer_map)))
    assert all(e.similarity is None for e in report.layer_map)


def test_probes_moe_selects_the_upcycling_probe_alone(zoo, capsys):
    got, out, _ = _cli(capsys, zoo["llama"], zoo["llama_moe_fine"], "--probes", "moe",
                       "--format", "json")
    report = json.loads(out)
    assert got == 0
    assert [p["name"] for p in report["probes"]] == ["moe_upcycling"]
    assert report["moe"]["upcycled"] is True
    assert report["verdict"] == "derived"


def test_dense_candidates_have_no_moe_section(reports):
    assert all(r.moe is None for r in reports.values())
    assert all("moe_upcycling" not in [p.name for p in r.probes] for r in reports.values())


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_sampled_and_diagonal_paths_reach_the_same_verdicts(zoo, pair, reports, monkeypatch):
    """The reduced work large models get by default (a sample of 48 of the 128 base neurons per
    layer; layer i against layer i when depths are equal; null draws for 3 spread layers only)
    reaches the exact path's verdict and layer map."""
    monkeypatch.setattr(verify_module, "FULL_SEARCH_FLOPS", 0.0)
    reduced = verify(zoo[pair.base], zoo[pair.candidate],
                     VerifyOptions(digest=False, neuron_sample=48, null_layers=3))
    exact = reports[(pair.name, "forward")]
    assert reduced.verdict == exact.verdict == pair.truth
    assert reduced.options["neuron_sample"] == 48
    probes = {p.name: p for p in reduced.probes}
    assert [lv.layer for lv in probes["neuron_matching"].layers] == spread(
        list(range(len(reduced.layer_map))), 3)
    same_depth = len(reduced.layer_map) == len(exact.layer_map) == 8
    assert reduced.options["layer_search"] == ("diagonal" if same_depth else "full")
    if same_depth:  # a diagonal search compares layer i with layer i only
        grid = reduced.layer_similarity
        assert grid is not None
        assert all((v is not None) is (a == j) for a, row in enumerate(grid)
                   for j, v in enumerate(row))
    if pair.truth == "derived":
        assert [e.base_layer for e in reduced.layer_map] == [e.base_layer for e in exact.layer_map]


def test_spread_picks_evenly_from_first_to_last():
    assert spread([0, 1, 2], 8) == [0, 1, 2]
    assert spread(list(range(32)), 8) == [0, 4, 9, 13, 18, 22, 27, 31]
    assert spread(list(range(10)), 1) == [5]


@pytest.mark.parametrize("pair", DERIVED, ids=[p.name for p in DERIVED])
def test_layer_similarity_holds_every_compared_pair_and_the_mapped_ones(pair, reports):
    report = reports[(pair.name, "forward")]
    grid = report.layer_similarity
    assert grid is not None
    assert len(grid) == report.models.base.num_layers
    assert {len(row) for row in grid} == {report.models.candidate.num_layers}
    assert all(v is not None for row in grid for v in row)  # the zoo is searched in full
    for e in report.layer_map:
        assert e.base_layer is not None
        assert grid[e.base_layer][e.candidate_layer] == e.similarity


def _reduced_moe(zoo, pair, moe_reports, **options):
    """The MoE pair verified with reduced ``options``, its default report, and the reduced
    upcycling probe, after checking that both reach the pair's verdict and upcycled call."""
    reduced = verify(zoo[pair.base], zoo[pair.candidate], VerifyOptions(digest=False, **options))
    exact = moe_reports[pair.name]
    assert reduced.verdict == exact.verdict == pair.truth
    assert reduced.moe is not None
    assert exact.moe is not None
    assert reduced.moe.upcycled is exact.moe.upcycled is pair.upcycled
    return reduced, exact, next(p for p in reduced.probes if p.name == "moe_upcycling")


@pytest.mark.parametrize("pair", MOE_PAIRS, ids=lambda p: p.name)
def test_sampled_expert_nulls_reach_the_same_moe_answers(zoo, pair, moe_reports):
    """Null draws for a fixed sample of 64 expert neurons per layer (wider MoE layers are
    sampled at 2048 by default): same verdict, same upcycled flag, and expert maps that still
    cover every neuron."""
    reduced, exact, probe = _reduced_moe(zoo, pair, moe_reports, moe_sample=64)
    layers = len(probe.layers)
    assert probe.details["null_sampled_neurons"] == 64 * layers
    assert probe.details["expert_neurons"] > 64 * layers
    assert [len(e.base_neurons) for e in reduced.moe.experts] == [
        len(e.base_neurons) for e in exact.moe.experts]


@pytest.mark.parametrize("pair", [p for p in MOE_PAIRS if p.name in (
    "fine_grained_upcycled_shared_slice", "new_experts_on_base_attention")], ids=lambda p: p.name)
def test_null_layers_spread_over_moe_layers_too(zoo, pair, moe_reports):
    """``--null-layers 2``: two of the eight MoE layers get null draws and p-values; the others
    keep their expert maps' assignments (the same similarities) and are called against the
    nearest tested layer's null: same verdict, upcycled flag and layer map."""
    reduced, exact, probe = _reduced_moe(zoo, pair, moe_reports, null_layers=2)
    assert [lv.layer for lv in probe.layers] == list(range(8))
    assert [lv.layer for lv in probe.layers if lv.p_value is not None] == [0, 7]
    assert probe.details["moe_layers_tested"] == 2
    assert [(e.layer, e.expert, e.similarity) for e in reduced.moe.experts] == [
        (e.layer, e.expert, e.similarity) for e in exact.moe.experts]
    assert [e.base_layer for e in reduced.layer_map] == [e.base_layer for e in exact.layer_map]


@pytest.mark.parametrize("pair", [p for p in MOE_PAIRS if p.name in (
    "fine_grained_upcycled_shared_slice", "mixtral_from_scratch")], ids=lambda p: p.name)
def test_moe_layers_without_null_draws_are_matched_on_their_sample_unless_full(
        zoo, pair, moe_reports):
    """``--null-layers 2 --moe-sample 64``: the six MoE layers without null draws match only
    their 64 tested neurons (the rest ``NOT_MATCHED``) and keep their calls; ``--full`` maps
    every neuron of every layer. Verdict, upcycled flag and layer map unchanged either way."""
    for full in (False, True):
        reduced, exact, probe = _reduced_moe(zoo, pair, moe_reports, null_layers=2,
                                             moe_sample=64, full=full)
        assert [e.base_layer for e in reduced.layer_map] == [
            e.base_layer for e in exact.layer_map]
        assert probe.details["moe_layers_tested"] == 2
        assert probe.details["moe_layers_mapped"] == (8 if full else 2)
        assert probe.details["matched_expert_neurons"] == (
            probe.details["expert_neurons"] if full else
            probe.details["expert_neurons"] * 2 // 8 + 6 * 64)
        for e in reduced.moe.experts:
            unmatched = sum(n == moe.NOT_MATCHED for n in e.base_neurons)
            assert (unmatched > 0) is (not full and e.layer not in (0, 7))


def test_embeddings_alone_skip_the_layer_work(zoo):
    report = verify(zoo["llama"], zoo["llama_permuted"],
                    VerifyOptions(digest=False, probes=("hidden_alignment",)))
    assert [p.name for p in report.probes] == ["hidden_alignment"]
    assert report.verdict == "derived"
    assert "neuron_matching" not in report.timings
    assert report.layer_similarity is None


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_a_frame_of_half_the_hidden_space_reaches_the_same_verdicts(zoo, pair, reports):
    """Wide models are compared on a frame of ``hidden_sample`` hidden directions
    (``probes.frame_pairing``); forced here onto the zoo (32 of 64), every pair keeps the exact
    path's verdict and layer map, and the power checks still pass."""
    framed = verify(zoo[pair.base], zoo[pair.candidate],
                    VerifyOptions(digest=False, hidden_sample=32))
    exact = reports[(pair.name, "forward")]
    assert framed.options["hidden_directions"] == 32
    assert exact.options["hidden_directions"] == 64
    assert framed.verdict == exact.verdict == pair.truth
    assert [e.base_layer for e in framed.layer_map] == [e.base_layer for e in exact.layer_map]
    # the second look (body_alignment) carries no power check: it never vouches for independence
    assert all(p.power_p_value is not None and p.power_p_value < framed.alpha
               for p in framed.probes if vouches(p))
    embed = next(p for p in framed.probes if p.name == "hidden_alignment")
    assert embed.details["hidden_coordinates"] == 32


@pytest.mark.parametrize("pair", MOE_PAIRS, ids=lambda p: p.name)
def test_a_frame_of_half_the_hidden_space_reaches_the_same_moe_answers(zoo, pair, moe_reports):
    """MoE candidates on the frame too (32 of 64 directions): same verdict, same upcycled call,
    expert maps that cover every neuron, and a power check that passes."""
    framed = verify(zoo[pair.base], zoo[pair.candidate],
                    VerifyOptions(digest=False, hidden_sample=32))
    exact = moe_reports[pair.name]
    assert framed.options["hidden_directions"] == 32
    assert framed.verdict == exact.verdict == pair.truth
    assert framed.moe is not None
    assert exact.moe is not None
    assert framed.moe.upcycled is exact.moe.upcycled is pair.upcycled
    assert [len(e.base_neurons) for e in framed.moe.experts] == [
        len(e.base_neurons) for e in exact.moe.experts]
    assert all(p.power_p_value is not None and p.power_p_value < framed.alpha
               for p in framed.probes if p.decisive)


def test_a_probe_that_cannot_run_says_so_in_a_warning(tmp_path):
    # the same weights declared with other head counts: the circuits' shapes differ, so head
    # matching has nothing to compare; it vanished from the report without a word
    base = write_llama_folder(tmp_path / "base")
    cand = write_llama_folder(tmp_path / "cand")
    config = json.loads((cand / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1)
    (cand / "config.json").write_text(json.dumps(config))
    report = verify(base, cand, VerifyOptions(digest=False))
    assert "head_matching" not in [p.name for p in report.probes]
    assert any("head matching did not run" in w for w in report.warnings)
    asked = verify(base, base, VerifyOptions(digest=False, probes=("moe_upcycling",)))
    assert any("no MoE layers" in w for w in asked.warnings)
    assert not any("did not run" in w for w in verify(base, base,
                                                      VerifyOptions(digest=False)).warnings)


def test_head_counts_that_contradict_the_weights_are_named_in_the_warning(tmp_path):
    # head sizes are read from the weights (a config's head_dim that disagrees does not stop
    # head matching); a query head count that does not divide q's rows does, and the warning
    # says which tensor and which numbers disagree
    base = write_llama_folder(tmp_path / "base")
    cand = write_llama_folder(tmp_path / "cand")
    config = json.loads((cand / "config.json").read_text())
    config.update(head_dim=2 * config["hidden_size"] // config["num_attention_heads"])
    (cand / "config.json").write_text(json.dumps(config))
    report = verify(base, cand, VerifyOptions(digest=False))
    assert "head_matching" in [p.name for p in report.probes]
    rows = config["hidden_size"]
    config.update(num_attention_heads=rows - 1)
    (cand / "config.json").write_text(json.dumps(config))
    report = verify(base, cand, VerifyOptions(digest=False))
    assert "head_matching" not in [p.name for p in report.probes]
    [warning] = [w for w in report.warnings if "head matching did not run" in w]
    want = (f"candidate: 'model.layers.0.self_attn.q_proj.weight' has {rows} rows, not a "
            f"whole number for each of {rows - 1} query heads")
    assert want in warning


def test_a_copy_stored_in_fp8_is_read_and_found(tmp_path):
    # FP8 is a release format; the attention-norm gain, scaled in its stored dtype, met torch's
    # "aminmax not implemented for Float8_e4m3fn"
    tensors = llama_tensors()
    base = write_llama_folder(tmp_path / "base", tensors)
    fp8 = write_llama_folder(tmp_path / "fp8", {k: v.to(torch.float8_e4m3fn)
                                                for k, v in tensors.items()})
    assert verify(base, fp8, VerifyOptions(digest=False)).verdict == "derived"


def test_an_unforeseen_failure_is_one_line_and_never_exit_1(tmp_path, capsys, monkeypatch):
    # exit 1 means "the verdict contradicts --expect" to a QA gate; a crash said it too
    model = write_llama_folder(tmp_path / "m")

    def broken(*_args, **_kwargs):
        raise RuntimeError("something lineage did not foresee")

    monkeypatch.setattr(verify_module, "verify", broken)
    code, out, err = run_cli(["verify", model, model, "--no-hash", "--expect", "derived"], capsys)
    assert code == 70
    assert out == ""
    assert "Traceback" not in err
    assert err.splitlines()[0] == (
        "error: internal error: RuntimeError: something lineage did not foresee")


def _classic(family: str, seed: int, noise: float = 0.0):
    """A randomly initialised transformers model of a family with fused q/k/v (Pythia's per
    head, Falcon-40B's per key/value group), optionally with Gaussian noise on its matrices."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    if family == "gpt_neox":
        model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
            hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            vocab_size=1000))
    else:
        model = transformers.FalconForCausalLM(transformers.FalconConfig(
            hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_kv_heads=2,
            vocab_size=1000, new_decoder_architecture=True))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(noise * p.std() * torch.randn_like(p))
    return model


@pytest.mark.parametrize("family", ["gpt_neox", "falcon"])
def test_families_with_fused_attention_verify_end_to_end(tmp_path, family):
    """A noisy copy is derived through every probe, heads included; another initialisation
    of the same shape is not."""
    for name, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        _classic(family, seed, noise).save_pretrained(tmp_path / name)
    copy = verify(tmp_path / "base", tmp_path / "copy", OPTS)
    assert copy.verdict == "derived", copy.reason
    assert {p.name for p in copy.probes if p.decisive} >= {"neuron_matching", "head_matching"}
    assert copy.models.base.architecture == family
    other = verify(tmp_path / "base", tmp_path / "other", OPTS)
    assert other.verdict != "derived", other.reason


def _base_and_noisy_copy(tmp_path, build, noise=0.3):
    """``build()`` from seed 0, saved as ``base`` and, with Gaussian noise of relative size
    ``noise`` on every matrix, as ``copy``; both folders."""
    for name, scale in (("base", 0.0), ("copy", noise)):
        torch.manual_seed(0)
        model = build()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.add_(scale * p.std() * torch.randn_like(p))
        model.save_pretrained(tmp_path / name)
    return tmp_path / "base", tmp_path / "copy"


def test_layers_whose_heads_are_wider_than_the_config_says_are_matched_by_their_own(tmp_path):
    """Gemma 4's full-attention layers have their own head size (``global_head_dim``): head
    matching reads each layer's heads from its weights and compares them all (it stopped with
    an internal error, then left those layers out)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Gemma4TextConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, global_head_dim=64, vocab_size=600, num_hidden_layers=3,
        hidden_size_per_layer_input=0, num_kv_shared_layers=0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    report = verify(*_base_and_noisy_copy(tmp_path, lambda: transformers.Gemma4ForCausalLM(config)),
                    OPTS)
    assert report.verdict == "derived", report.reason
    compared = next(p for p in report.probes if p.name == "head_matching")
    assert [lv.layer for lv in compared.layers] == [0, 1, 2]
    assert not any("does not split" in w for w in report.warnings), report.warnings


def test_attention_in_blocks_without_an_ffn_is_still_matched(tmp_path):
    """Nemotron-H's blocks hold one mixer each: neuron matching pairs the MLP blocks, whose
    pairs name no attention layer, so head matching aligns the attention blocks by index (it
    did not run)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.NemotronHConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=600, mamba_num_heads=4,
        mamba_head_dim=32, ssm_state_size=16, n_groups=1,
        layers_block_type=["mamba", "attention", "mlp"] * 2)
    report = verify(*_base_and_noisy_copy(tmp_path, lambda: transformers.NemotronHForCausalLM(config)),
                    OPTS)
    assert report.verdict == "derived", report.reason
    compared = next(p for p in report.probes if p.name == "head_matching")
    assert [lv.layer for lv in compared.layers] == [1, 4]


def test_blocks_that_mix_tokens_by_convolution_are_compared_by_their_mlps(tmp_path):
    """LFM2 mixes tokens with short convolutions in most blocks (not compared) and attention in
    the rest: a noisy copy is derived through its MLPs and attention, another start is not."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Lfm2Config(
        hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=600, pad_token_id=0,
        layer_types=["conv", "full_attention", "conv"])
    base, copy = _base_and_noisy_copy(tmp_path, lambda: transformers.Lfm2ForCausalLM(config))
    report = verify(base, copy, OPTS)
    assert report.verdict == "derived", report.reason
    compared = next(p for p in report.probes if p.name == "head_matching")
    assert [lv.layer for lv in compared.layers] == [1]
    torch.manual_seed(1)
    transformers.Lfm2ForCausalLM(config).save_pretrained(tmp_path / "other")
    other = verify(base, tmp_path / "other", OPTS)
    assert other.verdict != "derived", other.reason
