"""The verification report: one versioned pydantic schema, exported as JSON Schema in docs/.

Keys listed in DESIGN (verdict, p_value, alpha, probes[], layer_map[], norm_drift, moe, models)
are a contract with QA scripts: new keys may be added, existing keys are never renamed. The
report is deterministic for the same inputs and options, apart from ``created`` and
``timings``. Reading a report back (``Report.from_json``) forbids unknown keys, so a report
written by a newer schema version is refused rather than half-understood.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from verifier.files import FileRecord
from verifier.probes.base import ProbeResult
from verifier.probes.moe_upcycling import ExpertEntry, MoESection
from verifier.probes.norm_drift import NormDrift

#: 1.1: ``layer_similarity`` added (optional; 1.0 reports still read). 1.2: ``base_neurons``
#: may hold -2 (an expert neuron not matched: MoE layers without null draws are matched on a
#: sample unless ``--full``); the shape is unchanged, so 1.0 and 1.1 reports still read.
#: 1.3: ``models.*.side_files``, the config and tokenizer files read beside the weights (signed
#: with them); older reports read, with no side files
SCHEMA_VERSION = "1.3"
#: the first schema version whose reports list the side files they read
SIDE_FILES_SINCE = (1, 3)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)
Verdict = Literal["derived", "independent", "inconclusive"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: bounds on a model's shape in a report read back: far beyond any transformer, and small
#: enough that what a renderer sizes from them (a layers x layers grid) fits in memory
MAX_LAYERS, MAX_WIDTH = 4096, 1 << 24


class ModelInfo(_Frozen):
    path: str
    format: str
    architecture: str
    model_type: str
    num_layers: int = Field(ge=0, le=MAX_LAYERS)
    hidden_size: int = Field(ge=0, le=MAX_WIDTH)
    vocab_size: int = Field(ge=0, le=MAX_WIDTH)
    num_experts: int = Field(0, ge=0, le=MAX_WIDTH)
    files: list[FileRecord]
    #: config.json, tokenizer.json and vocab.txt as found beside the weights and read (the
    #: config's head counts split attention into heads, the tokenizer picks the shared tokens);
    #: a signed report's subjects include them
    side_files: list[FileRecord] = Field(default_factory=list)
    #: blocks of each stack in reading order, where the model runs several (an
    #: encoder-decoder's ``encoder`` then ``decoder``); layers are numbered across them
    stacks: dict[str, int] = Field(default_factory=dict)


class Models(_Frozen):
    base: ModelInfo
    candidate: ModelInfo


class LayerMapEntry(_Frozen):
    candidate_layer: int
    base_layer: int | None
    similarity: float | None
    z: float | None = None


class Environment(_Frozen):
    backend: str
    device: str
    dtype_policy: str
    versions: dict[str, str]
    fallbacks: list[str] = Field(default_factory=list)


class Report(_Frozen):
    #: "1.N" with N up to this version's: a newer report is refused, not half-understood
    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^[0-9]+\.[0-9]+$")
    tool: str = "lineage"
    tool_version: str
    created: datetime
    verdict: Verdict
    reason: str
    p_value: float | None = Field(ge=0.0, le=1.0)
    alpha: float = Field(gt=0.0, lt=1.0)
    probes: list[ProbeResult]
    layer_map: list[LayerMapEntry]
    #: matched neuron similarity of base layer ``a`` (row) and candidate layer ``j`` (column)
    #: for every pair compared while searching the layer map; null where not compared
    layer_similarity: list[list[float | None]] | None = None
    norm_drift: NormDrift | None
    moe: MoESection | None
    models: Models
    environment: Environment
    options: dict[str, str | float | int | bool | list[str] | None]
    warnings: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _readable(cls, version: str) -> str:
        major, minor = _version(version)
        ours = _version(SCHEMA_VERSION)
        if major < ours[0]:
            raise ValueError(f"schema version {version} predates the versions this lineage "
                             f"reads ({ours[0]}.0 to {SCHEMA_VERSION})")
        if (major, minor) > ours:
            raise ValueError(f"schema version {version} is newer than this lineage reads "
                             f"({SCHEMA_VERSION}): update lineage")
        return version

    def lists_side_files(self) -> bool:
        """Whether this report's schema lists side files (1.3 on): an older report's empty
        list says nothing about the files beside the weights."""
        return _version(self.schema_version) >= SIDE_FILES_SINCE

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        return cls.model_validate_json(text)


__all__ = [
    "SCHEMA_VERSION",
    "Environment",
    "ExpertEntry",
    "LayerMapEntry",
    "ModelInfo",
    "Models",
    "MoESection",
    "Report",
    "Verdict",
]
