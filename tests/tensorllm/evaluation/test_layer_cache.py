"""The layer-L hidden-state cache: replayed prefixes give the full forward's logits, for several families;
memory budget, disk spill, keys, fallbacks."""

import logging

import pytest
import torch

from tensorllm.evaluation.batching import make_batches
from tensorllm.evaluation.fingerprint import prefix_fingerprint
from tensorllm.evaluation.hidden_cache import HiddenStateCache, default_cache
from tensorllm.evaluation.layer_skip import LayerInput, VERIFIED_MODEL_TYPES, record_layer_input, replay_prefix
from tensorllm.evaluation.scoring import forward_tail_logits
from tensorllm.evaluation.teacher_forced import run_teacher_forced

from eval_helpers import make_tiny_model

N_LAYERS = 4


def _data(vocab, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [(3 + (5 * i) % 11, 1 + i % 3) for i in range(n)]
    sequences, answers = [], []
    for p, a in lengths:
        seq = torch.randint(3, vocab, (p + a,), generator=g).tolist()
        sequences.append(seq)
        answers.append(seq[p:])
    return sequences, answers


@pytest.mark.parametrize("model_type", VERIFIED_MODEL_TYPES)
def test_replayed_prefix_gives_full_forward_logits(model_type):
    model = make_tiny_model(model_type, vocab_size=97, n_layers=N_LAYERS)
    sequences, _ = _data(97)
    batch = make_batches(sequences, batch_size=4, pad_id=0)[0]  # left padded, 4 rows of different lengths
    with torch.no_grad():
        full = forward_tail_logits(model, batch, keep=batch.input_ids.shape[1])
        for layer in range(1, N_LAYERS):
            with record_layer_input(model, layer) as recorder:
                recorded_run = forward_tail_logits(model, batch, keep=batch.input_ids.shape[1])
            stored = LayerInput(recorder.hidden, recorder.tuple_len)
            with replay_prefix(model, layer, stored):
                replayed = forward_tail_logits(model, batch, keep=batch.input_ids.shape[1])
            real = batch.attention_mask.bool()
            # the brief's bound is 1e-4 in fp32; the same kernels on the same tensors give ~0
            assert (replayed - full)[real].abs().max() < 1e-4, (model_type, layer)
            assert torch.equal(recorded_run, full)  # recording does not change the forward
    assert all(type(m).__name__ != "_Replay" for m in model.modules())  # stubs removed afterwards


def test_cache_hit_equals_full_forward_of_an_edited_variant(tiny_llama):
    """The use case: base run fills the cache, a variant editing layer L >= 2 reuses it and is still exact."""
    sequences, answers = _data(tiny_llama.config.vocab_size)
    cache = HiddenStateCache()
    layer = 2
    base = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=layer, cache=cache)
    assert base.layer_cache == "miss"
    proj = tiny_llama.model.layers[layer].self_attn.o_proj.weight
    original = proj.detach().clone()
    try:
        with torch.no_grad():
            proj.mul_(0.3)  # the "variant": edits layer 2 only
        full = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0)
        cached = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=layer, cache=cache)
    finally:
        with torch.no_grad():
            proj.copy_(original)
    assert cached.layer_cache == "hit" and cached.cache_key == base.cache_key
    assert [s.loss for s in cached.scores] == pytest.approx([s.loss for s in full.scores], abs=1e-5)
    assert [s.top1_token for s in cached.scores] == [s.top1_token for s in full.scores]
    assert [s.loss for s in full.scores] != pytest.approx([s.loss for s in base.scores], abs=1e-3)  # edit mattered


def test_fingerprint_ignores_changed_layers_but_sees_prefix_edits(tiny_llama):
    before = prefix_fingerprint(tiny_llama, 2)
    for index, expect_same in ((2, True), (3, True), (1, False)):
        weight = tiny_llama.model.layers[index].mlp.down_proj.weight
        original = weight.detach().clone()
        with torch.no_grad():
            weight.add_(1e-3)
        try:
            assert (prefix_fingerprint(tiny_llama, 2) == before) is expect_same, index
        finally:
            with torch.no_grad():
                weight.copy_(original)
    assert prefix_fingerprint(tiny_llama, 2) == before


