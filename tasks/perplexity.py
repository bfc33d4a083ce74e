"""Perplexity task: one model (the base, or the base with a variant's artifacts) on the held-out natural text.

A thin wrapper of :func:`tensorllm.evaluation.perplexity.perplexity_of` (the same call a user makes, so the
sweep's number is the library's number), on a Ray worker with the evaluation's resources and torch on as many
threads as Ray gave it CPUs. It returns ``PerplexityResult.to_dict()`` (a few hundred numbers: the per-window
losses that the paired comparison with the base needs).

Cached by content (:func:`perplexity_key`): the base's identity, the artifacts' digests (not their paths), the
token budget, the window, the corpus file's sha256, and the digests of the code that computes the number (the
library modules of :func:`tensorllm.provenance.perplexity_code_version`, this task module, torch and
transformers). The name of a variant is a label only: two names for the same weights are one computation.

Prefix replay (:mod:`tensorllm.evaluation.perplexity_prefix`): the base's task, given ``record_layer`` (the first
layer any variant edits) and ``prefix_dir``, also saves the hidden states entering that layer on the windows and
names the file in its result; a variant's task, given that result as ``prefix``, replays them and runs only the
layers from there on (``replayed_from_layer`` in its result). The key holds the recorded layer, and for a
variant the prefix's content identity (not its path; ``prefix_dir`` is where, not what).
"""

from __future__ import annotations

from prefect import task

from tensorllm.artifact import read_meta
from tensorllm.evaluation.perplexity import perplexity_of
from tensorllm.evaluation.perplexity_prefix import load_prefix
from tensorllm.identity import artifact_digest
from tensorllm.provenance import code_digest, perplexity_code_version

from .caching import CACHE_EXPIRATION, RESULT_SERIALIZER, TASKS_ROOT, stable_digest
from .resources import best_device, use_assigned_threads
from .result_integrity import verified_key

#: the task modules whose code is part of the result (what is called, on which device, with how many threads)
PERPLEXITY_TASK_MODULES = ("perplexity.py", "resources.py")


def perplexity_key(model: str, artifacts: list[str], tokens: int, window: int, model_identity: str,
                   corpus_digest: str, variant: str = "baseline", record_layer: int | None = None,
                   prefix_dir: str | None = None, prefix: dict | None = None) -> str:
    """The content key of one perplexity (see the module docstring); ``variant`` and ``prefix_dir`` are not part
    of it."""
    replay = {"record_layer": record_layer, "prefix": (prefix or {}).get("prefix_identity")}
    payload = {**({"replay": replay} if record_layer is not None or prefix is not None else {}),  # off: as before
               "model": str(model), "model_identity": model_identity,
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
                    corpus_digest: str, variant: str = "baseline", record_layer: int | None = None,
                    prefix_dir: str | None = None, prefix: dict | None = None) -> dict:
    """``perplexity_of(model, artifacts, tokens=..., window=...)`` on this worker's best device, in the dtype the
    library picks there (float32 on the CPU), on the shipped corpus; ``PerplexityResult.to_dict()``.

    ``model_identity`` and ``corpus_digest`` are inputs for the cache key; a corpus that changed since the flow
    read its digest is refused (the cached result would be filed under the other text's key). ``record_layer`` /
    ``prefix``: see the module docstring (a base result that recorded nothing, e.g. an unverified family: a full
    forward); a prefix file whose content is not the identity the key names is refused."""
    loaded = None
    if prefix is not None and prefix.get("prefix_file"):
        loaded = load_prefix(prefix["prefix_file"])
        if loaded.identity != prefix["prefix_identity"]:
            raise ValueError(f"perplexity prefix {prefix['prefix_file']} changed since the base recorded it "
                             "(another content); rerun the sweep")
    with use_assigned_threads():
        result = perplexity_of(model, artifacts, tokens=tokens, window=window, device=best_device(),
                               record_layer=record_layer, prefix_dir=prefix_dir, prefix=loaded)
    if result.corpus_digest != corpus_digest:
        raise ValueError(f"perplexity corpus {result.corpus} changed during the sweep (sha256 {result.corpus_digest}, "
                         f"the flow read {corpus_digest}); rerun the sweep")
    return result.to_dict()
