"""Small hand-made checkpoints for reader and CLI tests (no training, built in tmp dirs)."""

from __future__ import annotations

import json
from pathlib import Path

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
