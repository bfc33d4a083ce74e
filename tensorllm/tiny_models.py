"""Tiny random Hugging Face models, built from configs, for tests (no download, fp32, deterministic): the
project's unit tests and benchmarks use them, and so can a user checking a set-up without a real model.

One entry per attention layout the library supports; several entries share a layout but differ in what
the tests must cover (MHA vs GQA, biases, fused/interleaved QKV, encoder vs decoder)::

    from tensorllm.tiny_models import TINY_CONFIGS, build_tiny

    model = build_tiny("llama_gqa")            # LlamaForCausalLM, 6 query heads / 2 KV heads, eval mode
    base = build_tiny("bert", task_head=False)  # BertModel instead of BertForMaskedLM

Every model has 2 layers, a 64-token vocabulary and eager attention (the per-head computation is
plain ``matmul``/``softmax``, which keeps forward hooks on the attention modules meaningful and the
numbers reproducible). Weights come from the model's own initialiser under ``torch.manual_seed(seed)``.

Models this small run fastest on one thread, and on a busy machine torch's default thread pool can be
tens of times slower; test modules wrap themselves in :func:`single_thread`.

``ATTENTION_MODULE[name]`` is the dotted path (with ``{l}`` for the layer) of the attention module that
projects Q, K, V and hands them, as ``[batch, heads, seq, d_head]``, to the modeling file's
``eager_attention_forward`` (its ``hidden_states`` input is what the Q/K/V projections see).
``ATTENTION_OUT_PROJ[name]`` is the dotted path (with ``{l}`` for the layer) of the module whose *input*
is the concatenation of the per-head attention outputs, ``[..., n_heads * d_head]``, relative to the
model built with ``task_head=True``; tests hook it to see what each head produced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import transformers
from transformers import PretrainedConfig

VOCAB = 64
N_LAYERS = 2
MAX_POSITIONS = 64


def _llama(**overrides) -> PretrainedConfig:
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=N_LAYERS,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=MAX_POSITIONS)
    kwargs.update(overrides)
    return transformers.LlamaConfig(**kwargs)


def _llama_gqa() -> PretrainedConfig:
    # 6 query heads share 2 KV heads (group size 3), d_head = 48 / 6 = 8
    return _llama(hidden_size=48, num_attention_heads=6, num_key_value_heads=2)


def _llama_mqa() -> PretrainedConfig:
    # multi-query: 4 query heads share 1 KV head
    return _llama(num_key_value_heads=1)


def _qwen3() -> PretrainedConfig:
    # per-head RMS norms on q and k (q_norm, k_norm) after the projections; GQA; no biases
    return transformers.Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                    head_dim=8, max_position_embeddings=MAX_POSITIONS)


def _gemma2() -> PretrainedConfig:
    # head_dim (16) != d_model / heads (8); MQA; logit soft-capping; sliding window off for a 2-layer model
    return transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=1,
                                     head_dim=16, max_position_embeddings=MAX_POSITIONS)


def _gemma() -> PretrainedConfig:
    # Gemma 1: head_dim given explicitly (8 here), GQA; embeddings scaled by sqrt(d_model)
    return transformers.GemmaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                    head_dim=8, max_position_embeddings=MAX_POSITIONS)


def _gemma3_text_config() -> PretrainedConfig:
    # head_dim (16) != d_model / heads (8); MQA; per-head q/k RMS norms; local/global layers (window 16)
    return transformers.Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=1,
                                         head_dim=16, max_position_embeddings=MAX_POSITIONS, sliding_window=16)


def _gemma3() -> PretrainedConfig:
    # the multimodal wrapper: the text model sits under model.language_model (saved as language_model.model),
    # next to a SigLIP vision tower whose layers are also "layers.N.self_attn.*" (hidden 16, not 32)
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=N_LAYERS,
                                             num_attention_heads=2, image_size=16, patch_size=8)
    return transformers.Gemma3Config(text_config=_gemma3_text_config().to_dict(), vision_config=vision.to_dict(),
                                     mm_tokens_per_image=4, image_token_index=VOCAB - 1, boi_token_index=VOCAB - 3,
                                     eoi_token_index=VOCAB - 2)


def _llama_like(config_class: str, **overrides) -> PretrainedConfig:
    """A decoder with Llama's attention modules (q/k/v/o_proj), GQA with 2 KV heads, from its own config class."""
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=N_LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kwargs.update(overrides)
    return getattr(transformers, config_class)(**kwargs)


