"""Lineage probes, one module each, each with its null beside it.

| probe              | module                | decisive | what it shows                          |
|--------------------|-----------------------|----------|----------------------------------------|
| hidden_alignment   | hidden_alignment.py   | yes      | embeddings share a signed hidden map   |
| neuron_matching    | neuron_matching.py    | yes      | FFN neurons match beyond chance        |
| head_matching      | head_matching.py      | yes      | attention circuits match beyond chance |
| layer_alignment    | layer_alignment.py    | (map)    | which base layer each layer came from  |
| norm_drift         | norm_drift.py         | no       | norm profiles and per-layer drift      |
| moe_upcycling      | moe_upcycling.py      | yes      | which base neurons each expert holds   |
| body_alignment     | body_alignment.py     | 2nd look | layers kept under new embeddings       |
"""

from verifier.probes import (
    body_alignment,
    head_matching,
    hidden_alignment,
    moe_upcycling,
    neuron_matching,
    norm_drift,
)

#: probes a user can select with ``--probes``
PROBES = (hidden_alignment.NAME, neuron_matching.NAME, head_matching.NAME, norm_drift.NAME,
          moe_upcycling.NAME, body_alignment.NAME)
#: probes whose p-values enter the verdict (the table's "decisive" column)
DECISIVE = (hidden_alignment.NAME, neuron_matching.NAME, head_matching.NAME,
            moe_upcycling.NAME)
#: short names accepted by ``--probes``
ALIASES = {"moe": moe_upcycling.NAME, "heads": head_matching.NAME,
           "neurons": neuron_matching.NAME, "embeddings": hidden_alignment.NAME,
           "drift": norm_drift.NAME, "body": body_alignment.NAME}


def resolve_probe(name: str) -> str | None:
    """The probe a ``--probes`` entry names (full name or alias), or None."""
    name = name.strip()
    return name if name in PROBES else ALIASES.get(name)


__all__ = ["ALIASES", "DECISIVE", "PROBES", "resolve_probe"]
