"""The one schema every layout table follows, built-in or supplied by a user.

A table says, as data, where each canonical role lives in a family's tensor names: which paths
hold the model-wide roles, which prefix introduces a transformer block, which paths inside a
block hold its roles, where routed and shared experts live, which tensors fuse several roles
(``qkv_proj``, ``gate_up_proj``, ``c_attn``) and which hold a 3-D stack of experts. The built-in
families (see ``families.py``) and a user's ``--role-map`` file are instances of the same
``LayoutTable``, so both go through one resolver and one set of checks.

Path conventions (relative to the optional model prefix, or to the block prefix inside a layer):
a path ``X`` claims ``X.weight`` (or a bare ``X`` parameter) as the role, and ``X.bias`` as
``<role>.bias``; legacy LayerNorm names ``X.gamma``/``X.beta`` count as weight/bias. A path that
ends in ``.weight`` is read as its module path. A role may list several alternative paths, for
names that changed between library versions; a block holding two of them is an error. A block
path holding ``{layer}`` names the block's index itself and is read from the model prefix.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verifier.architectures.layout import (
    ATTN_NORM,
    BIAS,
    EMBED_NORM,
    EXPERT_ROLES,
    FINAL_NORM,
    GLOBAL_ROLES,
    K_NORM,
    KV_A_NORM,
    LAYER_ROLES,
    MLP_NORM,
    Q_A_NORM,
    Q_NORM,
)

# Roles beyond layout.py's canonical set, for blocks that carry more than a Llama block does.
#: gemma2/gemma3 ``post_attention_layernorm`` (a norm on the attention *output*, before the
#: residual add) and GGUF ``post_attention_norm``. Their ``pre_feedforward_layernorm`` is the
#: norm in front of the MLP, so it takes the canonical ``mlp_norm`` role, as in GGUF (``ffn_norm``).
POST_ATTN_NORM = "post_attn_norm"
#: gemma2/gemma3 ``post_feedforward_layernorm`` and GGUF ``post_ffw_norm``: a norm on the MLP output.
POST_MLP_NORM = "post_mlp_norm"
#: DeepSeek-V3 ``mlp.gate.e_score_correction_bias`` (GGUF ``exp_probs_b``): a per-expert bias
#: added to routing scores for expert *selection* only; not the router's linear bias.
ROUTER_CORRECTION = "router_correction"
#: gpt-oss ``self_attn.sinks``: one learned attention-sink logit per head.
ATTN_SINKS = "attn_sinks"
#: Qwen3-Next / Qwen3.5 gated attention: the sigmoid gate on each head's output, computed by
#: the same ``q_proj`` as the query
ATTN_GATE = "attn_gate"
#: a block's second set of neurons beside its MLP: a hybrid's Mamba mixer, whose inner
#: channels permute as an MLP's neurons do (the gate ``z``, the input ``x``, ``out_proj``), or
#: a second MLP (LongCat-Flash's second sublayer). Neuron matching reads them with the MLP's
#: neurons as one set (``neuron_matching.load_ffn``)
SECOND_GATE, SECOND_UP, SECOND_DOWN = "second_gate", "second_up", "second_down"
SECOND_ROLES = (SECOND_GATE, SECOND_UP, SECOND_DOWN)
EXTRA_LAYER_ROLES = (POST_ATTN_NORM, POST_MLP_NORM, ROUTER_CORRECTION, ATTN_SINKS, ATTN_GATE,
                     *SECOND_ROLES)

#: roles that are a norm's gain (a table's ``norm_offset`` applies to their weights, not biases)
NORM_ROLES = (ATTN_NORM, MLP_NORM, POST_ATTN_NORM, POST_MLP_NORM, Q_NORM, K_NORM, Q_A_NORM,
              KV_A_NORM, FINAL_NORM, EMBED_NORM)

ALL_LAYER_ROLES = LAYER_ROLES + EXTRA_LAYER_ROLES

#: one path, or alternatives for names that changed between library versions
Paths = str | list[str]

LAYER_PLACEHOLDER = "{layer}"
EXPERT_PLACEHOLDER = "{expert}"


def as_paths(value: Paths | None) -> list[str]:
    """A path or a list of alternative paths, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_roles(keys: list[str], allowed: tuple[str, ...], where: str) -> None:
    """Reject role names outside ``allowed`` (a bias is addressed as ``<role>.bias``)."""
    for key in keys:
        base = key[: -len(BIAS)] if key.endswith(BIAS) else key
        if base not in allowed:
            raise ValueError(f"unknown {where} role {key!r} (known: {', '.join(allowed)})")


