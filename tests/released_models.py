"""Tiny models of the families read from the files transformers saves (their released names).

Each entry builds a small random model of one family with the module code its checkpoints
run on; ``save_pretrained`` then writes the tensor names a released checkpoint holds (which
for several families differ from the names the modules use in memory).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

SMALL: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                         "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 100,
                         "num_hidden_layers": 2, "pad_token_id": 0}
MOE: dict[str, Any] = {"moe_intermediate_size": 16, "num_experts_per_tok": 2}
#: dots.3 Note: MLA ranks, a dense first block, an indexed and a sliding-window layer (the
#: sliding one with half the heads, its own ranks and head sizes)
DOTS3_MLA: dict[str, Any] = {
    "n_routed_experts": 4, "n_shared_experts": 1, "shared_experts_intermediate_size": 16,
    "kv_lora_rank": 8, "q_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4,
    "v_head_dim": 8, "index_n_heads": 2, "index_head_dim": 8, "index_topk": 4,
    "sliding_window": 8, "layer_types": ["indexed_attention", "sliding_attention"],
    "swa_num_attention_heads": 2, "swa_num_key_value_heads": 2, "swa_q_lora_rank": 8,
    "swa_kv_lora_rank": 16, "swa_head_dim": 12, "swa_qk_nope_head_dim": 8, "swa_v_head_dim": 4}
#: Inkling: a full-attention layer with a dense MLP, then a sliding-window one with twice the
#: query heads (half as wide) and MoE with two shared experts
INKLING: dict[str, Any] = {
    "n_routed_experts": 4, "n_shared_experts": 2, "swa_num_attention_heads": 8,
    "swa_num_key_value_heads": 4, "swa_head_dim": 4, "d_rel": 4, "rel_extent": 16,
    "sliding_window_size": 8, "layer_types": ["hybrid", "hybrid_sliding"],
    "mlp_layer_types": ["dense", "sparse"]}

#: Inkling 2: a sliding-window layer with twice the query heads (half as wide), then a
#: full-attention one; each layer its own block of attention residuals. The loop variant runs
#: its second block twice.
INKLING2: dict[str, Any] = {
    "n_routed_experts": 4, "swa_num_attention_heads": 8, "swa_num_key_value_heads": 4,
    "swa_head_dim": 4, "d_rel": 4, "rel_extent": 16, "sliding_window_size": 8,
    "layer_types": ["hybrid_sliding", "hybrid"], "n_layers_per_attn_res_block": 1,
    "unpadded_vocab_size": 100, "eos_token_id": 2}
INKLING2_LOOP: dict[str, Any] = {
    "loop_layer_index_start": 1, "loop_layer_index_end": 2, "loop_num_passes": 2,
    "loop_gate_rank": 4}

#: Phi-4-multimodal's towers, small: a one-layer SigLIP image encoder and conformer audio encoder
PHI4_TOWERS: dict[str, Any] = {
    "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                      "crop_size": 28},
    "audio_config": {"hidden_size": 16, "intermediate_size": 32, "num_blocks": 1,
                     "num_attention_heads": 2, "ext_pw_out_channel": 16,
                     "depthwise_separable_out_channel": 16, "nemo_conv_channels": 16}}


def released_models() -> dict[str, tuple[Any, Any]]:
    """model_type -> (model class, config) for each family, small."""
    t = pytest.importorskip("transformers")
    deepseek = {"kv_lora_rank": 8, "q_lora_rank": 16, "qk_rope_head_dim": 4,
                "qk_nope_head_dim": 4, "v_head_dim": 8, "n_group": 1, "topk_group": 1}
    no_head_dim = {k: v for k, v in SMALL.items() if k != "head_dim"}
    no_intermediate = {k: v for k, v in SMALL.items() if k != "intermediate_size"}
    return {
        # dense
        "apertus": (t.ApertusForCausalLM, t.ApertusConfig(**SMALL)),
        "arcee": (t.ArceeForCausalLM, t.ArceeConfig(**SMALL)),
        "jais2": (t.Jais2ForCausalLM, t.Jais2Config(**SMALL)),
        "hyperclovax": (t.HyperCLOVAXForCausalLM, t.HyperCLOVAXConfig(**SMALL,
                                                                     use_post_norm=True)),
        "exaone": (t.AutoModelForCausalLM, t.ExaoneConfig(**SMALL)),
        "olmo": (t.OlmoForCausalLM, t.OlmoConfig(**no_head_dim)),
        "stablelm": (t.StableLmForCausalLM, t.StableLmConfig(**no_head_dim)),
        "stablelm_parallel": (t.StableLmForCausalLM, t.StableLmConfig(
            **no_head_dim, use_parallel_residual=True, qk_layernorm=True)),
        "persimmon": (t.PersimmonForCausalLM, t.PersimmonConfig(
            **{k: v for k, v in no_head_dim.items() if k != "num_key_value_heads"},
            qk_layernorm=True)),
        "openai-gpt": (t.OpenAIGPTLMHeadModel, t.OpenAIGPTConfig(
            n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)),
        "bitnet": (t.BitNetForCausalLM, t.BitNetConfig(**no_head_dim)),
        "nanochat": (t.NanoChatForCausalLM, t.NanoChatConfig(**no_head_dim)),
        "xglm": (t.XGLMForCausalLM, t.XGLMConfig(d_model=32, ffn_dim=64, num_layers=2,
                                                 attention_heads=4, vocab_size=100)),
        "granite_swa": (t.GraniteSWAForCausalLM, t.GraniteSWAConfig(**no_head_dim)),
        # GPT-J's block with CodeGen's model-parallel qkv_proj (two heads a shard); GPT-NeoX
        # under its own prefix;
        # XGLM's blocks with learned positions
        "codegen": (t.CodeGenForCausalLM, t.CodeGenConfig(
            n_embd=32, n_layer=2, n_head=8, rotary_dim=4, vocab_size=100, n_positions=64,
            bos_token_id=None, eos_token_id=None)),
        "gpt_neox_japanese": (t.GPTNeoXJapaneseForCausalLM, t.GPTNeoXJapaneseConfig(
            **{k: v for k, v in no_head_dim.items() if k not in (
                "intermediate_size", "num_key_value_heads")}, intermediate_multiple_size=2,
            bos_token_id=None, eos_token_id=None)),
        "biogpt": (t.BioGptForCausalLM, t.BioGptConfig(
            **{k: v for k, v in no_head_dim.items() if k != "num_key_value_heads"},
            max_position_embeddings=64)),
        # MoE
        "afmoe": (t.AfmoeForCausalLM, t.AfmoeConfig(
            **SMALL, **MOE, num_experts=4, num_dense_layers=1, num_shared_experts=1)),
        "aria_text": (t.AriaTextForCausalLM, t.AriaTextConfig(
            **(SMALL | {"intermediate_size": 16}), moe_num_experts=4, moe_topk=2,
            moe_num_shared_experts=1)),
        "cohere2_moe": (t.Cohere2MoeForCausalLM, t.Cohere2MoeConfig(
            **SMALL, num_experts=4, num_experts_per_tok=2, num_shared_experts=1,
            mlp_layer_types=["dense", "sparse"], prefix_dense_intermediate_size=64)),
        "param2moe": (t.AutoModelForCausalLM, t.Param2MoeConfig(
            **SMALL, **MOE, n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1,
            use_qk_norm=True, n_group=1, topk_group=1)),
        "minicpm5_moe": (t.MiniCPM5MoeForCausalLM, t.MiniCPM5MoeConfig(
            **SMALL, **MOE, n_routed_experts=4, n_shared_experts=1, n_group=1, topk_group=1,
            mlp_layer_types=["dense", "sparse"])),
        "hy_v3": (t.HYV3ForCausalLM, t.HYV3Config(
            **SMALL, **MOE, num_experts=4, num_shared_experts=1,
            mlp_layer_types=["dense", "sparse"])),
        "axk1": (t.AXK1ForCausalLM, t.AXK1Config(
            **(no_head_dim | {"num_key_value_heads": 4}), **MOE, **deepseek, n_routed_experts=4,
            n_shared_experts=1, mlp_layer_types=["dense", "sparse"])),
        "flint": (t.FlintForCausalLM, t.FlintConfig(
            **SMALL, **MOE, num_experts=4, shared_expert_intermediate_size=16,
            mlp_only_layers=[0], decoder_sparse_step=1)),
        "lara_mini": (t.LaraMiniForCausalLM, t.LaraMiniConfig(
            **{k: v for k, v in SMALL.items() if k != "intermediate_size"}, **MOE,
            num_experts=4, shared_expert_intermediate_size=16,
            layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8)),
        "minimax": (t.MiniMaxForCausalLM, t.MiniMaxConfig(
            **SMALL, num_local_experts=4, num_experts_per_tok=2,
            layer_types=["linear_attention", "full_attention"])),
        "granitemoe_swa": (t.GraniteMoeSWAForCausalLM, t.GraniteMoeSWAConfig(
            **(no_head_dim | {"intermediate_size": 16}), num_local_experts=4,
            num_experts_per_tok=2, shared_intermediate_size=32)),
        # heads that vary by layer: MiMo-V2's sliding layers (twice the KV heads, values
        # narrower than queries), Laguna's query heads per layer
        "mimo_v2_flash": (t.MiMoV2FlashForCausalLM, t.MiMoV2FlashConfig(
            **SMALL, **MOE, v_head_dim=4, n_routed_experts=4, n_group=1, topk_group=1,
            layer_types=["full_attention", "sliding_attention"],
            mlp_layer_types=["dense", "sparse"])),
        "laguna": (t.LagunaForCausalLM, t.LagunaConfig(
            **SMALL, **MOE, num_experts=4, shared_expert_intermediate_size=16,
            num_attention_heads_per_layer=[4, 8], layer_types=["full_attention"] * 2,
            mlp_layer_types=["dense", "sparse"])),
        "kimi_linear": (t.KimiLinearForCausalLM, t.KimiLinearConfig(
            **(SMALL | {"num_key_value_heads": 4}), moe_intermediate_size=16,
            num_experts_per_token=2, num_experts=4, kv_lora_rank=8, qk_rope_head_dim=4,
            v_head_dim=8, qk_nope_head_dim=4, linear_head_dim=8, linear_num_heads=4,
            mlp_layer_types=["dense", "sparse"],
            layer_types=["linear_attention", "full_attention"])),
        # DeepSeek-V4: hash-routed first block, compressed attention, hyper-connections
        "deepseek_v4": (t.DeepseekV4ForCausalLM, t.DeepseekV4Config(
            **(SMALL | {"num_key_value_heads": 1, "head_dim": 16}), **MOE, q_lora_rank=16,
            n_routed_experts=4, n_shared_experts=1, hc_mult=2, o_groups=2, o_lora_rank=8,
            index_n_heads=2, index_head_dim=8, index_topk=4, sliding_window=8,
            qk_rope_head_dim=4,
            layer_types=["sliding_attention", "compressed_sparse_attention"],
            mlp_layer_types=["hash_moe", "moe"])),
        # Mamba: one mixer per block, its inner channels matched as neurons
        "mamba": (t.MambaForCausalLM, t.MambaConfig(
            hidden_size=32, state_size=8, num_hidden_layers=2, vocab_size=100, expand=2)),
        "falcon_mamba": (t.FalconMambaForCausalLM, t.FalconMambaConfig(
            hidden_size=32, state_size=8, num_hidden_layers=2, vocab_size=100, expand=2)),
        "mamba2": (t.Mamba2ForCausalLM, t.Mamba2Config(
            hidden_size=32, state_size=8, num_hidden_layers=2, vocab_size=100, expand=2,
            num_heads=8, head_dim=8, n_groups=1)),
        "hunyuan_v1_dense": (t.HunYuanDenseV1ForCausalLM, t.HunYuanDenseV1Config(**SMALL)),
        "hunyuan_v1_moe": (t.HunYuanMoEV1ForCausalLM, t.HunYuanMoEV1Config(
            **(SMALL | {"intermediate_size": 16}), num_experts=4, moe_topk=2)),
        "dots1": (t.Dots1ForCausalLM, t.Dots1Config(
            **SMALL, **MOE, n_routed_experts=4, first_k_dense_replace=1, n_shared_experts=1)),
        # MLA: A.X K2's gated norms and query (a query head of 8, a gate of 4); HY-V4's gated
        # heads, sinks and hyper-connections
        "axk2": (t.AXK2ForCausalLM, t.AXK2Config(
            **(no_head_dim | {"num_key_value_heads": 4}), **MOE, **(deepseek | {"v_head_dim": 4}),
            n_routed_experts=4,
            n_shared_experts=1, mlp_layer_types=["dense", "sparse"], index_n_heads=2,
            index_head_dim=8, index_topk=4, gated_norm_rank=4, bos_token_id=None,
            eos_token_id=None)),
        "hy_v4": (t.HYV4ForCausalLM, t.HYV4Config(
            **(no_head_dim | {"num_key_value_heads": 4}), **MOE, **deepseek, n_routed_experts=4,
            n_shared_experts=1, mlp_layer_types=["dense", "sparse"], index_n_heads=2,
            index_head_dim=8, index_topk=4, hc_mult=2, bos_token_id=None, eos_token_id=None)),
        "lfm3": (t.Lfm3ForCausalLM, t.Lfm3Config(
            **SMALL, layer_types=["conv", "full_attention"])),
        # gated attention output (a per-head bias on the gate), four norms, dense block first
        "beam": (t.BeamForCausalLM, t.BeamConfig(
            **SMALL, **MOE, num_experts=4, n_group=1, topk_group=1,
            layer_types=["sliding_attention", "full_attention"],
            mlp_layer_types=["dense", "sparse"])),
        "kolibri1": (t.Kolibri1ForCausalLM, t.Kolibri1Config(
            **no_intermediate, **MOE, num_experts=4, shared_expert_intermediate_size=16)),
        # the second block reads the first one's keys and values: no k/v projections of its own
        "kolibri1_1": (t.Kolibri1_1ForCausalLM, t.Kolibri1_1Config(
            **(no_intermediate | {"head_dim": 16}), **MOE, num_experts=4,
            shared_expert_intermediate_size=16, mlp_only_layers=[0],
            mlp_only_intermediate_size=64, layer_types=["indexed_attention"] * 2,
            index_layers=[0], kv_source_layers=[0, 0], index_num_heads=2)),
        # fused wqkv, ungated squared-ReLU MLPs and expert stacks, released under its own names
        "ergo": (t.ErgoForCausalLM, t.ErgoConfig(
            **{k: v for k, v in no_intermediate.items() if k != "head_dim"}, **MOE,
            num_experts=4, first_dense_intermediate_size=64, shared_intermediate_size=16,
            num_dense_blocks=1)),
        # LongCat-Flash: two sublayers a block (the first read), zero-computation experts
        "longcat_flash": (t.LongcatFlashForCausalLM, t.LongcatFlashConfig(
            **{k: v for k, v in SMALL.items() if k != "num_hidden_layers"}, num_layers=2,
            **MOE, n_routed_experts=4, zero_expert_num=2, **deepseek)),
        # attention that is not compared: JetMoE's mixture of attention heads, ZAYA's CCA
        "jetmoe": (t.JetMoeForCausalLM, t.JetMoeConfig(
            **{k: v for k, v in SMALL.items() if k not in ("num_attention_heads", "head_dim")},
            kv_channels=8, num_local_experts=4, num_experts_per_tok=2)),
        "zaya": (t.ZayaForCausalLM, t.ZayaConfig(
            **{k: v for k, v in SMALL.items() if k != "intermediate_size"}, **MOE | {
                "num_experts_per_tok": 1}, num_experts=4, router_hidden_size=16,
            eos_token_id=2)),
        # differential attention (not compared): its MLP and norms are read
        "diffllama": (t.DiffLlamaForCausalLM, t.DiffLlamaConfig(**SMALL)),
        # Griffin: an RG-LRU block (not compared), then a local-attention one; norms 1 + w
        "recurrent_gemma": (t.RecurrentGemmaForCausalLM, t.RecurrentGemmaConfig(
            **no_head_dim, block_types=["recurrent", "attention"])),
        # Zyphra's hybrids: two hybrid blocks, each the shared transformer block (stored at its
        # first use, not compared) before a Mamba block of its own; Zamba's multi-head Mamba,
        # Zamba2's Mamba-2 with per-use adapters on the shared block (transformers cannot tie
        # a shared block used once)
        "zamba": (t.ZambaForCausalLM, t.ZambaConfig(
            **no_head_dim, n_mamba_heads=2, mamba_d_state=8,
            layers_block_type=["hybrid", "hybrid"])),
        "zamba2": (t.Zamba2ForCausalLM, t.Zamba2Config(
            **no_head_dim, n_mamba_heads=8, mamba_d_state=8, adapter_rank=4,
            use_shared_attention_adapter=True, layers_block_type=["hybrid", "hybrid"])),
        # dots.3 Note: MLA with a gate per head; its sliding layer has its own heads and ranks
        "dots3_note_text": (t.Dots3NoteForCausalLM, t.Dots3NoteTextConfig(
            **(SMALL | {"num_key_value_heads": 4}), **MOE, **DOTS3_MLA)),
        # Inkling: a normed embedding, short convolutions, sliding layers with their own heads
        "inkling_text": (t.InklingForCausalLM, t.InklingTextConfig(**SMALL, **MOE, **INKLING)),
        # Inkling 2: attention residuals over earlier blocks, gated attention output, per-token
        # sinks, every block MoE; its loop variant reruns a block with message gates
        "inkling2_text": (t.Inkling2ForCausalLM, t.Inkling2TextConfig(
            **no_intermediate, **MOE, **INKLING2)),
        "inkling2_loop_text": (t.Inkling2LoopForCausalLM, t.Inkling2LoopTextConfig(
            **no_intermediate, **MOE, **INKLING2, **INKLING2_LOOP)),
        # Gemma 3n: AltUp streams, LAuReL, per-layer inputs; the second block reuses the first
        # one's keys and values; top-k sparsity on the first block's gate
        "gemma3n_text": (t.Gemma3nForCausalLM, t.Gemma3nTextConfig(
            **SMALL, vocab_size_per_layer_input=100, hidden_size_per_layer_input=8,
            laurel_rank=4, num_kv_shared_layers=1, activation_sparsity_pattern=[0.95, 0.0])),
        # Phi-4-multimodal: Phi-3's fused blocks beside image and audio towers
        "phi4_multimodal": (t.Phi4MultimodalForCausalLM, t.Phi4MultimodalConfig(
            **SMALL, **PHI4_TOWERS, bos_token_id=1, eos_token_id=2)),
        # OLMo-Hybrid: a Gated DeltaNet block (pre-norm) before an attention block (post-norm)
        "olmo_hybrid": (t.OlmoHybridForCausalLM, t.OlmoHybridConfig(
            **SMALL, layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
            eos_token_id=2)),
        # RWKV-4: a time mix (not compared), then a squared-ReLU channel mix, each block
        "rwkv": (t.RwkvForCausalLM, t.RwkvConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, vocab_size=100,
            context_length=64)),
        # xLSTM: mLSTM heads whose queries and keys are half as wide as their values, SwiGLU
        "xlstm": (t.xLSTMForCausalLM, t.xLSTMConfig(
            hidden_size=32, num_hidden_layers=2, num_heads=4, vocab_size=100,
            ffn_round_up_to_multiple_of=16)),
        # Doge: a dynamic mask from the values (not compared), learned residual scales; its
        # cross-domain MoE: a shared MLP beside single-neuron product-key experts (not compared)
        "doge": (t.DogeForCausalLM, t.DogeConfig(**SMALL)),
        "doge_moe": (t.DogeForCausalLM, t.DogeConfig(
            **SMALL, is_moe=True, num_experts=16, num_experts_per_tok=2)),
        # CTRL: pre-LayerNorm blocks with biases, sinusoidal positions, tied head with a bias
        "ctrl": (t.CTRLLMHeadModel, t.CTRLConfig(
            n_embd=32, dff=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64)),
        # ModernBERT-Decoder: no attention norm in the first block, a GLU Wi, a prediction head
        "modernbert-decoder": (t.ModernBertDecoderForCausalLM, t.ModernBertDecoderConfig(
            **{k: v for k, v in no_head_dim.items() if k != "num_key_value_heads"},
            max_position_embeddings=64, bos_token_id=1, eos_token_id=2, cls_token_id=1,
            sep_token_id=2)),
        # Moshi's text transformer: a gated fc1 (gate, then up), an embedding row past the vocabulary
        "moshi": (t.MoshiForCausalLM, t.MoshiConfig(
            **{k: v for k, v in SMALL.items() if k != "intermediate_size"}, ffn_dim=128)),
        # HRM-Text: an L and an H stack of one block each, gate/q/k/v fused in gqkv_proj
        "hrm_text": (t.HrmTextForCausalLM, t.HrmTextConfig(
            **{k: v for k, v in SMALL.items() if k not in ("num_key_value_heads",
                                                           "num_hidden_layers")},
            num_hidden_layers=1)),
        # XLM: BERT's post-LayerNorm blocks, one list per kind of sublayer
        # Dory: an input block, then a recurrent one run twice
        "dory": (t.DoryForCausalLM, t.DoryConfig(
            **SMALL, n_input_layers=1, n_output_layers=0, n_recurrent_loops=2,
            sliding_window=8, layer_types=["sliding_attention", "full_attention"])),
        "cpmant": (t.CpmAntForCausalLM, t.CpmAntConfig(
            hidden_size=32, dim_ff=64, num_attention_heads=4, dim_head=8, num_hidden_layers=2,
            vocab_size=100, prompt_length=8)),
        "git": (t.GitForCausalLM, t.GitConfig(
            **{k: v for k, v in no_head_dim.items() if k != "num_key_value_heads"},
            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 28, "patch_size": 14})),
        "emu3_text_model": (t.Emu3ForCausalLM, t.Emu3TextConfig(**SMALL)),
        # Ling's hybrid: a Kimi-delta-attention block, then an MLA one with experts
        "bailing_hybrid": (t.BailingHybridForCausalLM, t.BailingHybridConfig(
            **(SMALL | {"num_key_value_heads": 4}), **MOE, num_local_experts=4, n_group=1,
            topk_group=1, first_k_dense_replace=1, kv_lora_rank=8, q_lora_rank=16,
            qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=8,
            layer_types=["linear_attention", "full_attention"], eos_token_id=1)),
        "xlm": (t.XLMWithLMHeadModel, t.XLMConfig(
            emb_dim=32, n_layers=2, n_heads=4, vocab_size=100, max_position_embeddings=64)),
        "dbrx": (t.DbrxForCausalLM, t.DbrxConfig(
            d_model=32, n_heads=4, n_layers=2, vocab_size=100,
            attn_config={"kv_n_heads": 2, "rope_theta": 10000.0},
            ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2})),
        "ministral": (t.MinistralForCausalLM, t.MinistralConfig(**SMALL, rope_theta=10000.0)),
        # BERT's kin: post-LayerNorm with more embeddings or adapters, then pre-LayerNorm
        "electra": (t.ElectraForMaskedLM, t.ElectraConfig(**no_head_dim, embedding_size=32)),
        "roc_bert": (t.RoCBertForMaskedLM, t.RoCBertConfig(
            **no_head_dim, pronunciation_vocab_size=10, shape_vocab_size=10,
            pronunciation_embed_dim=8, shape_embed_dim=8)),
        "xmod": (t.XmodForMaskedLM, t.XmodConfig(**no_head_dim, languages=["en_XX", "de_DE"],
                                                 default_language="en_XX")),
        "roberta-prelayernorm": (t.RobertaPreLayerNormForMaskedLM,
                                 t.RobertaPreLayerNormConfig(**no_head_dim)),
        "xlm-roberta-xl": (t.XLMRobertaXLForMaskedLM, t.XLMRobertaXLConfig(**no_head_dim)),
        "megatron-bert": (t.MegatronBertForMaskedLM, t.MegatronBertConfig(**no_head_dim)),
    }


def noisy(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """``model`` with Gaussian noise of relative size ``scale`` on every matrix (a derivation
    whose training moved each weight by that much)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(scale * p.std() * torch.randn_like(p))
    return model


