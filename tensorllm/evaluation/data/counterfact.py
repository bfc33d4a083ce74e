"""CounterFact (ROME): prompt -> true target; generative (10 new tokens). Paraphrases are extra items.

LASER builds one item from the rewrite prompt and one from each of the case's ``paraphrase_prompts``,
all with ``target_true``. The local MEND/EasyEdit files have one paraphrase per case
(``rephrase_prompt``), so a case gives two items here (LASER: three). All items of a case share a
split group, so a fact never appears in both validation and test.

Local files: ``counterfact/mend_counterfact-train.json`` and ``-val.json`` (JSON lists; disjoint
``case_id``). Hub: ``azhx/counterfact`` (ROME's counterfact.json, train + test); LASER itself downloads
counterfact.json from rome.baulab.info.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import MalformedPolicy
from .readers import read_json_list, require_file
from .task import Task, make_dataset

log = logging.getLogger(__name__)

NAME = "counterfact"
FILES = (Path("counterfact") / "mend_counterfact-train.json", Path("counterfact") / "mend_counterfact-val.json")
MAX_NEW_TOKENS = 10  # LASER's max_len for CounterFact


def build(cases: Iterable[tuple[int, list[str], str]], source: str, counts: dict[str, int]) -> Task:
    """Turn ``(case_id, [prompt, paraphrase, ...], target_true)`` into items ``counterfact/<case>/<k>``."""
    rows, seen = [], set()
    for case_id, prompts, target in cases:
        if case_id in seen:
            counts["dropped_duplicate_case"] = counts.get("dropped_duplicate_case", 0) + 1
            continue
        seen.add(case_id)
        group = f"{NAME}/{case_id}"
        for k, prompt in enumerate(prompts):
            rows.append({"id": f"{group}/{k}", "group": group, "prompt": prompt.strip(), "answer": target.strip()})
    counts["cases"] = len(seen)
    counts["items"] = len(rows)
    log.info("%s: %d items from %s (%s)", NAME, len(rows), source, counts)
    return Task(NAME, "generate", make_dataset(rows), max_new_tokens=MAX_NEW_TOKENS, source=source, counts=counts)


def load_local(data_dir: Path, tokenizer=None, *, strict: bool = True, paraphrases: bool = True) -> Task:
    """Load the MEND-format files (``case_id``, ``prompt``, ``ground_truth``, ``rephrase_prompt``).

    ``paraphrases=False`` keeps only the rewrite prompt of each case.
    """
    policy = MalformedPolicy(strict)
    fields = {"case_id": int, "prompt": str, "ground_truth": str}
    if paraphrases:
        fields["rephrase_prompt"] = str
    cases = []
    for relative in FILES:
        path = require_file(data_dir / relative, NAME)
        for _, r in read_json_list(path, fields, policy):
            prompts = [r["prompt"], r["rephrase_prompt"]] if paraphrases else [r["prompt"]]
            cases.append((r["case_id"], prompts, r["ground_truth"]))
        policy.log_summary(str(path))
    return build(cases, f"{data_dir / 'counterfact'} (train+val)", {"records": len(cases), "skipped_malformed": policy.skipped})


def load_hub(tokenizer=None, *, paraphrases: bool = True) -> Task:
    """ROME's counterfact.json via ``azhx/counterfact`` (train + test): rewrite prompt + both paraphrases."""
    from datasets import load_dataset

    cases = []
    for split in ("train", "test"):
        for r in load_dataset("azhx/counterfact", split=split):
            rewrite = r["requested_rewrite"]
            prompts = [rewrite["prompt"].format(rewrite["subject"])]
            if paraphrases:
                prompts += list(r["paraphrase_prompts"])
            cases.append((int(r["case_id"]), prompts, rewrite["target_true"]["str"]))
    return build(cases, "hub:azhx/counterfact", {"records": len(cases)})
