"""The built-in family tables: one ``LayoutTable`` per naming scheme, data only.

Names follow the modeling code of Hugging Face transformers (and, for GGUF, llama.cpp's
``gguf`` constants). Where a library version renamed modules, a role lists both spellings:
transformers v5 keeps MoE experts in memory as 3-D ``mlp.experts.gate_up_proj`` stacks but
still writes (and reads) the per-expert ``experts.N.w1``/``gate_proj`` files.

Adding a family is adding one table to ``FAMILIES`` (or ``GGUF_TABLES`` for GGUF naming).
"""

from __future__ import annotations

from verifier.architectures.layout import (
    ATTN_NORM,
    DOWN,
    EMBED,
    EMBED_NORM,
    FINAL_NORM,
    GATE,
    K_B,
    K_NORM,
    KV_A,
    KV_A_NORM,
    KV_B,
    LM_HEAD,
    MLP_NORM,
    POS_EMBED,
    Q_A,
    Q_A_NORM,
    Q_B,
    Q_NORM,
    ROUTER,
    SHARED_GATE,
    TYPE_EMBED,
    UP,
    V_B,
    K,
    O,
    Q,
    V,
)
from verifier.architectures.schema import (
    ATTN_GATE,
    ATTN_SINKS,
    POST_ATTN_NORM,
    POST_MLP_NORM,
    ROUTER_CORRECTION,
    SECOND_DOWN,
    SECOND_GATE,
    SECOND_ROLES,
    SECOND_UP,
    Fused,
    LayoutTable,
    Paths,
    Stacked,
)

#: where a checkpoint's tensors may start: none (base model saved alone), the *ForCausalLM
#: wrapper's ``model.``, GPT-2's ``transformer.``, BERT's ``bert.``, and the language tower of
#: multimodal wrappers (older ``language_model.model.``, v5 ``model.language_model.``;
#: Idefics and Kosmos call it ``text_model``)
HF_PREFIXES = (
    "",
    "model.",
    "transformer.",
    "bert.",
    "language_model.model.",
    "language_model.",
    "model.language_model.",
    "model.text_model.",
    "text_model.model.",
    "text_model.",
    # where vision-language releases keep their language model: LLaVA-OneVision-1.5's
    # ``model.model.``, ShieldGemma 2's ``model.language_model.model.``, Ovis 2.5's ``llm.``
    "model.model.",
    "model.language_model.model.",
    "llm.model.",
    "llm.",
)

#: the top-level modules (under ``model.`` or not) of multimodal checkpoints that are not the
#: language model: vision, audio and video towers and what feeds them in. Lineage is judged on
#: the language model; these are set aside before detection and named in the warnings.
MULTIMODAL_PARTS = (
    "visual", "vision_tower", "vision_model", "vision_encoder", "vision_embed_tokens",
    "vision_projection", "vision_adapter", "multi_modal_projector", "mm_projector",
    "audio_tower", "audio_model", "image_tower", "video_tower", "image_newline",
    "image_to_text_projection", "visual_embeddings_table", "view_separator", "qformer",
    "query_tokens", "language_projection", "vqmodel", "generation_embeddings",
    "generation_aligner", "generation_head", "patch_merge_mlp",
    "audio_encoder", "audio_adapter",  # dots.3 Note's release (beside ``vision_encoder``)
    "audio",  # Inkling's release (``model.audio.``, beside ``model.visual.``)
    "embed_vision", "embed_audio",  # Gemma 3n's embedders of soft tokens into the text space
    "embed_tokens_extend",  # Phi-4-multimodal: its image and audio encoders and projections
    "image_encoder", "visual_projection",  # GIT's (under ``git.``)
    "vit",  # HY-V4-VL's release (HunYuan-VL's vision tower)
    "visual_tokenizer", "vte",  # Ovis's vision tower and visual token embeddings
    "vision_backbone",  # Molmo 2's release (its image encoder, pooling and projector)
)
#: generic module names that are such a part only in a checkpoint that has one of the above
#: (a text-only model's own ``projector`` stays the language model's)
MULTIMODAL_ADAPTERS = ("projector", "merger", "connector", "aligner",
                       "mlp_AR",  # PaddleOCR-VL's projector, in its release
                       "mlp1")  # InternVL-style releases' projector (Nemotron-H Omni)

#: buffers that older checkpoints saved alongside the weights
#: releases that keep their blocks under ``backbone.`` (Nemotron-H, Mamba, xLSTM, Dory;
#: Nemotron-H Omni's language model under ``language_model.backbone.``)
_BACKBONE_PREFIXES = (*HF_PREFIXES, "backbone.", "language_model.backbone.")

ROTARY_BUFFERS = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
#: per-weight companions of quantised storage (FP8 block scales, e.g. DeepSeek-V3's files):
#: not roles, but expected, so that they do not hide a known layout from detection
QUANT_COMPANIONS = ("weight_scale_inv", "weight_scale", "input_scale")

_DECODER_GLOBALS: dict[str, Paths] = {EMBED: "embed_tokens", FINAL_NORM: "norm", LM_HEAD: "lm_head"}


def _qkvo(module: str, out: str = "o_proj") -> dict[str, Paths]:
    """Separate ``q_proj``/``k_proj``/``v_proj`` and an output projection under ``module``."""
    return {Q: f"{module}q_proj", K: f"{module}k_proj", V: f"{module}v_proj", O: module + out}


_ATTN = _qkvo("self_attn.")
#: what a block that mixes tokens by attention holds (and a linear-attention one lacks)
_ATTENTION_ROLES = (Q, K, V, O, Q_NORM, K_NORM, ATTN_GATE)
_QK_NORM: dict[str, Paths] = {Q_NORM: "self_attn.q_norm", K_NORM: "self_attn.k_norm"}
_NORMS: dict[str, Paths] = {ATTN_NORM: "input_layernorm", MLP_NORM: "post_attention_layernorm"}
_MLP: dict[str, Paths] = {GATE: "mlp.gate_proj", UP: "mlp.up_proj", DOWN: "mlp.down_proj"}
_EXPERT_MLP: dict[str, Paths] = {GATE: "gate_proj", UP: "up_proj", DOWN: "down_proj"}
#: gemma2/gemma3 blocks: four norms (see ``schema.POST_ATTN_NORM`` for the role choice)
_SANDWICH_NORMS: dict[str, Paths] = {
    ATTN_NORM: "input_layernorm",
    POST_ATTN_NORM: "post_attention_layernorm",
    MLP_NORM: "pre_feedforward_layernorm",
    POST_MLP_NORM: "post_feedforward_layernorm",
}
#: transformers v5 ``*Experts`` modules: ``gate_up_proj`` ``[E, 2*I, H]`` (gate = first half of
#: the rows, ``.chunk(2, dim=-1)`` of the output) and ``down_proj`` ``[E, H, I]``
_V5_EXPERT_STACKS = {
    "mlp.experts.gate_up_proj": Stacked(roles=(GATE, UP), split="halves", layout="out_in"),
    "mlp.experts.down_proj": Stacked(roles=(DOWN,), layout="out_in"),
}
#: routed experts as transformers writes them (``mlp.experts.N.*_proj``) or holds them (v5 stacks)
_MLP_EXPERTS: dict[str, object] = {
    "experts": "mlp.experts.{expert}.", "expert": _EXPERT_MLP, "stacked": _V5_EXPERT_STACKS}
_MLA: dict[str, Paths] = {
    Q: "self_attn.q_proj",
    Q_A: "self_attn.q_a_proj",
    Q_A_NORM: "self_attn.q_a_layernorm",
    Q_B: "self_attn.q_b_proj",
    KV_A: "self_attn.kv_a_proj_with_mqa",
    KV_A_NORM: "self_attn.kv_a_layernorm",
    KV_B: "self_attn.kv_b_proj",
    O: "self_attn.o_proj",
}


def _table(family: str, *model_types: str, **fields: object) -> LayoutTable:
    """A family's table answering for its own ``model_type`` and ``model_types``, under the
    Hugging Face prefixes unless ``fields`` say otherwise."""
    return LayoutTable.model_validate(
        {"family": family, "model_types": (family, *model_types), "prefixes": HF_PREFIXES}
        | fields)


def _decoder(family: str, *model_types: str, layer: dict[str, Paths], **rest: object) -> LayoutTable:
    """A Llama-style decoder table (``layers.N.``, ``embed_tokens``, ``norm``, ``lm_head``)."""
    fields: dict[str, object] = {
        "layer_prefix": "layers.{layer}.",
        "globals": _DECODER_GLOBALS,
        "layer": layer,
        "known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS,
    }
    return _table(family, *model_types, **(fields | rest))


#: Llama's blocks under other names: Mistral, Ministral 3, Granite 3 (its embedding, residual,
#: attention and logit multipliers are scalars of the config, not weights), InternLM3,
#: IQuest-Coder, ERNIE-4.5 dense, Helium, SmolLM3, Seed-OSS, CWM, and Emu3's language model
#: (Llama's blocks; its image tokenizer ``vqmodel`` is another modality)
LLAMA = _decoder("llama", "mistral", "ministral", "ministral3", "granite", "internlm3",
                 "iquestcoder",
                 "ernie4_5", "helium", "smollm3", "seed_oss", "cwm", "emu3", "emu3_text_model",
                 # vision-language models whose language model is Granite's or ERNIE 4.5's
                 "granite_docling", "granite_docling_text", "paddleocr_vl", "paddleocr_vl_text",
                 layer=_NORMS | _ATTN | _MLP)
#: Llama 3.2 Vision's language model: Llama's blocks with cross-attention blocks inserted
#: (``cross_attn.*`` reads the image and two tanh gates weigh it: not compared; their MLPs and
#: norms are)
MLLAMA = _decoder(
    "mllama", "mllama_text_model", layer=_NORMS | _ATTN | _MLP, optional_roles=_ATTENTION_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "cross_attn", "cross_attn_attn_gate", "cross_attn_mlp_gate"),
)
#: q/k/v carry biases; ``X.bias`` -> ``q.bias`` etc. comes with every path
#: the language models of Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni's thinker are Qwen2's blocks
QWEN2 = _decoder("qwen2", "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text",
                 "qwen2_5_omni_thinker", "qwen2_5_omni_text", layer=_NORMS | _ATTN | _MLP)
QWEN3 = _decoder("qwen3", "qwen3_vl", "qwen3_vl_text",
                 layer=_NORMS | _ATTN | _QK_NORM | _MLP)
#: Gemma 4: Gemma 3's four norms and q/k norms, but its norms multiply by the stored weight
#: (no offset). Optional MoE blocks run experts (``experts.*`` stacks, gate first; router
#: ``router.proj``) beside the dense MLP; the per-layer-input path, ``layer_scalar`` and the
#: experts' own norms and scales are not compared; nor are a drafter's
#: (``gemma4_unified_assistant``) projections from and to its backbone's hidden space
#: (``pre_projection``, ``post_projection``) and its ordered-embedding lookup.
GEMMA4 = _decoder(
    "gemma4", "gemma4_text", "gemma4_unified", "gemma4_unified_text",
    layer=_SANDWICH_NORMS | _ATTN | _QK_NORM | _MLP | {ROUTER: "router.proj"},
    stacked={
        "experts.gate_up_proj": Stacked(roles=(GATE, UP), split="halves", layout="out_in"),
        "experts.down_proj": Stacked(roles=(DOWN,), layout="out_in"),
    },
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "layer_scalar", "per_layer_input_gate", "per_layer_projection",
        "post_per_layer_input_norm", "router.scale", "router.per_expert_scale",
        "post_feedforward_layernorm_1", "post_feedforward_layernorm_2",
        "pre_feedforward_layernorm_2", "embed_tokens_per_layer", "per_layer_model_projection",
        "per_layer_projection_norm", "pre_projection", "post_projection", "masked_embedding"),
)
#: Gemma 3n (E2B/E4B): Gemma 3's four norms and q/k norms, with plain gains ``w`` as Gemma 4's.
#: A block's attention and MLP read and write AltUp's active stream (``altup_active_idx``, the
#: embeddings' stream), so q/k/v/gate/up read and o/down write the embeddings' hidden space; the
#: gate's top-k sparsity (``activation_sparsity_pattern``) treats every neuron alike. The last
#: ``num_kv_shared_layers`` blocks reuse an earlier block's keys and values and hold no
#: ``k_proj``/``v_proj``/``k_norm`` in the files transformers saves (their heads are not
#: matched); Google's own release files still carry those blocks' unused ``k_proj``/``v_proj``/
#: ``k_norm``, set aside by the config's count (as Gemma 4's E models'). Not compared: AltUp (the
#: other streams' ``altup_projections``/``altup_unembed_projections``, each block's ``altup.*``
#: coefficients, router and scale), LAuReL's low-rank residual (``laurel.*``) and the per-layer
#: input path (``embed_tokens_per_layer``, ``per_layer_*``)
GEMMA3N = _decoder(
    "gemma3n", "gemma3n_text",
    layer=_SANDWICH_NORMS | _ATTN | _QK_NORM | _MLP,
    optional_roles=(K, V, K_NORM),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "altup", "altup_projections", "altup_unembed_projections", "laurel",
        "per_layer_input_gate", "per_layer_projection", "post_per_layer_input_norm",
        "embed_tokens_per_layer", "per_layer_model_projection", "per_layer_projection_norm"),
)
#: GLM-4 (glm): fused ``gate_up_proj`` (``.chunk(2)``: gate first); GLM-4-0414 (glm4) adds a
#: norm on each sublayer's output (``post_self_attn_layernorm``, ``post_mlp_layernorm``)
_GLM_MLP = {DOWN: "mlp.down_proj"}
_GLM_FUSED = {"mlp.gate_up_proj": Fused(roles=(GATE, UP), split="halves")}
GLM = _decoder("glm", layer=_NORMS | _ATTN | _GLM_MLP, fused=_GLM_FUSED)
GLM4 = _decoder(
    "glm4",
    "glm4v",  # GLM-4.1V / 4.5V / 4.6V's language model
    "glm4v_text",
    "glm_ocr", "glm_ocr_text",  # GLM-OCR's: GLM-4V's text blocks
    layer=_NORMS | _ATTN | _GLM_MLP | {
        POST_ATTN_NORM: "post_self_attn_layernorm",
        POST_MLP_NORM: "post_mlp_layernorm",
    },
    fused=_GLM_FUSED,
)
#: Qwen3-Next / Qwen3.5: norms compute ``x * (1 + w)``; three of four blocks mix tokens with
#: linear attention (``linear_attn.*``, not compared), the rest with gated attention whose
#: ``q_proj`` holds per head the query then its output gate (``.view(..., heads, 2 * hd)
#: .chunk(2)``); dense MLPs or MoE with a shared expert and its gate
_QWEN_NEXT_ATTN = {K: "self_attn.k_proj", V: "self_attn.v_proj", O: "self_attn.o_proj"}
_QWEN_NEXT = {
    "fused": {"self_attn.q_proj": Fused(roles=(Q, ATTN_GATE), split="per_head")},
    "norm_offset": 1.0,
    "optional_roles": _ATTENTION_ROLES,
    "known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS + ("linear_attn",),
}
QWEN3_5 = _decoder("qwen3_5", "qwen3_5_text",
                   layer=_NORMS | _QWEN_NEXT_ATTN | _QK_NORM | _MLP, **_QWEN_NEXT)
QWEN3_NEXT = _decoder(
    "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text",
    layer=_NORMS | _QWEN_NEXT_ATTN | _QK_NORM | _MLP | {
        ROUTER: "mlp.gate", SHARED_GATE: "mlp.shared_expert_gate"},
    shared_experts="mlp.shared_expert.",
    **_MLP_EXPERTS,
    **_QWEN_NEXT,
)
#: OLMo-2/3: no norm in front of a sublayer, one on each sublayer's output before the residual
#: add (``post_attention_layernorm``, ``post_feedforward_layernorm``); q/k norms over all heads
OLMO2 = _decoder(
    "olmo2", "olmo3", "exaone4",
    layer=_ATTN | _MLP | _QK_NORM | {
        POST_ATTN_NORM: "post_attention_layernorm",
        POST_MLP_NORM: "post_feedforward_layernorm",
    },
)
#: parallel block: attention and MLP both read ``input_layernorm``'s output (a LayerNorm)
COHERE = _decoder("cohere", "cohere2", layer={ATTN_NORM: "input_layernorm"} | _ATTN | _QK_NORM | _MLP,
                  mlp_shares_attn_norm=True)
#: LayerNorm1P: the norms compute with ``weight + 1`` (llama.cpp's converter stores that sum);
#: a squared-ReLU MLP, ``up`` and ``down`` without a gate
NEMOTRON = _decoder("nemotron", layer=_NORMS | _ATTN | {UP: "mlp.up_proj", DOWN: "mlp.down_proj"},
                    norm_offset=1.0)
#: plain ``up``/``down`` MLPs without a gate (ReLU²): Arcee AFM; Jais-2 (LayerNorms with biases)
ARCEE = _decoder("arcee", "jais2",
                 layer=_NORMS | _ATTN | {UP: "mlp.up_proj", DOWN: "mlp.down_proj"})