def _phi3() -> PretrainedConfig:
    # fused qkv_proj rows [Q | K | V]; GQA; fused gate_up_proj
    return _llama_like("Phi3Config")


def _falcon() -> PretrainedConfig:
    # fused query_key_value [Q_1..Q_4 | K | V], multi-query (one KV head); parallel attention; rotary
    return transformers.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=N_LAYERS,
                                     num_attention_heads=4, multi_query=True, new_decoder_architecture=False,
                                     max_position_embeddings=MAX_POSITIONS, bos_token_id=1, eos_token_id=2)


def _falcon_gqa() -> PretrainedConfig:
    # Falcon's new decoder architecture (40B/180B): rows per KV head [Q_1, Q_2, K, V]; 2 KV heads; biases
    return transformers.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=N_LAYERS,
                                     num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True, bias=True,
                                     max_position_embeddings=MAX_POSITIONS, bos_token_id=1, eos_token_id=2)


def _starcoder2() -> PretrainedConfig:
    # Llama-style attention with biases on all four projections; mlp.c_fc / mlp.c_proj
    return _llama_like("Starcoder2Config", sliding_window=None)


def _olmo() -> PretrainedConfig:
    return _llama_like("OlmoConfig")


def _olmo2() -> PretrainedConfig:
    # q_norm / k_norm over all heads together (RMSNorm over h*d and kv*d), applied before the head split
    return _llama_like("Olmo2Config")


def _cohere() -> PretrainedConfig:
    # parallel attention and MLP; rotary interleaved on adjacent pairs
    return _llama_like("CohereConfig", pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _granite() -> PretrainedConfig:
    # Llama with scaled embeddings, attention, residuals and logits
    return _llama_like("GraniteConfig", attention_multiplier=0.3, embedding_multiplier=2.0,
                       residual_multiplier=0.5, logits_scaling=2.0)


def _stablelm() -> PretrainedConfig:
    # LayerNorm (with biases), partial rotary (25% of each head)
    return _llama_like("StableLmConfig")


def _gpt_bigcode() -> PretrainedConfig:
    # Linear c_attn [Q_1..Q_4 | K | V] (multi-query); biases; absolute positions
    return transformers.GPTBigCodeConfig(vocab_size=VOCAB, n_embd=32, n_layer=N_LAYERS, n_head=4, multi_query=True,
                                         n_positions=MAX_POSITIONS, bos_token_id=1, eos_token_id=2)


def _mixtral() -> PretrainedConfig:
    # sparse MoE FFN (2 experts, top-2): only the attention is compressed; the experts have no LASER names
    return _llama_like("MixtralConfig", num_local_experts=2, num_experts_per_tok=2, sliding_window=None)


def _mistral() -> PretrainedConfig:
    return transformers.MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=8, max_position_embeddings=MAX_POSITIONS, sliding_window=None)


def _qwen2() -> PretrainedConfig:
    # Qwen2 has biases on q/k/v (not on o); GQA with 2 KV heads
    return transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=MAX_POSITIONS, use_sliding_window=False)


def _gpt2() -> PretrainedConfig:
    # Conv1D weights ([in, out]); c_attn fuses Q|K|V; biases everywhere
    return transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=N_LAYERS, n_head=4,
                                   n_positions=MAX_POSITIONS, bos_token_id=0, eos_token_id=0)


def _gptj() -> PretrainedConfig:
    # rotary on the first 4 of the 8 dims of each head (default rotary_dim=64 exceeds d_head)
    return transformers.GPTJConfig(vocab_size=VOCAB, n_embd=32, n_layer=N_LAYERS, n_head=4, rotary_dim=4,
                                   n_positions=MAX_POSITIONS, bos_token_id=0, eos_token_id=0)


