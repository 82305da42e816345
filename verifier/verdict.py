"""The verdict rule: derived, independent or inconclusive, from the probes' p-values.

* **derived** when the decisive probes' p-values, merged by ``stats.harmonic_combine`` (valid
  under arbitrary dependence between the probes), fall below ``alpha``.
  The default alpha is 1e-6: a false "derived" accuses a vendor, so the tool asks for evidence
  far beyond the conventional 0.05 (derived pairs in practice give p-values below 1e-20).
* **independent** only when the required probes ran (hidden alignment, and neuron matching or,
  for a candidate whose FFNs are all MoE experts, MoE upcycling), every decisive probe passed
  its power check (it found a noisy, permuted copy of the base itself at p < alpha), and the
  combined p-value is at least ``INDEPENDENT_P``: the probes could have seen a derivation and
  saw none.
* **inconclusive** otherwise, with the reason; in particular when the derivation is not shown
  but the candidate's embeddings are the base's turned by a rotation of the hidden space
  (``probes.rotated_copy``), or its FFN neurons are the base's under such a rotation
  (``probes.rotated_layers``, a rotated model trained on): the probes do not undo rotations, so
  they cannot vouch for independence.

The second look (``probes.body_alignment``) spends a share ``SHARE`` of alpha beside the other
probes (weighted Bonferroni), or that share alone where the embeddings could not be aligned and
it ran by itself: it can make a pair derived, never independent.

Probes that are not decisive (norm drift) never enter the combination.
"""

from __future__ import annotations

from verifier.probes import DECISIVE
from verifier.probes import body_alignment as body
from verifier.probes import hidden_alignment as hidden
from verifier.probes.base import ProbeResult
from verifier.probes.rotated_copy import AGREEMENT, COPY_LEVEL, is_rotated_copy
from verifier.probes.rotated_layers import MATCHED, MATCHED_LAYERS, is_turned
from verifier.stats import DEFAULT_ALPHA, harmonic_combine

INDEPENDENT_P = 0.01
#: probes that look a second time, with a share of alpha and no power check: they can show a
#: derivation, never vouch for independence
SECOND_LOOKS = (body.NAME,)
#: probes that must all have run for a verdict of "independent": each entry names the probes
#: that can fill that role (a candidate whose FFNs are all MoE experts has no dense FFN to match
#: neuron by neuron; its experts' neurons are matched by the upcycling probe instead)
REQUIRED = (("hidden_alignment",), ("neuron_matching", "moe_upcycling"))


