"""``tensorllm.compress`` end to end on a tiny Llama with its tokenizer: plan, export, report, verification."""

from __future__ import annotations

import json

import pytest
import torch

import tensorllm
from tensorllm.compression import measure, plan, uniform_cells
from tensorllm.compression.sensitivity import kl_from_base
from tensorllm.tiny_models import save_tiny_with_tokenizer


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder, _ = save_tiny_with_tokenizer("llama", tmp_path_factory.mktemp("tiny") / "llama")
    return str(folder)


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    base = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1)
    other = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0]]), -1)
    assert float(kl_from_base(base, base)) == pytest.approx(0.0, abs=1e-7)
    assert float(kl_from_base(base, other)) > 0.1  # reversed logits: clearly different distributions


def test_measure_gives_dense_zero_and_positive_damage_and_replay_matches_full_forward(tiny_llama, tmp_path):
    table = measure(tiny_llama, n_prompts=6, artifacts=tmp_path / "a", n_iter_max=3)
    assert len(table.cells) == 2  # tiny models have two layers
    for row in table.cells:
        assert row[0].ranks is None and row[0].damage == 0.0
        assert all(c.damage > 0 for c in row[1:])  # a random layer is not low rank: every cut changes outputs
        assert [c.params for c in row[1:]] == sorted((c.params for c in row[1:]), reverse=True)
    assert table.calibration["replay"] is True
    # the layer-1 damage measured with the replayed prefix equals the one from full forwards (no replay)
    from tensorllm.compression import sensitivity
    from tensorllm.models import load_model

    net, tok = load_model(tiny_llama, dtype=torch.float32)
    seqs = sensitivity.calibration_sequences(tok, "qa_wikidata", 6)
    ref = sensitivity.record_reference(net, seqs, tok.pad_token_id)
    full = sensitivity.Reference(ref.batches, ref.logprobs, {})
    cell = table.cells[1][1]
    assert sensitivity.edit_damage(net, ref, 1, cell.artifact) == pytest.approx(
        sensitivity.edit_damage(net, full, 1, cell.artifact), rel=1e-4)


def test_plan_meets_the_target_and_beats_uniform_on_calibration_damage(tiny_llama, tmp_path):
    table = measure(tiny_llama, n_prompts=6, artifacts=tmp_path / "a", n_iter_max=3)
    for ratio in (1.2, 1.5, 2.0):
        chosen = plan(table, ratio)
        assert chosen.size.attention_compression_ratio >= ratio  # the budget is a hard constraint
        uniform = uniform_cells(table, ratio)
        assert chosen.allocation.damage <= sum(c.damage for c in uniform) + 1e-12  # uniform is one feasible choice
    with pytest.raises(ValueError, match="smallest reachable total"):
        plan(table, 50.0)
    with pytest.raises(ValueError, match="target_ratio must be a number > 1"):
        plan(table, 1.0)


def test_compress_end_to_end(tiny_llama, tmp_path):
    out = tmp_path / "out"
    report = tensorllm.compress(tiny_llama, target_ratio=1.5, out=out, n_prompts=6, val_limit=8,
                                artifacts=tmp_path / "a", n_iter_max=3)
    assert report.attention_ratio >= 1.5
    saved = json.loads((out / "compress_report.json").read_text())
    assert saved["attention_ratio"] == pytest.approx(report.attention_ratio)
    assert saved["verification"]["n"] == 8 and saved["verification"]["metric"] == "top1_correct"
    assert report.export_bytes < report.base_bytes  # the factorised layers make the folder smaller
    lines = "\n".join(report.lines())
    assert "attention" in lines and "verification qa_wikidata/val n=8" in lines
    # perplexity of base and result on the held-out text, paired on the same windows (64: the tiny context)
    ppl = saved["perplexity"]
    assert ppl["window"] == 64 and ppl["n_windows"] == 16_384 // 64 and ppl["ratio_ci"][0] <= ppl["ratio"]
    assert ppl["ratio"] == pytest.approx(ppl["variant_perplexity"] / ppl["base_perplexity"], rel=1e-9)
    assert "perplexity ratio" in lines and ("goal met" in lines or "goal NOT met" in lines)
    assert report.seconds["perplexity"] > 0
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert sum(p.numel() for p in loaded.parameters()) < sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters())


def test_bad_layers_are_one_line(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match=r"layers \[5\] are out of range: allowed 0..1"):
        measure(tiny_llama, layers=[5], artifacts=tmp_path / "a")


def test_bad_perplexity_budget_is_refused_before_any_work(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="perplexity tokens must be an integer >= 2; got -5"):
        tensorllm.compress(tiny_llama, target_ratio=1.5, out=tmp_path / "out", perplexity_tokens=-5)
    with pytest.raises(ValueError, match="perplexity margin must be a fraction >= 0"):
        tensorllm.compress(tiny_llama, target_ratio=1.5, out=tmp_path / "out", perplexity_margin=-1)
    assert not (tmp_path / "out").exists()  # refused before the sensitivity pass and the export
