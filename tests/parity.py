"""What "the same result on another backend" means, stated once for the parity tests.

Every backend computes similarities in float32 with TF32/HF32 off and decides in float64 on the
CPU (``backends.compute``), so the only differences from the CPU are float32 rounding in device
kernels (matmul order, QR) and the rare assignment that such rounding flips between two nearly
equal candidates. Hence:

- verdicts, layer maps, and which probes ran: identical;
- statistics and null moments (means of cosines, in [-1, 1]): within ``STAT_ATOL``;
- p-values: within ``LOG10_P_TOL`` decades, or a tenth of their own decades for tiny p-values
  (a z-score of 40 moved by 0.1% moves log10 p by ~0.7);
- a backend that computes on the CPU itself (fake-npu) must match bit for bit.
"""

from __future__ import annotations

import math

from verifier.report import Report
from verifier.zoo.pairs import MOE_PAIRS, PAIRS

#: one zoo pair of each kind that takes its own path through the probes: a derivation of the
#: same depth, depth cut and depth grown, int8-rounded weights, an independent model of
#: another depth, an upcycled MoE with a shared expert and an MoE from scratch. Where a
#: backend or a sharding computes on the CPU itself, these cover what every pair would; on a
#: device every pair is checked
ONE_OF_EACH_KIND = [p for p in [*PAIRS, *MOE_PAIRS] if p.name in {
    "permuted_then_trained", "pruned_then_trained", "upscaled_then_trained", "int8_roundtrip",
    "other_depth_other_seed", "fine_grained_upcycled_shared_slice", "mixtral_from_scratch"}]

STAT_ATOL = 2e-3
LOG10_P_TOL = 1.0


def _log10(p: float | None) -> float:
    return math.log10(max(p, 1e-300)) if p is not None else 0.0


def differences(ref: Report, got: Report, *, exact: bool) -> list[str]:
    """Everything in ``got`` that breaks the parity contract with ``ref`` (empty: parity)."""
    out: list[str] = []

    def close_stat(what: str, a: float | None, b: float | None) -> None:
        if a is None or b is None:
            if a is not b:
                out.append(f"{what}: {a} vs {b}")
        elif (a != b) if exact else abs(a - b) > STAT_ATOL:
            out.append(f"{what}: {a} vs {b}")

    def close_p(what: str, a: float | None, b: float | None) -> None:
        la, lb = _log10(a), _log10(b)
        if (a != b) if exact else abs(la - lb) > max(LOG10_P_TOL, 0.1 * abs(la)):
            out.append(f"{what}: p {a} vs {b}")

    if ref.verdict != got.verdict:
        out.append(f"verdict: {ref.verdict} vs {got.verdict}")
    if [e.base_layer for e in ref.layer_map] != [e.base_layer for e in got.layer_map]:
        out.append("layer map differs")
    if [p.name for p in ref.probes] != [p.name for p in got.probes]:
        out.append("probes differ")
        return out
    close_p("combined", ref.p_value, got.p_value)
    for a, b in zip(ref.probes, got.probes, strict=True):
        close_stat(f"{a.name}.statistic", a.statistic, b.statistic)
        close_p(a.name, a.p_value, b.p_value)
        close_p(f"{a.name}.power", a.power_p_value, b.power_p_value)
        if [lv.layer for lv in a.layers] != [lv.layer for lv in b.layers]:
            out.append(f"{a.name}: tested layers differ")
            continue
        for la, lb in zip(a.layers, b.layers, strict=True):
            where = f"{a.name}[{la.layer}]"
            close_stat(where, la.statistic, lb.statistic)
            close_stat(f"{where}.null_mean", la.null_mean, lb.null_mean)
            close_p(where, la.p_value, lb.p_value)
    if (ref.moe is None) != (got.moe is None):
        out.append("moe section present on one side only")
    elif ref.moe is not None and got.moe is not None:
        if ref.moe.upcycled != got.moe.upcycled:
            out.append("moe.upcycled differs")
        close_p("moe", ref.moe.p_value, got.moe.p_value)
    return out
