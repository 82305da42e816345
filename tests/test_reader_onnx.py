"""The ONNX reader: names, [out, in] layouts, dequantised weights, external data, bad files.

Graphs are built with ``onnx.helper`` to mimic what exporters write; where the legacy
``torch.onnx.export`` and onnxruntime's ``quantize_dynamic`` are available, their real output is
read too. Everything is written into pytest's tmp_path.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from onnx import NodeProto, TensorProto, helper, load, numpy_helper, save

from verifier.errors import InputError
from verifier.readers import open_checkpoint
from verifier.readers.onnx_reader import ONNXCheckpoint

RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def write_model(
    path: Path, nodes: list[NodeProto], initialisers: dict[str, np.ndarray], **save_kwargs: Any
) -> Path:
    """A model over input ``x`` (float, [1, 8]) with the given nodes and initialisers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(a, n) for n, a in initialisers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    save(model, str(path), **save_kwargs)
    return path


def test_initialisers_with_state_dict_names_keep_names_and_values(tmp_path):
    embed, up, bias = rand(10, 8), rand(16, 8), rand(16)
    half = rand(4, 8).astype(np.float16)
    shape = np.array([1, 16], np.int64)
    nodes = [
        helper.make_node("Gather", ["embed_tokens.weight", "ids"], ["e"], name="/embed/Gather"),
        # Gemm with transB=1 computes x @ B.T: B is already [out, in]
        helper.make_node("Gemm", ["x", "model.layers.0.mlp.up_proj.weight",
                                  "model.layers.0.mlp.up_proj.bias"], ["h"], transB=1,
                         name="/model/layers.0/mlp/up_proj/Gemm"),
        helper.make_node("Reshape", ["h", "shape"], ["y"]),
        helper.make_node("Identity", ["half.weight"], ["z"]),
    ]
    inits = {"embed_tokens.weight": embed, "model.layers.0.mlp.up_proj.weight": up,
             "model.layers.0.mlp.up_proj.bias": bias, "shape": shape, "half.weight": half}
    path = write_model(tmp_path / "model.onnx", nodes, inits)
    with open_checkpoint(path) as reader:
        assert isinstance(reader, ONNXCheckpoint)
        assert reader.format == "onnx"
        assert reader.files == [path]
        infos = {t.name: t for t in reader.tensors()}
        assert list(infos) == list(inits)
        assert {n: (i.shape, i.dtype, i.file) for n, i in infos.items()} == {
            "embed_tokens.weight": ((10, 8), "float32", "model.onnx"),
            "model.layers.0.mlp.up_proj.weight": ((16, 8), "float32", "model.onnx"),
            "model.layers.0.mlp.up_proj.bias": ((16,), "float32", "model.onnx"),
            "shape": ((2,), "int64", "model.onnx"),
            "half.weight": ((4, 8), "float16", "model.onnx"),
        }
        for name, arr in inits.items():
            got = reader.load(name)
            assert got.numpy().dtype == arr.dtype
            assert np.array_equal(got.numpy(), arr)


def test_legacy_matmul_weights_get_module_names_and_out_in_layout(tmp_path):
    q, lone, gemm, clash = rand(8, 4), rand(8, 4), rand(8, 6), rand(8, 10)
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_123"], ["a"],
                         name="/model/layers.0/self_attn/q_proj/MatMul"),
        helper.make_node("MatMul", ["x", "onnx::MatMul_124"], ["b"], name="MatMul_7"),
        helper.make_node("Gemm", ["x", "onnx::Gemm_125"], ["c"], name="/fc/Gemm"),
        # lm_head.weight already exists, so this one cannot take that name
        helper.make_node("MatMul", ["x", "onnx::MatMul_126"], ["d"], name="/lm_head/MatMul"),
        helper.make_node("Identity", ["lm_head.weight"], ["y"]),
    ]
    inits = {"onnx::MatMul_123": q, "onnx::MatMul_124": lone, "onnx::Gemm_125": gemm,
             "onnx::MatMul_126": clash, "lm_head.weight": rand(3, 3)}
    path = write_model(tmp_path / "model.onnx", nodes, inits)
    with open_checkpoint(path) as reader:
        shapes = {t.name: t.shape for t in reader.tensors()}
        assert shapes == {
            "model.layers.0.self_attn.q_proj.weight": (4, 8),
            "onnx::MatMul_124": (4, 8),
            "fc.weight": (6, 8),
            "onnx::MatMul_126": (10, 8),
            "lm_head.weight": (3, 3),
        }
        assert np.array_equal(reader.load("model.layers.0.self_attn.q_proj.weight").numpy(), q.T)
        assert np.array_equal(reader.load("onnx::MatMul_124").numpy(), lone.T)
        assert np.array_equal(reader.load("fc.weight").numpy(), gemm.T)
        assert reader.load("fc.weight").is_contiguous()


