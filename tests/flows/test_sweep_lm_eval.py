"""A sweep with ``lm_eval_tasks`` runs lm-evaluation-harness on the champion it promotes and logs the scores
as metrics of the champion's MLflow version; real Prefect, Ray and MLflow (sqlite), an offline local task.

The task (tests/data/lm_eval/tiny_loglik.yaml) scores the perplexity of each question's right answer, a
continuous number: the logged value is recomputed here on the base with the champion's artifact applied,
and differs from the base's own, so the sweep evaluated the champion and not the base.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REGISTERED = "tiny-lm-eval"
TASK = "tiny_loglik"
REL_TOL = 1e-4  # the same weights in the same process type, fp32 (batched on a worker vs here: ~1e-6 relative)


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory) -> Path:
    from tests.tensorllm.evaluation.test_lm_eval import task_folder

    return task_folder(tmp_path_factory.mktemp("lm_eval_tasks"), "tiny_loglik.yaml")


@pytest.fixture(scope="module")
def swept(prefect_api, tiny_llm, include_dir, tmp_path_factory):
    pytest.importorskip("lm_eval")
    from flows.compress_sweep import compress_sweep

    tmp = tmp_path_factory.mktemp("sweep_lm_eval")
    params = dict(model=str(tiny_llm), datasets=["qa_wikidata"], layers=[3], ranks=[(0.5, 0.5, 0.5)], compose=[],
                  val_limit=8, test_limit=8, generate=False, test_top_k=1, transfer_dataset=None, export_best=False,
                  registered_model=REGISTERED, mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                  artifacts_root=str(tmp / "runs" / "artifacts"), batch_size=8,
                  # wide margins: 8 items cannot show non-inferiority otherwise, and this test needs a champion
                  margin=0.9, loss_margin=5.0,
                  lm_eval_tasks=[TASK], lm_eval_include=str(include_dir), lm_eval_limit=5)
    return params, compress_sweep(**params)


def test_the_champions_lm_eval_scores_are_metrics_of_its_version(swept, tiny_llm, include_dir):
    from mlflow import MlflowClient

    from tensorllm.artifact import apply_artifacts, load_artifact
    from tensorllm.evaluation.lm_eval_runner import run_lm_eval
    from tensorllm.models import load_model

    params, summary = swept
    decision = summary["decision"]
    assert decision["promote"], decision["sentence"]  # the wide margins promote the one variant
    logged = summary["lm_eval"]
    assert logged["version"] == decision["version"] and logged["tasks"] == [TASK]
    assert logged["n_samples"] == {TASK: 5}  # lm_eval_limit reached lm-eval

    client = MlflowClient(params["mlflow_tracking_uri"])
    version = client.get_model_version(REGISTERED, str(decision["version"]))
    metrics = client.get_run(version.run_id).data.metrics
    perplexity = metrics[f"lm_eval.{TASK}.perplexity"]
    assert f"lm_eval.{TASK}.perplexity_stderr" in metrics and f"lm_eval.{TASK}.acc" in metrics

    [artifact] = sorted(Path(params["artifacts_root"]).rglob("artifact.json"))  # one layer, one rank config
    model, tokenizer = load_model(tiny_llm, device="cpu")
    base = run_lm_eval(model, tokenizer, [TASK], include_path=include_dir, limit=5).score(TASK, "perplexity").value
    with apply_artifacts(model, [load_artifact(artifact.parent)]):
        champion = run_lm_eval(model, tokenizer, [TASK], include_path=include_dir, limit=5).score(TASK, "perplexity")
    assert perplexity == pytest.approx(champion.value, rel=REL_TOL)
    assert abs(champion.value - base) > 100 * REL_TOL * base  # the base scores otherwise: the champion was evaluated

    baseline = next(mv for mv in client.search_model_versions(f"name='{REGISTERED}'")
                    if client.get_run(mv.run_id).data.tags.get("variant_kind") == "baseline")
    assert not any(k.startswith("lm_eval.") for k in client.get_run(baseline.run_id).data.metrics)  # champion only


def test_lm_eval_parameters_are_checked_before_the_sweep_starts(tiny_llm, include_dir, tmp_path):
    pytest.importorskip("lm_eval")
    from flows.validate import SweepInputError, validate_sweep

    base = dict(model=str(tiny_llm), layers=[3], mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                artifacts_root=str(tmp_path / "a"))
    with pytest.raises(SweepInputError, match=r"lm_eval_tasks: unknown lm-eval task\(s\) nope"):
        validate_sweep({**base, "lm_eval_tasks": ["nope"], "lm_eval_include": str(include_dir)})
    with pytest.raises(SweepInputError, match="lm_eval_include and lm_eval_limit apply to lm_eval_tasks"):
        validate_sweep({**base, "lm_eval_limit": 5})