def _gpt_neox() -> PretrainedConfig:
    # query_key_value rows interleaved per head; partial rotary (default factor 0.25); biases
    return transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                      max_position_embeddings=MAX_POSITIONS)


def _opt() -> PretrainedConfig:
    # biases on all four projections
    return transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
                                  num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                  max_position_embeddings=MAX_POSITIONS)


def _bert() -> PretrainedConfig:
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                   max_position_embeddings=MAX_POSITIONS)


def _roberta() -> PretrainedConfig:
    # positions start after pad_token_id (=1), hence the +2
    return transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                      max_position_embeddings=MAX_POSITIONS + 2)


#: name -> factory of a fresh tiny config
TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": _llama,
    "llama_gqa": _llama_gqa,
    "llama_mqa": _llama_mqa,
    "qwen3": _qwen3,
    "gemma2": _gemma2,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "gpt2": _gpt2,
    "gptj": _gptj,
    "gpt_neox": _gpt_neox,
    "opt": _opt,
    "bert": _bert,
    "roberta": _roberta,
    "gemma": _gemma,
    "gemma3_text": _gemma3_text_config,
    "gemma3": _gemma3,
    "phi3": _phi3,
    "falcon": _falcon,
    "falcon_gqa": _falcon_gqa,
    "starcoder2": _starcoder2,
    "olmo": _olmo,
    "olmo2": _olmo2,
    "cohere": _cohere,
    "granite": _granite,
    "stablelm": _stablelm,
    "gpt_bigcode": _gpt_bigcode,
    "mixtral": _mixtral,
}

#: the families added for detection by structure (issue 12); each has the same tests as the older ones
NEW_FAMILIES = ("gemma", "gemma3_text", "gemma3", "phi3", "falcon", "falcon_gqa", "starcoder2", "olmo", "olmo2",
                "cohere", "granite", "stablelm", "gpt_bigcode", "mixtral")
_LLAMA_STYLE = ("gemma", "gemma3_text", "starcoder2", "olmo", "olmo2", "cohere", "granite", "stablelm", "mixtral")

#: names whose task-head model is a masked LM (encoders); all others are causal LMs
ENCODERS = frozenset({"bert", "roberta"})

#: attention module (with "{l}" for the layer) that calls ``eager_attention_forward`` of its modeling file
ATTENTION_MODULE: dict[str, str] = {
    "llama": "model.layers.{l}.self_attn",
    "llama_gqa": "model.layers.{l}.self_attn",
    "llama_mqa": "model.layers.{l}.self_attn",
    "qwen3": "model.layers.{l}.self_attn",
    "gemma2": "model.layers.{l}.self_attn",
    "mistral": "model.layers.{l}.self_attn",
    "qwen2": "model.layers.{l}.self_attn",
    "gpt2": "transformer.h.{l}.attn",
    "gptj": "transformer.h.{l}.attn",
    "gpt_neox": "gpt_neox.layers.{l}.attention",
    "opt": "model.decoder.layers.{l}.self_attn",
    "bert": "bert.encoder.layer.{l}.attention.self",
    "roberta": "roberta.encoder.layer.{l}.attention.self",
    **{name: "model.layers.{l}.self_attn" for name in _LLAMA_STYLE + ("phi3",)},
    "gemma3": "model.language_model.layers.{l}.self_attn",
    "gpt_bigcode": "transformer.h.{l}.attn",
    # Falcon computes attention inline (no eager_attention_forward): only the output-projection tests apply
    "falcon": "transformer.h.{l}.self_attention",
    "falcon_gqa": "transformer.h.{l}.self_attention",
}

#: names whose Q/K pass through a rotary embedding (a per-position rotation) before attention
ROTARY = frozenset({"llama", "llama_gqa", "llama_mqa", "qwen3", "gemma2", "mistral", "qwen2", "gptj", "gpt_neox",
                    "gemma", "gemma3_text", "gemma3", "phi3", "falcon", "falcon_gqa", "starcoder2", "olmo", "olmo2",
                    "cohere", "granite", "stablelm", "mixtral"})

