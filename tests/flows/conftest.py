"""Fixtures for the flow tests: a real Prefect API and a tiny Llama that has a real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API server (subprocess, temporary sqlite DB) for the whole session; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    """A 4-layer GQA Llama (random weights) with SmolLM2's tokenizer, saved as a HF folder.

    The real tokenizer makes the datasets' prompts tokenise as they do for SmolLM2; the random weights
    keep the sweep fast. Accuracies are near zero, losses differ between variants, which is enough to
    exercise selection and promotion.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tensorllm.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def other_tiny_llm(tiny_llm, tmp_path_factory) -> Path:
    """Another base model: the same architecture as ``tiny_llm`` with other random weights (seed 1)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_llm)
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("other-tiny-llm")
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llm).save_pretrained(folder)
    return folder
