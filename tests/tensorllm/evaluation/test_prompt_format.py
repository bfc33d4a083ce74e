"""Prompt formatting (plain or the tokenizer's chat template): the ids, the EvalConfig option, and evaluate under it."""

import copy

import pytest

from tensorllm.evaluation import EvalConfig, evaluate
from tensorllm.evaluation.prompt_format import encode_prompt

# a template in the style of ChatML, small enough for the tiny BPE (Jinja: {{ }} is evaluated by the tokenizer)
TEMPLATE = ("{% for m in messages %}<pad>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}"
            "{% if add_generation_prompt %}<pad>assistant:{% endif %}")


@pytest.fixture()
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)  # the session fixture stays template-free
    tok.chat_template = TEMPLATE
    return tok


def test_plain_is_the_tokenizers_own_encoding(tiny_tokenizer):
    text = "The capital of France is"
    assert encode_prompt(tiny_tokenizer, text) == tiny_tokenizer(text)["input_ids"]
    assert encode_prompt(tiny_tokenizer, text, chat_template=False) == tiny_tokenizer(text)["input_ids"]


def test_chat_wraps_the_prompt_in_the_template(chat_tokenizer):
    text = "The capital of France is"
    ids = encode_prompt(chat_tokenizer, text, chat_template=True)
    rendered = "<pad>user: The capital of France is<eos><pad>assistant:"
    assert ids == chat_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    plain = encode_prompt(chat_tokenizer, text)
    assert ids != plain and len(ids) > len(plain)  # the template adds a role header and the generation prompt


def test_bad_options_are_named(tiny_tokenizer):
    with pytest.raises(ValueError, match="chat_template=True, but the tokenizer .* has no chat template"):
        encode_prompt(tiny_tokenizer, "The answer is", chat_template=True)
    with pytest.raises(ValueError, match=r"chat_template must be True .* or False .*; got 'yes'"):
        encode_prompt(tiny_tokenizer, "The answer is", chat_template="yes")
    with pytest.raises(ValueError, match=r"chat_template must be True .* or False .*; got 1"):
        EvalConfig(dataset="fever", chat_template=1)
    assert EvalConfig(dataset="fever").chat_template is False  # off by default: LASER's plain prompts


@pytest.mark.parametrize("dataset", ["qa_wikidata", "fever"])
def test_evaluate_with_the_chat_template(dataset, tiny_llama, chat_tokenizer, tiny_data_dir, tmp_path):
    """The option reaches the model: same items and answers, other context, so other losses; it is recorded."""
    plain = evaluate(tiny_llama, chat_tokenizer, EvalConfig(dataset=dataset, split="all", batch_size=3,
                                                            data_dir=tiny_data_dir))
    chat = evaluate(tiny_llama, chat_tokenizer, EvalConfig(dataset=dataset, split="all", batch_size=3,
                                                           data_dir=tiny_data_dir, chat_template=True))
    assert (plain.chat_template, chat.chat_template) == (False, True)
    assert chat.to_dict()["chat_template"] is True and chat.n == plain.n
    assert chat.loss != pytest.approx(plain.loss, abs=1e-6)  # the answer tokens now follow the chat prompt


def test_smollm2_chat_prompt(smollm2_tokenizer):
    """The real template: a user turn and the assistant header (cheap: the tokenizer only)."""
    ids = encode_prompt(smollm2_tokenizer, "What is the capital of France?", chat_template=True)
    text = smollm2_tokenizer.decode(ids)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
