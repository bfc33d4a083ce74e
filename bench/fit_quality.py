"""Fit quality of the four fit modes on SmolLM2-135M: the paper's fit, balanced, activation-aware, both.

For each layer (early, middle, last) and each rank configuration (about 4x to 200x MHA compression of the
layer) the layer is decomposed four times with ``tensorllm.decompose.decompose_layer``:

* ``paper``:       ``fit="weights", balance="none"`` (Eq. 14, as in the paper),
* ``balanced``:    ``balance="norms"`` (function-preserving per-group rescaling, ``tensorllm.balance``),
* ``activations``: ``fit="activations"`` (mode 1 weighted by the layer's input covariance over N calibration
  prompts of the validation split, ``tensorllm.activation_fit``),
* ``both``:        balanced and activation-aware.

Each variant (one layer edited, written back dense) is scored on n validation items that are *not* among the
calibration prompts, teacher forced (prompt + " " + answer, as ``tensorllm.evaluation`` scores them):

* ``layer_err``: relative error of the attention block's output (o_proj output) of the edited layer on the
  evaluation tokens, ``||out_variant - out_base|| / ||out_base||`` (its input is the base's: the prefix is
  unchanged);
* ``kl``: KL(base || variant) of the next-token distributions at the answer positions (nats, mean per
  answer token, then over items);
* ``loss`` (mean answer NLL) and ``top1`` (first answer token is the argmax), via the library's scorer;
* paired tests against the paper's fit at the same layer and ranks: top-1 by McNemar's exact test
  (``tensorllm.evaluation.compare_paired``), loss and KL by the 95% interval of the per-item differences.

Speed (2 shared cores): per batch, one full base forward records the hidden states entering the layer
(``record_layer_input``); every variant then runs only layers L..end on them (``replay_prefix``), so a
variant of the last layer costs a 30th of a forward. Artifacts and calibration covariances are cached under
``runs/bench-fit-quality`` (re-runs skip the decompositions).

The model-level metrics need the whole suffix per variant (layer 3: 27 layers x 16 variants x 1,000 items),
so they run only for ``--model-layers`` (default: the last layer); the other layers get the layer's output
error, for which every forward stops right after the edited layer's attention.

Usage::

    nice -n 10 .venv/bin/python -m bench.fit_quality --grouping kv --threads 1 --model-layers 29 15 3  # the study
    nice -n 10 .venv/bin/python -m bench.fit_quality --modes balanced --threads 1 --model-layers 29 15  # replicate
    .venv/bin/python -m bench.fit_quality --quick                # 1 layer, 2 ranks, n = 64
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

from bench.common import RESULTS_DIR, base_parser, finish, pick_device, print_table, setup_threads  # noqa: E402

MODEL = "smollm2-135m"
MODES = {  # name -> decompose_layer keyword arguments (calibration added for the activation-aware ones)
    "paper": {"balance": "none", "fit": "weights"},
    "balanced": {"balance": "norms", "fit": "weights"},
    "activations": {"balance": "none", "fit": "activations"},
    "both": {"balance": "norms", "fit": "activations"},
}
# (576, 64, 8, 3) tensor, 884,736 MHA parameters: 3.9x, 19.4x, 57x, 217x
RANKS = [(192, 48, 4), (58, 16, 4), (24, 8, 2), (6, 6, 2)]
LAYERS = [29, 15, 3]  # last, middle, early: evaluated in this order (the early layer costs most)
WORK = Path("runs/bench-fit-quality")


def json_key(key: tuple) -> str:
    layer, mode, ranks = key
    return f"{layer}|{mode}|{'x'.join(map(str, ranks))}"


def parse_ranks(text: str) -> tuple[int, int, int]:
    r1, r2, r3 = (int(x) for x in text.split(","))
    return (r1, r2, r3)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="qa_wikidata", help="dataset of the calibration and evaluation items")
    parser.add_argument("--n", type=int, default=None, help="evaluation items (default 1000; quick 64)")
    parser.add_argument("--calibration", type=int, default=128, help="calibration prompts (validation split)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help=f"default {LAYERS}; quick [29]")
    parser.add_argument("--ranks", type=parse_ranks, nargs="+", default=None, help="R1,R2,R3 ...")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grouping", choices=("replicate", "kv", "weighted"), default="replicate",
                        help="GQA grouping of every decomposition (the library's default: replicate; the first "
                             "study, run when kv was the default, is --grouping kv)")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES),
                        help="fit modes to compare (paper is always included: the paired tests are against it)")
    parser.add_argument("--model-layers", type=int, nargs="*", default=None,
                        help="layers whose variants get the model-level metrics (KL, loss, top-1; the whole suffix "
                             "runs per variant); the others get the layer's output error only (default: [29])")
    args = parser.parse_args()
    setup_threads(args.threads)
    device = pick_device(args.device)

    import torch

    from tensorllm.activation_fit import Calibration, calibration_set, layer_covariances
    from tensorllm.artifact import apply_artifacts, load_artifact
    from tensorllm.decompose import decompose_layer, model_slug
    from tensorllm.evaluation import compare_paired, load_task, select_split
    from tensorllm.evaluation.batching import make_batches
    from tensorllm.evaluation.layer_skip import LayerInput, decoder_layers, record_layer_input, replay_prefix
    from tensorllm.evaluation.stats import mean_interval, normal_p_from_interval
    from tensorllm.evaluation.tokens import prompt_answer_ids
    from tensorllm.models import load_model, resolve_model

    n_eval = args.n or (64 if args.quick else 1000)
    layers = args.layers or ([29] if args.quick else LAYERS)
    ranks = args.ranks or (RANKS[1:4:2] if args.quick else RANKS)
    model_layers = set(args.model_layers if args.model_layers is not None else [29])
    modes = {m: MODES[m] for m in MODES if m == "paper" or m in args.modes}
    calibration = Calibration(datasets=(args.dataset,), n_prompts=args.calibration)
    calib = calibration_set(calibration)
    artifacts_root = WORK / "artifacts"

    # ---- decompositions (cached artifacts; covariances of all layers from one pass) -------------------
    t0 = time.perf_counter()
    layer_covariances(MODEL, layers, calib, artifacts_root / model_slug(MODEL) / "calibration")
    cov_seconds = time.perf_counter() - t0
    records = {}
    for layer in layers:
        for mode, kwargs in modes.items():
            extra = {"calibration": calibration} if kwargs["fit"] == "activations" else {}
            for ranks_, record in zip(ranks, decompose_layer(MODEL, layer, ranks, out_root=artifacts_root,
                                                             device=device, grouping=args.grouping, **kwargs,
                                                             **extra)):
                records[(layer, mode, ranks_)] = record
    decompose_seconds = time.perf_counter() - t0

    # ---- evaluation items: the validation split minus the calibration prompts --------------------------
    model, tokenizer = load_model(resolve_model(MODEL), dtype=torch.float32)
    model.to(device).eval()
    task = load_task(args.dataset, tokenizer)
    used = set(calib.item_ids)
    items = select_split(task.dataset, "val", limit=n_eval + len(used))
    rows = [(i, p, a) for i, p, a in zip(items["id"], items["prompt"], items["answer"]) if i not in used][:n_eval]
    if len(rows) < n_eval:
        raise SystemExit(f"{args.dataset} has only {len(rows)} validation items outside the calibration set")
    encoded = [prompt_answer_ids(tokenizer, p, a) for _, p, a in rows]
    answers = [e.answer for e in encoded]
    batches = make_batches([e.prompt + e.answer for e in encoded], args.batch_size, int(tokenizer.pad_token_id
                                                                                          or tokenizer.eos_token_id))
    artifacts = {key: load_artifact(r.artifact) for key, r in records.items()}

    per_item: dict[tuple, dict[str, dict]] = {}  # (layer, mode, ranks) or (layer, "base") -> item id -> metrics
    err: dict[tuple, list[float]] = {}  # (layer, mode, ranks) -> [||out - base||^2, ||base||^2]
    t1 = time.perf_counter()

    class Stop(Exception):
        """Raised after the edited layer's attention output when only the layer's error is measured."""

    def answer_logits(batch) -> torch.Tensor:
        """Logits at the answer positions of every row, rows concatenated: the final hidden states of the
        left-padded batch, gathered (row r with m answer tokens: positions T-1-m .. T-2), then the LM head.
        Same quantities as the library's scorer (tensorllm.evaluation.scoring), without the LM head on the
        prompt positions of short-answer rows (the LM head costs ~3 layers per position on SmolLM2)."""
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False).last_hidden_state
        t = hidden.shape[1]
        picked = [hidden[r, t - 1 - len(answers[i]): t - 1] for r, i in enumerate(batch.indices)]
        return model.lm_head(torch.cat(picked)).float()

    def per_row(logits: torch.Tensor, batch, base_logp: torch.Tensor | None):
        """(loss, top1_correct, kl) per row from the concatenated answer-position logits."""
        logp = torch.log_softmax(logits, dim=-1)
        out, start = [], 0
        for i in batch.indices:
            target = torch.tensor(answers[i])
            m = len(target)
            lp = logp[start: start + m]
            loss = float(-lp.gather(-1, target[:, None]).mean())
            top1 = int(lp[0].argmax()) == int(target[0])
            kl = 0.0 if base_logp is None else float((base_logp[start: start + m].exp()
                                                       * (base_logp[start: start + m] - lp)).sum(-1).mean())
            out.append((rows[i][0], {"loss": loss, "top1_correct": top1, "kl": kl}))
            start += m
        return out, logp

    def evaluate_layer(layer: int, model_level: bool) -> dict:
        """Per-item metrics of the base and of every variant of ``layer`` (module docstring); without
        ``model_level`` only the layer's output error (forwards stop after the layer's attention)."""
        keys = [k for k in records if k[0] == layer]
        items_out = {"base": {}, **{json_key(k): {} for k in keys}}
        errs = {json_key(k): [0.0, 0.0] for k in keys}
        o_proj = decoder_layers(model)[layer].self_attn.o_proj
        captured = {}

        def hook(module, args_, out):
            captured["out"] = out
            if not model_level:
                raise Stop

        handle = o_proj.register_forward_hook(hook)
        try:
            for batch in batches:
                batch = batch.to(device)
                mask = batch.attention_mask.bool()
                with record_layer_input(model, layer) as recorder:
                    try:
                        base_logits = answer_logits(batch)
                    except Stop:
                        base_logits = None
                stored = LayerInput(recorder.hidden, recorder.tuple_len)
                base_out = captured["out"][mask].double()
                base_logp = None
                if model_level:
                    scored, base_logp = per_row(base_logits, batch, None)
                    items_out["base"].update(scored)
                for key in keys:
                    with apply_artifacts(model, [artifacts[key]], verify=False):
                        with replay_prefix(model, layer, stored):
                            try:
                                logits = answer_logits(batch)
                            except Stop:
                                logits = None
                    diff = captured["out"][mask].double() - base_out
                    errs[json_key(key)][0] += float((diff ** 2).sum())
                    errs[json_key(key)][1] += float((base_out ** 2).sum())
                    if model_level:
                        items_out[json_key(key)].update(per_row(logits, batch, base_logp)[0])
        finally:
            handle.remove()
        return {"items": items_out, "err": errs, "model_level": model_level}

    with torch.no_grad():
        for layer in layers:
            # per-layer results are kept (keyed by the artifacts' digests and the items), so an interrupted
            # study resumes at the next layer
            digests = sorted(a.meta["tensors_sha256"] for k, a in artifacts.items() if k[0] == layer)
            tag = hashlib.sha256(json.dumps([digests, [r[0] for r in rows], args.batch_size]).encode()).hexdigest()[:16]
            level = "model" if layer in model_layers else "layer"
            path = WORK / "evaluations" / f"layer{layer:03d}-n{n_eval}-{level}-{tag}.json"
            if path.is_file():
                done = json.loads(path.read_text())
            else:
                done = evaluate_layer(layer, layer in model_layers)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(done))
            per_item[(layer, "base")] = done["items"]["base"]
            for key in (k for k in records if k[0] == layer):
                per_item[key] = done["items"][json_key(key)]
                err[key] = done["err"][json_key(key)]
            print(f"layer {layer}: variants scored, {time.perf_counter() - t1:.0f}s so far", flush=True)
    eval_seconds = time.perf_counter() - t1

    # ---- summary rows and paired tests against the paper's fit ----------------------------------------
    def as_records(table: dict) -> list[dict]:
        return [{"id": i, **v} for i, v in table.items()]

    out_rows = []
    for layer in layers:
        base = per_item[(layer, "base")]
        model_level = bool(base)
        base_loss = sum(v["loss"] for v in base.values()) / len(base) if model_level else None
        base_top1 = sum(v["top1_correct"] for v in base.values()) / len(base) if model_level else None
        for ranks_ in ranks:
            paper = per_item[(layer, "paper", ranks_)]
            for mode in modes:
                key = (layer, mode, ranks_)
                table, meta = per_item[key], artifacts[key].meta
                row = {"layer": layer, "ranks": list(ranks_), "mode": mode, "balance": MODES[mode]["balance"],
                       "fit": MODES[mode]["fit"], "grouping": args.grouping, "compression_ratio": meta["compression_ratio"],
                       "weight_rel_error": meta["rel_error"], "layer_err": math.sqrt(err[key][0] / err[key][1]),
                       "n": n_eval, "model_level": model_level}
                if model_level:
                    ids = sorted(table)
                    row.update({"kl": sum(table[i]["kl"] for i in ids) / len(ids),
                                "loss": sum(table[i]["loss"] for i in ids) / len(ids),
                                "top1": sum(table[i]["top1_correct"] for i in ids) / len(ids),
                                "base_loss": base_loss, "base_top1": base_top1})
                if model_level and mode != "paper":
                    cmp = compare_paired(as_records(paper), as_records(table), metric="top1_correct")
                    kl_diff, kl_ci = mean_interval([table[i]["kl"] - paper[i]["kl"] for i in ids])
                    row.update({"top1_diff_vs_paper": cmp.accuracy_diff, "top1_mcnemar_p": cmp.mcnemar_p,
                                "loss_diff_vs_paper": cmp.loss_diff, "loss_diff_ci": list(cmp.loss_diff_ci),
                                "loss_p": normal_p_from_interval(cmp.loss_diff, cmp.loss_diff_ci),
                                "kl_diff_vs_paper": kl_diff, "kl_diff_ci": list(kl_ci),
                                "kl_p": normal_p_from_interval(kl_diff, kl_ci)})
                out_rows.append(row)

    print_table(out_rows, [("layer", "{}"), ("ranks", "{}"), ("mode", "{}"), ("compression_ratio", "{:.1f}", "CR"),
                           ("layer_err", "{:.3f}"), ("kl", "{:.4f}"), ("loss", "{:.3f}"), ("top1", "{:.3f}"),
                           ("kl_diff_vs_paper", "{:+.4f}", "dKL"), ("kl_p", "{:.2g}", "p(KL)"),
                           ("top1_diff_vs_paper", "{:+.3f}", "dtop1"), ("top1_mcnemar_p", "{:.2g}", "p(top1)")],
                title=f"Fit quality on {MODEL}, {args.dataset} validation, n={n_eval}")
    summary = mode_summary(out_rows, modes)
    print_table(summary, [("mode", "{}"), ("mean_kl_ratio_vs_paper", "{:.3f}", "KL / paper's (geo mean)"),
                          ("mean_layer_err_ratio", "{:.3f}", "layer err / paper's"),
                          ("mean_top1_diff", "{:+.4f}", "top1 - paper's"), ("wins_kl", "{}", "lower KL (p<.05)"),
                          ("losses_kl", "{}", "higher KL (p<.05)"), ("wins_top1", "{}", "top-1 up (p<.05)"),
                          ("losses_top1", "{}", "top-1 down (p<.05)")], title="Modes against the paper's fit")
    # the first study (kv, when it was the default) keeps its file names; other groupings get their own
    name = "fit_quality" if args.grouping == "kv" else f"fit_quality-{args.grouping}"
    plot = plot_accuracy(out_rows, RESULTS_DIR / f"{name}{'-quick' if args.quick else ''}.png")
    finish(name, out_rows, args, device=device, extra={"grouping": args.grouping, "modes": list(modes),
        "model": MODEL, "dataset": args.dataset, "split": "val (calibration items excluded)", "n": n_eval,
        "calibration": calib.describe(), "layers": layers, "model_level_layers": sorted(model_layers),
        "rank_configs": [list(r) for r in ranks],
        "summary": summary, "plot": str(plot.relative_to(RESULTS_DIR.parent.parent)),
        "seconds": {"covariances": cov_seconds, "decompositions": decompose_seconds, "evaluation": eval_seconds}})


def mode_summary(rows: list[dict], modes: dict) -> list[dict]:
    """Per mode, over every (layer, ranks): geometric-mean KL and layer-error ratios to the paper's fit, the
    mean top-1 difference, and how often the KL difference is significantly lower / higher (p < 0.05)."""
    out = []
    paper = {(r["layer"], tuple(r["ranks"])): r for r in rows if r["mode"] == "paper"}
    for mode in modes:
        if mode == "paper":
            continue
        everywhere = [r for r in rows if r["mode"] == mode]
        mine = [r for r in everywhere if r["model_level"]]
        ratios = [r["kl"] / paper[(r["layer"], tuple(r["ranks"]))]["kl"] for r in mine]
        errs = [r["layer_err"] / paper[(r["layer"], tuple(r["ranks"]))]["layer_err"] for r in everywhere]

        def geo(xs):
            return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None

        out.append({"mode": mode,
                    "mean_kl_ratio_vs_paper": geo(ratios),
                    "mean_layer_err_ratio": geo(errs),
                    "mean_top1_diff": sum(r["top1_diff_vs_paper"] for r in mine) / len(mine) if mine else None,
                    "wins_kl": sum(r["kl_p"] < 0.05 and r["kl_diff_vs_paper"] < 0 for r in mine),
                    "losses_kl": sum(r["kl_p"] < 0.05 and r["kl_diff_vs_paper"] > 0 for r in mine),
                    "wins_top1": sum(r["top1_mcnemar_p"] < 0.05 and r["top1_diff_vs_paper"] > 0 for r in mine),
                    "losses_top1": sum(r["top1_mcnemar_p"] < 0.05 and r["top1_diff_vs_paper"] < 0 for r in mine),
                    "model_level_cells": len(mine), "cells": len(everywhere)})
    return out


def plot_accuracy(rows: list[dict], out: Path) -> Path:
    """Top-1 vs the layer's compression ratio (log x), one line per mode, one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["model_level"]]
    layers = sorted({r["layer"] for r in rows})
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        for mode, style in zip(MODES, ("k-o", "b-s", "r-^", "g-D")):
            pts = sorted((r for r in rows if r["layer"] == layer and r["mode"] == mode),
                         key=lambda r: r["compression_ratio"])
            if not pts:
                continue  # a mode left out with --modes
            ax.plot([p["compression_ratio"] for p in pts], [p["top1"] for p in pts], style, label=mode, markersize=4)
        base = next(r["base_top1"] for r in rows if r["layer"] == layer)
        ax.axhline(base, color="0.5", linestyle="--", linewidth=1, label="base model")
        ax.set_xscale("log")
        ax.set_xlabel("MHA compression of the layer (log)")
        ax.set_title(f"layer {layer}", fontsize=9)
    axes[0][0].set_ylabel("validation top-1 accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"SmolLM2-135M: accuracy vs compression by fit mode ({rows[0]['grouping']} grouping)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
