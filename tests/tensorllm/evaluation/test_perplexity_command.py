"""``tensorllm evaluate MODEL --perplexity`` on a tiny saved Llama: the base, a variant paired with it, bad input."""

from __future__ import annotations

import json

import pytest

from tensorllm.cli import main
from tensorllm.tiny_models import save_tiny_with_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tensorllm.decompose import decompose_layer

    root = tmp_path_factory.mktemp("ppl_cli")
    folder, _ = save_tiny_with_tokenizer("llama", root / "llama")
    [artifact] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root / "a")
    corpus = root / "text.txt"
    corpus.write_text(" ".join(f"w{3 + (i * 7) % 61}" for i in range(2000)))  # 2,000 in-vocabulary words
    return str(folder), str(artifact.artifact), str(corpus)


def test_base_perplexity_is_printed_and_emitted(tiny, capsys):
    folder, _, corpus = tiny
    assert main(["evaluate", folder, "--perplexity", "--perplexity-tokens", "640", "--corpus", corpus,
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(lines[-1])
    result = payload["perplexity"]
    assert result["n_windows"] == 10 and result["window"] == 64  # 640 tokens, the tiny context 64 caps 512
    assert lines[0].startswith(f"{folder}: perplexity ") and "note: window 512 capped" in lines[1]
    assert "paired" not in payload


def test_variant_is_paired_with_the_base(tiny, capsys):
    folder, artifact, corpus = tiny
    assert main(["evaluate", folder, "--perplexity", "--perplexity-tokens", "640", "--corpus", corpus,
                 "--variant", artifact, "--compare-base", "--json"]) == 0
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    paired = payload["paired"]
    assert paired["base_perplexity"] == payload["base"]["perplexity"]
    assert paired["variant_perplexity"] == payload["perplexity"]["perplexity"]
    assert paired["ratio"] != 1.0 and paired["ratio_ci"][0] <= paired["ratio"] <= paired["ratio_ci"][1]
    assert "vs base: perplexity on" in out and payload["perplexity"]["model"].endswith(artifact.split("/")[-1])


@pytest.mark.parametrize("extra,match", [
    (["--perplexity", "--dataset", "fever"], "evaluate takes --dataset NAME or --perplexity, not both"),
    ([], "evaluate needs --dataset NAME, --perplexity or --lm-eval TASKS"),
    (["--perplexity", "--perplexity-tokens", "1"], "perplexity tokens must be an integer >= 2; got 1"),
    (["--perplexity", "--corpus", "missing.txt"], "perplexity corpus 'missing.txt' not found"),
])
def test_bad_input_is_one_line(tiny, extra, match, capsys):
    assert main(["evaluate", tiny[0], *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