#: Apertus: its own norm names, q/k norms per head, an ``up``/``down`` MLP through xIELU, whose
#: learned ``act_fn`` scalars are not compared
APERTUS = _decoder(
    "apertus", "apertus1p5_text",
    layer={ATTN_NORM: "attention_layernorm", MLP_NORM: "feedforward_layernorm"} | _ATTN
    | _QK_NORM | {UP: "mlp.up_proj", DOWN: "mlp.down_proj"},
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("mlp.act_fn",),
)
#: HyperCLOVA X SEED (Peri-LN): Llama's blocks with a norm on each sublayer's output too,
#: ``post_norm1`` after attention and ``post_norm2`` after the MLP (absent without
#: ``use_post_norm``); Granite's multipliers are config scalars
HYPERCLOVAX = _decoder(
    "hyperclovax",
    layer=_NORMS | {POST_ATTN_NORM: "post_norm1", POST_MLP_NORM: "post_norm2"} | _ATTN | _MLP,
)
#: EXAONE 3.0/3.5 files: Llama's blocks under GPT-2-like names (``transformer.h.N.``; ``c_fc_0``
#: gate, ``c_fc_1`` up, ``c_proj`` down; ``attn.attention.out_proj``), renamed by transformers
#: only when it loads them
EXAONE = _table(
    "exaone",
    # its release's names, or the Llama names transformers gives its modules in memory
    layer_prefix=["h.{layer}.", "layers.{layer}."],
    globals={EMBED: ["wte", "embed_tokens"], FINAL_NORM: ["ln_f", "norm"], LM_HEAD: "lm_head"},
    layer={ATTN_NORM: ["ln_1", "input_layernorm"], MLP_NORM: ["ln_2", "post_attention_layernorm"],
           **{role: [old, new] for (role, old), new in zip(
               _qkvo("attn.attention.", "out_proj").items(), _ATTN.values(), strict=True)},
           GATE: ["mlp.c_fc_0", "mlp.gate_proj"], UP: ["mlp.c_fc_1", "mlp.up_proj"],
           DOWN: ["mlp.c_proj", "mlp.down_proj"]},
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS,
)
#: OLMo 1: LayerNorms without weights or biases, so its files hold no norm at all
OLMO = _decoder("olmo", layer=_ATTN | _MLP)
#: StableLM: LayerNorms with biases; with ``use_parallel_residual`` (StableLM 2 12B) attention
#: and MLP both read ``input_layernorm`` and the q/k norms are one LayerNorm per head
#: (``q_layernorm.norms.N``: not compared)
STABLELM = _decoder(
    "stablelm", layer=_NORMS | _ATTN | _MLP, mlp_shares_attn_norm=True,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.q_layernorm", "self_attn.k_layernorm"),
)
#: Persimmon: GPT-NeoX's ``query_key_value`` (q, k, v per head) and ``dense`` under Llama's
#: block names, q/k LayerNorms over each head, a squared-ReLU ``up``/``down`` MLP
PERSIMMON = _decoder(
    "persimmon",
    globals={EMBED: "embed_tokens", FINAL_NORM: "final_layernorm", LM_HEAD: "lm_head"},
    layer=_NORMS | {O: "self_attn.dense", Q_NORM: "self_attn.q_layernorm",
                    K_NORM: "self_attn.k_layernorm", UP: "mlp.dense_h_to_4h",
                    DOWN: "mlp.dense_4h_to_h"},
    fused={"self_attn.query_key_value": Fused(roles=(Q, K, V), split="groups")},
)
#: BitNet b1.58 in bfloat16: Llama's names, and a norm inside each sublayer (on the attention
#: output before ``o_proj``, on the MLP's hidden units before ``down``): not compared. Its packed
#: ternary release is refused with its ``quant_method``.
BITNET = _decoder(
    "bitnet", layer=_NORMS | _ATTN | _MLP,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.attn_sub_norm", "mlp.ffn_sub_norm"),
)
#: nanochat: norms without parameters (blocks, q/k and final), a squared-ReLU ``fc1``/``fc2``
NANOCHAT = _decoder("nanochat", layer=_ATTN | {UP: "mlp.fc1", DOWN: "mlp.fc2"})
#: XGLM: pre-LayerNorm blocks under OPT-like names (``self_attn_layer_norm`` before attention,
#: ``final_layer_norm`` before ``fc1``/``fc2``), the model's ``layer_norm`` last; sinusoidal
#: positions (no weights)
XGLM = _decoder(
    "xglm",
    globals={EMBED: "embed_tokens", FINAL_NORM: "layer_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "self_attn_layer_norm", **_qkvo("self_attn.", "out_proj"),
           MLP_NORM: "final_layer_norm", UP: "fc1", DOWN: "fc2"},
)
#: Molmo 2's language model. Its release keeps OLMo's names under ``model.transformer.``:
#: ``blocks.N.attn_norm``, fused ``self_attn.att_proj`` (q, then k, then v), ``attn_out``,
#: per-head ``q_norm``/``k_norm``, ``ff_norm``, ``mlp.ff_proj`` (up, then gate: transformers
#: chunks it so), ``ff_out``, ``ln_f``; the embedding ``wte.embedding``, the rows of the tokens
#: it adds (``wte.new_embedding``) not compared. In memory transformers gives it Qwen 3's names,
#: read too. Its image encoder (``vision_backbone``) is set aside.
MOLMO2 = _table(
    "molmo2", "molmo2_text",
    prefixes=(*HF_PREFIXES, "model.transformer."),
    layer_prefix=["layers.{layer}.", "blocks.{layer}."],
    globals={EMBED: ["embed_tokens", "wte.embedding"], FINAL_NORM: ["norm", "ln_f"],
             LM_HEAD: "lm_head"},
    layer={ATTN_NORM: ["input_layernorm", "attn_norm"],
           MLP_NORM: ["post_attention_layernorm", "ff_norm"],
           **_ATTN, O: ["self_attn.o_proj", "self_attn.attn_out"], **_QK_NORM,
           **_MLP, DOWN: ["mlp.down_proj", "mlp.ff_out"]},
    fused={"self_attn.att_proj": Fused(roles=(Q, K, V), split="heads"),
           "mlp.ff_proj": Fused(roles=(UP, GATE), split="halves")},
    known_unassigned=(*ROTARY_BUFFERS, "wte.new_embedding"),
)
#: Kosmos-2's language model (``text_model.``, beside its image encoder ``vision_model`` and
#: ``image_to_text_projection``, set aside): XGLM's pre-LayerNorm blocks with the MLP under
#: ``ffn.``; the sub-LayerNorms inside the attention (``self_attn.inner_attn_ln``, on the heads'
#: outputs before ``out_proj``) and the MLP (``ffn.ffn_layernorm``, on the neurons before
#: ``fc2``) are not compared, as BitNet's are not
KOSMOS2 = XGLM.model_copy(update={
    "family": "kosmos-2",
    "model_types": ("kosmos-2", "kosmos_2_text_model", "kosmos-2.5", "kosmos_2_5_text_model"),
    "layer": {**XGLM.layer, UP: "ffn.fc1", DOWN: "ffn.fc2"},
    # Kosmos-2.5 adds an embedding of two segments (image, text) to the positions
    "known_unassigned": (*XGLM.known_unassigned, "self_attn.inner_attn_ln",
                         "ffn.ffn_layernorm", "segment_emb"),
})
#: BioGPT: XGLM's pre-LayerNorm blocks under ``biogpt.`` (``self_attn_layer_norm`` before
#: attention, ``final_layer_norm`` before ``fc1``/``fc2``, the model's ``layer_norm`` last),
#: q/k/v/out biases, learned positions ``embed_positions`` (two rows of offset, as OPT's), the
#: head ``output_projection`` tied to the embeddings; the embedding scale is a config flag
BIOGPT = _table(
    "biogpt",
    prefixes=("", "biogpt."),
    layer_prefix="layers.{layer}.",
    globals={EMBED: "embed_tokens", POS_EMBED: "embed_positions", FINAL_NORM: "layer_norm",
             LM_HEAD: "output_projection"},
    layer=XGLM.layer,
)
#: DiffLlama (Differential Transformer): Llama's norms, MLP and names, but not softmax
#: attention over q/k/v/o heads. Query heads ``h`` and ``h + H/2`` (keys ``g(h)`` and
#: ``g(h) + KV/2``) give two softmax maps whose difference, weighted by a learned lambda
#: (``lambda_q1``, ``lambda_k1``, ``lambda_q2``, ``lambda_k2``), reads the value heads ``g(h)``
#: and ``g(h) + KV/2`` side by side; a parameterless RMSNorm over those ``2 * head_dim`` values
#: precedes ``o_proj``, whose columns come in blocks of ``2 * head_dim`` per head pair. Output
#: column block ``j`` thus carries value head ``g(j // 2) + (j % 2) * KV/2``, not ``g(j)``, and
#: heads permute only in those pairs: ``self_attn.*`` is not compared (its QK circuits are
#: standard, its OV ones are not, and head matching needs both). ``input_layernorm`` is
#: still the norm in front of it.
DIFFLLAMA = _decoder(
    "diffllama", layer=_NORMS | _MLP,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj", "lambda_q1",
                                   "lambda_k1", "lambda_q2", "lambda_k2")),
)
#: Granite-SWA: Granite's blocks with one attention-sink logit per head
GRANITE_SWA = _decoder("granite_swa",
                       layer=_NORMS | _ATTN | _MLP | {ATTN_SINKS: "self_attn.sinks"})
STARCODER2 = _decoder("starcoder2", layer=_NORMS | _ATTN | {UP: "mlp.c_fc", DOWN: "mlp.c_proj"})
#: Phi-1/1.5/2: parallel block with one norm; ``dense`` is the output projection; optional
#: ``q_layernorm``/``k_layernorm`` (``qk_layernorm``)
PHI = _decoder(
    "phi",
    layer={
        ATTN_NORM: "input_layernorm",
        **_qkvo("self_attn.", "dense"),
        Q_NORM: "self_attn.q_layernorm",
        K_NORM: "self_attn.k_layernorm",
        UP: "mlp.fc1",
        DOWN: "mlp.fc2",
    },
    globals={EMBED: "embed_tokens", FINAL_NORM: "final_layernorm", LM_HEAD: "lm_head"},
    mlp_shares_attn_norm=True,
)
#: gemma norms (q/k norms too) compute ``x * (1 + weight)``: loaded as that gain, the value
#: llama.cpp's converter stores (so a GGUF copy's norms load equal to the original's)
GEMMA = _decoder("gemma", layer=_NORMS | _ATTN | _MLP, norm_offset=1.0)
GEMMA2 = _decoder("gemma2", "vaultgemma", layer=_SANDWICH_NORMS | _ATTN | _MLP, norm_offset=1.0)
GEMMA3 = _decoder("gemma3", "gemma3_text", layer=_SANDWICH_NORMS | _ATTN | _QK_NORM | _MLP,
                  norm_offset=1.0)
