"""The entry flow's own Prefect artifact: the decision and a link to the sub-flow run that did the work.

:func:`flows.compress_sweep.compress_sweep` validates and hands everything to a sub-flow on Ray, so its own
run would show no task run and no artifact; this gives the run a user opens first (the one a deployment or the
UI started) the decision and the way to the sub-flow's tasks, tables and config artifacts.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from prefect.utilities.urls import url_for

ARTIFACT_KEY = "sweep-decision"


def sub_flow_link(flow_run_id: str, name: str) -> str:
    """A markdown link to a flow run's page: absolute when the Prefect UI's URL is known, else the UI's own route."""
    url = url_for("flow-run", obj_id=str(flow_run_id)) or f"/runs/flow-run/{flow_run_id}"
    return f"[{name}]({url})"


def decision_markdown(summary: dict, flow_run_id: str, sub_flow_name: str) -> str:
    """The artifact's text: the decision sentence (a sweep) or one line per model (a batch), then the link."""
    link = sub_flow_link(flow_run_id, sub_flow_name)
    if "decision" in summary:
        decision = summary["decision"]
        champion = summary.get("champion_version")
        lines = [f"**Decision** ({summary.get('objective', '?')}): {decision['sentence']}", "",
                 f"Registered model `{summary.get('registered_model', '?')}`, champion: "
                 f"{'v' + str(champion) if champion is not None else 'none'}."]
    else:
        models = summary.get("models", {})
        lines = [f"**Batch** of {len(models)} model(s), evaluation `{summary.get('evaluate', '?')}`: "
                 + ", ".join(f"`{m}`" for m in models)]
    return "\n".join([*lines, "", f"Tasks, the variants table and the configuration: sub-flow run {link}."])


def publish_decision(summary: dict, flow_run_id: str, sub_flow_name: str) -> None:
    """Create the entry flow run's markdown artifact (key ``sweep-decision``)."""
    create_markdown_artifact(markdown=decision_markdown(summary, flow_run_id, sub_flow_name), key=ARTIFACT_KEY,
                             description="The sweep's decision; its work ran in the linked sub-flow")
