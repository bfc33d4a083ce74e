"""``tensorllm compress`` on the real SmolLM2-135M: a small grid on the last two layers, few prompts."""

from __future__ import annotations

import json

import pytest

from tensorllm.cli import main


@pytest.mark.real_model
def test_compress_smollm2_last_two_layers(tmp_path, capsys):
    out = tmp_path / "out"
    # two of 30 layers at 576x... ranks (144, 32, 4) (4.5x each) give at most 30 / (28 + 2 / 4.5) = 1.055x overall
    code = main(["compress", "smollm2-135m", "--target-ratio", "1.03", "--out", str(out), "--layers", "28,29",
                 "--ranks", "0.25,0.5,1.0", "--ranks", "0.5,1.0,1.0", "--prompts", "4", "--val-limit", "24",
                 "--perplexity-tokens", "2048", "--artifacts", str(tmp_path / "artifacts"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["attention_ratio"] >= 1.03
    assert {row["layer"] for row in report["layers"]} <= {28, 29}
    assert all(row["damage"] > 0 for row in report["layers"])  # a real layer cut changes the distributions
    verification = report["verification"]
    assert verification["n"] == 24 and verification["metric"] == "top1_correct"
    lo, hi = verification["accuracy_diff_ci"]
    assert lo <= verification["accuracy_diff"] <= hi
    assert verification["non_inferior"] == (lo >= -0.02)
    assert report["export_bytes"] < report["base_bytes"]
    assert (out / "compress_report.json").is_file()
    ppl = report["perplexity"]  # 4 windows of 512 tokens of Persuasion
    assert ppl["n_windows"] == 4 and 10 < ppl["base_perplexity"] < 100  # SmolLM2 on 1818 prose: ~39 (measured)
    assert ppl["ratio_ci"][0] <= ppl["ratio"] <= ppl["ratio_ci"][1]