#: modeling_phi3: ``qkv_proj`` rows are q (heads*head_dim), k, v (kv_heads*head_dim each);
#: ``gate_up_proj`` output is ``.chunk(2, dim=-1)`` into gate (first half) and up
PHI3 = _decoder(
    "phi3",
    layer=_NORMS | {O: "self_attn.o_proj", DOWN: "mlp.down_proj"},
    fused={
        "self_attn.qkv_proj": Fused(roles=(Q, K, V), split="heads"),
        "mlp.gate_up_proj": Fused(roles=(GATE, UP), split="halves"),
    },
)
#: Phi-4-multimodal's language model (Phi-4-mini): Phi-3's blocks (fused ``qkv_proj`` q, k, v
#: by head counts; ``gate_up_proj`` gate first; plain gains). Its release (``phi4mm``) wraps
#: ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and ``down_proj`` in LoRA layers: the base weights
#: (``X.base_layer``) are what text runs on and are read as the roles; the vision and speech
#: adapters (``X.lora_A.vision``, ``X.lora_B.speech``...), switched on only for those inputs,
#: are not compared. The towers (``embed_tokens_extend``: image and audio encoders and their
#: projections) are set aside as other modalities.
_PHI4_BASE = {path: [path, f"{path}.base_layer"] for path in ("self_attn.o_proj", "mlp.down_proj")}
PHI4_MULTIMODAL = PHI3.model_copy(update={
    "family": "phi4_multimodal", "model_types": ("phi4_multimodal", "phi4mm"),
    "layer": _NORMS | {O: _PHI4_BASE["self_attn.o_proj"], DOWN: _PHI4_BASE["mlp.down_proj"]},
    "fused": {f"{path}{base}": fused for path, fused in PHI3.fused.items()
              for base in ("", ".base_layer")},
    "known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS + ("lora_A", "lora_B"),
})
#: Conv1D stores ``[in, out]``; ``c_attn`` output splits into q, k, v thirds
#: (``.split(embed_dim, dim=2)``); ``attn.bias``/``masked_bias`` are old causal-mask buffers
GPT2 = LayoutTable(
    family="gpt2",
    model_types=("gpt2",),
    prefixes=HF_PREFIXES,
    layer_prefix="h.{layer}.",
    globals={EMBED: "wte", POS_EMBED: "wpe", FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "ln_1",
        O: "attn.c_proj",
        MLP_NORM: "ln_2",
        UP: "mlp.c_fc",
        DOWN: "mlp.c_proj",
    },
    fused={"attn.c_attn": Fused(roles=(Q, K, V), split="heads")},
    transpose=(Q, K, V, O, UP, DOWN),
    # a decoder's cross-attention in an encoder-decoder (``add_cross_attention``): not compared
    known_unassigned=("attn.bias", "attn.masked_bias", "crossattention", "ln_cross_attn"),
)
#: GPT-2's names in ``nn.Linear`` orientation; ``c_attn`` is q, k, v with ``multi_query``'s
#: one key/value head (``[hidden + 2 * head_dim, hidden]``) or full heads
GPT_BIGCODE = GPT2.model_copy(update={
    "family": "gpt_bigcode", "model_types": ("gpt_bigcode",), "transpose": (),
})
#: GPT-1: GPT-2's Conv1D blocks with their LayerNorms after each sublayer (post-norm), no
#: final norm, ``tokens_embed``/``positions_embed``; the head is tied to the embedding
OPENAI_GPT = GPT2.model_copy(update={
    "family": "openai-gpt", "model_types": ("openai-gpt",), "post_norm": True,
    "globals": {EMBED: "tokens_embed", POS_EMBED: "positions_embed", LM_HEAD: "lm_head"},
})
#: GPT-Neo: GPT-2's block names with ``nn.Linear`` q/k/v/out under ``attn.attention``
GPT_NEO = _table(
    "gpt_neo",
    layer_prefix="h.{layer}.",
    globals={EMBED: "wte", POS_EMBED: "wpe", FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "ln_1",
        **_qkvo("attn.attention.", "out_proj"),
        MLP_NORM: "ln_2",
        UP: "mlp.c_fc",
        DOWN: "mlp.c_proj",
    },
    known_unassigned=("attn.attention.bias", "attn.attention.masked_bias"),
)
#: MPT: ``transformer.blocks.N``; ``Wqkv`` is q, then k, then v; embeddings tied (no lm_head)
MPT = _table(
    "mpt",
    layer_prefix="blocks.{layer}.",
    globals={EMBED: "wte", FINAL_NORM: "norm_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "norm_1",
        O: "attn.out_proj",
        MLP_NORM: "norm_2",
        UP: "ffn.up_proj",
        DOWN: "ffn.down_proj",
    },
    fused={"attn.Wqkv": Fused(roles=(Q, K, V), split="heads")},
)
#: parallel block with one norm (``ln_1``); separate q/k/v without biases
GPTJ = _table(
    "gptj",
    layer_prefix="h.{layer}.",
    globals={EMBED: "wte", FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "ln_1",
        **_qkvo("attn.", "out_proj"),
        UP: "mlp.fc_in",
        DOWN: "mlp.fc_out",
    },
    mlp_shares_attn_norm=True,
    known_unassigned=("attn.bias", "attn.masked_bias"),
)
#: CodeGen (Salesforce): GPT-J's parallel block (one norm, ``ln_1``, read by attention and the
#: ``mlp.fc_in``/``fc_out`` MLP; ``lm_head`` with a bias) whose fused ``attn.qkv_proj`` is cut
#: in the order of the 4 model-parallel shards it was trained on (``mp_num``): its output is
#: ``view(..., 4, 3 * hidden / 4).split(hidden / 4)`` into query, *value*, key, so each shard's
#: rows hold a quarter of the query heads, then the same quarter of the value heads, then of
#: the key heads: the ``shards`` split with 4 shards (the module hard-codes ``mp_num = 4``; the
#: config does not say it) gives q, v and k, the shards' quarters joined in head order as the
#: module's ``reshape`` joins them. ``attn.out_proj`` reads the heads in that order. Older
#: files hold the ``attn.causal_mask`` and ``attn.masked_bias`` buffers.
CODEGEN = _table(
    "codegen",
    layer_prefix="h.{layer}.",
    globals={EMBED: "wte", FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "ln_1", O: "attn.out_proj", UP: "mlp.fc_in", DOWN: "mlp.fc_out"},
    fused={"attn.qkv_proj": Fused(roles=(Q, V, K), split="shards", shards=4)},
    mlp_shares_attn_norm=True,
    known_unassigned=("attn.causal_mask", "attn.masked_bias"),
)
#: Pythia and GPT-NeoX-20B: ``query_key_value`` rows are per head q, k, v
#: (``.view(..., heads, 3 * head_dim).chunk(3)``); the unembedding was ``embed_out`` before
#: transformers v5 called it ``lm_head``. Two norms, read in parallel or in sequence.
GPT_NEOX = _table(
    "gpt_neox",
    prefixes=("", "gpt_neox."),
    layer_prefix="layers.{layer}.",
    globals={EMBED: "embed_in", FINAL_NORM: "final_layer_norm", LM_HEAD: ["embed_out", "lm_head"]},
    layer={
        ATTN_NORM: "input_layernorm",
        O: "attention.dense",
        MLP_NORM: "post_attention_layernorm",
        UP: "mlp.dense_h_to_4h",
        DOWN: "mlp.dense_4h_to_h",
    },
    fused={"attention.query_key_value": Fused(roles=(Q, K, V), split="groups")},
    known_unassigned=("attention.bias", "attention.masked_bias") + ROTARY_BUFFERS,
)
#: GPT-NeoX-Japanese (ABEJA): GPT-NeoX's names under ``gpt_neox_japanese.`` in sequential
#: blocks (``input_layernorm`` before attention, ``post_attention_layernorm`` before the MLP);
#: ``query_key_value`` is q, k, v head by head (``view(..., heads, 3 * head_dim)``), no biases
#: on the projections; the last block adds a bias to its attention output
#: (``attention.dense_bias``), not compared; the head ``embed_out`` is tied to ``embed_in``
GPT_NEOX_JAPANESE = GPT_NEOX.model_copy(update={
    "family": "gpt_neox_japanese", "model_types": ("gpt_neox_japanese",),
    "prefixes": ("", "gpt_neox_japanese."),
    "known_unassigned": GPT_NEOX.known_unassigned + ("attention.dense_bias",),
})
#: Falcon (and its ``RefinedWeb`` remote-code names): ``query_key_value`` is q, k, v per
#: key/value group (new decoder architecture), q then one k and v (``multi_query``) or per
#: head; norms ``input_layernorm`` (+ ``post_attention_layernorm`` when not parallel) or
#: ``ln_attn``/``ln_mlp``; a parallel block with one norm feeds it to the MLP too
FALCON = _table(
    "falcon", "RefinedWeb", "RefinedWebModel",
    layer_prefix="h.{layer}.",
    globals={EMBED: "word_embeddings", FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: ["input_layernorm", "ln_attn"],
        MLP_NORM: ["post_attention_layernorm", "ln_mlp"],
        O: "self_attention.dense",
        UP: "mlp.dense_h_to_4h",
        DOWN: "mlp.dense_4h_to_h",
    },
    fused={"self_attention.query_key_value": Fused(roles=(Q, K, V), split="groups")},
    mlp_shares_attn_norm=True,
)
#: Falcon's names with a norm on the word embeddings; q, k, v per head
BLOOM = _table(
    "bloom",
    layer_prefix="h.{layer}.",
    globals={EMBED: "word_embeddings", EMBED_NORM: "word_embeddings_layernorm",
             FINAL_NORM: "ln_f", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "input_layernorm",
        O: "self_attention.dense",
        MLP_NORM: "post_attention_layernorm",
        UP: "mlp.dense_h_to_4h",
        DOWN: "mlp.dense_4h_to_h",
    },
    fused={"self_attention.query_key_value": Fused(roles=(Q, K, V), split="groups")},
)
#: DBRX (Databricks): ``transformer.blocks.N.``, every block MoE. ``norm_attn_norm.norm_1``
#: before the attention and ``norm_2`` before the experts (LayerNorms without biases); fused
#: ``attn.Wqkv`` q, then k, then v (heads and key/value heads in the config's ``attn_config``);
#: router ``ffn.router.layer``; each expert matrix kept in a 2-D stack of every expert's rows
#: (experts counted by ``ffn_config.moe_num_experts``): ``ffn.experts.mlp.w1`` the gates and
#: ``v1`` the ups, ``[E * I, H]``, and ``w2`` the downs, ``[E * I, H]`` computed as ``x @ W``.
DBRX = _table(
    "dbrx",
    layer_prefix="blocks.{layer}.",
    globals={EMBED: "wte", FINAL_NORM: "norm_f", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "norm_attn_norm.norm_1", MLP_NORM: "norm_attn_norm.norm_2",
           O: "norm_attn_norm.attn.out_proj", ROUTER: "ffn.router.layer"},
    fused={"norm_attn_norm.attn.Wqkv": Fused(roles=(Q, K, V), split="heads")},
    stacked={"ffn.experts.mlp.w1": Stacked(roles=(GATE,), layout="out_in", flat=True),
             "ffn.experts.mlp.v1": Stacked(roles=(UP,), layout="out_in", flat=True),
             "ffn.experts.mlp.w2": Stacked(roles=(DOWN,), layout="in_out", flat=True)},
    known_unassigned=ROTARY_BUFFERS,
)
#: OPT: ``model.decoder.``; ``final_layer_norm`` inside a block is its MLP norm. Checkpoints
#: with ``do_layer_norm_before: false`` are post-norm. ``project_in``/``project_out`` exist only
#: where the embeddings are narrower than the blocks (OPT-350m), which the resolver refuses.
OPT = _table(
    "opt",
    # BLIP-2 and InstructBLIP hold an OPT model as ``language_model``
    prefixes=("", "model.decoder.", "decoder.", "language_model.", "language_model.model.decoder."),
    layer_prefix="layers.{layer}.",
    globals={EMBED: "embed_tokens", POS_EMBED: "embed_positions",
             FINAL_NORM: "final_layer_norm", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "self_attn_layer_norm",
        **_qkvo("self_attn.", "out_proj"),
        MLP_NORM: "final_layer_norm",
        UP: "fc1",
        DOWN: "fc2",
    },
    known_unassigned=("project_in", "project_out"),
)
#: post-LayerNorm encoder: ``attention.output.LayerNorm`` is the attention block's norm and
#: ``output.LayerNorm`` the MLP's. The MLM decoder (tied to the word embeddings) is the
#: ``lm_head``; the pooler, the MLM transform and the NSP head are task heads, left unassigned.
#: RoBERTa, XLM-R and CamemBERT are the same encoder under ``roberta.`` with the MLM head as
#: ``lm_head.dense``/``layer_norm``/``decoder``; ERNIE (its task-type embeddings not
#: compared), Data2Vec-Text and RoFormer (sinusoidal positions) under their own prefixes.
BERT = _table(
    "bert", "roberta", "xlm-roberta", "camembert", "bert-generation", "big_bird", "ernie",
    "data2vec-text", "roformer", "electra", "roc_bert", "xmod",
    post_norm=True,
    prefixes=(*HF_PREFIXES, "roberta.", "ernie.", "data2vec_text.", "roformer.", "electra.",
              "roc_bert."),
    layer_prefix="encoder.layer.{layer}.",
    globals={
        EMBED: "embeddings.word_embeddings",
        POS_EMBED: "embeddings.position_embeddings",
        TYPE_EMBED: "embeddings.token_type_embeddings",
        EMBED_NORM: "embeddings.LayerNorm",
        LM_HEAD: ["cls.predictions.decoder", "lm_head.decoder"],
    },
    layer={
        Q: "attention.self.query",
        K: "attention.self.key",
        V: "attention.self.value",
        O: "attention.output.dense",
        ATTN_NORM: "attention.output.LayerNorm",
        UP: "intermediate.dense",
        DOWN: "output.dense",
        MLP_NORM: "output.LayerNorm",
    },
    known_unassigned=(
        "embeddings.position_ids",
        "embeddings.token_type_ids",
        "pooler.dense",
        "pooler",  # BigBird's pooler is one Linear
        "embeddings.task_type_embeddings",
        "encoder.embed_positions",
        "cls.predictions.bias",
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.seq_relationship",
        "lm_head.dense",
        "lm_head.layer_norm",
        "lm_head.bias",
        # ELECTRA's generator and discriminator heads (the generator's decoder is tied)
        "generator_predictions", "generator_lm_head", "discriminator_predictions",
        # RoCBERT's pronunciation and glyph embeddings, mixed into the token embedding
        "embeddings.pronunciation_embed", "embeddings.shape_embed", "embeddings.map_inputs_layer",
        # X-MOD's per-language adapters after each MLP
        "output.adapter_modules", "output.adapter_layer_norm",
        # a decoder's cross-attention in an encoder-decoder (``add_cross_attention``)
        "crossattention",
    ),
)
#: BERT's names with pre-LayerNorm blocks: a norm before the attention and one before the
#: MLP (RoBERTa-PreLayerNorm: ``attention.LayerNorm`` and ``intermediate.LayerNorm``;
#: XLM-RoBERTa-XL: ``attention.self_attn_layer_norm`` and the block's ``LayerNorm``;
#: Megatron-BERT: ``attention.ln`` and ``ln``), and a final norm after the last block
#: (``roberta_prelayernorm.LayerNorm``, ``encoder.LayerNorm``, ``encoder.ln``)
BERT_PRE_NORM = BERT.model_copy(update={
    "family": "bert-prenorm",
    "model_types": ("bert-prenorm", "roberta-prelayernorm", "xlm-roberta-xl", "megatron-bert"),
    "post_norm": False,
    "prefixes": (*BERT.prefixes, "roberta_prelayernorm."),
    "globals": {**BERT.globals,
                FINAL_NORM: ["LayerNorm", "encoder.LayerNorm", "encoder.ln"]},
    "layer": {**{r: p for r, p in BERT.layer.items() if r not in (ATTN_NORM, MLP_NORM)},
              ATTN_NORM: ["attention.LayerNorm", "attention.self_attn_layer_norm",
                          "attention.ln"],
              MLP_NORM: ["intermediate.LayerNorm", "LayerNorm", "ln"]},
})
#: An encoder-decoder's two stacks, read as one sequence of blocks: the encoder's, then the
#: decoder's. Both read and write one hidden space (their token embeddings are one tied
#: tensor), so one alignment of it serves both. The decoder's cross-attention (queries from the
#: decoder, keys and values from the encoder's output) and its norm are not compared.
#: an encoder-decoder's token embedding, one tied tensor that saves may write under each name
_SHARED_EMBED = ["shared", "decoder.embed_tokens", "encoder.embed_tokens"]
_ENCODER_DECODER: dict[str, object] = {
    "stacks": True,
    "tied": (EMBED,),
}
#: fairseq's transformer in transformers' names (BART and the families built from it):
#: ``model.encoder.layers.N.`` then ``model.decoder.layers.N.``, counted by ``encoder_layers``
#: and ``decoder_layers``. A block: ``self_attn`` q/k/v/``out_proj`` with biases,
#: ``self_attn_layer_norm``, ``fc1`` (up) and ``fc2`` (down), ``final_layer_norm`` (the MLP's
#: norm); a decoder block also holds ``encoder_attn`` and ``encoder_attn_layer_norm``. The
#: token embedding is saved as ``model.shared`` and, by older saves, again as each stack's
#: ``embed_tokens`` (one tied tensor); a decoder saved alone (``BartForCausalLM``,
#: TrOCR) holds only ``decoder.embed_tokens``, FSMT a source vocabulary of its own in
#: ``encoder.embed_tokens`` (not compared) and its head in ``decoder.output_projection``,
#: TrOCR its head as ``output_projection``, Whisper as ``proj_out``. Learned or sinusoidal
#: positions: the decoder's are ``pos_embed``, the encoder's not compared; likewise the
#: encoder's ``layernorm_embedding``. Not compared either: ``final_logits_bias`` (a buffer), the
#: audio front ends of Whisper (``conv1``, ``conv2``) and Speech2Text (``conv``), Pegasus-X's
#: global tokens and their norm, MVP's prompts.
_FAIRSEQ_GLOBALS: dict[str, Paths] = {
    EMBED: _SHARED_EMBED,
    POS_EMBED: "decoder.embed_positions",
    EMBED_NORM: "decoder.layernorm_embedding",
    LM_HEAD: ["lm_head", "decoder.output_projection", "output_projection", "proj_out"],
}
_FAIRSEQ_KNOWN = (
    "final_logits_bias", "encoder_attn", "encoder_attn_layer_norm", "encoder.embed_positions",
    "encoder.layernorm_embedding", "encoder.conv1", "encoder.conv2", "encoder.conv",
    "embed_global", "global_self_attn_layer_norm", "self_attn_prompt", "cross_attn_prompt",
    # LED's projections for the tokens given global attention (started as copies of the
    # local ones when LED is made from BART)
    "longformer_self_attn.query_global", "longformer_self_attn.key_global",
    "longformer_self_attn.value_global",
)
_FAIRSEQ: dict[str, object] = _ENCODER_DECODER | {
    "prefixes": (*HF_PREFIXES, "led."),
    "layer_prefix": ["encoder.layers.{layer}.", "decoder.layers.{layer}."],
    "stack_layers_key": ("encoder_layers", "decoder_layers"),
    "layer": {
        ATTN_NORM: "self_attn_layer_norm",
        # BigBird-Pegasus's encoder attention keeps BigBird's names, LED's Longformer's
        **{role: [f"self_attn.{name}_proj", f"self_attn.self.{long}",
                  f"self_attn.longformer_self_attn.{long}"]
           for role, name, long in ((Q, "q", "query"), (K, "k", "key"), (V, "v", "value"))},
        O: ["self_attn.out_proj", "self_attn.output"],
        MLP_NORM: "final_layer_norm",
        UP: "fc1",
        DOWN: "fc2",
    },
}
#: BART, Marian, PLBART, MVP, BlenderBot-small, FSMT, TrOCR's decoder and LED (BART with
#: Longformer's attention in its encoder, under ``led.``): post-LayerNorm blocks
#: (each norm after its sublayer's residual add; ``layernorm_embedding`` on the embeddings).
BART = _table("bart", "marian", "plbart", "mvp", "blenderbot-small", "fsmt", "trocr", "led",
              post_norm=True, globals=_FAIRSEQ_GLOBALS, known_unassigned=_FAIRSEQ_KNOWN,
              **_FAIRSEQ)
#: mBART, Pegasus, BlenderBot, M2M-100 and NLLB, Whisper, Speech2Text, BigBird-Pegasus and
#: Pegasus-X: pre-LayerNorm blocks, each stack closed by a ``layer_norm`` (the decoder's is the
#: final norm, the encoder's not compared; BigBird-Pegasus calls them ``layernorm_embedding``,
#: read as this table's ``embed_norm``). Only these have the stacks' final norms, so files
#: without a config whose names hold them are read as pre-norm.
MBART = _table("mbart", "pegasus", "blenderbot", "m2m_100", "whisper", "speech_to_text",
               "bigbird_pegasus", "pegasus_x",
               globals=_FAIRSEQ_GLOBALS | {FINAL_NORM: "decoder.layer_norm"},
               known_unassigned=(*_FAIRSEQ_KNOWN, "encoder.layer_norm"), **_FAIRSEQ)
_T5_ATTENTION = ("SelfAttention", "LocalSelfAttention", "TransientGlobalSelfAttention")
#: T5 (and mT5, UMT5, LongT5, Switch Transformers): ``encoder.block.N.`` then
#: ``decoder.block.N.``, counted by ``num_layers`` and ``num_decoder_layers``; pre-RMSNorm
#: sublayers in a ``layer`` list: ``layer.0`` self-attention (``q``/``k``/``v``/``o``, no
#: biases; LongT5's encoder calls it ``LocalSelfAttention`` or ``TransientGlobalSelfAttention``),
#: then in the decoder ``layer.1`` the cross-attention (``EncDecAttention``, not compared),
#: then the MLP (``DenseReluDense``, Switch's ``mlp``: ``wi`` up through ReLU, or ``wi_0``
#: gate and ``wi_1`` up in T5 v1.1 and mT5; ``wo`` down). So ``layer.1.layer_norm`` is the
#: encoder's MLP norm but the decoder's cross-attention norm, and each stack names its MLP
#: norm by its own path. Switch Transformers' sparse blocks hold experts
#: ``mlp.experts.expert_N.wi``/``wo`` and the router ``mlp.router.classifier``. Relative
#: position biases, the encoder's ``final_layer_norm`` and LongT5's global-token norm are not
#: compared, nor UDOP's embeddings of image patches and of the 2-D positions of text cells
#: (its encoder reads a page's text and image together through T5's blocks).
T5 = _table(
    "t5", "mt5", "umt5", "longt5", "switch_transformers", "udop",
    layer_prefix=["encoder.block.{layer}.", "decoder.block.{layer}."],
    stack_layers_key=("num_layers", "num_decoder_layers"),
    **_ENCODER_DECODER,
    globals={EMBED: _SHARED_EMBED,
             FINAL_NORM: "decoder.final_layer_norm", LM_HEAD: "lm_head"},
    layer={
        ATTN_NORM: "layer.0.layer_norm",
        **{role: [f"layer.0.{a}.{name}" for a in _T5_ATTENTION]
           for role, name in ((Q, "q"), (K, "k"), (V, "v"), (O, "o"))},
        MLP_NORM: ["encoder.block.{layer}.layer.1.layer_norm",
                   "decoder.block.{layer}.layer.2.layer_norm"],
        GATE: [f"layer.{i}.DenseReluDense.wi_0" for i in (1, 2)],
        UP: [f"layer.{i}.{m}.{w}" for i in (1, 2) for m in ("DenseReluDense", "mlp")
             for w in ("wi", "wi_1")],
        DOWN: [f"layer.{i}.{m}.wo" for i in (1, 2) for m in ("DenseReluDense", "mlp")],
        ROUTER: [f"layer.{i}.mlp.router.classifier" for i in (1, 2)],
    },
    experts=[f"layer.{i}.mlp.experts.expert_{{expert}}." for i in (1, 2)],
    expert={UP: "wi", DOWN: "wo"},
    known_unassigned=("relative_attention_bias", "global_relative_attention_bias",
                      "global_input_layer_norm", "EncDecAttention", "layer.1.layer_norm",
                      "encoder.final_layer_norm",
                      # UDOP's image patches and the 2-D positions of a page's text cells
                      "patch_embed", "embed_patches", "cell_2d_embedding"),
)
#: T5Gemma: an encoder-decoder whose two stacks both start as a Gemma 2 decoder (Google made it
#: from Gemma 2's weights): ``model.encoder.layers.N.`` then ``model.decoder.layers.N.``,
#: counted in the ``encoder`` and ``decoder`` sub-configs (which also give the heads); Gemma
#: 2's four norms a block (``pre_self_attn_layernorm``, ``post_self_attn_layernorm``,
#: ``pre_feedforward_layernorm``, ``post_feedforward_layernorm``; gains ``1 + w``), Llama's
#: projections; the head ``lm_head.out_proj``. The decoder's cross-attention (``cross_attn``
#: and its ``pre_``/``post_cross_attn_layernorm``) and the encoder's final ``norm`` are not
#: compared.
T5GEMMA = _table(
    "t5gemma",
    layer_prefix=["encoder.layers.{layer}.", "decoder.layers.{layer}."],
    stack_layers_key=("encoder.num_hidden_layers", "decoder.num_hidden_layers"),
    **_ENCODER_DECODER,
    norm_offset=1.0,
    globals={EMBED: ["decoder.embed_tokens", "encoder.embed_tokens"], FINAL_NORM: "decoder.norm",
             LM_HEAD: "lm_head.out_proj"},
    layer={ATTN_NORM: "pre_self_attn_layernorm", POST_ATTN_NORM: "post_self_attn_layernorm",
           MLP_NORM: "pre_feedforward_layernorm", POST_MLP_NORM: "post_feedforward_layernorm",
           **_ATTN, **_MLP},
    known_unassigned=(*ROTARY_BUFFERS, "cross_attn", "pre_cross_attn_layernorm",
                      "post_cross_attn_layernorm", "encoder.norm"),
)
#: T5Gemma 2: the same, from Gemma 3 (per-head ``q_norm``/``k_norm``), its encoder reading
#: images too and its decoder attending to the encoder's output within its self-attention (no
#: cross-attention module); the encoder's block count in its ``text_config``. The encoder's
#: image tower and projector (``encoder.vision_tower``, ``encoder.multi_modal_projector``) and
#: its end-of-image embedding are known, not compared.
T5GEMMA2 = T5GEMMA.model_copy(update={
    "family": "t5gemma2",
    "model_types": ("t5gemma2",),
    "stack_layers_key": ("encoder.text_config.num_hidden_layers", "decoder.num_hidden_layers"),
    "layer": {**T5GEMMA.layer, **_QK_NORM},
    "known_unassigned": (*T5GEMMA.known_unassigned, "encoder.vision_tower",
                         "encoder.multi_modal_projector", "embed_tokens.eoi_embedding"),
})
#: NLLB-MoE: M2M-100's pre-LayerNorm encoder-decoder (``mbart``'s table) whose MLP lives
#: under ``ffn.`` behind ``ff_layer_norm``; every ``encoder_sparse_step``-th /
#: ``decoder_sparse_step``-th block holds experts ``ffn.experts.expert_N.fc1``/``fc2`` and the
#: router ``ffn.router.classifier``; the decoder's cross-attention is ``cross_attention``
#: (not compared).
NLLB_MOE = MBART.model_copy(update={
    "family": "nllb-moe",
    "model_types": ("nllb-moe",),
    "layer": {**MBART.layer, MLP_NORM: "ff_layer_norm", UP: "ffn.fc1", DOWN: "ffn.fc2",
              ROUTER: "ffn.router.classifier"},
    "experts": "ffn.experts.expert_{expert}.",
    "expert": {UP: "fc1", DOWN: "fc2"},
    "known_unassigned": MBART.known_unassigned + ("cross_attention",
                                                  "cross_attention_layer_norm"),
})
#: Pix2Struct's text decoder (MatCha, DePlot), under ``decoder.`` beside its image encoder:
#: T5's pre-RMSNorm blocks under other names, ``layer.N.self_attention.attention.query``/
#: ``key``/``value``/``output`` behind ``self_attention.layer_norm``, the gated MLP
#: ``mlp.DenseReluDense.wi_0`` (gate), ``wi_1`` (up), ``wo`` behind ``mlp.layer_norm``; the
#: cross-attention (``encoder_decoder_attention``) and relative position biases not compared
PIX2STRUCT = _table(
    "pix2struct", "pix2struct_text_model",
    layer_prefix="layer.{layer}.",
    globals={EMBED: "embed_tokens", FINAL_NORM: "final_layer_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "self_attention.layer_norm",
           **{role: f"self_attention.attention.{name}" for role, name in (
               (Q, "query"), (K, "key"), (V, "value"), (O, "output"))},
           MLP_NORM: "mlp.layer_norm", GATE: "mlp.DenseReluDense.wi_0",
           UP: "mlp.DenseReluDense.wi_1", DOWN: "mlp.DenseReluDense.wo"},
    known_unassigned=("encoder_decoder_attention", "relative_attention_bias"),
)
#: GIT (Microsoft's image-to-text model): BERT's post-LayerNorm blocks under ``git.``, run as a
#: causal decoder over the image's tokens and the text's; the head ``output`` with a bias. Its
#: image encoder (``git.image_encoder``) and projection (``git.visual_projection``) are set
#: aside as another modality.
GIT = BERT.model_copy(update={
    "family": "git", "model_types": ("git",), "prefixes": ("", "git."),
    "globals": BERT.globals | {LM_HEAD: "output"}})
