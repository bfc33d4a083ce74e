"""A sweep measures perplexity on held-out text for the base (once) and every composed variant, and logs it on
their MLflow versions; real Prefect, Ray and MLflow (sqlite), the tiny Llama, two windows of 512 tokens.

The logged numbers are recomputed here with the library's own call (``perplexity_of`` on the same artifacts, on
one torch thread as the Ray worker ran it), so the sweep measured what it says; the base's task runs once (one
task run for its content key), and records the inputs of the lowest sweep layer that the composed variants'
tasks replay; ``perplexity_tokens=0`` measures nothing and logs nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REGISTERED = "tiny-perplexity"
TOKENS = 1024  # two windows of 512 (the tiny Llama's context): the fewest that give an interval
REL_TOL = 1e-6  # the same float32 model and tokens on one thread, here and on the worker


def perplexity_runs_since(start: float) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    return [r for r in runs if r.name.startswith("perplexity-") and r.expected_start_time
            and r.expected_start_time.timestamp() >= start]


def sweep(tmp: Path, tiny_llm, registered: str, tokens: int) -> tuple[dict, dict, list]:
    from flows.compress_sweep import compress_sweep

    params = dict(model=str(tiny_llm), datasets=["qa_wikidata"], layers=[2, 3], ranks=[(0.5, 0.5, 0.5), (0.25, 0.5, 0.5)],
                  compose=["uniform"], val_limit=8, test_limit=8, generate=False, test_top_k=1, transfer_dataset=None,
                  export_best=False, registered_model=registered, batch_size=8, perplexity_tokens=tokens,
                  mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifacts_root=str(tmp / "runs" / "artifacts"))
    start = time.time()
    summary = compress_sweep(**params)
    return params, summary, perplexity_runs_since(start)


@pytest.fixture(scope="module")
def swept(prefect_api, tiny_llm, tmp_path_factory):
    return sweep(tmp_path_factory.mktemp("sweep_ppl"), tiny_llm, REGISTERED, TOKENS)


def versions(params: dict, registered: str) -> dict[str, dict]:
    """variant name -> {kind, params, metrics} of every registered version."""
    from mlflow import MlflowClient

    client = MlflowClient(params["mlflow_tracking_uri"])
    out = {}
    for mv in client.search_model_versions(f"name='{registered}'"):
        run = client.get_run(mv.run_id)
        out[run.data.tags["variant_name"]] = {"kind": run.data.tags["variant_kind"], "params": run.data.params,
                                              "metrics": run.data.metrics}
    return out


def composed_artifacts(params: dict, ranks_param: str) -> list[str]:
    """The artifact folders of a composed variant from its ``ranks`` param (``2:8,4,4;3:8,4,4``), in layer order."""
    from tensorllm.artifact import read_meta

    wanted = {int(layer): [int(r) for r in ranks.split(",")]
              for layer, ranks in (part.split(":") for part in ranks_param.split(";"))}
    found = {}
    for meta_file in Path(params["artifacts_root"]).rglob("artifact.json"):
        meta = read_meta(meta_file.parent)
        if wanted.get(int(meta["layer"])) == [int(r) for r in meta["ranks"]]:
            found[int(meta["layer"])] = str(meta_file.parent)
    assert sorted(found) == sorted(wanted), (found, wanted)
    return [found[layer] for layer in sorted(found)]


def test_composed_variants_and_the_base_carry_the_librarys_perplexity(swept, tiny_llm):
    import torch

    from tensorllm.evaluation.perplexity import compare_perplexity, perplexity_of

    params, summary, _ = swept
    registered = versions(params, REGISTERED)
    composed = {name: v for name, v in registered.items() if v["kind"] == "uniform"}
    assert len(composed) == 2, sorted(registered)  # one per rank configuration, on layers 2 and 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker (1 CPU from Ray: one torch thread), so the sums run in the same order
    try:
        base = perplexity_of(tiny_llm, tokens=TOKENS)
        direct = {name: perplexity_of(tiny_llm, composed_artifacts(params, v["params"]["ranks"]), tokens=TOKENS)
                  for name, v in composed.items()}
    finally:
        torch.set_num_threads(threads)
    assert base.n_windows == 2
    baseline = registered["baseline"]["metrics"]
    assert baseline["perplexity"] == pytest.approx(base.perplexity, rel=REL_TOL)
    assert (baseline["perplexity_ci_low"], baseline["perplexity_ci_high"]) == pytest.approx(base.perplexity_ci,
                                                                                          rel=REL_TOL)
    assert "perplexity_ratio" not in baseline  # the base has no ratio to itself
    for name, v in composed.items():
        m, cmp = v["metrics"], compare_perplexity(base, direct[name])
        assert m["perplexity"] == pytest.approx(direct[name].perplexity, rel=REL_TOL), name
        assert (m["perplexity_ci_low"], m["perplexity_ci_high"]) == pytest.approx(direct[name].perplexity_ci, rel=REL_TOL)
        assert m["perplexity_ratio"] == pytest.approx(cmp.ratio, rel=REL_TOL)
        assert (m["perplexity_ratio_ci_low"], m["perplexity_ratio_ci_high"]) == pytest.approx(cmp.ratio_ci, rel=REL_TOL)
        assert m["perplexity_within_margin"] == float(cmp.within_margin)
        assert abs(direct[name].perplexity - base.perplexity) > 1e3 * REL_TOL * base.perplexity  # the variant's own
    layer_variants = [v for v in registered.values() if v["kind"] == "layer"]
    assert len(layer_variants) == 4 and not any("perplexity" in v["metrics"] for v in layer_variants)
    rows = {row["name"]: row for row in summary["variants"]}
    assert all(rows[name]["perplexity_ratio"] == pytest.approx(v["metrics"]["perplexity_ratio"])
               for name, v in composed.items())  # what the terminal table shows
    assert summary["perplexity"] == {"corpus": "austen/persuasion.txt", "tokens": TOKENS, "window": 512, "margin": 0.1}


def test_the_base_perplexity_is_computed_once_and_each_composed_variant_once(swept):
    _, _, runs = swept
    names = sorted(r.name for r in runs)
    assert names.count("perplexity-baseline") == 1, names  # submitted early, reused by every variant's comparison
    assert len(names) == 3, names  # the base and the two composed variants; single-layer variants get none
    assert all(r.state.is_completed() for r in runs)


def test_composed_variants_replay_the_bases_inputs_to_the_first_sweep_layer(swept):
    """The base's task records the inputs of layer 2 (the lowest sweep layer) in the evaluations' hidden cache;
    both composed variants' tasks replayed them (and still equal the full forward: the test above)."""
    from tensorllm.evaluation.perplexity_prefix import load_prefix

    params, _, runs = swept
    results = {r.name: r.state.result() for r in runs}
    base = results.pop("perplexity-baseline")
    prefix_file = Path(base["prefix_file"])
    assert prefix_file.parent == Path(params["artifacts_root"]).parent / "evaluations" / "hidden-cache" / "perplexity"
    assert base["prefix_layer"] == 2 and base["replayed_from_layer"] is None
    assert load_prefix(prefix_file).identity == base["prefix_identity"]
    assert len(results) == 2 and all(r["replayed_from_layer"] == 2 for r in results.values()), results.keys()


