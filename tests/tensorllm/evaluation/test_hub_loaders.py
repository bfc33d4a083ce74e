"""The ``source="hub"`` loaders (LASER's Hugging Face datasets), run offline on fake hub rows.

They are never needed by the rest of the suite; this only checks that their row mapping feeds the same
prompt builders as the local files.
"""

import datasets
import pytest

from tensorllm.evaluation.data import load_task

FAKE = {
    ("tasksource/bigbench", "qa_wikidata", "validation"): [{"inputs": "The capital of France is", "targets": ["Paris"]}],
    ("tasksource/bigbench", "qa_wikidata", "train"): [
        {"inputs": "The capital of Italy is", "targets": ["Rome"]},
        {"inputs": "Two answers", "targets": ["a", "b"]},  # LASER keeps single-target items only
    ],
    ("hotpot_qa", "fullwiki", "validation"): [{"question": "Capital of Peru", "answer": "Lima"}],
    ("hotpot_qa", "fullwiki", "train[:1]"): [{"question": "Capital of Chad?", "answer": "Ndjamena"}],
    ("EleutherAI/fever", "v1.0", "paper_dev"): [{"claim": "Paris is in France.", "label": "SUPPORTS"}] * 2,
    ("EleutherAI/fever", "v1.0", "paper_test"): [{"claim": "Rome is in Peru.", "label": "REFUTES"}],
    ("LabHC/bias_in_bios", None, "dev"): [{"hard_text": "She writes poems.", "profession": 20},  # 20 = poet
                                          {"hard_text": "He nurses.", "profession": 13}],  # 13 = nurse  # fmt: skip
    ("azhx/counterfact", None, "train"): [{"case_id": 0, "requested_rewrite": {"prompt": "{} is located in", "subject": "Paris",
                                           "target_true": {"str": "France"}}, "paraphrase_prompts": ["A. Paris is in", "B. Paris lies in"]}],
    ("azhx/counterfact", None, "test"): [],
}  # fmt: skip


@pytest.fixture()
def fake_hub(monkeypatch):
    def load_dataset(path, name=None, split=None):
        return FAKE[(path, name, split)]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_loaders_map_rows(fake_hub, tiny_tokenizer):
    qa = load_task("qa_wikidata", source="hub")
    assert qa.dataset["prompt"] == ["The capital of France is", "The capital of Italy is"]
    assert qa.counts["dropped_multi_target"] == 1
    hotpot = load_task("hotpotqa", tiny_tokenizer, source="hub")
    assert hotpot.dataset["prompt"] == ["Capital of Chad? The answer is", "Capital of Peru? The answer is"]  # train first
    fever = load_task("fever", source="hub")
    assert fever.dataset["answer"] == ["true", "false"] and fever.counts["merged_duplicates"] == 1
    bios = load_task("bios_profession", tiny_tokenizer, source="hub", professions=["poet", "nurse"])
    assert sorted(bios.dataset["answer"]) == ["nurse", "poet"]
    cf = load_task("counterfact", source="hub")
    assert cf.dataset["prompt"] == ["Paris is located in", "A. Paris is in", "B. Paris lies in"]  # LASER: 3 per case
    assert set(cf.dataset["group"]) == {"counterfact/0"}
