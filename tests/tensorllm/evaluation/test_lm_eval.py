"""lm-evaluation-harness on the base, a variant and a factorised export, offline (a local task YAML).

The task (tests/data/lm_eval/tiny_choice.yaml) is multiple choice over a local JSONL file in the tiny
tokenizer's words. lm-eval scores each choice by the log-likelihood of the choice given the question; the
tests recompute those log-likelihoods with the model's own forward pass, so a run that evaluated another
model (the base instead of the variant, or a random re-initialisation of the export's attention) fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tensorllm.artifact import apply_artifacts, load_artifact
from tensorllm.cli import main
from tensorllm.decompose import decompose_layer
from tensorllm.export import export_variant
from tensorllm.models import load_model
from tensorllm.tiny_models import save_tiny_with_tokenizer

DATA = Path(__file__).resolve().parents[2] / "data" / "lm_eval"
TASK = "tiny_choice"
N_DOCS = 6  # lines of tiny_choice.jsonl
LL_TOL = 1e-4  # lm-eval's log-likelihoods vs ours, fp32 on the same model (batched vs one at a time: ~1e-6)
MOVED = 1e-3  # the layer-1 edit at half ranks moves some choice's log-likelihood by more (measured >= 1e-2)

pytestmark = [pytest.mark.slow,  # lm-eval indexes its ~15k task files (~10 s) for each TaskManager
              pytest.mark.usefixtures("one_thread")]  # torch on one thread (tests/tensorllm/conftest.py)


def task_folder(folder: Path, yaml_name: str, data_name: str = "tiny_choice.jsonl", task: str | None = None) -> Path:
    """``folder`` holding tests/data/lm_eval/``yaml_name`` with its data file's absolute path filled in (lm-eval
    reads data_files relative to the cwd), renamed to ``task`` when given; the folder for ``include_path``."""
    text = (DATA / yaml_name).read_text().replace("DATA_FILE", str(DATA / data_name))
    if task is not None:
        text = text.replace(f"task: {Path(yaml_name).stem}", f"task: {task}")
    (folder / f"{task or Path(yaml_name).stem}.yaml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory) -> Path:
    return task_folder(tmp_path_factory.mktemp("lm_eval_tasks"), "tiny_choice.yaml")


@pytest.fixture(scope="module")
def manager(include_dir):
    pytest.importorskip("lm_eval")
    from tensorllm.evaluation.lm_eval_runner import task_manager

    return task_manager([TASK], include_dir)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """(base folder, [artifact of layer 1 at half ranks], factorised export folder) of a tiny Llama (GQA)."""
    root = tmp_path_factory.mktemp("lm_eval_models")
    folder, _ = save_tiny_with_tokenizer("llama_gqa", root / "base")
    [low] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root / "artifacts")
    export = export_variant(str(folder), [low.artifact], root / "export")
    return folder, [low.artifact], Path(export["path"])


def own_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from the model's forward pass, the way lm-eval splits the pair."""
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits.float().log_softmax(-1)[0]
    return float(sum(logp[i - 1, whole[i]] for i in range(n_context, len(whole))))


def choice_loglikelihoods(result, task: str = TASK) -> dict[tuple[int, str, str], float]:
    """(doc id, context, continuation) -> lm-eval's log-likelihood, from its per-example samples."""
    out = {}
    for sample in result.samples[task]:
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            out[(sample["doc_id"], context, continuation)] = float(resp[0][0])
    return out


def run(model, tokenizer, manager):
    from tensorllm.evaluation.lm_eval_runner import run_lm_eval

    return run_lm_eval(model, tokenizer, [TASK], manager=manager, batch_size=4, log_samples=True)


def assert_own_loglikelihoods(model, tokenizer, lls):
    for (_, context, continuation), ll in lls.items():
        assert ll == pytest.approx(own_loglikelihood(model, tokenizer, context, continuation), abs=LL_TOL)


@pytest.fixture(scope="module")
def base_and_variant_runs(variant, manager):
    folder, artifacts, _ = variant
    model, tokenizer = load_model(folder, device="cpu")
    base = run(model, tokenizer, manager)
    base_lls = choice_loglikelihoods(base)
    assert_own_loglikelihoods(model, tokenizer, base_lls)  # outside the apply block: the base's own weights
    with apply_artifacts(model, [load_artifact(p) for p in artifacts]):
        var = run(model, tokenizer, manager)
        var_lls = choice_loglikelihoods(var)
        assert_own_loglikelihoods(model, tokenizer, var_lls)  # the variant's weights, in place
    return base, base_lls, var, var_lls


def test_base_and_variant_are_scored_with_their_own_weights(base_and_variant_runs):
    """Every choice's log-likelihood is the model's own (checked in the fixture, on both weight sets); the
    variant's differ from the base's, so lm-eval did see the applied artifact; accuracy is lm-eval's mean of
    "the target's log-likelihood is the largest", recomputed here."""
    base, base_lls, var, var_lls = base_and_variant_runs
    assert base.n_samples[TASK] == N_DOCS and len(base_lls) == 17  # 3+3+2+4+2+3 choices
    assert max(abs(base_lls[k] - var_lls[k]) for k in base_lls) > MOVED
    for result in (base, var):
        hits = []
        for sample in result.samples[TASK]:
            lls = [float(r[0][0]) for r in sample["resps"]]
            hits.append(lls.index(max(lls)) == int(sample["target"]))
        assert result.score(TASK, "acc").value == pytest.approx(sum(hits) / N_DOCS)
        assert result.score(TASK, "acc").stderr is not None


