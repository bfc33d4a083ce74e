"""``evaluate(model, tokenizer, config)``: one dataset split -> metrics (+ per-example jsonl).

Steps: load the task (paper prompts) -> take the split (and limit) -> tokenise ``prompt`` and
``prompt + " " + answer`` (with ``chat_template``, the prompt as a chat turn: :mod:`.prompt_format`) ->
teacher-forced pass (loss, top-1, classification accuracy; uses the layer-L cache when
``first_changed_layer`` is set) -> for generative sets with ``generate=True``, greedy generation of the
prompts (a variant checks the base's continuations from layer L on and decodes only where
it departs: :mod:`.drafts`) -> aggregate with 95% intervals.

The model is used as given: its device and dtype, with any variant already applied by the caller. It
is put in eval mode for the call and its previous mode restored; its weights are never modified.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from .. import progress
from .config import EvalConfig, EvalResult
from .data import Task, load_task
from .data.user_spec import dataset_label
from .drafts import continue_from_drafts, draft_key, load_drafts, save_drafts
from .generation import answer_matches, decode_batch_size, generate_all, greedy_config, pad_id_for, stop_tokens
from .layer_skip import skip_unsupported_reason
from .prompt_format import encode_prompt
from .hidden_cache import HiddenStateCache, default_cache
from .records import ExampleRecord, write_examples
from .runtime import model_device, model_dtype
from .splits import select_split
from .stats import mean_interval, wilson_interval
from .teacher_forced import run_teacher_forced
from .tokens import candidate_token_ids, prompt_answer_ids

log = logging.getLogger(__name__)


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _proportion(flags: list[bool]) -> tuple[float, tuple[float, float]]:
    k, n = sum(flags), len(flags)
    return (k / n if n else float("nan")), wilson_interval(k, n)


def evaluate(
    model: nn.Module,
    tokenizer,
    config: EvalConfig,
    *,
    examples_out: str | os.PathLike | None = None,
    task: Task | None = None,
    cache: HiddenStateCache | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``config.dataset``/``config.split``; write per-example rows to ``examples_out``.

    ``task``: an already loaded :class:`Task` for ``config.dataset`` (saves reloading in sweeps).
    ``cache``: the hidden-state cache to use with ``first_changed_layer``; by default the process-wide
    one for ``config.cache_dir`` (shared by the calls of a sweep).
    """
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
    if task is None:
        task = load_task(
            config.dataset, tokenizer, data_dir=config.data_dir, source=config.source, strict=config.strict,
            **config.task_options,
        )  # fmt: skip
    elif task.name != dataset_label(config.dataset):
        raise ValueError(f"task {task.name!r} was passed for config.dataset {config.dataset!r}; they must match")
    items = select_split(task.dataset, config.split, config.limit, config.seed)
    n = len(items)
    if n == 0:
        raise ValueError(f"{config.dataset}/{config.split} has no items (task counts: {task.counts})")
    prompts, answers, ids = items["prompt"], items["answer"], items["id"]

    candidate_ids = candidate_token_ids(tokenizer, task.candidates) if task.kind == "classify" else None
    encoded = [prompt_answer_ids(tokenizer, p, a) for p, a in zip(prompts, answers)]
    if config.chat_template:  # the prompt as a chat turn; the answer tokens stay those of the plain prompt
        encoded = [replace(e, prompt=encode_prompt(tokenizer, p, chat_template=True)) for e, p in zip(encoded, prompts)]
    if candidate_ids is not None:
        answer_ids = [[candidate_ids[task.candidates.index(a)]] for a in answers]
    else:
        answer_ids = [e.answer for e in encoded]
        merges = sum(e.boundary_merge for e in encoded)
        if merges:
            log.info("%d answers merged with the prompt at the boundary; scored as separately tokenised", merges)
    sequences = [e.prompt + a for e, a in zip(encoded, answer_ids)]
    pad_id = pad_id_for(tokenizer)
    device, dtype = model_device(model), model_dtype(model)
    layer = config.first_changed_layer
    if (layer is not None or config.fill_layers) and cache is None:
        cache = default_cache(config.cache_dir, config.cache_memory_bytes)
    log.info(
        "evaluating %s/%s: n=%d, batch_size=%d, device=%s, dtype=%s, first_changed_layer=%s",
        config.dataset, config.split, n, config.batch_size, device, dtype, layer,
    )  # fmt: skip

    start = time.perf_counter()
    progress.expect("teacher-forced", n)
    with _eval_mode(model):
        forced = run_teacher_forced(
            model, sequences, answer_ids, batch_size=config.batch_size, pad_id=pad_id, candidate_ids=candidate_ids,
            layer=layer, cache=cache, label=f"{task.name}-{config.split}-n{n}-s{config.seed}",
            model_id=config.model_id, fill_layers=config.fill_layers,
        )  # fmt: skip
        forced_seconds = time.perf_counter() - start
        continuations, generation = None, None
        if task.kind == "generate" and config.generate:
            progress.expect("generation", None)  # rows whose draft answer holds are never generated
            token_ids, generation = _generate_with_drafts(model, tokenizer, [e.prompt for e in encoded], task, config,
                                                          pad_id, cache, f"{task.name}-{config.split}-n{n}-s{config.seed}")
            continuations = [tokenizer.decode(t, skip_special_tokens=True) for t in token_ids]
    seconds = time.perf_counter() - start
    log.info("teacher-forced pass %.2fs (cache %s); total %.2fs", forced_seconds, forced.layer_cache, seconds)

    records = []
    for i in range(n):
        score = forced.scores[i]
        if task.kind == "classify":
            prediction, correct = task.candidates[score.choice], task.candidates[score.choice] == answers[i]
        elif continuations is not None:
            prediction = continuations[i]
            correct = answer_matches(answers[i], prediction, prompts[i], include_prompt=config.match_prompt)
        else:
            prediction, correct = None, None
        records.append(
            ExampleRecord(
                id=ids[i], prompt=prompts[i], answer=answers[i], prediction=prediction, correct=correct,
                loss=score.loss, top1_prediction=tokenizer.decode([score.top1_token]), top1_correct=score.top1_correct,
                exact_match=score.exact_match,
            )
        )  # fmt: skip
    path = write_examples(examples_out, records) if examples_out is not None else None

    has_accuracy = records[0].correct is not None
    accuracy, accuracy_ci = _proportion([bool(r.correct) for r in records]) if has_accuracy else (None, None)
    top1, top1_ci = _proportion([r.top1_correct for r in records])
    loss, loss_ci = mean_interval([r.loss for r in records])
    exact, exact_ci = _proportion([bool(r.exact_match) for r in records])
    result = EvalResult(
        dataset=config.dataset, split=config.split, n=n, accuracy=accuracy, accuracy_ci=accuracy_ci,
        accuracy_kind=("classification" if task.kind == "classify" else "generation") if has_accuracy else None,
        top1_accuracy=top1, top1_accuracy_ci=top1_ci, loss=loss, loss_ci=loss_ci,
        examples_per_second=n / seconds if seconds > 0 else float("inf"), seconds=seconds, limit=config.limit,
        seed=config.seed, generate=config.generate, match_prompt=config.match_prompt, chat_template=config.chat_template,
        first_changed_layer=layer,
        layer_cache=forced.layer_cache, model_id=config.model_id, device=str(device), dtype=str(dtype).replace("torch.", ""),
        task_counts=dict(task.counts), examples_path=str(path) if path else None,
        exact_match_accuracy=exact, exact_match_accuracy_ci=exact_ci, generation=generation,
    )  # fmt: skip
    log.info(
        "%s/%s n=%d accuracy=%s top1=%.4f loss=%.4f (%.1f examples/s)",
        config.dataset, config.split, n, f"{accuracy:.4f}" if accuracy is not None else "n/a", top1, loss,
        result.examples_per_second,
    )  # fmt: skip
    return result


