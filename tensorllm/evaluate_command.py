"""``tensorllm evaluate``: the base model, or with artifacts applied, on a dataset split (LASER's protocol).

The sub-command's options and its handler; ``--perplexity`` (:mod:`tensorllm.evaluation.perplexity_command`) and
``--lm-eval`` (:mod:`tensorllm.evaluation.lm_eval_command`) branch off here. Attached to the command by
:func:`tensorllm.cli.build_parser`.

Usage::

    tensorllm evaluate smollm2-135m --dataset fever --split val --limit 200 --variant runs/artifacts/... --json
    tensorllm evaluate smollm2-135m --dataset fever --variant runs/artifacts/... --compare-base
"""

from __future__ import annotations

import argparse
import sys

from . import progress
from .cli import _add_layout_option, check_writable_folder, emit_json, parse_device


def add_evaluate_command(sub) -> None:
    """The ``evaluate`` sub-command (called from :func:`tensorllm.cli.build_parser`)."""
    p = sub.add_parser("evaluate", help="evaluate the base model, or with artifacts applied, on a dataset split")
    p.add_argument("model")
    p.add_argument("--dataset", metavar="DATASET",
                   help="qa_wikidata, hotpotqa, fever, bios_profession, counterfact, or your own data: a .jsonl/.json/"
                        ".csv file with fields prompt and answer, or a spec file .yaml (docs/evaluation.md#your-own-data); "
                        "required unless --perplexity or --lm-eval is given")
    p.add_argument("--split", choices=["val", "test", "all"], default="val")
    p.add_argument("--limit", type=int, help="the first N items of the split")
    p.add_argument("--variant", action="append", help="artifact folder to apply (repeat to combine)")
    p.add_argument("--compare-base", action="store_true", help="also evaluate the base model; print paired statistics")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--generate", action=argparse.BooleanOptionalAction, default=True,
                   help="greedy-generation accuracy for generative datasets (default on)")
    p.add_argument("--device", type=parse_device, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--out", default="runs/evaluations/cli", help="folder for the per-example jsonl files")
    from .evaluation.perplexity_command import add_perplexity_options

    add_perplexity_options(p)  # --perplexity instead of --dataset: perplexity on held-out text
    _add_layout_option(p)
    p.add_argument("--json", action="store_true")
    from .evaluation.lm_eval_command import add_lm_eval_options

    add_lm_eval_options(p)  # --lm-eval TASKS (tensorllm/evaluation/lm_eval_command.py)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    """Evaluate the base and/or the variant (``--variant``) on ``--dataset``; print the metrics (``--json``: one object)."""
    if args.lm_eval is not None:  # lm-evaluation-harness tasks (the [eval] extra)
        from .evaluation.lm_eval_command import cmd_lm_eval

        return cmd_lm_eval(args)
    from pathlib import Path

    from .artifact import apply_artifacts, load_artifact
    from .checkpoint import Checkpoint
    from .evaluation import EvalConfig, compare_paired, evaluate
    from .evaluation.data.registry import check_dataset
    from .evaluation.data.user_spec import dataset_label
    from .evaluation.runtime import default_device, parse_dtype
    from .models import cache_dir, load_model, resolve_model
    from .evaluation.perplexity_command import check_choice, cmd_perplexity
    from .naming import variant_label

    check_choice(args)  # exactly one of --dataset and --perplexity (--lm-eval was handled above)
    if args.perplexity:
        return cmd_perplexity(args)
    check_writable_folder(args.out, "--out")
    check_dataset(args.dataset, read=True)  # a bad name or spec fails in one line before the model loads
    EvalConfig(dataset=args.dataset, split=args.split, limit=args.limit, batch_size=args.batch_size)  # checks, at once
    folder = resolve_model(args.model)
    device = args.device or str(default_device())
    dtype = parse_dtype(args.dtype) if args.dtype else None  # load_model: the base's dtype on a GPU, fp32 on the CPU
    artifacts = [load_artifact(p) for p in args.variant or []]  # a bad folder is named before the model loads
    _check_dataset(args.dataset, folder)
    model, tokenizer = load_model(folder, dtype=dtype, device=device, layout=args.layout)
    first_layer = min(a.layer for a in artifacts) if artifacts else None
    identity = Checkpoint(folder).identity()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    bars = not args.json and sys.stderr.isatty()

    def run(label: str, layer: int | None):
        config = EvalConfig(dataset=args.dataset, split=args.split, limit=args.limit, batch_size=args.batch_size,
                            generate=args.generate, first_changed_layer=layer, model_id=identity,
                            cache_dir=cache_dir() / "hidden-states")
        if bars:
            print(f"evaluating {label} on {args.dataset}/{args.split}", file=sys.stderr)
        with progress.listening(progress.tqdm_listener(bars)):  # bars on a terminal; none with --json
            return evaluate(model, tokenizer, config,
                            examples_out=out / f"{label}-{dataset_label(args.dataset)}-{args.split}-limit{args.limit}.jsonl")

    base = run("base", None) if (not artifacts or args.compare_base) else None
    result = base
    if artifacts:
        # rows of each variant go to a file named by the variant, never to a file another variant shares
        with apply_artifacts(model, artifacts):
            result = run(variant_label([str(a.path) for a in artifacts]), first_layer)
    label = "variant (" + ", ".join(a.path.name for a in artifacts) + ")" if artifacts else "base model"
    acc = "n/a (generation off)" if result.accuracy is None else (
        f"{result.accuracy:.4f}  95% CI [{result.accuracy_ci[0]:.4f}, {result.accuracy_ci[1]:.4f}]")
    print(f"{args.model} {label} on {args.dataset}/{args.split}: n={result.n}")
    print(f"  accuracy       {acc}")
    print(f"  top-1 accuracy {result.top1_accuracy:.4f}  95% CI [{result.top1_accuracy_ci[0]:.4f}, {result.top1_accuracy_ci[1]:.4f}]")
    print(f"  loss           {result.loss:.4f}  95% CI [{result.loss_ci[0]:.4f}, {result.loss_ci[1]:.4f}]")
    print(f"  speed          {result.examples_per_second:.2f} examples/s on {result.device} ({result.dtype}); "
          f"per-example rows: {result.examples_path}")
    payload = result.to_dict()
    if base is not None and artifacts:
        metric = "correct" if result.accuracy is not None else "top1_correct"
        paired = compare_paired(base.examples_path, result.examples_path, metric=metric)
        print(f"  vs base        accuracy {paired.accuracy_diff:+.4f} (McNemar p={paired.mcnemar_p:.3g}), "
              f"loss {paired.loss_diff:+.4f} 95% CI [{paired.loss_diff_ci[0]:+.4f}, {paired.loss_diff_ci[1]:+.4f}]")
        payload["base"] = base.to_dict()
        payload["paired"] = paired.to_dict()
    if args.json:
        emit_json(payload)
    return 0


def _check_dataset(name: str, model_folder) -> None:
    """Read the dataset whole (strictly, with the model's tokenizer, as the evaluation will) before the model loads:
    a malformed line is one line naming the file and line, not a message after the loading's progress output."""
    from transformers import AutoTokenizer

    from .evaluation.data import load_task

    load_task(name, AutoTokenizer.from_pretrained(str(model_folder)))  # DataFormatError: a ValueError
