"""Canonical roles: what each tensor of a checkpoint *is*, whatever its family calls it.

Probes never see family-specific names. They ask a ``ModelLayout`` for "layer 3, role up" or
"expert 5 of layer 3, role down" and get a ``RoleRef`` saying which stored tensor holds it and
how to cut it out (expert index of a 3-D stack, transposition of Conv1D / MatMul storage, a row
range of a fused qkv or gate_up tensor). Loaded roles are always in PyTorch ``nn.Linear``
orientation ``[out_features, in_features]``: q/k/v/gate/up rows are output neurons over the
hidden dimension, o/down are ``[hidden, inner]``, embeddings are ``[vocab, hidden]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from verifier.readers.base import CheckpointReader

# Model-wide roles.
EMBED = "embed"
LM_HEAD = "lm_head"
FINAL_NORM = "final_norm"
POS_EMBED = "pos_embed"
TYPE_EMBED = "type_embed"
EMBED_NORM = "embed_norm"
GLOBAL_ROLES = (EMBED, LM_HEAD, FINAL_NORM, POS_EMBED, TYPE_EMBED, EMBED_NORM)

# Per-layer roles. MLA (deepseek) attention adds the low-rank factors.
ATTN_NORM, MLP_NORM = "attn_norm", "mlp_norm"
Q, K, V, O = "q", "k", "v", "o"  # noqa: E741 - the projections are named q, k, v, o
Q_NORM, K_NORM = "q_norm", "k_norm"
Q_A, Q_B, KV_A, KV_B, Q_A_NORM, KV_A_NORM = "q_a", "q_b", "kv_a", "kv_b", "q_a_norm", "kv_a_norm"
# ``kv_b`` as llama.cpp's converters split it: per head, the key rows transposed
# (``[heads, latent, nope]``) and the value rows (``[heads, v, latent]``)
K_B, V_B = "k_b", "v_b"
GATE, UP, DOWN = "gate", "up", "down"
ROUTER, SHARED_GATE = "router", "shared_gate"
LAYER_ROLES = (
    ATTN_NORM, MLP_NORM, Q, K, V, O, Q_NORM, K_NORM, Q_A, Q_B, KV_A, KV_B, Q_A_NORM, KV_A_NORM,
    K_B, V_B, GATE, UP, DOWN, ROUTER, SHARED_GATE,
)
EXPERT_ROLES = (GATE, UP, DOWN)
# A bias is addressed as "<role>.bias" (e.g. "q.bias", "attn_norm.bias").
BIAS = ".bias"


@dataclass(frozen=True)
class RoleRef:
    """How to cut one role out of one stored tensor.

    Operations apply in this order: split dim 0 into ``unflatten`` experts' rows (a 2-D stack
    ``[experts * rows, cols]``, as DBRX stores its experts); select ``expert`` along dim 0 of a
    3-D stack; transpose the
    last two dims when ``transpose``; keep rows ``rows[0]:rows[1]:step`` of dim 0 (with
    ``period``: rows ``rows[0]:rows[1]`` of every consecutive block of ``period`` rows, for q/k/v
    fused group by group); add ``offset`` (in float32). The offset makes a norm's role its
    *gain*: Gemma's norms compute ``x * (1 + w)`` and store ``w``, llama.cpp's conversion of
    them stores ``1 + w``, and both must load as the same gain for folds and drifts to mean
    the same thing. Before all of these, ``load_role`` turns values stored quantised beside a
    companion ``scale`` tensor into the values they stand for (``dequantise``,
    ``unpack_mxfp4``).
    """

    tensor: str
    expert: int | None = None
    transpose: bool = False
    rows: tuple[int, int] | None = None
    step: int = 1
    period: int | None = None
    offset: float = 0.0
    #: FP8/INT8 storage: the tensor of scales the stored values are multiplied by (after
    #: subtracting ``zero_point``'s tensor, where there is one), one per ``block`` of the
    #: stored matrix's trailing two dims (DeepSeek-V3's ``weight_scale_inv`` over 128x128
    #: blocks; compressed-tensors' per-channel ``[out, 1]`` or per-tensor ``weight_scale``)
    scale: str | None = None
    zero_point: str | None = None
    block: tuple[int, int] | None = None
    #: ``"mxfp4"``: the tensor is gpt-oss's packed ``*_blocks`` (two 4-bit values a byte) and
    #: ``scale`` its ``*_scales`` (an exponent per 32 values); loads as ``[..., out, in]``.
    #: ``"ternary"``: BitNet b1.58's ``uint8`` rows, four ternary weights a byte, and ``scale``
    #: the matrix's one ``weight_scale`` (the weights are the ternary values divided by it).
    #: ``"fp4"``: DeepSeek-V4's experts, ``[out, in / 2]`` bytes of two e2m1 values (the low
    #: nibble first) and ``scale`` ``[out, in / 32]`` E8M0 exponents: MXFP4 in rows
    packing: str | None = None
    #: the number of experts whose rows a 2-D stack holds one after the other
    unflatten: int | None = None

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        if self.unflatten is not None:
            t = t.unflatten(0, (self.unflatten, -1))
        if self.expert is not None:
            t = t[self.expert]
        if self.transpose:
            t = t.transpose(-2, -1)
        if self.period is not None:
            start, stop = self.rows if self.rows is not None else (0, self.period)
            t = t.unflatten(0, (-1, self.period))[:, start:stop].flatten(0, 1)
        elif self.rows is not None or self.step != 1:
            start, stop = self.rows if self.rows is not None else (0, t.shape[0])
            t = t[start:stop:self.step]
        if self.offset:
            t = t.to(torch.float32) + self.offset
        return t


@dataclass
class LayerLayout:
    """One transformer block: its roles, and for MoE blocks its routed and shared experts."""

    index: int
    roles: dict[str, RoleRef] = field(default_factory=dict)
    experts: list[dict[str, RoleRef]] = field(default_factory=list)
    shared_experts: list[dict[str, RoleRef]] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return bool(self.experts)


@dataclass
class ModelLayout:
    """Every role of a model, plus the dimensions probes need, read from config or shapes."""

    family: str
    model_type: str
    globals: dict[str, RoleRef]
    layers: list[LayerLayout]
    hidden_size: int
    vocab_size: int
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    #: tensors no role claimed (e.g. rotary buffers, position_ids): listed, never guessed at
    unassigned: list[str] = field(default_factory=list)
    #: norms follow the residual add (``LayoutTable.post_norm``): no gain to fold
    post_norm: bool = False
    #: roles blocks may lack by design (``LayoutTable.optional_roles``)
    optional_roles: tuple[str, ...] = ()
    #: unassigned tensors the table does not expect either (a vision tower, a module the
    #: family's table has no role for): read by no probe, and said so
    unexpected: list[str] = field(default_factory=list)
    #: the config's ``model_type`` has no table: the layout was chosen by tensor names
    detected: bool = False
    #: a multimodal checkpoint's other parts (``model.visual.``: tensors it holds), set aside:
    #: lineage is judged on the language model
    other_modalities: dict[str, int] = field(default_factory=dict)
    #: blocks of each stack in reading order, where the model runs several (an
    #: encoder-decoder's ``encoder`` then ``decoder``): layer ``i`` is in the first stack whose
    #: running total exceeds ``i``; empty for one stack
    stacks: dict[str, int] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def moe_layers(self) -> list[int]:
        return [layer.index for layer in self.layers if layer.is_moe]

    @property
    def num_experts(self) -> int:
        return max((len(layer.experts) for layer in self.layers), default=0)

    @property
    def num_shared_experts(self) -> int:
        return max((len(layer.shared_experts) for layer in self.layers), default=0)

    def iter_roles(self) -> Iterator[tuple[str, RoleRef]]:
        """Every (role, ref) of the model; expert roles are named ``experts.<role>`` and
        ``shared_experts.<role>``."""
        yield from self.globals.items()
        for layer in self.layers:
            yield from layer.roles.items()
            for expert in layer.experts:
                for role, ref in expert.items():
                    yield f"experts.{role}", ref
            for expert in layer.shared_experts:
                for role, ref in expert.items():
                    yield f"shared_experts.{role}", ref

    def role_refs(self) -> dict[str, list[RoleRef]]:
        """Role name -> every ref holding it, in layer order (for `inspect`)."""
        out: dict[str, list[RoleRef]] = {}
        for role, ref in self.iter_roles():
            out.setdefault(role, []).append(ref)
        return out


def load_role(reader: CheckpointReader, ref: RoleRef) -> torch.Tensor:
    """Materialise one role in canonical orientation (a view where possible, never a model)."""
    stored = reader.load(ref.tensor)
    if ref.scale is None:
        return ref.apply(stored)
    parts = [reader.load(name) if name else None for name in (ref.scale, ref.zero_point)]
    if ref.expert is not None:  # one expert of a stack: its own scales, not the whole stack's
        per_expert = stored.dim() - (ref.packing == "mxfp4")  # MXFP4 scales: no byte axis
        parts = [p[ref.expert] if p is not None and p.dim() == per_expert else p for p in parts]
        stored = stored[ref.expert]
        ref = replace(ref, expert=None)
    assert parts[0] is not None
    if ref.packing == "mxfp4":
        return ref.apply(unpack_mxfp4(stored, parts[0]))
    if ref.packing == "ternary":
        return ref.apply(unpack_ternary(stored, parts[0]))
    if ref.packing == "fp4":  # the bytes of each row are its MXFP4 blocks of 32 values
        return ref.apply(unpack_mxfp4(stored.view(torch.uint8).unflatten(-1, (-1, 16)),
                                      parts[0]))
    return ref.apply(dequantise(stored, parts[0], parts[1], ref.block))


def unpack_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """OCP MXFP4 as gpt-oss stores it: ``blocks[..., G, 16]``, each byte two e2m1 values (the
    low nibble first), and ``scales[..., G]``, one e8m0 exponent per 32 values; float32
    ``[..., G * 32]`` in ``DEQUANTISED`` (each value a 4-bit code times a power of two: exact).
    The value and exponent tables are the gguf package's (ggml's MXFP4)."""
    from gguf.quants import MXFP4

    doubled = torch.tensor(MXFP4.kvalues, dtype=torch.float32)  # e2m1 values, times two
    packed = blocks.to(torch.uint8)
    index = torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2).long()
    # gpt-oss stores the exponents as uint8, DeepSeek-V4 as float8_e8m0fnu (whose value, not
    # its byte, a conversion would give)
    exponents = (scales.view(torch.uint8) if scales.dtype == torch.float8_e8m0fnu
                 else scales.to(torch.uint8))
    halves = MXFP4.e8m0_to_fp32_half(exponents.numpy())  # 2 ** (e - 127) / 2
    return (doubled[index] * torch.from_numpy(halves).unsqueeze(-1)).flatten(-2).to(DEQUANTISED)


#: weights a BitNet byte holds, two bits each
TERNARY_PER_BYTE = 4


def unpack_ternary(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """BitNet b1.58's packed matrix as transformers' ``BitLinear`` computes with it: bits
    ``2i..2i+1`` of packed row ``r`` hold the weight of row ``i * rows + r``, stored plus one;
    the layer divides its output by ``scale``. ``DEQUANTISED`` ``[4 * rows, in]``."""
    codes = torch.cat([(packed >> (2 * i)) & 3 for i in range(TERNARY_PER_BYTE)], dim=0)
    w = codes.to(DEQUANTISED) - 1
    return w.div_(scale.to(torch.float32).reshape(()).item())


def _per_block(w: torch.Tensor, values: torch.Tensor, block: tuple[int, int] | None,
               op: Callable[[torch.Tensor, torch.Tensor], object]) -> None:
    """``op(w, v)`` in place for each entry ``v`` of ``values`` over its block of ``w``'s
    trailing two dims, a band of rows at a time (never a full-size copy of the scales)."""
    v = values.to(torch.float32)
    rows, cols = w.shape[-2:]
    if v.dim() == 1 and v.numel() == rows and rows > 1:
        v = v[:, None]  # one value per output row, stored flat
    while v.dim() < w.dim():
        v = v.unsqueeze(0)
    across, down = v.shape[-1], v.shape[-2]
    if across not in (1, cols):
        step = block[1] if block is not None else cols // across
        v = v.repeat_interleave(step, dim=-1)[..., :cols]
    if down in (1, rows):
        op(w, v)
        return
    step = block[0] if block is not None else rows // down
    for i in range(down):
        op(w[..., i * step:(i + 1) * step, :], v[..., i:i + 1, :])


#: what dequantised matrices are held in: FP8 and INT8 codes are exact in bfloat16, and each
#: product with its float32 scale is rounded once, as a bfloat16 checkpoint's weights are; half
#: the private memory of float32 (unlike a checkpoint's own matrices, these are not file pages)
DEQUANTISED = torch.bfloat16


def dequantise(stored: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               block: tuple[int, int] | None) -> torch.Tensor:
    """The values of a matrix stored as ``(stored - zero_point) * scale``, in ``DEQUANTISED``
    (one copy of the matrix: the stored values are the file's)."""
    w = stored.to(DEQUANTISED, copy=True)
    if zero_point is not None:
        _per_block(w, zero_point, block, torch.Tensor.sub_)
    _per_block(w, scale, block, torch.Tensor.mul_)
    return w
