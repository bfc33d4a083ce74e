"""``compress(model, target_ratio=R, out=DIR)``: attention R times smaller, ranks allocated by measured sensitivity.

One process, no Prefect, Ray or MLflow: measure every (layer, configuration) edit's damage (:mod:`.plan`,
:mod:`.sensitivity`), choose the least-damage configuration per layer under the size budget (:mod:`.allocate`),
write the factorised model folder in the base's dtype (:func:`tensorllm.export.export_variant`), compare it with
the base on validation items the calibration did not use (:mod:`.verify`) and report (:mod:`.report`).

Usage::

    import tensorllm
    report = tensorllm.compress("smollm2-135m", target_ratio=2, out="runs/smollm2-2x")
    print("\\n".join(report.lines()))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..atomic_folder import atomic_folder, refuse_existing
from ..evaluation.perplexity import check_settings
from ..export import write_export
from ..manifest import write_manifest
from ..models import resolve_model
from ..tensorise import DEFAULT_GROUPING, Grouping
from ..tucker import RankSpec
from .plan import DEFAULT_N_ITER_MAX, DEFAULT_PROMPTS, Plan, check_ratio, measure, plan
from .report import CompressReport
from .verify import DEFAULT_MARGIN, DEFAULT_PPL_MARGIN, DEFAULT_TOKENS, verify_paths, verify_perplexity

log = logging.getLogger(__name__)


def report_for(table, chosen: Plan, out: Path, export: dict | None, verification, seconds: dict,
               perplexity=None) -> CompressReport:
    """The :class:`CompressReport` of a plan (shared by ``compress`` and the benchmark)."""
    size = chosen.size
    return CompressReport(
        model=table.model, out=str(out), target_ratio=chosen.target_ratio,
        attention_ratio=size.attention_compression_ratio, total_ratio=size.total_compression_ratio,
        base_bytes=size.bytes_before, predicted_bytes=size.bytes_after,
        export_bytes=export["bytes"] if export else None, export_dtype=export.get("dtype") if export else None,
        layers=[{"layer": c.layer, "ranks": list(c.ranks), "params": c.params, "damage": c.damage,
                 "rel_error": c.rel_error, "artifact": c.artifact} for c in chosen.chosen],
        predicted_damage=chosen.allocation.damage, optimality_gap_params=chosen.allocation.gap_params,
        calibration=table.calibration, verification=verification.to_dict() if verification else None,
        notes=list(table.notes), seconds=seconds, load=_load(),
        perplexity=perplexity.to_dict() if perplexity else None,
    )  # fmt: skip


def _load() -> dict | None:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count()}


def _check_options(dataset: str, n_prompts: int, verify: bool, val_limit: int, margin: float) -> None:
    """The options that would otherwise fail only after the sensitivity measurement: one line each, at once."""
    from ..evaluation.data.registry import check_dataset
    from ..evaluation.splits import check_split_args

    check_dataset(dataset)  # a built-in name or your own data (read whole by the command before it gets here)
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive integer; got {n_prompts!r}")
    if verify:
        check_split_args("val", val_limit)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"margin must be a fraction in [0, 1) of accuracy; got {margin!r}")


def compress(model: str, target_ratio: float, out: str | Path, *, grid: Sequence[RankSpec] | None = None,
             grouping: Grouping = DEFAULT_GROUPING, dataset: str = "qa_wikidata", n_prompts: int = DEFAULT_PROMPTS,
             layers: Sequence[int] | None = None, verify: bool = True, val_limit: int = 200, generate: bool = False,
             margin: float = DEFAULT_MARGIN, artifacts: str | Path | None = None,
             n_iter_max: int = DEFAULT_N_ITER_MAX, batch_size: int = 16, overwrite: bool = False,
             perplexity_tokens: int = DEFAULT_TOKENS, perplexity_margin: float = DEFAULT_PPL_MARGIN) -> CompressReport:
    """Make the whole model's attention at least ``target_ratio`` times smaller where it hurts least; write ``out``.

    * ``grid``: rank configurations per layer (integers or fractions of (d_model, d_head, slices); default
      :data:`~.grid.DEFAULT_GRID`); fractions that do not fit the model are clipped and said so in ``notes``.
    * ``dataset``/``n_prompts``: the calibration prompts, validation items after the first ``val_limit``.
    * ``layers``: the layers that may change (default all).
    * ``verify``: evaluate base and result on the first ``val_limit`` validation items of ``dataset`` and compare
      them paired (``generate=False``: first-token top-1 and answer loss, fast; True: greedy-generation accuracy);
      ``margin`` is the non-inferiority margin on accuracy.
    * ``perplexity_tokens``: with ``verify``, the token budget of the perplexity of base and result on held-out
      text (:mod:`tensorllm.evaluation.perplexity`; 0 skips it); the goal is a ratio within ``1 + perplexity_margin``.
    * ``artifacts``: where the per-layer artifacts go (default ``<out>/../.tensorllm-artifacts``); reused on re-runs.

    The export folder ``out`` holds the factorised model in the base's dtype, the verification and
    ``compress_report.json``. It is written beside ``out`` and renamed into place at the end
    (:mod:`tensorllm.atomic_folder`); a non-empty ``out`` is refused before any compute unless ``overwrite``.
    """
    ratio = check_ratio(target_ratio)
    _check_options(dataset, n_prompts, verify, val_limit, margin)  # before any model load or compute
    if verify and perplexity_tokens:
        check_settings(perplexity_tokens, margin=perplexity_margin)  # before the sensitivity pass, not after
    start = time.perf_counter()
    out = Path(out).expanduser()
    refuse_existing(out, overwrite)
    folder = resolve_model(model)  # a bad model name fails here, before any compute
    artifacts = Path(artifacts) if artifacts is not None else out.resolve().parent / ".tensorllm-artifacts"
    table = measure(model, grid, grouping=grouping, dataset=dataset, n_prompts=n_prompts,
                    skip=val_limit if verify else 0, layers=layers, artifacts=artifacts, n_iter_max=n_iter_max,
                    batch_size=batch_size)
    chosen = plan(table, ratio)
    seconds = {"sensitivity": table.seconds["total"]}
    log.info("plan for %.2fx: %d layers, attention %.2fx", ratio, len(chosen.chosen),
             chosen.size.attention_compression_ratio)
    t0 = time.perf_counter()
    metrics = {"attention_compression_ratio": chosen.size.attention_compression_ratio,
               "target_ratio": ratio, "calibration_kl": chosen.allocation.damage}
    with atomic_folder(out, overwrite) as tmp:  # everything below lands in `out` at once, or not at all
        export = write_export(model, chosen.artifacts, tmp, metrics=metrics, path=out)
        seconds["export"] = time.perf_counter() - t0
        verification = None
        if verify:
            t0 = time.perf_counter()
            verification, _ = verify_paths(model, chosen.artifacts, dataset, "val", val_limit, generate,
                                           tmp / "verification", margin, batch_size)
            seconds["verify"] = time.perf_counter() - t0
            if not verification.non_inferior:
                log.warning("compressed model is not shown non-inferior: %s", verification.sentence())
        ppl = None
        if verify and perplexity_tokens:
            t0 = time.perf_counter()
            ppl, _ = verify_perplexity(model, chosen.artifacts, tokens=perplexity_tokens, margin=perplexity_margin)
            seconds["perplexity"] = time.perf_counter() - t0
            if not ppl.within_margin:
                log.warning("compressed model's perplexity is not shown within the goal: %s", ppl.sentence())
        seconds["total"] = time.perf_counter() - start
        report = report_for(table, chosen, out, export, verification, seconds, ppl)
        report.write(tmp)
        write_manifest(tmp)  # again: the verification and the report are part of the folder
    return report
