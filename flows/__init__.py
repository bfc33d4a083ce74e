"""Prefect flows: the sweep's DAG, its typed parameters, the fan-out and the promotion policy."""
