"""Deployments: the served ones (deployments/serve.py) and the work-pool ones (prefect.yaml) never share a
name, since a deployment name is unique per flow and `prefect deploy` would take over a served one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def served_names() -> set[str]:
    spec = importlib.util.spec_from_file_location("serve", ROOT / "deployments" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {d.name for d in module.deployments()}


def test_served_and_work_pool_deployments_have_distinct_names():
    pool = {d["name"] for d in yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]}
    served = served_names()
    assert served == {"served-nightly", "served-on-demand"}  # what docs/operations.md tells users to run
    assert pool and not pool & served, (pool, served)


def test_deployments_derive_the_registered_name_from_the_model():
    # a fixed registered_model in a default would send every model's variants to one name (issue 9)
    pool = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert all("registered_model" not in d.get("parameters", {}) for d in pool)
