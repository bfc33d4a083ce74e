"""Prefect tasks: thin wrappers around ``tensorllm`` functions. They choose resources, caching and
retries; they never do maths. They take and return paths and small records, never big tensors."""