def assert_heads_cut_as_computed(model: Any, layers: Any, shapes: list[tuple[int, int, int]],
                                 query: Any) -> None:
    """Each layer's heads as head matching reads them from ``model`` (an open checkpoint) are
    the module's: ``shapes[i]`` is layer i's (query heads, KV heads, head size), which its
    attention module states too, and each head's query rows are the module's ``query(attn)``
    weight cut head by head."""
    from verifier.probes.head_matching import load_circuits

    for index, (heads, groups, size) in enumerate(shapes):
        attn = layers[index].self_attn
        assert (attn.num_heads, attn.num_key_value_heads, attn.head_dim) == (heads, groups, size)
        circuits = load_circuits(model, index)
        assert circuits is not None
        assert (circuits.heads, circuits.groups, circuits.q.shape[1]) == (heads, groups, size)
        weight = query(attn).detach()
        assert torch.equal(circuits.q.float(), weight.view(heads, size, weight.shape[1]))


def save_in_memory_names(module: torch.nn.Module, saved: Any, memory: Any) -> None:
    """``module``'s state under the names it holds in memory (transformers renames some of them
    to a family's released names when it saves), in ``memory`` with the config that
    ``save_pretrained`` wrote to ``saved``."""
    from safetensors.torch import save_file

    memory.mkdir()
    save_file({k: v.contiguous() for k, v in module.state_dict().items()},
              str(memory / "model.safetensors"))
    (memory / "config.json").write_text((saved / "config.json").read_text())


def saved_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes ``save_pretrained`` writes for ``module``, without writing
    it (so a model built on the meta device at its released size will do): transformers drops
    tied copies and reverts the renamings it applies when it loads a release."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = remove_tied_weights_from_state_dict(module.state_dict(), module)
    return {k: tuple(v.shape) for k, v in revert_weight_conversion(module, state).items()}


def released_layout(model_type: str, auto: Any) -> Any:
    """The layout lineage reads from ``model_type``'s release at its default (released) size:
    the model built by ``auto`` on the meta device, so no weights are made, and resolved
    under the names ``save_pretrained`` writes, with its default config."""
    t = pytest.importorskip("transformers")
    from verifier.architectures import resolve_layout
    from verifier.readers.base import TensorInfo

    config = t.AutoConfig.for_model(model_type)
    with torch.device("meta"):
        module = auto.from_config(config)
    return resolve_layout([TensorInfo(k, v, "float32", "model.safetensors")
                           for k, v in saved_shapes(module).items()], config.to_dict())
