"""GGUF checkpoints (llama.cpp's single-file format), read through the `gguf` package.

A GGUF file is a header of typed key/value metadata, a table of tensor descriptors (name, dims,
ggml type, offset) and the aligned tensor data (format spec: ``docs/gguf.md`` in the ggml
repository). ``gguf.GGUFReader`` parses the header over a read-only memory map; this module keeps
only the descriptors and the few metadata values it needs, drops the map, and reads each tensor's
bytes with an ordinary file read when asked, so resident memory stays near one tensor.

Three things separate GGUF from a Hugging Face state dict, and this reader undoes each:

* dims are stored innermost first (ggml's ``ne[0]`` is the row length), so shapes are reversed
  into PyTorch order;
* most tensors are block-quantised (Q8_0, Q4_K, ...), so ``load`` dequantises them to float32
  with ``gguf.quants.dequantize``, the package's port of ggml's reference decoders;
* llama.cpp's HF-to-GGUF converter reorders the rows of the Q and K projections of llama-style
  models (see ``_unpermute_rope_rows``), so ``load`` restores the Hugging Face row order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize

from verifier.errors import InputError
from verifier.readers.base import CheckpointReader, TensorInfo

# Architectures whose converter class applies ``LlamaModel.permute`` to q_proj/k_proj (weights and
# biases): LlamaModel (llama; Mistral and Mixtral convert as llama) and its subclasses that keep
# ``undo_permute = True`` (arcee, smollm3, llama-embed, granite, granitemoe, granitehybrid,
# mistral3's Ministral3Model), plus DeciModel and MiniCPMModel, which call the same formula.
# Architectures whose llama.cpp rope is NEOX-style (qwen2/qwen3 and their MoE variants, gemma*,
# phi3) are written unpermuted, as are llama4 and apertus (their classes set
# ``undo_permute = False``).
PERMUTED_ARCHITECTURES = frozenset(
    {"llama", "arcee", "smollm3", "llama-embed", "granite", "granitemoe", "granitehybrid",
     "mistral3", "deci", "minicpm"}
)

# general.architecture -> Hugging Face model_type, where the two names differ or are known.
_MODEL_TYPES = {
    "llama": "llama", "qwen2": "qwen2", "qwen2moe": "qwen2_moe", "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3",
    "phi3": "phi3", "gpt2": "gpt2", "bert": "bert", "deepseek2": "deepseek_v2",
    "gptneox": "gpt_neox", "falcon": "falcon", "bloom": "bloom", "gptj": "gptj", "phi2": "phi",
    "starcoder": "gpt_bigcode", "starcoder2": "starcoder2", "olmo2": "olmo2",
    "command-r": "cohere", "cohere2": "cohere2", "nemotron": "nemotron",
    # vision-language models: llama.cpp keeps the language model in the main file (the tower
    # goes to a separate mmproj file)
    "qwen2vl": "qwen2_vl", "qwen3vl": "qwen3_vl", "qwen3vlmoe": "qwen3_vl_moe",
    "glm4moe": "glm4_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
    "ernie4_5-moe": "ernie4_5_moe", "qwen3next": "qwen3_next", "qwen35": "qwen3_5",
    "qwen35moe": "qwen3_5_moe",
    # names that differ from transformers' model_type (the others, such as apertus, arcee,
    # afmoe, exaone, bitnet, olmo, stablelm, smollm3, seed_oss, granite, lfm2 or jamba, are
    # the same)
    "exaone-moe": "exaone_moe", "falcon-h1": "falcon_h1", "granitehybrid": "granitemoehybrid",
    "lfm2moe": "lfm2_moe", "kimi-linear": "kimi_linear", "mimo2": "mimo_v2_flash",
    "nemotron_h_moe": "nemotron_h", "glm-dsa": "glm_moe_dsa",
    "t5encoder": "t5",  # T5's encoder alone
}

# HF config key -> GGUF metadata key under the architecture's prefix.
_CONFIG_KEYS = (
    ("num_hidden_layers", "block_count"),
    ("num_decoder_layers", "decoder_block_count"),  # T5's decoder
    ("hidden_size", "embedding_length"),
    ("intermediate_size", "feed_forward_length"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("moe_intermediate_size", "expert_feed_forward_length"),
    ("num_experts_per_tok", "expert_used_count"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("head_dim", "attention.key_length"),
    ("rope_theta", "rope.freq_base"),
    ("max_position_embeddings", "context_length"),
)

# Types stored as plain little-endian arrays, decoded without gguf.quants.
_PLAIN_TYPES: dict[GGMLQuantizationType, type[np.generic]] = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}

# Numeric metadata arrays longer than this (token scores, token types) are not kept.
_MAX_KEPT_ARRAY = 4096
_TOKENS_KEY = "tokenizer.ggml.tokens"
_QK_NAME = re.compile(r"blk\.(\d+)\.attn_(q|k)\.(weight|bias)")


class _Truncated(ValueError):
    """A header field that would be read past the end of the file."""


class _BoundedReader(GGUFReader):
    """``GGUFReader`` that refuses reads past the end of the file.

    The stock reader slices its memory map, and a slice past the end is silently short: an
    array-length field of a corrupt header then makes it loop over empty reads for as many
    iterations as the garbage length says. Checking every read against the file size turns that,
    and any truncation, into an immediate error that says what happened.
    """

    _itemsize: dict[Any, int] = {}

    def _get(self, offset: int, dtype: Any, count: int = 1, *args: Any, **kwargs: Any) -> Any:
        size = self._itemsize.get(dtype)
        if size is None:
            size = self._itemsize.setdefault(dtype, np.dtype(dtype).itemsize)
        end = int(offset) + size * int(count)
        if end > self.data.size:
            raise _Truncated(
                f"the file ends at byte {self.data.size}, but its header refers to bytes up to "
                f"{end} (truncated or corrupt)"
            )
        return super()._get(offset, dtype, count, *args, **kwargs)


@dataclass(frozen=True)
class _Entry:
    """Where one tensor's bytes are and how to decode them."""

    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # PyTorch order
    offset: int  # absolute, in bytes
    nbytes: int