def _check_placeholder(value: Paths | None, placeholder: str, where: str, required: bool) -> None:
    for path in as_paths(value):
        count = path.count(placeholder)
        if count > 1 or (required and count == 0):
            raise ValueError(f"{where} {path!r} must contain {placeholder} exactly once")
        if re.search(r"\{(?!layer\}|expert\})[^}]*\}", path):
            raise ValueError(f"{where} {path!r}: only {{layer}} and {{expert}} may appear in braces")


class Fused(BaseModel):
    """One stored matrix holding several roles stacked along its output rows.

    ``split`` says how rows divide: ``heads`` is q, k, v sized by attention heads (q gets
    ``num_heads * head_dim`` rows, k and v share the rest equally); ``groups`` is q, k, v
    stored key/value group by group, each group's query heads then its key head then its value
    head (GPT-NeoX and Bloom: a group per head; Falcon: grouped or multi-query); ``per_head``
    cuts each head's rows into equal consecutive parts (Qwen3-Next's query, then its gate),
    or into parts as wide as the config keys of ``head_parts`` add up to (A.X K2's query, then
    a gate of another width); ``halves`` cuts equal consecutive parts in ``roles`` order; ``interleave``
    gives row ``i`` to ``roles[i % n]``; ``shards`` cuts the rows into ``shards`` equal blocks
    (the model-parallel shards a model was trained on) and each block into equal consecutive
    parts in ``roles`` order (CodeGen: query, value, key); ``mamba2`` takes a Mamba-2
    ``in_proj``'s gate ``z`` and input ``x`` (rows ``[MLP halves] z x B C dt``), sized by the
    mixer's ``out_proj``, ``conv1d`` and ``A_log``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[str, ...] = Field(min_length=2)
    split: Literal["heads", "groups", "per_head", "halves", "interleave", "mamba2", "shards"]
    #: ``per_head``: each role's rows in one head, as the sum of these config keys (one tuple
    #: per role); without it every part is ``head_dim`` rows
    head_parts: tuple[tuple[str, ...], ...] | None = None
    #: ``shards``: how many model-parallel shards the rows are stored in
    shards: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _heads_are_qkv(self) -> Fused:
        if self.split in ("heads", "groups") and len(self.roles) != 3:
            raise ValueError(f"split {self.split!r} needs exactly three roles (q, k, v)")
        if self.split == "mamba2" and len(self.roles) != 2:
            raise ValueError("split 'mamba2' needs exactly two roles (the gate z, the input x)")
        if self.head_parts is not None and (
                self.split != "per_head" or len(self.head_parts) != len(self.roles)
                or not all(self.head_parts)):
            raise ValueError("head_parts belongs to split 'per_head': one non-empty tuple of "
                             "config keys for each role")
        if (self.shards is None) != (self.split != "shards"):
            raise ValueError("split 'shards' needs shards (their count), and no other split "
                             "takes it")
        _check_roles(list(self.roles), ALL_LAYER_ROLES, "fused")
        return self


class Stacked(BaseModel):
    """A 3-D tensor ``[experts, a, b]`` holding one or two expert roles for every routed expert.

    ``layout`` is the per-expert orientation the family's code uses: ``out_in`` (``nn.Linear``,
    e.g. transformers v5 Mixtral/Qwen-MoE ``gate_up_proj`` ``[E, 2*I, H]``) or ``in_out``
    (``x @ W``, e.g. Llama4/gpt-oss ``[E, H, 2*I]``). Shapes decide when they can; ``layout``
    breaks the tie only when both orientations fit (square matrices). ``None`` means "decide
    from shapes or fail". ``bias`` names a stacked bias ``[E, rows]`` stored under another path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[str, ...] = Field(min_length=1, max_length=2)
    split: Literal["halves", "interleave"] = "halves"
    layout: Literal["out_in", "in_out"] | None = None
    bias: str | None = None
    #: the stack is 2-D, every expert's rows one after the other (``[experts * a, b]``, as
    #: DBRX stores them); the config's expert count splits it
    flat: bool = False

    @model_validator(mode="after")
    def _expert_roles(self) -> Stacked:
        _check_roles(list(self.roles), EXPERT_ROLES, "stacked expert")
        if len(self.roles) == 2 and "down" in self.roles:
            raise ValueError("a fused expert stack holds gate and up; down is stored alone")
        return self


