"""The verdict rule (``verifier.verdict.decide``), probe results in, verdict out: "derived" on
merged evidence below alpha; "independent" only when the required probes ran, each had the
power to see a derivation, and nothing approaches significance; "inconclusive", with its
reason, otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from verifier.probes.base import ProbeResult
from verifier.probes.rotated_layers import LEVEL, MATCHED, MATCHED_LAYERS
from verifier.stats import harmonic_combine
from verifier.verdict import DEFAULT_ALPHA, INDEPENDENT_P, decide


def probe(name: str, p: float | None, power: float | None = 1e-30,
          decisive: bool = True) -> ProbeResult:
    return ProbeResult(name=name, statistic=0.0, p_value=p, null="test", decisive=decisive,
                       power_p_value=power)


def unrelated(**powers: float | None) -> list[ProbeResult]:
    return [probe(name, 0.5, powers.get(name, 1e-30))
            for name in ("hidden_alignment", "neuron_matching", "head_matching")]


def test_derived_when_the_merged_p_value_is_below_alpha():
    probes = [probe("hidden_alignment", 1e-40), probe("neuron_matching", 0.3)]
    verdict, p, reason = decide(probes, DEFAULT_ALPHA)
    assert verdict == "derived"
    assert p == harmonic_combine([1e-40, 0.3])
    assert "hidden_alignment" in reason


def test_one_strong_probe_is_not_enough_when_merging_dilutes_it_above_alpha():
    probes = [probe("hidden_alignment", 1e-6), probe("neuron_matching", 0.9),
              probe("head_matching", 0.9)]
    verdict, p, _ = decide(probes, DEFAULT_ALPHA)
    assert p is not None
    assert p >= DEFAULT_ALPHA
    assert verdict == "inconclusive"  # nor independent: p is far below INDEPENDENT_P


def test_independent_needs_every_required_probe_with_power():
    assert decide(unrelated(), DEFAULT_ALPHA)[0] == "independent"
    verdict, _, reason = decide(unrelated(head_matching=1e-3), DEFAULT_ALPHA)
    assert verdict == "inconclusive"
    assert "head_matching lacked the power" in reason
    verdict, _, reason = decide(unrelated(neuron_matching=None), DEFAULT_ALPHA)
    assert verdict == "inconclusive"
    assert "neuron_matching lacked the power" in reason


def test_weak_evidence_is_neither_derived_nor_independent():
    probes = [probe("hidden_alignment", 1e-3), probe("neuron_matching", 1e-3)]
    verdict, p, reason = decide(probes, DEFAULT_ALPHA)
    assert DEFAULT_ALPHA <= p < INDEPENDENT_P
    assert verdict == "inconclusive"
    assert "weak evidence" in reason


def test_non_decisive_probes_never_enter_the_combination():
    drift = probe("norm_drift", 1e-50, None, decisive=False)
    verdict, p, _ = decide([*unrelated(), drift], DEFAULT_ALPHA)
    assert verdict == "independent"
    assert p == harmonic_combine([0.5, 0.5, 0.5])
    assert decide([drift], DEFAULT_ALPHA)[0] == "inconclusive"


@pytest.mark.parametrize(("asked", "said"), [
    (None, "hidden_alignment"),
    (("neuron_matching",), "hidden_alignment (not asked for)"),
])
def test_a_missing_required_probe_makes_an_unrelated_pair_inconclusive(asked, said):
    probes = [probe("neuron_matching", 0.5)]
    verdict, _, reason = decide(probes, DEFAULT_ALPHA, asked)
    assert verdict == "inconclusive"
    assert reason.endswith(said)
    assert ("(not asked for)" in reason) == (asked is not None)


def test_moe_upcycling_fills_the_neuron_role_for_an_all_moe_candidate():
    probes = [probe("hidden_alignment", 0.5), probe("moe_upcycling", 0.5)]
    assert decide(probes, DEFAULT_ALPHA)[0] == "independent"
    verdict, _, reason = decide([probe("hidden_alignment", 0.5)], DEFAULT_ALPHA)
    assert verdict == "inconclusive"
    assert "neuron_matching or moe_upcycling" in reason


@pytest.mark.parametrize(("asked", "said"), [
    (("norm_drift",), "no decisive probe was asked for (--probes norm_drift)"),
    (("norm_drift", "head_matching"), "no decisive probe could run"),  # asked, could not run
    (None, "no decisive probe could run"),
])
def test_without_decisive_probes_the_reason_says_whether_any_was_asked_for(asked, said):
    drift = probe("norm_drift", None, None, decisive=False)
    verdict, p, reason = decide([drift], 1e-6, asked)
    assert verdict == "inconclusive"
    assert p is None
    assert said in reason


@pytest.mark.parametrize("module", ["verifier.verdict", "verifier.probes.moe_upcycling"])
def test_the_verdict_module_imports_first_in_a_fresh_interpreter(module):
    # a program (or a notebook) that imports the verdict rule before anything else of lineage:
    # the probes and the verdict share the default alpha without importing each other in a cycle
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr


def _with_geometry(probes: list[ProbeResult], agreement: float, level: float) -> list[ProbeResult]:
    first = probes[0].model_copy(update={"details": {"gram_agreement": agreement,
                                                     "rotated_copy_level": level}})
    return [first, *probes[1:]]


def test_a_rotated_copy_is_never_called_independent():
    # token geometry at least as close as a 4-bit copy keeps: the probes saw no permutation,
    # but the hidden space may be rotated, which none of them undoes
    verdict, _, reason = decide(_with_geometry(unrelated(), 0.99999, 0.996), DEFAULT_ALPHA)
    assert verdict == "inconclusive"
    assert "rotation of the hidden space" in reason
    # geometry further from the base's than the copy level: no say in the verdict
    assert decide(_with_geometry(unrelated(), 0.25, 0.996), DEFAULT_ALPHA)[0] == "independent"
    # and a derivation the probes do show stays derived
    shown = [probe("hidden_alignment", 1e-40), *unrelated()[1:]]
    assert decide(_with_geometry(shown, 1.0, 0.996), DEFAULT_ALPHA)[0] == "derived"


def _with_turned_neurons(probes: list[ProbeResult], fraction: float) -> list[ProbeResult]:
    first = probes[0].model_copy(update={"details": {MATCHED: fraction, MATCHED_LAYERS: 4}})
    return [first, *probes[1:]]


def test_neurons_matched_through_a_turn_keep_a_pair_from_being_called_independent():
    # most sampled FFN neurons have a counterpart through the rotation recovered from the
    # embeddings: a rotated model trained on, which no probe undoes
    verdict, _, reason = decide(_with_turned_neurons(unrelated(), LEVEL), DEFAULT_ALPHA)
    assert verdict == "inconclusive"
    assert "turned by a rotation of the hidden space and trained on" in reason
    assert "50% of the base's sampled FFN neurons (4 layers)" in reason
    # below the level: no say in the verdict
    assert decide(_with_turned_neurons(unrelated(), LEVEL - 0.01), DEFAULT_ALPHA)[0] == \
        "independent"
    # and it never convicts, nor overrides a derivation the probes show
    shown = [probe("hidden_alignment", 1e-40), *unrelated()[1:]]
    assert decide(_with_turned_neurons(shown, 1.0), DEFAULT_ALPHA)[0] == "derived"


def test_the_second_look_convicts_only_within_its_share_of_alpha():
    # the layers' alignment (body_alignment) is a second look at a pair whose embeddings do
    # not align: a weighted Bonferroni gives it 1% of alpha, so its p must be 100x smaller
    from verifier.probes.body_alignment import SHARE

    strong = unrelated() + [probe("body_alignment", DEFAULT_ALPHA * SHARE / 10, power=None)]
    verdict, p, reason = decide(strong, DEFAULT_ALPHA)
    assert verdict == "derived"
    assert p == pytest.approx(DEFAULT_ALPHA / 10)
    assert "body_alignment" in reason
    assert "new embeddings" in reason
    within = unrelated() + [probe("body_alignment", DEFAULT_ALPHA / 10, power=None)]
    verdict, p, _ = decide(within, DEFAULT_ALPHA)
    assert verdict == "inconclusive"  # significant alone, not within its share
    assert p == pytest.approx(DEFAULT_ALPHA / 10 / SHARE)


def test_the_second_look_needs_no_power_and_leaves_an_unrelated_pair_independent():
    probes = unrelated() + [probe("body_alignment", 0.4, power=None)]
    verdict, p, reason = decide(probes, DEFAULT_ALPHA)
    assert verdict == "independent", reason
    # the first look's merged p, divided by its 1 - SHARE (capped at 1)
    assert p == pytest.approx(min(1.0, harmonic_combine([0.5] * 3) / 0.99))


@pytest.mark.parametrize("alpha", [DEFAULT_ALPHA, 1e-3, 0.05])
def test_a_second_look_that_cannot_matter_leaves_the_verdict_as_without_it(alpha):
    # verify skips neuron matching through the body alignment where the alignment's p alone
    # cannot move the verdict: that is only sound if second_look_matters says so exactly
    from verifier.probes.body_alignment import SHARE
    from verifier.verdict import second_look_matters

    edge = SHARE * max(alpha, INDEPENDENT_P)
    first = decide(unrelated(), alpha)[0]
    for p in (edge, edge * 1.01, 0.3):
        assert not second_look_matters(p, alpha)
        assert decide(unrelated() + [probe("body_alignment", p, power=None)], alpha)[0] == first
    below = edge * 0.99
    assert second_look_matters(below, alpha)
    assert decide(unrelated() + [probe("body_alignment", below, power=None)], alpha)[0] != first


def test_the_second_look_alone_can_convict_within_its_share_but_never_acquit():
    # the embeddings could not be aligned: the body alignment ran by itself
    from verifier.probes.body_alignment import SHARE

    alone = [probe("body_alignment", DEFAULT_ALPHA * SHARE / 10, power=None)]
    verdict, p, reason = decide(alone, DEFAULT_ALPHA)
    assert verdict == "derived"
    assert p == pytest.approx(DEFAULT_ALPHA / 10)
    assert "could not be aligned" in reason
    for weak in (DEFAULT_ALPHA, 0.5):  # significant alone, not within its share; or nothing
        verdict, p, reason = decide([probe("body_alignment", weak, power=None)], DEFAULT_ALPHA)
        assert verdict == "inconclusive"
        assert p == pytest.approx(min(1.0, weak / SHARE))
        assert "cannot vouch for independence" in reason
