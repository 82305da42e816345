"""Bad input: one line on stderr, exit code 4, no traceback, nothing written, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys

import pytest
import torch
from checkpoints import llama_tensors, run_cli, write_llama_folder
from safetensors.torch import save_file


def snapshot(folder):
    """Every file under ``folder`` with its digest: to prove nothing was written or changed."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _model(tmp_path):
    return write_llama_folder(tmp_path / "model")


def case_missing_path(tmp_path):
    return tmp_path / "does-not-exist", "no such file or folder"


def case_truncated_safetensors(tmp_path):
    folder = _model(tmp_path)
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return folder, "truncated"


def case_header_longer_than_file(tmp_path):
    folder = _model(tmp_path)
    f = folder / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(struct.pack("<Q", len(raw) * 10) + raw[8:])
    return folder, "header length is larger than the file"


def case_offsets_past_end(tmp_path):
    folder = _model(tmp_path)
    name = "model.layers.0.mlp.up_proj.weight"

    def edit(h):
        start = h[name]["data_offsets"][0]
        h[name]["data_offsets"] = [start, start + 10**9]

    _rewrite_header(folder / "model.safetensors", edit)
    return folder, "offsets point past the end"


def case_unknown_dtype(tmp_path):
    folder = _model(tmp_path)

    def edit(h):
        h["model.norm.weight"]["dtype"] = "F99"

    _rewrite_header(folder / "model.safetensors", edit)
    return folder, "dtype safetensors does not know"


def case_index_names_missing_shard(tmp_path):
    folder = write_llama_folder(tmp_path / "model", shards=3)
    (folder / "model-00003-of-00003.safetensors").unlink()
    return folder, "model-00003-of-00003.safetensors' is missing"


def case_pickle_not_weights(tmp_path):
    import argparse

    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=1)}, f)
    return f, "other than plain weights"


def case_garbage_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + b"\xff" * 64)
    return f, "model.gguf"


def case_garbage_onnx(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff" * 20)
    return f, "model.onnx"


def case_unknown_architecture(tmp_path):
    f = tmp_path / "weird.safetensors"
    save_file({"backbone.blocks.0.mixer.in_proj.weight": torch.ones(4, 4),
               "backbone.blocks.1.mixer.in_proj.weight": torch.ones(4, 4)}, str(f))
    return f, "backbone.blocks.N.mixer.in_proj.weight"


def case_unknown_format(tmp_path):
    f = tmp_path / "weights.npz"
    f.write_bytes(b"PK\x03\x04")
    return f, "unknown weights format"


def case_one_layer_stored_transposed(tmp_path):
    # named right, shaped wrong: the probes met it as torch's own shape errors (tracebacks)
    tensors = llama_tensors()
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name] = tensors[name].T.contiguous()
    return write_llama_folder(tmp_path / "model", tensors), f"tensor '{name}' (up) has shape"


def case_config_nested_past_the_parsers_depth(tmp_path):
    folder = _model(tmp_path)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError
    return folder, "config.json: not valid JSON"


