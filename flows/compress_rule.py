"""The ``compress`` promotion rule: the most compressed variant shown non-inferior to the base, with
family-wise error control over every variant the rule weighs (docs/promotion.md).

The family is every variant that compresses (ratio > 1). Each is tested on all its endpoints (the selection
metric, the loss, and validation generation accuracy when measured: :mod:`flows.noninferiority`), and
Holm's correction over the family decides which are non-inferior at the one-sided family-wise level
``alpha / 2`` (2.5% at the default alpha 0.05: the 95% intervals' convention). Among those, the most
compressed is promoted: composed variants first (their ratio is the whole model's attention, a
single-layer one's is its layer's), then the higher ratio, ties by the better validation metric and
then the lower loss. Choosing among the declared non-inferior variants after the test costs nothing:
Holm controls the chance that *any* of them is in fact inferior.
"""

from __future__ import annotations

import functools

from .candidates import (COMPRESSION_TIE, KINDS, LABELS, Candidate, Decision, fmt, fmt_ratio, higher_is_better,
                         kind_text, plural, rank_key)
from .noninferiority import Family, Margins, failing, family

GUARDED = {"loss": "loss", "generation accuracy": "validation generation accuracy"}


def compress_cmp(metric: str):
    """Comparison for the compress order, best first: composed before layer, higher compression, then the
    validation metric and loss (:func:`flows.candidates.rank_key`)."""
    def cmp(a: Candidate, b: Candidate) -> int:
        if a.kind != b.kind:
            return -1 if a.kind == "composed" else 1
        if abs(a.compression - b.compression) > COMPRESSION_TIE:
            return -1 if a.compression > b.compression else 1
        ka, kb = rank_key(a, metric), rank_key(b, metric)
        return -1 if ka < kb else (1 if ka > kb else 0)
    return cmp


def compress_family(candidates: list[Candidate], metric: str, margins: Margins, alpha: float,
                    require_generation: bool = False, optimistic: Candidate | None = None) -> Family:
    """Holm over every candidate that compresses (the family the rule weighs)."""
    return family([c for c in candidates if c.compresses], metric, margins, alpha, require_generation, optimistic)


def compress_pool(fam: Family, metric: str, kinds: tuple[str, ...] = KINDS) -> list[Candidate]:
    """The family's non-inferior candidates of the given kinds, in the rule's order (best first)."""
    chosen = [c for c in fam.non_inferior() if c.kind in kinds]
    return sorted(chosen, key=functools.cmp_to_key(compress_cmp(metric)))


def margins_text(metric: str, margins: Margins, base_accuracy: float | None, generation_base: float | None) -> str:
    """``margins: top-1 accuracy 2 points = 23% of the base's 8.6%, loss 0.05 nats, generation accuracy ...``."""
    def acc(base):
        return margins.accuracy_text(base) if base is not None else f"{100 * margins.accuracy:g} points"
    text = (f"margins: {LABELS[metric]} {acc(base_accuracy)}, loss {margins.loss:g} nats" if higher_is_better(metric)
            else f"margins: loss {margins.accuracy:g} nats")
    return text + (f", generation accuracy {acc(generation_base)}" if generation_base is not None else "")


def procedure_text(fam: Family, alpha: float) -> str:
    return (f"Holm over the {plural(len(fam.members), 'compressing variant')}, family-wise one-sided error "
            f"{100 * fam.level:g}% (alpha {alpha:g})")