def decide(probes: list[ProbeResult], alpha: float,
           asked: tuple[str, ...] | None = None) -> tuple[str, float | None, str]:
    """``(verdict, combined p-value, reason)``; ``asked``: the probes the run was limited to
    (None: all), so that a reason can tell a probe left out from one that could not run."""
    second = [p for p in probes if p.name in SECOND_LOOKS and p.p_value is not None]
    decisive = [p for p in probes if vouches(p) and p.p_value is not None]
    looked = (second[0].p_value or 1.0) if second else None
    if not decisive and looked is not None:
        # the embedding route could not run (too few shared tokens, no embeddings): the second
        # look alone, still within its share of alpha (one rule for it, whatever ran beside)
        combined = min(1.0, looked / body.SHARE)
        if combined < alpha:
            return "derived", combined, (
                f"combined p = {combined:.3g} < alpha = {alpha:g}: the embeddings could not be "
                f"aligned, but the layers align ({body.NAME}, p = {looked:.3g}, weighted by its "
                f"{body.SHARE:g} share of alpha): the base's layers under new embeddings")
        return "inconclusive", combined, (
            f"the embeddings could not be aligned, so the probes that read the layers through "
            f"them did not run; the layers alone show no derivation ({body.NAME}, p = "
            f"{looked:.3g}), which cannot vouch for independence")
    if not decisive:
        if asked is not None and not set(asked).intersection(DECISIVE):
            return "inconclusive", None, (
                f"no decisive probe was asked for (--probes {','.join(asked)}); a verdict needs "
                f"one of {', '.join(DECISIVE)}")
        return "inconclusive", None, "no decisive probe could run on these two models"
    combined = harmonic_combine([p.p_value for p in decisive if p.p_value is not None])
    names = ", ".join(p.name for p in decisive)
    if looked is not None:
        # the second look spends a share of alpha (weighted Bonferroni): a false "derived" from
        # either look has probability at most (1 - SHARE) alpha + SHARE alpha
        combined = min(1.0, combined / (1.0 - body.SHARE), looked / body.SHARE)
        if second_look_convicts(looked, alpha):
            return "derived", combined, (
                f"combined p = {combined:.3g} < alpha = {alpha:g}: the embeddings do not align "
                f"({names}), but the layers do ({body.NAME}, p = {looked:.3g}, weighted by its "
                f"{body.SHARE:g} share of alpha): the base's layers under new embeddings")
    if combined < alpha:
        strongest = min(decisive, key=lambda p: p.p_value or 1.0)
        return "derived", combined, (
            f"combined p = {combined:.3g} < alpha = {alpha:g} ({names}); strongest evidence: "
            f"{strongest.name} (p = {strongest.p_value:.3g})"
        )
    ran = {p.name for p in decisive}
    missing = [names for names in REQUIRED if not ran.intersection(names)]
    if missing:
        left_out = [asked is not None and not set(asked).intersection(names) for names in missing]
        said = [" or ".join(names) + (" (not asked for)" if out else "")
                for names, out in zip(missing, left_out, strict=True)]
        return "inconclusive", combined, (
            f"an independent verdict needs probes that did not run: {', '.join(said)}")
    turned = next((why for p in decisive if p.name == hidden.NAME
                   and (why := _rotation(p.details)) is not None), None)
    if turned is not None:
        return "inconclusive", combined, (
            f"combined p = {combined:.3g} shows no derivation, but {turned}, which the probes "
            "do not undo")
    weak = [p.name for p in decisive if p.power_p_value is None or p.power_p_value >= alpha]
    if weak:
        return "inconclusive", combined, (
            f"no evidence of derivation, but {', '.join(weak)} lacked the power to see it"
        )
    if combined < INDEPENDENT_P:
        return "inconclusive", combined, (
            f"combined p = {combined:.3g}: not significant at alpha = {alpha:g}, "
            f"but below {INDEPENDENT_P} (weak evidence of shared weights)"
        )
    return "independent", combined, (
        f"combined p = {combined:.3g} >= {INDEPENDENT_P} and every probe had the power to see "
        f"a derivation ({names})"
    )


def _rotation(details: dict[str, float | int | str | None]) -> str | None:
    """What says that the candidate may be the base turned by a rotation of the hidden space (a
    function-preserving change), from the hidden alignment probe's details: the token geometry
    of a copy (``rotated_copy``), or FFN neurons matched through the turn (``rotated_layers``);
    None when neither guard holds."""
    if is_rotated_copy(details):
        return (f"the candidate's token geometry is the base's (Gram agreement "
                f"{details[AGREEMENT]:.6f}, at least the {details[COPY_LEVEL]:.6f} a copy keeps "
                "under noise beyond 4-bit rounding): its embeddings are the base's turned by a "
                "rotation of the hidden space (a rotated copy?)")
    if is_turned(details):
        return (f"through the rotation of the hidden space that best maps the base's token "
                f"embeddings onto the candidate's, {details[MATCHED]:.0%} of the base's sampled "
                f"FFN neurons ({details[MATCHED_LAYERS]} layers) have a counterpart in the "
                "candidate beyond any random turn of the base's layers: the candidate may be the "
                "base turned by a rotation of the hidden space and trained on")
    return None


def vouches(probe: ProbeResult) -> bool:
    """Whether ``probe`` is one whose power check an independent verdict needs: decisive, and
    not a second look."""
    return probe.decisive and probe.name not in SECOND_LOOKS


def second_look_convicts(p_value: float, alpha: float) -> bool:
    """Whether a second-look p-value makes the pair derived on its own: weighted by its share
    of alpha, below alpha."""
    return p_value / body.SHARE < alpha


def second_look_matters(p_value: float, alpha: float) -> bool:
    """Whether a second-look p-value this small could change ``decide``'s verdict: weighted by
    its share, below alpha (derived) or below ``INDEPENDENT_P`` (weak evidence, not
    independent). Above that, it can only change the combined p-value's digits."""
    return p_value / body.SHARE < max(alpha, INDEPENDENT_P)


__all__ = ["DEFAULT_ALPHA", "INDEPENDENT_P", "REQUIRED", "SECOND_LOOKS", "decide",
           "second_look_convicts", "second_look_matters", "vouches"]
