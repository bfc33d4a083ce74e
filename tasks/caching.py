"""Cache keys for the pipeline's tasks.

A task's key is a hash of its inputs (paths, names, ranks, limits: all small) — the flow passes the
model's identity and the code version as inputs, so a different checkpoint or changed maths gives a
new key, and a changed parameter recomputes only the tasks it reaches. Results are persisted in
Prefect's result storage (``$PREFECT_HOME/storage`` by default), so a second run of the same sweep in a
new process finds them.
"""

from __future__ import annotations

import datetime

from prefect.cache_policies import INPUTS

#: the task inputs are small records (no tensors), so hashing them is cheap
PIPELINE_CACHE = INPUTS
CACHE_EXPIRATION = datetime.timedelta(days=30)