def test_dynamically_quantised_weights_dequantise_under_their_base_name(tmp_path):
    """Per-tensor int8 and per-column uint8 MatMulInteger weights, a per-row QDQ weight; the
    scales and zero points, and those of a statically quantised activation, are not listed."""
    w1 = RNG.integers(-128, 128, (8, 4), dtype=np.int8)  # [in, out]
    s1, z1 = np.array(0.05, np.float32), np.array(3, np.int8)
    w2 = RNG.integers(0, 256, (8, 8), dtype=np.uint8)  # square: only the op tells the axis
    s2 = RNG.uniform(0.01, 0.1, 8).astype(np.float32)
    z2 = RNG.integers(100, 156, 8, dtype=np.uint8)
    w3 = RNG.integers(0, 256, (8, 5), dtype=np.uint8)  # DequantizeLinear along axis 0
    s3 = RNG.uniform(0.01, 0.1, 8).astype(np.float32)
    z3 = RNG.integers(100, 156, 8, dtype=np.uint8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="x_Q"),
        helper.make_node("MatMulInteger", ["xq", "onnx::MatMul_10_quantized", "xz",
                                           "onnx::MatMul_10_zero_point"], ["a"],
                         name="/model/layers.0/self_attn/q_proj/MatMul_quant"),
        helper.make_node("Mul", ["xs", "onnx::MatMul_10_scale"], ["as"]),
        helper.make_node("MatMulInteger", ["xq", "down.weight_quantized", "xz",
                                           "down.weight_zero_point"], ["b"],
                         name="/down/MatMul_quant"),
        helper.make_node("Mul", ["xs", "down.weight_scale"], ["bs"]),
        helper.make_node("DequantizeLinear", ["onnx::MatMul_11_q", "w3_s", "w3_z"], ["w3"],
                         axis=0, name="w3_DQ"),
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["xq8"]),
        helper.make_node("MatMul", ["x", "w3"], ["y"], name="/model/layers.0/mlp/up_proj/MatMul"),
    ]
    inits = {"onnx::MatMul_10_quantized": w1, "onnx::MatMul_10_scale": s1,
             "onnx::MatMul_10_zero_point": z1, "down.weight_quantized": w2,
             "down.weight_scale": s2, "down.weight_zero_point": z2,
             "onnx::MatMul_11_q": w3, "w3_s": s3, "w3_z": z3,
             "x_scale": np.array(0.1, np.float32), "x_zero_point": np.array(128, np.uint8)}
    path = write_model(tmp_path / "model.onnx", nodes, inits)
    with open_checkpoint(path) as reader:
        infos = {t.name: (t.shape, t.dtype) for t in reader.tensors()}
        assert infos == {
            "model.layers.0.self_attn.q_proj.weight": ((4, 8), "int8"),
            "down.weight": ((8, 8), "uint8"),
            "model.layers.0.mlp.up_proj.weight": ((5, 8), "uint8"),
        }
        q = reader.load("model.layers.0.self_attn.q_proj.weight")
        down = reader.load("down.weight")
        up = reader.load("model.layers.0.mlp.up_proj.weight")
    assert q.dtype == down.dtype == up.dtype == torch.float32
    expected_q = (w1.astype(np.float32) - 3) * 0.05
    np.testing.assert_allclose(q.numpy(), expected_q.T, rtol=1e-6)
    expected_down = (w2.astype(np.float32) - z2[None, :]) * s2[None, :]  # per column of B
    np.testing.assert_allclose(down.numpy(), expected_down.T, rtol=1e-6)
    expected_up = (w3.astype(np.float32) - z3[:, None]) * s3[:, None]  # per row: axis=0
    np.testing.assert_allclose(up.numpy(), expected_up.T, rtol=1e-6)