#: files: ``block_sparse_moe.gate`` and ``block_sparse_moe.experts.N.w1/w3/w2`` (gate/up/down);
#: transformers v5 in memory: ``mlp.gate`` (PhiMoE: ``mlp.router``) and 3-D
#: ``mlp.experts.gate_up_proj``/``down_proj``
MIXTRAL = _decoder(
    "mixtral",
    "phimoe",  # Phi-3.5-MoE: Mixtral's names, LayerNorm biases
    layer=_NORMS | _ATTN | {ROUTER: ["block_sparse_moe.gate", "mlp.gate", "mlp.router"]},
    experts="block_sparse_moe.experts.{expert}.",
    expert={GATE: "w1", UP: "w3", DOWN: "w2"},
    stacked=_V5_EXPERT_STACKS,
)
#: ``decoder_sparse_step``/``mlp_only_layers`` make some blocks dense (plain ``mlp.gate_proj``);
#: MoE blocks have ``mlp.gate`` (router), experts, one ``shared_expert`` and its sigmoid gate
QWEN2_MOE = _decoder(
    "qwen2_moe",
    "qwen2moe",
    layer=_NORMS | _ATTN | _MLP | {ROUTER: "mlp.gate", SHARED_GATE: "mlp.shared_expert_gate"},
    shared_experts="mlp.shared_expert.",
    **_MLP_EXPERTS,
)
#: OLMoE uses these names too (its q/k norms span all heads)
QWEN3_MOE = _decoder(
    "qwen3_moe",
    "qwen3moe",
    "olmoe",
    "qwen3_vl_moe",  # stored [E, H, 2I] in its files: the stacks' shapes decide
    "qwen3_vl_moe_text",
    "qwen3_omni_moe_thinker",
    "qwen3_omni_moe_text",
    "mellum",  # JetBrains Mellum: optional dense blocks (``mlp_layer_types``)
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {ROUTER: "mlp.gate"},
    **_MLP_EXPERTS,
)
#: MLA attention (``q_proj`` when ``q_lora_rank`` is null, else ``q_a``/``q_b``); the first
#: ``first_k_dense_replace`` blocks are dense; ``mlp.shared_experts`` is one module holding
#: ``n_shared_experts * moe_intermediate_size`` neurons, reported as one shared expert
DEEPSEEK_V2 = _decoder(
    "deepseek_v2",
    # dense MLA models: Youtu-LLM, MiniCPM3 (its embedding and depth scales are config scalars)
    "youtu", "minicpm3",
    # Mistral 4: DeepSeek-V3's MLA blocks and experts, routed by a softmax without V3's
    # score correction (its query's position scale is a config formula, not a weight)
    "mistral4",
    layer=_NORMS | _MLA | _MLP | {ROUTER: "mlp.gate"},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: as V2, plus the router's score-correction buffer; blocks past ``num_hidden_layers`` (the
#: multi-token-prediction module) are left unassigned by the resolver. DeepSeek-V3.2 and
#: ``glm_moe_dsa`` add a lightning indexer (``self_attn.indexer.*``), which selects the
#: tokens attended to and is not compared.
DEEPSEEK_V3 = _decoder(
    "deepseek_v3", "deepseek_v32", "glm_moe_dsa",
    "glm4_moe_lite",  # GLM-4.7-Flash (its MTP block is the one past num_hidden_layers)
    "sarvam_mla",
    layer=_NORMS | _MLA | _MLP | {
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: "mlp.gate.e_score_correction_bias",
    },
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("self_attn.indexer",),
)
#: DeepSeek-V4 in DeepSeek's own names (``embed``, ``head``, ``layers.N.attn.wq_a``,
#: ``ffn.experts.N.w1``; transformers' in-memory names read too): MLA-style low-rank queries
#: (``wq_a``, ``q_norm``, ``wq_b``); its single key/value head (``wkv``), grouped low-rank
#: output (``wo_a``, ``wo_b``), compressors, indexer and hyper-connection mixers (``hc_*``) are
#: not compared. Every block MoE: router ``ffn.gate`` whose ``bias`` is the selection bias
#: (the first blocks route by a fixed token hash, ``tid2eid``), shared experts. The release
#: stores matrices in FP8 beside E8M0 block scales (``X.scale``) and, in V4-Flash, experts in
#: FP4 (two values a byte, an E8M0 exponent per 32): dequantised on load.
_V4_MLP = {GATE: ["w1", "gate_proj"], UP: ["w3", "up_proj"], DOWN: ["w2", "down_proj"]}
DEEPSEEK_V4 = _decoder(
    "deepseek_v4",
    globals={EMBED: ["embed", "embed_tokens"], FINAL_NORM: "norm", LM_HEAD: ["head", "lm_head"]},
    layer={ATTN_NORM: ["attn_norm", "input_layernorm"],
           MLP_NORM: ["ffn_norm", "post_attention_layernorm"],
           Q_A: ["attn.wq_a", "self_attn.q_a_proj"], Q_A_NORM: ["attn.q_norm", "self_attn.q_a_norm"],
           Q_B: ["attn.wq_b", "self_attn.q_b_proj"], ATTN_SINKS: ["attn.attn_sink", "self_attn.sinks"],
           ROUTER: ["ffn.gate", "mlp.gate"],
           ROUTER_CORRECTION: ["ffn.gate.bias", "mlp.gate.e_score_correction_bias"]},
    experts="ffn.experts.{expert}.",
    expert=_V4_MLP,
    stacked=_V5_EXPERT_STACKS,
    shared_experts=["ffn.shared_experts.", "mlp.shared_experts."],
    shared_expert=_V4_MLP,
    optional_roles=(ROUTER_CORRECTION,),  # hash-routed blocks have none
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"{module}.{part}" for module in ("attn", "self_attn")
        for part in ("wkv", "kv_proj", "norm", "kv_norm", "wo_a", "o_a_proj", "wo_b", "o_b_proj",
                     "compressor", "indexer")) + (
        "ffn.gate.tid2eid", "mlp.gate.tid2eid", "hc_attn_fn", "hc_attn_base", "hc_attn_scale",
        "hc_ffn_fn", "hc_ffn_base", "hc_ffn_scale", "attn_hc", "ffn_hc", "hc_head_fn",
        "hc_head_base", "hc_head_scale", "hc_head", "mtp",
        "scale"),  # the release's FP8/FP4 scales (``X.scale`` beside ``X.weight``)
)
#: dots.3 Note's language model (``dots3_note_text``; its multimodal release ``dots3_note``
#: keeps it under ``model.`` beside ``vision_encoder``/``audio_encoder``): DeepSeek-V3's MLA
#: blocks, routing and shared experts, with a sigmoid gate per head on the attention output
#: (``g_proj``, ``[heads, hidden]``: ``attn_gate``). Sliding-window layers have their own
#: head counts and ranks (``per_layer_config``), read from the weights' shapes. The RMSNorm on
#: the shared rotary key (``k_rope_only_layernorm``) and the indexer of the
#: ``indexed_attention`` layers are not compared; the latents' rescaling by
#: ``sqrt(hidden / rank)`` is a constant of the config, not a weight.
DOTS3_NOTE = DEEPSEEK_V3.model_copy(update={
    "family": "dots3_note_text", "model_types": ("dots3_note_text", "dots3_note"),
    "layer": DEEPSEEK_V3.layer | {ATTN_GATE: "self_attn.g_proj"},
    "known_unassigned": DEEPSEEK_V3.known_unassigned + ("self_attn.k_rope_only_layernorm", "mtp"),
})
#: FlexOlmo: OLMo-2's norms on the sublayers' outputs, MoE blocks without a shared expert
FLEX_OLMO = _decoder(
    "flex_olmo",
    layer=_ATTN | _QK_NORM | {
        POST_ATTN_NORM: "post_attention_layernorm",
        POST_MLP_NORM: "post_feedforward_layernorm",
        ROUTER: "mlp.gate",
    },
    **_MLP_EXPERTS,
)
#: MiniMax-M2: Mixtral's expert files (``block_sparse_moe.experts.N.w1/w3/w2``; v5 stacks in
#: memory), q/k norms over all heads, and the router's score correction beside the router
MINIMAX_M2 = _decoder(
    "minimax_m2",
    layer=_NORMS | _ATTN | _QK_NORM | {
        ROUTER: ["block_sparse_moe.gate", "mlp.gate"],
        ROUTER_CORRECTION: ["block_sparse_moe.e_score_correction_bias",
                            "mlp.e_score_correction_bias"]},
    experts="block_sparse_moe.experts.{expert}.",
    expert={GATE: "w1", UP: "w3", DOWN: "w2"},
    stacked=_V5_EXPERT_STACKS,
)
#: MiniMax-M3's language model (in its VLM release under ``language_model.model.``): norms
#: (q/k norms too) compute ``x * (1 + w)``; dense blocks first (``mlp.gate_proj``... in the
#: files, one ``gate_up_proj`` in memory), then Mixtral-named experts (``block_sparse_moe``;
#: v5 stacks in memory) with a score correction and shared experts; its lightning indexer
#: (``index_q_proj``...) chooses the blocks attended to and is not compared
MINIMAX_M3 = _decoder(
    "minimax_m3_vl_text", "minimax_m3_vl",
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {
        ROUTER: ["block_sparse_moe.gate", "mlp.gate"],
        ROUTER_CORRECTION: ["block_sparse_moe.e_score_correction_bias",
                            "mlp.gate.e_score_correction_bias"]},
    fused={"mlp.gate_up_proj": Fused(roles=(GATE, UP), split="halves")},
    experts="block_sparse_moe.experts.{expert}.",
    expert={GATE: "w1", UP: "w3", DOWN: "w2"},
    stacked=_V5_EXPERT_STACKS,
    shared_experts=["block_sparse_moe.shared_experts.", "mlp.shared_experts."],
    # the release's gate_proj and up_proj, one gate_up_proj (gate first) in memory
    shared_expert=_EXPERT_MLP | {UP: ["up_proj", "gate_up_proj"]},
    fused_up_without_gate=True,
    norm_offset=1.0,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"self_attn.{n}" for n in ("index_q_proj", "index_k_proj", "index_q_norm",
                                   "index_k_norm", "indexer")),
)
#: GLM-4.5/4.6: DeepSeek-V3's MoE blocks (first ``first_k_dense_replace`` dense, shared experts,
#: score-correction bias) under standard attention with biases and optional q/k norms
GLM4_MOE = _decoder(
    "glm4_moe",
    "glm4v_moe",
    "glm4v_moe_text",
    "exaone_moe",  # K-EXAONE: the score correction beside the router in its files
    "solar_open",  # Solar Open: every block MoE
    "dots1",  # dots.llm1: per-head q/k norms, dense blocks first
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: ["mlp.gate.e_score_correction_bias", "mlp.e_score_correction_bias"],
    },
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: ERNIE-4.5 MoE: dense blocks before ``moe_layer_start_index``, shared experts, and the
#: router's score correction kept in ``moe_statics``
ERNIE4_5_MOE = _decoder(
    "ernie4_5_moe",
    layer=_NORMS | _ATTN | _MLP | {
        ROUTER: "mlp.gate",
        # transformers v5 moves it under the router in memory
        ROUTER_CORRECTION: ["mlp.moe_statics.e_score_correction_bias",
                            "mlp.gate.moe_statics.e_score_correction_bias"],
    },
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: Granite-MoE files: 3-D ``input_linear`` ``[E, 2*I, H]`` (``.chunk(2)`` of the output: gate
#: first) and ``output_linear`` ``[E, H, I]``; transformers v5 renames them in memory to
#: ``experts.gate_up_proj``/``experts.down_proj`` and the router to ``router``
_GRANITE_ROUTER: dict[str, Paths] = {
    ROUTER: ["block_sparse_moe.router.layer", "block_sparse_moe.router"]}
_GRANITE_EXPERTS = {
    path: Stacked(roles=roles, layout="out_in")
    for paths, roles in ((("input_linear", "experts.gate_up_proj"), (GATE, UP)),
                         (("output_linear", "experts.down_proj"), (DOWN,)))
    for path in (f"block_sparse_moe.{p}" for p in paths)
}
GRANITEMOE = _decoder("granitemoe", layer=_NORMS | _ATTN | _GRANITE_ROUTER,
                      stacked=_GRANITE_EXPERTS)
#: A hybrid's Mamba-2 mixer beside the block's MLP (``mamba.*``): ``in_proj``'s z and x and
#: ``out_proj`` are its channels' gate, input and output, cut as Mamba-2's own
#: (``Fused`` split ``mamba2``) and matched with the block's neurons (``schema.SECOND_ROLES``);
#: its state-space parameters and gated norm are not compared
_MAMBA2_MIXER: dict[str, Paths] = {SECOND_DOWN: "mamba.out_proj"}
_MAMBA2_MIXER_FUSED = {"mamba.in_proj": Fused(roles=(SECOND_GATE, SECOND_UP), split="mamba2")}
_MAMBA2_MIXER_UNREAD = tuple(f"mamba.{n}" for n in ("A_log", "D", "conv1d", "dt_bias", "norm"))
#: Granite 4 (granitemoehybrid) and Granite-MoE with a shared MLP: Granite-MoE's experts beside
#: an always-on ``shared_mlp`` (fused ``input_linear``, gate first; read as the block's dense
#: MLP); Granite 4 mixes tokens with Mamba-2 in most blocks, its channels matched with the
#: block's neurons
GRANITEMOE_HYBRID = _decoder(
    "granitemoehybrid", "granitemoeshared",
    "granitemoe_swa",  # Granite-MoE-SWA: attention sinks, sliding windows
    layer=_NORMS | _ATTN | _GRANITE_ROUTER | _MAMBA2_MIXER | {
        DOWN: "shared_mlp.output_linear", ATTN_SINKS: "self_attn.sinks"},
    fused={"shared_mlp.input_linear": Fused(roles=(GATE, UP), split="halves")}
    | _MAMBA2_MIXER_FUSED,
    stacked=_GRANITE_EXPERTS,
    optional_roles=_ATTENTION_ROLES + SECOND_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + _MAMBA2_MIXER_UNREAD,
)
#: Nemotron-H (``backbone.`` in its files): one mixer per block — Mamba-2, attention, a
#: squared-ReLU MLP (``up``/``down``) or experts with a shared one — behind the block's one
#: norm; embeddings ``embeddings``, final norm ``norm_f``. A Mamba-2 block's inner channels are
#: matched as neurons, as Mamba-2's own (``in_proj``'s z and x as gate and up, ``out_proj`` as
#: down); its state-space parameters are not compared.
NEMOTRON_H = _decoder(
    "nemotron_h",
    prefixes=_BACKBONE_PREFIXES,
    globals={EMBED: "embeddings", FINAL_NORM: "norm_f", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "norm", **_qkvo("mixer."), UP: "mixer.up_proj",
           DOWN: ["mixer.down_proj", "mixer.out_proj"],
           ROUTER: "mixer.gate", ROUTER_CORRECTION: "mixer.gate.e_score_correction_bias"},
    fused={"mixer.in_proj": Fused(roles=(GATE, UP), split="mamba2")},
    experts="mixer.experts.{expert}.",
    expert={UP: "up_proj", DOWN: "down_proj"},
    shared_experts="mixer.shared_experts.",
    stacked={"mixer.experts.up_proj": Stacked(roles=(UP,), layout="out_in"),
             "mixer.experts.down_proj": Stacked(roles=(DOWN,), layout="out_in")},
    mlp_shares_attn_norm=True,
    optional_roles=_ATTENTION_ROLES + (GATE, UP, DOWN),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"mixer.{n}" for n in ("A_log", "D", "conv1d", "dt_bias", "norm")),
)
#: Mamba and Falcon-Mamba (``backbone.`` in their files): each block one Mamba mixer behind
#: ``norm``. Its ``in_proj`` writes, per inner channel, the input ``x`` (first half) and the
#: gate ``z`` (second half); ``out_proj`` reads ``SSM(x) * silu(z)`` back per channel. Inner
#: channels can be permuted as a gated MLP's neurons can (with the convolution, ``x_proj``
#: columns, ``dt_proj``, ``A_log`` and ``D`` rows), so x, z and ``out_proj`` are read as the
#: up, gate and down of the block's "MLP" and its channels are matched as neurons; the state
#: space parameters are not compared.
MAMBA = _table(
    "mamba", "falcon_mamba",
    prefixes=_BACKBONE_PREFIXES,
    layer_prefix="layers.{layer}.",
    globals={EMBED: "embeddings", FINAL_NORM: "norm_f", LM_HEAD: "lm_head"},
    layer={MLP_NORM: "norm", DOWN: "mixer.out_proj"},
    fused={"mixer.in_proj": Fused(roles=(UP, GATE), split="halves")},
    known_unassigned=tuple(f"mixer.{n}" for n in ("A_log", "D", "conv1d", "dt_proj", "x_proj")),
)
#: Mamba-2 (Codestral Mamba): as Mamba, but ``in_proj`` holds the gate ``z``, then ``x`` with
#: the state-space inputs ``B`` and ``C``, then one ``dt`` per head (``Fused`` split ``mamba2``,
#: sized by ``out_proj``, ``conv1d`` and ``A_log``); a gated norm (``mixer.norm``) sits between
#: the state-space output and ``out_proj``. Channels permute within a head and heads with their
#: ``A_log``, ``D`` and ``dt_bias``: matched as neurons, as Mamba's.
MAMBA2 = MAMBA.model_copy(update={
    "family": "mamba2", "model_types": ("mamba2",),
    "fused": {"mixer.in_proj": Fused(roles=(GATE, UP), split="mamba2")},
    "known_unassigned": tuple(f"mixer.{n}" for n in ("A_log", "D", "conv1d", "dt_bias", "norm")),
})
#: Zamba and Zamba2: every block a Mamba block (``mamba.*`` behind ``input_layernorm``; in a
#: hybrid block ``mamba_decoder.mamba.*`` behind ``mamba_decoder.input_layernorm``), its inner
#: channels matched as neurons as Mamba's are. A hybrid block first runs a transformer block
#: whose weights all hybrid blocks share (Zamba2: ``num_mem_blocks`` of them, in turn), then
#: adds its output, through the block's own ``linear`` ``[H, H]``, to the Mamba block's input
#: (not to the residual stream). The files hold a shared block once, at its first use
#: (``shared_transf.*``, ``shared_transformer.*``). It is not compared, at that layer or any:
#: its attention reads the concatenation of the residual stream and the embeddings (``2 H``
#: wide, and so its input norm's gain), and its ``o_proj`` rows, ``pre_ff_layernorm`` and MLP
#: read and write spaces of the shared block's own (``o_proj`` feeds only the MLP, ``down``
#: only each use's ``linear``): they can be permuted while the residual stream stays, so the
#: alignment the probes take from the embeddings does not place them; nor is ``linear``
#: compared, which reads such a space. Zamba2's per-use adapters (LoRA on q/k/v and gate/up,
#: ``*_adapter_list.N``) make each use compute the shared matrix plus its own low-rank term.
_ZAMBA_MIXERS = ("mamba.", "mamba_decoder.mamba.")
_ZAMBA_GLOBALS: dict[str, Paths] = {
    EMBED: "embed_tokens", FINAL_NORM: "final_layernorm", LM_HEAD: "lm_head"}
_ZAMBA_BLOCK: dict[str, Paths] = {
    MLP_NORM: ["input_layernorm", "mamba_decoder.input_layernorm"],
    DOWN: [f"{m}out_proj" for m in _ZAMBA_MIXERS]}
#: Zamba's mixer (multi-head Mamba): ``in_proj`` writes each inner channel's input ``x`` and
#: gate ``z`` side by side (``view(..., -1, 2, L).chunk(2)``: row ``2 i`` is ``x_i``, row
#: ``2 i + 1`` is ``z_i``); the channels of each of ``n_mamba_heads`` heads share that head's
#: ``x_proj_weight``, ``dt_proj_*``, and permute within it (and heads with theirs).
ZAMBA = _decoder(
    "zamba", globals=_ZAMBA_GLOBALS, layer=_ZAMBA_BLOCK,
    fused={f"{m}in_proj": Fused(roles=(UP, GATE), split="interleave") for m in _ZAMBA_MIXERS},
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("shared_transf", "linear") + tuple(
        f"mamba.{n}" for n in ("A_log", "D", "conv1d", "dt_proj_weight", "dt_proj_bias",
                               "x_proj_weight")),
)
#: Zamba2's mixer is Mamba-2's (``in_proj``: ``z``, then ``x`` with ``B`` and ``C``, then one
#: ``dt`` per head; a gated ``norm`` before ``out_proj``), read as Mamba-2's.
ZAMBA2 = _decoder(
    "zamba2", globals=_ZAMBA_GLOBALS, layer=_ZAMBA_BLOCK,
    fused={f"{m}in_proj": Fused(roles=(GATE, UP), split="mamba2") for m in _ZAMBA_MIXERS},
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("shared_transformer", "linear") + tuple(
        f"mamba.{n}" for n in ("A_log", "D", "conv1d", "dt_bias", "norm")),
)
#: RWKV-4 (``rwkv.`` in its files): each block a time mix behind the LayerNorm ``ln1``, then a
#: channel mix behind ``ln2``; block 0 first normalises the embeddings (``blocks.0.pre_ln``,
#: the embedding norm); ``ln_out`` last, the head ``head``. Both mixes read each token's
#: normed state blended, per hidden coordinate, with the previous token's (``time_mix_*``):
#: the norms' gains still scale every input the projections read. The channel mix is a
#: squared-ReLU MLP, ``value @ relu(key @ x) ** 2`` (``feed_forward.key`` up, ``value`` down,
#: no gate inside it), whose output a sigmoid of ``feed_forward.receptance @ x`` multiplies per
#: hidden coordinate: a ``[hidden, hidden]`` gate outside the neurons, not an MLP gate, so it
#: and the blend coefficients are not compared. The time mix is no attention: each of its
#: channels keeps a running average of ``value`` weighted by ``exp(key)`` and a learned decay
#: (``time_decay``, ``time_first``), gated by ``sigmoid(receptance)`` before ``output``; there
#: are no heads and no query, so ``attention.*`` has no q/k/v/o. Its channels permute as
#: neurons do, but a block's one MLP is the channel mix, so the time mix is not compared;
#: ``ln1`` is read as the norm in front of the block's token mixer. (At inference transformers
#: halves ``value`` and ``output`` every ``rescale_every`` blocks in memory: a scale per block,
#: which moves no neuron's direction.)
RWKV = _table(
    "rwkv",
    prefixes=(*HF_PREFIXES, "rwkv."),
    layer_prefix="blocks.{layer}.",
    globals={EMBED: "embeddings", EMBED_NORM: "blocks.0.pre_ln", FINAL_NORM: "ln_out",
             LM_HEAD: "head"},
    layer={ATTN_NORM: "ln1", MLP_NORM: "ln2", UP: "feed_forward.key", DOWN: "feed_forward.value"},
    known_unassigned=("attention", "feed_forward.receptance", "feed_forward.time_mix_key",
                      "feed_forward.time_mix_receptance"),
)
#: xLSTM-7B (NX-AI; ``backbone.`` in its files): each block an mLSTM behind the RMSNorm
#: ``norm_mlstm``, then a SwiGLU FFN behind ``norm_ffn`` (``proj_up_gate`` gate, ``proj_up``
#: up, ``proj_down`` down); ``out_norm`` last, an untied ``lm_head`` (its logit softcap a
#: config scalar). The mLSTM is gated linear attention over heads: head ``h`` reads
#: ``sum_s D[t, s] (q_t . k_s) v_s`` from ``mlstm_layer.q``/``k`` (``qk_dim / heads`` each)
#: and ``v`` (``v_dim / heads``), ``D`` made of the per-head input and forget gates; a
#: LayerNorm per head (``multihead_norm``), then a sigmoid gate on each value channel
#: (``ogate_preact``, the head output's gate), then ``out_proj``. The QK and OV products are
#: bilinear forms over heads as softmax attention's are (Kimi Linear's delta attention is
#: compared the same way), so q/k/v/out_proj are compared as heads; the gates' ``igate_preact``
#: and ``fgate_preact`` (one row per head, with biases) and the per-head norm are not. The
#: table reads the separate projections (``weight_mode: single``, the 7B release's); the fused
#: mode's ``qkv_opreact``/``ifgate_preact``/``proj_up_gate_z`` have no entry here and would be
#: reported unread.
XLSTM = _table(
    "xlstm",
    prefixes=_BACKBONE_PREFIXES,
    layer_prefix="blocks.{layer}.",
    globals={EMBED: "embeddings", FINAL_NORM: "out_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "norm_mlstm", Q: "mlstm_layer.q", K: "mlstm_layer.k", V: "mlstm_layer.v",
           O: "mlstm_layer.out_proj", ATTN_GATE: "mlstm_layer.ogate_preact",
           MLP_NORM: "norm_ffn", GATE: "ffn.proj_up_gate", UP: "ffn.proj_up",
           DOWN: "ffn.proj_down"},
    known_unassigned=tuple(f"mlstm_layer.{n}" for n in ("igate_preact", "fgate_preact",
                                                        "multihead_norm")),
)
#: Jamba, Bamba and Falcon-H1: Mamba mixers beside attention, each block's mixer behind
#: ``input_layernorm`` and its MLP (``feed_forward.*``) behind ``pre_ff_layernorm``, final norm
#: ``final_layernorm``; plain gains. Jamba's blocks hold attention or Mamba, and a dense MLP
#: or experts; Bamba's attention or Mamba-2; Falcon-H1's both side by side, every block (its
#: multipliers are scalars of the config, not weights). The Mamba mixer's channels are matched
#: with the block's MLP neurons (``schema.SECOND_ROLES``): Bamba's and Falcon-H1's Mamba-2 cut
#: as Mamba-2's own; Jamba's Mamba as Mamba's (``in_proj``: x, then z), its ``x_proj``,
#: ``dt_proj`` and the norms on its state-space inputs not compared.
_HYBRID = {
    "globals": {EMBED: "embed_tokens", FINAL_NORM: "final_layernorm", LM_HEAD: "lm_head"},
    "known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS + _MAMBA2_MIXER_UNREAD,
}
_HYBRID_BLOCK: dict[str, Paths] = {
    ATTN_NORM: "input_layernorm", MLP_NORM: "pre_ff_layernorm", **_ATTN, **_MAMBA2_MIXER,
    GATE: "feed_forward.gate_proj", UP: "feed_forward.up_proj", DOWN: "feed_forward.down_proj"}
BAMBA = _decoder("bamba", layer=_HYBRID_BLOCK, fused=_MAMBA2_MIXER_FUSED,
                 optional_roles=_ATTENTION_ROLES + SECOND_ROLES, **_HYBRID)
FALCON_H1 = _decoder("falcon_h1", layer=_HYBRID_BLOCK, fused=_MAMBA2_MIXER_FUSED, **_HYBRID)
JAMBA = _decoder(
    "jamba", layer=_HYBRID_BLOCK | {ROUTER: "feed_forward.router"},
    fused={"mamba.in_proj": Fused(roles=(SECOND_UP, SECOND_GATE), split="halves")},
    experts="feed_forward.experts.{expert}.", expert=_EXPERT_MLP,
    stacked={"feed_forward.experts.gate_up_proj": Stacked(roles=(GATE, UP), layout="out_in"),
             "feed_forward.experts.down_proj": Stacked(roles=(DOWN,), layout="out_in")},
    optional_roles=_ATTENTION_ROLES + SECOND_ROLES,
    **(_HYBRID | {"known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"mamba.{n}" for n in ("A_log", "D", "conv1d", "x_proj", "dt_proj", "dt_layernorm",
                               "b_layernorm", "c_layernorm"))}),
)
#: LFM2: gated short convolutions (``conv.*``, not compared) in most blocks, attention with
#: per-head norms in the rest (``out_proj``, ``q_layernorm``); SwiGLU ``w1`` (gate), ``w3``
#: (up), ``w2`` (down); ``embedding_norm`` is applied after the last block (the final norm).
#: LFM2-MoE: dense blocks first (``num_dense_layers``), then experts (``w1``/``w3``/``w2``)
#: routed by ``feed_forward.gate`` with a selection bias ``expert_bias``.
_LFM2_MLP: dict[str, Paths] = {GATE: "w1", UP: "w3", DOWN: "w2"}
LFM2 = _decoder(
    "lfm2", "lfm2_moe",
    globals={EMBED: "embed_tokens", FINAL_NORM: "embedding_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "operator_norm", MLP_NORM: "ffn_norm", **_qkvo("self_attn.", "out_proj"),
           Q_NORM: "self_attn.q_layernorm", K_NORM: "self_attn.k_layernorm",
           **{role: f"feed_forward.{path}" for role, path in _LFM2_MLP.items()},
           ROUTER: "feed_forward.gate", ROUTER_CORRECTION: "feed_forward.expert_bias"},
    experts="feed_forward.experts.{expert}.", expert=_LFM2_MLP,
    stacked={"feed_forward.experts.gate_up_proj": Stacked(roles=(GATE, UP), layout="out_in"),
             "feed_forward.experts.down_proj": Stacked(roles=(DOWN,), layout="out_in")},
    optional_roles=_ATTENTION_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("conv",),
)
#: LFM3: LFM2's convolution blocks and SwiGLU, a norm on each sublayer's output too
#: (``post_operator_norm``, ``post_ffn_norm``), attention with Llama's names, q/k norms and a
#: sigmoid gate per head (``gate_proj`` ``[heads, H]``)
LFM3 = _decoder(
    "lfm3",
    globals={EMBED: "embed_tokens", FINAL_NORM: "embedding_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "operator_norm", POST_ATTN_NORM: "post_operator_norm",
           MLP_NORM: "ffn_norm", POST_MLP_NORM: "post_ffn_norm"} | _ATTN | _QK_NORM
    | {ATTN_GATE: ["self_attn.gate_proj", "self_attn.g_proj"]}
    | {role: f"feed_forward.{path}" for role, path in _LFM2_MLP.items()},
    optional_roles=_ATTENTION_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("conv",),
)
#: RecurrentGemma (Griffin): blocks mix tokens by an RG-LRU recurrence or by local
#: (sliding-window) attention, in turn (``block_types``), each behind ``temporal_pre_norm``;
#: then a gated MLP with biases (``mlp_block.*``) behind ``channel_pre_norm``. Norms compute
#: ``x * (1 + w)``, as Gemma's. The attention blocks' ``temporal_block.q/k/v/o_proj`` (few
#: key/value heads, ``o_proj`` with a bias) are compared as heads; the recurrent blocks'
#: ``linear_x``/``linear_y``/``linear_out``, short convolution ``conv_1d`` and RG-LRU gates and
#: decay (``rg_lru.*``) are not. The head is tied to the embedding; embedding scale and logit
#: softcap are config scalars.
RECURRENT_GEMMA = _decoder(
    "recurrent_gemma",
    globals={EMBED: "embed_tokens", FINAL_NORM: "final_norm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "temporal_pre_norm", MLP_NORM: "channel_pre_norm",
           **_qkvo("temporal_block."),
           **{role: f"mlp_block.{path}" for role, path in _EXPERT_MLP.items()}},
    norm_offset=1.0,
    optional_roles=_ATTENTION_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"temporal_block.{n}" for n in ("linear_x", "linear_y", "linear_out", "conv_1d",
                                        "rg_lru")),
)
#: Doge (SmallDoge): Llama's names with per-head q/k norms (``self_attn.q_norm``/``k_norm``,
#: before RoPE) and learned per-channel scales on the residual stream (``input_residual``,
#: ``post_attention_residual``: the block adds its sublayer's output to ``scale * residual``;
#: not compared). Its attention is softmax attention over ``q_proj``/``k_proj``/``v_proj``/
#: ``o_proj`` heads (grouped key/value heads), read as heads; its dynamic mask adds to the
#: scores of each key/value head's keys a bias ``exp(A * softplus(dt_proj(values)))`` computed
#: from the values (and past ``keep_window_size`` keys keeps only those with the largest
#: bias), which the QK and OV circuits do not hold: ``self_attn.dt_proj`` and ``self_attn.A``
#: are not compared. With ``is_moe`` (cross-domain MoE) the block's MLP is the always-on shared expert
#: (``mlp.gate_proj``/``up_proj``/``down_proj``, the dense MLP's names), read as the block's
#: MLP, plus product-key retrieval experts: ``mlp.router_gate`` scores two sets of keys whose
#: sums pick the experts (not one logit per expert), and each expert is a single neuron, its
#: input a row of ``mlp.down_embed`` and its output a row of ``mlp.up_embed`` (2-D tables that
#: no expert field cuts): not compared
DOGE = _decoder(
    "doge",
    layer=_NORMS | _ATTN | _QK_NORM | _MLP,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.dt_proj", "self_attn.A", "input_residual", "post_attention_residual",
        "mlp.router_gate", "mlp.down_embed", "mlp.up_embed"),
)
#: CTRL (Salesforce): pre-LayerNorm blocks under ``transformer.h.N.`` (``layernorm1`` before
#: attention, ``layernorm2`` before the ReLU MLP ``ffn.0``/``ffn.2``, the model's ``layernorm``
#: last), ``multi_head_attention.Wq``/``Wk``/``Wv``/``dense`` with biases; embeddings ``w``,
#: scaled by ``sqrt(n_embd)`` (a config constant) and added to sinusoidal positions (no
#: weights); the head ``lm_head`` (with a bias) tied to ``w``
CTRL = _table(
    "ctrl",
    layer_prefix="h.{layer}.",
    globals={EMBED: "w", FINAL_NORM: "layernorm", LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "layernorm1", Q: "multi_head_attention.Wq", K: "multi_head_attention.Wk",
           V: "multi_head_attention.Wv", O: "multi_head_attention.dense",
           MLP_NORM: "layernorm2", UP: "ffn.0", DOWN: "ffn.2"},
)
#: ModernBERT-Decoder (Ettin): ModernBERT's blocks, causal. ``attn.q_proj``/``k_proj``/
#: ``v_proj`` (separate, unlike the encoder's fused ``Wqkv``) and ``attn.Wo`` behind the
#: LayerNorm ``attn_norm``, which the first block does not have (it reads the normed
#: embeddings directly); ``mlp.Wi`` computes ``act(first half) * second half``, so its first
#: half is the gate and its second the up projection (the modeling code calls them ``input``
#: and ``gate``), then ``mlp.Wo``, behind ``mlp_norm``. A LayerNorm on the embeddings
#: (``embeddings.norm``) and ``final_norm`` after the last block; the prediction head
#: ``lm_head.dense`` and ``lm_head.norm`` (dense, activation, LayerNorm) transforms the hidden
#: state before the unembedding ``decoder`` (tied to the embeddings): not compared
MODERNBERT_DECODER = _table(
    "modernbert-decoder",
    layer_prefix="layers.{layer}.",
    globals={EMBED: "embeddings.tok_embeddings", EMBED_NORM: "embeddings.norm",
             FINAL_NORM: "final_norm", LM_HEAD: "decoder"},
    layer={ATTN_NORM: "attn_norm", **_qkvo("attn.", "Wo"), MLP_NORM: "mlp_norm",
           DOWN: "mlp.Wo"},
    fused={"mlp.Wi": Fused(roles=(GATE, UP), split="halves")},
    optional_roles=(ATTN_NORM,),
    known_unassigned=("lm_head.dense", "lm_head.norm"),
)
#: Moshi (Kyutai): the text ("temporal") transformer, which ``MoshiForCausalLM`` holds under
#: ``model.`` and a Moshi release (``MoshiForConditionalGeneration``) under ``decoder.``.
#: Llama's pre-norm blocks (RMSNorm, gains ``w``) with q/k/v/o under ``.linear`` (no biases,
#: grouped key/value heads, RoPE) and a gated MLP whose ``mlp.fc1`` computes ``act(first half)
#: * second half`` (``view(..., 2, -1)``): gate first, then up; ``fc2`` is down. The embedding
#: has one row past the vocabulary (the initial token); the head does not. Not compared, in a
#: release: the audio codebooks' embeddings (``embed_tokens.N``, one per codebook of Moshi's
#: and the user's streams, summed with the text embedding into this transformer's input), the
#: depth decoder (``depth_decoder.*``: a second, narrower transformer that predicts a time
#: step's codebooks one after another from this transformer's output, every projection a stack
#: of one matrix per codebook, with its own embeddings and one head per codebook) and the Mimi
#: codec (``audio_encoder.*``, set aside as another modality)
MOSHI = _table(
    "moshi",
    prefixes=("", "model.", "decoder.", "decoder.model."),
    layer_prefix="layers.{layer}.",
    globals=_DECODER_GLOBALS,
    layer=_NORMS | {role: f"{path}.linear" for role, path in _ATTN.items()}
    | {DOWN: "mlp.fc2"},
    fused={"mlp.fc1": Fused(roles=(GATE, UP), split="halves")},
    known_unassigned=ROTARY_BUFFERS + ("depth_decoder", "embed_tokens"),
)
#: HRM-Text (Sapient): two stacks of Llama-style pre-norm blocks, ``L_module`` and
#: ``H_module``, run in a recurrence (each of ``H_cycles`` rounds runs the L stack
#: ``L_cycles`` times on the sum of both states, then the H stack once); read as one sequence,
#: the L stack's blocks first. Its norms (blocks' and each stack's ``final_norm``) have no
#: weights. The release fuses ``attn.gqkv_proj``: the sigmoid gate on each attention output
#: element, then q, k and v, in four equal parts (transformers' ``Chunk``; multi-head, no
#: grouping), and ``mlp.gate_up_proj``, gate first. ``num_hidden_layers`` counts a cache slot
#: per block run; ``num_layers_per_stack`` counts a stack's blocks. The L stack's start state
#: ``z_L_init`` (zeros, never trained) and the embedding scale (a config constant) are not
#: compared. The names transformers gives the parts in memory (``self_attn.gate_proj``/
#: ``q_proj``/..., ``mlp.gate_proj``/``up_proj``) are read too.
HRM_TEXT = _table(
    "hrm_text",
    layer_prefix=["L_module.layers.{layer}.", "H_module.layers.{layer}."],
    stacks=True,
    stack_layers_key="num_layers_per_stack",
    globals={EMBED: "embed_tokens", LM_HEAD: "lm_head"},
    layer={O: ["attn.o_proj", "self_attn.o_proj"], DOWN: "mlp.down_proj",
           ATTN_GATE: "self_attn.gate_proj", Q: "self_attn.q_proj", K: "self_attn.k_proj",
           V: "self_attn.v_proj", GATE: "mlp.gate_proj", UP: "mlp.up_proj"},
    fused={"attn.gqkv_proj": Fused(roles=(ATTN_GATE, Q, K, V), split="halves"),
           "mlp.gate_up_proj": Fused(roles=(GATE, UP), split="halves")},
    known_unassigned=ROTARY_BUFFERS + ("z_L_init",),
)
#: XLM (Facebook's cross-lingual LM, ``XLMWithLMHeadModel``): BERT's post-LayerNorm blocks,
#: each kind of sublayer kept in a list of its own under ``transformer.``: ``attentions.N``
#: (``q_lin``/``k_lin``/``v_lin``/``out_lin`` with biases), ``layer_norm1.N`` after the
#: attention's residual add, ``ffns.N`` (``lin1``/``lin2`` with biases, GELU or ReLU),
#: ``layer_norm2.N`` after the MLP's. Learned positions (``position_embeddings``), a LayerNorm
#: on the embeddings' sum (``layer_norm_emb``); the head ``pred_layer.proj`` is tied to the
#: embeddings with a bias of its own (with ``asm`` it is an adaptive softmax: not compared).
#: The language embeddings (``lang_embeddings``, added per token's language) are not compared.
XLM = _table(
    "xlm",
    post_norm=True,
    prefixes=("", "transformer."),
    layer_prefix=["attentions.{layer}.", "ffns.{layer}."],
    globals={EMBED: "embeddings", POS_EMBED: "position_embeddings",
             EMBED_NORM: "layer_norm_emb", LM_HEAD: "pred_layer.proj"},
    layer={Q: "q_lin", K: "k_lin", V: "v_lin", O: "out_lin",
           ATTN_NORM: "layer_norm1.{layer}", UP: "lin1", DOWN: "lin2",
           MLP_NORM: "layer_norm2.{layer}"},
    known_unassigned=("lang_embeddings", "position_ids", "pred_layer.proj.head",
                      "pred_layer.proj.tail"),
)
#: Dory (NVIDIA's looped nGPT): every hidden state on the unit sphere, its norms parameterless L2
#: projections (no gains), each block's update an interpolation at learned per-channel rates
#: (``lambda_1``/``lambda_2``; the release's ``attn_alpha``/``mlp_alpha``), not compared.
#: Attention: q/k/v/o and an element gate on its output (``self_attn.gate_proj``, the release's
#: ``g_proj``: ``attn_gate``); its query and gate scales (``sqk``, ``s_gate``) are not compared.
#: MLP: gate/up/down; its per-neuron scales (``suv_gate``, ``suv_up``), which neuron matching's
#: balancing removes anyway, are not read; nor is the head's per-token ``logit_scale``. The
#: recurrent section runs ``n_recurrent_loops`` times over weights the files hold once: each
#: block is read once, in stored order. The release (``backbone.``, ``embeddings``) stores each
#: block as an attention block ``layers.2i.mixer.*`` and an MLP block ``layers.2i+1.mixer.*``:
#: read as stored, one mixer per layer (as Nemotron-H's). transformers saves both in one block
#: (``self_attn.*`` with ``g_proj``, and ``mlp.*``) under ``backbone.``, while the config it
#: writes still counts the release's blocks: read too, the blocks counted from the files.
DORY = _table(
    "dory",
    prefixes=_BACKBONE_PREFIXES,
    layer_prefix="layers.{layer}.",
    globals={EMBED: ["embed_tokens", "embeddings"], LM_HEAD: "lm_head"},
    layer={Q: ["self_attn.q_proj", "mixer.q_proj"], K: ["self_attn.k_proj", "mixer.k_proj"],
           V: ["self_attn.v_proj", "mixer.v_proj"], O: ["self_attn.o_proj", "mixer.o_proj"],
           ATTN_GATE: ["self_attn.gate_proj", "self_attn.g_proj", "mixer.g_proj"],
           GATE: ["mlp.gate_proj", "mixer.gate_proj"], UP: ["mlp.up_proj", "mixer.up_proj"],
           DOWN: ["mlp.down_proj", "mixer.down_proj"]},
    optional_roles=_ATTENTION_ROLES + (GATE, UP, DOWN),
    config_counts_layers=False,
    known_unassigned=ROTARY_BUFFERS + ("sqk", "s_gate", "suv_gate", "suv_up", "lambda_1",
                                       "lambda_2", "attn_alpha", "mlp_alpha", "logit_scale"),
)
#: CPM-Ant (OpenBMB; ``cpmant.`` in its files): pre-norm blocks under ``encoder.layers.N.``,
#: RMSNorm gains without biases in front of the attention
#: (``self_att.layernorm_before_attention``) and the MLP (``ffn.layernorm_before_ffn``),
#: ``project_q``/``k``/``v`` and ``attention_out``, a gated MLP whose ``w_in.w_0`` goes through
#: the activation (the gate) and multiplies ``w_in.w_1`` (up) before ``w_out`` (down);
#: ``encoder.output_layernorm`` last, an untied ``lm_head``. The input embedding holds the
#: vocabulary's rows, then the prompt tokens'; the segment embeddings and the relative
#: position bias are not compared.
CPMANT = _table(
    "cpmant",
    prefixes=(*HF_PREFIXES, "cpmant."),
    layer_prefix="encoder.layers.{layer}.",
    globals={EMBED: "input_embedding", FINAL_NORM: "encoder.output_layernorm",
             LM_HEAD: "lm_head"},
    layer={ATTN_NORM: "self_att.layernorm_before_attention",
           Q: "self_att.self_attention.project_q", K: "self_att.self_attention.project_k",
           V: "self_att.self_attention.project_v", O: "self_att.self_attention.attention_out",
           MLP_NORM: "ffn.layernorm_before_ffn", GATE: "ffn.ffn.w_in.w_0",
           UP: "ffn.ffn.w_in.w_1", DOWN: "ffn.ffn.w_out"},
    known_unassigned=("segment_embedding", "position_bias"),
)
#: Llama4TextExperts computes ``x @ W``: ``gate_up_proj`` ``[E, H, 2*I]`` (``.chunk(2, -1)``,
#: gate first) and ``down_proj`` ``[E, I, H]``; dense blocks use ``feed_forward.*_proj``
LLAMA4 = _decoder(
    "llama4",
    "llama4_text",
    layer=_NORMS | _ATTN | {
        GATE: "feed_forward.gate_proj",
        UP: "feed_forward.up_proj",
        DOWN: "feed_forward.down_proj",
        ROUTER: "feed_forward.router",
    },
    shared_experts="feed_forward.shared_expert.",
    shared_expert=_EXPERT_MLP,
    stacked={
        "feed_forward.experts.gate_up_proj": Stacked(roles=(GATE, UP), layout="in_out"),
        "feed_forward.experts.down_proj": Stacked(roles=(DOWN,), layout="in_out"),
    },
)
#: Arcee Trinity (AFMoE): four norms per block (``post_attention_layernorm`` is on the
#: attention *output*; ``pre_mlp_layernorm`` feeds the MLP), q/k norms and a sigmoid gate on
#: each attention output element (``gate_proj``); dense blocks first, then experts routed by
#: ``router.gate`` with a selection bias ``expert_bias``, beside shared experts
AFMOE = _decoder(
    "afmoe",
    layer={ATTN_NORM: "input_layernorm", POST_ATTN_NORM: "post_attention_layernorm",
           MLP_NORM: "pre_mlp_layernorm", POST_MLP_NORM: "post_mlp_layernorm"}
    | _ATTN | _QK_NORM | {ATTN_GATE: "self_attn.gate_proj"} | _MLP
    | {ROUTER: "mlp.router.gate", ROUTER_CORRECTION: "mlp.expert_bias"},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: Aria's language model: every block MoE; experts are stacks computed as ``x @ W``
#: (``fc1`` ``[E, H, 2*I]``, gate the first half of the columns; ``fc2`` ``[E, I, H]``; v5 names
#: them ``gate_up_proj``/``down_proj`` in memory), router ``mlp.router``, shared experts
_ARIA_FC1 = Stacked(roles=(GATE, UP), split="halves", layout="in_out")
_ARIA_FC2 = Stacked(roles=(DOWN,), layout="in_out")
ARIA = _decoder(
    "aria_text", "aria",
    layer=_NORMS | _ATTN | {ROUTER: "mlp.router"},
    shared_experts="mlp.shared_experts.",
    shared_expert=_EXPERT_MLP,
    stacked={"mlp.experts.fc1": _ARIA_FC1, "mlp.experts.gate_up_proj": _ARIA_FC1,
             "mlp.experts.fc2": _ARIA_FC2, "mlp.experts.down_proj": _ARIA_FC2},
)
#: Command A MoE: Cohere's parallel block (one mean-centred norm feeds attention and MLP) with
#: dense blocks first (``mlp_layer_types``), then experts and shared experts
COHERE2_MOE = _decoder(
    "cohere2_moe",
    layer={ATTN_NORM: "input_layernorm"} | _ATTN | _QK_NORM | _MLP | {ROUTER: "mlp.gate"},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
    mlp_shares_attn_norm=True,
)
#: Bailing-MoE names (Param2-MoE, Sarvam-MoE files): ``word_embeddings``, q, k and v one after
#: another in ``attention.query_key_value``, ``attention.dense``, ``query_layernorm``/
#: ``key_layernorm``, the router's selection bias ``gate.expert_bias``; dense blocks first.
#: The names transformers gives them in memory (GLM-4-MoE's) are read too.
BAILING_MOE = _decoder(
    "param2moe", "sarvam_moe",
    globals={EMBED: ["word_embeddings", "embed_tokens"], FINAL_NORM: "norm", LM_HEAD: "lm_head"},
    layer=_NORMS | _ATTN | {O: ["attention.dense", "self_attn.o_proj"],
                            Q_NORM: ["attention.query_layernorm", "self_attn.q_norm"],
                            K_NORM: ["attention.key_layernorm", "self_attn.k_norm"]} | _MLP | {
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: ["mlp.gate.expert_bias", "mlp.gate.e_score_correction_bias"]},
    fused={"attention.query_key_value": Fused(roles=(Q, K, V), split="heads")},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: Ling's hybrid (bailing_hybrid): Kimi Delta Attention in most blocks, MLA with low-rank
#: queries in the rest (``layer_types``), both under ``attention.`` in its files (``self_attn.``
#: in memory, the output ``dense`` as ``o_proj``). A KDA block's ``q_proj``/``k_proj``/
#: ``v_proj`` and output are compared as heads, as Kimi Linear's; its forget gate (``f_proj``,
#: ``A_log``, ``dt_bias``), ``b_proj``, short convolutions and output norm ``o_norm`` are not.
#: ``g_proj`` gates each head's output (per element through the KDA output norm, one scalar
#: per head after MLA): ``attn_gate``. Bailing-MoE's router with its selection bias
#: (``gate.expert_bias``), shared experts, dense blocks first.
_LING_KDA_PARTS = ("A_log", "dt_bias", "f_proj", "b_proj", "q_conv1d", "k_conv1d", "v_conv1d",
                   "conv1d", "o_norm", "forget_gate")
BAILING_HYBRID = _decoder(
    "bailing_hybrid",
    globals={EMBED: ["word_embeddings", "embed_tokens"], FINAL_NORM: "norm", LM_HEAD: "lm_head"},
    layer=_NORMS | {role: [path.replace("self_attn.", "attention."), path]
                    for role, path in (_ATTN | _MLA | {ATTN_GATE: "self_attn.g_proj"}).items()}
    | {O: ["attention.dense", "self_attn.o_proj"]} | _MLP | {
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: ["mlp.gate.expert_bias", "mlp.gate.e_score_correction_bias"]},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
    optional_roles=(Q, K, V, Q_A, Q_A_NORM, Q_B, KV_A, KV_A_NORM, KV_B),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"{module}.{n}" for module in ("attention", "self_attn") for n in _LING_KDA_PARTS),
)
#: MiniCPM5-MoE: ``q_proj`` holds per head the query then its sigmoid output gate (``q_gate_proj``
#: in memory); DeepSeek-V3's routing (score correction), shared experts, dense blocks first
_Q_AND_GATE = Fused(roles=(Q, ATTN_GATE), split="per_head")
MINICPM5_MOE = _decoder(
    "minicpm5_moe",
    layer=_NORMS | {K: "self_attn.k_proj", V: "self_attn.v_proj", O: "self_attn.o_proj"} | _MLP
    | {ROUTER: "mlp.gate", ROUTER_CORRECTION: "mlp.gate.e_score_correction_bias"},
    fused={"self_attn.q_proj": _Q_AND_GATE, "self_attn.q_gate_proj": _Q_AND_GATE},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: Hy3 (Tencent): q/k norms, dense blocks first, then experts routed by ``router.gate`` with a
#: selection bias ``expert_bias`` beside an always-on ``shared_mlp`` (transformers' in-memory
#: names listed too); the block past ``num_hidden_layers`` is multi-token prediction
HY_V3 = _decoder(
    "hy_v3",
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {
        ROUTER: ["mlp.router.gate", "mlp.gate"],
        ROUTER_CORRECTION: ["mlp.expert_bias", "mlp.e_score_correction_bias"]},
    shared_experts=["mlp.shared_mlp.", "mlp.shared_experts."],
    **_MLP_EXPERTS,
)
#: Hunyuan (Tencent; dense and Hunyuan-A13B MoE): q/k norms per head named
#: ``query_layernorm``/``key_layernorm``; MoE blocks route by ``mlp.gate.wg`` beside an
#: always-on ``shared_mlp``
HUNYUAN = _decoder(
    "hunyuan_v1_dense", "hunyuan_v1_moe",
    layer=_NORMS | _ATTN | {Q_NORM: "self_attn.query_layernorm",
                            K_NORM: "self_attn.key_layernorm"} | _MLP | {ROUTER: "mlp.gate.wg"},
    shared_experts="mlp.shared_mlp.",
    **_MLP_EXPERTS,
)
#: A.X K1 (SK Telecom): DeepSeek-V3's blocks, and on MoE blocks a norm on the summed routed and
#: shared experts' output (``post_mlp_layernorm``; ``mlp.post_mlp_layernorm`` in memory)
AXK1 = DEEPSEEK_V3.model_copy(update={
    "family": "axk1", "model_types": ("axk1",),
    "layer": DEEPSEEK_V3.layer | {POST_MLP_NORM: ["post_mlp_layernorm", "mlp.post_mlp_layernorm"]},
    "optional_roles": (POST_MLP_NORM,),
})
#: A.X K2 (SK Telecom): DeepSeek-V3.2's MLA blocks, routing and lightning indexer (not compared),
#: with gated norms and a gated query. ``input_layernorm`` (and ``post_attention_layernorm`` on
#: MoE blocks) is an RMSNorm whose gain ``norm.weight`` is read as the norm, followed by a
#: sigmoid gate on each channel from a rank-``gated_norm_rank`` MLP of the normed state
#: (``W_down``/``W_up``; ``mlp.fc1``/``fc2`` in memory): not compared. ``q_b_proj``
#: (``q_gate_proj`` in memory) writes per head the query (``qk_nope_head_dim +
#: qk_rope_head_dim`` rows), then a sigmoid gate on the head's output (``v_head_dim`` rows), cut
#: apart per head into ``q_b`` and ``attn_gate``. Both read the normed and the raw query latent
#: side by side (``2 * q_lora_rank`` inputs), so the query is not ``q_b`` times ``q_a`` as in
#: DeepSeek's attention, and head matching, which composes them so, leaves these layers out
#: (``q_b``'s inputs are not ``q_a``'s rows).
_AXK2_QUERY = Fused(roles=(Q_B, ATTN_GATE), split="per_head",
                    head_parts=(("qk_nope_head_dim", "qk_rope_head_dim"), ("v_head_dim",)))
AXK2 = _decoder(
    "axk2",
    layer={ATTN_NORM: "input_layernorm.norm",
           MLP_NORM: ["post_attention_layernorm", "post_attention_layernorm.norm"]}
    | {role: path for role, path in _MLA.items() if role not in (Q, Q_B)} | _MLP | {
        ROUTER: "mlp.gate", ROUTER_CORRECTION: "mlp.gate.e_score_correction_bias"},
    fused={"self_attn.q_b_proj": _AXK2_QUERY, "self_attn.q_gate_proj": _AXK2_QUERY},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.indexer",
        "input_layernorm.W_down", "input_layernorm.W_up", "input_layernorm.mlp",
        "post_attention_layernorm.W_down", "post_attention_layernorm.W_up",
        "post_attention_layernorm.mlp"),
)
#: HY-V4 (Tencent Hy4): GLM-MoE-DSA's MLA blocks (DeepSeek-V3.2's; the lightning indexer of
#: ``full`` layers not compared) with a sigmoid gate on each head's output computed from the
#: hidden state (``self_attn.linear_gate``; ``gate_proj`` in memory) and an attention-sink logit
#: per head (``learnable_sink_param``; ``sinks``). DeepSeek-V4-style hyper-connections mix
#: ``hc_mult`` residual streams around each sublayer and before the final norm (``hc_pre.*``;
#: ``attn_hc``, ``ffn_hc``, ``hc_head`` in memory): not compared. Dense blocks first
#: (``mlp_layer_types``), then 3-D expert stacks (gate first) routed with a selection bias, beside
#: shared experts; ``mtp_layers`` (multi-token prediction) not compared. Saving runs the
#: attention gate's rename backwards over every ``gate_proj``, so the MLPs' gates may be stored
#: as ``linear_gate`` too: both spellings are read.
_HY_V4_GATE: dict[str, Paths] = {GATE: ["gate_proj", "linear_gate"], UP: "up_proj",
                                 DOWN: "down_proj"}
HY_V4 = _decoder(
    "hy_v4", "hy_v4_vl", "hy_v4_vl_text",  # HY-V4-VL's language model is HY-V4's
    layer=_NORMS | {role: path for role, path in _MLA.items() if role != Q} | {
        ATTN_GATE: ["self_attn.linear_gate", "self_attn.gate_proj"],
        ATTN_SINKS: ["self_attn.learnable_sink_param", "self_attn.sinks"],
        GATE: ["mlp.gate_proj", "mlp.linear_gate"], UP: "mlp.up_proj", DOWN: "mlp.down_proj",
        ROUTER: "mlp.gate", ROUTER_CORRECTION: "mlp.gate.e_score_correction_bias"},
    shared_experts="mlp.shared_experts.",
    shared_expert=_HY_V4_GATE,
    **_MLP_EXPERTS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.indexer", "hc_pre", "attn_hc", "ffn_hc", "hc_head", "mtp_layers"),
)
#: Flint: q/k norms and attention sinks (``softmax_offset``; ``sinks`` in memory); dense blocks
#: (``mlp_only_layers``), then experts beside one shared expert added without a gate
FLINT = _decoder(
    "flint",
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {
        ROUTER: "mlp.gate", ATTN_SINKS: ["self_attn.softmax_offset", "self_attn.sinks"]},
    shared_experts="mlp.shared_expert.",
    **_MLP_EXPERTS,
)
#: Lara-4-Mini: Gated DeltaNet blocks (``linear_attn.*``, not compared) between attention
#: blocks with q/k norms; every block MoE, with one ungated shared expert
LARA_MINI = _decoder(
    "lara_mini",
    layer=_NORMS | _ATTN | _QK_NORM | {ROUTER: "mlp.gate"},
    shared_experts="mlp.shared_expert.",
    **_MLP_EXPERTS,
    optional_roles=_ATTENTION_ROLES,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("linear_attn",),
)
#: MiMo-V2-Flash: GLM-4-MoE's blocks; its sliding-window layers have twice the KV heads and
#: attention sinks (``attention_sink_bias``), values narrower than queries (``v_head_dim``)
MIMO_V2 = _decoder(
    "mimo_v2_flash",
    layer=GLM4_MOE.layer | {ATTN_SINKS: ["self_attn.attention_sink_bias", "self_attn.sinks"]},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
    optional_roles=(ATTN_SINKS,),
)
#: Inkling (Thinking Machines; ``inkling_text``, and the language model of its multimodal
#: ``inkling_mm_model``, whose release names it ``model.llm.``: ``embed``, ``embed_norm``,
#: ``unembed``, ``attn.wq_du``/``wk_dv``/``wv_dv``/``wo_ud``, ``attn_norm``/``mlp_norm``, gate
#: and up *interleaved* in ``mlp.w13_dn`` and ``mlp.experts.w13_weight`` ``[E, 2I, H]``, the
#: selection bias as ``mlp.gate.bias``; transformers' names read too). An RMSNorm on the
#: embeddings (``embed_tokens.embed_norm``: ``embed_norm``); attention with q/k norms per head,
#: its sliding-window layers with their own head counts (``swa_num_attention_heads``, KV heads,
#: head size). Not compared: the short causal convolutions that add to the keys and values
#: (``k_sconv``, ``v_sconv``) and to the attention and MLP outputs (``attn_sconv``,
#: ``mlp_sconv``), the relative-position bias (``r_proj``, ``rel_logits_proj``), the learned
#: scalars (``global_scale``), and the shared experts, stored as 3-D stacks (``[S, I, H]``;
#: ``shared_w13_weight`` in the release) that no table field cuts into shared experts. The
#: router ``mlp.gate`` has a row for each routed expert, then one for each shared expert.
_INKLING_ATTN = {role: [f"self_attn.{a}", f"attn.{b}"] for role, a, b in (
    (Q, "q_proj", "wq_du"), (K, "k_proj", "wk_dv"), (V, "v_proj", "wv_dv"), (O, "o_proj", "wo_ud"),
    (Q_NORM, "q_norm", "q_norm"), (K_NORM, "k_norm", "k_norm"))}
INKLING = _decoder(
    "inkling_text", "inkling_mm_model",
    prefixes=(*HF_PREFIXES, "model.llm."),
    globals={EMBED: ["embed_tokens", "embed"],
             EMBED_NORM: ["embed_tokens.embed_norm", "embed_norm"],
             FINAL_NORM: "norm", LM_HEAD: ["lm_head", "unembed"]},
    layer={ATTN_NORM: ["input_layernorm", "attn_norm"],
           MLP_NORM: ["post_attention_layernorm", "mlp_norm"]} | _INKLING_ATTN
    | {GATE: "mlp.gate_proj", UP: "mlp.up_proj", DOWN: ["mlp.down_proj", "mlp.w2_md"],
       ROUTER: "mlp.gate",
       ROUTER_CORRECTION: ["mlp.gate.e_score_correction_bias", "mlp.gate.bias"]},
    fused={"mlp.w13_dn": Fused(roles=(GATE, UP), split="interleave")},
    stacked=_V5_EXPERT_STACKS | {
        "mlp.experts.w13_weight": Stacked(roles=(GATE, UP), split="interleave", layout="out_in"),
        "mlp.experts.w2_weight": Stacked(roles=(DOWN,), layout="out_in")},
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "k_sconv", "v_sconv", "attn_sconv", "mlp_sconv", "self_attn.r_proj", "attn.wr_du",
        "rel_logits_proj", "global_scale", "mlp.shared_experts", "mtp"),
)
#: Inkling 2 (``inkling2_text``, and the language model of the multimodal ``inkling2``, whose
#: release names it ``model.llm.`` as Inkling's does) and its loop variant (``inkling2_loop_text``,
#: ``inkling2_loop``). Not Inkling's blocks: every block is MoE with no shared expert, and no
#: block reads the residual stream itself; each sublayer's input is an attention over the
#: earlier blocks' sums (``attention_input``/``mlp_input``/``final_input``, the release's
#: ``attn_res.*`` queries: not compared). Read: the embedding and its norm, the final norm and
#: ``lm_head``/``unembed`` (its rows padded past ``unpadded_vocab_size`` in the release); q, k, v
#: and o (``self_attn.q_proj.linear``..., ``attn.wq_du``...); the sigmoid gate on the attention
#: output, one per element, from the sublayer's input (``o_proj.gate_proj``, ``gate_attn``);
#: ``post_attention_layernorm``/``mlp_norm``, the gain in front of the experts; the router and
#: its selection bias; the experts, gate first in transformers' ``gate_up_proj``, interleaved in
#: the release's ``w13_weight`` (the activation softcaps gate and up: the weights are still
#: theirs). The sliding-window layers' one input norm (``input_layernorm``/``attn_norm``) feeds
#: q, k and v alike and is read; a full-attention layer gives q, k and v three inputs and three
#: norms (``q_input_layernorm``/``q_input_norm``, k, v), which the one attention norm role cannot
#: hold, so its attention has no norm read. Not compared: the learned per-head, per-dimension
#: scale on the queries before an L2 clip (``q_proj.norm.scale``, ``q_l2_clip.scale``,
#: ``[heads, head_dim]``: a scale, not a norm over the head), the short convolutions on keys,
#: values (dynamic in full layers: ``static_weight``, ``weight_proj``) and both sublayers'
#: outputs (``post_attention_convolution``, ``attn_sconv``...), the relative-position bias
#: (``relative_position_bias.*``; ``wr_du``, ``rel_l2_clip``, ``rel_logits_proj``), and the
#: per-token sink logits, a projection of the input (``sink_proj``, ``attn_sink_proj``), not one
#: learned logit per head. The loop variant runs the blocks ``loop_layer_index_start`` to
#: ``loop_layer_index_end - 1`` ``loop_num_passes`` times over the same weights, each pass after
#: the first mixing in messages from the one before; each block is stored once and is read as one
#: layer, in stored order (the repeats are runs, not layers). Its message gates
#: (``q/k/v/mlp_message_gate``, the release's ``controllers.*``) and message queries
#: (``message_input``, ``middle_cycle_cross_pass_*queries``) are not compared.
INKLING2 = _decoder(
    "inkling2_text", "inkling2", "inkling2_loop_text", "inkling2_loop",
    prefixes=(*HF_PREFIXES, "model.llm."),
    globals=INKLING.globals,
    layer={ATTN_NORM: ["input_layernorm", "attn_norm"],
           MLP_NORM: ["post_attention_layernorm", "mlp_norm"]}
    | {role: [f"self_attn.{a}", f"attn.{b}"] for role, a, b in (
        (Q, "q_proj.linear", "wq_du"), (K, "k_proj.linear", "wk_dv"),
        (V, "v_proj.linear", "wv_dv"), (O, "o_proj.linear", "wo_ud"),
        (ATTN_GATE, "o_proj.gate_proj", "gate_attn"))}
    | {ROUTER: "mlp.gate",
       ROUTER_CORRECTION: ["mlp.gate.e_score_correction_bias", "mlp.gate.bias"]},
    stacked=_V5_EXPERT_STACKS | {
        "mlp.experts.w13_weight": Stacked(roles=(GATE, UP), split="interleave", layout="out_in"),
        "mlp.experts.w2_weight": Stacked(roles=(DOWN,), layout="out_in")},
    optional_roles=(ATTN_NORM,),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "attention_input", "mlp_input", "final_input", "attn_res", "q_input_layernorm",
        "k_input_layernorm", "v_input_layernorm", "q_input_norm", "k_input_norm", "v_input_norm",
        "q_proj.norm", "q_l2_clip", "k_proj.sconv", "v_proj.sconv", "k_sconv", "v_sconv",
        "post_attention_convolution", "post_mlp_convolution", "attn_sconv", "mlp_sconv",
        "relative_position_bias", "wr_du", "rel_l2_clip", "rel_logits_proj", "sink_proj",
        "attn_sink_proj", "q_message_gate", "k_message_gate", "v_message_gate",
        "mlp_message_gate", "controllers", "message_input", "middle_cycle_cross_pass_queries",
        "middle_cycle_cross_pass_kv_queries"),
)
#: Laguna (poolside): query heads set per layer (``num_attention_heads_per_layer``), q/k norms,
#: a softplus gate on each head's output (``g_proj``: per head, or per element), experts with
#: a selection bias stored beside them and one shared expert
LAGUNA = _decoder(
    "laguna",
    layer=_NORMS | _ATTN | _QK_NORM | {ATTN_GATE: "self_attn.g_proj"} | _MLP | {
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: ["mlp.experts.e_score_correction_bias",
                            "mlp.gate.e_score_correction_bias"]},
    shared_experts=["mlp.shared_expert.", "mlp.shared_experts."],
    **_MLP_EXPERTS,
)
#: Kimi Linear: Kimi Delta Attention in most blocks, MLA (``q_proj``, ``kv_a_proj_with_mqa``,
#: ``kv_b_proj``) in the rest. A KDA block's ``q/k/v/o_proj`` split into heads as softmax
#: attention's do, and their QK and OV products are bilinear forms alike: they are compared as
#: attention; its gates, decay, short convolutions and output norm are not. MLP files under
#: ``block_sparse_moe`` (``mlp`` in memory): a dense first block, then Mixtral-named experts
#: with a score correction and shared experts.
_KDA_PARTS = ("A_log", "b_proj", "dt_bias", "f_a_proj", "f_b_proj", "g_a_proj", "g_b_proj",
              "q_conv1d", "k_conv1d", "v_conv1d", "conv1d", "o_norm", "forget_gate")
