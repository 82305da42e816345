"""The second look (``verifier.probes.body_alignment``): the hidden alignment recovered from
the layers, for a body kept under new embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verifier.model import open_model
from verifier.probes import body_alignment as body
from verifier.probes.body_alignment import BodyProfile, Matrix
from verifier.probes.rotation_null import haar_rotation
from verifier.verify import VerifyOptions, verify
from verifier.zoo.pairs import TRANSPLANTED_PAIRS

OPTS = VerifyOptions(digest=False)


def _profile(gen: torch.Generator, d: int = 48, layers: int = 4) -> BodyProfile:
    """Layers with a privileged basis (per-coordinate gains, as trained models have)."""
    mats = []
    for i in range(layers):
        gain = torch.rand(d, generator=gen) * 2 + 0.2
        for role, rows in (("q", 64), ("gate", 96), ("up", 96)):
            mats.append(Matrix(f"{i}.{role}", torch.randn(rows, d, generator=gen) * gain,
                               signed=role == "gate"))
        mats.append(Matrix(f"{i}.down", torch.randn(96, d, generator=gen) * gain.flip(0)))
    return BodyProfile(mats)


def _disguised(p: BodyProfile, perm: torch.Tensor, sign: torch.Tensor,
               gen: torch.Generator) -> BodyProfile:
    """What a vendor does for free: hidden coordinates permuted and negated, rows (neurons,
    head dimensions) permuted, and an up row negated with its down column."""
    out = []
    for m in p.matrices:
        w = (m.w * sign)[:, perm]
        rows = torch.randperm(w.shape[0], generator=gen)
        if m.key.endswith("up"):
            w = w * torch.where(torch.rand(w.shape[0], 1, generator=gen) < 0.5, -1.0, 1.0)
        out.append(Matrix(m.key, w[rows], signed=m.signed))
    return BodyProfile(out)


def test_recovers_the_signed_permutation_through_row_permutations_and_sign_flips():
    gen = torch.Generator().manual_seed(0)
    base = _profile(gen)
    d = base.dim
    perm = torch.randperm(d, generator=gen)  # candidate column c holds base column perm[c]
    sign = torch.where(torch.rand(d, generator=gen) < 0.5, -1.0, 1.0)
    cand = _disguised(base, perm, sign, gen)
    align, stat = body.recover(base, cand, None)
    assert stat == pytest.approx(1.0, abs=1e-5)
    where = torch.argsort(perm).numpy()  # base column i sits at candidate column where[i]
    assert np.array_equal(align.perm, where)
    assert np.array_equal(align.sign, sign.numpy())


def test_a_rotated_base_aligns_no_better_than_an_unrelated_model():
    gen = torch.Generator().manual_seed(1)
    base, other = _profile(gen), _profile(gen)
    rng = np.random.default_rng(0)
    null = [body.recover(base, other, haar_rotation(base.dim, rng))[1] for _ in range(8)]
    _, unrelated = body.recover(base, other, None)
    _, copy = body.recover(base, base, None)
    assert copy > 0.99
    assert max(null) < 0.8
    assert unrelated < 0.8


@pytest.mark.parametrize("pair", TRANSPLANTED_PAIRS, ids=[p.name for p in TRANSPLANTED_PAIRS])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_body_under_new_embeddings_is_derived_by_the_second_look(pair, direction, zoo):
    # embeddings replaced by random ones, hidden space permuted and negated, then trained: the
    # embedding route sees nothing (it called this pair independent), the layers still align
    base, cand = zoo[pair.base], zoo[pair.candidate]
    report = verify(base, cand, OPTS) if direction == "forward" else verify(cand, base, OPTS)
    assert report.verdict == "derived", report.reason
    by_name = {p.name: p for p in report.probes}
    assert by_name["hidden_alignment"].p_value > 1e-3  # the first look found nothing
    assert by_name["body_alignment"].p_value < report.alpha * body.SHARE
    assert "new embeddings" in report.reason
    # the layer map comes through the layers' alignment (the first look's mapped nothing)
    assert tuple(e.base_layer for e in report.layer_map) == pair.layer_map


def test_the_second_look_is_skipped_for_derived_pairs(pair_reports):
    derived = pair_reports("llama", "llama_ft_code")
    assert "body_alignment" not in {p.name for p in derived.probes}


def _relayered(zoo_folder, tmp_path, name: str, keep: list[int]):
    """A copy of a zoo model whose layers are ``keep`` (old indices, in order: dropped ones
    pruned, repeated ones duplicated), renumbered, with its config's depth to match."""
    import json
    import re

    from safetensors.torch import load_file, save_file

    folder = tmp_path / name
    folder.mkdir()
    tensors = load_file(str(zoo_folder / "model.safetensors"))
    out = {k: v for k, v in tensors.items() if ".layers." not in k}
    for new, old in enumerate(keep):
        for k, v in tensors.items():
            m = re.match(rf"(.*\.layers\.){old}(\..*)", k)
            if m:
                out[f"{m.group(1)}{new}{m.group(2)}"] = v.clone()
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((zoo_folder / "config.json").read_text())
    config["num_hidden_layers"] = len(keep)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("keep", [[0, 1, 3, 4, 6, 7], [0, 1, 2, 3, 3, 4, 5, 6, 6, 7]],
                         ids=["pruned", "duplicated"])
