"""Sweep figures: accuracy vs compression ratio, a layer x rank heatmap of validation accuracy, and the whole-model
front with the champion and the variants the promotion guard stopped marked.

Both take plain rows (dicts with ``layer``, ``ranks``, ``compression_ratio`` and a metric), so they can be
drawn from the flow's records or from a JSON summary. matplotlib runs headless (Agg backend).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_vs_compression(rows: list[dict], baseline: float, metric: str, out: Path) -> Path:
    """Scatter of the validation metric against the layer's MHA compression ratio (log x), one colour per layer."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    layers = sorted({r["layer"] for r in rows})
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    for i, layer in enumerate(layers):
        pts = [r for r in rows if r["layer"] == layer]
        ax.scatter([p["compression_ratio"] for p in pts], [p[metric] for p in pts], color=cmap(i), label=f"layer {layer}")
    ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label="baseline")
    ax.set_xscale("log")
    ax.set_xlabel("MHA compression ratio of the edited layer (log)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Validation metric vs compression")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def layer_rank_heatmap(rows: list[dict], baseline: float, metric: str, out: Path) -> Path:
    """Heatmap: rows = layers, columns = rank configurations, colour = metric minus baseline."""
    layers = sorted({r["layer"] for r in rows})
    ranks = sorted({tuple(r["ranks"]) for r in rows}, key=lambda t: (-t[0], -t[1], -t[2]))
    grid = [[float("nan")] * len(ranks) for _ in layers]
    for r in rows:
        grid[layers.index(r["layer"])][ranks.index(tuple(r["ranks"]))] = r[metric] - baseline
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(ranks), 1.0 + 0.45 * len(layers)))
    finite = [abs(v) for row in grid for v in row if v == v]
    bound = max(finite) if finite else 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(ranks)), ["x".join(map(str, t)) for t in ranks], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
    ax.set_xlabel("ranks R1xR2xR3")
    ax.set_ylabel("layer")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:
                ax.text(j, i, f"{value:+.3f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label=f"{metric} - baseline")
    ax.set_title("Validation metric change by layer and ranks", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def compression_front(rows: list[dict], baseline: float, metric: str, out: Path, champion: int | None = None) -> Path:
    """The accuracy-compression front of whole models: the validation metric against the whole model's
    attention compression ratio (log x); composed variants (uniform, allocated to a target, greedy) in colour,
    each allocated point labelled with its target, single-layer edits in grey, the non-dominated composed points
    joined by a line. The row whose ``version`` is ``champion`` gets a gold star, and rows with ``guard_stopped``
    (the promotion rule's loss or generation guard refused them on measured evidence, see flows.policy) a red
    cross: why the best-looking point may not be the champion."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"layer": ("0.7", "o", "single layer"), "uniform": ("tab:blue", "s", "uniform ranks"),
              "allocate": ("tab:green", "^", "allocated to a target"), "greedy": ("tab:red", "D", "greedy")}
    for kind, (colour, marker, label) in styles.items():
        pts = [r for r in rows if r.get("kind") == kind]
        if pts:
            ax.scatter([p["whole_model_attention_cr"] for p in pts], [p[metric] for p in pts], color=colour,
                       marker=marker, label=label, zorder=3)
    for r in rows:
        if r.get("kind") == "allocate" and r.get("target_ratio"):
            ax.annotate(f"{r['target_ratio']:g}x", (r["whole_model_attention_cr"], r[metric]), fontsize=6,
                        color="tab:green", xytext=(3, 3), textcoords="offset points")
    composed = sorted((r for r in rows if r.get("kind") in ("uniform", "allocate", "greedy")),
                      key=lambda r: (-r["whole_model_attention_cr"], -r[metric]))
    front, best = [], float("-inf")
    for r in composed:  # scanning from the most compressed: a point is on the front if it is more accurate
        if r[metric] > best:
            front.append(r)
            best = r[metric]
    if len(front) > 1:
        ax.plot([r["whole_model_attention_cr"] for r in front], [r[metric] for r in front], color="tab:blue",
                linewidth=1, zorder=2)
    stopped = [r for r in rows if r.get("guard_stopped")]
    if stopped:
        ax.scatter([r["whole_model_attention_cr"] for r in stopped], [r[metric] for r in stopped], color="tab:red",
                   marker="x", s=90, linewidths=2, label="stopped by the guard", zorder=4)
    crowned = [r for r in rows if champion is not None and r.get("version") == champion]
    if crowned:
        ax.scatter([r["whole_model_attention_cr"] for r in crowned], [r[metric] for r in crowned], color="gold",
                   edgecolors="k", marker="*", s=260, linewidths=0.8, label=f"champion (v{champion})", zorder=5)
    ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label="base model")
    ratios = [r["whole_model_attention_cr"] for r in rows]
    if max(ratios) / min(ratios) > 10:  # a log axis only where the ratios span decades
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.3g}x"))
    ax.set_xlabel("attention compression of the whole model")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.set_title("Whole-model accuracy vs compression")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
