"""Prompt/answer token ids and single-token candidates (tiny BPE and, cheaply, the real SmolLM2 tokenizer)."""

import pytest

from tensorllm.evaluation.tokens import candidate_token_ids, prompt_answer_ids, single_token_id


def test_answer_ids_follow_the_prompt_ids(tiny_tokenizer):
    ids = prompt_answer_ids(tiny_tokenizer, "The capital of France is", "Paris")
    joint = tiny_tokenizer("The capital of France is Paris")["input_ids"]
    assert ids.prompt + ids.answer == joint and not ids.boundary_merge


def test_boundary_merge_falls_back_to_separate_tokenisation(tiny_tokenizer):
    # a prompt ending in a space: "is " + " Paris" -> the joint text has a double space, tokenised differently
    ids = prompt_answer_ids(tiny_tokenizer, "The capital is ", "Paris")
    assert ids.prompt == tiny_tokenizer("The capital is ")["input_ids"]
    assert ids.answer and tiny_tokenizer.decode(ids.answer).strip() == "Paris"


def test_candidates(tiny_tokenizer):
    true_id, false_id = candidate_token_ids(tiny_tokenizer, ("true", "false"))
    assert tiny_tokenizer.decode([true_id]) == " true" and tiny_tokenizer.decode([false_id]) == " false"
    with pytest.raises(ValueError, match="'software engineer' is not a single token"):
        candidate_token_ids(tiny_tokenizer, ("true", "software engineer"))
    with pytest.raises(ValueError, match="repeated token ids"):
        candidate_token_ids(tiny_tokenizer, ("true", "true"))


def test_smollm2_single_token_professions(smollm2_tokenizer):
    assert single_token_id(smollm2_tokenizer, "true") == 2629  # SmolLM2 vocab: " true"
    assert single_token_id(smollm2_tokenizer, "false") == 7065  # " false"
    assert single_token_id(smollm2_tokenizer, "poet") is not None
    assert single_token_id(smollm2_tokenizer, "software engineer") is None  # two words, two tokens
