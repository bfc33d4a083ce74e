"""Teacher-forced scoring on a model with known logits, and padding-invariance on a tiny random Llama."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tensorllm.evaluation.batching import make_batches, position_ids_from_mask
from tensorllm.evaluation.teacher_forced import run_teacher_forced

V = 10  # vocabulary of the fake model
HIGH = 10.0  # logit of the "next = current + 1" token; all others are 0


class PlusOneLM(nn.Module):
    """After token t it puts logit HIGH on (t + 1) % V and 0 elsewhere, whatever the context."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape, V)
        logits.scatter_(-1, ((input_ids + 1) % V)[..., None], HIGH)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


# -log softmax of the HIGH token: log(1 + (V-1) e^-HIGH); of any other token: log(e^HIGH + V - 1)
NLL_HIT = math.log(1 + (V - 1) * math.exp(-HIGH))
NLL_MISS = math.log(math.exp(HIGH) + V - 1)


def test_known_losses_top1_and_choice():
    sequences = [[1, 2, 3, 4, 5], [7, 1], [2, 3, 9]]  # prompt + answer
    answers = [[4, 5], [1], [3, 9]]  # row 0 follows +1 twice; row 1 misses; row 2 hits (2->3) then misses (3->9)
    run = run_teacher_forced(PlusOneLM(), sequences, answers, batch_size=2, pad_id=0, candidate_ids=[8, 1])
    losses = [s.loss for s in run.scores]
    # float32 log-softmax of logits ~10: absolute resolution ~ 10 * 2^-23 = 1.2e-6
    assert losses[0] == pytest.approx(NLL_HIT, abs=2e-6)
    assert losses[1] == pytest.approx(NLL_MISS, abs=2e-6)
    assert losses[2] == pytest.approx((NLL_HIT + NLL_MISS) / 2, abs=2e-6)  # mean over the 2 answer tokens
    assert [s.top1_token for s in run.scores] == [4, 8, 3]  # argmax after the prompt's last token
    assert [s.top1_correct for s in run.scores] == [True, False, True]
    # among candidate tokens [8, 1]: after 3 (row 0) and 2 (row 2) neither has HIGH -> tie -> first (0);
    # after 7 (row 1) token 8 has HIGH -> index 0 as well
    assert [s.choice for s in run.scores] == [0, 0, 0]
    assert run.layer_cache == "off"


def test_choice_is_argmax_among_candidates_only():
    # after token 7 the model prefers 8; among candidates [2, 8] that is index 1, among [2, 3] a tie -> index 0
    run = run_teacher_forced(PlusOneLM(), [[7, 2]], [[2]], batch_size=1, pad_id=0, candidate_ids=[2, 8])
    assert run.scores[0].choice == 1
    run = run_teacher_forced(PlusOneLM(), [[7, 2]], [[2]], batch_size=1, pad_id=0, candidate_ids=[2, 3])
    assert run.scores[0].choice == 0


def test_left_padding_positions():
    batch = make_batches([[5, 6, 7], [8]], batch_size=2, pad_id=0)[0]
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]  # each row's first real token is position 0
    assert position_ids_from_mask(torch.tensor([[0, 1, 1, 1]])).tolist() == [[0, 0, 1, 2]]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        make_batches([[1]], batch_size=0, pad_id=0)


def test_batched_equals_one_by_one_on_tiny_llama(tiny_llama):
    g = torch.Generator().manual_seed(0)
    lengths = [(9, 3), (4, 1), (15, 2), (6, 5), (2, 1)]  # (prompt, answer) lengths: lots of padding
    sequences, answers = [], []
    for p, a in lengths:
        seq = torch.randint(3, tiny_llama.config.vocab_size, (p + a,), generator=g).tolist()
        sequences.append(seq)
        answers.append(seq[p:])
    single = run_teacher_forced(tiny_llama, sequences, answers, batch_size=1, pad_id=0).scores
    batched = run_teacher_forced(tiny_llama, sequences, answers, batch_size=5, pad_id=0).scores
    for s, b in zip(single, batched):
        assert b.loss == pytest.approx(s.loss, abs=1e-4)  # fp32 rounding only
        assert b.top1_token == s.top1_token


def test_bad_answer_lengths():
    with pytest.raises(ValueError, match="got 1 sequences but 2 answers"):
        run_teacher_forced(PlusOneLM(), [[1, 2]], [[2], [3]], batch_size=1, pad_id=0)