KIMI_LINEAR = _decoder(
    "kimi_linear",
    layer=_NORMS | _ATTN | {KV_A: "self_attn.kv_a_proj_with_mqa",
                            KV_A_NORM: "self_attn.kv_a_layernorm", KV_B: "self_attn.kv_b_proj"}
    | {role: [f"block_sparse_moe.{path}", f"mlp.{path}"] for role, path in
       ((GATE, "gate_proj"), (UP, "up_proj"), (DOWN, "down_proj"), (ROUTER, "gate"),
        (ROUTER_CORRECTION, "gate.e_score_correction_bias"))},
    experts="block_sparse_moe.experts.{expert}.",
    expert={GATE: "w1", UP: "w3", DOWN: "w2"},
    stacked=_V5_EXPERT_STACKS,
    shared_experts=["block_sparse_moe.shared_experts.", "mlp.shared_experts."],
    shared_expert=_EXPERT_MLP,
    optional_roles=(K, V, KV_A, KV_A_NORM, KV_B),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(f"self_attn.{n}"
                                                               for n in _KDA_PARTS),
)
#: Beam (Reflection): Gemma 3's four norms (plain gains ``w``), per-head q/k norms, a sigmoid
#: gate on every element of the attention output (``self_attn.gate_proj``; its per-head bias
#: ``self_attn.gate_bias`` is not compared); dense blocks first (``mlp_layer_types``), then
#: experts routed by ``mlp.gate`` with DeepSeek-V3's selection bias, no shared expert. Its
#: depth-scaled residual adds, softcapped logits and NoPE query scaling are config scalars.
BEAM = _decoder(
    "beam",
    layer=_SANDWICH_NORMS | _ATTN | _QK_NORM | {ATTN_GATE: "self_attn.gate_proj"} | _MLP | {
        ROUTER: "mlp.gate", ROUTER_CORRECTION: "mlp.gate.e_score_correction_bias"},
    **_MLP_EXPERTS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("self_attn.gate_bias",),
)
#: Kolibri 1 (Aleph Alpha): GLM-4-0414's norms (``post_attn_norm`` on the attention output,
#: ``post_attention_layernorm`` in front of the MLP, ``post_ffn_norm`` on its output; in memory
#: ``post_self_attn_layernorm``/``post_mlp_layernorm``), per-head q/k norms, every block MoE:
#: router ``mlp.gate`` with its selection bias stored as ``moe.router.expert_bias``
#: (``mlp.gate.e_score_correction_bias`` in memory), one shared expert
KOLIBRI1 = _decoder(
    "kolibri1",
    layer=_NORMS | _ATTN | _QK_NORM | _MLP | {
        POST_ATTN_NORM: ["post_attn_norm", "post_self_attn_layernorm"],
        POST_MLP_NORM: ["post_ffn_norm", "post_mlp_layernorm"],
        ROUTER: "mlp.gate",
        ROUTER_CORRECTION: ["moe.router.expert_bias", "mlp.gate.e_score_correction_bias"]},
    shared_experts="mlp.shared_experts.",
    **_MLP_EXPERTS,
)
#: Kolibri 1.1: Kolibri 1's names, dense blocks first (``mlp_only_layers``); its indexed-attention
#: blocks that read an earlier block's keys and values (``kv_source_layers``) hold no ``k_proj``,
#: ``v_proj`` or ``k_norm`` of their own (their queries and output are read, their heads not
#: matched); the key selection (indexer) has no weights
KOLIBRI1_1 = KOLIBRI1.model_copy(update={
    "family": "kolibri1_1", "model_types": ("kolibri1_1",), "optional_roles": (K, V, K_NORM)})
