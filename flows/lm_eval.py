"""lm-evaluation-harness results of the champion a sweep promotes, logged on its MLflow version.

``SweepConfig.lm_eval_tasks`` names lm-eval tasks (standard ones such as ``hellaswag``, or the user's own in
``lm_eval_include``); when the sweep promotes a variant, :func:`champion_lm_eval` runs them on it (the base
with the champion's artifacts applied, on a Ray worker: :mod:`tasks.lm_eval`) and logs the scores as
``lm_eval.<task>.<metric>`` (and ``..._stderr``) metrics of the version's run. :func:`check_lm_eval` is the
pre-flight check (the extra is installed, every task name is known), run before anything starts.
"""

from __future__ import annotations

from tensorllm.evaluation.lm_eval_runner import LmEvalResult, task_manager

from .config import SweepConfig
from .records import Variant
from .validate import SweepInputError


def check_lm_eval(config: SweepConfig) -> None:
    """SweepInputError (one line) when lm_eval_tasks is set but lm-eval is missing or a task is unknown."""
    if not config.lm_eval_tasks:
        if config.lm_eval_include is not None or config.lm_eval_limit is not None:
            raise SweepInputError("lm_eval_include and lm_eval_limit apply to lm_eval_tasks, which is not set")
        return
    try:
        task_manager(config.lm_eval_tasks, config.lm_eval_include)
    except (ModuleNotFoundError, ValueError, FileNotFoundError) as exc:
        raise SweepInputError(f"lm_eval_tasks: {exc}") from None


def champion_lm_eval(uri: str | None, name: str, config: SweepConfig, champion: Variant | None,
                     gpus: float) -> dict | None:
    """Run ``config.lm_eval_tasks`` on the promoted ``champion`` and log the scores on its version; the result
    as a dict (``LmEvalResult.to_dict()`` plus ``version``), or None when nothing was promoted or no task is set."""
    if not config.lm_eval_tasks or champion is None:
        return None
    from prefect_ray.context import remote_options  # here: check_lm_eval (validation) must not start Prefect

    from tasks.lm_eval import lm_eval_task
    from tasks.register import update_metrics_task

    with remote_options(num_cpus=1, num_gpus=gpus):
        raw = lm_eval_task.submit(config.model, champion.artifacts, config.lm_eval_tasks, config.lm_eval_include,
                                  config.lm_eval_limit, config.batch_size, champion.version).result()
    result = LmEvalResult.from_dict(raw)
    update_metrics_task(uri, name, champion.version, result.metrics())
    return {**result.to_dict(), "version": champion.version}
