"""``tensorllm evaluate MODEL --perplexity``: perplexity on held-out text of a model, an export, or base + artifacts.

    tensorllm evaluate smollm2-135m --perplexity
    tensorllm evaluate smollm2-135m --perplexity --variant runs/artifacts/.../r144x32x2 --compare-base --json
    tensorllm evaluate runs/smollm2-2x --perplexity --perplexity-tokens 4096

The options live on ``evaluate`` (:func:`add_perplexity_options`); ``--perplexity`` replaces ``--dataset``. The
numbers are :func:`tensorllm.evaluation.perplexity.perplexity`'s; with ``--compare-base`` the variant is paired
with the base window by window (:func:`~tensorllm.evaluation.perplexity.compare_perplexity`).
"""

from __future__ import annotations

import sys

from .perplexity import DEFAULT_PPL_MARGIN, DEFAULT_TOKENS, DEFAULT_WINDOW


def add_perplexity_options(p) -> None:
    """The perplexity options of the ``evaluate`` sub-command (called from :func:`tensorllm.cli.build_parser`)."""
    p.add_argument("--perplexity", action="store_true",
                   help="measure perplexity on held-out text (Jane Austen's Persuasion, shipped) instead of a dataset")
    p.add_argument("--perplexity-tokens", type=int, default=DEFAULT_TOKENS,
                   help=f"--perplexity: tokens read, in windows (default {DEFAULT_TOKENS:,})")
    p.add_argument("--perplexity-window", type=int, default=DEFAULT_WINDOW,
                   help=f"--perplexity: window length, capped at the model's context (default {DEFAULT_WINDOW})")
    p.add_argument("--corpus", help="--perplexity: another UTF-8 text file (default: the shipped corpus)")


def check_choice(args) -> None:
    """Exactly one of ``--dataset`` and ``--perplexity``; perplexity-only options only with ``--perplexity``."""
    if args.perplexity and args.dataset:
        raise ValueError("evaluate takes --dataset NAME or --perplexity, not both (run it twice)")
    if not args.perplexity and not args.dataset:
        raise ValueError("evaluate needs --dataset NAME, --perplexity or --lm-eval TASKS")


def cmd_perplexity(args) -> int:
    """Load the model once; the base's perplexity (without artifacts or with ``--compare-base``), then the variant's."""
    from .. import progress
    from ..artifact import apply_artifacts, load_artifact
    from ..cli import emit_json
    from ..models import load_model, resolve_model
    from .perplexity import check_settings, compare_perplexity, load_corpus, perplexity
    from .runtime import default_device, parse_dtype

    check_settings(args.perplexity_tokens, args.perplexity_window, DEFAULT_PPL_MARGIN)
    corpus = load_corpus(args.corpus)  # a missing corpus fails before the model loads
    folder = resolve_model(args.model)
    device = args.device or str(default_device())
    dtype = parse_dtype(args.dtype) if args.dtype else None
    model, tokenizer = load_model(folder, dtype=dtype, device=device, layout=args.layout)
    artifacts = [load_artifact(p) for p in args.variant or []]
    bars = not args.json and sys.stderr.isatty()

    def run(label: str):
        with progress.listening(progress.tqdm_listener(bars, unit="windows")):
            return perplexity(model, tokenizer, tokens=args.perplexity_tokens, window=args.perplexity_window,
                              corpus=corpus, label=label)

    base = run(args.model) if (not artifacts or args.compare_base) else None
    result = base
    if artifacts:
        with apply_artifacts(model, artifacts):
            result = run(args.model + "".join(f" + {a.path.name}" for a in artifacts))
    print(f"{result.model}: {result.sentence()}")
    for note in result.notes:
        print(f"  note: {note}")
    payload = {"perplexity": result.to_dict()}
    if base is not None and artifacts:
        paired = compare_perplexity(base, result)
        print(f"  vs base: {paired.sentence()}")
        payload["base"] = base.to_dict()
        payload["paired"] = paired.to_dict()
    if args.json:
        emit_json(payload)
    return 0