def test_a_body_under_new_embeddings_and_another_depth_is_derived(zoo, tmp_path, keep):
    # the transplanted body with layers 2 and 5 pruned, or layers 3 and 6 duplicated: the
    # profile pairs layers by relative depth, and a few mismatched features cost little
    cand = _relayered(zoo["llama_transplant"], tmp_path, "cand", keep)
    report = verify(zoo["llama"], cand, OPTS)
    assert report.verdict == "derived", report.reason
    assert "new embeddings" in report.reason
    assert any("relative depth" in w for w in report.warnings)
    second = {p.name: p for p in report.probes}["body_alignment"]
    assert second.p_value < report.alpha * body.SHARE
    # which base layer each candidate layer came from (the pruned ones map to nothing)
    assert [e.base_layer for e in report.layer_map] == keep


def test_an_unrelated_model_of_another_depth_is_not_derived_by_the_second_look(pair_reports):
    report = pair_reports("llama", "llama_6layer_seed8")
    assert report.verdict != "derived", report.reason
    second = {p.name: p for p in report.probes}["body_alignment"]
    assert second.p_value > report.alpha * body.SHARE
    assert any("relative depth" in w for w in report.warnings)


@pytest.mark.parametrize(("depth", "other", "want"), [
    (8, 8, list(range(8))), (8, 6, [0, 1, 1, 2, 3, 4, 4, 5]), (6, 10, [0, 2, 4, 5, 7, 9])])
def test_layers_pair_by_relative_depth(depth, other, want):
    assert [body.relative_layer(i, depth, other) for i in range(depth)] == want


def test_an_unrelated_pair_skips_neuron_matching_through_the_layers_alignment(pair_reports):
    # where the alignment's p alone keeps the second look from moving the verdict, its neuron
    # matching (as costly as the first look's) does not run, and p is the alignment's
    report = pair_reports("llama", "llama_seed2")
    second = {p.name: p for p in report.probes}["body_alignment"]
    assert report.verdict == "independent", report.reason
    assert second.details["neuron_p_value"] is None
    assert second.layers == []
    assert second.p_value == second.details["alignment_p_value"]
    assert "skipped" in second.null


