"""What every probe returns: a statistic, a p-value under a stated null, and per-layer values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LayerValue(BaseModel):
    """One layer's contribution to a probe. ``layer`` is the candidate layer (or -1 for
    model-wide values such as embeddings); ``base_layer`` the base layer it was compared with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layer: int
    base_layer: int | None
    statistic: float
    p_value: float | None = None
    null_mean: float | None = None
    null_std: float | None = None


class ProbeResult(BaseModel):
    """One probe's outcome. ``decisive`` probes enter the combined p-value; the others are
    reported only (their nulls are too weak to convict on their own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    statistic: float
    p_value: float | None
    null: str
    decisive: bool
    layers: list[LayerValue] = Field(default_factory=list)
    #: power check: the same probe on the base against a perturbed, permuted copy of itself
    power_p_value: float | None = None
    details: dict[str, float | int | str | None] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


def spread(layers: list[int], n: int) -> list[int]:
    """At most ``n`` of ``layers``, evenly spread from the first to the last."""
    if len(layers) <= n:
        return list(layers)
    if n == 1:
        return [layers[len(layers) // 2]]
    return sorted({layers[round(i * (len(layers) - 1) / (n - 1))] for i in range(n)})
