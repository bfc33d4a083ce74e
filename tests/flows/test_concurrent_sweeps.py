"""Two ``tensorllm sweep`` commands started at once in one project, on a new MLflow store, both succeed;
the champion ends on the variant the promotion policy picks over both sweeps' versions, and the store holds
exactly the expected runs (one per registered variant, one per sweep).

Real processes: each sweep starts its own Prefect server and private Ray, as two users' commands do.
The store does not exist before (its creation is serialised by a file lock) and the two promotions
are serialised per registered model (``tensorllm.mlflow_store.promotion_lock``), as are the registrations
(``registration_lock``: both sweeps register the shared variants, the baseline and the 0.5,0.5,0.5 ranks).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from flows.policy import _compress_cmp, comparable_champion
from cli_sweep import cli_env, sweep_command

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("grids", ["identical", "different"])
def test_two_sweeps_at_once_on_a_new_store(grids, tiny_llm, tmp_path):
    # one registered model: identical sweeps register every variant once between them; with different rank grids
    # each registers its own variants and both the shared ones; one champion in the end
    commands = [sweep_command(tiny_llm, "--json"), sweep_command(tiny_llm, "--json")]
    if grids == "different":
        commands[1][commands[1].index("16,8,2")] = "8,4,2"
    assert not (tmp_path / "runs" / "mlflow").exists()  # a new store
    sweeps = [subprocess.Popen(c, cwd=tmp_path, env=cli_env(), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE) for c in commands]
    results = [s.communicate(timeout=1500) for s in sweeps]
    for sweep, (out, err) in zip(sweeps, results):
        assert sweep.returncode == 0, err[-4000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]

    from mlflow import MlflowClient

    from tensorllm.registry import Registry

    uri = summaries[0]["mlflow_tracking_uri"]
    registry = Registry(uri)
    name = summaries[0]["registered_model"]
    versions = MlflowClient(uri).search_model_versions(f"name='{name}'")
    names = Counter(v.tags.get("variant_name") for v in versions)
    assert max(names.values()) == 1, f"a variant registered twice: {names}"  # shared variants (the baseline) once
    # exactly the expected runs: one finished run per registered variant, one sweep run per sweep, nothing else
    # (unserialised, both sweeps logged a run for each shared variant and one stayed behind without a version)
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    finished = Counter(r.data.tags.get("kind") for r in runs if r.info.status == "FINISHED")
    assert finished == {"sweep": 2, "baseline": 1, "variant": len(versions) - 1}, (
        f"{len(runs)} runs {dict(finished)} for {len(versions)} versions and 2 sweeps")
    assert {r.info.run_id for r in runs if r.data.tags.get("kind") != "sweep"} == {v.run_id for v in versions}

    # each sweep's own pick, as the policy sees it from the registry; the champion is the better of the two
    settings = {"datasets": ["qa_wikidata"], "val_limit": 8, "model_identity": versions[0].tags["model_identity"]}
    # a sweep's pick: the variant it promoted, or the one it found not better than the other's champion
    picks = [comparable_champion(registry.version_info(name, s["decision"]["version"]), settings, "top1_accuracy")
             for s in summaries if s["decision"]["promote"] or "does not beat" in s["decision"]["sentence"]]
    assert picks and all(p is not None for p in picks)
    best = min(picks, key=_cmp_key())
    champion = registry.champion(name)
    assert champion is not None and int(champion["version"]) == best.version, (
        f"champion v{champion and champion['version']}, policy's pick over both sweeps v{best.version}: "
        + " | ".join(s["decision"]["sentence"] for s in summaries))


def _cmp_key():
    import functools

    return functools.cmp_to_key(_compress_cmp("top1_accuracy"))
