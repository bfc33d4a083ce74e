"""Progress reaches a listener only when one listens: rows of an evaluation, rank configurations of a sweep."""

from __future__ import annotations

from collections import defaultdict

import torch

from tensorllm import progress
from tensorllm.evaluation import EvalConfig, evaluate
from tensorllm.tucker import tucker_sweep


class Recorder:
    """A listener that keeps what it was told (the CLI's is a tqdm bar per stage)."""

    def __init__(self):
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = defaultdict(int)
        self.closed = False

    def expect(self, stage, total):
        self.totals[stage] = total

    def advance(self, stage, n):
        self.done[stage] += n

    def close(self):
        self.closed = True


def test_an_evaluation_reports_every_row_of_the_teacher_forced_pass(tiny_llama, tiny_tokenizer, tiny_data_dir):
    recorder = Recorder()
    with progress.listening(recorder):
        result = evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset="qa_wikidata", split="all", batch_size=3,
                                                                 data_dir=tiny_data_dir))
    assert recorder.totals["teacher-forced"] == result.n  # the total is known, so the bar has an ETA
    assert recorder.done["teacher-forced"] == result.n  # each row once, whatever the batch size
    assert "generation" in recorder.totals  # a generative dataset also generates (its row count varies: drafts)
    assert recorder.closed


def test_a_rank_sweep_reports_each_configuration():
    torch.manual_seed(0)
    recorder = Recorder()
    with progress.listening(recorder):
        tucker_sweep(torch.randn(16, 4, 6, 2), [(4, 2, 2), (8, 4, 3), (2, 2, 2)])
    assert recorder.totals["decompose"] == 3 and recorder.done["decompose"] == 3


def test_nothing_is_reported_without_a_listener_or_after_the_block(tiny_llama, tiny_tokenizer, tiny_data_dir):
    recorder = Recorder()
    with progress.listening(recorder):
        pass
    tucker_sweep(torch.randn(16, 4, 6, 2), [(4, 2, 2)])  # outside the block: nobody is told
    assert recorder.done == {} and progress.tqdm_listener(False) is None  # --json / not a terminal: no listener
