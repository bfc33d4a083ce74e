"""Perplexity on held-out text (tensorllm.evaluation.perplexity) on a tiny Llama trained to need its attention.

The model is trained (60 Adam steps, seeded, one thread: deterministic) on windows "wa wb wa wb ..." with a random
pair per window: after the first two tokens every next token is the one two positions back, which only attention
can fetch. So the trained model's perplexity is low (the two unpredictable tokens of each 64-token window keep it
above 1), and zeroing every attention output projection leaves it guessing among ~61 words: a large increase
that the paired comparison must show, while the model compared with itself shows exactly nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tensorllm.evaluation.perplexity import (DEFAULT_CORPUS, PerplexityResult, compare_perplexity, corpus_windows,
                                             load_corpus, perplexity, perplexity_of, t_interval, t_quantile_975)
from tensorllm.tiny_models import MAX_POSITIONS, VOCAB, build_tiny, save_tiny_with_tokenizer, \
    tiny_tokenizer

WINDOW = MAX_POSITIONS  # 64: the tiny models' context, so a 512-token window is capped to it
N_WINDOWS = 12


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


def abab(n_windows: int, seed: int) -> torch.Tensor:
    """[n_windows, WINDOW] ids: per row a random pair (a, b) of words w3..w63 repeated a b a b ..."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n_windows, 2), generator=generator).repeat(1, WINDOW // 2)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "abab.txt"
    rows = abab(N_WINDOWS + 3, seed=7)  # 3 windows more than the budget reads
    path.write_text("\n".join(" ".join(f"w{i}" for i in row.tolist()) for row in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = build_tiny("llama").train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        ids = abab(32, seed=1000 + step)
        loss = model(input_ids=ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def run(model, corpus_file, **kwargs):
    return perplexity(model, tiny_tokenizer(), tokens=N_WINDOWS * WINDOW, corpus=corpus_file, **kwargs)


def test_result_is_deterministic_consistent_and_its_interval_contains_the_mean(trained, corpus_file):
    result = run(trained, corpus_file)
    again = run(trained, corpus_file, batch_size=5)  # another batching: same windows, same numbers
    assert result.window == WINDOW and "capped at the model's context 64" in result.notes[0]  # 512 asked
    assert result.n_windows == N_WINDOWS and result.n_tokens == N_WINDOWS * WINDOW
    assert result.scored_tokens == N_WINDOWS * (WINDOW - 1)
    assert again.window_nll == pytest.approx(result.window_nll, abs=1e-6)  # fp32 batch-shape rounding only
    assert again.tokens_digest == result.tokens_digest and result.corpus_digest == load_corpus(corpus_file).digest
    lo, hi = result.mean_nll_ci
    assert lo < result.mean_nll < hi  # windows differ (their pairs are random), so the interval has width
    assert result.perplexity == pytest.approx(math.exp(result.mean_nll), rel=1e-12)
    assert result.perplexity_ci == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-12)
    # reference: the model's own loss (mean NLL of the window's 63 predictions) per window
    ids, _ = corpus_windows(tiny_tokenizer(), load_corpus(corpus_file), N_WINDOWS * WINDOW, WINDOW)
    with torch.no_grad():
        own = [float(trained(input_ids=row[None], labels=row[None]).loss) for row in ids]
    assert result.window_nll == pytest.approx(own, abs=1e-5)
    # trained: 2 of 63 predictions are guesses among 61 words, the rest near certain: mean NLL ~ 2 ln(61) / 63 = 0.13
    assert result.perplexity < 1.6


def test_paired_difference_of_a_model_with_itself_is_zero(trained, corpus_file):
    result = run(trained, corpus_file)
    cmp = compare_perplexity(result, result)
    assert cmp.nll_diff == 0.0 and cmp.nll_diff_ci == (0.0, 0.0)
    assert cmp.ratio == 1.0 and cmp.ratio_ci == (1.0, 1.0) and cmp.within_margin
    assert "ratio 1.0000" in cmp.sentence() and "within +10%" in cmp.sentence()


def test_zeroed_attention_shows_a_large_perplexity_increase(trained, corpus_file):
    base = run(trained, corpus_file)
    broken = build_tiny("llama")
    broken.load_state_dict(trained.state_dict())
    with torch.no_grad():
        for layer in broken.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    cmp = compare_perplexity(base, run(broken, corpus_file))
    # without attention the next word is unknown among ~61: perplexity tens of times the trained model's
    assert cmp.ratio_ci[0] > 5 and not cmp.within_margin
    assert cmp.variant_perplexity > 20 and "NOT shown within +10%" in cmp.sentence()
    # an untrained model of the same family is worse than the trained one: the metric ranks models
    assert compare_perplexity(base, run(build_tiny("llama", seed=3), corpus_file)).ratio_ci[0] > 5


def test_result_round_trips_through_json(trained, corpus_file):
    result = run(trained, corpus_file, label="tiny")
    back = PerplexityResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result


def test_budget_is_clipped_to_the_corpus_and_said_so(trained, corpus_file):
    result = perplexity(trained, tiny_tokenizer(), tokens=100 * WINDOW, window=WINDOW, corpus=corpus_file)
    assert result.n_windows == N_WINDOWS + 3 and "clipped to the corpus" in result.notes[0]
    odd = perplexity(trained, tiny_tokenizer(), tokens=3 * WINDOW + 5, window=WINDOW, corpus=corpus_file)
    assert odd.n_windows == 3 and "not a multiple of the window" in odd.notes[0]


def test_bad_input_is_refused_with_a_clear_message(trained, corpus_file, tmp_path):
    with pytest.raises(ValueError, match="perplexity tokens must be an integer >= 2"):
        perplexity(trained, tiny_tokenizer(), tokens=0, corpus=corpus_file)
    with pytest.raises(ValueError, match="perplexity window must be an integer >= 2"):
        perplexity(trained, tiny_tokenizer(), window=1, corpus=corpus_file)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        run(trained, corpus_file, batch_size=0)
    with pytest.raises(FileNotFoundError, match="perplexity corpus 'nope.txt' not found"):
        load_corpus("nope.txt")
    short = tmp_path / "short.txt"
    short.write_text("w3 w4 w5")
    with pytest.raises(ValueError, match="has 3 tokens, fewer than one window of 64"):
        run(trained, short)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_corpus(tmp_path / "latin1.txt")
    base = run(trained, corpus_file)
    fewer = perplexity(trained, tiny_tokenizer(), tokens=4 * WINDOW, corpus=corpus_file)
    with pytest.raises(ValueError, match="not on the same tokens"):
        compare_perplexity(base, fewer)
    with pytest.raises(ValueError, match="margin must be a fraction >= 0"):
        compare_perplexity(base, base, margin=-0.1)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 31, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-9), df  # bisection to 1e-12
    mean, (lo, hi) = t_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and hi - mean == pytest.approx(stats.t.ppf(0.975, 3) * math.sqrt(5 / 3) / 2, abs=1e-9)
    with pytest.raises(ValueError, match="degrees of freedom must be an integer >= 1"):
        t_quantile_975(0)


def test_perplexity_of_a_folder_with_artifacts_matches_the_model_in_memory(tmp_path, corpus_file):
    from tensorllm.decompose import decompose_layer
    from tensorllm.export import variant_model

    folder, model = save_tiny_with_tokenizer("llama", tmp_path / "llama")
    direct = perplexity(model, tiny_tokenizer(), tokens=4 * WINDOW, corpus=corpus_file)
    loaded = perplexity_of(folder, tokens=4 * WINDOW, corpus=corpus_file)
    assert loaded.window_nll == pytest.approx(direct.window_nll, abs=1e-6)
    [artifact] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=tmp_path / "a")
    variant = perplexity_of(folder, [artifact.artifact], tokens=4 * WINDOW, corpus=corpus_file)
    edited, tokenizer, _ = variant_model(str(folder), [artifact.artifact], "factorised")
    assert variant.window_nll == pytest.approx(
        perplexity(edited, tokenizer, tokens=4 * WINDOW, corpus=corpus_file).window_nll, abs=1e-6)
    assert variant.window_nll != loaded.window_nll  # the edit changes the model
    assert variant.model.endswith(" + " + Path(artifact.artifact).name)


def test_shipped_corpus_is_the_file_its_source_names():
    corpus = load_corpus()
    source = (corpus.path.parent / "SOURCE.md").read_text()
    assert corpus.name == DEFAULT_CORPUS
    assert corpus.digest == re.search(r"sha256: ([0-9a-f]{64})", source).group(1)
    assert len(corpus.text.encode()) == 466_854 and corpus.text.startswith("Persuasion")