#: Ergo (Amazon), in its release's names (``tok_embeddings``, ``output``, ``layers.N.attention.
#: wqkv``, ``feed_forward.*``) and in transformers' in-memory ones (``self_attn.qkv_proj``,
#: ``mlp.*``): q, k and v one after another in ``wqkv``, per-head q/k norms; four norms
#: (``post_attention_norm`` and ``post_ffn_norm`` on each sublayer's output); squared-ReLU
#: ``up``/``down`` without a gate in the dense first blocks and the experts (stacks ``up_proj``
#: ``[E, H, I]``, ``down_proj`` ``[E, I, H]``, computed as ``x @ W``); router ``gate_kernel``
#: stored ``[hidden, experts]``, selection bias ``router_bias``. Not compared: the learned
#: residual mixers (``post_*_residual.scale``), the experts' output norms, the in-memory router
#: ``mlp.gate.linear`` (``[experts, hidden]``: a table transposes a role in every spelling or
#: none), and the shared expert, whose released ``shared_up_proj``/``shared_down_proj`` are
#: stored ``[in, out]`` while the dense blocks' ``up``/``down`` are not (left out in memory too,
#: so that both spellings of one model are read alike)
ERGO = _decoder(
    "ergo",
    globals={EMBED: ["tok_embeddings", "embed_tokens"], FINAL_NORM: "norm",
             LM_HEAD: ["output", "lm_head"]},
    layer={ATTN_NORM: ["attention_norm", "input_layernorm"],
           POST_ATTN_NORM: ["post_attention_norm", "post_attention_layernorm"],
           MLP_NORM: ["ffn_norm", "pre_feedforward_layernorm"],
           POST_MLP_NORM: ["post_ffn_norm", "post_feedforward_layernorm"],
           O: ["attention.wo", "self_attn.o_proj"],
           Q_NORM: ["attention.q_norm", "self_attn.q_norm"],
           K_NORM: ["attention.k_norm", "self_attn.k_norm"],
           UP: ["feed_forward.up", "mlp.up_proj"], DOWN: ["feed_forward.down", "mlp.down_proj"],
           ROUTER: "feed_forward.gate_kernel",
           ROUTER_CORRECTION: ["feed_forward.router_bias", "mlp.gate.e_score_correction_bias"]},
    fused={path: Fused(roles=(Q, K, V), split="heads")
           for path in ("attention.wqkv", "self_attn.qkv_proj")},
    stacked={f"{where}.{proj}": Stacked(roles=(role,), layout="in_out")
             for where in ("feed_forward", "mlp.experts")
             for proj, role in (("up_proj", UP), ("down_proj", DOWN))},
    transpose=(ROUTER,),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "post_attention_residual", "post_ffn_residual", "attention_residual_gate",
        "feedforward_residual_gate", "feed_forward.expert_output_norm",
        "mlp.experts.post_expert_norm", "feed_forward.shared_up_proj",
        "feed_forward.shared_down_proj", "feed_forward.shared_expert_output_norm",
        "mlp.shared_experts", "mlp.gate.linear"),
)
#: OLMo-Hybrid: Gated DeltaNet blocks (``linear_attn.*``: separate q/k/v/g/a/b projections,
#: short convolutions, decay, gated output norm; not compared) between OLMo-3 attention blocks
#: (q/k norms over all heads). The two kinds place their norms differently: a DeltaNet block is
#: pre-norm, Llama's way (``attention_layer_norm`` in its files, ``input_layernorm`` in memory,
#: in front of the mixer; ``feedforward_layer_norm`` / ``post_attention_layernorm`` in front of
#: the MLP), an attention block OLMo-2's way (``post_attention_layernorm`` on the attention
#: output, which transformers saves as ``feedforward_layer_norm`` too, and
#: ``post_feedforward_layernorm`` on the MLP output). ``feedforward_layer_norm`` and
#: ``post_attention_layernorm`` are thus the MLP's input norm in one kind of block and the
#: attention's output norm in the other; a table gives a name one role in every block, so
#: these two are not compared. The names that mean one thing are read. The DeltaNet parts are
#: listed one by one, so that Qwen3.5's (``linear_attn.in_proj_qkvz``...) are not taken for them.
_OLMO_HYBRID_DELTANET = ("q_proj", "k_proj", "v_proj", "g_proj", "a_proj", "b_proj", "o_proj",
                         "conv1d", "q_conv1d", "k_conv1d", "v_conv1d", "A_log", "dt_bias",
                         "o_norm")
