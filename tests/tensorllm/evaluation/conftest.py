"""Fixtures for the evaluation tests: a tiny trained BPE tokenizer, tiny random models, a tiny data folder,
and (for tests marked ``real_model``) SmolLM2-135M-Instruct from the converted cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import CORPUS, SMOLLM2_FOLDER, make_tiny_model, write_tiny_data


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE trained in-process on a tiny corpus (" true", " poet", ... are single tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    """A 4-layer random Llama with GQA (4 query heads, 2 KV heads)."""
    return make_tiny_model("llama", len(tiny_tokenizer))


@pytest.fixture()
def data_copy(tmp_path) -> Path:
    """A fresh, writable tiny data folder (for tests that corrupt files)."""
    return write_tiny_data(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (cheap); skipped where the converted model folder is absent."""
    if not (SMOLLM2_FOLDER / "tokenizer.json").is_file():
        pytest.skip(f"SmolLM2 folder {SMOLLM2_FOLDER} not found (run tensorllm.models.resolve_model('smollm2-135m'))")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SMOLLM2_FOLDER)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, fp32 on CPU; for tests marked real_model."""
    if not (SMOLLM2_FOLDER / "model.safetensors").is_file():
        pytest.skip(f"SmolLM2 folder {SMOLLM2_FOLDER} not found (run tensorllm.models.resolve_model('smollm2-135m'))")
    from tensorllm.models import load_model

    return load_model(SMOLLM2_FOLDER)
