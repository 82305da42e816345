"""Lineage probes, one module each, each with its null beside it.

| probe              | module                | decisive | what it shows                          |
|--------------------|-----------------------|----------|----------------------------------------|
| hidden_alignment   | hidden_alignment.py   | yes      | embeddings share a signed hidden map   |
| neuron_matching    | neuron_matching.py    | yes      | FFN neurons match beyond chance        |
| head_matching      | head_matching.py      | yes      | attention circuits match beyond chance |
| layer_alignment    | layer_alignment.py    | (map)    | which base layer each layer came from  |
| norm_drift         | norm_drift.py         | no       | norm profiles and per-layer drift      |
"""

from verifier.probes import head_matching, hidden_alignment, neuron_matching, norm_drift

#: probes a user can select with ``--probes``
PROBES = (hidden_alignment.NAME, neuron_matching.NAME, head_matching.NAME, norm_drift.NAME)

__all__ = ["PROBES"]
