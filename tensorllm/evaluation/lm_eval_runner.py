"""lm-evaluation-harness on a model object: the base, a variant (base + artifacts) or an exported folder.

lm-eval is what people run on a compressed model to see what it kept. This hands the model we already hold
in memory (a base, a base with artifacts applied, or a factorised export loaded by
:func:`tensorllm.load_export.load_compressed`, which plain ``from_pretrained`` cannot read) to lm-eval's
Hugging Face interface, ``HFLM(pretrained=model, tokenizer=tokenizer)``, and runs ``simple_evaluate``.
lm-eval is an optional extra (``pip install 'tensorllm[eval]'``); nothing else imports it.

Usage::

    from tensorllm.evaluation.lm_eval_runner import run_lm_eval
    result = run_lm_eval(model, tokenizer, ["hellaswag", "arc_easy"], limit=200)    # online: hub datasets
    result = run_lm_eval(model, tokenizer, ["my_task"], include_path="my_tasks/")  # a local task YAML
    result.scores[0].task, result.scores[0].metric, result.scores[0].value, result.scores[0].stderr

Task names are lm-eval's own (``lm-eval ls tasks``); ``include_path`` adds a folder of task YAML files
(lm-eval's ``TaskManager(include_path=...)``), which is how a task over a local data file runs offline.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'tensorllm[eval]' (or pip install lm-eval; `make install` installs it)"


@dataclass(frozen=True)
class LmEvalScore:
    """One metric of one task as lm-eval reports it (``"acc,none"`` -> metric ``acc``, filter ``none``)."""

    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None  # lm-eval's bootstrap / analytic standard error; None where it gives none ("N/A")


@dataclass
class LmEvalResult:
    """What one lm-eval run gave: the scores, the samples counted per task, the settings that produced them."""

    tasks: list[str]
    scores: list[LmEvalScore]
    n_samples: dict[str, int]
    limit: int | float | None
    num_fewshot: int | None
    lm_eval_version: str
    seconds: float
    samples: dict[str, list[dict]] = field(default_factory=dict, repr=False)  # per-example rows (log_samples)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LmEvalResult:
        """The inverse of :meth:`to_dict` (a result that travelled as a dict, e.g. out of a Prefect task)."""
        fields = {k: v for k, v in data.items() if k != "scores"}
        return cls(**fields, scores=[LmEvalScore(**s) for s in data["scores"]])

    def score(self, task: str, metric: str, filter: str = "none") -> LmEvalScore:
        """The score of ``task``/``metric`` (KeyError naming the ones there are)."""
        for s in self.scores:
            if (s.task, s.metric, s.filter) == (task, metric, filter):
                return s
        raise KeyError(f"no score {task}/{metric},{filter}; have {[f'{s.task}/{s.metric},{s.filter}' for s in self.scores]}")

    def metrics(self, prefix: str = "lm_eval") -> dict[str, float]:
        """Flat metric names for a registry: ``lm_eval.<task>.<metric>`` (``.<filter>`` when not ``none``) and
        ``..._stderr`` beside each value lm-eval gave a standard error for."""
        out: dict[str, float] = {}
        for s in self.scores:
            name = f"{prefix}.{s.task}.{s.metric}" + ("" if s.filter == "none" else f".{s.filter}")
            out[name] = s.value
            if s.stderr is not None:
                out[name + "_stderr"] = s.stderr
        return out

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (the scores and settings; not the per-example samples)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path


def require_lm_eval():
    """The ``lm_eval`` module, or ModuleNotFoundError saying how to install the extra."""
    try:
        import lm_eval
    except ImportError as exc:
        raise ModuleNotFoundError(f"lm-evaluation-harness is not installed ({exc}); install the extra: {INSTALL_HINT}") from None
    return lm_eval


def parse_tasks(text: str) -> list[str]:
    """``"hellaswag, arc_easy"`` -> ``["hellaswag", "arc_easy"]`` (ValueError when no name is given)."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ValueError(f"--lm-eval {text!r}: give lm-eval task names separated by commas, e.g. hellaswag,arc_easy")
    return tasks


def task_manager(tasks: list[str], include_path: str | Path | None = None):
    """lm-eval's TaskManager (with ``include_path``), after checking that every name in ``tasks`` is known."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(f"--lm-eval-include {include_path}: not a folder (give a folder of lm-eval task YAML files)")
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    known = set(manager.all_tasks)
    missing = [t for t in tasks if t not in known]
    if missing:
        where = f" (nor in {include_path})" if include_path is not None else ""
        raise ValueError(f"unknown lm-eval task(s) {', '.join(missing)}{where}; `lm-eval ls tasks` lists the "
                         "standard ones (e.g. hellaswag, arc_easy); --lm-eval-include DIR adds your own task YAML files")
    return manager


def run_lm_eval(model, tokenizer, tasks: list[str], *, include_path: str | Path | None = None,
                limit: int | float | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                log_samples: bool = False, seed: int = 0, manager=None) -> LmEvalResult:
    """Run lm-eval's ``simple_evaluate`` on ``model`` (an in-memory causal LM) for ``tasks``.

    ``limit`` is lm-eval's: the first N documents of each task (a float < 1: that fraction). The model is used
    as it is (its device and dtype); lm-eval's bootstrap, sampling and few-shot seeds are all ``seed``.
    ``log_samples`` keeps lm-eval's per-example rows in ``result.samples``. ``manager``: a TaskManager from
    :func:`task_manager` (built here when not given; building one indexes every task, ~10 s).
    """
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    manager = manager or task_manager(tasks, include_path)
    if tokenizer is None:
        raise ValueError("lm-eval needs a tokenizer, and this model folder has none (copy the base's tokenizer files into it)")
    # backend="causal": a factorised export's model_type (tensorllm_factorised) is not in transformers' maps
    lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)
    start = time.perf_counter()
    raw = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=log_samples, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    seconds = time.perf_counter() - start
    scores = scores_of(raw["results"])
    n_samples = {task: int(counts.get("effective", counts.get("original", 0)))
                 for task, counts in raw.get("n-samples", {}).items()}
    log.info("lm-eval on %s: %d scores in %.1f s", ",".join(tasks), len(scores), seconds)
    return LmEvalResult(tasks=list(tasks), scores=scores, n_samples=n_samples, limit=limit, num_fewshot=num_fewshot,
                        lm_eval_version=getattr(lm_eval, "__version__", "unknown"), seconds=seconds,
                        samples=raw.get("samples", {}) if log_samples else {})


def scores_of(results: dict[str, dict]) -> list[LmEvalScore]:
    """lm-eval's ``results`` block (``{"task": {"acc,none": 0.5, "acc_stderr,none": 0.1, ...}}``) as scores."""
    scores = []
    for task, metrics in sorted(results.items()):
        for key, value in sorted(metrics.items()):
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue  # name, alias, sample_len, and the stderr entries (read with their metric below)
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            scores.append(LmEvalScore(task=task, metric=metric, filter=filt, value=float(value), stderr=stderr))
    return scores