class LayoutTable(BaseModel):
    """Where every role of one family lives. A ``--role-map`` file is one of these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: name reported as the architecture
    family: str = "custom"
    #: config ``model_type`` values this table answers for (the first is the family's own)
    model_types: tuple[str, ...] = ()
    #: optional leading prefixes, e.g. ``model.`` (saved from the *ForCausalLM class) or none
    prefixes: tuple[str, ...] = ("",)
    #: the block prefix, containing ``{layer}``, e.g. ``layers.{layer}.``
    layer_prefix: Paths
    #: model-wide role -> path
    globals: dict[str, Paths] = Field(default_factory=dict)
    #: per-block role -> path inside the block
    layer: dict[str, Paths] = Field(default_factory=dict)
    #: path inside the block -> the roles it fuses
    fused: dict[str, Fused] = Field(default_factory=dict)
    #: prefix of one routed expert inside the block, containing ``{expert}``
    experts: Paths | None = None
    #: expert role (gate, up, down) -> path inside the expert
    expert: dict[str, Paths] = Field(default_factory=dict)
    #: prefix of the shared expert(s) inside the block; ``{expert}`` when there are several
    shared_experts: Paths | None = None
    #: shared-expert role -> path inside it (defaults to ``expert``)
    shared_expert: dict[str, Paths] = Field(default_factory=dict)
    #: path inside the block -> a 3-D stack of all routed experts
    stacked: dict[str, Stacked] = Field(default_factory=dict)
    #: roles stored ``[in, out]`` (GPT-2 Conv1D, ``x @ W`` code): transposed on load
    transpose: tuple[str, ...] = ()
    #: a block (or shared expert) with ``up`` but no ``gate`` whose ``up`` has twice ``down``'s
    #: inner width holds gate and up fused in halves, gate first (GGUF Phi-3 stores ``ffn_up``
    #: that way; MiniMax-M3's shared experts in memory, ``gate_up_proj``)
    fused_up_without_gate: bool = False
    #: what the family's norms add to their stored weight to get the gain they multiply by:
    #: 1.0 for Gemma (``x * (1 + w)``), 0.0 for the usual ``x * w``. Loaded norms are gains.
    norm_offset: float = 0.0
    #: parallel blocks with one norm (GPT-J, Phi-1/2, Falcon-7B, Cohere): a block without an
    #: MLP norm of its own feeds its MLP the attention norm's output, so that tensor is also
    #: the block's ``mlp_norm`` (its gain folds into gate/up as into q/k/v)
    mlp_shares_attn_norm: bool = False
    #: norms sit after each sublayer's residual add (BERT): no gain reads into the next
    #: projections, so none is folded (OPT says so per checkpoint: ``do_layer_norm_before``)
    post_norm: bool = False
    #: roles a block may lack by design (Qwen3-Next's linear-attention blocks hold no
    #: attention; Nemotron-H's blocks hold one mixer each): no "incomplete checkpoint" warning
    optional_roles: tuple[str, ...] = ()
    #: the ``layer_prefix`` paths are stacks of blocks that the model runs one after the other,
    #: each numbered from 0 in the files (HRM's ``L_module`` and ``H_module``): read as one
    #: sequence, a stack's blocks after those of the stacks listed before it
    stacks: bool = False
    #: the config key that counts one stack's blocks, where the usual keys count something
    #: else (HRM's ``num_hidden_layers`` counts a cache slot per block run); a tuple names one
    #: key per stack, for stacks of different depths (an encoder-decoder's ``encoder_layers``
    #: and ``decoder_layers``). A stack may be absent from the files only where the config
    #: says the model is not an encoder-decoder (``is_encoder_decoder: false``), names a class
    #: that holds one stack (``T5EncoderModel``, ``BartForCausalLM``) or does not count that
    #: stack's blocks
    stack_layers_key: str | tuple[str, ...] | None = None
    #: model-wide roles whose alternative paths are one tied tensor that a save may write
    #: under each of its names (BART's ``shared``, ``decoder.embed_tokens`` and
    #: ``encoder.embed_tokens``): the first path present takes the role, the others are set
    #: aside, where elsewhere two present alternatives are an error
    tied: tuple[str, ...] = ()
    #: whether the config's layer count (``num_hidden_layers``...) counts the files' blocks;
    #: False where it does not for all of a family's files (Dory's counts attention and MLP
    #: blocks apart, as its release stores them, while the names transformers saves hold both
    #: in one block): the blocks are then counted from the files alone
    config_counts_layers: bool = True
    #: dotted name fragments of tensors that are expected but deliberately get no role
    #: (buffers such as ``rotary_emb.inv_freq``, task heads such as ``pooler.dense``)
    known_unassigned: tuple[str, ...] = ()

    @field_validator("layer_prefix")
    @classmethod
    def _layer_placeholder(cls, value: Paths) -> Paths:
        if not as_paths(value):
            raise ValueError("layer_prefix needs at least one path")
        _check_placeholder(value, LAYER_PLACEHOLDER, "layer_prefix", required=True)
        return value

    @field_validator("layer")
    @classmethod
    def _indexed_layer_paths(cls, value: dict[str, Paths]) -> dict[str, Paths]:
        # a block path may hold ``{layer}`` once: it is then read from the model prefix (XLM
        # keeps each kind of sublayer in a list of its own: ``attentions.N``, ``layer_norm1.N``)
        for paths in value.values():
            _check_placeholder(paths, LAYER_PLACEHOLDER, "layer path", required=False)
        return value

    @field_validator("experts")
    @classmethod
    def _expert_placeholder(cls, value: Paths | None) -> Paths | None:
        _check_placeholder(value, EXPERT_PLACEHOLDER, "experts", required=True)
        return value

    @field_validator("shared_experts")
    @classmethod
    def _shared_placeholder(cls, value: Paths | None) -> Paths | None:
        _check_placeholder(value, EXPERT_PLACEHOLDER, "shared_experts", required=False)
        return value

    @model_validator(mode="after")
    def _roles_known(self) -> LayoutTable:
        _check_roles(list(self.globals), GLOBAL_ROLES, "global")
        _check_roles(list(self.layer), ALL_LAYER_ROLES, "layer")
        _check_roles(list(self.expert), EXPERT_ROLES, "expert")
        _check_roles(list(self.shared_expert), EXPERT_ROLES, "shared_expert")
        _check_roles(list(self.transpose), GLOBAL_ROLES + ALL_LAYER_ROLES, "transpose")
        if self.experts is not None and not self.expert:
            raise ValueError("'experts' is set but 'expert' does not say which roles it holds")
        if self.expert and self.experts is None:
            raise ValueError("'expert' roles are given but 'experts' (their prefix) is not")
        if self.shared_experts is not None and not (self.shared_expert or self.expert):
            raise ValueError("'shared_experts' is set but neither 'shared_expert' nor 'expert' is")
        if self.shared_expert and self.shared_experts is None:
            raise ValueError("'shared_expert' roles are given but 'shared_experts' is not")
        if not (self.globals or self.layer or self.fused or self.experts or self.stacked):
            raise ValueError("the table maps no role at all")
        untied = [role for role in self.tied if role not in self.globals]
        if untied:
            raise ValueError(f"'tied' names {untied}, which 'globals' does not map")
        if isinstance(self.stack_layers_key, tuple) and (
                not self.stacks or len(self.stack_layers_key) != len(as_paths(self.layer_prefix))):
            raise ValueError("a tuple of 'stack_layers_key' needs 'stacks' and one key per "
                             "'layer_prefix' path")
        return self

    def shared_roles(self) -> dict[str, Paths]:
        """Shared-expert role -> path, falling back to the routed experts' names."""
        return dict(self.shared_expert) if self.shared_expert else dict(self.expert)


#: a user-supplied table: the same schema as the built-in ones
RoleMap = LayoutTable
