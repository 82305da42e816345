"""Models with known lineage relative to the standard ``llama``, and the pairs to judge.

``LINEAGE`` holds derived children of ``STANDARD["llama"]`` (continued training, a long
high-learning-rate run, function-preserving permutation and rescaling followed by a little
training, pruning, depth up-scaling, dtype round trips, int8 quantisation) and one independent
model of another depth. Its names do not clash with ``STANDARD``'s, so
``Zoo(root, STANDARD | LINEAGE)`` (``ZOO_SPECS``) builds every name a ``Pair`` mentions; parents
are the very ``STANDARD`` specs, so they share the standard models' cache folders.

``PAIRS`` lists (base, candidate) questions with the right answer and, for derived pairs, the
base layer each candidate layer came from; ``ROTATED_PAIRS`` and ``ROTATED_TRAINED_PAIRS`` the
derived pairs whose rotation of the hidden space the probes cannot undo (they owe
"inconclusive", not "derived").

``MOE_LINEAGE`` holds MoE children of the same base (sparse and fine-grained upcycling, and new
experts on the base's attention), and ``MOE_PAIRS`` the MoE questions, with whether the experts
were upcycled and, from the derivation's own seed, which base neuron each expert neuron holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from verifier.zoo.derive import UpcyclePlan, derived_spec, layer_sources, upcycle_plan
from verifier.zoo.specs import STANDARD, ModelSpec

Truth = Literal["derived", "independent"]

BASE = STANDARD["llama"]
#: Short training after a transformation; steps after a depth change.
_SHORT, _DEPTH_STEPS = 30, 60


def _child(derivation: str | None = None, args: dict[str, object] | None = None, **updates: object) -> ModelSpec:
    return derived_spec(BASE, derivation, args, **updates)


LINEAGE: dict[str, ModelSpec] = {
    # continued training on other data, as long as the base's own run
    "llama_ft_code": _child(domain="code", steps=BASE.steps, seed=10),
    # continued training, 3x the base's steps at 2.5x its learning rate
    "llama_long": _child(steps=3 * BASE.steps, lr=2.5 * BASE.lr, seed=11),
    "llama_permuted": _child(
        "permute", {"parts": ["hidden", "heads", "ffn", "experts"]}, steps=_SHORT, seed=12
    ),
    "llama_rescaled": _child(
        "rescale",
        {"parts": ["sign", "norms", "qk", "vo", "ffn"], "max_scale": 8.0, "qk_per": "head",
         "vo_per": "head"},
        steps=_SHORT,
        seed=13,
    ),
    "llama_pruned": _child("prune", {"drop": [2, 5]}, steps=_DEPTH_STEPS, seed=14),
    "llama_upscaled": _child(
        "duplicate", {"order": [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]}, steps=_DEPTH_STEPS, seed=15
    ),
    "llama_cast": _child("cast", {"dtypes": ["bfloat16", "float16"]}, steps=0, seed=16),
    "llama_int8": _child("int8", steps=0, seed=17),
    # the residual stream turned by a random rotation, norm gains folded (QuaRot / SpinQuant):
    # the same function, which no probe undoes (``ROTATED_PAIRS``)
    "llama_rotated": _child("rotate", steps=0, seed=18),
    # the same turn, then the long high-learning-rate run of ``llama_long``: its token geometry
    # drifts below a copy's, its FFN neurons keep their counterparts (``ROTATED_TRAINED_PAIRS``)
    "llama_rotated_long": _child("rotate", steps=3 * BASE.steps, lr=2.5 * BASE.lr, seed=24),
    # the body kept (hidden space, heads and neurons permuted, signs flipped) under new random
    # embeddings, then trained: a tokenizer transplant (``TRANSPLANTED_PAIRS``)
    "llama_transplant": _child("transplant", steps=_SHORT, seed=19),
    # independent: same recipe, another seed and another depth
    "llama_6layer_seed8": ModelSpec(family="llama", num_layers=6, seed=8),
}

#: MoE children of the same base (``upcycle``): embeddings, norms and attention copied, every
#: dense FFN turned into experts, then trained. ``llama_moe_new_experts`` re-initialises every
#: expert neuron: derived from the base (attention, embeddings), but its experts are not.
MOE_LINEAGE: dict[str, ModelSpec] = {
    # sparse upcycling: 4 experts, each the whole dense FFN (neurons shuffled) plus 1% noise
    "llama_moe_coarse": _child(
        "upcycle", {"noise": 0.01}, family="mixtral", intermediate=128, experts=4, top_k=2,
        steps=40, seed=20,
    ),
    # fine-grained: 2 shuffled replicas cut into 8 experts of 32, half of each re-initialised,
    # down x4, the shared expert a slice of 64 dense neurons
    "llama_moe_fine": _child(
        "upcycle", {"reinit": 0.5, "down_scale": 4.0, "shared": "slice"}, family="qwen2_moe",
        intermediate=32, experts=8, top_k=2, shared_intermediate=64, steps=60, seed=21,
    ),
    # fine-grained: 2 replicas cut into 4 experts of 64, half re-initialised, new shared expert
    "llama_moe_fine_wide": _child(
        "upcycle", {"reinit": 0.5, "down_scale": 2.0, "shared": "new"}, family="qwen2_moe",
        intermediate=64, experts=4, top_k=2, shared_intermediate=64, steps=60, seed=22,
    ),
    # the base's attention and embeddings with entirely new experts
    "llama_moe_new_experts": _child(
        "upcycle", {"reinit": 1.0}, family="mixtral", intermediate=64, experts=4, top_k=2,
        steps=60, seed=23,
    ),
}

ZOO_SPECS: dict[str, ModelSpec] = STANDARD | LINEAGE | MOE_LINEAGE
if len(ZOO_SPECS) != len(STANDARD) + len(LINEAGE) + len(MOE_LINEAGE):
    raise RuntimeError("LINEAGE or MOE_LINEAGE names clash with each other or STANDARD names")


def ancestry(spec: ModelSpec) -> list[ModelSpec]:
    """``spec``, its parent, its parent's parent, ... (nearest first)."""
    chain: list[ModelSpec] = []
    node: ModelSpec | None = spec
    while node is not None:
        chain.append(node)
        node = node.parent
    return chain


