"""What ``compress`` did, as a record (:class:`CompressReport`), a JSON file and lines for the terminal."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_FILE = "compress_report.json"


@dataclass
class CompressReport:
    """The result of one ``compress`` run: the plan, the sizes, the verification and the time each step took."""

    model: str
    out: str
    target_ratio: float
    attention_ratio: float  # whole-model attention parameters before / after
    total_ratio: float  # all parameters before / after
    base_bytes: int  # the base checkpoint's safetensors bytes
    predicted_bytes: int  # the base's bytes with the chosen layers factorised, in the base's dtype
    export_bytes: int | None  # safetensors bytes of the folder written (None: no export)
    export_dtype: str | None
    layers: list[dict]  # per changed layer: ranks, parameters, damage, relative error, artifact
    predicted_damage: float  # summed per-layer KL of the chosen edits (nats per token)
    optimality_gap_params: int
    calibration: dict
    verification: dict | None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    load: dict | None = None  # the machine's load average while it ran (shared machines)
    #: base and compressed perplexity on the held-out corpus, paired (tensorllm.evaluation.perplexity
    #: PerplexityComparison.to_dict()); None when skipped
    perplexity: dict | None = None

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    def lines(self) -> list[str]:
        """The terminal report."""
        out = [
            f"compressed {self.model} -> {self.out}",
            f"  attention {self.attention_ratio:.2f}x smaller (target {self.target_ratio:g}x); whole model "
            f"{self.total_ratio:.3f}x; {self.base_bytes / 1e6:.1f} MB -> "
            f"{(self.export_bytes if self.export_bytes is not None else self.predicted_bytes) / 1e6:.1f} MB"
            + (f" ({self.export_dtype})" if self.export_dtype else ""),
            f"  {len(self.layers)} layer(s) factorised; summed calibration KL {self.predicted_damage:.4f} nats/token "
            f"on {self.calibration.get('n_prompts')} validation prompts",
        ]
        for row in self.layers:
            out.append(f"    layer {row['layer']:>3}: ranks {'x'.join(map(str, row['ranks']))}, "
                       f"{row['params']:,} params, KL {row['damage']:.4f}")
        if self.verification is not None:
            v = self.verification
            lo, hi = v["accuracy_diff_ci"]
            verdict = "non-inferior" if v["non_inferior"] else "NOT shown non-inferior"
            out.append(f"  verification {v['dataset']}/{v['split']} n={v['n']} ({v['metric']}): base "
                       f"{v['base_accuracy']:.3f}, compressed {v['variant_accuracy']:.3f}, difference "
                       f"{v['accuracy_diff']:+.3f} [95% {lo:+.3f}, {hi:+.3f}]: {verdict} within {v['margin']:.2f}")
            out.append(f"  answer loss (teacher forced) {v['base_loss']:.3f} -> {v['variant_loss']:.3f} "
                       f"({v['loss_diff']:+.3f} [{v['loss_diff_ci'][0]:+.3f}, {v['loss_diff_ci'][1]:+.3f}])")
        if self.perplexity is not None:
            out += perplexity_lines(self.perplexity)
        for note in self.notes:
            out.append(f"  note: {note}")
        out.append("  time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items()))
        return out


def perplexity_lines(p: dict) -> list[str]:
    """The perplexity part of the terminal report, from a ``PerplexityComparison.to_dict()``."""
    goal = f"+{p['margin']:.0%}"
    verdict = (f"goal met: within {goal} (upper 95% end of the ratio)" if p["within_margin"] else
               f"goal NOT met: not shown within {goal}")
    return [
        f"  perplexity on {p['corpus']} ({p['n_windows']} windows of {p['window']} tokens): base "
        f"{p['base_perplexity']:.2f} [95% {p['base_perplexity_ci'][0]:.2f}, {p['base_perplexity_ci'][1]:.2f}], "
        f"compressed {p['variant_perplexity']:.2f} [95% {p['variant_perplexity_ci'][0]:.2f}, "
        f"{p['variant_perplexity_ci'][1]:.2f}]",
        f"  perplexity ratio {p['ratio']:.4f} [paired 95% {p['ratio_ci'][0]:.4f}, {p['ratio_ci'][1]:.4f}] "
        f"({p['ratio'] - 1:+.1%}): {verdict}",
    ]


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
