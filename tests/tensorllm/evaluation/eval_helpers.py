"""Helpers for the evaluation tests (imported by conftest.py and by test modules): tiny models and a tiny data folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from tensorllm.models import cache_dir

WORDS = (
    "The answer is true false poet nurse teacher Paris France Rome Italy capital of claim Consider the following "
    "text What profession person this claim Is or The country language French Italian yes no"
).split()
CORPUS = [" ".join(WORDS)] * 50 + [
    "The claim is true. The claim is false. The profession of this person is poet nurse teacher.",
    "The capital of France is Paris. The capital of Italy is Rome. The language of France is French.",
] * 50
SMOLLM2_FOLDER = cache_dir() / "smollm2-135m-instruct-hf"  # where resolve_model("smollm2-135m") converts it


def make_tiny_model(model_type: str, vocab_size: int, n_layers: int = 4, seed: int = 0):
    """A tiny random causal LM of the given family (fp32, eval mode); GQA where the family has it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    if model_type == "gpt2":
        config = AutoConfig.for_model("gpt2", vocab_size=vocab_size, n_embd=32, n_layer=n_layers, n_head=4, n_positions=256)
    elif model_type == "gpt_neox":
        config = AutoConfig.for_model(
            "gpt_neox", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=256,
        )  # fmt: skip
    else:
        extra = {"layer_types": ["full_attention"] * n_layers} if model_type in ("qwen2", "qwen3") else {}
        config = AutoConfig.for_model(
            model_type, vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, head_dim=8, **extra,
        )  # fmt: skip
    config.pad_token_id = 0
    model = AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # random init has tiny weights; scale up so layers matter and logits differ
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    return model


def _write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tiny_data(root: Path) -> Path:
    """A data folder with the five datasets' layouts and a few hand-made records each."""
    countries = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima"), ("Chad", "Ndjamena")]
    _write_jsonl(
        root / "qa_wikidata" / "bigbench_qa_wikidata.jsonl",
        [{"context": f"The capital of {c} is", "continuation": cap} for c, cap in countries]
        + [{"context": f"The language of {c} is", "continuation": f"{c}ish"} for c, _ in countries],
    )
    hotpot = [{"question": f"What is the capital of {c}", "answer": cap, "type": "bridge"} for c, cap in countries]
    hotpot.append({"question": "Is Rome in Italy?", "answer": "yes", "type": "comparison"})
    hotpot.append({"question": "Which is long?", "answer": " ".join(["word"] * 40), "type": "bridge"})  # > 15 tokens
    (root / "hotpotqa").mkdir(parents=True, exist_ok=True)
    (root / "hotpotqa" / "hotpot_dev_v1_simplified.json").write_text(json.dumps(hotpot), encoding="utf-8")
    fever = [
        {"id": 1, "label": "SUPPORTS", "claim": "Paris is the capital of France."},
        {"id": 2, "label": "REFUTES", "claim": "Rome is the capital of France"},
        {"id": 3, "label": "NOT ENOUGH INFO", "claim": "Lima is nice."},
        {"id": 4, "label": "SUPPORTS", "claim": "Paris is the capital of France."},  # duplicate: merged
        {"id": 5, "label": "SUPPORTS", "claim": "Madrid is in Spain?"},
        {"id": 6, "label": "REFUTES", "claim": "Madrid is in Spain?"},  # conflicting: dropped
        {"id": 7, "label": "REFUTES", "claim": "Chad is in Europe."},
        {"id": 8, "label": "SUPPORTS", "claim": "Peru is in South America."},
    ]
    _write_jsonl(root / "fever" / "paper_dev.jsonl", fever)
    folder = root / "bias_in_bios" / "per_profession"
    folder.mkdir(parents=True, exist_ok=True)
    for profession, text in [("poet", "She writes poems"), ("nurse", "He cares for patients"),
                             ("teacher", "She teaches children"), ("software_engineer", "He writes code")]:  # fmt: skip
        with (folder / f"{profession}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["hard_text", "profession", "gender"])
            for i in range(3):
                writer.writerow([f"{text} in town number {i}.", profession, "Female"])
    cf = root / "counterfact"
    cf.mkdir(parents=True, exist_ok=True)
    for name, cases in [("train", countries[:3]), ("val", countries[3:])]:
        rows = [
            {"case_id": 100 + i + (0 if name == "train" else 50), "prompt": f"The capital of {c} is", "subject": c,
             "ground_truth": cap, "target_new": "Rome", "rephrase_prompt": f"{c}'s capital city is",
             "locality_prompt": "x", "locality_ground_truth": "y"}
            for i, (c, cap) in enumerate(cases)
        ]  # fmt: skip
        (cf / f"mend_counterfact-{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    return root
