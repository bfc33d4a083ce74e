"""``tensorllm sweep``: the pipeline's sub-command, attached to the library's command line from this side.

The library's ``tensorllm`` command knows nothing of Prefect, Ray or this package; ``pyproject.toml`` names
:func:`register` under the ``tensorllm.commands`` entry-point group and :func:`tensorllm.cli.add_plugin_commands`
calls it. Its options are generated from :class:`flows.config.SweepConfig` (:mod:`flows.sweep_options`); every
check runs before any service starts (:mod:`flows.validate`); the sweep runs supervised in a child process
(:mod:`flows.runtime.supervise`), so an interrupt stops exactly the processes it started.

Usage::

    tensorllm sweep --layers 29 --ranks 64,32,4 --val-limit 40 --json
"""

from __future__ import annotations

import signal
import sys
import types

from tensorllm.cli import one_line_error, emit_json
from tensorllm.evaluation.data.user_spec import dataset_label

from .records import ratio_text
from .sweep_options import add_sweep_options, sweep_params


def register(sub) -> None:
    """Add ``sweep`` to the ``tensorllm`` sub-parsers."""
    p = sub.add_parser("sweep", help="run the Prefect flow: decompose layers x ranks on Ray, evaluate, register, promote")
    p.error = types.MethodType(one_line_error, p)  # a bad option: one line, like every other sweep input error
    p.add_argument("--config", metavar="FILE", help="a YAML or JSON file of these parameters (docs/pipeline.md); "
                                                    "options given on the command line override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (file, options, defaults) as YAML and exit")
    add_sweep_options(p)  # generated from the flow's typed config (flows.config.SweepConfig)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    """Validate, then run the sweep supervised (this process) or as the driver (the child it starts)."""
    from pathlib import Path

    from flows.config_file import config_yaml, read_config_file
    from flows.validate import validate_sweep

    params = {**(read_config_file(args.config) if args.config else {}), **sweep_params(args)}
    config = validate_sweep(params)  # every check before Prefect or Ray starts: a bad value fails in seconds
    if args.print_config:
        print(config_yaml(config), end="")
        return 0

    from flows.runtime.supervise import is_driver, run_supervised

    root = Path.cwd()
    if not is_driver():  # this process supervises; the sweep runs in a child (flows/runtime/supervise.py says why)
        from flows.runtime.service_ledger import clean_stale

        ledger_dir = root / "runs" / "services"
        for stale in clean_stale(ledger_dir):  # a SIGKILLed sweep's Prefect server and Ray, found by their record
            print(f"tensorllm sweep: {stale.sentence()}", file=sys.stderr)
        run = run_supervised(args.argv, ledger_dir)
        if run.signal_name:
            stopped = f"; stopped the {len(run.stopped)} processes it had started" if run.stopped else ""
            print(f"tensorllm sweep: interrupted by {run.signal_name}{stopped}. Rerun the same command to resume: "
                  "finished decompositions and evaluations are reused and no version is registered twice.",
                  file=sys.stderr)
        return run.exit_code

    from flows.runtime.services import prefect_api, set_quiet_defaults

    # the supervisor's SIGINT must raise KeyboardInterrupt here, even where a shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    set_quiet_defaults()
    try:
        with prefect_api(root) as api_url:
            from flows.compress_sweep import compress_sweep  # imported once PREFECT_API_URL is set
            from flows.progress import task_progress
            from tensorllm.registry import default_tracking_uri

            with task_progress(api_url, enabled=not args.json and sys.stderr.isatty()):
                summary = compress_sweep(**params)
    except KeyboardInterrupt:  # the supervisor's SIGINT: the blocks above have unwound; it reports
        return 130
    uri = params.get("mlflow_tracking_uri") or default_tracking_uri(root)
    print_sweep(summary, uri, api_url)
    if args.json:
        emit_json({**summary, "mlflow_tracking_uri": uri, "prefect_api_url": api_url})
    return 0


