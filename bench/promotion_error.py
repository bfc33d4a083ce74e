"""How often the compress rule promotes an inferior variant: simulated paired outcomes, the real policy.

    python -m bench.promotion_error [--quick] [--json] [--reps N] [--seed S]

Each repetition draws one base model's per-item outcomes on ``n`` validation items (accuracy ``base_acc``)
and a grid of variants, each with a *true* accuracy difference from the base: a variant disagrees with the
base on a fraction ``discordance`` of the items, split between items it loses and items it wins so that the
expected difference is the true one (variants share the base's items, as a sweep's do). Every variant's
rows go through the real :func:`tensorllm.evaluation.compare_paired` and the real
:func:`flows.policy.decide` (objective ``compress``, margin 2 points, alpha 0.05), exactly as a sweep's
validation numbers do. The loss is held equal to the base's (its endpoint passes), so that the table
isolates the accuracy test and its multiplicity control.

Rows: the grid (30 variants all 3 points worse; all exactly at the 2-point margin, the worst case for the
error rate; and 29 inferior variants plus one truly equal, low-discordance one, for power), for
``n`` = 400 and 1000 items, with the rule as it is (``holm``: Holm over the family, one-sided 2.5%) and as
it was (``per-candidate``: each variant's own 95% interval, the most compressed that passes, no
correction). ``false promotion``: the share of repetitions that promote a variant whose true difference is
beyond the margin (or on it); ``power``: the share that promote the truly non-inferior one. Writes
``bench/results/promotion_error.json`` (``-quick`` for ``--quick``).

Also (:func:`replay_selection`), the rule on real validation outcomes: the per-item results of the selection
study (``bench/results/selection-items.json.gz``: SmolLM2-135M-Instruct, WikidataQA validation, 400 items,
single-layer variants with top-1, loss and generation accuracy for each) go through the same
``compare_paired`` and ``decide``, for the default sweep's grid (layers 26-29 x 5 ranks) and for all 32
variants, and the decision sentences are printed and stored.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import base_parser, finish, print_table

from flows.policy import Candidate, decide, non_inferior
from tensorllm.evaluation import compare_paired

MARGIN = 0.02  # the default accuracy margin (flows.config.SweepConfig.margin)
ALPHA = 0.05  # the default alpha


@dataclass(frozen=True)
class Grid:
    """A simulated sweep: ``diffs`` are the variants' true accuracy differences (variant - base), in the order
    of increasing compression; ``discordance`` the share of items on which each disagrees with the base."""

    name: str
    diffs: tuple[float, ...]
    discordance: tuple[float, ...]


def grids(n_variants: int = 30) -> list[Grid]:
    worse = Grid("all 3 points worse", (-0.03,) * n_variants, (0.10,) * n_variants)
    at_margin = Grid("all at the 2-point margin", (-0.02,) * n_variants, (0.10,) * n_variants)
    # one truly equal variant with few disagreements (a mild edit), ranked least compressed; 29 inferior ones
    one_good = Grid("29 worse + 1 equal (power)", (0.0,) + (-0.03,) * (n_variants - 1),
                    (0.02,) + (0.10,) * (n_variants - 1))
    return [worse, at_margin, one_good]


def simulate(grid: Grid, n: int, rng: random.Random, base_acc: float = 0.4) -> list[Candidate]:
    """One repetition: the base's outcomes and every variant's, compared with the real compare_paired."""
    base_ok = [rng.random() < base_acc for _ in range(n)]
    base_rows = [{"id": f"q{i}", "top1_correct": ok, "loss": 2.0} for i, ok in enumerate(base_ok)]
    candidates = []
    for k, (diff, disc) in enumerate(zip(grid.diffs, grid.discordance)):
        lose, win = (disc - diff) / 2, (disc + diff) / 2  # P(base right, variant wrong), P(base wrong, variant right)
        p_lose, p_win = lose / base_acc, win / (1 - base_acc)  # conditional flips keep the joint law
        rows = [{"id": f"q{i}", "top1_correct": (not ok) if rng.random() < (p_lose if ok else p_win) else ok,
                 "loss": 2.0} for i, ok in enumerate(base_ok)]
        paired = compare_paired(base_rows, rows, metric="top1_correct").to_dict()
        candidates.append(Candidate(k + 2, f"variant{k:02d}", paired["variant_accuracy"], 2.0,
                                    compression=2.0 * 1.2 ** k, paired_val=paired))
    return candidates


def promoted(candidates: list[Candidate], rule: str) -> Candidate | None:
    """The variant the rule promotes: ``holm`` (flows.policy.decide as it is) or ``per-candidate`` (each
    variant's own 95% interval within the margin, the most compressed of those: the rule without control)."""
    if rule == "holm":
        base = Candidate(1, "baseline", candidates[0].paired_val["base_accuracy"], 2.0)
        d = decide(candidates, base, None, "compress", "top1_accuracy", ALPHA, MARGIN)
        return next((c for c in candidates if d.promote and c.version == d.version), None)
    passing = [c for c in candidates if non_inferior(c, "top1_accuracy", MARGIN)]
    return max(passing, key=lambda c: c.compression) if passing else None


def rates(grid: Grid, n: int, reps: int, seed: int = 0, rules: tuple[str, ...] = ("holm", "per-candidate")) -> dict:
    """Share of ``reps`` repetitions in which each rule promotes an inferior variant (true difference at or
    beyond ``-MARGIN``) and in which it promotes a truly non-inferior one; with a 95% Wilson interval."""
    from tensorllm.evaluation.stats import wilson_interval

    rng = random.Random(seed)
    counts = {r: {"false": 0, "good": 0} for r in rules}
    for _ in range(reps):
        candidates = simulate(grid, n, rng)
        for r in rules:
            c = promoted(candidates, r)
            if c is not None:
                inferior = grid.diffs[c.version - 2] <= -MARGIN + 1e-12
                counts[r]["false" if inferior else "good"] += 1
    out = {}
    for r in rules:
        k = counts[r]["false"]
        out[r] = {"false_promotions": k, "false_promotion_rate": k / reps, "false_promotion_ci": wilson_interval(k, reps),
                  "power": counts[r]["good"] / reps}
    return out


def replay_selection(path: Path = Path(__file__).resolve().parent / "results") -> list[dict]:
    """The compress rule (defaults) on the selection study's real per-item validation outcomes."""
    import gzip
    import json

    items = json.loads(gzip.open(path / "selection-items.json.gz").read())["per_item"]
    ratios = {v["name"]: v["compression_ratio"] for v in json.loads((path / "selection.json").read_text())["variants"]}

    def rows(name):
        return [{"id": k, **v} for k, v in items[name]["qa_wikidata_val"].items()]

    base = rows("base")
    cands = []
    for version, name in enumerate(sorted(n for n in items if n != "base"), start=2):
        top1 = compare_paired(base, rows(name), metric="top1_correct").to_dict()
        c = Candidate(version, name, top1["variant_accuracy"], top1["variant_loss"], compression=ratios[name],
                      paired_val=top1)
        c.guard_val = compare_paired(base, rows(name), metric="correct").to_dict()
        cands.append(c)
    baseline = Candidate(1, "baseline", cands[0].paired_val["base_accuracy"], cands[0].paired_val["base_loss"])
    default_grid = [c for c in cands if c.name.startswith(("layer026", "layer027", "layer028", "layer029"))]
    out = []
    for label, group in (("default grid: layers 26-29 x 5 ranks", default_grid), ("all 32 variants", cands)):
        d = decide(group, baseline, None, "compress", "top1_accuracy", ALPHA, MARGIN, require_generation=True)
        old = [c for c in group if non_inferior(c, "top1_accuracy", MARGIN)]
        old_pick = max(old, key=lambda c: (c.compression, c.val_metric)).name if old else None
        out.append({"variants": label, "n": len(group), "promoted": d.promote,
                    "version": next((c.name for c in group if c.version == d.version), None),
                    "previous_rule_pick": old_pick, "sentence": d.sentence})
    return out


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row (default 1000; --quick 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reps = args.reps or (100 if args.quick else 1000)
    rows, start = [], time.time()
    for grid in grids():
        for n in (400, 1000):
            result = rates(grid, n, reps, seed=args.seed)
            for rule, r in result.items():
                lo, hi = r["false_promotion_ci"]
                rows.append({"grid": grid.name, "items": n, "rule": rule, "reps": reps,
                             "false_promotion": r["false_promotion_rate"], "ci": f"{100 * lo:.1f}..{100 * hi:.1f}%",
                             "power": r["power"]})
    print_table(rows, [("grid", "{}"), ("items", "{}"), ("rule", "{}"), ("reps", "{}"),
                       ("false_promotion", "{:.1%}", "false promotion"), ("ci", "{}", "95% CI"),
                       ("power", "{:.1%}", "power")],
                title=f"Compress rule on simulated paired outcomes (30 variants, margin {100 * MARGIN:g} points, "
                      f"alpha {ALPHA:g})")
    replay = replay_selection()
    for r in replay:
        print(f"\n{r['variants']} (selection study, 400 validation items; previous rule: {r['previous_rule_pick']}):"
              f"\n  {r['sentence']}")
    finish("promotion_error", rows, args, extra={"replay_selection": replay,
                                                 "seconds": round(time.time() - start, 1), "margin": MARGIN,
                                                 "alpha": ALPHA, "seed": args.seed,
                                                 "grids": [g.__dict__ for g in grids()]})


if __name__ == "__main__":
    main()
