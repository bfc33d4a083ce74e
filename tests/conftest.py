"""Shared test set-up: quiet, offline, isolated services; markers for the slow layers of the suite.

* ``real_model``: uses the real SmolLM2-135M-Instruct (converted once into ``$TENSORLLM_CACHE``).
* ``integration``: starts real services (a Prefect API via ``prefect_test_harness``, a local Ray, an
  MLflow sqlite store in ``tmp_path``); each test stops what it started, by PID.
* ``slow``: a unit test that starts subprocesses or generates at length (left out of ``make test-fast``).

Tiny random models come from :mod:`tensorllm.tiny_models`.
"""

from __future__ import annotations

import os

for key, value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)
