"""Your own data on the real SmolLM2-135M-Instruct: the shipped 50-line capitals file, and a lettered
multiple-choice set. Marked ``real_model`` (~1 minute on 2 CPU cores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tensorllm.evaluation import EvalConfig, compare_paired, evaluate

pytestmark = pytest.mark.real_model

CAPITALS = Path(__file__).resolve().parents[3] / "examples" / "capitals.jsonl"


def test_the_capitals_file_on_smollm2(smollm2, tmp_path):
    model, tokenizer = smollm2
    result = evaluate(model, tokenizer, EvalConfig(dataset=str(CAPITALS), split="all", batch_size=25),
                      examples_out=tmp_path / "rows.jsonl")
    print(f"SmolLM2 on capitals (all 50): accuracy {result.accuracy:.3f} {result.accuracy_ci}, top-1 "
          f"{result.top1_accuracy:.3f}, loss {result.loss:.3f}")
    assert result.n == 50 and result.accuracy_kind == "generation" and math.isfinite(result.loss)
    # country capitals are common facts even for a 135M model: well above the 0 that a broken prompt, split or
    # scorer gives (measured 0.62 = 31/50 for both, CPU fp32; the bound leaves room for other torch builds)
    assert result.accuracy >= 0.4 and result.top1_accuracy >= 0.4
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    france = next(r for r in rows if r["prompt"] == "The capital of France is")
    assert france["correct"] and "Paris" in france["prediction"]
    # the paired statistics work on it as on the built-ins: the model against itself differs by nothing
    same = compare_paired(tmp_path / "rows.jsonl", tmp_path / "rows.jsonl")
    assert same.n == 50 and same.accuracy_diff == 0 and same.loss_diff == 0


def test_a_lettered_multiple_choice_set_on_smollm2(smollm2, tmp_path):
    model, tokenizer = smollm2
    rows = [{"q": f"What is the capital of {country}?", "options": options, "a": answer}
            for country, options, answer in [("France", ["Lyon", "Paris", "Nice"], 1), ("Japan", ["Tokyo", "Osaka"], 0),
                                             ("Italy", ["Milan", "Naples", "Rome"], "Rome"),
                                             ("Spain", ["Madrid", "Seville"], "A")]]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text("path: mc.jsonl\nprompt_field: q\nanswer_field: a\nkind: choice\n"
                                      "choices_field: options\n")
    result = evaluate(model, tokenizer, EvalConfig(dataset=str(tmp_path / "mc.yaml"), split="all"),
                      examples_out=tmp_path / "rows.jsonl")
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert result.accuracy_kind == "classification" and result.n == 4
    assert set(predictions) <= {"A", "B", "C"}  # the model's choice among the letters " A", " B", " C"
