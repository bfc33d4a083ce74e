"""Generation of a variant from the base's drafts (tensorllm.evaluation.drafts): the same continuations as
token-by-token generation, fewer tokens decoded, and a fallback whenever the drafts cannot be used."""

import pytest
import torch

from tensorllm.evaluation import EvalConfig, HiddenStateCache, evaluate, read_examples
from tensorllm.evaluation.drafts import continue_from_drafts
from tensorllm.evaluation.scoring import TokenScores

LAYER = 2  # the tiny Llama has 4 layers; the "variant" edits layer 2 only


def _config(data_dir, tmp_path, **kw):
    return EvalConfig(dataset=kw.pop("dataset", "counterfact"), split="all", batch_size=3, data_dir=data_dir,
                      cache_dir=tmp_path / "cache", **kw)


def _edited(model, scale):
    """Context: layer LAYER's o_proj scaled by ``scale`` (a variant that leaves layers < LAYER alone)."""
    weight = model.model.layers[LAYER].self_attn.o_proj.weight
    original = weight.detach().clone()

    class _Edit:
        def __enter__(self):
            with torch.no_grad():
                weight.mul_(scale)

        def __exit__(self, *exc):
            with torch.no_grad():
                weight.copy_(original)

    return _Edit()


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
@pytest.mark.parametrize("scale", [0.97, 0.6, 0.0])  # a slight edit (most rows accepted) to a broken layer
@pytest.mark.parametrize("dataset", ["counterfact", "qa_wikidata"])
def test_drafted_generation_equals_token_by_token(tiny_llama, tiny_tokenizer, tiny_data_dir, tmp_path, scale, dataset):
    cache = HiddenStateCache(disk_dir=tmp_path / "cache")
    base = evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, dataset=dataset, model_id="base",
                                                        fill_layers=(LAYER,)),
                    examples_out=tmp_path / "base.jsonl", cache=cache)
    assert base.generation["mode"] == "full"
    with _edited(tiny_llama, scale):
        plain = evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, dataset=dataset),
                         examples_out=tmp_path / "plain.jsonl")
        drafted = evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, dataset=dataset, model_id="base",
                                                               first_changed_layer=LAYER),
                           examples_out=tmp_path / "drafted.jsonl", cache=cache)
    assert plain.generation["mode"] == "full" and drafted.generation["mode"] == "drafts"
    assert drafted.generation["layer_cache"] == "hit"  # the base's pass filled layer 2's inputs on prompt + draft
    rows_plain, rows_drafted = read_examples(tmp_path / "plain.jsonl"), read_examples(tmp_path / "drafted.jsonl")
    # the same greedy continuations, text for text (fp32, tiny model: no near-ties between the two paths)
    assert [r["prediction"] for r in rows_drafted] == [r["prediction"] for r in rows_plain]
    assert drafted.accuracy == plain.accuracy
    g = drafted.generation
    assert g["accepted"] + g["continued"] + g["regenerated"] == g["rows"] == plain.n  # every row accounted for
    # decoding token by token happens only after a departure: never more than the plain run
    assert g["decoded_tokens"] <= plain.generation["decoded_tokens"]
    if scale == 0.97:
        assert g["accepted"] > 0  # a slight edit keeps some base continuations whole


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_without_model_id_or_base_pass_generation_is_token_by_token(tiny_llama, tiny_tokenizer, tiny_data_dir, tmp_path):
    # no drafts stored under this identity: the variant generates as before
    result = evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, model_id="never-filled",
                                                          first_changed_layer=LAYER))
    assert result.generation["mode"] == "full"
    # a base pass without fill_layers (not preparing a sweep) stores no drafts
    evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, model_id="b2"))
    again = evaluate(tiny_llama, tiny_tokenizer, _config(tiny_data_dir, tmp_path, model_id="b2", first_changed_layer=LAYER))
    assert again.generation["mode"] == "full"


def _scores(argmaxes):
    return [TokenScores(0.0, a[0], False, None, False, tuple(a)) for a in argmaxes]


def test_rows_that_need_no_decoding(tiny_llama):
    eos = {1}
    prompts = [[5, 6, 7]] * 4
    drafts = [[10, 11, 1], [10, 11, 12], [10, 11, 12], [10, 11, 12]]
    checked = _scores([[10, 11, 1],  # agrees through the draft's EOS: the draft
                       [10, 11, 12],  # agrees and the draft is max_new_tokens long: the draft
                       [10, 1, 9],  # departs to EOS at position 1: ends there
                       [10, 11, 13]])  # departs at the last allowed position: no token left to decode
    out, stats = continue_from_drafts(tiny_llama, prompts, drafts, checked, max_new_tokens=3, eos=eos, pad_id=0,
                                      batch_size=2)
    assert out == [[10, 11, 1], [10, 11, 12], [10, 1], [10, 11, 13]]
    assert (stats.accepted, stats.continued, stats.regenerated, stats.decoded_tokens) == (2, 2, 0, 0)


def test_a_first_token_eos_is_regenerated_and_mismatched_checks_refused(tiny_llama):
    out, stats = continue_from_drafts(tiny_llama, [[5, 6, 7]], [[10, 11]], _scores([[1, 11]]), max_new_tokens=2,
                                      eos={1}, pad_id=0, batch_size=2)
    assert stats.regenerated == 1 and 1 <= len(out[0]) <= 2  # min_new_tokens=1 masks EOS first: decoded afresh
    with pytest.raises(ValueError, match="2 positions for a draft of 3 tokens"):
        continue_from_drafts(tiny_llama, [[5]], [[10, 11, 12]], _scores([[10, 11]]), max_new_tokens=3, eos={1},
                             pad_id=0, batch_size=2)
    with pytest.raises(ValueError, match="must match"):
        continue_from_drafts(tiny_llama, [[5], [6]], [[10]], _scores([[10]]), max_new_tokens=3, eos={1}, pad_id=0,
                             batch_size=2)


def test_exact_match_needs_every_answer_token_to_be_the_argmax():
    from tensorllm.evaluation.scoring import score_tail

    tail = torch.zeros(1, 4, 6)  # answer [2, 3]: predicted at tail positions 1 and 2 (K - 1 - m .. K - 2)
    tail[0, 1, 2] = tail[0, 2, 3] = 5.0
    score = score_tail(tail, [[2, 3]])[0]
    assert score.top1_correct and score.exact_match and score.answer_argmax == (2, 3)
    tail[0, 2, 4] = 6.0  # the second token's argmax is now 4: first token still right, whole answer not
    score = score_tail(tail, [[2, 3]])[0]
    assert score.top1_correct and not score.exact_match and score.answer_argmax == (2, 4)