class GGUFCheckpoint(CheckpointReader):
    """One ``.gguf`` file: tensors under GGUF's own names, config and vocabulary from metadata."""

    format = "gguf"

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent, [path])
        self.path = path
        self._metadata: dict[str, Any] = {}
        self._tokens: list[str] | None = None
        self._entries: dict[str, _Entry] = {}
        self._parse()
        self._arch = str(self._metadata.get("general.architecture", ""))
        split_count = self._metadata.get("split.count", 1)
        if isinstance(split_count, int) and split_count > 1:
            raise InputError(
                f"{path}: is one part of a GGUF split into {split_count} files",
                hint="merge the parts first (llama-gguf-split --merge)",
            )

    def _parse(self) -> None:
        try:
            if self.path.stat().st_size == 0:
                raise InputError(f"{self.path}: the file is empty, not a GGUF file")
            reader = _BoundedReader(self.path, "r")
            if reader.byte_order != "I":
                raise ValueError("the file is big-endian; only little-endian GGUF is supported")
            self._metadata = _metadata(reader)
            self._tokens = _tokens(reader)
            self._entries = {t.name: _entry(t) for t in reader.tensors}
            _check_layout(self._entries, int(reader.data_offset), int(reader.alignment))
        except InputError:
            raise
        except FileNotFoundError as exc:
            raise InputError(f"{self.path}: file not found") from exc
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open: {exc.strerror or exc}") from exc
        except Exception as exc:  # the parser reports malformed input as ValueError,
            # IndexError, KeyError, UnicodeDecodeError...: each means "not a valid GGUF file"
            raise InputError(f"{self.path}: not a readable GGUF file: {_first_line(exc)}") from exc

    def tensors(self) -> list[TensorInfo]:
        file = self.relative(self.path)
        return [
            TensorInfo(name=name, shape=e.shape, dtype=e.qtype.name.lower(), file=file)
            for name, e in self._entries.items()
        ]

    def load(self, name: str) -> torch.Tensor:
        entry = self._entries.get(name)
        if entry is None:
            raise InputError(f"{self.path}: no tensor named {name!r} in this GGUF file")
        tensor = self._decode(name, entry, self._read(name, entry))
        match = _QK_NAME.fullmatch(name)
        if match and self._arch in PERMUTED_ARCHITECTURES:
            layer, which = int(match.group(1)), match.group(2)
            tensor = self._unpermute(name, tensor, self._head_count(layer, which))
        return tensor

    def _read(self, name: str, entry: _Entry) -> bytearray:
        buf = bytearray(entry.nbytes)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(entry.offset)
                got = fh.readinto(buf)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read tensor {name!r}: {exc}") from exc
        if got != entry.nbytes:
            raise InputError(
                f"{self.path}: tensor {name!r} is truncated ({got} of {entry.nbytes} bytes)"
            )
        return buf

    def _decode(self, name: str, entry: _Entry, buf: bytearray) -> torch.Tensor:
        try:
            return _decode(entry, buf)
        except NotImplementedError as exc:
            raise InputError(
                f"{self.path}: tensor {name!r} is stored as {entry.qtype.name}, which the "
                "installed gguf package cannot dequantise"
            ) from exc
        except ValueError as exc:
            raise InputError(f"{self.path}: cannot decode tensor {name!r}: {exc}") from exc

    def _head_count(self, layer: int, which: str) -> int:
        try:
            heads = _per_layer(self._key("attention.head_count"), layer)
            if which == "k":
                kv = _per_layer(self._key("attention.head_count_kv"), layer)
                heads = kv if kv is not None else heads
        except (TypeError, ValueError) as exc:  # metadata of the wrong type ("abc")
            raise InputError(f"{self.path}: {self._arch}.attention.head_count is not a whole "
                             f"number ({_first_line(exc)})") from exc
        if heads is None:
            raise InputError(
                f"{self.path}: no {self._arch}.attention.head_count; cannot restore the "
                "Hugging Face row order of the Q/K projections"
            )
        return heads

    def _unpermute(self, name: str, tensor: torch.Tensor, n_head: int) -> torch.Tensor:
        try:
            return _unpermute_rope_rows(tensor, n_head)
        except ValueError as exc:
            raise InputError(f"{self.path}: tensor {name!r}: {exc}") from exc

    def _key(self, key: str) -> Any:
        return self._metadata.get(f"{self._arch}.{key}")

    def config(self) -> dict[str, Any]:
        """A Hugging Face-style config synthesised from ``{architecture}.*`` metadata.

        Per-layer arrays (e.g. head counts of DeciLM-style models) are reported as their
        maximum. ``num_key_value_heads`` defaults to the head count, as in llama.cpp.
        """
        cfg: dict[str, Any] = {"model_type": self._model_type(), "gguf_architecture": self._arch}
        for hf_key, gguf_key in _CONFIG_KEYS:
            value = self._key(gguf_key)
            if isinstance(value, list):
                value = max(value) if value else None
            if value is not None:
                cfg[hf_key] = value
        if "num_attention_heads" in cfg:
            cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        experts = self._key("expert_count")
        if isinstance(experts, int) and experts > 0:
            cfg["num_local_experts"] = cfg["num_experts"] = experts
        vocab = self._vocab_size()
        if vocab is not None:
            cfg["vocab_size"] = vocab
        if "token_embd.weight" in self._entries:
            cfg["tie_word_embeddings"] = "output.weight" not in self._entries
        return cfg

    def _model_type(self) -> str:
        experts = self._key("expert_count")
        if self._arch == "llama" and isinstance(experts, int) and experts > 0:
            return "mixtral"
        return _MODEL_TYPES.get(self._arch, self._arch)

    def _vocab_size(self) -> int | None:
        if self._tokens is not None:
            return len(self._tokens)
        declared = self._key("vocab_size")
        if isinstance(declared, int):
            return declared
        embd = self._entries.get("token_embd.weight")
        return embd.shape[0] if embd is not None else None

    def vocabulary(self) -> list[str] | None:
        return list(self._tokens) if self._tokens is not None else None


