"""The paper's (LASER's) prompt templates on hand-made inputs."""

from tensorllm.evaluation.data.prompts import bios_prompt, fever_prompt, hotpotqa_prompt, qa_wikidata_prompt


def test_qa_wikidata_prompt_is_the_context_verbatim():
    assert qa_wikidata_prompt("The capital of France is") == "The capital of France is"


def test_hotpotqa_prompt_adds_question_mark_only_when_needed():
    assert hotpotqa_prompt("Who wrote Hamlet?") == "Who wrote Hamlet? The answer is"
    assert hotpotqa_prompt("Name the author.") == "Name the author. The answer is"
    assert hotpotqa_prompt("Who wrote Hamlet") == "Who wrote Hamlet? The answer is"


def test_fever_prompt_adds_period_only_when_needed():
    expected = "Consider the following claim: Paris is in France. Is this claim true or false. The claim is"
    assert fever_prompt("Paris is in France") == expected
    assert fever_prompt("Paris is in France.") == expected
    assert fever_prompt("Is Paris in France?") == (
        "Consider the following claim: Is Paris in France? Is this claim true or false. The claim is"
    )


def test_bios_prompt():
    expected = (
        "Consider the following text: She writes poems. What is the profession of the person in this text? "
        "The profession of this person is"
    )
    assert bios_prompt("She writes poems") == expected
    assert bios_prompt("She writes poems.") == expected  # no ".." when the bio already ends a sentence