def test_factorised_export_scores_as_the_variant(variant, manager, base_and_variant_runs):
    """The export loads through load_compressed (factorised attention, no dense q/k/v/o) and lm-eval gives
    the variant's log-likelihoods: the model object reached lm-eval, not a plain from_pretrained of the folder."""
    from tensorllm.load_export import is_factorised_export

    _, _, export_folder = variant
    assert is_factorised_export(export_folder)
    model, tokenizer = load_model(export_folder, device="cpu")
    exported = choice_loglikelihoods(run(model, tokenizer, manager))
    _, _, _, var_lls = base_and_variant_runs
    assert exported.keys() == var_lls.keys()
    assert max(abs(exported[k] - var_lls[k]) for k in var_lls) < LL_TOL


def test_cli_on_the_export_writes_and_prints_the_scores(variant, include_dir, base_and_variant_runs, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    _, _, export_folder = variant
    code = main(["evaluate", str(export_folder), "--lm-eval", TASK, "--lm-eval-include", str(include_dir),
                 "--device", "cpu", "--batch-size", "4", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    [acc] = [s for s in payload["lm_eval"]["scores"] if s["metric"] == "acc"]
    _, _, var, _ = base_and_variant_runs
    assert acc["value"] == pytest.approx(var.score(TASK, "acc").value)  # the export is the variant
    written = json.loads((tmp_path / "out" / "lm-eval-export.json").read_text())  # named for what it evaluated
    assert written["n_samples"] == {TASK: N_DOCS}


def test_cli_variant_with_compare_base_runs_both(variant, include_dir, base_and_variant_runs, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    folder, artifacts, _ = variant
    code = main(["evaluate", str(folder), "--variant", str(artifacts[0]), "--compare-base", "--lm-eval", TASK,
                 "--lm-eval-include", str(include_dir), "--device", "cpu", "--out", str(tmp_path), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    base, _, var, _ = base_and_variant_runs
    assert payload["base"]["scores"][0]["value"] == pytest.approx(base.score(TASK, "acc").value)
    assert payload["lm_eval"]["scores"][0]["value"] == pytest.approx(var.score(TASK, "acc").value)
    assert len(list(tmp_path.glob("lm-eval-*.json"))) == 2  # base and variant, each its own file


def test_unknown_task_is_one_line_before_the_model_loads(include_dir, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    code = main(["evaluate", str(tmp_path / "no-such-model"), "--lm-eval", f"{TASK},no_such_task",
                 "--lm-eval-include", str(include_dir), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown lm-eval task(s) no_such_task" in err and "hellaswag" in err


def test_missing_lm_eval_says_how_to_install_the_extra(monkeypatch, tmp_path, capsys):
    """Without lm-eval (a None entry in sys.modules makes its import fail): one line naming the extra, exit 2."""
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)
    code = main(["evaluate", str(tmp_path), "--lm-eval", "hellaswag"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pip install 'tensorllm[eval]'" in err


@pytest.mark.parametrize("argv, match", [
    (["--lm-eval", " , "], "give lm-eval task names separated by commas"),
    (["--lm-eval", "hellaswag", "--dataset", "fever"], "not both"),
    (["--lm-eval", "hellaswag", "--lm-eval-fewshot", "-1"], "must be 0 or more"),
    ([], "evaluate needs --dataset NAME, --perplexity or --lm-eval TASKS"),
])
def test_bad_options_are_one_line(argv, match, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    code = main(["evaluate", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err


def test_scores_metrics_and_round_trip_of_a_results_block():
    """lm-eval's results block -> scores (stderr read beside its metric, "N/A" as None, name/alias skipped) ->
    registry metric names (the filter appended unless it is "none") -> dict and back unchanged."""
    from tensorllm.evaluation.lm_eval_runner import LmEvalResult, scores_of

    block = {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05},
             "arc_easy": {"name": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.75,
                          "acc_norm_stderr,none": "N/A", "sample_len": 4}}
    result = LmEvalResult(tasks=["arc_easy", "gsm8k"], scores=scores_of(block), n_samples={"arc_easy": 4, "gsm8k": 4},
                          limit=4, num_fewshot=None, lm_eval_version="0.4.13", seconds=1.0)
    assert result.metrics() == {"lm_eval.arc_easy.acc": 0.5, "lm_eval.arc_easy.acc_stderr": 0.1,
                                "lm_eval.arc_easy.acc_norm": 0.75,
                                "lm_eval.gsm8k.exact_match.strict-match": 0.25,
                                "lm_eval.gsm8k.exact_match.strict-match_stderr": 0.05}
    assert LmEvalResult.from_dict(result.to_dict()) == result
    with pytest.raises(KeyError, match="no score arc_easy/f1,none; have"):
        result.score("arc_easy", "f1")
