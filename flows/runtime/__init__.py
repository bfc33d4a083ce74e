"""The processes a sweep needs and owns: not flows, but what runs them.

* :mod:`.services`: a local Prefect API (started, health-checked, stopped by PID), quiet defaults.
* :mod:`.supervise`: the ``tensorllm sweep`` supervisor that runs the sweep in a child and cleans up on a signal.
* :mod:`.service_ledger`: the on-disk record of every process a sweep started, to clean up after a SIGKILL.
* :mod:`.local_cluster`: a multi-node Ray cluster on one machine (token auth, own ports), for tests and benchmarks.
"""
