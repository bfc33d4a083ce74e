"""Perplexity on held-out natural text in the sweep: the base's once, every composed variant's, as registry metrics.

The QA metrics score a few answer tokens after a prompt; a whole-model compression can keep them and still wreck
running text. With ``SweepConfig.perplexity_tokens`` > 0 the sweep measures the perplexity of the base and of each
composed variant on the same windows of a held-out novel (:mod:`tensorllm.evaluation.perplexity`; one task per
model on a Ray worker with the evaluation's resources: :mod:`tasks.perplexity`). The base's is submitted first,
so it runs beside the decompositions; the variants' run in parallel beside their QA evaluations. A variant that
shares its weights with another (two names, one content key) is measured once.

The base's task also records the hidden states entering the sweep's first layer L0 (the lowest of
``config.layers``) on the windows, into a content-keyed file under the evaluations' ``hidden-cache/perplexity``
folder; each composed variant's task takes the base's result (its future: it waits for the base) and replays
them, so it runs only layers L0.. (:mod:`tensorllm.evaluation.perplexity_prefix`; the same numbers as a full
forward; families not verified for the replay run a full forward).

Metrics on the version's MLflow run (:data:`BASE_METRICS` on the baseline; all of them on a composed variant):

* ``perplexity``, ``perplexity_ci_low``, ``perplexity_ci_high``: exp of the mean per-token NLL and its 95%
  Student-t interval over the windows;
* ``perplexity_ratio`` and ``perplexity_ratio_ci_low/high``: variant / base on the same windows, paired
  (:func:`tensorllm.evaluation.perplexity.compare_perplexity`), and ``perplexity_within_margin``: 1 when the
  ratio's upper 95% end is within ``1 + PPL_MARGIN`` (+10%), else 0.

They are a report: the promotion rule does not read them (docs/pipeline.md). :func:`check_perplexity` is the
pre-flight check of the corpus (no Prefect import here: :mod:`flows.validate` calls it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tensorllm.evaluation.perplexity import (DEFAULT_PPL_MARGIN, DEFAULT_WINDOW, PerplexityResult, compare_perplexity,
                                             load_corpus)

from .validate import SweepInputError

if TYPE_CHECKING:
    from .config import SweepConfig
    from .records import Variant

PPL_MARGIN = DEFAULT_PPL_MARGIN  # the goal compare_perplexity checks: at most +10% over the base
BASE_METRICS = ("perplexity", "perplexity_ci_low", "perplexity_ci_high")
RATIO_METRICS = ("perplexity_ratio", "perplexity_ratio_ci_low", "perplexity_ratio_ci_high", "perplexity_within_margin")


def check_perplexity(config: SweepConfig) -> None:
    """SweepInputError (one line) when the perplexity is on and its corpus cannot be read."""
    if not config.perplexity_tokens:
        return
    try:
        load_corpus()
    except (FileNotFoundError, ValueError) as exc:
        raise SweepInputError(f"perplexity_tokens: {exc}; or 0 to measure no perplexity") from None


def result_metrics(result: PerplexityResult) -> dict[str, float]:
    """``perplexity`` and its interval (a bound that is not finite, e.g. overflow, is left out: MLflow plots
    numbers)."""
    lo, hi = result.perplexity_ci
    return _finite({"perplexity": result.perplexity, "perplexity_ci_low": lo, "perplexity_ci_high": hi})


def variant_metrics(base: PerplexityResult, variant: PerplexityResult, margin: float = PPL_MARGIN) -> dict[str, float]:
    """The variant's own perplexity metrics and its paired ratio to the base (see the module docstring)."""
    cmp = compare_perplexity(base, variant, margin)
    return {**result_metrics(variant), **_finite({"perplexity_ratio": cmp.ratio, "perplexity_ratio_ci_low": cmp.ratio_ci[0],
                                                  "perplexity_ratio_ci_high": cmp.ratio_ci[1]}),
            "perplexity_within_margin": float(cmp.within_margin)}


def summary_fields(metrics: dict[str, float]) -> dict:
    """The perplexity columns of a summary row, from a variant's ``extra_metrics`` (none when not measured)."""
    out = {k: metrics[k] for k in ("perplexity", "perplexity_ratio", "perplexity_ratio_ci_high") if k in metrics}
    if "perplexity_within_margin" in metrics:
        out["perplexity_within_margin"] = bool(metrics["perplexity_within_margin"])
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


class SweepPerplexity:
    """The perplexity tasks of one sweep: submitted by content key (once each), then recorded as metrics.

    ``submit`` inside the flow's ``remote_options`` block of the evaluations (their CPUs and GPUs); ``record``
    gathers the results into the variants' ``extra_metrics``, which registration logs."""

    def __init__(self, config: SweepConfig, model_identity: str, layers: list[int] | None = None,
                 prefix_dir: str | None = None):
        """``layers``: the sweep's layers (the base records the inputs of the lowest, into ``prefix_dir``, and the
        composed variants replay them); None or no ``prefix_dir``: every perplexity is a full forward."""
        self.tokens = config.perplexity_tokens
        self.record_layer = min(layers) if layers and prefix_dir else None
        self.prefix_dir = prefix_dir
        self.model, self.identity, self.window = config.model, model_identity, DEFAULT_WINDOW
        self.corpus = load_corpus() if self.tokens else None
        self._futures: dict[str, object] = {}  # content key -> future

    def settings(self) -> dict:
        """What the perplexity metrics depend on besides the weights (part of the registry key of the variants
        that carry them); {} when off."""
        if not self.tokens:
            return {}
        return {"perplexity": {"tokens": self.tokens, "window": self.window, "corpus": self.corpus.digest}}

    def submit(self, v: Variant):
        """The future of ``v``'s perplexity (None when off); the same weights under another name share it."""
        if not self.tokens:
            return None
        from tasks.perplexity import perplexity_key, perplexity_task

        params = dict(model=self.model, artifacts=v.artifacts, tokens=self.tokens, window=self.window,
                      model_identity=self.identity, corpus_digest=self.corpus.digest, variant=v.name)
        replay = self.record_layer is not None and v.artifacts and (v.first_layer or 0) >= self.record_layer
        if self.record_layer is not None and not v.artifacts:
            params.update(record_layer=self.record_layer, prefix_dir=self.prefix_dir)
        key = perplexity_key(**params)  # within one sweep the prefix is the base's: one key for one weight set
        if key not in self._futures:
            from .records import baseline_variant

            prefix = {"prefix": self.submit(baseline_variant())} if replay else {}  # its result, once it is done
            self._futures[key] = perplexity_task.submit(**params, **prefix)
        return self._futures[key]

    def record(self, variants: list[Variant]) -> None:
        """Wait for the perplexities of ``variants`` (the baseline, or composed variants: their base's is
        submitted here too if it was not) and add their metrics to ``v.extra_metrics``."""
        if not self.tokens or not variants:
            return
        from .records import baseline_variant

        futures = {v.name: self.submit(v) for v in variants}  # all submitted before the first wait
        base = PerplexityResult.from_dict(self.submit(baseline_variant()).result())
        for v in variants:
            result = PerplexityResult.from_dict(futures[v.name].result())
            v.extra_metrics.update(result_metrics(result) if not v.artifacts else variant_metrics(base, result))

    def summary(self) -> dict | None:
        """What the sweep's summary says about the measurement (None when off)."""
        if not self.tokens:
            return None
        return {"corpus": self.corpus.name, "tokens": self.tokens, "window": self.window, "margin": PPL_MARGIN}