@torch.no_grad()
def _generate_with_drafts(model, tokenizer, prompt_ids: list[list[int]], task: Task, config: EvalConfig, pad_id: int,
                          cache: HiddenStateCache | None, label: str) -> tuple[list[list[int]], dict]:
    """Greedy continuations, using the base's as drafts where that is exact and possible (see :mod:`.drafts`).

    The base's pass that prepares a sweep (``fill_layers`` set, ``model_id`` known) generates token by token,
    stores its continuations as drafts and caches the inputs of the sweep's layers on ``prompt + draft``. A
    variant (``first_changed_layer`` L > 0, a verified family, drafts found) checks them with one pass of
    layers L.. and decodes only the rows that depart. Anything else generates token by token. Decoding runs in
    batches of :func:`~.generation.decode_batch_size` rows; the teacher-forced passes keep ``batch_size`` (the
    hidden-state cache's layout).
    """
    gen_config = greedy_config(task.max_new_tokens, pad_id, tokenizer.eos_token_id)
    eos = stop_tokens(model, gen_config)
    layer, n = config.first_changed_layer, len(prompt_ids)
    key = draft_key(config.model_id, prompt_ids, task.max_new_tokens, sorted(eos)) if config.model_id else None
    supported = skip_unsupported_reason(model) is None
    drafts = load_drafts(key, config.cache_dir, n) if key and layer and supported else None
    if drafts is not None:
        checked = run_teacher_forced(
            model, [p + d for p, d in zip(prompt_ids, drafts)], drafts, batch_size=config.batch_size, pad_id=pad_id,
            layer=layer, cache=cache, label=f"{label}-draft", model_id=config.model_id,
        )  # fmt: skip
        token_ids, stats = continue_from_drafts(model, prompt_ids, drafts, checked.scores, max_new_tokens=task.max_new_tokens,
                                                eos=eos, pad_id=pad_id, batch_size=decode_batch_size(config.batch_size))
        log.info("generation from the base's drafts: %s (draft check: layer cache %s)", stats.to_dict(), checked.layer_cache)
        return token_ids, {"mode": "drafts", "layer_cache": checked.layer_cache, **stats.to_dict()}
    token_ids = generate_all(model, prompt_ids, gen_config, decode_batch_size(config.batch_size), pad_id)
    if key and layer is None and config.fill_layers and supported:  # the base preparing a sweep
        save_drafts(key, token_ids, config.cache_dir)
        run_teacher_forced(
            model, [p + d for p, d in zip(prompt_ids, token_ids)], token_ids, batch_size=config.batch_size, pad_id=pad_id,
            cache=cache, label=f"{label}-draft", model_id=config.model_id, fill_layers=config.fill_layers,
        )  # fmt: skip
    return token_ids, {"mode": "full", "rows": n, "decoded_tokens": sum(map(len, token_ids))}