#: module (with "{l}" for the layer) whose input is the concatenated per-head attention output
ATTENTION_OUT_PROJ: dict[str, str] = {
    "llama": "model.layers.{l}.self_attn.o_proj",
    "llama_gqa": "model.layers.{l}.self_attn.o_proj",
    "llama_mqa": "model.layers.{l}.self_attn.o_proj",
    "qwen3": "model.layers.{l}.self_attn.o_proj",
    "gemma2": "model.layers.{l}.self_attn.o_proj",
    "mistral": "model.layers.{l}.self_attn.o_proj",
    "qwen2": "model.layers.{l}.self_attn.o_proj",
    "gpt2": "transformer.h.{l}.attn.c_proj",
    "gptj": "transformer.h.{l}.attn.out_proj",
    "gpt_neox": "gpt_neox.layers.{l}.attention.dense",
    "opt": "model.decoder.layers.{l}.self_attn.out_proj",
    "bert": "bert.encoder.layer.{l}.attention.output.dense",
    "roberta": "roberta.encoder.layer.{l}.attention.output.dense",
    **{name: "model.layers.{l}.self_attn.o_proj" for name in _LLAMA_STYLE + ("phi3",)},
    "gemma3": "model.language_model.layers.{l}.self_attn.o_proj",
    "falcon": "transformer.h.{l}.self_attention.dense",
    "falcon_gqa": "transformer.h.{l}.self_attention.dense",
    "gpt_bigcode": "transformer.h.{l}.attn.c_proj",
}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside the block (restores the previous setting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_config(name: str) -> PretrainedConfig:
    """A fresh config for ``name`` (one of :data:`TINY_CONFIGS`), with eager attention."""
    try:
        config = TINY_CONFIGS[name]()
    except KeyError:
        raise KeyError(f"no tiny model {name!r}; choose from {sorted(TINY_CONFIGS)}") from None
    config._attn_implementation = "eager"
    return config


def build_tiny(name: str, *, task_head: bool = True, seed: int = 0) -> torch.nn.Module:
    """A tiny random fp32 model in eval mode; the same ``(name, task_head, seed)`` gives the same weights.

    ``task_head=True`` gives ``*ForCausalLM`` (``*ForMaskedLM`` for encoders), whose parameter names carry
    the usual prefix ("model.", "transformer.", "bert.", ...); ``task_head=False`` gives the bare model.
    """
    config = tiny_config(name)
    if task_head:
        auto = transformers.AutoModelForMaskedLM if name in ENCODERS else transformers.AutoModelForCausalLM
    else:
        auto = transformers.AutoModel
    torch.manual_seed(seed)
    model = auto.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.float().eval()


def sample_input_ids(batch: int = 2, seq_len: int = 7, seed: int = 1) -> torch.Tensor:
    """Deterministic token ids in ``[2, VOCAB)`` (skips ids 0/1, which some configs use as pad)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, seq_len), generator=generator)


def tiny_tokenizer():
    """A word-level fast tokenizer over the 64-token vocabulary: ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``w3``..``w63``.

    Text is split on whitespace, so ``"w5 w17"`` encodes to ``[5, 17]``; ``</s>`` doubles as the pad token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


def save_tiny_with_tokenizer(name: str, folder, *, seed: int = 0, **save_kwargs):
    """Save ``build_tiny(name, seed=seed)`` (task head) and :func:`tiny_tokenizer` as a HF folder.

    ``save_kwargs`` go to ``save_pretrained`` (e.g. ``max_shard_size="20KB"`` for a sharded checkpoint).
    Returns ``(folder, model)``: the folder as a ``Path`` and the in-memory model that was saved.
    """
    from pathlib import Path

    folder = Path(folder)
    model = build_tiny(name, seed=seed)
    model.save_pretrained(folder, **save_kwargs)
    tiny_tokenizer().save_pretrained(folder)
    return folder, model
