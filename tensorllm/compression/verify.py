"""Is the composed model as good as the base? A paired comparison on the same items, with a non-inferiority margin.

Both models are evaluated on the same split in the same dtype (:func:`tensorllm.evaluation.evaluate`) and compared
item by item (:func:`tensorllm.evaluation.compare_paired`): the accuracy difference with its 95% interval, and the
teacher-forced answer loss difference (the language-modelling measure on these prompts). The variant is
*non-inferior* when the lower end of the accuracy-difference interval is above ``-margin``.

QA items see a few answer tokens; :func:`verify_perplexity` adds running text: the perplexity of both models on the
held-out corpus (:mod:`tensorllm.evaluation.perplexity`), paired window by window, and whether the ratio's upper
95% end stays within ``1 + margin`` (the goal: +10%). A compression that keeps the answers but wrecks language
modelling shows there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..evaluation import EvalConfig, EvalResult, compare_paired, evaluate
from ..evaluation.perplexity import (DEFAULT_PPL_MARGIN, DEFAULT_TOKENS, DEFAULT_WINDOW, PerplexityComparison,
                                     PerplexityResult, compare_perplexity, perplexity_of)

DEFAULT_MARGIN = 0.02  # two accuracy points


@dataclass
class SplitEvaluation:
    """One model on one split: the aggregate result and where its per-item rows are."""

    result: EvalResult
    examples: Path


@dataclass
class Verification:
    """The paired comparison of variant and base on one split, and the verdict."""

    dataset: str
    split: str
    n: int
    metric: str  # "correct" (task accuracy) or "top1_correct" (first answer token, teacher forced)
    base_accuracy: float
    variant_accuracy: float
    accuracy_diff: float
    accuracy_diff_ci: tuple[float, float]
    base_loss: float
    variant_loss: float
    loss_diff: float
    loss_diff_ci: tuple[float, float]
    margin: float
    non_inferior: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        lo, hi = self.accuracy_diff_ci
        verdict = ("non-inferior to the base" if self.non_inferior else
                   "NOT shown non-inferior to the base")
        return (f"{self.dataset}/{self.split} (n={self.n}, {self.metric}): base {self.base_accuracy:.3f}, variant "
                f"{self.variant_accuracy:.3f}, difference {self.accuracy_diff:+.3f} [95% {lo:+.3f}, {hi:+.3f}]: "
                f"{verdict} within {self.margin:.2f}; answer loss {self.base_loss:.3f} -> {self.variant_loss:.3f} "
                f"({self.loss_diff:+.3f} [{self.loss_diff_ci[0]:+.3f}, {self.loss_diff_ci[1]:+.3f}])")


def evaluate_split(model, tokenizer, dataset: str, split: str, limit: int | None, generate: bool, out: Path,
                   batch_size: int = 16, task=None) -> SplitEvaluation:
    """Evaluate ``model`` on ``dataset``/``split`` and keep its per-item rows in ``out`` (a jsonl file)."""
    config = EvalConfig(dataset=dataset, split=split, limit=limit, generate=generate, batch_size=batch_size)
    with torch.no_grad():
        result = evaluate(model, tokenizer, config, examples_out=out, task=task)
    return SplitEvaluation(result, Path(out))


def metric_for(evaluation: SplitEvaluation) -> str:
    """``correct`` where the evaluation gave a task accuracy (classification, or generation on), else top-1."""
    return "correct" if evaluation.result.accuracy is not None else "top1_correct"


def compare(base: SplitEvaluation, variant: SplitEvaluation, metric: str, margin: float = DEFAULT_MARGIN
            ) -> Verification:
    """The paired comparison of two evaluations of the same items, with the non-inferiority verdict."""
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be a fraction in [0, 1) of accuracy; got {margin!r}")
    cmp = compare_paired(base.examples, variant.examples, metric=metric)
    lo, hi = (tuple(float(x) for x in cmp.accuracy_diff_ci) if cmp.n > 1 else (float("nan"),) * 2)
    return Verification(
        dataset=base.result.dataset, split=base.result.split, n=cmp.n, metric=metric,
        base_accuracy=cmp.base_accuracy, variant_accuracy=cmp.variant_accuracy, accuracy_diff=cmp.accuracy_diff,
        accuracy_diff_ci=(lo, hi), base_loss=cmp.base_loss, variant_loss=cmp.variant_loss, loss_diff=cmp.loss_diff,
        loss_diff_ci=tuple(float(x) for x in cmp.loss_diff_ci), margin=margin, non_inferior=bool(lo >= -margin),
    )  # fmt: skip


def verify_paths(base_model: str, artifact_paths: Sequence[str | Path], dataset: str, split: str, limit: int | None,
                 generate: bool, out_dir: Path, margin: float = DEFAULT_MARGIN, batch_size: int = 16,
                 base_eval: SplitEvaluation | None = None) -> tuple[Verification, SplitEvaluation]:
    """Evaluate the base (unless ``base_eval`` is given) and the factorised variant; compare them paired."""
    from ..checkpoint import stored_dtype
    from ..evaluation.data.user_spec import dataset_label
    from ..evaluation.runtime import default_dtype
    from ..export import variant_model
    from ..models import load_model, resolve_model

    folder = resolve_model(base_model)
    dtype = default_dtype("cpu", base=stored_dtype(folder))  # float32 on the CPU for both: a fair pair
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{dataset_label(dataset)}-{split}-n{limit}-{'gen' if generate else 'tf'}"  # a file name, never a path
    if base_eval is None:
        model, tokenizer = load_model(folder, dtype=dtype)
        base_eval = evaluate_split(model, tokenizer, dataset, split, limit, generate, out_dir / f"base-{tag}.jsonl",
                                   batch_size)
        del model
    model, tokenizer, _ = variant_model(base_model, artifact_paths, "factorised", dtype=dtype)
    variant_eval = evaluate_split(model, tokenizer, dataset, split, limit, generate, out_dir / f"variant-{tag}.jsonl",
                                  batch_size)
    metric = metric_for(variant_eval)
    return compare(base_eval, variant_eval, metric, margin), base_eval


def verify_perplexity(base_model: str, artifact_paths: Sequence[str | Path], tokens: int = DEFAULT_TOKENS,
                      window: int = DEFAULT_WINDOW, margin: float = DEFAULT_PPL_MARGIN,
                      base: PerplexityResult | None = None) -> tuple[PerplexityComparison, PerplexityResult]:
    """Perplexity of the base (unless ``base`` is given) and of the factorised variant on the held-out corpus,
    paired: ``(comparison, base result)``. Both run in the same dtype (float32 on the CPU), as :func:`verify_paths`."""
    if base is None:
        base = perplexity_of(base_model, tokens=tokens, window=window)
    variant = perplexity_of(base_model, artifact_paths, tokens=tokens, window=window)
    return compare_perplexity(base, variant, margin), base
