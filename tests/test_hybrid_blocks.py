"""Hybrid blocks (Mamba, convolutions or attention in turn) and MoE models with a few dense blocks.

A hybrid's blocks do not all hold what each probe compares: Nemotron-H's blocks hold one mixer
each (Mamba-2, attention, an MLP or experts), Jamba's attention sits in one block of several,
DeepSeek-style MoE models keep dense MLPs in their first blocks only. The power checks, which
decide whether "no evidence" may read as *independent*, must disguise a block that holds what
each probe compares; Nemotron-H's Mamba-2 mixers are compared as Mamba-2's own are; and a
block that runs experts beside a dense MLP (Gemma 4) offers both to the MoE probe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from released_models import noisy, released_models

from verifier.model import open_model
from verifier.probes.neuron_matching import NAME as NEURONS
from verifier.verify import VerifyOptions, power_layers, verify

transformers = pytest.importorskip("transformers")


def test_a_standard_models_power_check_disguises_its_middle_block() -> None:
    assert power_layers([0, 1, 2, 3], [0, 1, 2, 3]) == (2, 2)


def test_a_hybrids_power_check_takes_what_the_middle_block_lacks_from_the_middle_of_those_with_it(
) -> None:
    # Nemotron-H: Mamba (0), experts (1), attention (2), MLP (3); the Mamba block counts as FFN
    assert power_layers([0, 3], [2]) == (3, 2)
    # Jamba: attention in blocks 1 and 3 only, MLPs everywhere
    assert power_layers([0, 1, 2, 3], [1, 3]) == (2, 3)
    # DeepSeek-style: one dense block, then experts; attention everywhere
    assert power_layers([0], [0, 1, 2, 3]) == (0, 2)
    assert power_layers([], [0, 1]) == (None, 1)
    assert power_layers([], []) == (None, None)


def _nemotron_h(seed: int, noise: float = 0.0) -> torch.nn.Module:
    config = transformers.NemotronHConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, vocab_size=600, num_hidden_layers=4,
        layers_block_type=["mamba", "moe", "attention", "mlp"], n_routed_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=64, moe_shared_expert_intermediate_size=64,
        mamba_num_heads=8, mamba_head_dim=32, ssm_state_size=16, n_groups=1, pad_token_id=0)
    torch.manual_seed(seed)
    return noisy(transformers.NemotronHForCausalLM(config), noise)


def test_nemotron_h_mamba_blocks_are_matched_as_neurons_and_an_independent_start_is_independent(
        tmp_path: Path) -> None:
    """Its Mamba-2 block gives z, x and ``out_proj`` as gate, up and down (cut from ``in_proj``
    as Mamba-2's are); a noisy copy is derived with that block mapped, and another start is
    *independent*: before, the power check disguised only the middle (attention) block, left
    neuron matching unchecked and the verdict inconclusive."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        _nemotron_h(seed, noise).save_pretrained(tmp_path / folder)
    with open_model(tmp_path / "base") as model:
        mamba = model.layout.layers[0].roles
        assert mamba["down"].tensor.endswith("layers.0.mixer.out_proj.weight")
        shapes = {t.name: t.shape for t in model.reader.tensors()}
        inner = shapes[mamba["down"].tensor][1]
        for role, start in (("gate", 0), ("up", inner)):
            assert mamba[role].tensor.endswith("layers.0.mixer.in_proj.weight")
            assert mamba[role].rows == (start, start + inner)
    opts = VerifyOptions(digest=False)
    copy = verify(tmp_path / "base", tmp_path / "copy", opts)
    assert copy.verdict == "derived", copy.reason
    neurons = next(p for p in copy.probes if p.name == NEURONS)
    assert {(lv.layer, lv.base_layer) for lv in neurons.layers} >= {(0, 0), (3, 3)}
    other = verify(tmp_path / "base", tmp_path / "other", opts)
    assert other.verdict == "independent", other.reason


def _gemma4_moe(seed: int, noise: float = 0.0) -> torch.nn.Module:
    config = transformers.Gemma4TextConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, vocab_size=600, num_hidden_layers=2, hidden_size_per_layer_input=0,
        num_kv_shared_layers=0, enable_moe_block=True, num_experts=4, top_k_experts=2,
        moe_intermediate_size=64)
    torch.manual_seed(seed)
    return noisy(transformers.Gemma4ForCausalLM(config), noise)


def test_experts_beside_a_dense_mlp_are_matched_to_the_bases_experts(tmp_path: Path) -> None:
    """Gemma 4's MoE blocks run experts beside a dense MLP: a copy's experts come from the
    base's experts, so the base offers both (its pool held the dense MLP alone, and a noisy
    copy's MoE layers read as not derived, p = 1); another start's experts match neither."""
    for folder, seed, noise in (("base", 0, 0.0), ("copy", 0, 0.3), ("other", 1, 0.0)):
        _gemma4_moe(seed, noise).save_pretrained(tmp_path / folder)
    opts = VerifyOptions(digest=False)
    moe = {}
    for folder in ("copy", "other"):
        report = verify(tmp_path / "base", tmp_path / folder, opts)
        moe[folder] = next(p for p in report.probes if p.name == "moe_upcycling")
    p_copy, p_other = moe["copy"].p_value, moe["other"].p_value
    assert p_copy is not None
    assert p_copy < 1e-6
    assert p_other is not None
    assert p_other > 0.01


@pytest.mark.parametrize("name", ["jetmoe", "zaya"])
def test_experts_beside_attention_not_compared_still_reach_independent(tmp_path: Path,
                                                                      name: str) -> None:
    """JetMoE's attention experts and ZAYA's convolutional attention are not compared and every
    block is MoE: no block holds what neuron or head matching compares, yet the hidden
    alignment's power check (embeddings alone) still runs, so another start is *independent*
    (it was inconclusive: "hidden_alignment lacked the power")."""
    cls, small = released_models()[name]
    config = type(small)(**(small.to_dict() | {"hidden_size": 128, "intermediate_size": 256,
                                               "vocab_size": 600}))
    for folder, seed in (("base", 0), ("other", 1)):
        torch.manual_seed(seed)
        cls(config).save_pretrained(tmp_path / folder)
    other = verify(tmp_path / "base", tmp_path / "other", VerifyOptions(digest=False))
    assert other.verdict == "independent", other.reason
    assert {p.name for p in other.probes if p.power_p_value is not None} >= {
        "hidden_alignment", "moe_upcycling"}