def test_quantisation_parameters_from_constant_nodes_dequantise_and_computed_ones_refuse(
        tmp_path):
    """A QDQ weight whose scale and zero point are Constant nodes reads like one whose are
    initialisers (the constants are not listed); one whose scale the graph computes cannot be
    dequantised from the file, and was read as raw integers: an input error that says why."""
    w = RNG.integers(-128, 128, (8, 5), dtype=np.int8)
    s, z = RNG.uniform(0.01, 0.1, 5).astype(np.float32), RNG.integers(-4, 4, 5, dtype=np.int8)
    dq = helper.make_node("DequantizeLinear", ["onnx::MatMul_7_q", "w_s", "w_z"], ["w"], axis=1)
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"],
                              name="/model/layers.0/mlp/up_proj/MatMul")
    constants = [helper.make_node("Constant", [], ["w_s"], value=numpy_helper.from_array(s)),
                 helper.make_node("Constant", [], ["w_z"], value=numpy_helper.from_array(z))]
    path = write_model(tmp_path / "const.onnx", [*constants, dq, matmul], {"onnx::MatMul_7_q": w})
    with open_checkpoint(path) as reader:
        assert [t.name for t in reader.tensors()] == ["model.layers.0.mlp.up_proj.weight"]
        up = reader.load("model.layers.0.mlp.up_proj.weight")
    expected = (w.astype(np.float32) - z[None, :]) * s[None, :]  # per column: axis=1
    np.testing.assert_allclose(up.numpy(), expected.T, rtol=1e-6)
    computed = [helper.make_node("Mul", ["x_s", "k"], ["w_s"]),
                helper.make_node("Constant", [], ["w_z"], value=numpy_helper.from_array(z))]
    path = write_model(tmp_path / "computed.onnx", [*computed, dq, matmul],
                       {"onnx::MatMul_7_q": w, "x_s": np.array(0.1, np.float32), "k": s})
    with pytest.raises(InputError, match="'w_s', which the graph computes"):
        open_checkpoint(path)


def test_external_data_is_read_per_tensor_and_listed_as_a_file(tmp_path):
    w, b = rand(8, 4), rand(4)
    nodes = [helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["h"], name="/proj/MatMul"),
             helper.make_node("Add", ["h", "proj.bias"], ["y"], name="/proj/Add")]
    path = write_model(tmp_path / "model.onnx", nodes, {"onnx::MatMul_1": w, "proj.bias": b},
                       save_as_external_data=True, all_tensors_to_one_file=True,
                       location="model.onnx.data", size_threshold=0)
    before = hashlib.sha256((tmp_path / "model.onnx.data").read_bytes()).hexdigest()
    with open_checkpoint(path) as reader:
        assert reader.files == [path, tmp_path / "model.onnx.data"]
        assert {t.name: t.file for t in reader.tensors()} == {
            "proj.weight": "model.onnx.data", "proj.bias": "model.onnx.data"}
        assert np.array_equal(reader.load("proj.weight").numpy(), w.T)
        assert np.array_equal(reader.load("proj.bias").numpy(), b)
    assert hashlib.sha256((tmp_path / "model.onnx.data").read_bytes()).hexdigest() == before


