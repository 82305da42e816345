"""Registry of derivations: how a child model's starting weights come from its parent's.

A derived ``ModelSpec`` names a ``parent`` and optionally a ``derivation``. ``build_model`` builds
the parent, passes its state dict (as saved) and the child spec to ``apply``, which calls the
registered function with ``child.derivation_args`` as keyword arguments, checks that the result
has exactly the keys and shapes of a model of the child spec, and hands it to training for
``child.steps`` more steps (zero for a pure transformation). Continued training needs no
derivation at all: a parent plus steps on the child's domain is exactly that.

Registered here, all operating on Hugging Face-named decoder state dicts (MoE included):

* ``permute``: function-preserving permutations of the hidden dimension, of attention heads, of
  FFN neurons and of MoE experts;
* ``rescale``: function-preserving rescalings (and sign flips) of q/k, v/o, up/down, norm gains
  against the weights that read their output, and of hidden coordinates;
* ``prune`` and ``duplicate``: dropping or repeating whole layers (encoders too);
* ``cast`` and ``int8``: the rounding a dtype round trip or int8 quantisation leaves behind;
* ``upcycle``: a dense decoder turned into a Mixtral or Qwen2-MoE child (sparse or fine-grained
  upcycling, partial re-initialisation), ``upcycle_plan`` naming each expert neuron's source.

Random choices come from a generator seeded by ``child.seed``, so a spec fixes its weights. Every
derivation returns float32 tensors. A derivation that changes depth also registers its *layer
sources* (the parent layer each child layer copies), from which ``derived_spec`` sets the child's
``num_layers`` and ``layer_sources`` gives lineage tests their ground-truth layer maps.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from verifier.zoo.models import BertForMaskedLM, CausalLM
from verifier.zoo.specs import ModelSpec

State = dict[str, torch.Tensor]

#: ``(parent_state, child, **child.derivation_args) -> child's initial state dict`` (keys and
#: shapes of the child). Parameters of a derivation (which layers, which parts) live in
#: ``child.derivation_args``, so they are part of the child's hash.
Derivation = Callable[..., State]
#: ``(parent_num_layers, **derivation_args) -> [parent layer of child layer 0, 1, ...]``.
LayerSources = Callable[..., list[int]]

DERIVATIONS: dict[str, Derivation] = {}
LAYER_SOURCES: dict[str, LayerSources] = {}

_LAYER_KEY = re.compile(r"^(model\.layers|bert\.encoder\.layer)\.(\d+)\.(.+)$")
_EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.(?:mlp|block_sparse_moe))\.experts\.(\d+)\.(.+)$")

#: Linear weights ``[out, hidden]`` that read a normalised hidden state (the router and
#: Qwen2-MoE's shared-expert gate included), by the last two name components.
_READERS = (
    "q_proj.weight", "k_proj.weight", "v_proj.weight",
    "gate_proj.weight", "up_proj.weight", "w1.weight", "w3.weight",
    "gate.weight", "shared_expert_gate.weight",
)
#: Linear weights ``[hidden, in]`` that write into the residual stream.
_WRITERS = ("o_proj.weight", "down_proj.weight", "w2.weight")
#: (gate, up, down) names of a SwiGLU block: HF Llama-style and Mixtral's.
_SWIGLU_NAMES = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"))


def register(name: str, *, layers: LayerSources | None = None) -> Callable[[Derivation], Derivation]:
    """Decorator adding a derivation under ``name`` (names are unique). ``layers`` gives the
    parent layer of each child layer for derivations that change depth (identity otherwise)."""

    def add(fn: Derivation) -> Derivation:
        if name in DERIVATIONS:
            raise ValueError(f"derivation {name!r} is already registered")
        DERIVATIONS[name] = fn
        if layers is not None:
            LAYER_SOURCES[name] = layers
        return fn

    return add


def _known(name: str) -> Derivation:
    if name not in DERIVATIONS:
        known = ", ".join(sorted(DERIVATIONS)) or "none"
        raise ValueError(f"unknown derivation {name!r}; registered: {known}")
    return DERIVATIONS[name]


def _bind(fn: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> None:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments {kwargs} for derivation {name!r}: {err}") from None


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict of a model of ``spec`` (built on the meta device)."""
    with torch.device("meta"):
        model = BertForMaskedLM(spec) if spec.is_encoder else CausalLM(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def apply(name: str, parent_state: Mapping[str, torch.Tensor], child: ModelSpec) -> State:
    """Run derivation ``name`` with ``child.derivation_args`` and check its result fits ``child``."""
    fn = _known(name)
    state = dict(parent_state)
    _bind(fn, name, state, child, **child.derivation_args)
    out = fn(state, child, **child.derivation_args)
    want = expected_shapes(child)
    got = {k: tuple(v.shape) for k, v in out.items()}
    if got != want:
        depth = len({m.group(2) for k in out if (m := _LAYER_KEY.match(k))})
        hint = f" (it gave {depth} layers; the child spec says num_layers={child.num_layers})"
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        wrong = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
        raise ValueError(
            f"derivation {name!r} does not produce a model of the child spec{hint}: "
            f"missing {missing[:3]}, unexpected {extra[:3]}, wrong shapes {wrong[:3]}"
        )
    return out


def layer_sources(name: str | None, parent_layers: int, args: Mapping[str, Any] | None = None) -> list[int]:
    """For each layer of a child made by derivation ``name``, the parent layer it starts from."""
    if name is None:
        return list(range(parent_layers))
    fn = _known(name)
    args = dict(args or {})
    if name not in LAYER_SOURCES:
        _bind(fn, name, {}, None, **args)
        return list(range(parent_layers))
    _bind(LAYER_SOURCES[name], name, parent_layers, **args)
    return LAYER_SOURCES[name](parent_layers, **args)


def derived_spec(
    parent: ModelSpec,
    derivation: str | None = None,
    args: Mapping[str, Any] | None = None,
    **updates: Any,
) -> ModelSpec:
    """A child of ``parent``: its fields, then ``updates``, with ``num_layers`` set from the
    derivation's layer sources (an explicit different ``num_layers`` is an error).

    ``args`` are stored JSON-normalised (tuples become lists), so a spec read back from a
    folder's ``training.json`` equals the one built here.
    """
    args = json.loads(json.dumps(dict(args or {})))
    depth = len(layer_sources(derivation, parent.num_layers, args))
    if updates.get("num_layers", depth) != depth:
        raise ValueError(f"derivation {derivation!r} gives {depth} layers, not {updates['num_layers']}")
    fields = parent.model_dump(exclude={"parent", "derivation", "derivation_args"})
    fields |= updates | {"num_layers": depth, "parent": parent, "derivation": derivation,
                         "derivation_args": args}
    return ModelSpec(**fields)


# --- helpers ----------------------------------------------------------------------------------


def _f32(state: Mapping[str, torch.Tensor]) -> State:
    return {k: v.detach().to(torch.float32).clone() for k, v in state.items()}


def _generator(child: ModelSpec) -> torch.Generator:
    return torch.Generator().manual_seed(child.seed)


def _perm(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(n)``, never the identity when ``n > 1``."""
    while True:
        p = torch.randperm(n, generator=gen)
        if n == 1 or not torch.equal(p, torch.arange(n)):
            return p


def _scales(shape: tuple[int, ...], gen: torch.Generator, max_scale: float, signed: bool) -> torch.Tensor:
    """Log-uniform magnitudes in ``[1/max_scale, max_scale]``, with random signs if ``signed``."""
    mag = torch.exp((torch.rand(shape, generator=gen) * 2 - 1) * math.log(max_scale))
    if signed:
        mag = mag * (torch.randint(0, 2, shape, generator=gen) * 2 - 1)
    return mag


def _layers(state: Mapping[str, torch.Tensor]) -> list[int]:
    return sorted({int(m.group(2)) for k in state if (m := _LAYER_KEY.match(k))})


def _decoder_only(state: Mapping[str, torch.Tensor], child: ModelSpec, name: str) -> None:
    if child.is_encoder or "model.embed_tokens.weight" not in state:
        raise ValueError(f"derivation {name!r} needs a decoder (llama/mistral/qwen2/mixtral/qwen2_moe)")


def _is_reader(key: str) -> bool:
    return key.endswith(_READERS) and key != "lm_head.weight"


def _is_writer(key: str) -> bool:
    return key.endswith(_WRITERS)


def _swiglus(state: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, str, str]]:
    """(gate, up, down) keys of every SwiGLU block: dense MLPs, experts, shared experts."""
    for key in sorted(state):
        for gate, up, down in _SWIGLU_NAMES:
            if key.endswith(f".{gate}.weight"):
                prefix = key[: -len(f"{gate}.weight")]
                yield key, f"{prefix}{up}.weight", f"{prefix}{down}.weight"


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of whole head blocks, in the given head order."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


# --- permute ----------------------------------------------------------------------------------

PERMUTE_PARTS = ("hidden", "heads", "ffn", "experts")


def _permute_hidden(state: State, p: torch.Tensor) -> None:
    """Hidden coordinate ``i`` of the child is coordinate ``p[i]`` of the parent, everywhere.

    The residual stream becomes ``x' = x[p]``: embeddings and every writer (o, down) produce
    permuted coordinates; RMSNorm is equivariant (``rms(x[p]) = rms(x)``, gain ``g[p]``); every
    reader (q, k, v, gate, up, router, lm_head) sees ``W[:, p] x[p] = W x``.
    """
    for key, t in state.items():
        if key in ("model.embed_tokens.weight", "lm_head.weight") or _is_reader(key):
            state[key] = t[:, p]
        elif _is_writer(key):
            state[key] = t[p, :]
        elif t.ndim == 1 and key.endswith("norm.weight"):
            state[key] = t[p]


def _permute_heads(state: State, child: ModelSpec, layer: int, gen: torch.Generator) -> None:
    """Reorder attention heads: KV heads by a permutation ``g``, and each query head moves with
    its KV group, reordered within the group by ``r_k``.

    Query head ``k * rep + j`` of the child is parent head ``g[k] * rep + r_k[j]``, so it still
    reads KV head ``g[k]`` (now at position ``k``, the one ``repeat_kv`` pairs it with). Whole
    blocks of ``head_dim`` rows of q/k/v (and biases) move, keeping RoPE's order inside a head;
    o's input columns move with the query heads, so ``sum_h o_h · attn_h`` is unchanged.
    """
    kv, rep, hd = child.num_kv_heads, child.heads // child.num_kv_heads, child.head_dim
    groups = _perm(kv, gen)
    q_heads = torch.cat([groups[k] * rep + _perm(rep, gen) for k in range(kv)])
    q_rows, kv_rows = _head_rows(q_heads, hd), _head_rows(groups, hd)
    p = f"model.layers.{layer}.self_attn."
    for key, t in list(state.items()):
        if not key.startswith(p):
            continue
        leaf = key[len(p):]
        if leaf.startswith("q_proj."):
            state[key] = t[q_rows]
        elif leaf.startswith(("k_proj.", "v_proj.")):
            state[key] = t[kv_rows]
        elif leaf == "o_proj.weight":
            state[key] = t[:, q_rows]


def _permute_ffn(state: State, gate: str, up: str, down: str, gen: torch.Generator) -> None:
    """Reorder the neurons of one SwiGLU block: ``sum_n down[:, n] silu(gate_n·x)(up_n·x)`` does
    not depend on the order of ``n``."""
    r = _perm(state[gate].shape[0], gen)
    state[gate], state[up], state[down] = state[gate][r], state[up][r], state[down][:, r]


def _permute_experts(state: State, layer: int, gen: torch.Generator) -> None:
    """Reorder the routed experts of a MoE layer together with the router's rows: the softmax,
    top-k and weighted sum over experts do not depend on their order."""
    experts: dict[str, dict[int, list[str]]] = {}
    for key in state:
        m = _EXPERT_KEY.match(key)
        if m and key.startswith(f"model.layers.{layer}."):
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(m.group(3))
    for block, by_index in experts.items():
        e = _perm(len(by_index), gen)
        old = {k: v for k, v in state.items() if k.startswith(f"{block}.experts.")}
        for new, src in enumerate(e.tolist()):
            for leaf in by_index[src]:
                state[f"{block}.experts.{new}.{leaf}"] = old[f"{block}.experts.{src}.{leaf}"]
        state[f"{block}.gate.weight"] = state[f"{block}.gate.weight"][e]


@register("permute")
def permute(parent: State, child: ModelSpec, parts: Sequence[str] = PERMUTE_PARTS) -> State:
    """Function-preserving permutations (``parts``, default all): ``hidden`` (one permutation of
    the residual coordinates), ``heads`` (KV groups with their query heads, query heads within
    their group), ``ffn`` (neurons of every dense MLP, expert and shared expert), ``experts``
    (routed experts with the router rows; nothing for dense models). The model computes the same
    function up to float rounding; see the part functions for each identity."""
    _decoder_only(parent, child, "permute")
    unknown = set(parts) - set(PERMUTE_PARTS)
    if unknown:
        raise ValueError(f"unknown permute parts {sorted(unknown)}; known: {', '.join(PERMUTE_PARTS)}")
    state, gen = _f32(parent), _generator(child)
    if "hidden" in parts:
        _permute_hidden(state, _perm(child.hidden, gen))
    for layer in _layers(state):
        if "heads" in parts:
            _permute_heads(state, child, layer, gen)
        if "experts" in parts:
            _permute_experts(state, layer, gen)
    if "ffn" in parts:
        for gate, up, down in list(_swiglus(state)):
            _permute_ffn(state, gate, up, down, gen)
    return state


# --- rescale ----------------------------------------------------------------------------------

RESCALE_PARTS = ("sign", "norms", "qk", "vo", "ffn")


def _flip_hidden(state: State, d: torch.Tensor) -> None:
    """Negate hidden coordinates where ``d = -1``: the residual stream becomes ``D x`` with
    ``D = diag(d)`` (embeddings and writers negated there). RMSNorm is sign-equivariant per
    coordinate, ``g * (D x) / rms(D x) = D (g * x / rms(x))``, and readers see ``(W D)(D y) = W y``.
    Norm gains stay as they are."""
    for key, t in state.items():
        if key in ("model.embed_tokens.weight", "lm_head.weight") or _is_reader(key):
            state[key] = t * d
        elif _is_writer(key):
            state[key] = t * d[:, None]


def _fold_norm(state: State, norm: str, readers: list[str], s: torch.Tensor) -> None:
    """Multiply an RMSNorm gain by ``s`` per coordinate and divide the input columns of the
    weights reading it by ``s``: ``(W diag(1/s)) (s * g * x̂) = W (g * x̂)``."""
    state[norm] = state[norm] * s
    for key in readers:
        state[key] = state[key] / s


def _norm_readers(state: State, layer: int) -> list[tuple[str, list[str]]]:
    """``layer``'s two norm gains, each with the weights that read its output: the input norm
    with q/k/v, the post-attention norm with the FFN's (router and shared-expert gate too)."""
    p = f"model.layers.{layer}."
    attn = [k for k in state if k.startswith(p + "self_attn.") and _is_reader(k)]
    ffn = [k for k in state if k.startswith(p) and _is_reader(k) and k not in attn]
    return [(p + "input_layernorm.weight", attn), (p + "post_attention_layernorm.weight", ffn)]


def _scale_rows(state: State, key: str, f: torch.Tensor) -> None:
    """Multiply output rows of a weight (and its bias, if any) by ``f``."""
    state[key] = state[key] * f[:, None]
    bias = key[: -len("weight")] + "bias"
    if bias in state:
        state[bias] = state[bias] * f


@register("rescale")
def rescale(
    parent: State,
    child: ModelSpec,
    parts: Sequence[str] = RESCALE_PARTS,
    max_scale: float = 8.0,
    qk_per: str = "head",
    vo_per: str = "head",
) -> State:
    """Function-preserving rescalings (``parts``, default all); factors are log-uniform in
    ``[1/max_scale, max_scale]``, with random signs except for norm gains.

    * ``sign``: negate a random subset of hidden coordinates everywhere (see ``_flip_hidden``).
    * ``norms``: each norm gain × ``s`` per coordinate, the input columns of its readers ÷ ``s``
      (input_layernorm: q/k/v; post_attention_layernorm: gate/up/router/shared-expert gate;
      final norm: lm_head).
    * ``qk``: q rows × ``a`` and k rows ÷ ``a`` (biases too), one ``a`` per KV group shared by
      its query heads (``qk_per="head"``) or one per KV group and rotary pair ``(i, i + d/2)``
      (``qk_per="pair"``): RoPE rotates each pair, and rotation commutes with scalars, so
      ``(a R q)·(R' k / a) = (R q)·(R' k)``.
    * ``vo``: v rows of a KV head × ``b``, the o columns of every query head of its group ÷ ``b``,
      per head (``vo_per="head"``) or per head dimension (``vo_per="dim"``): attention mixes
      value vectors linearly, ``o (sum_t p_t b v_t) / b = o sum_t p_t v_t``.
    * ``ffn``: up rows × ``c``, down columns ÷ ``c`` per neuron, ``c`` possibly negative, as
      SwiGLU is linear in up: ``silu(g·x) ((c u)·x) (d / c) = silu(g·x) (u·x) d``.
    """
    _decoder_only(parent, child, "rescale")
    unknown = set(parts) - set(RESCALE_PARTS)
    if unknown:
        raise ValueError(f"unknown rescale parts {sorted(unknown)}; known: {', '.join(RESCALE_PARTS)}")
    if qk_per not in ("head", "pair") or vo_per not in ("head", "dim"):
        raise ValueError("qk_per must be 'head' or 'pair', vo_per 'head' or 'dim'")
    if max_scale < 1:
        raise ValueError("max_scale must be at least 1")
    state, gen = _f32(parent), _generator(child)
    kv, rep, hd = child.num_kv_heads, child.heads // child.num_kv_heads, child.head_dim
    if "sign" in parts:
        _flip_hidden(state, torch.randint(0, 2, (child.hidden,), generator=gen).float() * 2 - 1)
    if "norms" in parts:
        _fold_norm(state, "model.norm.weight", ["lm_head.weight"],
                   _scales((child.hidden,), gen, max_scale, signed=False))
    for layer in _layers(state):
        p = f"model.layers.{layer}."
        if "norms" in parts:
            for norm, readers in _norm_readers(state, layer):
                _fold_norm(state, norm, readers,
                           _scales((child.hidden,), gen, max_scale, signed=False))
        if "qk" in parts:
            if qk_per == "head":
                a = _scales((kv, 1), gen, max_scale, signed=True).expand(kv, hd)
            else:
                a = _scales((kv, hd // 2), gen, max_scale, signed=True).repeat(1, 2)
            _scale_rows(state, p + "self_attn.q_proj.weight", a.repeat_interleave(rep, dim=0).flatten())
            _scale_rows(state, p + "self_attn.k_proj.weight", 1 / a.flatten())
        if "vo" in parts:
            shape = (kv, 1) if vo_per == "head" else (kv, hd)
            b = _scales(shape, gen, max_scale, signed=True).expand(kv, hd)
            _scale_rows(state, p + "self_attn.v_proj.weight", b.flatten())
            o = p + "self_attn.o_proj.weight"
            state[o] = state[o] / b.repeat_interleave(rep, dim=0).flatten()
    if "ffn" in parts:
        for _, up, down in list(_swiglus(state)):
            c = _scales((state[up].shape[0],), gen, max_scale, signed=True)
            state[up] = state[up] * c[:, None]
            state[down] = state[down] / c
    return state


@register("rotate")
def rotate(parent: State, child: ModelSpec) -> State:
    """Turn the residual stream by a Haar-random orthogonal ``Q`` (QuaRot / SpinQuant): every
    RMSNorm gain folded into the weights reading it (the gain becomes 1, and a gain-free RMSNorm
    commutes with rotations, ``rms(x Q) = rms(x)``), then embeddings and readers ``W Q``, the LM
    head ``W Q``, writers ``Q^T W``. Unlike a signed permutation, no probe undoes it
    (``verifier.probes.rotated_copy``)."""
    _decoder_only(parent, child, "rotate")
    state, gen = _f32(parent), _generator(child)
    ones = torch.ones(child.hidden)
    _fold_norm(state, "model.norm.weight", ["lm_head.weight"], 1 / state["model.norm.weight"])
    for layer in _layers(state):
        for norm, readers in _norm_readers(state, layer):
            _fold_norm(state, norm, readers, 1 / state[norm])
            state[norm] = ones.clone()  # exactly 1, not g * (1 / g)
    state["model.norm.weight"] = ones.clone()
    g = torch.randn(child.hidden, child.hidden, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    rot = q * torch.sign(torch.diagonal(r))  # Haar (Mezzadri 2007)
    for key, t in state.items():
        if key in ("model.embed_tokens.weight", "lm_head.weight") or _is_reader(key):
            state[key] = (t.double() @ rot).float()
        elif _is_writer(key):
            state[key] = (rot.T @ t.double()).float()
    return state


@register("transplant")
def transplant(parent: State, child: ModelSpec) -> State:
    """The body kept under new embeddings, as in a tokenizer transplant: the hidden coordinates
    permuted and negated at random (``permute`` and ``rescale``'s sign flips), every head and
    neuron permuted, then the token embedding and the LM head replaced by fresh Gaussian
    matrices of the same scale. Nothing of the base is left in the embeddings; the layers are
    the base's up to free changes (``verifier.probes.body_alignment``). Training afterwards
    (``steps``) learns the new embeddings and moves the body."""
    state = permute(parent, child)
    # a stream of its own: ``permute`` drew from ``_generator(child)`` already
    gen = torch.Generator().manual_seed(child.seed + 1_000_003)
    _flip_hidden(state, torch.where(torch.rand(child.hidden, generator=gen) < 0.5, -1.0, 1.0))
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in state:
            t = state[key]
            state[key] = torch.randn(t.shape, generator=gen) * float(t.std())
    return state


# --- depth: prune and duplicate ---------------------------------------------------------------


def _relayer(parent: Mapping[str, torch.Tensor], sources: Sequence[int]) -> State:
    """Copy of ``parent`` whose layer ``i`` is parent layer ``sources[i]`` (renumbered keys)."""
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    out: State = {}
    for key, t in parent.items():
        m = _LAYER_KEY.match(key)
        if m:
            by_layer.setdefault(int(m.group(2)), {})[f"{m.group(1)}.{{}}.{m.group(3)}"] = t
        else:
            out[key] = t.detach().to(torch.float32).clone()
    for i, src in enumerate(sources):
        if src not in by_layer:
            raise ValueError(f"layer {src} not in the parent (it has {len(by_layer)} layers)")
        for pattern, t in by_layer[src].items():
            out[pattern.format(i)] = t.detach().to(torch.float32).clone()
    return out


def _default_drop(parent_layers: int) -> list[int]:
    return sorted({parent_layers // 4, parent_layers - parent_layers // 4 - 1})


def _prune_sources(parent_layers: int, drop: Sequence[int] | None = None) -> list[int]:
    dropped = set(_default_drop(parent_layers) if drop is None else drop)
    if not dropped <= set(range(parent_layers)):
        raise ValueError(f"cannot drop layers {sorted(dropped)} of {parent_layers}")
    if len(dropped) >= parent_layers:
        raise ValueError("pruning must keep at least one layer")
    return [n for n in range(parent_layers) if n not in dropped]


@register("prune", layers=_prune_sources)
def prune(parent: State, child: ModelSpec, drop: Sequence[int] | None = None) -> State:
    """Drop whole layers (default for 8 layers: ``[2, 5]``, i.e. the layers at 1/4 and 3/4 of
    depth) and renumber the rest. Not function-preserving: a pre-norm residual network merely
    degrades gracefully when a block is removed."""
    return _relayer(parent, _prune_sources(len(_layers(parent)), drop))


def _default_order(parent_layers: int) -> list[int]:
    """Depth up-scaling: the layers of the middle half, in pairs, each pair repeated once
    (8 layers: ``[0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]``)."""
    lo, hi = parent_layers // 4, parent_layers - parent_layers // 4
    order = list(range(lo))
    for start in range(lo, hi, 2):
        pair = list(range(start, min(start + 2, hi)))
        order += pair + pair
    return order + list(range(hi, parent_layers))


def _duplicate_sources(parent_layers: int, order: Sequence[int] | None = None) -> list[int]:
    sources = _default_order(parent_layers) if order is None else [int(n) for n in order]
    if not sources or not set(sources) <= set(range(parent_layers)):
        raise ValueError(f"layer order {sources} does not index {parent_layers} parent layers")
    return sources


@register("duplicate", layers=_duplicate_sources)
def duplicate(parent: State, child: ModelSpec, order: Sequence[int] | None = None) -> State:
    """Depth up-scaling: child layer ``i`` is a copy of parent layer ``order[i]`` (default for 8
    layers: ``[0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]``, 12 layers)."""
    return _relayer(parent, _duplicate_sources(len(_layers(parent)), order))


# --- precision: cast and int8 -----------------------------------------------------------------

_FLOATS = ("float32", "float64", "bfloat16", "float16")


@register("cast")
def cast(parent: State, child: ModelSpec, dtypes: Sequence[str] = ("bfloat16", "float16")) -> State:
    """Store and reload through ``dtypes`` in turn (default: a bf16 checkpoint cast to fp16),
    returned as float32. Relative rounding error per value at most ``2^-8`` for bf16 (plus
    fp16's subnormal spacing, ``2^-24``, near zero)."""
    for name in dtypes:
        if name not in _FLOATS:
            raise ValueError(f"cannot cast to {name!r}; known: {', '.join(_FLOATS)}")
    out: State = {}
    for key, t in parent.items():
        for name in dtypes:
            t = t.to(getattr(torch, name))
        out[key] = t.to(torch.float32).clone()
    return out


def quantise_rows(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-row absmax quantisation and dequantisation: ``round(w / s) * s`` with
    ``s = max|row| / (2^(bits-1) - 1)``, so each value moves by at most ``s / 2``."""
    levels = 2 ** (bits - 1) - 1
    w = w.to(torch.float32)
    scale = w.abs().amax(dim=1, keepdim=True) / levels
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / safe).clamp(-levels, levels) * scale


@register("int8")
def int8(parent: State, child: ModelSpec) -> State:
    """Int8 weight-only quantisation round trip of every 2-D weight (embeddings and lm_head
    included), symmetric per output row (``quantise_rows``); norms and biases untouched."""
    return {k: quantise_rows(v) if v.ndim == 2 else v.to(torch.float32).clone() for k, v in parent.items()}


# --- MoE upcycling ----------------------------------------------------------------------------

#: What a Qwen2-MoE shared expert starts as: a slice of the dense FFN's neurons, or new weights.
UPCYCLE_SHARED = ("slice", "new")
_DENSE_MLP = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


class UpcyclePlan:
    """Which parent neuron every expert neuron of an upcycled child starts from.

    ``experts[l][e][n]`` is the parent FFN neuron (index into layer ``l``'s dense FFN of the
    parent) held by neuron ``n`` of routed expert ``e``, or -1 where the neuron was
    re-initialised; ``shared[l][n]`` the same for the shared expert (empty when the child has
    none). Drawn from ``child.seed`` before any weight is drawn, so ``upcycle_plan(child)``
    reproduces the plan without the parent's weights (the ground truth of lineage tests).
    """

    def __init__(self, experts: list[list[list[int]]], shared: list[list[int]]) -> None:
        self.experts = experts
        self.shared = shared


def _draw_plan(
    child: ModelSpec, dense: int, gen: torch.Generator, reinit: float, shuffle: bool,
    shared: str | None,
) -> UpcyclePlan:
    experts, width = child.experts, child.intermediate
    replicas, rest = divmod(experts * width, dense)
    if rest or replicas < 1:
        raise ValueError(
            f"{experts} experts of {width} neurons do not hold a whole number of copies of the "
            f"parent's {dense} FFN neurons"
        )
    if not 0.0 <= reinit <= 1.0:
        raise ValueError("reinit must be a fraction in [0, 1]")
    drop = round(reinit * width)
    plan = UpcyclePlan([], [])
    for _ in range(child.num_layers):
        order = torch.cat([torch.randperm(dense, generator=gen) if shuffle else torch.arange(dense)
                           for _ in range(replicas)])
        layer: list[list[int]] = []
        for e in range(experts):
            src = order[e * width:(e + 1) * width].clone()
            src[torch.randperm(width, generator=gen)[:drop]] = -1
            layer.append(src.tolist())
        plan.experts.append(layer)
        if shared == "slice":
            if child.shared_intermediate > dense:
                raise ValueError("a shared expert wider than the parent FFN cannot be a slice of it")
            plan.shared.append(torch.randperm(dense, generator=gen)[:child.shared_intermediate].tolist())
        elif shared == "new":
            plan.shared.append([-1] * child.shared_intermediate)
        else:
            plan.shared.append([])
    return plan


def _upcycle_check(child: ModelSpec, shared: str | None) -> None:
    if child.family not in ("mixtral", "qwen2_moe"):
        raise ValueError("upcycle makes a mixtral or qwen2_moe child")
    if child.parent is None or child.parent.is_moe or child.parent.is_encoder:
        raise ValueError("upcycle needs a dense decoder parent")
    if child.family == "qwen2_moe" and shared not in UPCYCLE_SHARED:
        raise ValueError(f"a qwen2_moe child needs shared in {UPCYCLE_SHARED}")
    if child.family == "mixtral" and shared is not None:
        raise ValueError("mixtral has no shared expert: leave shared unset")


def upcycle_plan(child: ModelSpec) -> UpcyclePlan:
    """The neuron sources of an ``upcycle`` child (see ``UpcyclePlan``)."""
    if child.derivation != "upcycle" or child.parent is None:
        raise ValueError("not an upcycled spec")
    args = dict(child.derivation_args)
    shared = args.get("shared")
    _upcycle_check(child, shared)
    return _draw_plan(child, child.parent.intermediate, _generator(child),
                      float(args.get("reinit", 0.0)), bool(args.get("shuffle", True)), shared)


@register("upcycle")
def upcycle(
    parent: State,
    child: ModelSpec,
    reinit: float = 0.0,
    noise: float = 0.0,
    down_scale: float = 1.0,
    shuffle: bool = True,
    shared: str | None = None,
) -> State:
    """Sparse upcycling of a dense decoder into a MoE child (``mixtral`` or ``qwen2_moe``).

    Embeddings, norms, attention and lm_head are copied (attention biases a dense parent lacks
    start at zero). Every layer's dense FFN of ``F`` neurons is replicated ``R = E * m / F``
    times, each replica's neurons shuffled (``shuffle``), the ``R * F`` neurons cut into the
    ``E`` experts of width ``m`` in order (Komatsuzaki et al. 2023 with ``m = F``: every expert
    a copy; Qwen1.5-MoE / Qwen2 report §2.2.2 with ``m < F``: fine-grained slices). Then, per
    expert, a fraction ``reinit`` of its neurons (rows of gate and up, column of down) is
    re-initialised from ``N(0, std of the parent matrix)`` (Drop-Upcycling, Nakamura et al.
    2025); copied weights get Gaussian noise of relative size ``noise`` (per matrix, relative
    to its standard deviation); expert down projections are multiplied by ``down_scale``. The
    router (and Qwen2-MoE's shared-expert gate) is new, ``N(0, INIT_STD)``. A Qwen2-MoE shared
    expert is a ``slice`` of ``shared_intermediate`` dense neurons or ``new`` weights. Which
    parent neuron each expert neuron holds is ``upcycle_plan(child)``.
    """
    from verifier.zoo.models import INIT_STD

    _decoder_only(parent, child, "upcycle")
    _upcycle_check(child, shared)
    gen = _generator(child)
    dense = parent["model.layers.0.mlp.up_proj.weight"].shape[0]
    plan = _draw_plan(child, dense, gen, reinit, shuffle, shared)
    want = expected_shapes(child)
    state: State = {}
    for key, shape in want.items():
        if key in parent and tuple(parent[key].shape) == shape:
            state[key] = parent[key].detach().to(torch.float32).clone()
        elif key.endswith(".bias") and ".self_attn." in key:
            state[key] = torch.zeros(shape)
    block = "block_sparse_moe" if child.family == "mixtral" else "mlp"
    names = ("w1", "w3", "w2") if child.family == "mixtral" else ("gate_proj", "up_proj", "down_proj")

    def expert(src: list[int], p: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        idx = torch.as_tensor(src)
        keep = idx >= 0
        out = []
        for k, w in enumerate(p):
            rows = w if k < 2 else w.T  # neurons as rows
            std = rows.std()
            new = torch.randn((len(src), rows.shape[1]), generator=gen) * std
            copy = rows[idx.clamp_min(0)] + noise * std * torch.randn(new.shape, generator=gen)
            w_out = torch.where(keep[:, None], copy, new)
            out.append(w_out if k < 2 else w_out.T.contiguous())
        return out

    for layer in range(child.num_layers):
        pre = f"model.layers.{layer}."
        dense_w = [parent[pre + k].to(torch.float32) for k in _DENSE_MLP]
        for e, src in enumerate(plan.experts[layer]):
            gate, up, down = expert(src, dense_w)
            for name, w in zip(names, (gate, up, down * down_scale), strict=True):
                state[f"{pre}{block}.experts.{e}.{name}.weight"] = w
        if plan.shared[layer]:
            gate, up, down = expert(plan.shared[layer], dense_w)
            for name, w in zip(("gate_proj", "up_proj", "down_proj"), (gate, up, down), strict=True):
                state[f"{pre}mlp.shared_expert.{name}.weight"] = w
        for key in (f"{pre}{block}.gate.weight", f"{pre}mlp.shared_expert_gate.weight"):
            if key in want:
                state[key] = torch.randn(want[key], generator=gen) * INIT_STD
    return state
