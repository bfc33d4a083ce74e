"""Perplexity task: one model (the base, or the base with a variant's artifacts) on the held-out natural text.

A thin wrapper of :func:`tensorllm.evaluation.perplexity.perplexity_of` (the same call a user makes, so the
sweep's number is the library's number), on a Ray worker with the evaluation's resources and torch on as many
threads as Ray gave it CPUs. It returns ``PerplexityResult.to_dict()`` (a few hundred numbers: the per-window
losses that the paired comparison with the base needs).

Cached by content (:func:`perplexity_key`): the base's identity, the artifacts' digests (not their paths), the
token budget, the window, the corpus file's sha256, and the digests of the code that computes the number (the
library modules of :func:`tensorllm.provenance.perplexity_code_version`, this task module, torch and
transformers). The name of a variant is a label only: two names for the same weights are one computation.
"""

from __future__ import annotations

from prefect import task

from tensorllm.artifact import read_meta
from tensorllm.evaluation.perplexity import perplexity_of
from tensorllm.identity import artifact_digest
from tensorllm.provenance import code_digest, perplexity_code_version

from .caching import CACHE_EXPIRATION, RESULT_SERIALIZER, TASKS_ROOT, stable_digest
from .resources import best_device, use_assigned_threads
from .result_integrity import verified_key

#: the task modules whose code is part of the result (what is called, on which device, with how many threads)
PERPLEXITY_TASK_MODULES = ("perplexity.py", "resources.py")


def perplexity_key(model: str, artifacts: list[str], tokens: int, window: int, model_identity: str,
                   corpus_digest: str, variant: str = "baseline") -> str:
    """The content key of one perplexity (see the module docstring); ``variant`` is not part of it."""
    payload = {"model": str(model), "model_identity": model_identity,
               "artifacts": [artifact_digest(read_meta(p)) for p in artifacts],  # content, in apply order
               "tokens": int(tokens), "window": int(window), "corpus_digest": corpus_digest,
               "code": {"library": perplexity_code_version(), "task": code_digest(PERPLEXITY_TASK_MODULES, TASKS_ROOT)}}
    return "perplexity-" + stable_digest(payload)


@verified_key
def perplexity_cache_key(_context, parameters: dict) -> str:
    """Prefect ``cache_key_fn`` of ``perplexity``: exactly :func:`perplexity_key`."""
    return perplexity_key(**parameters)


@task(name="perplexity", cache_key_fn=perplexity_cache_key, cache_expiration=CACHE_EXPIRATION, retries=1,
      retry_delay_seconds=5, result_serializer=RESULT_SERIALIZER, task_run_name="perplexity-{variant}")
def perplexity_task(model: str, artifacts: list[str], tokens: int, window: int, model_identity: str,
                    corpus_digest: str, variant: str = "baseline") -> dict:
    """``perplexity_of(model, artifacts, tokens=..., window=...)`` on this worker's best device, in the dtype the
    library picks there (float32 on the CPU), on the shipped corpus; ``PerplexityResult.to_dict()``.

    ``model_identity`` and ``corpus_digest`` are inputs for the cache key; a corpus that changed since the flow
    read its digest is refused (the cached result would be filed under the other text's key)."""
    with use_assigned_threads():
        result = perplexity_of(model, artifacts, tokens=tokens, window=window, device=best_device())
    if result.corpus_digest != corpus_digest:
        raise ValueError(f"perplexity corpus {result.corpus} changed during the sweep (sha256 {result.corpus_digest}, "
                         f"the flow read {corpus_digest}); rerun the sweep")
    return result.to_dict()
