"""Deterministic training of zoo models on the synthetic byte corpus.

``train(spec)`` trains from the seeded init; ``train(spec, init=state_dict)`` starts from given
weights instead (continued training, or training after a derivation). Everything random comes
from ``spec.seed`` through private generators, and the thread count is pinned while training, so
the same spec and the same init give bit-identical weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from verifier.zoo.corpus import corpus
from verifier.zoo.models import TYPE_VOCAB, BertForMaskedLM, CausalLM, build_module
from verifier.zoo.specs import ModelSpec

#: Fixed seed of the held-out evaluation batch: losses of different seeds compare on equal terms.
EVAL_SEED = 1234
EVAL_BATCH = 32
#: Byte that stands for [MASK] in BERT inputs; never occurs in the (ASCII/UTF-8) corpus.
MASK_ID = 1
HELD_OUT = 0.1


class TrainStats(BaseModel):
    """Provenance of one training run (written to ``training.json``)."""

    model_config = ConfigDict(frozen=True)

    initial_loss: float
    final_loss: float
    steps: int
    seconds: float
    params: int
    tokens: int
    curve: list[tuple[int, float]]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Pin torch's intra-op thread count, restoring the previous value afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _split(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    data = corpus(spec.domain, spec.corpus_bytes).long()
    cut = int(len(data) * (1 - HELD_OUT))
    return data[:cut], data[cut:]


def _windows(data: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, len(data) - length, (batch,), generator=gen)
    return data[start[:, None] + torch.arange(length)]


def _mask(tokens: torch.Tensor, spec: ModelSpec, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: ``mlm_prob`` of positions are targets; of those 80% become [MASK], 10% a
    random byte, 10% stay. Non-targets get label -100."""
    u = torch.rand(tokens.shape, generator=gen)
    targets = u < spec.mlm_prob
    targets[:, 0] |= ~targets.any(dim=1)
    kind = torch.rand(tokens.shape, generator=gen)
    noise = torch.randint(0, spec.vocab, tokens.shape, generator=gen)
    inputs = torch.where(targets & (kind < 0.8), torch.full_like(tokens, MASK_ID), tokens)
    inputs = torch.where(targets & (kind >= 0.8) & (kind < 0.9), noise, inputs)
    labels = torch.where(targets, tokens, torch.full_like(tokens, -100))
    return inputs, labels


def segment_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """Token types for BERT inputs: segment 0 then segment 1 for the second half, so both
    ``token_type_embeddings`` rows are trained."""
    types = torch.zeros_like(input_ids)
    types[:, input_ids.shape[1] // 2 :] = 1
    return types.clamp_max(TYPE_VOCAB - 1)


def lm_loss(
    model: CausalLM | BertForMaskedLM, tokens: torch.Tensor, spec: ModelSpec, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Language-modelling loss of a batch of windows (next byte, or masked byte for BERT) and the
    router auxiliary loss. ``gen`` draws BERT's masks."""
    if isinstance(model, BertForMaskedLM):
        inputs, labels = _mask(tokens, spec, gen)
        out = model(inputs, segment_ids(inputs))
        return F.cross_entropy(out.logits.flatten(0, 1), labels.flatten()), out.aux_loss
    out = model(tokens[:, :-1])
    return F.cross_entropy(out.logits.flatten(0, 1), tokens[:, 1:].flatten()), out.aux_loss


def _window_len(spec: ModelSpec) -> int:
    return spec.seq_len if spec.is_encoder else spec.seq_len + 1


def _eval_batch(spec: ModelSpec, held_out: torch.Tensor) -> torch.Tensor:
    return _windows(held_out, EVAL_BATCH, _window_len(spec), torch.Generator().manual_seed(EVAL_SEED))


@torch.no_grad()
def evaluate(model: CausalLM | BertForMaskedLM, spec: ModelSpec) -> float:
    """Loss on a fixed held-out batch of ``spec.domain`` (fixed masks for BERT)."""
    was_training = model.training
    model.eval()
    tokens = _eval_batch(spec, _split(spec)[1])
    loss, _ = lm_loss(model, tokens, spec, torch.Generator().manual_seed(EVAL_SEED + 1))
    model.train(was_training)
    return float(loss)


def _lr_at(step: int, spec: ModelSpec) -> float:
    warmup = max(1, spec.steps // 10)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.steps - warmup)
    return spec.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(
    spec: ModelSpec,
    init: Mapping[str, torch.Tensor] | None = None,
    *,
    threads: int = 1,
    curve_every: int = 10,
) -> tuple[CausalLM | BertForMaskedLM, TrainStats]:
    """Train ``spec.steps`` AdamW steps (warmup, cosine decay, clipping at 1.0) on ``spec.domain``.

    ``init`` replaces the seeded initial weights (strictly: same keys and shapes), which is how
    continued training and derived models start. Returns the float32 model in eval mode and its
    stats; ``initial_loss`` and ``final_loss`` are on the same held-out batch.
    """
    t0 = time.perf_counter()
    with torch_threads(threads):
        model = build_module(spec)
        if init is not None:
            model.load_state_dict({k: v.float() for k, v in init.items()}, strict=True)
        train_data, _ = _split(spec)
        initial = evaluate(model, spec)
        gen = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.AdamW(
            model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=spec.weight_decay
        )
        model.train()
        curve: list[tuple[int, float]] = []
        for step in range(spec.steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, spec)
            tokens = _windows(train_data, spec.batch, _window_len(spec), gen)
            loss, aux = lm_loss(model, tokens, spec, gen)
            opt.zero_grad(set_to_none=True)
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % curve_every == 0 or step == spec.steps - 1:
                curve.append((step, round(loss.item(), 4)))
        model.eval()
        final = evaluate(model, spec)
    stats = TrainStats(
        initial_loss=initial,
        final_loss=final,
        steps=spec.steps,
        seconds=round(time.perf_counter() - t0, 3),
        params=sum(p.numel() for p in model.parameters()),
        tokens=spec.steps * spec.batch * spec.seq_len,
        curve=curve,
    )
    return model, stats
