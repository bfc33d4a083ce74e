"""A real sweep that selects on your own data: ``tensorllm sweep`` on SmolLM2-135M-Instruct, layer 29, one rank
configuration, ``--datasets examples/capitals.jsonl`` and a spec file as the transfer dataset, with its own
Prefect server, a local Ray and an MLflow sqlite store in ``tmp_path`` (~4-8 minutes on 2 CPU cores).

Checks that the user's file is what the variants were measured and reported on: the registered versions carry
``capitals.val_*`` metrics (the dataset's name, not its path) and the file's digest in their identity, the
printed report names it, and the champion's transfer metrics come from the spec file's dataset.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_sweep import cli_env

pytestmark = [pytest.mark.integration, pytest.mark.real_model]
ROOT = Path(__file__).resolve().parents[2]
CAPITALS = ROOT / "examples" / "capitals.jsonl"
REGISTERED = "smollm2-capitals"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from tensorllm.models import cache_dir

    if not (cache_dir() / "smollm2-135m-instruct-hf" / "model.safetensors").is_file():
        pytest.skip("the converted SmolLM2 folder is not in the cache (tensorllm.models.resolve_model('smollm2-135m'))")
    work = tmp_path_factory.mktemp("user-sweep")
    # the transfer dataset: a spec file over the same kind of data under another name (a second route in)
    (work / "capitals_again.dataset.yaml").write_text(f"path: {CAPITALS}\nname: capitals_again\n")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, "-m", "tensorllm.cli", "sweep", "--model", "smollm2-135m", "--layers", "29",
               "--ranks", "64,32,4", "--datasets", str(CAPITALS), "--transfer-dataset", "capitals_again.dataset.yaml",
               "--val-limit", "20", "--test-limit", "20", "--no-generate", "--test-top-k", "1",
               "--registered-model", REGISTERED, "--mlflow-tracking-uri", uri,
               # 13 validation items cannot show non-inferiority within 2 points: wide margins let the sweep promote,
               # so the transfer evaluation (run for a champion only) is exercised too
               "--margin", "0.9", "--loss-margin", "5"]
    done = subprocess.run(command, cwd=work, env=cli_env(), capture_output=True, text=True, timeout=1500)
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    return uri, done.stdout


def test_the_variants_are_measured_and_registered_on_the_users_file(swept):
    from mlflow import MlflowClient

    from tensorllm.evaluation.data import dataset_digest

    uri, _ = swept
    client = MlflowClient(uri)
    versions = client.search_model_versions(f"name='{REGISTERED}'")
    assert len(versions) >= 2  # the baseline and the layer-29 variant
    for version in versions:
        run = client.get_run(version.run_id)
        metrics = run.data.metrics
        # 50 capitals -> 13 in the seeded validation split (fewer than --val-limit 20)
        assert metrics["capitals.val_n"] == 13, metrics
        assert 0 <= metrics["capitals.val_top1_accuracy"] <= 1 and "val_top1_accuracy" in metrics
        assert not any("/" in key or ".jsonl" in key for key in metrics)  # named by the dataset, never its path
        assert run.data.params["datasets"] == str(CAPITALS)
    # the file's content digest is what the evaluation cache and the variants' identity are keyed by
    assert len(dataset_digest(str(CAPITALS))) == 64


def test_the_report_names_the_users_dataset_and_the_transfer(swept):
    from mlflow import MlflowClient

    uri, stdout = swept
    assert "Champion:" in stdout and "transfer, capitals_again test (not used for selection)" in stdout
    champion = MlflowClient(uri).get_model_version_by_alias(REGISTERED, "champion")
    metrics = MlflowClient(uri).get_run(champion.run_id).data.metrics
    # 50 capitals -> 37 in the test split, the first 20 of them (--test-limit 20)
    assert metrics["transfer.capitals_again.test_n"] == 20 and "capitals.test_top1_accuracy" in metrics
