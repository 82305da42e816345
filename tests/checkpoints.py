"""Small hand-made checkpoints for reader and CLI tests (no training, built in tmp dirs)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file


def llama_tensors(
    layers: int = 2, hidden: int = 16, ffn: int = 32, vocab: int = 40, kv: int = 8
) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped like a tiny Llama checkpoint."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    t = {"model.embed_tokens.weight": r(vocab, hidden), "model.norm.weight": torch.ones(hidden),
         "lm_head.weight": r(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t |= {
            p + "self_attn.q_proj.weight": r(hidden, hidden),
            p + "self_attn.k_proj.weight": r(kv, hidden),
            p + "self_attn.v_proj.weight": r(kv, hidden),
            p + "self_attn.o_proj.weight": r(hidden, hidden),
            p + "mlp.gate_proj.weight": r(ffn, hidden),
            p + "mlp.up_proj.weight": r(ffn, hidden),
            p + "mlp.down_proj.weight": r(hidden, ffn),
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
        }
    return t


def llama_config(layers: int = 2, hidden: int = 16, ffn: int = 32, vocab: int = 40) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": vocab, "rms_norm_eps": 1e-6,
    }


def write_llama_folder(
    folder: Path, tensors: dict[str, torch.Tensor] | None = None, shards: int = 1
) -> Path:
    """An HF-style folder: config.json plus one file or ``shards`` files with an index."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = tensors if tensors is not None else llama_tensors()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


# Hugging Face llama module names -> llama.cpp GGUF names (as its converter writes them).
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's ``LlamaModel.permute``: HF rotary row order -> GGUF's interleaved order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape
    )


def write_llama_gguf(folder: Path, out: Path, *, quantise: bool = True,
                     arch: str = "llama") -> Path:
    """Convert an HF llama folder to GGUF the way llama.cpp does (Q8_0 for 2-D weights).
    ``arch="gemma"``: as its Gemma converter does, q/k rows as stored (NEOX-style rope) and
    every norm stored as the gain ``1 + w`` that Gemma's norms multiply by."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    state = load_file(str(folder / "model.safetensors"))
    w = GGUFWriter(str(out), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg.get("max_position_embeddings", 128))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_token_list([f"<0x{i:02X}>" for i in range(cfg["vocab_size"])])
    for name, t in state.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            parts = name.split(".")  # model.layers.N.<module...>.weight
            module = ".".join(parts[3:-1])
            gname = f"blk.{parts[2]}.{_GGUF_NAMES[module]}.{parts[-1]}"
            if arch == "llama" and module == "self_attn.q_proj":
                t = gguf_permute(t, heads)
            elif arch == "llama" and module == "self_attn.k_proj":
                t = gguf_permute(t, kv)
        if arch == "gemma" and name.endswith("norm.weight"):
            t = t + 1
        arr = t.float().numpy()
        if quantise and arr.ndim == 2 and arr.shape[1] % 32 == 0:
            q = GGMLQuantizationType.Q8_0
            w.add_tensor(gname, quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(gname, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def write_float_gguf(out: Path, arch: str, config: Any, tensors: Mapping[str, torch.Tensor],
                     more: Callable[[Any], None] | None = None) -> Path:
    """``tensors`` (llama.cpp's names) in float32, so every value is kept, in a GGUF file of
    ``arch`` whose metadata states ``config``'s (a transformers config) depth, widths, heads
    and vocabulary; ``more`` adds the architecture's own keys to the writer."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(out), arch)
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(128)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_layer_norm_rms_eps(getattr(config, "rms_norm_eps", 1e-6))
    w.add_token_list([f"<0x{i:02X}>" for i in range(config.vocab_size)])
    if more is not None:
        more(w)
    for name, t in tensors.items():
        w.add_tensor(name, t.detach().float().contiguous().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def run_cli(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the `lineage` command line in-process on ``argv`` (each made a string); return
    (exit code, stdout, stderr)."""
    from verifier.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(exit_info.value.code), out, err
