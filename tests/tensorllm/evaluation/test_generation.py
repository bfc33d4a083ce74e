"""Greedy generation with left padding, and the answer-matching rule."""

import pytest
import torch

from tensorllm.evaluation.batching import make_batches
from tensorllm.evaluation.generation import answer_matches, generate_batch, greedy_config


def test_answer_matches_continuation_only_by_default():
    assert answer_matches("Paris", " paris, of course")  # case-insensitive
    assert answer_matches("  Paris ", "It is PARIS.")  # stripped
    assert not answer_matches("Paris", " London", prompt="Is it Paris or London?")  # prompt ignored ...
    assert answer_matches("Paris", " London", prompt="Is it Paris or London?", include_prompt=True)  # ... unless LASER mode
    with pytest.raises(ValueError, match="empty answer"):
        answer_matches("  ", "x")


def test_batched_generation_equals_one_by_one(tiny_llama):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, tiny_llama.config.vocab_size, (n,), generator=g).tolist() for n in (7, 2, 11, 4)]
    config = greedy_config(6, pad_id=0, eos_id=None)
    alone = [generate_batch(tiny_llama, make_batches([p], 1, 0)[0], config)[0] for p in prompts]
    batch = make_batches(prompts, 4, 0)[0]
    together = dict(zip(batch.indices, generate_batch(tiny_llama, batch, config)))
    assert [together[i] for i in range(len(prompts))] == alone
    assert all(1 <= len(t) <= 6 for t in alone)  # min 1 new token, max 6 (shorter if the model's EOS came)


def test_generation_stops_at_eos(tiny_llama):
    # a random model often repeats one token: take the first prompt whose first two new tokens differ
    for start in range(3, 60):
        prompt = [start, start + 4, start + 8]
        first = generate_batch(tiny_llama, make_batches([prompt], 1, 0)[0], greedy_config(3, 0, 999))[0]
        if first[0] != first[1]:
            break
    assert len(first) == 3 and first[0] != first[1]  # precondition for the checks below
    cut = generate_batch(tiny_llama, make_batches([prompt], 1, 0)[0], greedy_config(3, 0, first[1]))[0]
    assert cut == first[:2]  # the second token declared EOS: kept, nothing after it
    # declaring the first token EOS cannot end at once: min_new_tokens=1 (LASER) masks EOS at step one
    masked = generate_batch(tiny_llama, make_batches([prompt], 1, 0)[0], greedy_config(3, 0, first[0]))[0]
    assert masked[0] != first[0]


def test_greedy_config_rejects_bad_length():
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        greedy_config(0, 0, None)


def test_decoding_batches_are_a_multiple_of_the_evaluation_batch():
    """Decoding shares each step's weight reads across more rows than a teacher-forced batch (4x: see the
    constant's note); a bad batch size is refused with what is allowed."""
    from tensorllm.evaluation.generation import DECODE_BATCH_FACTOR, decode_batch_size

    assert decode_batch_size(16) == 16 * DECODE_BATCH_FACTOR == 64
    assert decode_batch_size(1) == DECODE_BATCH_FACTOR
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        decode_batch_size(0)
