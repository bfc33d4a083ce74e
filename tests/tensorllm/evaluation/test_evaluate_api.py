"""The top-level API end to end on a tiny random Llama and the tiny data folder."""

import json
import math

import pytest

from tensorllm.evaluation import EvalConfig, HiddenStateCache, compare_paired, evaluate, load_task

REQUIRED_KEYS = {"dataset", "split", "n", "accuracy", "accuracy_ci", "loss", "top1_accuracy", "examples_per_second"}


@pytest.mark.parametrize(
    "dataset, kind",
    [("qa_wikidata", "generation"), ("hotpotqa", "generation"), ("fever", "classification"),
     ("bios_profession", "classification"), ("counterfact", "generation")],
)  # fmt: skip
def test_each_dataset_end_to_end(dataset, kind, tiny_llama, tiny_tokenizer, tiny_data_dir, tmp_path):
    out = tmp_path / "examples.jsonl"
    config = EvalConfig(dataset=dataset, split="all", batch_size=3, data_dir=tiny_data_dir)
    result = evaluate(tiny_llama, tiny_tokenizer, config, examples_out=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.n == len(rows) > 0 and result.accuracy_kind == kind
    assert set(rows[0]) == {"id", "prompt", "answer", "prediction", "correct", "loss", "top1_prediction", "top1_correct",
                            "exact_match"}
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert result.loss == pytest.approx(sum(r["loss"] for r in rows) / len(rows))
    assert result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    d = result.to_dict()
    assert REQUIRED_KEYS <= set(d) and json.dumps(d)  # JSON-ready
    assert d["examples_per_second"] > 0 and d["examples_path"] == str(out)
    if kind == "classification":
        task = load_task(dataset, tiny_tokenizer, data_dir=tiny_data_dir)
        assert {r["prediction"] for r in rows} <= set(task.candidates)


def test_generate_false_leaves_generative_accuracy_empty(tiny_llama, tiny_tokenizer, tiny_data_dir):
    result = evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset="qa_wikidata", split="all", generate=False, data_dir=tiny_data_dir))
    assert result.accuracy is None and result.accuracy_ci is None and result.accuracy_kind is None
    assert 0.0 <= result.top1_accuracy <= 1.0 and math.isfinite(result.loss)


def test_layer_cache_gives_identical_metrics(tiny_llama, tiny_tokenizer, tiny_data_dir, tmp_path):
    base = EvalConfig(dataset="fever", split="all", batch_size=2, data_dir=tiny_data_dir)
    full = evaluate(tiny_llama, tiny_tokenizer, base, examples_out=tmp_path / "full.jsonl")
    cache = HiddenStateCache()
    cached_config = EvalConfig(dataset="fever", split="all", batch_size=2, data_dir=tiny_data_dir, first_changed_layer=2)
    miss = evaluate(tiny_llama, tiny_tokenizer, cached_config, cache=cache)
    hit = evaluate(tiny_llama, tiny_tokenizer, cached_config, cache=cache, examples_out=tmp_path / "hit.jsonl")
    assert (full.layer_cache, miss.layer_cache, hit.layer_cache) == ("off", "miss", "hit")
    for r in (miss, hit):
        assert r.accuracy == full.accuracy and r.loss == pytest.approx(full.loss, abs=1e-6)
    cmp = compare_paired(tmp_path / "full.jsonl", tmp_path / "hit.jsonl")
    assert cmp.accuracy_diff == 0 and abs(cmp.loss_diff) < 1e-6


def test_limit_and_split(tiny_llama, tiny_tokenizer, tiny_data_dir):
    task = load_task("counterfact", data_dir=tiny_data_dir)
    a = evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset="counterfact", split="all", limit=3, generate=False), task=task)
    assert a.n == 3 and a.limit == 3
    with pytest.raises(ValueError, match="task 'counterfact' was passed for config.dataset 'fever'"):
        evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset="fever"), task=task)


def test_config_errors():
    with pytest.raises(ValueError, match="Unknown dataset 'mnli'; allowed"):
        EvalConfig(dataset="mnli")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        EvalConfig(dataset="fever", split="dev")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        EvalConfig(dataset="fever", batch_size=0)
    with pytest.raises(ValueError, match="first_changed_layer must be None or an integer >= 0"):
        EvalConfig(dataset="fever", first_changed_layer=-1)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        EvalConfig(dataset="fever", limit=-5)
    with pytest.raises(TypeError, match="config must be an EvalConfig"):
        evaluate(None, None, {"dataset": "fever"})


def test_model_mode_is_restored(tiny_llama, tiny_tokenizer, tiny_data_dir):
    tiny_llama.train()
    try:
        evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset="fever", split="all", limit=2, data_dir=tiny_data_dir))
        assert tiny_llama.training
    finally:
        tiny_llama.eval()
