"""Write and read zoo models as Hugging Face folders.

A folder holds ``config.json`` with the keys ``transformers`` reads for the family, the weights as
``model.safetensors`` or as HF-style shards with ``model.safetensors.index.json``, and
``training.json`` (spec, losses, seed) so tests know each model's lineage. Folders appear
atomically: everything is written into a temporary sibling that is then renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from bisect import bisect_left
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from verifier.zoo.models import INIT_STD, TYPE_VOCAB, BertForMaskedLM, CausalLM, build_module
from verifier.zoo.specs import ModelSpec
from verifier.zoo.train import MASK_ID, TrainStats

CONFIG = "config.json"
TRAINING = "training.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"

ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "bert": "BertForMaskedLM",
}

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def hf_config(spec: ModelSpec) -> dict[str, Any]:
    """``config.json`` for ``spec``, with the keys the family's HF config class declares."""
    common: dict[str, Any] = {
        "architectures": [ARCHITECTURES[spec.family]],
        "model_type": spec.family,
        "vocab_size": spec.vocab,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.heads,
        "max_position_embeddings": spec.max_positions,
        "initializer_range": INIT_STD,
        "dtype": spec.dtype,
        "torch_dtype": spec.dtype,
    }
    if spec.is_encoder:
        return common | {
            "hidden_act": "gelu",
            "layer_norm_eps": spec.norm_eps,
            "type_vocab_size": TYPE_VOCAB,
            "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "pad_token_id": 0,
            "tie_word_embeddings": True,
        }
    cfg = common | {
        "num_key_value_heads": spec.num_kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": spec.norm_eps,
        "rope_theta": spec.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta},
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if spec.family in ("llama", "mistral", "mixtral"):
        cfg["head_dim"] = spec.head_dim
    if spec.family == "llama":
        cfg |= {"attention_bias": False, "mlp_bias": False}
    if spec.family in ("mistral", "mixtral"):
        cfg["sliding_window"] = None
    if spec.family in ("qwen2", "qwen2_moe"):
        cfg |= {"use_sliding_window": False, "max_window_layers": spec.num_layers}
    if spec.family == "mixtral":
        cfg |= {
            "num_local_experts": spec.experts,
            "num_experts_per_tok": spec.top_k,
            "router_aux_loss_coef": spec.router_aux_coef,
        }
    if spec.family == "qwen2_moe":
        cfg |= {
            "num_experts": spec.experts,
            "num_experts_per_tok": spec.top_k,
            "moe_intermediate_size": spec.intermediate,
            "shared_expert_intermediate_size": spec.shared_intermediate,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": spec.norm_topk_prob,
            "qkv_bias": True,
            "router_aux_loss_coef": spec.router_aux_coef,
        }
    return cfg


def shard_names(num_shards: int) -> list[str]:
    if num_shards == 1:
        return [SINGLE]
    return [f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors" for k in range(num_shards)]


def _split_shards(tensors: dict[str, torch.Tensor], num_shards: int) -> list[dict[str, torch.Tensor]]:
    """Contiguous runs of tensors (in state-dict order) of roughly equal byte size, none empty."""
    if num_shards > len(tensors):
        raise ValueError(f"cannot split {len(tensors)} tensors into {num_shards} shards")
    cum = list(accumulate(t.numel() * t.element_size() for t in tensors.values()))
    bounds = [0]
    for j in range(1, num_shards):
        cut = bisect_left(cum, cum[-1] * j / num_shards) + 1
        bounds.append(min(max(cut, bounds[-1] + 1), len(cum) - (num_shards - j)))
    bounds.append(len(cum))
    items = list(tensors.items())
    return [dict(items[a:b]) for a, b in pairwise(bounds)]


def export_state(model: CausalLM | BertForMaskedLM, dtype: str) -> dict[str, torch.Tensor]:
    """The checkpoint tensors: the state dict in the save dtype, contiguous, owning their memory."""
    target = _DTYPES[dtype]
    return {k: v.detach().to(target).contiguous().clone() for k, v in model.state_dict().items()}


def _write_weights(folder: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    names = shard_names(num_shards)
    if num_shards == 1:
        save_file(tensors, str(folder / SINGLE), metadata={"format": "pt"})
        return
    weight_map: dict[str, str] = {}
    for fname, shard in zip(names, _split_shards(tensors, num_shards), strict=True):
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, fname)
    index = {
        "metadata": {
            "total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
            "total_parameters": sum(t.numel() for t in tensors.values()),
        },
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def save_hf_folder(
    model: CausalLM | BertForMaskedLM, spec: ModelSpec, out_dir: Path, stats: TrainStats | None = None
) -> Path:
    """Write ``model`` as an HF folder at ``out_dir`` (replacing any folder there), atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(hf_config(spec), indent=2) + "\n")
        _write_weights(tmp, export_state(model, spec.dtype), spec.num_shards)
        provenance = {
            "spec": spec.model_dump(mode="json"),
            "digest": spec.digest(),
            "seed": spec.seed,
            "mask_token_id": MASK_ID if spec.is_encoder else None,
            "stats": stats.model_dump(mode="json") if stats is not None else None,
        }
        (tmp / TRAINING).write_text(json.dumps(provenance, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder, from its index when sharded."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    return [folder / SINGLE]


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished zoo build (config, provenance and every weight file)."""
    folder = Path(folder)
    if not ((folder / CONFIG).is_file() and (folder / TRAINING).is_file()):
        return False
    with contextlib.suppress(OSError, ValueError, KeyError):
        return all(f.is_file() for f in weight_files(folder))
    return False


def read_spec(folder: Path) -> ModelSpec:
    return ModelSpec.model_validate(json.loads((Path(folder) / TRAINING).read_text())["spec"])


def read_stats(folder: Path) -> TrainStats | None:
    stats = json.loads((Path(folder) / TRAINING).read_text())["stats"]
    return TrainStats.model_validate(stats) if stats is not None else None


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder, as stored (dtype included)."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        state |= load_file(str(f))
    return state


def load_model(folder: Path) -> CausalLM | BertForMaskedLM:
    """Rebuild a zoo model (float32, eval mode) from its folder."""
    spec = read_spec(folder)
    model = build_module(spec)
    model.load_state_dict({k: v.float() for k, v in load_state(folder).items()}, strict=True)
    return model.eval()
