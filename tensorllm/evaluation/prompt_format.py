"""How a prompt becomes the token ids a model sees: plain text, or wrapped in the tokenizer's chat template.

The evaluation (``EvalConfig.chat_template``) and the served pyfunc model (:mod:`tensorllm.pyfunc_model`,
which records the option of the evaluation that promoted it) both call :func:`encode_prompt`, so a request
to a registered model is formatted exactly as the evaluation formatted its prompts.

* ``chat_template=False`` (the default, LASER's protocol): the prompt as text, with the tokenizer's usual
  special tokens (a BOS for tokenizers that add one).
* ``chat_template=True``: the prompt is one user message, rendered by the tokenizer's chat template with
  the generation prompt (e.g. ``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`` for
  SmolLM2-Instruct). Only the prompt changes: teacher-forced answers are still scored as the tokens that
  ``" " + answer`` adds after the plain prompt (see :mod:`.tokens`), and classification candidates stay
  the single tokens ``" true"``, ``" false"``, ... .
"""

from __future__ import annotations

#: the two ways of formatting, by the value of the ``chat_template`` option
FORMATS = {False: "plain", True: "chat"}


def check_chat_template_option(value: object, what: str = "chat_template") -> bool:
    """``value`` if it is a bool; otherwise a ValueError naming it (the option is recorded, so no truthiness)."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True (the tokenizer's chat template) or False (plain prompts); got {value!r}")
    return value


def encode_prompt(tokenizer, prompt: str, chat_template: bool = False) -> list[int]:
    """Token ids of ``prompt`` as the model sees it (plain, or through the chat template; see the module docstring)."""
    check_chat_template_option(chat_template)
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"chat_template=True, but the tokenizer {type(tokenizer).__name__} has no chat template; "
                             "use chat_template=False (plain prompts) or a tokenizer with a template")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError(f"prompt {prompt!r:.80} tokenises to no tokens; a prompt must have at least one token")
    return ids