def test_a_row_sample_of_each_matrix_still_finds_the_transplant(zoo, monkeypatch):
    # wide models hold at most SAMPLE_ELEMENTS of each model's rows; here a budget that leaves
    # 16 rows of each matrix, on the narrow test models
    monkeypatch.setattr(body, "MIN_ROWS", 8)
    monkeypatch.setattr(body, "SAMPLE_ELEMENTS", 64 * 7 * 8 * 16)
    report = verify(zoo["llama"], zoo["llama_transplant"], OPTS)
    second = {p.name: p for p in report.probes}["body_alignment"]
    assert second.details["profile_rows"] == 16
    assert report.verdict == "derived", report.reason
    assert second.details["neuron_p_value"] is not None


@pytest.mark.parametrize(("hidden", "depth", "layers"), [(64, 8, 8), (4096, 32, 8),
                                                         (8192, 80, 4), (16384, 126, 2)])
def test_the_plan_keeps_each_models_sample_within_its_budget(hidden, depth, layers):
    plan = body.plan_for(depth, hidden, 7)
    assert len(plan.layers) == layers
    assert plan.layers[0] == 0
    assert plan.layers[-1] == depth - 1
    assert plan.rows >= body.MIN_ROWS
    # at least two layers are always read, even where MIN_ROWS of each overshoots the budget
    assert plan.rows * hidden * 7 * len(plan.layers) <= body.SAMPLE_ELEMENTS or layers == 2


@pytest.mark.parametrize("writer", [False, True])
def test_the_candidates_norms_are_read_in_chunks_on_one_scale(writer, monkeypatch):
    # exact column norms of the whole stored matrix, never held whole in float32, and no
    # overflow where bf16 values square beyond float32's range
    monkeypatch.setattr(body, "CHUNK_ROWS", 7)
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(40, 24, generator=gen) * 1e25).to(torch.bfloat16)
    got = body._log_column_norms(w, writer, None)
    want = w.double().norm(dim=1 if writer else 0).log()
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), want, atol=1e-5)


def _with_tokens(zoo_folder, tmp_path, name: str, prefix: str, shared: int):
    """A copy of a zoo model with a tokenizer whose tokens share only ``shared`` strings with
    any other ``_with_tokens`` copy (a new tokenizer)."""
    import json
    import shutil

    folder = tmp_path / name
    shutil.copytree(zoo_folder, folder)
    with open_model(folder) as m:
        rows = m.layout.vocab_size
    vocab = {(f"t{i}" if i < shared else f"{prefix}{i}"): i for i in range(rows)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    return folder


def test_a_body_under_a_new_tokenizer_is_derived_by_the_second_look_alone(zoo, tmp_path):
    # too few shared tokens to align the embeddings: the embedding route cannot run at all,
    # the body alignment needs no tokens
    base = _with_tokens(zoo["llama"], tmp_path, "base", "a", 8)
    cand = _with_tokens(zoo["llama_transplant"], tmp_path, "cand", "b", 8)
    report = verify(base, cand, OPTS)
    assert report.verdict == "derived", report.reason
    assert [p.name for p in report.probes if p.decisive] == ["body_alignment"]
    assert "could not be aligned" in report.reason
    assert any("too few to align" in w for w in report.warnings)
    assert any("aligned from the layers alone" in w for w in report.warnings)
    assert [e.base_layer for e in report.layer_map] == list(range(8))
    # norm drift aligned each layer pair through the layers' alignment: a trained copy's drift
    assert all(0.0 < layer.relative_drift < 1.0 for layer in report.norm_drift.layers
               if layer.role == "up")


def test_an_unrelated_pair_under_different_tokenizers_stays_inconclusive(zoo, tmp_path):
    # the layers alone can show a derivation, never vouch for independence
    base = _with_tokens(zoo["llama"], tmp_path, "base", "a", 8)
    other = _with_tokens(zoo["llama_seed2"], tmp_path, "other", "b", 8)
    report = verify(base, other, OPTS)
    assert report.verdict == "inconclusive"
    assert "cannot vouch for independence" in report.reason
    second = {p.name: p for p in report.probes}["body_alignment"]
    assert second.p_value > 1e-4