OLMO_HYBRID = _decoder(
    "olmo_hybrid",
    layer=_ATTN | _QK_NORM | _MLP | {ATTN_NORM: ["attention_layer_norm", "input_layernorm"],
                                     POST_MLP_NORM: "post_feedforward_layernorm"},
    optional_roles=_ATTENTION_ROLES + (ATTN_NORM, POST_MLP_NORM),
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"linear_attn.{n}" for n in _OLMO_HYBRID_DELTANET) + (
        "feedforward_layer_norm", "post_attention_layernorm"),
)
#: MiniMax-Text-01: lightning (linear) attention in most blocks (``qkv_proj``, ``out_proj``,
#: ``output_gate``, ``norm`` and decay buffers under ``self_attn``: not compared), softmax
#: attention in the rest; Mixtral's experts in every block. Its residual branches are weighted
#: by config scalars.
MINIMAX = MIXTRAL.model_copy(update={
    "family": "minimax", "model_types": ("minimax",),
    "optional_roles": _ATTENTION_ROLES,
    "known_unassigned": ROTARY_BUFFERS + QUANT_COMPANIONS + tuple(
        f"self_attn.{n}" for n in ("qkv_proj", "out_proj", "output_gate", "norm", "slope_rate",
                                   "query_decay", "key_decay", "diagonal_decay")),
})
#: LongCat-Flash (Meituan): each block holds two attention-and-MLP sublayers in one residual
#: stream (``self_attn.0``/``.1``, ``mlps.0``/``.1``, ``input_layernorm.0``/``.1``,
#: ``post_attention_layernorm.0``/``.1``) and a shortcut MoE (``mlp.*``) that reads the first
#: sublayer's MLP input and is added after the second. A block is read as its first sublayer:
#: MLA attention ``self_attn.0`` (always with low-rank queries), the dense ``mlps.0`` and the
#: experts beside it, both behind ``post_attention_layernorm.0``; the second sublayer's MLP
#: ``mlps.1`` is the block's second set of neurons (``schema.SECOND_ROLES``), its attention
#: and norms are not compared (a table holds one attention per block). The router ``mlp.router.classifier`` and
#: its selection bias score the routed experts and the zero-computation (identity) experts
#: after them, which hold no weights. The multi-token-prediction module (``mtp.*``) is not
#: compared.
LONGCAT_FLASH = _decoder(
    "longcat_flash",
    layer={ATTN_NORM: "input_layernorm.0", MLP_NORM: "post_attention_layernorm.0"}
    | {role: path.replace("self_attn.", "self_attn.0.") for role, path in _MLA.items()}
    | {GATE: "mlps.0.gate_proj", UP: "mlps.0.up_proj", DOWN: "mlps.0.down_proj",
       SECOND_GATE: "mlps.1.gate_proj", SECOND_UP: "mlps.1.up_proj",
       SECOND_DOWN: "mlps.1.down_proj", ROUTER: "mlp.router.classifier",
       ROUTER_CORRECTION: "mlp.router.e_score_correction_bias"},
    **_MLP_EXPERTS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.1", "input_layernorm.1", "post_attention_layernorm.1", "mtp"),
)
#: JetMoE: attention is itself a mixture of experts (``self_attention.experts``: each routed
#: attention expert has its own query and output projections over key/value heads shared
#: through ``kv_proj``), so it has no fixed query heads and is not compared. The MLP is
#: Granite-MoE's stacks under ``mlp.`` (``input_linear`` ``[E, 2*I, H]``, ``.chunk(2)``: gate
#: first; ``output_linear`` ``[E, H, I]``), router ``mlp.router.layer``; the bias added to the
#: experts' weighted sum (``mlp.bias``) is not compared.
JETMOE = _decoder(
    "jetmoe",
    layer=_NORMS | {ROUTER: "mlp.router.layer"},
    stacked={
        "mlp.input_linear": Stacked(roles=(GATE, UP), split="halves", layout="out_in"),
        "mlp.output_linear": Stacked(roles=(DOWN,), layout="out_in"),
    },
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + ("self_attention", "mlp.bias"),
)
#: ZAYA (Zyphra): Compressed Convolutional Attention — queries and keys pass through causal
#: convolutions over time and are mixed with each other, half the value heads read the
#: previous token (``v_proj_delayed``), keys are L2-normalised with a learned temperature — so
#: ``self_attn.*`` is not softmax attention over q/k/v/o heads and is not compared. Every block
#: MoE behind ``post_attention_layernorm``: v5 expert stacks (gate first); the router is an MLP
#: over a low-rank state carried from block to block (``mlp.gate.*``, with a "skip" class and
#: balancing biases), not a linear map of the hidden state: not compared. The learned scales
#: and biases on the residual stream (``post_*_residual_scale``, the model's
#: ``input_hidden_states_*``) are not compared.
ZAYA = _decoder(
    "zaya",
    layer=_NORMS,
    stacked=_V5_EXPERT_STACKS,
    known_unassigned=ROTARY_BUFFERS + QUANT_COMPANIONS + (
        "self_attn.qkv_proj", "self_attn.qk_norm", "self_attn.o_proj", "mlp.gate.down_proj",
        "mlp.gate.router_mlp", "mlp.gate.router_states_scale", "mlp.gate.balancing_biases",
        "post_attention_residual_scale", "post_mlp_residual_scale", "input_hidden_states_scale",
        "input_hidden_states_bias"),
)
#: GptOssExperts computes ``x @ W + b``: ``gate_up_proj`` ``[E, H, 2*I]`` with gate and up
#: *interleaved* (gate = even columns, up = odd), ``down_proj`` ``[E, I, H]``; biases are
#: ``[E, 2*I]``/``[E, H]``. The released files hold the stacks as MXFP4 ``*_blocks`` ``[E, out,
#: in/32, 16]`` beside ``*_scales``: unpacked on load (``layout.unpack_mxfp4``).
GPT_OSS = _decoder(
    "gpt_oss",
    "gpt-oss",
    layer=_NORMS | _ATTN | {ROUTER: "mlp.router", ATTN_SINKS: "self_attn.sinks"},
    stacked={
        "mlp.experts.gate_up_proj": Stacked(
            roles=(GATE, UP),
            split="interleave",
            layout="in_out",
            bias="mlp.experts.gate_up_proj_bias",
        ),
        "mlp.experts.down_proj": Stacked(
            roles=(DOWN,), layout="in_out", bias="mlp.experts.down_proj_bias"
        ),
    },
)

