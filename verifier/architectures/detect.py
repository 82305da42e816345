"""From tensor names (and a config, when there is one) to a ``ModelLayout``.

The work happens in three steps. *Detection* picks one ``LayoutTable``: the user's role map if
given, else the family named by the config's ``model_type``, else the built-in table that claims
nearly every tensor. *Claiming* matches every tensor name against that table. *Building* turns
claims into ``RoleRef`` cuts (splitting fused q/k/v and gate/up rows, choosing the orientation
of 3-D expert stacks from shapes) and checks what a missing shard or a wrong config looks like:
a gap in layer or expert indices, fewer layers than the config says, a role without its peers.
Nothing is guessed: a layout that cannot be resolved raises ``ArchitectureError`` naming what
was found.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from verifier.architectures.families import (
    FAMILIES,
    GGUF,
    GGUF_BERT,
    GGUF_TABLES,
    MULTIMODAL_ADAPTERS,
    MULTIMODAL_PARTS,
    family_for_model_type,
)
from verifier.architectures.layout import (
    ATTN_NORM,
    BIAS,
    DOWN,
    EMBED,
    GATE,
    K_NORM,
    LM_HEAD,
    MLP_NORM,
    Q_NORM,
    TERNARY_PER_BYTE,
    UP,
    K,
    LayerLayout,
    ModelLayout,
    O,
    Q,
    RoleRef,
    V,
)
from verifier.architectures.schema import (
    EXPERT_PLACEHOLDER,
    LAYER_PLACEHOLDER,
    NORM_ROLES,
    Fused,
    LayoutTable,
    Paths,
    RoleMap,
    Stacked,
    as_paths,
)
from verifier.errors import ArchitectureError, UsageError
from verifier.readers.base import TensorInfo

#: share of tensors a table must claim (or know as buffers) to be picked without a config
NEAR_ALL = 0.9
#: distinct name patterns listed in an "unknown layout" error
PATTERN_LIMIT = 12
ROLE_MAP_HINT = "pass --role-map FILE to describe this layout"

ClaimKind = Literal["global", "layer", "fused", "stacked", "expert", "shared"]

# Config keys, in order of preference, across the families' config classes.
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
_VOCAB_KEYS = ("vocab_size", "n_vocab")
_LAYERS_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
_HEADS_KEYS = (
    "num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads",
    "decoder_attention_heads", "attention_heads")
_KV_HEADS_KEYS = ("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num",
                  "kv_n_heads")
#: configs of an image or speech encoder (``encoder.``, another modality) feeding a language
#: model's decoder (``decoder.``, its config ``decoder``, or Pix2Struct's ``text_config``)
_COMPOSITES = ("vision-encoder-decoder", "speech-encoder-decoder", "pix2struct")
_COMPOSITE_ENCODER = ("encoder.", "enc_to_dec_proj.")
#: classes holding one stack of an encoder-decoder family: its encoder alone (T5's, the text
#: encoder of image generators) or its decoder alone (``BartForCausalLM``)
_ONE_STACK_CLASSES = ("EncoderModel", "ForCausalLM")
#: config keys holding a dict of attention or MLP settings (DBRX's ``attn_config`` holds
#: ``kv_n_heads``, its ``ffn_config`` ``moe_num_experts``)
_NESTED_CONFIGS = ("attn_config", "ffn_config")
#: sub-configs beside a ``text_config`` that describe no module of another modality
_NOT_MODALITIES = ("text_config", "quantization_config", *_NESTED_CONFIGS, "rope_config",
                   "generation_config")
_EXPERTS_KEYS = ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts")
#: trailing blocks beyond ``num_hidden_layers`` that a family stores on purpose (DeepSeek-V3's
#: multi-token-prediction module is saved as layer ``num_hidden_layers``)
_EXTRA_LAYERS_KEYS = ("num_nextn_predict_layers",)
#: the last blocks that reuse an earlier block's keys and values (Gemma 3n, Gemma 4's E
#: models); Google's release files still hold those blocks' unused ``k_proj``/``v_proj``/
#: ``k_norm``, which compute nothing and are set aside
_KV_SHARED_KEYS = ("num_kv_shared_layers",)
_KV_ROLES = (K, V, K + BIAS, V + BIAS, K_NORM)


@dataclass(frozen=True)
class Claim:
    """What one tensor is according to a table: a role, or a fused/stacked tensor to cut."""

    kind: ClaimKind
    #: the role (``global``/``layer``/``expert``/``shared``) or the table path (fused/stacked)
    key: str
    bias: bool = False
    layer: int | None = None
    expert: int | None = None
    #: which of a table's ``layer_prefix`` stacks the block is in (``LayoutTable.stacks``)
    stack: int = 0

    @property
    def role(self) -> str:
        """The role name a plain claim fills, ``<role>.bias`` for biases."""
        if self.bias and not self.key.endswith(BIAS):
            return self.key + BIAS
        return self.key


def _expansions(path: str) -> list[tuple[str, bool]]:
    """Tensor names a path claims: bare, ``.weight``/``.gamma`` and ``.bias``/``.beta``."""
    base = path[: -len(".weight")] if path.endswith(".weight") else path
    return [
        (base, False),
        (base + ".weight", False),
        (base + ".gamma", False),
        (base + ".bias", True),
        (base + ".beta", True),
    ]


def _prefix_regex(prefix: str, placeholder: str | None) -> re.Pattern[str]:
    """A regex matching ``prefix`` (its placeholder as digits) followed by the rest of a name."""
    pattern = re.escape(prefix)
    if placeholder is not None:
        name = placeholder.strip("{}")
        pattern = pattern.replace(re.escape(placeholder), rf"(?P<{name}>\d+)")
    return re.compile(pattern + r"(?P<rest>.+)\Z")


class CompiledTable:
    """A ``LayoutTable`` turned into lookups: name -> claim in a few dict and regex probes."""

    def __init__(self, table: LayoutTable) -> None:
        self.table = table
        self.prefixes = sorted(set(table.prefixes), key=len, reverse=True)
        self.globals: dict[str, Claim] = {}
        self.in_layer: dict[str, Claim] = {}
        self.in_expert: dict[str, Claim] = {}
        self.in_shared: dict[str, Claim] = {}
        self._add_roles(self.globals, table.globals, "global")
        self._add_roles(self.in_layer, {role: [p for p in as_paths(paths)
                                               if LAYER_PLACEHOLDER not in p]
                                        for role, paths in table.layer.items()}, "layer")
        #: block paths naming their block's index (``layer_norm1.{layer}``), from the model prefix
        self.indexed: list[tuple[re.Pattern[str], Claim]] = []
        layer_prefixes = as_paths(table.layer_prefix)
        for role, paths in table.layer.items():
            for path in as_paths(paths):
                if LAYER_PLACEHOLDER not in path:
                    continue
                # one stack's own path (T5's decoder MLP norm) lies under that stack's prefix
                stack = next((i for i, p in enumerate(layer_prefixes)
                              if table.stacks and path.startswith(p)), 0)
                for name, bias in _expansions(path):
                    if not (bias and role.endswith(BIAS)):
                        pattern = re.escape(name).replace(re.escape(LAYER_PLACEHOLDER),
                                                          r"(?P<layer>\d+)")
                        self.indexed.append((re.compile(pattern + r"\Z"),
                                             Claim("layer", role, bias, stack=stack)))
        for path in table.fused:
            for name, bias in _expansions(path):
                self._add(self.in_layer, name, Claim("fused", path, bias))
        for path, stacked in table.stacked.items():
            for name, bias in _expansions(path):
                self._add(self.in_layer, name, Claim("stacked", path, bias))
            # gpt-oss's MXFP4 files: the stack packed in ``<path>_blocks`` beside its scales
            self._add(self.in_layer, path + PACKED_BLOCKS, Claim("stacked", path, False))
            if stacked.bias:
                self._add(self.in_layer, stacked.bias, Claim("stacked", path, True))
        self._add_roles(self.in_expert, table.expert, "expert")
        self._add_roles(self.in_shared, table.shared_roles() if table.shared_experts is not None
                        else {}, "shared")
        self.layer_res = [_prefix_regex(p, LAYER_PLACEHOLDER) for p in as_paths(table.layer_prefix)]
        self.expert_res = [_prefix_regex(p, EXPERT_PLACEHOLDER) for p in as_paths(table.experts)]
        self.shared_res = [
            _prefix_regex(p, EXPERT_PLACEHOLDER if EXPERT_PLACEHOLDER in p else None)
            for p in as_paths(table.shared_experts)
        ]
        self.known = [f".{fragment}." for fragment in table.known_unassigned]
        self.known += [f".{path}{PACKED_SCALES}." for path in table.stacked]

    def _add(self, lookup: dict[str, Claim], name: str, claim: Claim) -> None:
        old = lookup.get(name)
        if old is not None and old.bias != claim.bias:
            # ``X.bias`` is the bias of ``X``'s role unless a path names it for a role of its
            # own (DeepSeek-V4's router ``ffn.gate`` and its selection bias ``ffn.gate.bias``)
            if old.bias:
                lookup[name] = claim
            return
        if old is not None and old != claim:
            raise UsageError(
                f"layout table {self.table.family!r}: {name!r} is given both as "
                f"{old.role!r} and as {claim.role!r}"
            )
        lookup[name] = claim

    def _add_roles(self, lookup: dict[str, Claim], roles: dict[str, Paths], kind: ClaimKind) -> None:
        for role, paths in roles.items():
            for path in as_paths(paths):
                for name, bias in _expansions(path):
                    if bias and role.endswith(BIAS):
                        continue  # a bias role given its own path has no bias of its own
                    self._add(lookup, name, Claim(kind, role, bias))

    def claim(self, name: str) -> Claim | None:
        """The claim on ``name``, trying each optional prefix, longest first."""
        for prefix in self.prefixes:
            if name.startswith(prefix):
                hit = self._claim_relative(name[len(prefix):])
                if hit is not None:
                    return hit
        return None

    def _claim_relative(self, rel: str) -> Claim | None:
        hit = self.globals.get(rel)
        if hit is not None:
            return hit
        for pattern, claim in self.indexed:
            m = pattern.match(rel)
            if m is not None:
                return replace(claim, layer=int(m["layer"]))
        for stack, layer_re in enumerate(self.layer_res):
            m = layer_re.match(rel)
            if m is None:
                continue
            layer, rest = int(m["layer"]), m["rest"]
            if not self.table.stacks:
                stack = 0
            hit = self.in_layer.get(rest)
            if hit is not None:
                return replace(hit, layer=layer, stack=stack)
            for expert_re in self.expert_res:
                e = expert_re.match(rest)
                if e is not None and (hit := self.in_expert.get(e["rest"])) is not None:
                    return replace(hit, layer=layer, expert=int(e["expert"]), stack=stack)
            for shared_re in self.shared_res:
                s = shared_re.match(rest)
                if s is not None and (hit := self.in_shared.get(s["rest"])) is not None:
                    index = int(s["expert"]) if "expert" in shared_re.groupindex else 0
                    return replace(hit, layer=layer, expert=index, stack=stack)
        return None

    def is_known(self, name: str) -> bool:
        """Whether ``name`` is an expected tensor this table deliberately leaves unassigned."""
        dotted = f".{name}."
        return any(fragment in dotted for fragment in self.known)


#: a Mamba-2 ``in_proj`` (Hugging Face's name, llama.cpp's) -> the tensors beside it that size
#: its parts: what ``out_proj`` reads, the channels ``conv1d`` convolves, one ``A_log`` per head
_MAMBA2_SIZED_BY = {"in_proj": ("out_proj.weight", "conv1d.weight", "A_log"),
                    "ssm_in": ("ssm_out.weight", "ssm_conv1d.weight", "ssm_a")}


class _Config:
    """Typed look-ups in an HF-style config, falling back to a multimodal ``text_config``."""

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.top = config or {}
        #: an image or speech encoder with a language model as its decoder (TrOCR, Donut,
        #: Nougat): the decoder's config is the text config
        self.composite = self.top.get("model_type") in _COMPOSITES
        # an encoder-decoder that describes each stack in a sub-config (T5Gemma) describes its
        # language model's sizes in the decoder's
        text = self.top.get("text_config") or self.top.get("decoder")
        self.text: dict[str, Any] = text if isinstance(text, dict) else {}
        #: sub-configs of attention and MLP settings (DBRX's and MPT's), looked in last
        self.nested: list[dict[str, Any]] = [
            part for key in _NESTED_CONFIGS
            if isinstance(part := self.top.get(key), dict)]

    @property
    def model_type(self) -> str | None:
        value = self.top.get("model_type")
        return value if isinstance(value, str) and value else None

    @property
    def text_model_type(self) -> str | None:
        value = self.text.get("model_type")
        return value if isinstance(value, str) and value else None

    @property
    def other_parts(self) -> list[str]:
        """Modules of other modalities that a multimodal config describes in sub-configs
        beside its ``text_config`` (Granite Speech's ``encoder_config`` and
        ``projector_config``: its ``encoder`` and ``projector``)."""
        if not isinstance(self.top.get("text_config"), dict):
            return []
        return [key.removesuffix("_config") for key, value in self.top.items()
                if key.endswith("_config") and isinstance(value, dict)
                and key not in _NOT_MODALITIES]

    @property
    def one_stack_saved(self) -> bool:
        """Whether the files hold one stack of an encoder-decoder family on purpose: the
        config says it is not an encoder-decoder, or names the class that holds one (UMT5's
        ``UMT5EncoderModel`` still says ``is_encoder_decoder: true``)."""
        classes = self.top.get("architectures")
        named = isinstance(classes, list) and any(
            isinstance(c, str) and c.endswith(_ONE_STACK_CLASSES) for c in classes)
        return self.top.get("is_encoder_decoder") is False or named

    @property
    def quant_method(self) -> str | None:
        """``quantization_config.quant_method`` (top level, then ``text_config``), if any."""
        for source in (self.top, self.text):
            method = (source.get("quantization_config") or {}).get("quant_method")
            if isinstance(method, str):
                return method
        return None

    def get_int(self, *keys: str) -> int | None:
        """The first positive integer under ``keys`` (top level first, then ``text_config``,
        then the attention and MLP sub-configs); a dotted key reads a sub-config
        (``encoder.num_hidden_layers``)."""
        for source in (self.top, self.text, *self.nested):
            for key in keys:
                value: Any = source
                for part in key.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
        return None


def role_shape(ref: RoleRef, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``ref.apply`` gives a stored tensor of ``shape``, without loading it."""
    dims = list(shape)
    if ref.packing == "mxfp4":  # [..., G, 16] bytes hold G * 32 values
        dims = dims[:-2] + [dims[-2] * dims[-1] * 2]
    if ref.packing == "ternary" and dims:  # four rows a byte
        dims[0] *= TERNARY_PER_BYTE
    if ref.packing == "fp4" and dims:  # two inputs a byte
        dims[-1] *= FP4_PER_BYTE
    if ref.unflatten is not None and dims:
        dims = [ref.unflatten, dims[0] // ref.unflatten, *dims[1:]]
    if ref.expert is not None:
        dims = dims[1:]
    if ref.transpose and len(dims) >= 2:
        dims[-2], dims[-1] = dims[-1], dims[-2]
    if dims and ref.period is not None:
        start, stop = ref.rows if ref.rows is not None else (0, ref.period)
        dims[0] = dims[0] // ref.period * (stop - start)
    elif dims and (ref.rows is not None or ref.step != 1):
        start, stop = ref.rows if ref.rows is not None else (0, dims[0])
        dims[0] = len(range(start, stop, ref.step))
    return tuple(dims)


def name_patterns(names: Iterable[str]) -> list[str]:
    """Distinct names with digit runs collapsed to ``N``, in first-seen order."""
    return list(dict.fromkeys(re.sub(r"\d+", "N", name) for name in names))


#: gpt-oss's MXFP4 stacks: ``<stack>_blocks`` (packed values) and ``<stack>_scales``
PACKED_BLOCKS, PACKED_SCALES = "_blocks", "_scales"

#: companions of an FP8/INT8 weight ``X.weight`` that hold its scales (``X.<name>``):
#: DeepSeek-V3 / transformers' fine-grained FP8, compressed-tensors, DeepSeek-V4's own files
QUANT_SCALES = ("weight_scale_inv", "weight_scale", "scale")

#: values a byte of DeepSeek-V4's FP4 experts holds, and values one E8M0 scale covers
FP4_PER_BYTE, FP4_GROUP = 2, 32

#: name endings of weight matrices that a quantisation library stored packed, and the format:
#: no reader here unpacks them, and reading their integers as weights would compare noise
PACKED_WEIGHTS = (
    (".qweight", "GPTQ/AWQ (qweight, qzeros, scales)"),
    (".weight_packed", "compressed-tensors pack-quantized (weight_packed, weight_scale)"),
    (".SCB", "bitsandbytes 8-bit (int8 weight, SCB)"),
    (".weight.absmax", "bitsandbytes 4-bit (absmax, quant_map)"),
    (".W_q", "HQQ (W_q, scale, zero)"),
)


def _refuse_packed(tensors: list[TensorInfo], cfg: _Config) -> None:
    """Stop with the format's name where weight matrices are stored packed (GPTQ, AWQ, ...)."""
    for t in tensors:
        for ending, form in PACKED_WEIGHTS:
            if t.name.endswith(ending):
                method = cfg.quant_method
                said = f"; config quant_method {method!r}" if method else ""
                raise ArchitectureError(
                    f"the weight matrices are stored packed by {form}, e.g. {t.name!r}{said}: "
                    f"lineage reads plain weights, FP8/INT8 ones beside their scales, GGUF "
                    f"and quantised ONNX, but does not unpack this format",
                    hint="compare the unquantised release, or dequantise this one with the "
                         "library that wrote it and save it as safetensors",
                )


def _unknown_layout(tensors: list[TensorInfo], model_type: str | None, why: str) -> ArchitectureError:
    """An error listing what was found, so that a user can write a role map for it."""
    patterns = name_patterns(t.name for t in tensors)
    if patterns:
        shown = ", ".join(patterns[:PATTERN_LIMIT])
        if len(patterns) > PATTERN_LIMIT:
            shown += f" and {len(patterns) - PATTERN_LIMIT} more"
        found = f"{len(tensors)} tensors named like {shown}"
    else:
        found = "no tensors"
    typed = f"config model_type {model_type!r}" if model_type else "no config model_type"
    return ArchitectureError(f"unknown tensor layout ({why}): {found}; {typed}", hint=ROLE_MAP_HINT)


def _collapse_indices(name: str, count: int = 0) -> str:
    """``layers.17.mlp.experts.3.w1`` -> ``layers.0.mlp.experts.0.w1``: same claim, fewer names
    (with ``count``, only the first ``count`` indices)."""
    return re.sub(r"(?:(?<=\.)|^)\d+(?=\.|$)", "0", name, count=count)


#: at most this many names that one collapsed name stands for are claimed one by one where
#: the collapsed name claims nothing (T5's sublayers ``layer.1``, ``layer.2``); more are a
#: list of experts or blocks, which the collapsed name would have claimed
_VARIANTS = 8


def _index_counts(tensors: list[TensorInfo]) -> dict[str, dict[str, int]]:
    """Names with layer/expert indices collapsed -> the names with only their first index
    (the block's) collapsed that each stands for, and how many tensors each of those is."""
    counts: dict[str, dict[str, int]] = {}
    for t in tensors:
        variants = counts.setdefault(_collapse_indices(t.name), {})
        first = _collapse_indices(t.name, count=1)
        variants[first] = variants.get(first, 0) + 1
    return counts


def _score_counts(compiled: CompiledTable, counts: dict[str, dict[str, int]],
                  total: int) -> tuple[float, bool]:
    covered, has_layer = 0, False
    for name, variants in counts.items():
        hit = compiled.claim(name)
        if hit is not None or compiled.is_known(name):
            covered += sum(variants.values())
            has_layer = has_layer or (hit is not None and hit.layer is not None)
        elif len(variants) <= _VARIANTS:  # names told apart by a later index, one by one
            for variant, count in variants.items():
                hit = compiled.claim(variant)
                if hit is not None or compiled.is_known(variant):
                    covered += count
                    has_layer = has_layer or (hit is not None and hit.layer is not None)
    return (covered / total if total else 0.0), has_layer


def score(table: LayoutTable, tensors: list[TensorInfo]) -> tuple[float, bool]:
    """Share of tensors a table claims or knows, and whether it found at least one layer."""
    return _score_counts(CompiledTable(table), _index_counts(tensors), len(tensors))


def detect_tables(
    tensors: list[TensorInfo], tables: Iterable[LayoutTable], model_type: str | None = None
) -> list[LayoutTable]:
    """The tables claiming the most tensors, in listed order, if they claim nearly all (more
    than one where families share names, e.g. GPT-2 and GPT-BigCode)."""
    counts = _index_counts(tensors)
    best: list[LayoutTable] = []
    top = 0.0
    for table in tables:
        share, has_layer = _score_counts(CompiledTable(table), counts, len(tensors))
        if not has_layer or share < top:
            continue
        if share > top or not best:
            best, top = [table], share
        else:
            best.append(table)
    if not best or top < NEAR_ALL:
        why = "no family matches" if not best else (
            f"best match {best[0].family!r} claims only {top:.0%} of tensors"
        )
        raise _unknown_layout(tensors, model_type, why)
    return best


def detect_table(
    tensors: list[TensorInfo], tables: Iterable[LayoutTable], model_type: str | None = None
) -> LayoutTable:
    """The table claiming the most tensors (first listed wins ties), if it claims nearly all."""
    return detect_tables(tensors, tables, model_type)[0]


def _choose_tables(
    tensors: list[TensorInfo], cfg: _Config, fmt: str
) -> list[tuple[LayoutTable, str]]:
    """The built-in tables for these tensors and the family names to report: one where the
    config names the family, else every table that claims as many tensors as the best."""
    known = family_for_model_type(cfg.model_type) or family_for_model_type(cfg.text_model_type)
    if fmt == "gguf":
        # the GGUF table made for this architecture (BERT's, Mamba's), else the decoders'
        own = next((t for t in GGUF_TABLES.values() if cfg.model_type in t.model_types), None)
        table = own or (GGUF if cfg.model_type else detect_table(tensors, (GGUF, GGUF_BERT)))
        family = known.family if known else (cfg.model_type or table.family)
        return [(table, family)]
    if known is not None:
        return [(known, known.family)]
    return [(t, t.family) for t in detect_tables(tensors, FAMILIES.values(), cfg.model_type)]


#: wrappers a multimodal model keeps its parts under (GIT's image encoder is ``git.image_encoder``)
_WRAPPERS = ("model", "git")


def _part(name: str) -> str:
    """The top-level module a tensor belongs to, with a wrapper kept: ``model.visual.``."""
    parts = name.split(".")
    keep = 2 if parts[0] in _WRAPPERS and len(parts) > 1 else 1
    return ".".join(parts[:keep]) + ("." if len(parts) > keep else "")


def _unwrapped(part: str) -> str:
    """A part's module without its wrapper: ``model.visual.`` -> ``visual``."""
    wrapper = next((w for w in _WRAPPERS if part.startswith(w + ".")), None)
    return (part.removeprefix(wrapper + ".") if wrapper else part).rstrip(".")


def split_modalities(tensors: list[TensorInfo], configured: Collection[str] = ()
                     ) -> tuple[list[TensorInfo], dict[str, int]]:
    """The language model's tensors, and the other modalities' parts (``MULTIMODAL_PARTS``,
    those the config describes apart, ``configured``, and ``MULTIMODAL_ADAPTERS`` beside one of
    them) with how many tensors each holds."""
    parts: dict[str, int] = {}
    for t in tensors:
        part = _part(t.name)
        parts[part] = parts.get(part, 0) + 1
    towers = {p for p in parts if _unwrapped(p) in MULTIMODAL_PARTS or any(
        _unwrapped(p) == c or _unwrapped(p).startswith(c + "_") for c in configured)}
    if towers:
        towers |= {p for p in parts if _unwrapped(p) in MULTIMODAL_ADAPTERS}
    kept = [t for t in tensors if _part(t.name) not in towers]
    return kept, {p: parts[p] for p in sorted(towers)}


def _decoder_of_composite(tensors: list[TensorInfo], others: dict[str, int]
                          ) -> tuple[list[TensorInfo], dict[str, int]]:
    """A vision- or speech-encoder-decoder's language model: what is not its encoder
    (``encoder.``) or the projection from the encoder's width to the decoder's
    (``enc_to_dec_proj``), which join the other modalities."""
    parts = {p: [t for t in tensors if t.name.startswith(p)] for p in _COMPOSITE_ENCODER}
    kept = [t for t in tensors if not t.name.startswith(_COMPOSITE_ENCODER)]
    return kept, dict(sorted((others | {p: len(found) for p, found in parts.items()
                                        if found}).items()))


def resolve_layout(
    tensors: list[TensorInfo],
    config: dict[str, Any] | None,
    *,
    fmt: str = "safetensors",
    role_map: RoleMap | None = None,
) -> ModelLayout:
    """Map every tensor to a canonical role, or raise ``ArchitectureError`` saying why not.

    ``role_map`` overrides detection entirely. ``fmt == "gguf"`` selects llama.cpp naming;
    every other format (safetensors, PyTorch, ONNX) uses Hugging Face names.
    """
    cfg = _Config(config)
    _refuse_packed(tensors, cfg)
    if role_map is not None:
        return _Builder(CompiledTable(role_map), tensors, cfg, role_map.family).build()
    tensors, others = split_modalities(tensors, cfg.other_parts)
    if cfg.composite:  # the encoder reads images or speech; the language model is the decoder
        tensors, others = _decoder_of_composite(tensors, others)
    candidates = _choose_tables(tensors, cfg, fmt)
    if cfg.composite:
        candidates = [(t.model_copy(update={"prefixes": tuple(
            "decoder." + p for p in t.prefixes)}), f) for t, f in candidates]
    first: ArchitectureError | None = None
    for table, family in candidates:
        try:
            layout = _Builder(CompiledTable(table), tensors, cfg, family).build()
            layout.other_modalities = others
            return layout
        except ArchitectureError as e:
            # names shared by families (GPT-2's Conv1D and GPT-BigCode's Linear): the shapes
            # decide; if none fits, the first family's reason is the one to read
            first = first or e
    assert first is not None
    guessed = fmt != "gguf" and cfg.model_type and not (
        family_for_model_type(cfg.model_type) or family_for_model_type(cfg.text_model_type))
    if guessed:  # a guess by names that failed: say so, or the reason reads as the family's
        raise ArchitectureError(
            f"config model_type {cfg.model_type!r} has no table of its own, and reading it with "
            f"the {candidates[0][1]!r} layout, whose tensor names it shares, failed: "
            f"{first.message}", hint=ROLE_MAP_HINT) from first
    raise first


@dataclass
class _Dims:
    """Sizes known before blocks are built (config, embedding), used to cut fused tensors."""

    hidden: int | None
    heads: int | None
    head_dim: int | None
    kv_heads: int | None


#: how one expert's matrix lies in a 3-D stack: ``[E, out, in]`` or ``[E, in, out]``
Layout = Literal["out_in", "in_out"]


class _Builder:
    """Turns one table's claims on one tensor list into a checked ``ModelLayout``."""

    def __init__(
        self, compiled: CompiledTable, tensors: list[TensorInfo], cfg: _Config, family: str
    ) -> None:
        self.compiled = compiled
        self.table = compiled.table
        self.tensors = tensors
        self.cfg = cfg
        self.family = family
        self.model_type = cfg.model_type or family
        self.shapes = {t.name: t.shape for t in tensors}
        self.dtypes = {t.name: t.dtype for t in tensors}
        #: tensors stored but computing nothing (``_KV_SHARED_KEYS``): unread, and expected
        self.unused: set[str] = set()
        self._stacks: dict[str, int] = {}
        #: the block count the config gives (all stacks together), set when claiming
        self._n_layers: int | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _transposed(self, role: str, name: str, bias: bool) -> bool:
        base = role[: -len(BIAS)] if role.endswith(BIAS) else role
        return not bias and base in self.table.transpose and len(self.shapes[name]) == 2

    def _ref(self, name: str, claim: Claim) -> RoleRef:
        """The ref of a tensor claimed whole: transposed where stored ``[in, out]``, and a
        norm's weight offset to the gain it multiplies by (``LayoutTable.norm_offset``)."""
        offset = (self.table.norm_offset
                  if claim.role in NORM_ROLES and not claim.bias else 0.0)
        return RoleRef(name, transpose=self._transposed(claim.role, name, claim.bias),
                       offset=offset, **self._scaled(name))

    def _scaled(self, name: str) -> dict[str, Any]:
        """How to dequantise ``name`` where it is FP8/INT8 beside a tensor of its scales
        (``RoleRef.scale``); nothing for any other tensor."""
        dtype = self.dtypes.get(name, "")
        if not (dtype.startswith("float8") or dtype in ("int8", "uint8")):
            return {}
        stem = name.removesuffix(".weight")
        scale = next((f"{stem}.{k}" for k in QUANT_SCALES if f"{stem}.{k}" in self.shapes), None)
        if scale is None:
            return {}
        if dtype == "uint8" and self.cfg.quant_method == "bitnet":
            return {"scale": scale, "packing": "ternary"}
        if dtype == "int8" and self._fp4_rows(name, scale):
            return {"scale": scale, "packing": "fp4"}
        zero = f"{stem}.weight_zero_point"
        return {"scale": scale, "zero_point": zero if zero in self.shapes else None,
                "block": self._block(name, scale)}

    def _fp4_rows(self, name: str, scale: str) -> bool:
        """Whether ``name`` holds DeepSeek-V4's FP4 values (two a byte, ``[out, in / 2]``)
        beside one E8M0 exponent per 32 of them (``[out, in / 32]``)."""
        shape, scales = self.shapes[name], self.shapes[scale]
        return (self.dtypes.get(scale) == "float8_e8m0fnu" and len(shape) == len(scales) == 2
                and scales[0] == shape[0]
                and scales[1] * FP4_GROUP == shape[1] * FP4_PER_BYTE)

    def _block(self, name: str, scale: str) -> tuple[int, int] | None:
        """Rows and columns of ``name`` that one entry of ``scale`` covers: the config's
        ``weight_block_size`` (DeepSeek-V3: 128x128, the last blocks cut short), else what
        divides the matrix evenly; None for a per-tensor or per-row scale stored flat."""
        shape, counts = self.shapes[name], self.shapes[scale]
        if len(shape) < 2 or len(counts) < 2:
            return None
        quant = self.cfg.top.get("quantization_config")
        given = quant.get("weight_block_size") if isinstance(quant, dict) else None
        block: list[int] = []
        for axis in (-2, -1):
            size, count = shape[axis], counts[axis]
            if count in (1, size):
                block.append(size // count)
            elif (isinstance(given, list) and len(given) == 2 and isinstance(given[axis], int)
                  and given[axis] > 0 and -(-size // given[axis]) == count):
                block.append(given[axis])
            elif size % count == 0 and not given:
                block.append(size // count)
            else:
                raise ArchitectureError(
                    f"{name!r} is stored in {list(shape)} values with {list(counts)} scales "
                    f"({scale!r}), which do not cover it in equal blocks"
                    + (f" of weight_block_size {given}" if given else "")
                )
        return block[0], block[1]

    def _shape(self, ref: RoleRef) -> tuple[int, ...]:
        return role_shape(ref, self.shapes[ref.tensor])

    @staticmethod
    def _put(target: dict[str, RoleRef], role: str, ref: RoleRef, where: str) -> None:
        old = target.get(role)
        if old is not None and old != ref:
            raise ArchitectureError(
                f"{where}: both {old.tensor!r} and {ref.tensor!r} claim role {role!r}"
            )
        target[role] = ref

    # -- steps -----------------------------------------------------------------------------

    def build(self) -> ModelLayout:
        claims, unassigned = self._claim_all()
        layer_claims: dict[int, list[tuple[str, Claim]]] = {}
        globals_: dict[str, RoleRef] = {}
        for name, claim in claims.items():
            if claim.layer is None:
                self._put(globals_, claim.role, self._ref(name, claim), "model")
            else:
                layer_claims.setdefault(claim.layer, []).append((name, claim))
        if not layer_claims:
            raise _unknown_layout(
                self.tensors, self.cfg.model_type,
                f"the {self.table.family!r} layout matched no transformer block",
            )
        self._check_layer_indices(sorted(layer_claims), self._n_layers)
        dims = self._early_dims(globals_)
        layers = [
            self._build_layer(i, layer_claims[i], dims) for i in range(len(layer_claims))
        ]
        return self._finish(globals_, layers, dims, unassigned)

    def _claim_all(self) -> tuple[dict[str, Claim], list[str]]:
        key = self.table.stack_layers_key
        stack_counts: list[int | None] | None = None
        if not self.table.config_counts_layers:
            n_layers = None
        elif isinstance(key, tuple):
            stack_counts = [self.cfg.get_int(k) for k in key]
            n_layers = None  # each stack's blocks are checked against its own count below
        else:
            n_layers = self.cfg.get_int(key) if key else self.cfg.get_int(*_LAYERS_KEYS)
        self._n_layers = n_layers
        extra = self.cfg.get_int(*_EXTRA_LAYERS_KEYS) or 0
        shared = self.cfg.get_int(*_KV_SHARED_KEYS) or 0
        claims: dict[str, Claim] = {}
        unassigned: list[str] = []
        for t in self.tensors:
            claim = self.compiled.claim(t.name)
            if claim is None:
                unassigned.append(t.name)
                continue
            if (shared > 0 and n_layers is not None and claim.kind == "layer"
                    and claim.layer is not None and claim.layer >= n_layers - shared
                    and claim.role in _KV_ROLES):
                unassigned.append(t.name)  # a block that reads an earlier one's keys, values
                self.unused.add(t.name)
                continue
            if claim.layer is not None and n_layers is not None and claim.layer >= n_layers:
                if claim.layer < n_layers + extra:
                    unassigned.append(t.name)  # a block the model keeps outside its stack
                    continue
                raise ArchitectureError(
                    f"tensor {t.name!r} belongs to layer {claim.layer}, but the config says "
                    f"the model has {n_layers} layers (is the config for another model?)"
                )
            claims[t.name] = claim
        claims = self._untie(claims, unassigned)
        if self.table.stacks:
            counts = stack_counts or [n_layers] * len(as_paths(self.table.layer_prefix))
            claims = self._number_stacks(claims, counts)
        return claims, sorted(unassigned)

    def _untie(self, claims: dict[str, Claim], unassigned: list[str]) -> dict[str, Claim]:
        """A tied role's first path present takes it; the copies under its other names are
        set aside (``LayoutTable.tied``)."""
        if not self.table.tied:
            return claims
        present: dict[tuple[str, bool], list[tuple[int, str]]] = {}
        for name, claim in claims.items():
            if claim.kind == "global" and claim.key in self.table.tied:
                paths = as_paths(self.table.globals[claim.key])
                rank = next((i for i, path in enumerate(paths)
                             if any(f".{name}".endswith(f".{expanded}")
                                    for expanded, _ in _expansions(path))), len(paths))
                present.setdefault((claim.key, claim.bias), []).append((rank, name))
        for named in present.values():
            first = min(rank for rank, _ in named)
            for rank, name in named:
                if rank != first:
                    del claims[name]
                    unassigned.append(name)
                    self.unused.add(name)
        return claims

    def _number_stacks(self, claims: dict[str, Claim],
                       counts: list[int | None]) -> dict[str, Claim]:
        """Blocks of stacks run one after the other as one sequence: a stack's blocks follow
        those of the stacks listed before it. Each stack has the blocks its config key counts
        (every stack ``n_layers`` where one key counts them all), or as many as its highest
        index says where the config does not count them. A stack the files do not hold is
        allowed where the model is not an encoder-decoder (``LayoutTable.stack_layers_key``)."""
        sizes: dict[int, int] = {}
        for claim in claims.values():
            if claim.layer is not None:
                sizes[claim.stack] = max(sizes.get(claim.stack, 0), claim.layer + 1)
        alone = self.cfg.composite or self.cfg.one_stack_saved
        prefixes = as_paths(self.table.layer_prefix)
        offsets, start = {}, 0
        for stack in range(len(prefixes)):
            count = counts[stack]
            if stack not in sizes:
                if count and not alone and sizes:
                    raise ArchitectureError(
                        f"the config counts {count} blocks under {prefixes[stack]!r} but the "
                        f"files hold none (a missing shard?)")
                continue
            if count is not None and sizes[stack] > count:
                raise ArchitectureError(
                    f"a block under {prefixes[stack]!r} has index {sizes[stack] - 1}, but the "
                    f"config counts {count} such blocks (is the config for another model?)")
            offsets[stack] = start
            start += count if count is not None else sizes[stack]
        if all(counts[stack] is not None for stack in sizes):
            self._n_layers = start
        # each stack named by its prefix's first part (``encoder``, ``decoder``, ``L_module``)
        self._stacks = {prefixes[stack].split(".")[0]: (
            counts[stack] if counts[stack] is not None else sizes[stack]) for stack in offsets}
        return {name: replace(claim, layer=claim.layer + offsets[claim.stack], stack=0)
                if claim.layer is not None else claim for name, claim in claims.items()}

    def _check_layer_indices(self, indices: list[int], n_layers: int | None) -> None:
        last = indices[-1]
        missing = sorted(set(range(last + 1)) - set(indices))
        if missing:
            raise ArchitectureError(
                f"layer {missing[0]} has no tensors although layers up to {last} do "
                f"(a missing shard?)"
            )
        if n_layers is not None and last + 1 < n_layers:
            raise ArchitectureError(
                f"the config says {n_layers} layers but tensors stop at layer {last} "
                f"(a missing shard?)"
            )

    def _early_dims(self, globals_: dict[str, RoleRef]) -> _Dims:
        hidden = None
        embed = globals_.get(EMBED)
        if embed is not None and len(self._shape(embed)) == 2:
            hidden = self._shape(embed)[1]
        hidden = hidden or self.cfg.get_int(*_HIDDEN_KEYS)
        heads = self.cfg.get_int(*_HEADS_KEYS)
        head_dim = self.cfg.get_int("head_dim", "d_kv")  # T5 names it d_kv
        if head_dim is None and heads and hidden and hidden % heads == 0:
            head_dim = hidden // heads
        kv_heads = self.cfg.get_int(*_KV_HEADS_KEYS)
        if self.cfg.top.get("multi_query") is True and not self.cfg.top.get(
                "new_decoder_architecture"):
            kv_heads = 1  # GPT-BigCode, Falcon-7B: one key/value head, whatever else is saved
        return _Dims(hidden=hidden, heads=heads, head_dim=head_dim, kv_heads=kv_heads)

    def _build_layer(self, index: int, claims: list[tuple[str, Claim]], dims: _Dims) -> LayerLayout:
        where = f"layer {index}"
        layer = LayerLayout(index=index)
        experts: dict[int, dict[str, RoleRef]] = {}
        shared: dict[int, dict[str, RoleRef]] = {}
        fused: dict[str, dict[bool, str]] = {}
        stacked: dict[str, dict[bool, str]] = {}
        for name, claim in claims:
            if claim.kind == "fused":
                fused.setdefault(claim.key, {})[claim.bias] = name
                continue
            if claim.kind == "stacked":
                stacked.setdefault(claim.key, {})[claim.bias] = name
                continue
            ref = self._ref(name, claim)
            if claim.kind == "layer":
                self._put(layer.roles, claim.role, ref, where)
            elif claim.kind == "expert":
                assert claim.expert is not None
                self._put(experts.setdefault(claim.expert, {}), claim.role, ref,
                          f"{where} expert {claim.expert}")
            else:
                assert claim.expert is not None
                self._put(shared.setdefault(claim.expert, {}), claim.role, ref,
                          f"{where} shared expert {claim.expert}")
        for path, names in fused.items():
            self._cut_fused(where, layer.roles, self.table.fused[path], names, dims)
        if self.table.fused_up_without_gate:
            self._split_double_up(layer.roles)
        if self.table.mlp_shares_attn_norm and MLP_NORM not in layer.roles:
            for suffix in ("", BIAS):
                if ATTN_NORM + suffix in layer.roles:
                    layer.roles[MLP_NORM + suffix] = layer.roles[ATTN_NORM + suffix]
        layouts = self._stack_layouts(where, stacked, dims)
        for path, names in stacked.items():
            self._cut_stacked(where, experts, self.table.stacked[path], names, layouts[path])
        if self.table.fused_up_without_gate:
            for roles in shared.values():
                self._split_double_up(roles)
        layer.experts = self._expert_list(where, experts, "expert")
        layer.shared_experts = self._expert_list(where, shared, "shared expert")
        if layer.experts:
            self._check_experts(where, layer.experts)
        return layer

    def _cut_fused(
        self, where: str, roles: dict[str, RoleRef], spec: Fused, names: dict[bool, str],
        dims: _Dims,
    ) -> None:
        weight, bias = names.get(False), names.get(True)
        transpose = weight is not None and any(
            self._transposed(role, weight, False) for role in spec.roles
        )
        if weight is not None:
            total = role_shape(RoleRef(weight, transpose=transpose), self.shapes[weight])[0]
        else:
            assert bias is not None
            total = self.shapes[bias][0]
        label = weight or bias
        if bias is not None and self.shapes[bias][0] != total:
            raise ArchitectureError(
                f"{where}: {bias!r} has {self.shapes[bias][0]} entries but its weight has "
                f"{total} rows"
            )
        if spec.split == "groups":
            bounds = self._group_bounds(where, label or "", total, dims)
        elif spec.split == "per_head":
            bounds = self._per_head_bounds(where, label or "", spec, total, dims)
        elif spec.split == "shards":
            bounds = self._shard_bounds(where, label or "", spec, total)
        elif spec.split == "mamba2":
            bounds = self._mamba2_bounds(where, label or "", total)
        else:
            bounds = [(*b, None) for b in
                      self._fused_bounds(where, label or "", spec, total, roles, dims)]
        quant = self._scaled(weight) if weight is not None else {}
        for role, (start, stop, step, period) in zip(spec.roles, bounds, strict=True):
            cut = {"rows": (start, stop), "step": step, "period": period}
            if weight is not None:
                self._put(roles, role, RoleRef(weight, transpose=transpose, **cut, **quant),
                          where)
            if bias is not None:
                self._put(roles, role + BIAS, RoleRef(bias, **cut), where)

    @staticmethod
    def _group_bounds(
        where: str, name: str, total: int, dims: _Dims
    ) -> list[tuple[int, int, int, int]]:
        """q, k, v stored key/value group by group (each group's query heads, then its key
        head, then its value head): the group count is what the rows leave for k and v."""
        heads, hd = dims.heads, dims.head_dim
        if not heads or not hd:
            raise ArchitectureError(
                f"{where}: cannot split fused {name!r} into heads: the config gives no head count"
            )
        per_head, left = divmod(total, hd)
        kv, odd = divmod(per_head - heads, 2)
        if left or odd or kv <= 0 or heads % kv:
            raise ArchitectureError(
                f"{where}: {name!r} has {total} rows, which is not {heads} query heads of "
                f"{hd} plus a key and a value head for each of some groups of them"
            )
        if dims.kv_heads and dims.kv_heads != kv:
            raise ArchitectureError(
                f"{where}: {name!r} holds {kv} key/value heads, but the config says "
                f"{dims.kv_heads}"
            )
        period, q = total // kv, heads // kv * hd
        return [(0, q, 1, period), (q, q + hd, 1, period), (q + hd, q + 2 * hd, 1, period)]

    def _per_head_bounds(
        self, where: str, name: str, spec: Fused, total: int, dims: _Dims
    ) -> list[tuple[int, int, int, int]]:
        """Each head's rows cut into consecutive pieces, one per role: ``head_dim`` rows each,
        or what the config keys of ``spec.head_parts`` add up to."""
        heads, parts = dims.heads, len(spec.roles)
        if spec.head_parts is None:
            sizes = [dims.head_dim or 0] * parts
        else:
            missing = [k for keys in spec.head_parts for k in keys if self.cfg.get_int(k) is None]
            if missing:
                raise ArchitectureError(
                    f"{where}: cannot split fused {name!r} into heads: the config gives no "
                    f"{', '.join(missing)}"
                )
            sizes = [sum(self.cfg.get_int(k) or 0 for k in keys) for keys in spec.head_parts]
        if not heads or not all(sizes):
            raise ArchitectureError(
                f"{where}: cannot split fused {name!r} into heads: the config gives no head count"
            )
        width = sum(sizes)
        if total != heads * width:
            parts_of = (f"{parts} parts of each of {heads} heads of {sizes[0]}"
                        if spec.head_parts is None else
                        f"{heads} heads of {' + '.join(map(str, sizes))}")
            raise ArchitectureError(f"{where}: {name!r} has {total} rows, not {parts_of}")
        starts = [sum(sizes[:i]) for i in range(parts + 1)]
        return [(starts[i], starts[i + 1], 1, width) for i in range(parts)]

    @staticmethod
    def _shard_bounds(
        where: str, name: str, spec: Fused, total: int
    ) -> list[tuple[int, int, int, int]]:
        """Rows stored in ``spec.shards`` equal blocks, each holding the roles' rows in equal
        consecutive parts: role ``i`` is part ``i`` of every block, the blocks in order."""
        assert spec.shards is not None
        parts = len(spec.roles)
        if total % (spec.shards * parts):
            raise ArchitectureError(
                f"{where}: {name!r} has {total} rows, not {spec.shards} shards of {parts} "
                "equal parts"
            )
        period = total // spec.shards
        part = period // parts
        return [(i * part, (i + 1) * part, 1, period) for i in range(parts)]

    def _mamba2_bounds(self, where: str, name: str, total: int) -> list[tuple[int, int, int,
                                                                             None]]:
        """The gate ``z`` and input ``x`` rows of a Mamba-2 ``in_proj``, whose rows are an
        optional MLP's two halves, then ``z`` and ``x`` (``inner`` each), ``B`` and ``C``, and one
        ``dt`` per head: ``inner`` is what ``out_proj`` reads, ``conv1d`` convolves ``x``, ``B``
        and ``C``, ``A_log`` holds one entry per head."""
        stem = name.removesuffix(".weight")
        module = next((m for m in _MAMBA2_SIZED_BY if stem.endswith(m)), "in_proj")
        siblings = _MAMBA2_SIZED_BY[module]
        sizes = [self.shapes.get(stem.removesuffix(module) + part) for part in siblings]
        if any(s is None for s in sizes):
            lacks = ", ".join(part.removesuffix(".weight") for part in siblings)
            raise ArchitectureError(f"{where}: cannot split {name!r}: its mixer lacks one of "
                                    f"{lacks}, which size its parts")
        inner, conv, heads = sizes[0][1], sizes[1][0], sizes[2][0]  # type: ignore[index]
        mlp = total - inner - conv - heads
        if mlp < 0 or mlp % 2 or conv <= inner:
            raise ArchitectureError(
                f"{where}: {name!r} has {total} rows, not z ({inner}), x, B and C ({conv}) and "
                f"one dt per head ({heads}) after two equal MLP halves")
        return [(mlp, mlp + inner, 1, None), (mlp + inner, mlp + 2 * inner, 1, None)]

    def _fused_bounds(
        self, where: str, name: str, spec: Fused, total: int, roles: dict[str, RoleRef],
        dims: _Dims,
    ) -> list[tuple[int, int, int]]:
        n = len(spec.roles)
        if spec.split == "interleave":
            if total % n:
                raise ArchitectureError(f"{where}: {name!r} has {total} rows, not {n} interleaved parts")
            return [(i, total, n) for i in range(n)]
        if spec.split == "halves":
            if total % n:
                raise ArchitectureError(f"{where}: {name!r} has {total} rows, not {n} equal parts")
            part = total // n
            return [(i * part, (i + 1) * part, 1) for i in range(n)]
        # heads: q has num_heads * head_dim rows, k and v share the rest
        o_in = self._shape(roles[O])[1] if O in roles and len(self._shape(roles[O])) == 2 else None
        q_rows = dims.heads * dims.head_dim if dims.heads and dims.head_dim else o_in
        if q_rows is None:
            raise ArchitectureError(
                f"{where}: cannot split fused {name!r}: no head counts in the config and no "
                f"output projection to measure"
            )
        if o_in is not None and o_in != q_rows:
            raise ArchitectureError(
                f"{where}: the config gives q {q_rows} rows but the output projection reads "
                f"{o_in}"
            )
        rest = total - q_rows
        if rest <= 0 or rest % 2:
            raise ArchitectureError(
                f"{where}: {name!r} has {total} rows, which is not q ({q_rows}) plus equal k and v"
            )
        kv_rows = rest // 2
        if dims.kv_heads and dims.head_dim and kv_rows != dims.kv_heads * dims.head_dim:
            raise ArchitectureError(
                f"{where}: {name!r} has {kv_rows} rows each for k and v, but the config says "
                f"{dims.kv_heads} kv heads of {dims.head_dim}"
            )
        return [(0, q_rows, 1), (q_rows, q_rows + kv_rows, 1), (q_rows + kv_rows, total, 1)]

    def _split_double_up(self, roles: dict[str, RoleRef]) -> None:
        """An ``up`` twice as wide as ``down`` reads, with no ``gate``, is gate and up fused."""
        if UP not in roles or GATE in roles or DOWN not in roles:
            return
        up_shape, down_shape = self._shape(roles[UP]), self._shape(roles[DOWN])
        if len(up_shape) != 2 or len(down_shape) != 2 or up_shape[0] != 2 * down_shape[1]:
            return
        inner = down_shape[1]
        for suffix in ("", BIAS):
            ref = roles.pop(UP + suffix, None)
            if ref is None:
                continue
            roles[GATE + suffix] = replace(ref, rows=(0, inner))
            roles[UP + suffix] = replace(ref, rows=(inner, 2 * inner))

    def _stack_layouts(
        self, where: str, stacked: dict[str, dict[bool, str]], dims: _Dims
    ) -> dict[str, Layout]:
        """Orientation of each 3-D stack of a block (by path), decided by its shapes; where
        both orientations fit one stack's shapes (a gate/up stack whose ``2 I`` equals the
        hidden size), by those of the block's other stacks, which a family stores alike
        (Qwen3-VL-MoE's files ``[E, in, out]``, transformers' memory ``[E, out, in]``)."""
        fits: dict[str, list[Layout]] = {}
        for path, names in stacked.items():
            weight = names.get(False)
            if weight is None:
                raise ArchitectureError(
                    f"{where}: expert bias {names.get(True)!r} without its weight stack")
            if self._packed_stack(where, weight):  # MXFP4: [E, out, in] whatever the spec
                fits[path] = ["out_in"]
            else:
                fits[path] = self._stack_fits(where, weight, self.table.stacked[path],
                                              self._stack_shape(where, self.table.stacked[path],
                                                                weight)[0], dims)
        decided = {f[0] for f in fits.values() if len(f) == 1}
        out: dict[str, Layout] = {}
        for path, found in fits.items():
            if len(found) == 1:
                out[path] = found[0]
            elif len(decided) == 1:
                out[path] = next(iter(decided))
            elif self.table.stacked[path].layout is not None:
                out[path] = self.table.stacked[path].layout  # type: ignore[assignment]
            else:
                raise ArchitectureError(
                    f"{where}: {stacked[path][False]!r} has shape "
                    f"{list(self.shapes[stacked[path][False]])}: both orientations fit hidden "
                    f"size {dims.hidden}; set 'layout' (out_in or in_out) for this stack")
        return out

    def _stack_fits(
        self, where: str, name: str, spec: Stacked, shape: tuple[int, ...], dims: _Dims
    ) -> list[Layout]:
        """The orientations of one expert's matrix inside a 3-D stack that its shape allows
        (the table's own where the hidden size is unknown)."""
        if len(shape) != 3:
            raise ArchitectureError(f"{where}: {name!r} has shape {list(shape)}, not [experts, a, b]")
        hidden = dims.hidden
        if hidden is None:
            if spec.layout is None:
                raise ArchitectureError(f"{where}: hidden size unknown, cannot orient {name!r}")
            return [spec.layout]
        n = len(spec.roles)
        fits: list[Layout] = []
        for layout in ("out_in", "in_out"):
            out, inner = (shape[1], shape[2]) if layout == "out_in" else (shape[2], shape[1])
            if spec.roles == (DOWN,):
                ok = out == hidden
            else:
                ok = inner == hidden and out % n == 0
            if ok:
                fits.append(layout)
        if not fits:
            raise ArchitectureError(
                f"{where}: {name!r} has shape {list(shape)}, which fits neither [E, out, in] nor "
                f"[E, in, out] for hidden size {hidden}"
            )
        return fits

    def _cut_stacked(
        self, where: str, experts: dict[int, dict[str, RoleRef]], spec: Stacked,
        names: dict[bool, str], layout: Layout,
    ) -> None:
        weight, bias = names[False], names.get(True)
        (shape, unflatten), packed = (self._stack_shape(where, spec, weight),
                                      self._packed_stack(where, weight))
        if packed:  # MXFP4 groups 32 inputs of each output row: [E, out, in]
            shape = role_shape(RoleRef(weight, packing="mxfp4"), shape)
        transpose = layout == "in_out"
        count, out = shape[0], (shape[1] if layout == "out_in" else shape[2])
        n = len(spec.roles)
        if n == 1:
            bounds: list[tuple[int, int, int] | None] = [None]
        elif spec.split == "interleave":
            bounds = [(i, out, n) for i in range(n)]
        else:
            part = out // n
            bounds = [(i * part, (i + 1) * part, 1) for i in range(n)]
        if bias is not None and self.shapes[bias] != (count, out):
            raise ArchitectureError(
                f"{where}: {bias!r} has shape {list(self.shapes[bias])}, expected {[count, out]}"
            )
        quant = packed or self._scaled(weight)
        for e in range(count):
            target = experts.setdefault(e, {})
            for role, cut in zip(spec.roles, bounds, strict=True):
                rows, step = (None, 1) if cut is None else ((cut[0], cut[1]), cut[2])
                self._put(target, role, RoleRef(weight, expert=e, transpose=transpose, rows=rows,
                                                 step=step, unflatten=unflatten, **quant),
                          f"{where} expert {e}")
                if bias is not None:
                    self._put(target, role + BIAS, RoleRef(bias, expert=e, rows=rows, step=step),
                              f"{where} expert {e}")

    def _stack_shape(self, where: str, spec: Stacked,
                     weight: str) -> tuple[tuple[int, ...], int | None]:
        """A stack's shape as ``[experts, a, b]``, and the expert count that splits a flat
        one's rows (``Stacked.flat``; None for a 3-D stack)."""
        shape = self.shapes[weight]
        if not spec.flat:
            return shape, None
        experts = self.cfg.get_int(*_EXPERTS_KEYS)
        if len(shape) != 2 or experts is None or shape[0] % experts or self._scaled(weight):
            raise ArchitectureError(
                f"{where}: {weight!r} has shape {list(shape)}: not a plain 2-D stack of "
                f"{experts or 'an unknown number of'} experts' rows (the config's expert count)")
        return (experts, shape[0] // experts, shape[1]), experts

    def _packed_stack(self, where: str, weight: str) -> dict[str, Any]:
        """How to unpack ``weight`` where it is an MXFP4 ``*_blocks`` stack; else nothing."""
        if not weight.endswith(PACKED_BLOCKS):
            return {}
        scales = weight.removesuffix(PACKED_BLOCKS) + PACKED_SCALES
        shape = self.shapes[weight]
        if len(shape) != 4 or shape[-1] != 16 or self.shapes.get(scales) != shape[:-1]:
            raise ArchitectureError(
                f"{where}: {weight!r} has shape {list(shape)} and {scales!r} "
                f"{list(self.shapes[scales]) if scales in self.shapes else 'is missing'}: not "
                f"MXFP4 blocks [experts, rows, groups, 16] beside their [experts, rows, groups] "
                f"scales"
            )
        return {"scale": scales, "packing": "mxfp4"}

    def _expert_list(
        self, where: str, found: dict[int, dict[str, RoleRef]], what: str
    ) -> list[dict[str, RoleRef]]:
        if not found:
            return []
        last = max(found)
        missing = sorted(set(range(last + 1)) - set(found))
        if missing:
            raise ArchitectureError(
                f"{where}: {what} {missing[0]} has no tensors although {what}s up to {last} do "
                f"(a missing shard?)"
            )
        listed = [found[e] for e in range(last + 1)]
        roles = set(listed[0])
        for e, expert in enumerate(listed):
            if set(expert) != roles:
                lacking = sorted(roles.symmetric_difference(expert))
                raise ArchitectureError(
                    f"{where}: {what} {e} differs from {what} 0 in roles {', '.join(lacking)} "
                    f"(a missing shard?)"
                )
        return listed

    def _check_experts(self, where: str, experts: list[dict[str, RoleRef]]) -> None:
        expected = self.cfg.get_int(*_EXPERTS_KEYS)
        if expected is not None and len(experts) != expected:
            raise ArchitectureError(
                f"{where}: {len(experts)} experts found but the config says {expected} "
                f"(a missing shard?)"
            )
        first = experts[0]
        if DOWN in first:
            inner = self._shape(first[DOWN])[-1]
            for role in (GATE, UP):
                if role in first and self._shape(first[role])[0] != inner:
                    raise ArchitectureError(
                        f"{where}: expert {role} has {self._shape(first[role])[0]} rows but "
                        f"expert down reads {inner} (wrong expert-stack orientation?)"
                    )

    def _finish(
        self, globals_: dict[str, RoleRef], layers: list[LayerLayout], dims: _Dims,
        unassigned: list[str],
    ) -> ModelLayout:
        blocks = self.cfg.get_int(*_HIDDEN_KEYS)
        for key, example in (("word_embed_proj_dim", "OPT-350m"), ("embedding_size", "ELECTRA-small")):
            projected = self.cfg.get_int(key)
            if projected and blocks and projected != blocks:
                raise ArchitectureError(
                    f"the embeddings are {projected} wide and projected to the blocks' {blocks} "
                    f"({key}, as in {example}): the probes compare embeddings in the blocks' "
                    f"hidden space, which such a model does not store; not supported"
                )
        vocab = hidden = None
        embed = globals_.get(EMBED)
        if embed is not None and len(self._shape(embed)) == 2:
            vocab, hidden = self._shape(embed)
        elif LM_HEAD in globals_ and len(self._shape(globals_[LM_HEAD])) == 2:
            vocab, hidden = self._shape(globals_[LM_HEAD])
        hidden = hidden or dims.hidden
        if hidden is None and ATTN_NORM in layers[0].roles:
            hidden = self._shape(layers[0].roles[ATTN_NORM])[0]
        vocab = vocab or self.cfg.get_int(*_VOCAB_KEYS)
        if hidden is None or vocab is None:
            missing = "hidden size" if hidden is None else "vocabulary size"
            raise ArchitectureError(
                f"cannot tell the {missing}: no embedding tensor and nothing in the config"
            )
        head_dim, heads, kv_heads = dims.head_dim, dims.heads, dims.kv_heads
        first = layers[0].roles
        if (head_dim is None and Q_NORM in first and Q in first
                and self._shape(first[Q_NORM])[-1] != self._shape(first[Q])[0]):
            head_dim = self._shape(first[Q_NORM])[-1]  # a per-head norm (OLMo-2's spans all q)
        if heads is None and head_dim and Q in first:
            heads = self._shape(first[Q])[0] // head_dim
        if kv_heads is None and head_dim and K in first:
            kv_heads = self._shape(first[K])[0] // head_dim
        kv_heads = kv_heads or heads
        return ModelLayout(
            family=self.family,
            model_type=self.model_type,
            globals=globals_,
            layers=layers,
            hidden_size=hidden,
            vocab_size=vocab,
            intermediate_size=self.cfg.get_int(*_INTERMEDIATE_KEYS) or self._intermediate(layers),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            unassigned=unassigned,
            post_norm=self.table.post_norm or self.cfg.top.get("do_layer_norm_before") is False,
            # blocks that reuse an earlier one's keys and values hold none of their own
            optional_roles=self.table.optional_roles + (
                _KV_ROLES if self.cfg.get_int(*_KV_SHARED_KEYS) else ()),
            unexpected=[n for n in unassigned
                        if not self.compiled.is_known(n) and n not in self.unused],
            detected=self.cfg.model_type is not None and self.table.model_types != ()
            and self.cfg.model_type not in self.table.model_types
            and self.cfg.text_model_type not in self.table.model_types,
            stacks=self._stacks if len(self._stacks) > 1 else {},
        )

    def _intermediate(self, layers: list[LayerLayout]) -> int | None:
        """MLP width from shapes: the first dense ``up``, else the first expert's."""
        for layer in layers:
            if UP in layer.roles:
                return self._shape(layer.roles[UP])[0]
        for layer in layers:
            if layer.experts and UP in layer.experts[0]:
                return self._shape(layer.experts[0][UP])[0]
        return None