def _unpermute_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Restore Hugging Face row order of a Q or K projection (weight or bias) of a llama model.

    Hugging Face's rotary embedding rotates the two halves of each head (``rotate_half``);
    ggml's "normal" rope rotates adjacent pairs. llama.cpp's converter (``LlamaModel.permute``
    in convert_hf_to_gguf.py) therefore interleaves the halves of every head's rows::

        gguf = hf.reshape(n_head, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(hf.shape)

    i.e. HF row ``h*head_dim + a*head_dim/2 + b`` moves to row ``h*head_dim + 2*b + a``. The
    inverse views the rows as ``(n_head, head_dim // 2, 2)`` and swaps the last two axes back::

        hf = gguf.reshape(n_head, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(gguf.shape)

    ``n_head`` is the query head count for Q and the key/value head count for K.
    """
    rows = w.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise ValueError(
            f"{rows} rows do not split into {n_head} heads of an even size; the head counts "
            "in the metadata do not match the tensor"
        )
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _decode(entry: _Entry, buf: bytearray) -> torch.Tensor:
    """The tensor in PyTorch order: plain types as stored, bf16 as bfloat16, blocks as float32.

    Quantised rows are runs of fixed-size blocks along the innermost dim (``ne[0]``), so the
    bytes are viewed as ``(*outer dims, bytes per row)`` and handed to ``gguf.quants``.
    """
    qtype = entry.qtype
    plain = _PLAIN_TYPES.get(qtype)
    if plain is not None:
        return torch.from_numpy(np.frombuffer(buf, dtype=plain).reshape(entry.shape))
    if qtype == GGMLQuantizationType.BF16:
        bits = np.frombuffer(buf, dtype=np.int16).reshape(entry.shape)
        return torch.from_numpy(bits).view(torch.bfloat16)
    blocks = np.frombuffer(buf, dtype=np.uint8).reshape(*entry.shape[:-1], -1)
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales are the data's, not ours
        values = dequantize(blocks, qtype)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(entry.shape))


def _entry(tensor: Any) -> _Entry:
    """A descriptor from the reader's tensor record; ggml dims are reversed into PyTorch order."""
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return _Entry(
        qtype=GGMLQuantizationType(tensor.tensor_type),
        shape=shape,
        offset=int(tensor.data_offset),
        nbytes=int(tensor.n_bytes),
    )


def _check_layout(entries: dict[str, _Entry], start: int, alignment: int) -> None:
    """Each tensor's bytes lie in the data section at an aligned offset, apart from every other
    tensor's: the format says so, and a header that points two tensors at one range, or one
    at a misaligned one, describes weights that were never written (llama.cpp refuses both)."""
    last_end, last_name = start, ""
    for name, entry in sorted(entries.items(), key=lambda item: item[1].offset):
        relative = entry.offset - start
        if relative % alignment:
            raise ValueError(f"tensor {name!r} starts at data offset {relative}, which is not a "
                             f"multiple of the file's alignment ({alignment} bytes)")
        if entry.nbytes and entry.offset < last_end:
            raise ValueError(f"tensors {last_name!r} and {name!r} overlap in the file")
        if entry.offset + entry.nbytes > last_end:
            last_end, last_name = entry.offset + entry.nbytes, name


def _metadata(reader: GGUFReader) -> dict[str, Any]:
    """Scalar metadata, and numeric arrays short enough to be per-layer values."""
    kept: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if not field.types or key.startswith("GGUF."):
            continue
        if field.types[0] != GGUFValueType.ARRAY:
            kept[key] = _scalar(field.contents(), field.types[0])
        elif field.types[-1] != GGUFValueType.STRING and len(field.data) <= _MAX_KEPT_ARRAY:
            kept[key] = [_scalar(v, field.types[-1]) for v in field.contents()]
    return kept


def _scalar(value: Any, vtype: GGUFValueType) -> Any:
    """float32 values by their shortest decimal form (1e-06, not 9.99999997e-07)."""
    if vtype == GGUFValueType.FLOAT32:
        return float(str(np.float32(value)))
    return value


def _tokens(reader: GGUFReader) -> list[str] | None:
    field = reader.get_field(_TOKENS_KEY)
    if field is None:
        return None
    if field.types[:1] != [GGUFValueType.ARRAY] or field.types[-1] != GGUFValueType.STRING:
        raise ValueError(f"{_TOKENS_KEY} is not an array of strings")
    return [str(t) for t in field.contents()]


def _per_layer(value: Any, layer: int) -> int | None:
    """A metadata value that is either one int for all layers or a per-layer list."""
    if isinstance(value, list):
        return int(value[layer]) if layer < len(value) else None
    return int(value) if value is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
