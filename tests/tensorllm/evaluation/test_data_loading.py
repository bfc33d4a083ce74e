"""Dataset loaders: hand-made files, merging/dropping rules with their counts, registry errors, malformed input."""

import json
import logging

import pytest

from tensorllm.evaluation.data import DataFormatError, dataset_names, load_task
from tensorllm.evaluation.data.registry import default_data_dir


def test_registry_lists_the_five_datasets_and_rejects_unknown():
    assert dataset_names() == ["qa_wikidata", "hotpotqa", "fever", "bios_profession", "counterfact"]
    with pytest.raises(ValueError, match="Unknown dataset 'squad'; allowed: \\['qa_wikidata'"):
        load_task("squad")
    with pytest.raises(ValueError, match="Unknown source"):
        load_task("fever", source="ftp")


def test_unknown_loader_option_is_rejected(tiny_data_dir):
    with pytest.raises(ValueError, match="does not take option\\(s\\) \\['paraphrases'\\]"):
        load_task("fever", data_dir=tiny_data_dir, paraphrases=False)


def test_missing_data_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="TENSORLLM_DATA_DIR"):
        load_task("qa_wikidata", data_dir=tmp_path)


def test_default_data_dir_is_the_checkout_data_folder(monkeypatch):
    monkeypatch.delenv("TENSORLLM_DATA_DIR", raising=False)
    assert (default_data_dir() / "fever" / "paper_dev.jsonl").is_file()


def test_qa_wikidata(tiny_data_dir):
    task = load_task("qa_wikidata", data_dir=tiny_data_dir)
    assert task.kind == "generate" and task.max_new_tokens == 10  # LASER's max_len for BIG-bench
    assert len(task) == 10  # 5 capitals + 5 languages written by write_tiny_data
    row = task.dataset[0]
    assert (row["prompt"], row["answer"]) == ("The capital of France is", "Paris")
    assert row["id"].startswith("qa_wikidata/") and row["group"] == row["id"]


def test_hotpotqa_drops_long_answers_and_needs_tokenizer(tiny_data_dir, tiny_tokenizer):
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        load_task("hotpotqa", data_dir=tiny_data_dir)
    task = load_task("hotpotqa", tiny_tokenizer, data_dir=tiny_data_dir)
    assert task.max_new_tokens == 15
    assert task.counts["dropped_long_answer"] == 1  # the 40-word answer
    assert len(task) == 6  # 5 capitals + 1 yes/no
    assert task.dataset[0]["prompt"] == "What is the capital of France? The answer is"


def test_fever_maps_labels_merges_duplicates_drops_conflicts(tiny_data_dir):
    task = load_task("fever", data_dir=tiny_data_dir)
    assert task.kind == "classify" and task.candidates == ("true", "false")
    # 8 lines: 1 NEI dropped; "Paris..." twice (merged); "Madrid..." SUPPORTS+REFUTES (dropped)
    assert task.counts["dropped_nei"] == 1
    assert task.counts["merged_duplicates"] == 2  # 7 labelled lines, 5 distinct claims
    assert task.counts["dropped_conflicting_claims"] == 1
    assert len(task) == 4
    answers = dict(zip(task.dataset["prompt"], task.dataset["answer"]))
    assert answers["Consider the following claim: Paris is the capital of France. Is this claim true or false. The claim is"] == "true"
    assert answers["Consider the following claim: Rome is the capital of France. Is this claim true or false. The claim is"] == "false"


def test_bios_keeps_single_token_professions(tiny_data_dir, tiny_tokenizer):
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        load_task("bios_profession", data_dir=tiny_data_dir)
    task = load_task("bios_profession", tiny_tokenizer, data_dir=tiny_data_dir)
    assert task.candidates == ("nurse", "poet", "teacher")  # " software engineer" is several tokens
    assert task.counts["dropped_multi_token_profession"] == 3  # its 3 bios
    assert len(task) == 9
    only = load_task("bios_profession", tiny_tokenizer, data_dir=tiny_data_dir, professions=["poet", "nurse"])
    assert only.candidates == ("nurse", "poet") and len(only) == 6
    with pytest.raises(ValueError, match="not in the data"):
        load_task("bios_profession", tiny_tokenizer, data_dir=tiny_data_dir, professions=["astronaut"])


def test_counterfact_groups_prompt_and_paraphrase(tiny_data_dir):
    task = load_task("counterfact", data_dir=tiny_data_dir)
    assert task.counts["cases"] == 5 and len(task) == 10  # each case: prompt + rephrase_prompt
    rows = [r for r in task.dataset if r["group"] == "counterfact/100"]
    assert [r["prompt"] for r in rows] == ["The capital of France is", "France's capital city is"]
    assert {r["answer"] for r in rows} == {"Paris"}
    assert len(load_task("counterfact", data_dir=tiny_data_dir, paraphrases=False)) == 5


