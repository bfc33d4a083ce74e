"""Prefix replay of the perplexity (tensorllm.evaluation.perplexity_prefix) on tiny random models of the verified
families: the base's run records the inputs of layer 1 (of 2), a variant with a Tucker artifact on layer 1
(factorised, as the sweep loads it) replays them and runs only layer 1; its per-window NLLs must be exactly
those of its full forward (layer 1 runs on the very tensors the full forward feeds it, in the same batches).
A prefix that does not fit (other tokens, dtype, batch size, weights, or an artifact below its layer) is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tensorllm.evaluation.perplexity import perplexity_of
from tensorllm.evaluation.perplexity_prefix import load_prefix, measure_with_prefix
from tensorllm.tiny_models import MAX_POSITIONS, VOCAB, build_tiny, save_tiny_with_tokenizer, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)
WINDOW = MAX_POSITIONS  # the tiny models' context: windows of 64
TOKENS = 5 * WINDOW  # 5 windows: batches of 2, 2 and 1 (a last short batch is replayed too)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    ids = torch.randint(3, VOCAB, (6 * WINDOW,), generator=torch.Generator().manual_seed(3))
    path.write_text(" ".join(f"w{i}" for i in ids.tolist()) + "\n")
    return path


def decomposed(folder: Path, layer: int, out: Path) -> str:
    from tensorllm.decompose import decompose_layer

    [artifact] = decompose_layer(str(folder), layer=layer, rank_list=[(0.5, 0.5, 0.5)], out_root=out)
    return artifact.artifact


@pytest.fixture(scope="module")
def llama(tmp_path_factory, corpus_file):
    """(folder, base result with a recorded prefix at layer 1, an artifact on layer 1, one on layer 0)."""
    tmp = tmp_path_factory.mktemp("llama")
    folder, _ = save_tiny_with_tokenizer("llama", tmp / "model")
    base = perplexity_of(folder, tokens=TOKENS, corpus=corpus_file, record_layer=1, prefix_dir=tmp / "prefix")
    return folder, base, decomposed(folder, 1, tmp / "a"), decomposed(folder, 0, tmp / "a")


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "gpt2"])
def test_replayed_window_nlls_are_the_full_forwards_exactly(family, tmp_path, corpus_file):
    folder, _ = save_tiny_with_tokenizer(family, tmp_path / "model")
    base = perplexity_of(folder, tokens=TOKENS, corpus=corpus_file, record_layer=1, prefix_dir=tmp_path / "prefix")
    plain = perplexity_of(folder, tokens=TOKENS, corpus=corpus_file)
    assert base.window_nll == plain.window_nll  # recording changes nothing
    assert Path(base.prefix_file).is_file() and base.prefix_layer == 1 and base.n_windows == 5
    prefix = load_prefix(base.prefix_file)
    assert prefix.identity == base.prefix_identity and tuple(prefix.hidden.shape[:2]) == (5, WINDOW)
    artifact = decomposed(folder, 1, tmp_path / "a")
    full = perplexity_of(folder, [artifact], tokens=TOKENS, corpus=corpus_file)
    replayed = perplexity_of(folder, [artifact], tokens=TOKENS, corpus=corpus_file, prefix=base.prefix_file)
    assert replayed.replayed_from_layer == 1 and full.replayed_from_layer is None
    assert replayed.window_nll == full.window_nll, family  # bit for bit
    assert replayed.window_nll != base.window_nll  # the artifact's own numbers, not the base's
    # the base itself replayed from its own prefix: its own numbers
    assert perplexity_of(folder, tokens=TOKENS, corpus=corpus_file, prefix=prefix).window_nll == base.window_nll
    # and the stored states are what layer 1 really reads: perturbed, they change the numbers
    prefix.hidden = prefix.hidden + 0.5
    perturbed = perplexity_of(folder, [artifact], tokens=TOKENS, corpus=corpus_file, prefix=prefix)
    assert all(p != f for p, f in zip(perturbed.window_nll, full.window_nll))


def test_recording_again_writes_the_same_content_under_the_same_name(llama, corpus_file, tmp_path):
    folder, base, _, _ = llama
    again = perplexity_of(folder, tokens=TOKENS, corpus=corpus_file, record_layer=1, prefix_dir=tmp_path)
    assert Path(again.prefix_file).name == Path(base.prefix_file).name
    assert again.prefix_identity == base.prefix_identity  # content-identified: a variant's cache key names this


def test_a_prefix_that_does_not_fit_is_refused(llama, corpus_file, tmp_path):
    folder, base, on_layer_1, on_layer_0 = llama
    run = dict(tokens=TOKENS, corpus=corpus_file, prefix=base.prefix_file)
    with pytest.raises(ValueError, match=r"from layer 1: the artifacts edit layer\(s\) \[0\] below it"):
        perplexity_of(folder, [on_layer_0, on_layer_1], **run)
    with pytest.raises(ValueError, match="recorded in float32, this model runs in bfloat16"):
        perplexity_of(folder, [on_layer_1], dtype=torch.bfloat16, **run)
    with pytest.raises(ValueError, match="recorded on other tokens .5 windows of 64"):
        perplexity_of(folder, [on_layer_1], **{**run, "tokens": 4 * WINDOW})
    with pytest.raises(ValueError, match="recorded with batch_size 2, here 1"):
        perplexity_of(folder, [on_layer_1], batch_size=1, **run)
    with pytest.raises(ValueError, match="either record_layer .* or prefix"):
        perplexity_of(folder, record_layer=1, prefix_dir=tmp_path, **run)
    other, _ = save_tiny_with_tokenizer("llama", tmp_path / "other", seed=1)  # same shapes, other weights
    with pytest.raises(ValueError, match="weights outside layers >= 1 differ from those the perplexity prefix"):
        perplexity_of(other, **run)
    damaged = tmp_path / Path(base.prefix_file).name
    data = bytearray(Path(base.prefix_file).read_bytes())
    data[-5] ^= 0xFF  # a flipped bit in the stored hidden states
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged"):
        perplexity_of(folder, [on_layer_1], **{**run, "prefix": damaged})
    with pytest.raises(FileNotFoundError, match="perplexity prefix file .* not found"):
        perplexity_of(folder, [on_layer_1], **{**run, "prefix": tmp_path / "missing.safetensors"})


def test_an_unverified_family_runs_a_full_forward_and_says_so(llama, corpus_file, tmp_path, caplog):
    _, base, _, _ = llama
    model = build_tiny("gemma2")
    kwargs = dict(tokens=TOKENS, corpus=corpus_file)
    with caplog.at_level(logging.INFO, logger="tensorllm.evaluation.perplexity_prefix"):
        recorded = measure_with_prefix(model, tiny_tokenizer(), record_layer=1, prefix_dir=tmp_path, **kwargs)
        replayed = measure_with_prefix(model, tiny_tokenizer(), prefix=load_prefix(base.prefix_file), **kwargs)
    assert recorded.prefix_file is None and not list(tmp_path.iterdir())  # nothing recorded for it
    assert replayed.replayed_from_layer is None and replayed.window_nll == recorded.window_nll
    assert "not recording the inputs of layer 1" in caplog.text and "a full forward instead of replaying" in caplog.text