def case_sparse_tensor_pickle(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    state = llama_tensors()
    state["model.norm.weight"] = state["model.norm.weight"].to_sparse()
    torch.save(state, f)
    return f, "not dense real numbers"


def case_gptq_packed_weights(tmp_path):
    # GPTQ/AWQ store int32-packed 4-bit matrices beside their scales and zeros: nothing here
    # unpacks them, and the layout alone would have been an "unknown layout" or a model of norms
    tensors = {}
    for name, t in llama_tensors().items():
        if name.endswith("proj.weight"):
            stem = name.removesuffix(".weight")
            tensors |= {stem + ".qweight": torch.zeros(t.shape[1] // 8, t.shape[0], dtype=torch.int32),
                        stem + ".qzeros": torch.zeros(1, t.shape[0] // 8, dtype=torch.int32),
                        stem + ".scales": torch.ones(1, t.shape[0], dtype=torch.float16)}
        else:
            tensors[name] = t
    folder = write_llama_folder(tmp_path / "model", tensors)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, "stored packed by GPTQ/AWQ (qweight, qzeros, scales), e.g. 'model.layers.0"


def case_empty_path(tmp_path):
    # the current folder holds a model: an unset "$BASE" verified it without a word
    write_llama_folder(tmp_path)
    return "", "an empty model path"


CASES = [
    case_missing_path, case_empty_path, case_truncated_safetensors, case_header_longer_than_file,
    case_offsets_past_end, case_unknown_dtype, case_index_names_missing_shard,
    case_pickle_not_weights, case_garbage_gguf, case_garbage_onnx, case_unknown_architecture,
    case_unknown_format, case_one_layer_stored_transposed,
    case_config_nested_past_the_parsers_depth, case_sparse_tensor_pickle,
    case_gptq_packed_weights,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_4(case, tmp_path, capsys, monkeypatch):
    target, expected = case(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["inspect", str(target), "--format", "json"], capsys)
    assert code == 4
    assert out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error:")
    assert len(lines) <= 2  # the error, and at most one hint
    assert expected in " ".join(err.split())
    assert snapshot(tmp_path) == before


def test_nan_weights_are_a_warning_naming_the_tensor(tmp_path, capsys):
    tensors = llama_tensors()
    tensors["model.layers.1.mlp.down_proj.weight"][0, :3] = float("nan")
    tensors["model.layers.0.self_attn.k_proj.weight"][1, 1] = float("inf")
    folder = write_llama_folder(tmp_path / "model", tensors)
    code, out, _ = run_cli(["inspect", str(folder), "--format", "json", "--scan"], capsys)
    assert code == 0
    warnings = json.loads(out)["warnings"]
    assert any("model.layers.1.mlp.down_proj.weight" in w and "3 NaN/Inf" in w for w in warnings)
    assert any("model.layers.0.self_attn.k_proj.weight" in w for w in warnings)
    assert len(warnings) == 2


def test_a_layer_missing_a_tensor_the_others_have_is_a_warning_naming_it(tmp_path, capsys):
    # a checkpoint written short opens (every tensor it has is right), but a report that only
    # shows an unmapped layer would hide why: inspect and verify both say what is missing
    tensors = llama_tensors()
    del tensors["model.layers.1.mlp.up_proj.weight"]
    folder = write_llama_folder(tmp_path / "model", tensors)
    code, out, _ = run_cli(["inspect", str(folder), "--format", "json"], capsys)
    assert code == 0
    warnings = json.loads(out)["warnings"]
    assert len(warnings) == 1
    assert "no up in layer 1 (1 of 2 layers have one" in warnings[0]
    assert "model.layers.0.mlp.up_proj.weight" in warnings[0]
    whole = write_llama_folder(tmp_path / "whole", llama_tensors())
    code, out, _ = run_cli(["inspect", str(whole), "--format", "json"], capsys)
    assert json.loads(out)["warnings"] == []
    report = tmp_path / "report.json"
    code, _, _ = run_cli(["verify", str(whole), str(folder), "--no-hash", "--output",
                          str(report)], capsys)
    assert code in (0, 3)  # a verdict was reached (without --expect), whichever
    said = json.loads(report.read_text())["warnings"]
    assert any(w.startswith("candidate: no up in layer 1") for w in said)
    assert not any(w.startswith("base:") for w in said)


def test_the_installed_console_script_reports_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "verifier", "inspect", str(tmp_path / "nothing")],
        capture_output=True, text=True,
    )
    assert out.returncode == 4
    assert "Traceback" not in out.stderr
    assert "no such file or folder" in out.stderr


def test_an_error_of_verify_is_stderr_s_first_line(tmp_path):
    # the progress display, off a terminal, printed a blank line first: every error took two
    out = subprocess.run(
        [sys.executable, "-m", "verifier", "verify", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True, text=True,
    )
    assert out.returncode == 4
    assert out.stderr.startswith("error: ")


def test_verbose_shows_the_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "verifier", "--verbose", "inspect", str(tmp_path / "nothing")],
        capture_output=True, text=True,
    )
    assert out.returncode != 0
    assert "Traceback" in out.stderr


@pytest.mark.parametrize(("argv", "said"), [
    (["verify", "base-only"], "Missing argument"),
    (["verify", "a", "b", "--no-such-flag"], "No such option"),
    (["inspect", "m", "--format", "yaml"], "Invalid value"),
    (["no-such-command"], "No such command"),
    (["verify", "a", "b", "--alpha", "0"], "must be above 0 and at most 0.5"),
    (["verify", "a", "b", "--seed", "-5"], "'--seed'"),  # numpy's generator raised
    (["verify", "a", "b", "--seed", str(2**64)], "'--seed'"),  # torch's generator raised
])
def test_command_line_mistakes_are_usage_errors_without_traceback(argv, said, capsys):
    # parse errors come from the copy of click that typer carries, not from click itself:
    # caught as click's, they escaped as tracebacks with exit code 1
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert said in err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("where", ["model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight",
                                   "model.layers.0.self_attn.q_proj.weight"])
def test_nan_weights_that_a_probe_compares_are_one_clear_line_and_exit_4(tmp_path, capsys, where):
    # scipy's solver raised a bare ValueError (a traceback, exit 1: "contradicts --expect")
    base = write_llama_folder(tmp_path / "base")
    tensors = llama_tensors()
    tensors[where][0, 0] = float("nan")
    cand = write_llama_folder(tmp_path / "cand", tensors)
    before = snapshot(tmp_path)
    code, out, err = run_cli(["verify", base, cand, "--no-hash", "--expect", "derived",
                              "--output", tmp_path / "report.json"], capsys)
    assert code == 4, err
    assert err.startswith("error: ")
    assert "NaN or Inf" in err
    assert "inspect MODEL --scan" in err
    assert out == ""
    assert snapshot(tmp_path) == before  # no report written


def _outputs_case(tmp_path):
    base = write_llama_folder(tmp_path / "base")
    cand = write_llama_folder(tmp_path / "cand")
    (tmp_path / "folder").mkdir()
    return base, cand


@pytest.mark.parametrize(("extra", "said"), [
    (["--output", "cand/model.safetensors"], "a file this run reads"),
    (["--output", "base/config.json"], "a file this run reads"),
    (["--output", "folder"], "is a folder"),
    (["--output", ""], "is empty"),
    (["--output", "r.json", "--html", "folder"], "is a folder"),
    (["--output", "same", "--html", "same"], "name the same file"),
])
def test_outputs_that_would_overwrite_inputs_or_name_folders_are_refused_before_the_run(
        tmp_path, capsys, monkeypatch, extra, said):
    # these overwrote a model's weights with the report, or wrote the JSON and then failed on
    # the HTML, or raised IsADirectoryError / EBUSY as tracebacks
    base, cand = _outputs_case(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_cli(["verify", "base", "cand", "--no-hash", *extra], capsys)
    assert code == 2, err
    assert said in err
    assert "Traceback" not in err
    assert out == ""
    assert snapshot(tmp_path) == before


def test_sign_refuses_to_write_its_bundle_over_the_report(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text("{}")
    code, _, _ = run_cli(["keygen", "--out", tmp_path / "keys"], capsys)
    assert code == 0
    code, _, err = run_cli(["sign", report, "--key", tmp_path / "keys" / "lineage.key.pem",
                            "--out", report], capsys)
    assert code == 2, err
    assert "a file this run reads" in err
    assert report.read_text() == "{}"


def test_demo_given_a_file_for_its_folder_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("keep me")
    code, _, err = run_cli(["demo", "--out", target], capsys)
    assert code == 2, err
    assert "is a file" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("argv", [
    ["demo", "--out", ""],
    ["keygen", "--out", " "],
    ["verify", "A", "A", "--no-hash", "--output", ""],
    ["verify", "A", "A", "--no-hash", "--html", ""],
    ["verify", "A", "A", "--no-hash", "--cache-dir", ""],
])
def test_an_empty_path_to_write_to_is_a_usage_error_not_the_current_folder(
        argv, tmp_path, capsys, monkeypatch):
    # an unset variable (--out "$DIR") read as "." filled the current folder with the demo
    monkeypatch.chdir(tmp_path)
    folder = str(write_llama_folder(tmp_path / "model"))
    code, _, err = run_cli([folder if a == "A" else a for a in argv], capsys)
    assert code == 2, err
    assert "is empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_tokenizer_file_that_is_not_one_counts_as_none(tmp_path):
    # ids that are not integers, or a vocab.txt that is not UTF-8, raised tracebacks
    from verifier.model import read_vocabulary

    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": "x"}}}))
    assert read_vocabulary(tmp_path) is None
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00a")
    assert read_vocabulary(tmp_path) is None