def test_a_variants_key_names_the_prefixs_content_not_its_path():
    from tasks.perplexity import perplexity_key

    common = dict(model="m", artifacts=[], tokens=1024, window=512, model_identity="id", corpus_digest="c")
    here = perplexity_key(**common, prefix={"prefix_file": "/a/p.safetensors", "prefix_identity": "x"})
    moved = perplexity_key(**common, prefix={"prefix_file": "/b/p.safetensors", "prefix_identity": "x"})
    other = perplexity_key(**common, prefix={"prefix_file": "/a/p.safetensors", "prefix_identity": "y"})
    assert here == moved != other != perplexity_key(**common)  # and a full forward is a third computation
    recording = perplexity_key(**common, record_layer=2, prefix_dir="/a")
    assert recording == perplexity_key(**common, record_layer=2, prefix_dir="/b") != perplexity_key(**common)


def test_perplexity_tokens_0_measures_and_logs_nothing(prefect_api, tiny_llm, tmp_path_factory, swept):
    params, summary, runs = sweep(tmp_path_factory.mktemp("sweep_ppl_off"), tiny_llm, REGISTERED + "-off", 0)
    assert runs == [] and summary["perplexity"] is None
    registered = versions(params, REGISTERED + "-off")
    assert len(registered) == 7  # baseline, 4 single-layer variants, 2 composed: the sweep ran
    assert not [name for name, v in registered.items() if any(k.startswith("perplexity") for k in v["metrics"])]
