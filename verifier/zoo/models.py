"""Tiny transformers in plain torch whose ``state_dict()`` is a Hugging Face checkpoint.

Parameter names, shapes and forward semantics follow the ``transformers`` modeling files of each
family (Llama, Mistral, Qwen2, Mixtral, Qwen2-MoE, BERT), so a saved folder loads in
``transformers`` without missing or unexpected keys and computes the same logits. Writing them
here rather than instantiating ``transformers`` classes keeps the zoo usable without
``transformers`` installed and keeps the on-disk names the classic per-expert ones real MoE
checkpoints use (``transformers`` v5 fuses experts in memory).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from verifier.zoo.specs import ModelSpec

#: Standard deviation of the normal init, as ``initializer_range`` in the HF configs.
INIT_STD = 0.02


class LMOutput(NamedTuple):
    """Logits ``[batch, seq, vocab]`` and the router load-balancing loss (0 for dense models)."""

    logits: torch.Tensor
    aux_loss: torch.Tensor


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Non-persistent, as in HF: rotary tables never appear in the checkpoint."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.arange(seq_len, dtype=torch.float)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """Causal grouped-query attention with rotary positions (HF ``repeat_kv`` head order)."""

    def __init__(self, spec: ModelSpec, qkv_bias: bool) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.num_kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden, self.heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(spec.hidden, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(spec.hidden, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, spec.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """Llama-style MLP; ``names`` renames (gate, up, down) for Mixtral's ``w1, w3, w2``."""

    def __init__(
        self, hidden: int, inner: int, names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
    ) -> None:
        super().__init__()
        self._names = names
        gate, up, down = names
        self.add_module(gate, nn.Linear(hidden, inner, bias=False))
        self.add_module(up, nn.Linear(hidden, inner, bias=False))
        self.add_module(down, nn.Linear(inner, hidden, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up, down = (getattr(self, n) for n in self._names)
        return down(F.silu(gate(x)) * up(x))


def _route(
    x: torch.Tensor, router: nn.Linear, experts: nn.ModuleList, top_k: int, normalize: bool, aux_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing as in HF Mixtral / Qwen2-MoE: fp32 softmax over all experts, keep the top
    ``top_k`` probabilities (renormalised when ``normalize``), sum the weighted expert outputs.
    Also returns the Switch-style load-balancing loss, so experts stay in use while training."""
    logits = router(x)
    probs = F.softmax(logits, dim=-1, dtype=torch.float)
    weights, chosen = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    weights = weights.to(x.dtype)
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        token, slot = torch.where(chosen == e)
        if token.numel():
            out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
    aux = x.new_zeros(())
    if aux_coef > 0:
        load = F.one_hot(chosen, len(experts)).sum(1).float().mean(0) / top_k
        aux = aux_coef * len(experts) * (load * probs.mean(0)).sum()
    return out, aux


class MixtralMoE(nn.Module):
    """``block_sparse_moe``: router ``gate`` and experts with ``w1`` (gate), ``w3`` (up), ``w2``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.gate = nn.Linear(spec.hidden, spec.experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLU(spec.hidden, spec.intermediate, ("w1", "w3", "w2")) for _ in range(spec.experts)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        out, aux = _route(flat, self.gate, self.experts, self.spec.top_k, True, self.spec.router_aux_coef)
        return out.view_as(x), aux


class Qwen2MoE(nn.Module):
    """Qwen2-MoE ``mlp``: routed experts plus a sigmoid-gated shared expert."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.gate = nn.Linear(spec.hidden, spec.experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(spec.hidden, spec.intermediate) for _ in range(spec.experts))
        self.shared_expert = SwiGLU(spec.hidden, spec.shared_intermediate)
        self.shared_expert_gate = nn.Linear(spec.hidden, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        s = self.spec
        out, aux = _route(flat, self.gate, self.experts, s.top_k, s.norm_topk_prob, s.router_aux_coef)
        out = out + torch.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)
        return out.view_as(x), aux


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.self_attn = Attention(spec, qkv_bias=spec.family in ("qwen2", "qwen2_moe"))
        self.input_layernorm = RMSNorm(spec.hidden, spec.norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden, spec.norm_eps)
        ffn: nn.Module
        if spec.family == "mixtral":
            self._ffn_name, ffn = "block_sparse_moe", MixtralMoE(spec)
        elif spec.family == "qwen2_moe":
            self._ffn_name, ffn = "mlp", Qwen2MoE(spec)
        else:
            self._ffn_name, ffn = "mlp", SwiGLU(spec.hidden, spec.intermediate)
        self.add_module(self._ffn_name, ffn)
        self._moe = spec.is_moe

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        ffn = getattr(self, self._ffn_name)
        if self._moe:
            out, aux = ffn(h)
        else:
            out, aux = ffn(h), x.new_zeros(())
        return x + out, aux


class DecoderBody(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden, spec.norm_eps)
        self.rotary_emb = RotaryEmbedding(spec.head_dim, spec.rope_theta)


class CausalLM(nn.Module):
    """``{Llama,Mistral,Qwen2,Mixtral,Qwen2Moe}ForCausalLM`` with an untied ``lm_head``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.model = DecoderBody(spec)
        self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> LMOutput:
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(input_ids.shape[1])
        aux = x.new_zeros(())
        for layer in self.model.layers:
            x, layer_aux = layer(x, cos, sin)
            aux = aux + layer_aux
        return LMOutput(self.lm_head(self.model.norm(x)), aux)


class BertEmbeddings(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(spec.vocab, spec.hidden)
        self.position_embeddings = nn.Embedding(spec.max_positions, spec.hidden)
        self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, spec.hidden)
        self.LayerNorm = nn.LayerNorm(spec.hidden, eps=spec.norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(pos))


class BertSelfAttention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.heads = spec.heads
        self.query = nn.Linear(spec.hidden, spec.hidden)
        self.key = nn.Linear(spec.hidden, spec.hidden)
        self.value = nn.Linear(spec.hidden, spec.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, h)


class BertDenseLN(nn.Module):
    """``dense`` then post-LN over the residual: BERT's ``attention.output`` and ``output``."""

    def __init__(self, inner: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.self = BertSelfAttention(spec)
        self.output = BertDenseLN(spec.hidden, spec.hidden, spec.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.dense = nn.Linear(spec.hidden, spec.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.attention = BertAttention(spec)
        self.intermediate = BertIntermediate(spec)
        self.output = BertDenseLN(spec.intermediate, spec.hidden, spec.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(spec) for _ in range(spec.num_layers))


class BertBody(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(spec)
        self.encoder = BertEncoder(spec)


class BertPredictionTransform(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.dense = nn.Linear(spec.hidden, spec.hidden)
        self.LayerNorm = nn.LayerNorm(spec.hidden, eps=spec.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertPredictions(nn.Module):
    """MLM head whose decoder is tied to the word embeddings (BERT's convention), so the file
    holds ``cls.predictions.bias`` and the transform but no ``decoder`` copy."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.transform = BertPredictionTransform(spec)
        self.bias = nn.Parameter(torch.zeros(spec.vocab))


class BertHead(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.predictions = BertPredictions(spec)


class BertForMaskedLM(nn.Module):
    """Post-LN BERT encoder with its masked-LM head, named like HF ``BertForMaskedLM``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.bert = BertBody(spec)
        self.cls = BertHead(spec)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> LMOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.bert.embeddings(input_ids, token_type_ids)
        for layer in self.bert.encoder.layer:
            x = layer(x)
        pred = self.cls.predictions
        logits = F.linear(pred.transform(x), self.bert.embeddings.word_embeddings.weight, pred.bias)
        return LMOutput(logits, x.new_zeros(()))


#: BERT's two segment types (``type_vocab_size``).
TYPE_VOCAB = 2


def init_weights(model: nn.Module, seed: int) -> None:
    """HF-style init from a private generator: N(0, 0.02) matrices and embeddings, zero biases,
    unit norm scales. Parameters are visited in ``named_parameters`` order, so a seed fixes them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name.lower() and leaf in ("weight", "bias"):
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "bias" or p.ndim == 1:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * INIT_STD)


def build_module(spec: ModelSpec) -> CausalLM | BertForMaskedLM:
    """An initialised model for ``spec`` (float32, CPU, seeded by ``spec.seed``)."""
    model: CausalLM | BertForMaskedLM = BertForMaskedLM(spec) if spec.is_encoder else CausalLM(spec)
    init_weights(model, spec.seed)
    return model