#: family name -> table, in detection tie-break order (more general layouts first)
FAMILIES: dict[str, LayoutTable] = {
    t.family: t
    for t in (
        LLAMA, MLLAMA, QWEN2, QWEN3, OLMO2, GEMMA, GEMMA2, GEMMA3, GEMMA4, GLM, GLM4, QWEN3_5,
        QWEN3_NEXT, COHERE, NEMOTRON, STARCODER2,
        PHI, PHI3, GPT2, GPT_BIGCODE, GPT_NEO, GPTJ, GPT_NEOX, FALCON, BLOOM, MPT, OPT, BERT,
        BERT_PRE_NORM,
        MIXTRAL, QWEN2_MOE, QWEN3_MOE, FLEX_OLMO, MINIMAX_M2, DEEPSEEK_V2, DEEPSEEK_V3,
        GLM4_MOE, ERNIE4_5_MOE, GRANITEMOE, GRANITEMOE_HYBRID, NEMOTRON_H, BAMBA, FALCON_H1,
        JAMBA, LFM2, LFM3, LLAMA4, GPT_OSS,
        # families whose names another's table also claims: the config says which
        ARCEE, APERTUS, HYPERCLOVAX, EXAONE, OLMO, STABLELM, PERSIMMON, BITNET, GRANITE_SWA,
        OPENAI_GPT, AFMOE, ARIA, COHERE2_MOE, BAILING_MOE, MINICPM5_MOE, HY_V3, AXK1, FLINT,
        LARA_MINI, MINIMAX, MIMO_V2, LAGUNA, NANOCHAT, XGLM, KIMI_LINEAR, DEEPSEEK_V4, MAMBA, MAMBA2, MINIMAX_M3, HUNYUAN,
        AXK2, HY_V4,
        BEAM, KOLIBRI1, KOLIBRI1_1, ERGO,
        LONGCAT_FLASH, JETMOE, ZAYA,
        DOTS3_NOTE, INKLING, INKLING2,
        CODEGEN, GPT_NEOX_JAPANESE, BIOGPT,
        DIFFLLAMA, RECURRENT_GEMMA, ZAMBA, ZAMBA2,
        GEMMA3N,
        PHI4_MULTIMODAL, OLMO_HYBRID,
        RWKV, XLSTM,
        DOGE, CTRL, MODERNBERT_DECODER,
        MOSHI, HRM_TEXT, XLM, DORY, CPMANT, GIT, BAILING_HYBRID,
        BART, MBART, T5, NLLB_MOE, DBRX, PIX2STRUCT, KOSMOS2, T5GEMMA, T5GEMMA2, MOLMO2,
    )
}

# GGUF naming (llama.cpp). The reader reverses ggml's dimension order, so matrices arrive in
# PyTorch order: ``[out, in]`` for every 2-D weight (llama.cpp's converter already transposed
# GPT-2's Conv1D weights), ``[E, I, H]`` for ``ffn_gate_exps``/``ffn_up_exps`` and
# ``[E, H, I]`` for ``ffn_down_exps``.
_GGUF_GLOBALS: dict[str, Paths] = {
    EMBED: "token_embd",
    POS_EMBED: "position_embd",
    TYPE_EMBED: "token_types",
    EMBED_NORM: "token_embd_norm",
    FINAL_NORM: "output_norm",
    LM_HEAD: "output",
}
_GGUF_ATTN: dict[str, Paths] = {Q: "attn_q", K: "attn_k", V: "attn_v", O: "attn_output"}
_GGUF_MLP: dict[str, Paths] = {GATE: "ffn_gate", UP: "ffn_up", DOWN: "ffn_down"}

#: llama.cpp decoders (llama, qwen2/3, gemma*, phi2/3, gpt2, gptneox, falcon, bloom, gptj,
#: starcoder, olmo2, command-r, the MoE and MLA families). Its converters store fused q/k/v as
#: q, then k, then v (GPT-NeoX's, Bloom's and Falcon's per-head or per-group rows reordered), Gemma's
#: and Nemotron's norms as the gain ``1 + w``. A Mamba mixer (``ssm_*``: Mamba-2, Nemotron-H,
#: Granite 4, Falcon-H1) is the block's second set of neurons, beside its MLP where it has one:
#: ``ssm_in`` cut as Mamba-2's ``in_proj`` (z, x, B, C, dt; sized by ``ssm_out``,
#: ``ssm_conv1d`` and ``ssm_a``), ``ssm_out`` its output; its state-space parameters (``ssm_a``
#: holds ``-exp(A_log)``) are not compared.
GGUF = LayoutTable(
    family="gguf",
    layer_prefix="blk.{layer}.",
    globals=_GGUF_GLOBALS,
    layer=_GGUF_ATTN | _GGUF_MLP | {
        ATTN_NORM: "attn_norm",
        MLP_NORM: ["ffn_norm", "attn_norm_2"],  # Falcon-40B's ``ln_mlp`` is ``attn_norm_2``
        POST_ATTN_NORM: "post_attention_norm",
        POST_MLP_NORM: "post_ffw_norm",
        Q_NORM: "attn_q_norm",
        K_NORM: "attn_k_norm",
        Q_A: "attn_q_a",
        Q_A_NORM: "attn_q_a_norm",
        Q_B: "attn_q_b",
        KV_A: "attn_kv_a_mqa",
        KV_A_NORM: "attn_kv_a_norm",
        KV_B: "attn_kv_b",
        K_B: "attn_k_b",
        V_B: "attn_v_b",
        ROUTER: "ffn_gate_inp",
        SHARED_GATE: "ffn_gate_inp_shexp",
        ROUTER_CORRECTION: "exp_probs_b.bias",
        ATTN_SINKS: "attn_sinks",
        SECOND_DOWN: "ssm_out",
    },
    fused={"attn_qkv": Fused(roles=(Q, K, V), split="heads"),
           "ssm_in": Fused(roles=(SECOND_GATE, SECOND_UP), split="mamba2")},
    shared_experts="",
    shared_expert={GATE: "ffn_gate_shexp", UP: "ffn_up_shexp", DOWN: "ffn_down_shexp"},
    stacked={
        "ffn_gate_exps": Stacked(roles=(GATE,), layout="out_in"),
        "ffn_up_exps": Stacked(roles=(UP,), layout="out_in"),
        "ffn_down_exps": Stacked(roles=(DOWN,), layout="out_in"),
        "ffn_gate_up_exps": Stacked(roles=(GATE, UP), split="halves", layout="out_in"),
    },
    fused_up_without_gate=True,
    # the converters keep one norm for Phi-2, GPT-J, Falcon-7B and Command-R's parallel blocks
    mlp_shares_attn_norm=True,
    optional_roles=SECOND_ROLES,
    known_unassigned=("rope_freqs", "ssm_conv1d", "ssm_a", "ssm_d", "ssm_dt", "ssm_norm",
                      "ssm_x", "ssm_dt_norm", "ssm_b_norm", "ssm_c_norm"),
)
#: llama.cpp's Mamba and Jamba: a Mamba (1) mixer, whose ``ssm_in`` holds x, then z (halves);
#: ``ssm_x``, ``ssm_dt`` and Jamba's norms on dt, B and C not compared
GGUF_MAMBA = GGUF.model_copy(update={
    "family": "gguf-mamba", "model_types": ("mamba", "jamba"),
    "fused": GGUF.fused | {"ssm_in": Fused(roles=(SECOND_UP, SECOND_GATE), split="halves")}})
#: llama.cpp BERT: post-LN blocks (``attn_output_norm``, ``layer_output_norm``)
GGUF_BERT = LayoutTable(
    family="gguf-bert",
    model_types=("bert",),
    post_norm=True,
    layer_prefix="blk.{layer}.",
    globals=_GGUF_GLOBALS,
    layer=_GGUF_ATTN | {
        ATTN_NORM: "attn_output_norm",
        UP: "ffn_up",
        DOWN: "ffn_down",
        MLP_NORM: "layer_output_norm",
    },
    fused={"attn_qkv": Fused(roles=(Q, K, V), split="heads")},
    known_unassigned=("cls",),
)

#: GGUF tables, tried for ``fmt == "gguf"``; the family reported comes from the config
#: llama.cpp T5 (``t5``, and ``t5encoder``: the encoder alone): ``enc.blk.N.`` then
#: ``dec.blk.N.``, read as T5's two stacks (``block_count``, ``decoder_block_count``); each block
#: ``attn_norm``, ``attn_q``/``k``/``v``/``o``, ``ffn_norm``, ``ffn_gate``/``ffn_up``/``ffn_down``
#: (no gate in T5 v1.0); the decoder's cross-attention (``cross_attn_*``), the relative
#: position biases (``attn_rel_b``) and the encoder's ``enc.output_norm`` not compared
GGUF_T5 = LayoutTable(
    family="gguf-t5",
    model_types=("t5",),
    layer_prefix=["enc.blk.{layer}.", "dec.blk.{layer}."],
    stacks=True,
    stack_layers_key=("num_hidden_layers", "num_decoder_layers"),
    globals={EMBED: "token_embd", FINAL_NORM: "dec.output_norm", LM_HEAD: "output"},
    layer={ATTN_NORM: "attn_norm", **_GGUF_ATTN, O: "attn_o", MLP_NORM: "ffn_norm",
           **_GGUF_MLP},
    known_unassigned=("attn_rel_b", "cross_attn_q", "cross_attn_k", "cross_attn_v",
                      "cross_attn_o", "cross_attn_norm", "cross_attn_rel_b", "enc.output_norm"),
)
GGUF_TABLES: dict[str, LayoutTable] = {t.family: t for t in (GGUF, GGUF_BERT, GGUF_MAMBA,
                                                              GGUF_T5)}


def family_for_model_type(model_type: str | None) -> LayoutTable | None:
    """The built-in table answering for a config ``model_type``, if any."""
    if not model_type:
        return None
    for table in FAMILIES.values():
        if model_type in table.model_types:
            return table
    return None
