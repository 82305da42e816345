"""What a zoo model is: one frozen, hashable recipe per checkpoint.

A ``ModelSpec`` pins everything that determines the saved weights (architecture, data, seed,
optimiser, save format), so two builds of the same spec give identical files and a folder can be
cached under a hash of it. A derived model names its ``parent`` spec: it starts from the parent's
saved weights, optionally passes them through a registered derivation, and trains on from there.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verifier.zoo.corpus import DOMAINS

#: Bumped whenever the corpus, training or export changes what a spec produces; part of every spec hash,
#: so a cache built by older code is never mistaken for a current build.
ZOO_FORMAT = 1

Family = Literal["llama", "mistral", "qwen2", "mixtral", "qwen2_moe", "bert"]
SaveDtype = Literal["float32", "bfloat16", "float16"]

DECODER_FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2", "mixtral", "qwen2_moe")
MOE_FAMILIES: tuple[str, ...] = ("mixtral", "qwen2_moe")
ENCODER_FAMILIES: tuple[str, ...] = ("bert",)


class ModelSpec(BaseModel):
    """The complete recipe of one tiny trained checkpoint.

    MoE fields (``experts``, ``top_k``, ``shared_intermediate``, ``norm_topk_prob``,
    ``router_aux_coef``) only matter for MoE families, ``mlm_prob`` only for ``bert``.
    ``intermediate`` is the dense MLP width, and the per-expert width for MoE families.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Family
    num_layers: int = Field(8, ge=1)
    hidden: int = Field(64, ge=8)
    intermediate: int = Field(128, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int | None = Field(None, ge=1, description="None: heads // 2 (decoders), heads (bert)")
    vocab: int = Field(256, ge=2)
    max_positions: int = Field(128, ge=2)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    experts: int = Field(4, ge=1)
    top_k: int = Field(2, ge=1)
    shared_intermediate: int = Field(128, ge=1)
    norm_topk_prob: bool = False
    router_aux_coef: float = Field(0.01, ge=0.0)
    mlm_prob: float = Field(0.15, gt=0.0, lt=1.0)
    seed: int = 0
    domain: str = "prose"
    corpus_bytes: int = Field(120_000, ge=4096)
    steps: int = Field(150, ge=0)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    batch: int = Field(16, ge=1)
    seq_len: int = Field(64, ge=2)
    dtype: SaveDtype = "float32"
    num_shards: int = Field(1, ge=1)
    parent: ModelSpec | None = None
    derivation: str | None = None
    derivation_args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown corpus domain {self.domain!r}; known: {', '.join(DOMAINS)}")
        if self.hidden % self.heads:
            raise ValueError("hidden must be a multiple of heads")
        if (self.hidden // self.heads) % 2 and self.family != "bert":
            raise ValueError("rotary embeddings need an even head dimension")
        if self.heads % self.num_kv_heads:
            raise ValueError("heads must be a multiple of kv_heads")
        if self.family == "bert" and self.num_kv_heads != self.heads:
            raise ValueError("bert has no grouped-query attention: kv_heads must equal heads")
        if self.family in MOE_FAMILIES and not 1 <= self.top_k <= self.experts:
            raise ValueError("top_k must be between 1 and experts")
        if self.seq_len > self.max_positions:
            raise ValueError("seq_len must not exceed max_positions")
        if self.derivation is not None and self.parent is None:
            raise ValueError("a derivation needs a parent")
        return self

    @property
    def num_kv_heads(self) -> int:
        if self.kv_heads is not None:
            return self.kv_heads
        return self.heads if self.family == "bert" else max(1, self.heads // 2)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def is_moe(self) -> bool:
        return self.family in MOE_FAMILIES

    @property
    def is_encoder(self) -> bool:
        return self.family in ENCODER_FAMILIES

    def canonical_json(self) -> str:
        """Stable JSON of every field (nested parents included), the input of ``digest``."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self, length: int = 12) -> str:
        payload = f"zoo-format-{ZOO_FORMAT}:{self.canonical_json()}".encode()
        return hashlib.sha256(payload).hexdigest()[:length]

    def folder_name(self) -> str:
        return f"{self.family}-{self.digest()}"


def _moe(family: Family, **kw: Any) -> ModelSpec:
    return ModelSpec(family=family, intermediate=64, shared_intermediate=64, **kw)


#: The standard set the test fixtures and ``scripts/build_zoo.py`` build. Decoders keep 8 layers
#: so lineage tests can prune 2 of 8 or duplicate 4 of 8; MoE models use narrower experts. BERT
#: gets more, shorter steps: masked-LM sits at the unigram plateau (loss ~3.06) until attention
#: has learnt positions, which takes several hundred steps.
STANDARD: dict[str, ModelSpec] = {
    "llama": ModelSpec(family="llama"),
    "llama_seed2": ModelSpec(family="llama", seed=2),
    "llama_other_data": ModelSpec(family="llama", domain="code", seed=1),
    "qwen2": ModelSpec(family="qwen2", seed=3),
    "mistral": ModelSpec(family="mistral", seed=4),
    "mixtral": _moe("mixtral", seed=5),
    "qwen2_moe": _moe("qwen2_moe", seed=6),
    "qwen2_moe_sharded": _moe("qwen2_moe", seed=6, dtype="bfloat16", num_shards=3),
    "bert": ModelSpec(family="bert", num_layers=2, seq_len=32, batch=32, steps=1200, seed=7),
}
