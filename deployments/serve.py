"""Serve the sweep as Prefect deployments from one long-running process (no work pool needed).

Usage (from the project root, with a Prefect server running and PREFECT_API_URL set)::

    python deployments/serve.py                       # 'served-nightly' on a cron + 'served-on-demand' for UI/CLI
    prefect deployment run 'compress-sweep/served-on-demand' -p layers='[27, 28]' -p val_limit=50 --watch

Environment: TENSORLLM_SERVE_CONFIG (a sweep configuration file, YAML or JSON, the format of
``tensorllm sweep --config``; default deployments/sweep.yaml), TENSORLLM_SERVE_PARAMS (JSON merged over it),
TENSORLLM_SERVE_CRON (default "0 3 * * *") and TENSORLLM_SERVE_NAME_PREFIX (default "").
Stop it with one SIGTERM; Prefect pauses the served deployments on shutdown.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import EntrypointType

from flows.compress_sweep import compress_sweep
from flows.config_file import read_config_file

NIGHTLY_CONFIG = Path(__file__).resolve().parent / "sweep.yaml"
#: "served-" keeps these apart from the work-pool deployments of prefect.yaml ("pool-..."): deployment names
#: are unique per flow, and `prefect deploy` would otherwise silently take over a served deployment
SERVED = "served-"


def deployments():
    prefix = os.environ.get("TENSORLLM_SERVE_NAME_PREFIX", "")
    params = {**read_config_file(os.environ.get("TENSORLLM_SERVE_CONFIG", NIGHTLY_CONFIG)),
              **json.loads(os.environ.get("TENSORLLM_SERVE_PARAMS", "{}"))}
    # A module-path entrypoint: loaded by file path, the flow's module would be named "compress_sweep",
    # which Ray workers cannot import when they unpickle the run context.
    common = {"parameters": params, "entrypoint_type": EntrypointType.MODULE_PATH}
    nightly = compress_sweep.to_deployment(name=f"{prefix}{SERVED}nightly", cron=os.environ.get("TENSORLLM_SERVE_CRON", "0 3 * * *"),
                                           tags=["tensorllm", "nightly"], **common)
    on_demand = compress_sweep.to_deployment(name=f"{prefix}{SERVED}on-demand", tags=["tensorllm", "manual"], **common)
    return nightly, on_demand


if __name__ == "__main__":
    serve(*deployments())