def test_missing_or_truncated_external_data_is_an_input_error(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = write_model(tmp_path / "model.onnx", nodes, {"w": rand(8, 64)},
                       save_as_external_data=True, location="w.bin", size_threshold=0)
    data = tmp_path / "w.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(InputError, match="truncated"):
        ONNXCheckpoint(path)
    data.unlink()
    with pytest.raises(InputError, match="w.bin.*missing"):
        ONNXCheckpoint(path)
    data.mkdir()  # there, but nothing to read offsets from (was called "missing")
    with pytest.raises(InputError, match="w.bin.*not a regular file"):
        ONNXCheckpoint(path)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    tensor = numpy_helper.from_array(rand(2, 2), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "../secret.bin", "offset": "0", "length": "16"}.items():
        tensor.external_data.add(key=key, value=value)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    (tmp_path / "m").mkdir()
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[tensor])
    path = tmp_path / "m" / "model.onnx"
    save(helper.make_model(graph), str(path))
    with pytest.raises(InputError, match="not a file beside the model"):
        ONNXCheckpoint(path)


def _export(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A real legacy export of Linear-ReLU-Linear with 3-D input (so Linear becomes MatMul)."""
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 4, bias=False))
    path = tmp_path / "seq.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (torch.randn(2, 3, 8),), str(path), dynamo=False)
        except Exception as exc:  # an exporter missing from this torch build
            pytest.skip(f"legacy torch.onnx.export unavailable: {exc}")
    return module, path


def test_a_real_legacy_export_reads_back_as_the_state_dict(tmp_path):
    module, path = _export(tmp_path)
    state = module.state_dict()
    with open_checkpoint(path) as reader:
        assert {t.name: t.shape for t in reader.tensors()} == {
            n: tuple(t.shape) for n, t in state.items()
        }
        for name, tensor in state.items():
            assert torch.equal(reader.load(name), tensor)


@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntime_dynamic_quantisation_reads_back_close_to_the_weights(tmp_path, per_channel):
    quantization = pytest.importorskip("onnxruntime.quantization")
    module, path = _export(tmp_path)
    qpath = tmp_path / "seq.int8.onnx"
    weight_type = quantization.QuantType.QUInt8 if per_channel else quantization.QuantType.QInt8
    quantization.quantize_dynamic(str(path), str(qpath), per_channel=per_channel,
                                  weight_type=weight_type)
    state = module.state_dict()
    with open_checkpoint(qpath) as reader:
        infos = {t.name: t for t in reader.tensors()}
        assert set(infos) == set(state)
        assert infos["0.weight"].dtype == ("uint8" if per_channel else "int8")
        for name in ("0.weight", "2.weight"):
            got, want = reader.load(name), state[name]
            assert got.dtype == torch.float32
            assert got.shape == want.shape
            # 8-bit over [-amax, amax]: one step is at most amax/127.5, rounding costs half
            assert (got - want).abs().max() <= want.abs().max() / 127
            assert (got - want).abs().max() > 0


def test_unknown_tensor_name_is_an_input_error(tmp_path):
    path = write_model(tmp_path / "model.onnx", [helper.make_node("Identity", ["w"], ["y"])],
                       {"w": rand(2)})
    with open_checkpoint(path) as reader, pytest.raises(InputError, match="'nope'"):
        reader.load("nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x08\x07\x12\xff\xff\xff\xff" * 20, "not a readable ONNX model"),
        (b"GGUF" + bytes(range(256)), "not a readable ONNX model"),
        (b"\x08\x07", "no IR version, graph or opset"),  # parses as an almost empty message
    ],
)
def test_bytes_that_are_not_onnx_are_an_input_error(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        ONNXCheckpoint(path)


def test_truncated_file_is_an_input_error(tmp_path):
    path = write_model(tmp_path / "model.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                       {"w": rand(8, 64)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="model.onnx"):
        ONNXCheckpoint(path)


def test_an_initialiser_with_a_negative_dimension_is_refused(tmp_path):
    # numpy reads -16 as -1: the model was read with a shape its header made up
    nodes = [helper.make_node("Identity", ["w"], ["y"])]
    path = write_model(tmp_path / "model.onnx", nodes, {"w": rand(16, 8)})
    model = load(str(path))
    model.graph.initializer[0].dims[0] = -16
    save(model, str(path))
    with pytest.raises(InputError, match="negative dimension"):
        open_checkpoint(path)
