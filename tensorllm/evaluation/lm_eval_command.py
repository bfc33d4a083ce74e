"""``tensorllm evaluate MODEL --lm-eval TASKS``: lm-evaluation-harness on the base, a variant or an export.

Usage::

    tensorllm evaluate smollm2-135m --lm-eval hellaswag,arc_easy --limit 200              # the base (online)
    tensorllm evaluate smollm2-135m --variant runs/artifacts/L29_r64-32-4 --lm-eval arc_easy --compare-base
    tensorllm evaluate runs/smollm2-2x --lm-eval my_task --lm-eval-include my_tasks/    # an export, a local task

The model is loaded as ``tensorllm evaluate`` loads it (a factorised export through
:func:`tensorllm.load_export.load_compressed`), artifacts are applied in place, and the model object goes to
:func:`tensorllm.evaluation.lm_eval_runner.run_lm_eval`. Each run's scores are written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .lm_eval_runner import LmEvalResult, parse_tasks, require_lm_eval, run_lm_eval, task_manager


def add_lm_eval_options(parser: argparse.ArgumentParser) -> None:
    """The ``--lm-eval*`` options of ``tensorllm evaluate`` (``--limit``, ``--batch-size``, ``--variant``,
    ``--compare-base``, ``--device``, ``--dtype`` and ``--out`` are the command's own and apply too)."""
    parser.add_argument("--lm-eval", metavar="TASKS",
                        help="run lm-evaluation-harness tasks instead of --dataset, comma-separated lm-eval names "
                             "(e.g. hellaswag,arc_easy); needs the [eval] extra")
    parser.add_argument("--lm-eval-include", metavar="DIR",
                        help="--lm-eval: a folder of your own lm-eval task YAML files (e.g. over a local data file)")
    parser.add_argument("--lm-eval-fewshot", type=int, metavar="N",
                        help="--lm-eval: number of few-shot examples (default: each task's own)")


def cmd_lm_eval(args) -> int:
    """Run the ``--lm-eval`` tasks on the model (and, with ``--compare-base``, on the base first)."""
    require_lm_eval()  # before anything is loaded: a missing extra is one line, exit 2
    if args.dataset is not None:
        raise ValueError("give --dataset (our protocol) or --lm-eval (lm-evaluation-harness tasks), not both")
    if args.lm_eval_fewshot is not None and args.lm_eval_fewshot < 0:
        raise ValueError(f"--lm-eval-fewshot {args.lm_eval_fewshot}: must be 0 or more")
    tasks = parse_tasks(args.lm_eval)
    manager = task_manager(tasks, args.lm_eval_include)  # unknown task names fail before the model loads

    from ..artifact import apply_artifacts, load_artifact
    from ..cli import check_writable_folder
    from ..models import load_model, resolve_model
    from ..naming import variant_label
    from .runtime import default_device, parse_dtype

    check_writable_folder(args.out, "--out")
    folder = resolve_model(args.model)
    device = args.device or str(default_device())
    dtype = parse_dtype(args.dtype) if args.dtype else None
    model, tokenizer = load_model(folder, dtype=dtype, device=device, layout=args.layout)
    artifacts = [load_artifact(p) for p in args.variant or []]
    out = Path(args.out)

    def run(label: str) -> LmEvalResult:
        result = run_lm_eval(model, tokenizer, tasks, manager=manager, limit=args.limit,
                             num_fewshot=args.lm_eval_fewshot, batch_size=args.batch_size)
        path = result.write(out / f"lm-eval-{label}.json")
        print_scores(f"{args.model} {label}", result, path)
        return result

    from ..load_export import is_factorised_export

    # the model as given: "base", or "export" for a factorised export (a dense export reads as a base model)
    base = run("export" if is_factorised_export(folder) else "base") if (not artifacts or args.compare_base) else None
    result = base
    if artifacts:
        with apply_artifacts(model, artifacts):
            result = run(variant_label([str(a.path) for a in artifacts]))
    if args.json:
        payload = {"model": str(args.model), "variant": [str(a.path) for a in artifacts], "lm_eval": result.to_dict()}
        if base is not None and artifacts:
            payload["base"] = base.to_dict()
        print(json.dumps(payload, sort_keys=True, default=str))
    return 0


def print_scores(title: str, result: LmEvalResult, path: Path) -> None:
    """One line per task and metric, with lm-eval's standard error, for people (stdout)."""
    print(f"{title}: lm-eval {result.lm_eval_version}, {result.seconds:.1f} s; scores in {path}")
    for s in result.scores:
        stderr = "" if s.stderr is None else f" ± {s.stderr:.4f}"
        name = s.metric + ("" if s.filter == "none" else f" ({s.filter})")
        print(f"  {s.task:<24} {name:<24} {s.value:.4f}{stderr}  n={result.n_samples.get(s.task, '?')}")
    sys.stdout.flush()
