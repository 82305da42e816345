"""ONNX models: graph initialisers as tensors, under PyTorch names and in PyTorch layouts.

An ONNX file is one protobuf ``ModelProto``; its weights are the graph's initialisers, held either
inside the protobuf or, for models over protobuf's 2 GiB limit, in external data files next to it
(``TensorProto.external_data``: location, offset, length). The protobuf is parsed once without
external data; ``load`` converts one initialiser at a time and reads external bytes only for the
tensor asked for, so memory beyond the parsed protobuf stays near one tensor.

Exporters change what a PyTorch state dict looked like, and this reader undoes it:

* ``nn.Linear`` computes ``x @ W.T``. An exporter that emits ``MatMul(x, B)`` (or ``Gemm`` with
  ``transB=0``) stores ``B = W.T``, i.e. ``[in, out]``; every such B initialiser is returned
  transposed, as ``[out, in]``. ``Gemm`` with ``transB=1`` already holds ``[out, in]``.
* The legacy ``torch.onnx.export`` names those transposed constants ``onnx::MatMul_<n>``. The
  consuming node keeps the module path (``/model/layers.0/self_attn/q_proj/MatMul``), from which
  the state-dict name (``model.layers.0.self_attn.q_proj.weight``) is recovered. Opaque names
  that cannot be recovered are kept as they are.
* Weight quantisation (onnxruntime's ``quantize_dynamic``, QDQ models) replaces ``w`` by
  ``w_quantized`` (int8/uint8), ``w_scale`` and ``w_zero_point``; ``load`` returns one float32
  tensor under the base name, ``(q - zero_point) * scale`` as in ONNX ``DequantizeLinear``, and
  the scale and zero-point pieces are not listed as tensors.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from verifier.errors import InputError
from verifier.readers.base import CheckpointReader, TensorInfo, name_inside

_OPAQUE_PREFIX = "onnx::"
_QUANTIZED_SUFFIX = "_quantized"
# Ops whose input 1 is a weight multiplied from the right, stored [in, out].
_MATMUL_OPS = frozenset({"MatMul", "MatMulInteger", "Gemm"})
# (op, input index) slots that hold quantisation parameters rather than weights.
_QUANT_PARAM_SLOTS = frozenset(
    {("QuantizeLinear", 1), ("QuantizeLinear", 2), ("DequantizeLinear", 1),
     ("DequantizeLinear", 2), ("MatMulInteger", 2), ("MatMulInteger", 3),
     ("ConvInteger", 2), ("ConvInteger", 3)}
)

_FOUR_BIT = frozenset(
    getattr(onnx.TensorProto, t)
    for t in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, t)
)

_Uses = list[tuple[onnx.NodeProto, int]]


@dataclass(frozen=True)
class _Quant:
    """How a quantised initialiser dequantises: ONNX ``DequantizeLinear`` semantics.

    ``axis`` is the per-channel axis in the stored layout (None: decide from the scale's size);
    ``block_size`` > 0 means blocked quantisation along ``axis`` (opset 21).
    """

    scale: str
    zero_point: str | None
    axis: int | None
    block_size: int = 0


@dataclass(frozen=True)
class _Weight:
    """One exposed tensor: which initialiser holds it and how to turn it into PyTorch layout."""

    source: str
    transpose: bool
    quant: _Quant | None


@dataclass(frozen=True)
class _External:
    """Bytes of an initialiser stored outside the protobuf."""

    file: Path
    offset: int
    length: int


class ONNXCheckpoint(CheckpointReader):
    """One ``.onnx`` file (and the external data files it names)."""

    format = "onnx"

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent, [path])
        self.path = path
        graph = _load_model(path).graph
        init = _initialisers(path, graph)
        # quantisation parameters a Constant node holds are read like initialisers, never
        # exposed as weights
        constants = {k: v for k, v in _constants(graph).items() if k not in init}
        self._init = init | constants
        self._external = {
            name: self._external_ref(t) for name, t in self._init.items() if _is_external(t)
        }
        self.files = [path, *sorted({e.file for e in self._external.values()})]
        try:
            self._weights = _expose(graph, init, constants)
        except (ValueError, TypeError) as exc:  # e.g. an attribute of the wrong type
            raise InputError(f"{path}: not a readable ONNX model: {_first_line(exc)}") from exc

    def _external_ref(self, tensor: onnx.TensorProto) -> _External:
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        # as written, links not followed (a Hugging Face snapshot's files are links to blobs)
        file = name_inside(self.root, location) if not Path(location).is_absolute() else None
        if file is None:
            raise InputError(
                f"{self.path}: initialiser {tensor.name!r} names external data "
                f"{location!r}, which is not a file beside the model"
            )
        if not file.exists():
            raise InputError(f"{self.path}: external data file {location!r} is missing")
        if not file.is_file():  # a folder, FIFO or device: no offsets to seek to
            raise InputError(
                f"{self.path}: external data {location!r} is not a regular file")
        try:
            offset = int(entries.get("offset", 0))
            length = int(entries["length"]) if "length" in entries else _nbytes(tensor)
        except (ValueError, KeyError) as exc:
            raise InputError(
                f"{self.path}: initialiser {tensor.name!r} has unreadable external data "
                f"fields ({exc})"
            ) from exc
        if offset < 0 or length < 0 or offset + length > file.stat().st_size:
            raise InputError(
                f"{self.path}: initialiser {tensor.name!r} lies past the end of {location!r} "
                "(truncated external data)"
            )
        return _External(self.root / location, offset, length)

    def tensors(self) -> list[TensorInfo]:
        return [self._info(name, w) for name, w in self._weights.items()]

    def _info(self, name: str, weight: _Weight) -> TensorInfo:
        tensor = self._init[weight.source]
        shape = tuple(int(d) for d in tensor.dims)
        if weight.transpose:
            shape = (*shape[:-2], shape[-1], shape[-2])
        ext = self._external.get(weight.source)
        file = self.relative(ext.file if ext else self.path)
        return TensorInfo(name=name, shape=shape, dtype=_dtype_name(tensor.data_type), file=file)

    def load(self, name: str) -> torch.Tensor:
        weight = self._weights.get(name)
        if weight is None:
            raise InputError(f"{self.path}: no initialiser named {name!r} in this ONNX model")
        try:
            arr = self._array(weight.source)
            if weight.quant is not None:
                arr = self._dequantise(arr, weight.quant)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{self.path}: cannot read initialiser {name!r}: {exc}") from exc
        if weight.transpose:
            arr = np.ascontiguousarray(np.swapaxes(arr, -1, -2))
        return _to_torch(arr)

    def _array(self, name: str) -> np.ndarray:
        """One initialiser as numpy, external bytes read into a copy of its TensorProto."""
        tensor = self._init[name]
        ext = self._external.get(name)
        if ext is not None:
            local = onnx.TensorProto()
            local.CopyFrom(tensor)
            del local.external_data[:]
            local.data_location = onnx.TensorProto.DEFAULT
            local.raw_data = self._read(ext)
            tensor = local
        return numpy_helper.to_array(tensor)

    def _read(self, ext: _External) -> bytes:
        try:
            with open(ext.file, "rb") as fh:
                fh.seek(ext.offset)
                data = fh.read(ext.length)
        except OSError as exc:
            raise InputError(f"{ext.file}: cannot read external data: {exc}") from exc
        if len(data) != ext.length:
            raise InputError(f"{ext.file}: external data is truncated")
        return data

    def _dequantise(self, q: np.ndarray, quant: _Quant) -> np.ndarray:
        """``(q - zero_point) * scale``, with scale/zero point broadcast along the channel axis."""
        scale = self._array(quant.scale).astype(np.float32)
        zero = (
            self._array(quant.zero_point).astype(np.float32)
            if quant.zero_point is not None
            else np.zeros((), np.float32)
        )
        axis = quant.axis if quant.axis is not None else _channel_axis(q.shape, scale.size)
        zero = _broadcast(zero, q.shape, axis, quant.block_size)
        scale = _broadcast(scale, q.shape, axis, quant.block_size)
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales are the data's
            return (q.astype(np.float32) - zero) * scale


def _load_model(path: Path) -> onnx.ModelProto:
    """The parsed protobuf, without external data, or an InputError saying why not."""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty, not an ONNX model")
        model = onnx.load(str(path), load_external_data=False)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    except Exception as exc:  # protobuf reports malformed bytes as DecodeError, RuntimeError...
        raise InputError(f"{path}: not a readable ONNX model: {_first_line(exc)}") from exc
    # protobuf accepts many byte strings as a (mostly empty) message: require a real model
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise InputError(
            f"{path}: not a readable ONNX model: no IR version, graph or opset "
            "(truncated, or not ONNX)"
        )
    if not _names_are_text(model.graph):
        raise InputError(f"{path}: not a readable ONNX model: names that are not UTF-8 (corrupt)")
    return model


def _names_are_text(graph: onnx.GraphProto) -> bool:
    """ONNX's proto2 strings are not validated; protobuf hands back bytes for invalid UTF-8."""
    names = [t.name for t in graph.initializer]
    for node in graph.node:
        names += [node.name, node.op_type, *node.input, *node.output]
        names += [a.name for a in node.attribute]
    return all(isinstance(n, str) for n in names)


def _initialisers(path: Path, graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Numeric initialisers by name, in file order; string tensors are not weights."""
    found: dict[str, onnx.TensorProto] = {}
    for tensor in graph.initializer:
        if tensor.name in found:
            raise InputError(f"{path}: initialiser {tensor.name!r} appears twice")
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        try:
            onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except KeyError as exc:
            raise InputError(
                f"{path}: initialiser {tensor.name!r} has unknown data type {tensor.data_type}"
            ) from exc
        if any(d < 0 for d in tensor.dims):  # numpy read -32 as -1: a shape that lied
            raise InputError(f"{path}: initialiser {tensor.name!r} has a negative dimension "
                             f"{list(tensor.dims)}")
        found[tensor.name] = tensor
    return found


def _expose(graph: onnx.GraphProto, init: dict[str, onnx.TensorProto],
            constants: dict[str, onnx.TensorProto]) -> dict[str, _Weight]:
    """Exposed name -> weight, in initialiser order; quantisation parameters (``constants``:
    those Constant nodes hold) left out."""
    consumers = _consumers(graph)
    quants = _quantised(graph, init | constants)
    hidden = {q.scale for q in quants.values()} | {
        q.zero_point for q in quants.values() if q.zero_point
    }
    hidden |= {name for name in init if _only_quant_params(consumers.get(name, []))}
    candidates: list[tuple[str, str | None, _Weight]] = []
    for source in init:
        if source in hidden:
            continue
        uses = _effective_uses(source, consumers)
        quant = quants.get(source)
        if quant is not None and quant.axis is None and _all_matmul_b(uses, integer_only=True):
            # MatMulInteger's b_zero_point (and onnxruntime's matching scale) is per column of B
            quant = _Quant(quant.scale, quant.zero_point, len(init[source].dims) - 1)
        base = _base_name(source, quant)
        weight = _Weight(source, _is_stored_in_out(init[source], uses), quant)
        candidates.append((base, _recovered_name(base, uses), weight))
    return _resolve_names(candidates, set(init))


def _resolve_names(
    candidates: list[tuple[str, str | None, _Weight]], initialiser_names: set[str]
) -> dict[str, _Weight]:
    """A recovered name is used only if no initialiser or other recovery claims it."""
    recovered = [r for _, r, _ in candidates if r is not None]
    taken = initialiser_names | {b for b, r, _ in candidates if r is None}
    clash = {r for r in recovered if recovered.count(r) > 1 or r in taken}
    weights: dict[str, _Weight] = {}
    for base, recovered_name, weight in candidates:
        name = recovered_name if recovered_name and recovered_name not in clash else base
        weights[name if name not in weights else weight.source] = weight
    return weights


def _consumers(graph: onnx.GraphProto) -> dict[str, _Uses]:
    found: dict[str, _Uses] = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                found[name].append((node, index))
    return found


def _effective_uses(name: str, consumers: dict[str, _Uses]) -> _Uses:
    """Who consumes a weight's values: through a DequantizeLinear, the users of its output."""
    uses: _Uses = []
    for node, index in consumers.get(name, []):
        if node.op_type == "DequantizeLinear" and index == 0:
            uses += consumers.get(node.output[0], [])
        else:
            uses.append((node, index))
    return uses


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors held by Constant nodes (their ``value`` attribute), by output name."""
    found: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(attr.t)
                    tensor.name = node.output[0]
                    found[node.output[0]] = tensor
    return found


def _quantised(graph: onnx.GraphProto, init: dict[str, onnx.TensorProto]) -> dict[str, _Quant]:
    """Quantised initialisers: those a DequantizeLinear decodes, and ``<w>_quantized``
    initialisers with a ``<w>_scale`` (onnxruntime's naming, used with MatMulInteger/Gather).
    A stored weight matrix whose scale or zero point the graph computes cannot be dequantised
    from the file: ``ValueError`` (read as raw integers it was a wrong weight, silently)."""
    found: dict[str, _Quant] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2:
            continue
        source, scale = node.input[0], node.input[1]
        if source not in init:
            continue
        computed = [p for p in node.input[1:3] if p and p not in init]
        # a matrix: a weight the probes would read (a 1-D tensor, e.g. an int32 bias whose
        # scale QDQ tools compute as x_scale * w_scale, is left as it was)
        if computed and len(init[source].dims) >= 2:
            raise ValueError(
                f"initialiser {source!r} is dequantised with {', '.join(map(repr, computed))}, "
                "which the graph computes instead of storing; lineage reads stored "
                "quantisation parameters only")
        if scale in init:
            zero = node.input[2] if len(node.input) > 2 and node.input[2] in init else None
            ndim = max(len(init[source].dims), 1)
            axis = _attribute(node, "axis", 1) % ndim
            found[source] = _Quant(scale, zero, axis, _attribute(node, "block_size", 0))
    for source in init:
        if source in found or not source.endswith(_QUANTIZED_SUFFIX):
            continue
        base = source[: -len(_QUANTIZED_SUFFIX)]
        if base + "_scale" in init:
            zero = base + "_zero_point" if base + "_zero_point" in init else None
            found[source] = _Quant(base + "_scale", zero, None)
    return found


def _only_quant_params(uses: _Uses) -> bool:
    return bool(uses) and all((n.op_type, i) in _QUANT_PARAM_SLOTS for n, i in uses)


def _all_matmul_b(uses: _Uses, *, integer_only: bool = False) -> bool:
    ops = {"MatMulInteger"} if integer_only else _MATMUL_OPS
    return bool(uses) and all(n.op_type in ops and i == 1 for n, i in uses)


def _is_stored_in_out(tensor: onnx.TensorProto, uses: _Uses) -> bool:
    """True when every use multiplies it from the right untransposed: stored ``[in, out]``."""
    if len(tensor.dims) < 2 or not _all_matmul_b(uses):
        return False
    return all(n.op_type != "Gemm" or _attribute(n, "transB", 0) == 0 for n, _ in uses)


def _base_name(source: str, quant: _Quant | None) -> str:
    if quant is not None and source.endswith(_QUANTIZED_SUFFIX):
        return source[: -len(_QUANTIZED_SUFFIX)]
    return source


def _recovered_name(base: str, uses: _Uses) -> str | None:
    """``<module path>.weight`` from the first MatMul/Gemm consuming an ``onnx::`` initialiser.

    The legacy exporter names nodes by module path and op, ``/model/layers.0/mlp/up_proj/MatMul``
    (onnxruntime's quantiser appends ``_quant``); dropping the last component leaves the path.
    """
    if not base.startswith(_OPAQUE_PREFIX):
        return None
    for node, index in uses:
        if node.op_type in _MATMUL_OPS and index == 1 and node.name.startswith("/"):
            parts = [p for p in node.name.split("/") if p]
            if len(parts) >= 2:
                return ".".join(parts[:-1]) + ".weight"
    return None


def _channel_axis(shape: tuple[int, ...], channels: int) -> int | None:
    """The one axis whose size matches a 1-D scale; None for a per-tensor scale."""
    if channels == 1:
        return None
    matches = [axis for axis, size in enumerate(shape) if size == channels]
    if len(matches) != 1:
        raise ValueError(
            f"cannot tell along which axis of {list(shape)} its {channels} scales apply"
        )
    return matches[0]


def _broadcast(values: np.ndarray, shape: tuple[int, ...], axis: int | None, block: int) -> Any:
    """Scale or zero point shaped to broadcast against the quantised tensor."""
    if values.size == 1:
        return values.reshape(())
    if axis is None:
        raise ValueError(f"{values.size} scales or zero points but no channel axis")
    if block > 0:
        return np.repeat(values, block, axis=axis).take(range(shape[axis]), axis=axis)
    if values.ndim != 1 or values.size != shape[axis]:
        raise ValueError(
            f"{values.size} scales or zero points do not match axis {axis} of {list(shape)}"
        )
    view = [1] * len(shape)
    view[axis] = values.size
    return values.reshape(view)


def _to_torch(arr: np.ndarray) -> torch.Tensor:
    """numpy -> torch; bfloat16 kept, other types torch lacks (float8, int4...) as float32."""
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(arr.view(np.int16))).view(torch.bfloat16)
    if arr.dtype.kind not in "biuf":
        arr = arr.astype(np.float32)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _nbytes(tensor: onnx.TensorProto) -> int:
    """Stored size of a raw tensor; 4-bit types pack two values per byte."""
    count = 1
    for d in tensor.dims:
        count *= int(d)
    if tensor.data_type in _FOUR_BIT:
        return (count + 1) // 2
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _dtype_name(data_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(data_type).name


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(onnx.helper.get_attribute_value(attr))
    return default


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