# ---- malformed input -------------------------------------------------------------------------------


def _append_line(path, text):
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def test_bad_json_line_names_file_and_line(data_copy):
    path = data_copy / "qa_wikidata" / "bigbench_qa_wikidata.jsonl"
    _append_line(path, '{"context": "broken"')  # line 11 (10 good lines before it)
    with pytest.raises(DataFormatError, match=r"bigbench_qa_wikidata\.jsonl:11: not valid JSON") as info:
        load_task("qa_wikidata", data_dir=data_copy)
    assert info.value.line == 11 and info.value.path == path


def test_missing_field_and_wrong_type(data_copy):
    path = data_copy / "qa_wikidata" / "bigbench_qa_wikidata.jsonl"
    _append_line(path, json.dumps({"context": "x is"}))
    with pytest.raises(DataFormatError, match=r":11: missing field\(s\) \['continuation'\]"):
        load_task("qa_wikidata", data_dir=data_copy)
    path.write_text(json.dumps({"context": "x is", "continuation": 3}) + "\n")
    with pytest.raises(DataFormatError, match=r":1: field 'continuation' must be str"):
        load_task("qa_wikidata", data_dir=data_copy)


def test_non_strict_skips_and_counts(data_copy, caplog):
    path = data_copy / "qa_wikidata" / "bigbench_qa_wikidata.jsonl"
    _append_line(path, "not json")
    _append_line(path, json.dumps({"context": "", "continuation": "y"}))  # empty field
    with caplog.at_level(logging.WARNING):
        task = load_task("qa_wikidata", data_dir=data_copy, strict=False)
    assert len(task) == 10 and task.counts["skipped_malformed"] == 2
    assert "skipped 2 malformed record(s)" in caplog.text and ":11:" in caplog.text


def test_fever_bad_label(data_copy):
    _append_line(data_copy / "fever" / "paper_dev.jsonl", json.dumps({"id": 9, "label": "MAYBE", "claim": "x"}))
    with pytest.raises(DataFormatError, match=r"paper_dev\.jsonl:9: label 'MAYBE' is not one of"):
        load_task("fever", data_dir=data_copy)


def test_hotpot_element_errors(data_copy, tiny_tokenizer):
    path = data_copy / "hotpotqa" / "hotpot_dev_v1_simplified.json"
    rows = json.loads(path.read_text())
    rows.insert(2, {"question": "no answer here"})
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"\(element 2\): missing field\(s\) \['answer'\]"):
        load_task("hotpotqa", tiny_tokenizer, data_dir=data_copy)
    path.write_text('{"question": "not a list"}')
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_task("hotpotqa", tiny_tokenizer, data_dir=data_copy)
    path.write_text('[{"question": "q", "answer": "a"},\n{"question": ')
    with pytest.raises(DataFormatError, match=r"hotpot_dev_v1_simplified\.json:2: not valid JSON"):
        load_task("hotpotqa", tiny_tokenizer, data_dir=data_copy)


def test_csv_row_errors(data_copy, tiny_tokenizer):
    path = data_copy / "bias_in_bios" / "per_profession" / "poet.csv"
    _append_line(path, "only one column")
    with pytest.raises(DataFormatError, match=r"poet\.csv:5: expected 3 columns"):
        load_task("bios_profession", tiny_tokenizer, data_dir=data_copy)
    path.write_text("text,gender\nx,Male\n")
    with pytest.raises(DataFormatError, match=r"poet\.csv:1: header .* lacks column\(s\) \['hard_text', 'profession'\]"):
        load_task("bios_profession", tiny_tokenizer, data_dir=data_copy)


def test_csv_line_numbers_count_multiline_fields(data_copy, tiny_tokenizer):
    path = data_copy / "bias_in_bios" / "per_profession" / "nurse.csv"
    path.write_text('hard_text,profession,gender\n"two\nlines",nurse,Male\n,nurse,Male\n')
    with pytest.raises(DataFormatError, match=r"nurse\.csv:4: empty value in column\(s\) \['hard_text'\]"):
        load_task("bios_profession", tiny_tokenizer, data_dir=data_copy)


def test_counterfact_bad_element_and_duplicate_case(data_copy):
    path = data_copy / "counterfact" / "mend_counterfact-val.json"
    rows = json.loads(path.read_text())
    rows.append({"case_id": "seven", "prompt": "p", "ground_truth": "g", "rephrase_prompt": "r"})
    path.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"\(element 2\): field 'case_id' must be int"):
        load_task("counterfact", data_dir=data_copy)
    rows[-1]["case_id"] = 100  # already in the train file
    path.write_text(json.dumps(rows))
    task = load_task("counterfact", data_dir=data_copy)
    assert task.counts["dropped_duplicate_case"] == 1 and task.counts["cases"] == 5
