"""The paper's (LASER's) prompt templates, one function per dataset, so tests can check them on known strings.

TensorLLM reuses LASER's preprocessing; the templates below follow LASER's code
(docs/evaluation.md, "Where the protocol comes from").
"""

from __future__ import annotations

_END_PUNCT = (".", "?")


def qa_wikidata_prompt(context: str) -> str:
    """BIG-bench WikidataQA: the ``inputs``/``context`` string is the prompt, verbatim (LASER adds nothing)."""
    return context


def hotpotqa_prompt(question: str) -> str:
    """``"{question} The answer is"``; a ``"?"`` is added when the question ends in neither ``"?"`` nor ``"."``."""
    question = question.strip()
    if not question.endswith(_END_PUNCT):
        question += "?"
    return f"{question} The answer is"


def fever_prompt(claim: str) -> str:
    """LASER's FEVER prompt; the ``"."`` after the claim only when it ends in neither ``"."`` nor ``"?"``.

    LASER's code has a period after "true or false" (the paper prints "?"); we follow the code.
    """
    claim = claim.strip()
    if not claim.endswith(_END_PUNCT):
        claim += "."
    return f"Consider the following claim: {claim} Is this claim true or false. The claim is"


def bios_prompt(bio: str) -> str:
    """LASER's Bios-profession prompt; the ``"."`` after the bio only when it ends in neither ``"."`` nor ``"?"``.

    Same rule as FEVER (and as LASER-derived code for the Bios prompts): most bios already end with a
    period, and an unconditional ``"."`` would give ``".."``.
    """
    bio = bio.strip()
    if not bio.endswith(_END_PUNCT):
        bio += "."
    return (
        f"Consider the following text: {bio} What is the profession of the person in this text? "
        "The profession of this person is"
    )