def test_disk_spill_and_memory_budget(tiny_llama, tmp_path):
    sequences, answers = _data(tiny_llama.config.vocab_size)
    disk_only = HiddenStateCache(memory_budget_bytes=0, disk_dir=tmp_path)
    first = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=1, cache=disk_only)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1 and disk_only.memory_bytes == 0 and disk_only.stats.disk_writes == 1
    assert files[0].parent.name.startswith("fp-")  # folder keyed by the model identity (fingerprint)
    fresh = HiddenStateCache(disk_dir=tmp_path)  # a new process / worker pointing at the same folder
    again = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=1, cache=fresh)
    assert again.layer_cache == "hit" and fresh.stats.disk_hits == 1
    assert [s.loss for s in again.scores] == pytest.approx([s.loss for s in first.scores], abs=1e-6)

    small = HiddenStateCache(memory_budget_bytes=fresh.memory_bytes + 10)  # room for one entry only
    run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=1, cache=small)
    run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=2, cache=small)
    assert small.memory_bytes <= small.memory_budget_bytes
    third = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=1, cache=small)
    assert third.layer_cache == "miss"  # layer 1's entry was evicted; no disk folder to fall back on


def test_key_depends_on_layout_and_model_id(tiny_llama):
    sequences, answers = _data(tiny_llama.config.vocab_size)
    cache = HiddenStateCache()
    keys = {
        run_teacher_forced(tiny_llama, sequences, answers, batch_size=b, pad_id=0, layer=2, cache=cache, model_id=m).cache_key
        for b, m in ((3, None), (4, None), (3, "sha-abc"))
    }
    assert len(keys) == 3  # batch layout and model id both change the key
    assert any(k.startswith("sha-abc/") for k in keys)


def test_unsupported_family_falls_back_with_a_log_line(caplog):
    model = make_tiny_model("gpt_neox", vocab_size=97, n_layers=N_LAYERS)
    sequences, answers = _data(97)
    with caplog.at_level(logging.INFO):
        run = run_teacher_forced(model, sequences, answers, batch_size=3, pad_id=0, layer=2, cache=HiddenStateCache())
    assert run.layer_cache == "unsupported"
    assert "layer cache not used (model_type 'gpt_neox' is not among the verified families" in caplog.text


def test_layer_zero_and_bad_layers(tiny_llama):
    sequences, answers = _data(tiny_llama.config.vocab_size)
    run = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=0, cache=HiddenStateCache())
    assert run.layer_cache == "off"  # nothing before layer 0 to skip
    with pytest.raises(ValueError, match=r"integer in \[0, 4\) for this 4-layer model, got 4"):
        run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=4, cache=HiddenStateCache())


def test_default_cache_is_shared_per_folder(tmp_path):
    assert default_cache(tmp_path) is default_cache(tmp_path)
    assert default_cache(tmp_path) is not default_cache(None)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        HiddenStateCache(memory_budget_bytes=-1)


def test_one_base_pass_fills_every_sweep_layer(tiny_llama):
    """fill_layers: the base model's full pass records the inputs of several layers at once; a variant of
    any of those layers then hits the cache (no fill of its own) and still equals a full forward."""
    sequences, answers = _data(tiny_llama.config.vocab_size)
    cache = HiddenStateCache()
    plain = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0)
    base = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, cache=cache, fill_layers=[1, 3])
    assert base.layer_cache == "fill"
    # recording does not change the base scores (same kernels, same tensors)
    assert [s.loss for s in base.scores] == [s.loss for s in plain.scores]
    for layer in (1, 3):
        proj = tiny_llama.model.layers[layer].self_attn.o_proj.weight
        original = proj.detach().clone()
        try:
            with torch.no_grad():
                proj.mul_(0.5)
            full = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0)
            cached = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, layer=layer, cache=cache)
        finally:
            with torch.no_grad():
                proj.copy_(original)
        assert cached.layer_cache == "hit", layer  # filled by the base pass, not by this call
        # same suffix computation on the same stored tensors: float rounding only
        assert [s.loss for s in cached.scores] == pytest.approx([s.loss for s in full.scores], abs=1e-5)
    again = run_teacher_forced(tiny_llama, sequences, answers, batch_size=3, pad_id=0, cache=cache, fill_layers=[1, 3])
    assert again.layer_cache == "off"  # everything was cached already: nothing recorded