def layer_map(base: ModelSpec, candidate: ModelSpec) -> tuple[int, ...] | None:
    """For each layer of ``candidate``, the layer of ``base`` it descends from, composing the
    layer sources of every derivation between them; ``None`` when ``base`` is not an ancestor
    (or ``candidate`` itself)."""
    chain = ancestry(candidate)
    if base not in chain:
        return None
    mapping = list(range(base.num_layers))
    for node in reversed(chain[: chain.index(base)]):
        assert node.parent is not None
        sources = layer_sources(node.derivation, node.parent.num_layers, node.derivation_args)
        mapping = [mapping[s] for s in sources]
    return tuple(mapping)


@dataclass(frozen=True)
class Pair:
    """One lineage question: was ``candidate`` derived from ``base``? ``layer_map[i]`` is the base
    layer of candidate layer ``i`` (``None`` entries allowed for layers with no source); the
    whole map is ``None`` for independent pairs."""

    name: str
    base: str
    candidate: str
    truth: Truth
    layer_map: tuple[int | None, ...] | None


def _pair(name: str, candidate: str, base: str = "llama") -> Pair:
    b, c = ZOO_SPECS[base], ZOO_SPECS[candidate]
    mapping = layer_map(b, c)
    return Pair(name, base, candidate, "independent" if mapping is None else "derived", mapping)


PAIRS: list[Pair] = [
    _pair("self", "llama"),
    _pair("finetune_other_data", "llama_ft_code"),
    _pair("long_high_lr", "llama_long"),
    _pair("permuted_then_trained", "llama_permuted"),
    _pair("rescaled_then_trained", "llama_rescaled"),
    _pair("pruned_then_trained", "llama_pruned"),
    _pair("upscaled_then_trained", "llama_upscaled"),
    _pair("cast_bf16_fp16", "llama_cast"),
    _pair("int8_roundtrip", "llama_int8"),
    _pair("other_seed", "llama_seed2"),
    _pair("other_data_from_scratch", "llama_other_data"),
    _pair("other_depth_other_seed", "llama_6layer_seed8"),
    _pair("qwen2_same_shapes", "qwen2"),
    _pair("mistral_same_shapes", "mistral"),
]


#: derived pairs the probes cannot show derived: a rotation of the hidden space is undone by no
#: probe, and the rotation null cannot tell it from independent training. The verdict owed is
#: "inconclusive" with the reason, never "independent" (``verifier.probes.rotated_copy``).
ROTATED_PAIRS: list[Pair] = [_pair("rotated_copy", "llama_rotated")]
#: the same, trained on after the turn: the token geometry no longer shows it; the FFN neurons,
#: read through the turn recovered from the embeddings, do (``verifier.probes.rotated_layers``)
ROTATED_TRAINED_PAIRS: list[Pair] = [_pair("rotated_then_trained", "llama_rotated_long")]

#: derived pairs whose embeddings share nothing: only the second look, the alignment recovered
#: from the layers (``verifier.probes.body_alignment``), shows them derived (and maps their
#: layers), so they are kept apart from ``PAIRS``
TRANSPLANTED_PAIRS: list[Pair] = [_pair("transplanted_body", "llama_transplant")]


@dataclass(frozen=True)
class MoEPair:
    """A lineage question about a MoE candidate: ``truth`` is the lineage of the whole model,
    ``upcycled`` whether its experts hold the base's FFN neurons (which ones: ``sources``)."""

    name: str
    base: str
    candidate: str
    truth: Truth
    upcycled: bool
    layer_map: tuple[int | None, ...] | None

    @property
    def sources(self) -> UpcyclePlan | None:
        """For an upcycled candidate, the base FFN neuron each expert neuron started from."""
        spec = ZOO_SPECS[self.candidate]
        if not self.upcycled or spec.derivation != "upcycle":
            return None
        return upcycle_plan(spec)


def _moe_pair(name: str, candidate: str, base: str = "llama") -> MoEPair:
    pair = _pair(name, candidate, base)
    spec = ZOO_SPECS[candidate]
    reinit = float(spec.derivation_args.get("reinit", 0.0))
    upcycled = pair.truth == "derived" and spec.derivation == "upcycle" and reinit < 1.0
    return MoEPair(name, base, candidate, pair.truth, upcycled, pair.layer_map)


MOE_PAIRS: list[MoEPair] = [
    _moe_pair("sparse_upcycled", "llama_moe_coarse"),
    _moe_pair("fine_grained_upcycled_shared_slice", "llama_moe_fine"),
    _moe_pair("fine_grained_upcycled_shared_new", "llama_moe_fine_wide"),
    _moe_pair("new_experts_on_base_attention", "llama_moe_new_experts"),
    _moe_pair("mixtral_from_scratch", "mixtral"),
    _moe_pair("qwen2_moe_from_scratch", "qwen2_moe"),
]
