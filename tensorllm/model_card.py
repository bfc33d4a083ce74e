"""The model card (``README.md``) of an exported model folder: what it is, how it was made, how to load it.

Hugging Face shows a folder's README.md as its model card; the YAML block on top is the Hub's metadata.
The card states the base model, the method and its paper, the ranks and compression ratio of every
compressed layer, the bytes against the base, the metrics given (with their 95% intervals where the
caller has them) and the loading code for the folder's format.

Usage::

    write_model_card(out_dir, "smollm2-135m", info, report, metrics={"accuracy": {"value": 0.41, "ci": [0.37, 0.45]}})
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .factorised import factorised_cost
from .attention_shape import AttentionShape

CARD_FILE = "README.md"
PAPER = "TensorLLM: Tensorising Multi-Head Attention for Enhanced Reasoning and Compression (arXiv 2501.15674)"
PAPER_URL = "https://arxiv.org/abs/2501.15674"


def _bytes_of_base(base_model: str) -> int | None:
    from .export import folder_bytes
    from .models import resolve_model

    try:
        return folder_bytes(resolve_model(base_model))
    except (OSError, ValueError):  # e.g. a hub id while offline: the card says less, the export still succeeds
        return None


def _metric_line(name: str, value) -> str:
    if isinstance(value, dict):
        ci = value.get("ci")
        interval = f" (95% CI {ci[0]:.4f} to {ci[1]:.4f})" if ci else ""
        return f"| {name} | {value.get('value'):.4f}{interval} |"
    return f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"


def _layer_rows(report: Sequence[dict], ranks: dict[str, dict]) -> list[str]:
    rows = ["| layer | edit | stored as | ranks (R1, R2) | attention compression | note |", "|---|---|---|---|---|---|"]
    for row in report:
        spec = ranks.get(str(row["layer"]))
        if spec:
            cost = factorised_cost(AttentionShape(**spec["attention_shape"]), *spec["ranks"])
            rank, ratio = f"{tuple(spec['ranks'])}", f"{cost.dense_params / cost.factorised_params:.1f}x"
        else:
            rank, ratio = "", "1.0x (dense)"
        rows.append(f"| {row['layer']} | {row['kind']} | {row['form']} | {rank} | {ratio} | {row['reason']} |")
    return rows


def _how_to_load(path: str, fmt: str) -> list[str]:
    if fmt == "dense":
        return ["A plain Hugging Face folder in the base model's dtype: transformers, vLLM and other engines load it "
                "as they load the base model.", "", "```python", "from transformers import AutoModelForCausalLM",
                f"model = AutoModelForCausalLM.from_pretrained({path!r})", "```"]
    return ["The compressed layers are stored as their Tucker factors, which the `tensorllm` package computes with "
            "(fewer parameters and fewer multiply-adds per token). Install tensorllm, then:", "", "```python",
            "import tensorllm", f"model, tokenizer = tensorllm.load_compressed({path!r})",
            "# or, the same model through transformers:", "from transformers import AutoModelForCausalLM",
            f"model = AutoModelForCausalLM.from_pretrained({path!r}, trust_remote_code=True)", "```", "",
            "Without tensorllm or without `trust_remote_code=True` loading fails with an error saying so; it never "
            "returns a model with random attention weights. For engines without custom code (vLLM), export the "
            "dense format: `tensorllm export ... --format dense`."]


def card_metrics(results: dict[str, dict]) -> dict[str, dict]:
    """Evaluation results (dataset -> :class:`~tensorllm.evaluation.EvalResult` dict) -> card metrics with intervals.

    ``{"qa_wikidata/test accuracy": {"value": 0.41, "ci": [0.37, 0.45]}, ...}`` for accuracy, top-1 accuracy and
    loss, each where the result has it; the dtype the evaluation ran in goes into the name.
    """
    out: dict[str, dict] = {}
    for dataset, result in sorted(results.items()):
        where = f"{dataset}/{result.get('split', '?')} ({result.get('dtype', '?')}, n={result.get('n', '?')})"
        for key in ("accuracy", "top1_accuracy", "loss"):
            if result.get(key) is not None:
                out[f"{where} {key}"] = {"value": float(result[key]), "ci": result.get(f"{key}_ci")}
    return out


def write_model_card(out_dir: str | Path, base_model: str, info: dict, report: Sequence[dict],
                     metrics: dict | None = None, ranks: dict[str, dict] | None = None) -> Path:
    """Write ``README.md`` into ``out_dir`` (see the module docstring); returns its path.

    ``info`` is :func:`tensorllm.export.export_variant`'s result, ``report`` how each artifact was stored,
    ``metrics`` name -> number or ``{"value", "ci"}``, ``ranks`` the export's ``tensorllm_compression.layers``.
    """
    out_dir = Path(out_dir)
    base_bytes = _bytes_of_base(base_model)
    size = f"{info['bytes']:,} bytes of safetensors ({info['dtype']})"
    if base_bytes:
        size += f"; the base model has {base_bytes:,} ({info['bytes'] / base_bytes:.1%}, {base_bytes - info['bytes']:,} bytes less)"
    lines = ["---", "library_name: transformers", "tags:", "- tensorllm", "- tucker-decomposition", "- compression",
             "---", "", f"# {Path(info['path']).name}: {base_model} with TensorLLM-compressed attention", "",
             f"- **Base model**: `{base_model}`",
             f"- **Method**: the multi-head attention weights of each edited layer are tensorised per head and "
             f"decomposed with a Tucker decomposition whose factor matrices all heads share: {PAPER}, {PAPER_URL}.",
             f"- **Format**: {info['format']}", f"- **Size**: {size}", "", "## Layers", "",
             *_layer_rows(report, ranks or {}), ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|",
                  *(_metric_line(k, v) for k, v in sorted(metrics.items())), ""]
    lines += ["## How to load", "", *_how_to_load(info["path"], info["format"]), ""]
    path = out_dir / CARD_FILE
    path.write_text("\n".join(lines))
    return path