def compress_decision(candidates: list[Candidate], baseline: Candidate, current: Candidate | None, metric: str,
                      alpha: float, margins: Margins, require_generation: bool = False,
                      kinds: tuple[str, ...] = KINDS) -> Decision:
    """Apply the rule (module docstring); ``kinds``: the kinds it may choose from (the family is always all)."""
    n_all = len(candidates)
    fam = compress_family(candidates, metric, margins, alpha, require_generation)
    pool = compress_pool(fam, metric, kinds)
    stays = f"; v{current.version} stays champion" if current is not None else ""
    compared = [c for c in fam.members if c.paired_val is not None and c.kind in kinds]
    if not compared:
        what = "compresses (ratio > 1) and has" if n_all == 1 else ""
        why = ("the only variant does not both " + what if n_all == 1 else
               f"none of the {n_all} variants both compresses (ratio > 1) and has")
        if kinds != KINDS:
            why = f"no {'/'.join(kinds)} variant both compresses (ratio > 1) and has"
        return Decision(False, None, "compress", f"No promotion under the compress rule: {why} a paired "
                                                 f"validation comparison with the base{stays}.")
    base_acc = compared[0].paired_val.get("base_accuracy")
    gen_base = next((c.guard_val["base_accuracy"] for c in fam.members if c.guard_val is not None), None)
    shown = f"shown non-inferior to the base ({margins_text(metric, margins, base_acc, gen_base)}; {procedure_text(fam, alpha)})"
    if not pool:
        closest = min(compared, key=lambda c: (fam.adjusted[id(c)], -c.compression))
        none = (f"none of the {n_all} variants is" if n_all != 1 else "the only variant is not") if kinds == KINDS \
            else f"no {'/'.join(kinds)} variant is"
        return Decision(False, closest.version, "compress",
                        f"No promotion under the compress rule: {none} {shown}; the closest, {closest.label} at "
                        f"{fmt_ratio(closest)}, on {closest.paired_val['n']} validation items: {_evidence(fam, closest)}"
                        f"{_kept_out(fam)}{stays}.")
    chosen = pool[0]
    what = (f"highest {kind_text(chosen)} {fmt_ratio(chosen)} among {len(pool)} of {n_all} variant{'s' * (n_all != 1)} "
            f"{shown}; on its {chosen.paired_val['n']} validation items: {_evidence(fam, chosen)}; validation "
            f"{LABELS[metric]} {fmt(chosen.val_metric, metric)} vs the base's {fmt(baseline.val_metric, metric)}")
    if chosen.kind == "composed" and any(c.kind == "layer" for c in pool):
        what += " (composed variants rank before single-layer ones, whose ratios are per layer)"
    what += _unchecked(chosen, require_generation) + _kept_out(fam)
    tie = _tie(pool, metric)
    if current is not None and current.version == chosen.version:
        return Decision(True, chosen.version, "compress",
                        f"Kept {chosen.label} as champion under the compress rule: it is again the {what}{tie}.")
    if current is not None and compress_cmp(metric)(chosen, current) >= 0:
        return Decision(False, chosen.version, "compress",
                        f"No promotion under the compress rule: {chosen.label}, the {what}{tie}, does not beat the "
                        f"current champion v{current.version} ({kind_text(current)} {fmt_ratio(current)}, "
                        f"validation {LABELS[metric]} {fmt(current.val_metric, metric)}), which stays champion.")
    return Decision(True, chosen.version, "compress",
                    f"Promoted {chosen.label} under the compress rule: {what}{tie}{_bar(chosen, current, metric)}.")


def _evidence(fam: Family, c: Candidate) -> str:
    """``top-1 accuracy difference ..., loss difference ... (Holm-adjusted p=...)`` and what failed."""
    tests = fam.tests[id(c)]
    text = "; ".join(e.text for e in tests) + f" (Holm-adjusted p={fam.adjusted[id(c)]:.2g}"
    text += " <= " if fam.passes(c) else " > "
    text += f"{fam.level:g})"
    bad = failing(tests, fam.level)
    if bad and not fam.passes(c):
        text += ", not within the margin on " + ", ".join(e.what for e in bad)
    return text


def _kept_out(fam: Family) -> str:
    """What the loss and generation guards kept out: variants whose own test of that endpoint fails."""
    parts = []
    for what, label in GUARDED.items():
        out = [c for c in fam.members if any(e.what == what and not e.pending for e in failing(fam.tests[id(c)], fam.level))]
        primary_ok = [c for c in out if fam.tests[id(c)][0].what != what and fam.tests[id(c)][0].p <= fam.level]
        if primary_ok:
            worst = max(primary_ok, key=lambda c: next(e.p for e in fam.tests[id(c)] if e.what == what))
            text = next(e.text for e in fam.tests[id(worst)] if e.what == what)
            parts.append(f"the {what} guard kept out {plural(len(primary_ok), 'variant')} within the margin on the "
                         f"selection metric whose {label} is not shown within its margin (the clearest, {worst.label}: "
                         f"{text})")
    return "".join(f"; {p}" for p in parts)


def _unchecked(c: Candidate, require_generation: bool) -> str:
    if c.guard_val is None and not require_generation:
        return "; generation guard not applied: its validation generation accuracy was not measured"
    return ""


def _tie(pool: list[Candidate], metric: str) -> str:
    if len(pool) < 2:
        return ""
    a, b = pool[0], pool[1]
    if a.kind != b.kind or abs(a.compression - b.compression) > COMPRESSION_TIE:
        return ""
    if a.val_metric != b.val_metric:
        better = "higher" if higher_is_better(metric) else "lower"
        why = f"{better} validation {LABELS[metric]} {fmt(a.val_metric, metric)} vs {fmt(b.val_metric, metric)}"
    elif a.val_loss != b.val_loss:
        why = f"lower validation loss {a.val_loss:.3f} vs {b.val_loss:.3f}"
    else:
        why = "place in the sweep's order (equal metric and loss)"
    return f"; it tied at {fmt_ratio(a)} with {b.label} and was chosen for its {why}"


def _bar(chosen: Candidate, current: Candidate | None, metric: str) -> str:
    if current is None:
        return ""
    if current.kind != chosen.kind:  # only composed over layer gets here
        return f"; as a composed variant it outranks the current champion v{current.version}, a single-layer one"
    if abs(current.compression - chosen.compression) <= COMPRESSION_TIE:
        return (f"; it ties the current champion v{current.version} at {fmt_ratio(current)} with a better "
                f"validation {LABELS[metric]} ({fmt(chosen.val_metric, metric)} vs {fmt(current.val_metric, metric)})")
    return f"; it compresses more than the current champion v{current.version} ({fmt_ratio(current)})"
