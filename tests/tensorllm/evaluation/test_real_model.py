"""Every dataset on the real SmolLM2-135M-Instruct with a small limit, and the layer cache's exactness on it.

Marked ``real_model`` (needs the converted folder; ~1-2 minutes on 2 CPU cores). Limits are tiny, so
the metrics are only checked for range and consistency, not against expected accuracies.
"""

import math

import pytest
import torch

from tensorllm.evaluation import EvalConfig, HiddenStateCache, evaluate
from tensorllm.evaluation.batching import make_batches
from tensorllm.evaluation.layer_skip import LayerInput, record_layer_input, replay_prefix
from tensorllm.evaluation.scoring import forward_tail_logits
from tensorllm.evaluation.tokens import prompt_answer_ids

pytestmark = pytest.mark.real_model

LIMIT = 4  # items per dataset: enough to exercise batching with padding, small enough for CPU


@pytest.mark.parametrize("dataset", ["qa_wikidata", "hotpotqa", "fever", "bios_profession", "counterfact"])
def test_dataset_evaluates_on_smollm2(dataset, smollm2, tmp_path):
    model, tokenizer = smollm2
    result = evaluate(model, tokenizer, EvalConfig(dataset=dataset, split="val", limit=LIMIT, batch_size=LIMIT),
                      examples_out=tmp_path / "ex.jsonl")  # fmt: skip
    assert result.n == LIMIT and 0.0 <= result.accuracy <= 1.0 and 0.0 <= result.top1_accuracy <= 1.0
    assert math.isfinite(result.loss) and result.loss > 0  # an NLL of a real answer is never 0 for a 135M model
    assert result.task_counts["items"] > LIMIT
    if dataset == "bios_profession":
        assert result.task_counts["professions"] == 19  # single-token " <profession>" for SmolLM2 (of 28)
        assert result.task_counts["items"] == 190  # 19 professions x 10 bios
    if dataset == "fever":
        assert result.task_counts["items"] == 6510  # 6,666 labelled lines - 154 merged - 2 conflicting claims


def test_replayed_prefix_matches_full_forward_on_smollm2(smollm2):
    model, tokenizer = smollm2
    texts = [("The capital of France is", "Paris"), ("The mother tongue of Danielle Darrieux is", "French"),
             ("Tokyo is in", "Japan")]  # fmt: skip
    sequences = []
    for prompt, answer in texts:
        ids = prompt_answer_ids(tokenizer, prompt, answer)
        sequences.append(ids.prompt + ids.answer)
    batch = make_batches(sequences, batch_size=3, pad_id=tokenizer.pad_token_id)[0]
    width = batch.input_ids.shape[1]
    real = batch.attention_mask.bool()
    with torch.no_grad():
        full = forward_tail_logits(model, batch, keep=width)
        for layer in (1, 15, 29):
            with record_layer_input(model, layer) as recorder:
                forward_tail_logits(model, batch, keep=1)
            with replay_prefix(model, layer, LayerInput(recorder.hidden, recorder.tuple_len)):
                replayed = forward_tail_logits(model, batch, keep=width)
            assert (replayed - full)[real].abs().max() < 1e-4, layer  # the brief's fp32 bound


def test_cached_evaluation_equals_full_on_smollm2(smollm2):
    model, tokenizer = smollm2
    config = dict(dataset="fever", split="val", limit=LIMIT, batch_size=2)  # 2 batches: per-batch entries
    full = evaluate(model, tokenizer, EvalConfig(**config))
    cache = HiddenStateCache()
    miss = evaluate(model, tokenizer, EvalConfig(**config, first_changed_layer=20), cache=cache)
    hit = evaluate(model, tokenizer, EvalConfig(**config, first_changed_layer=20), cache=cache)
    assert (miss.layer_cache, hit.layer_cache) == ("miss", "hit")
    for r in (miss, hit):
        assert r.accuracy == full.accuracy and r.top1_accuracy == full.top1_accuracy
        assert r.loss == pytest.approx(full.loss, abs=1e-4)