def print_sweep(summary: dict, tracking_uri: str, api_url: str) -> None:
    if summary.get("mode") == "batch":  # --models: one summary per model
        for one in summary["models"].values():
            print_sweep(one, tracking_uri, api_url)
        return
    if summary.get("mode") == "decompose-only":  # --evaluate none
        print_decomposed(summary, tracking_uri)
        return
    metric = summary["selection_metric"]
    key = f"val_{metric}"
    base = summary["baseline"]
    ppl = summary.get("perplexity")  # held-out text measured: a column of the ratio to the base's perplexity
    base_ppl = f", perplexity {base['perplexity']:.3f}" if ppl and base.get("perplexity") is not None else ""
    print(f"\nBaseline {key} {base[key]:.4f} (loss {base['val_loss']:.4f}{base_ppl}), registered as version "
          f"{base['version']}")
    print(f"{'variant':48s} {'ver':>4s} {'layer CR':>9s} {'model CR':>9s} {'rel_err':>8s} {key:>14s} {'val_loss':>9s}"
          + (f" {'ppl / base':>14s}" if ppl else ""))
    for row in summary["variants"]:
        cr = f"{row['compression_ratio']:.1f}x" if row.get("compression_ratio") else "-"
        whole = f"{row['whole_model_attention_cr']:.3f}x" if row.get("whole_model_attention_cr") else "-"
        err = f"{row['rel_error']:.3f}" if row.get("rel_error") is not None else "-"
        print(f"{row['name'][:48]:48s} {row['version']:>4d} {cr:>9s} {whole:>9s} {err:>8s} {row[key]:>14.4f} "
              f"{row['val_loss']:>9.4f}" + (f" {ratio_text(row):>14s}" if ppl else ""))
    if ppl:
        over = [row["name"] for row in summary["variants"]
                if row.get("perplexity_ratio") is not None and not row.get("perplexity_within_margin")]
        print(f"Perplexity on held-out text ({ppl['corpus']}, {ppl['tokens']:,} tokens): composed variants / base, "
              f"paired 95% interval; {len(over)} not shown within +{ppl['margin']:.0%}"
              + (f" (over: language modelling worse, whatever their QA metrics): {', '.join(over)}" if over else ""))
    best = summary.get("best_composed")
    if best:
        print(f"\nBest composed model: {best['name']} (v{best['version']}): attention of the whole model "
              f"{best['attention_params_before']:,} -> {best['attention_params_after']:,} parameters "
              f"({best['whole_model_attention_cr']:.2f}x)")
        if best.get("export"):
            export = best["export"]
            print(f"  exported factorised: {export['path']} ({export['bytes'] / 1e6:.1f} MB in "
                  f"{export.get('dtype', 'the base dtype')}; base {best['bytes_base'] / 1e6:.1f} MB)")
        for dataset, by_column in (best.get("paired") or {}).items():
            for column, stats in by_column.items():
                print(f"  test {dataset_label(dataset)} {column}: {_paired_line(stats)}")
    elif summary.get("best_composed_decision"):  # nothing exported: the composed variants failed the rule
        print(f"\nNo composed model exported: {summary['best_composed_decision']}")
    if summary.get("allocation"):  # what `allocate` made and the targets the swept layers cannot reach
        print(f"\n{summary['allocation']}")
    print(f"\nDecision: {summary['decision']['sentence']}")
    champion = summary["champion_version"]
    name = summary["registered_model"]
    if champion is not None:
        print(f"Champion: {name} version {champion}  ->  tensorllm export {name}@champion --out DIR")
    else:
        print(f"No champion for {name}.")
    transfer = summary.get("transfer") or {}
    for column, stats in (transfer.get("paired") or {}).items():
        print(f"  transfer, {dataset_label(transfer['dataset'])} test (not used for selection), v{transfer['version']} vs the base, "
              f"{column}: {_paired_line(stats)}")
    if transfer.get("skipped"):
        print(f"  transfer: not evaluated ({transfer['skipped']})")
    print(f"MLflow store: {tracking_uri}   (UI: mlflow ui --backend-store-uri {tracking_uri})")
    print(f"Prefect API: {api_url}   (runs: prefect flow-run ls; UI: prefect server start, PREFECT_HOME=runs/prefect)")


def _paired_line(stats: dict) -> str:
    """One paired comparison with the base: accuracies, difference, McNemar p, n, loss difference."""
    return (f"{stats['base_accuracy']:.4f} -> {stats['variant_accuracy']:.4f} (diff {stats['accuracy_diff']:+.4f}, "
            f"McNemar p = {stats['mcnemar_p']:.3g}, n = {stats['n']}); loss diff {stats['loss_diff']:+.4f}")


def print_decomposed(summary: dict, tracking_uri: str) -> None:
    """A decompose-only summary: one whole-model variant per rank configuration, no accuracy, no promotion."""
    print(f"\n{summary['model']} -> {summary['registered_model']}: layers {summary['layers']}, decompose only")
    print(f"{'variant':40s} {'ver':>4s} {'model CR':>9s} {'mean rel_err':>12s} {'max rel_err':>11s} {'decompose s':>11s}")
    for row in summary["variants"]:
        print(f"{row['name'][:40]:40s} {row['version']:>4d} {row['whole_model_attention_cr']:>8.3f}x "
              f"{row['rel_error_mean']:>12.4f} {row['rel_error_max']:>11.4f} {row['decompose_seconds']:>11.1f}")
    print(f"Decision: {summary['decision']['sentence']}")
    print(f"MLflow store: {tracking_uri}")
