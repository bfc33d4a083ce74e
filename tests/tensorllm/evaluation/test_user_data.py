"""Your own dataset: references, specs, the loaders (jsonl, JSON, CSV, save_to_disk, a dataset id read by
``datasets.load_dataset``), splits, digests, and evaluate on a tiny model; bad specs fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from tensorllm.evaluation import EvalConfig, evaluate, load_task
from tensorllm.evaluation.data import dataset_digest
from tensorllm.evaluation.data.user_spec import canonical_reference, dataset_label
from tensorllm.evaluation.splits import select_split

ROOT = Path(__file__).resolve().parents[3]
CAPITALS = ROOT / "examples" / "capitals.jsonl"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def qa(n: int, **extra) -> list[dict]:
    return [{"question": f"What is {i} plus one? It is", "gold": str(i + 1), **extra} for i in range(n)]


def spec_file(folder: Path, text: str, name: str = "my.dataset.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_the_shipped_example_is_50_generative_items_split_20_80():
    task = load_task(str(CAPITALS))
    assert (task.name, task.kind, len(task), task.max_new_tokens) == ("capitals", "generate", 50, 10)
    val, test = select_split(task.dataset, "val"), select_split(task.dataset, "test")
    # the built-in hash split: about 20% of 50 (10 expected; 13 here), and disjoint, together all items
    assert 5 <= len(val) <= 16 and len(val) + len(test) == 50 and not set(val["id"]) & set(test["id"])
    assert load_task(str(CAPITALS)).dataset["id"] == task.dataset["id"]  # content-derived, stable ids


def test_a_spec_file_renames_fields_and_its_split_field_decides_the_split(tmp_path):
    records = [{**r, "part": "val" if i < 4 else "test"} for i, r in enumerate(qa(10))]
    write_jsonl(tmp_path / "sums.jsonl", records)
    spec = spec_file(tmp_path, "path: sums.jsonl\nprompt_field: question\nanswer_field: gold\nsplit_field: part\n"
                               "max_new_tokens: 3\n")
    task = load_task(str(spec))
    assert task.name == "my" and task.max_new_tokens == 3  # the file name up to its first dot
    val = select_split(task.dataset, "val")
    assert sorted(val["answer"], key=int) == ["1", "2", "3", "4"]  # exactly the records marked val
    assert len(select_split(task.dataset, "test")) == 6 and len(select_split(task.dataset, "val", limit=2)) == 2


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_json_list_and_csv_files(tmp_path, fmt):
    records = qa(6)
    path = tmp_path / f"sums.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("question,gold\n" + "".join(f"{r['question']},{r['gold']}\n" for r in records))
    spec = spec_file(tmp_path, f"name: sums\npath: sums.{fmt}\nprompt_field: question\nanswer_field: gold\n")
    task = load_task(str(spec))
    assert task.name == "sums" and task.dataset["answer"] == [r["gold"] for r in records]


def test_multiple_choice_with_per_record_options_is_lettered(tmp_path):
    rows = [{"q": "Which is a colour?", "options": ["red", "dog", "tree"], "a": 0},
            {"q": "Which is an animal?", "options": ["red", "dog"], "a": "B"},
            {"q": "Which is a plant?", "options": ["red", "dog", "tree"], "a": "tree"}]
    write_jsonl(tmp_path / "mc.jsonl", rows)
    task = load_task(str(spec_file(tmp_path, "path: mc.jsonl\nprompt_field: q\nanswer_field: a\nkind: choice\n"
                                             "choices_field: options\n")))
    assert task.kind == "classify" and task.candidates == ("A", "B", "C")  # up to the most options shown
    assert task.dataset["answer"] == ["A", "B", "C"]  # an index, a letter and an option's text
    assert task.dataset["prompt"][0] == "Which is a colour?\nA. red\nB. dog\nC. tree\nAnswer:"


def test_save_to_disk_folder_and_a_dataset_id_read_by_load_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # load_dataset writes arrow files
    rows = {"question": [r["question"] for r in qa(8)], "gold": [r["gold"] for r in qa(8)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "saved"))
    saved = load_task(str(spec_file(tmp_path, "path: saved\nprompt_field: question\nanswer_field: gold\n")))
    assert len(saved) == 8 and saved.name == "my"
    # hub: goes through datasets.load_dataset(id, split=...); offline, a folder of data files is an id it resolves
    (tmp_path / "repo").mkdir()
    write_jsonl(tmp_path / "repo" / "train.jsonl", qa(5))
    hub = spec_file(tmp_path, f"name: hubbed\nhub: {tmp_path / 'repo'}\nhub_split: train\nprompt_field: question\n"
                              "answer_field: gold\n", name="hub.yaml")
    task = load_task(str(hub))
    assert task.name == "hubbed" and task.source.startswith("hub:") and len(task) == 5
    assert len(dataset_digest(str(hub))) == 64


def test_a_hub_id_offline_and_not_cached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    spec = spec_file(tmp_path, "hub: someone/not-in-the-cache\n")
    with pytest.raises(ValueError, match=r"field 'hub': 'someone/not-in-the-cache' .* cannot be loaded: .*; allowed: "
                                         r"a dataset id in the local Hugging Face cache when offline"):
        load_task(str(spec))


def test_the_digest_follows_the_content_and_the_spec(tmp_path):
    data = write_jsonl(tmp_path / "sums.jsonl", qa(4, prompt="x", answer="y"))
    before = dataset_digest(str(data))
    spec = spec_file(tmp_path, "path: sums.jsonl\nprompt_field: question\nanswer_field: gold\n")
    assert dataset_digest(str(spec)) != before  # the same bytes read with other fields: another dataset
    write_jsonl(data, qa(4, prompt="x", answer="z"))
    assert dataset_digest(str(data)) != before  # edited data is never answered from a cache


def test_names_labels_and_canonical_references(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "sums.v2.jsonl", qa(3, prompt="p", answer="a"))
    monkeypatch.chdir(tmp_path)
    assert dataset_label("sums.v2.jsonl") == "sums" and dataset_label("fever") == "fever"
    assert canonical_reference("sums.v2.jsonl") == str(tmp_path / "sums.v2.jsonl")  # Ray workers run elsewhere
    assert canonical_reference("qa_wikidata") == "qa_wikidata"


def test_strict_false_skips_and_counts_bad_records(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}, {"prompt": "c"}, "not json",
                                              {"prompt": "e", "answer": 5}, {"prompt": "a", "answer": "b"}])
    task = load_task(str(path), strict=False)
    assert len(task) == 2 and task.counts["skipped_malformed"] == 2 and task.counts["merged_duplicates"] == 1
    assert task.dataset["answer"] == ["b", "5"]  # a number is an answer too (written as text)


BAD = [
    ("missing field", "d.jsonl", [{"prompt": "a"}], None, r"d\.jsonl:1: missing field\(s\) \['answer'\]"),
    ("empty file", "d.jsonl", [], None, r"d\.jsonl: no usable record .* fields \['answer', 'prompt'\]"),
    ("wrong type", "d.jsonl", [{"prompt": ["a"], "answer": "b"}], None, r"d\.jsonl:1: field 'prompt' must be str"),
    ("bad split value", "d.jsonl", [{"prompt": "a", "answer": "b", "s": "train"}], "path: d.jsonl\nsplit_field: s\n",
     r"d\.jsonl:1: field 's' is 'train'; allowed: \['test', 'val', 'validation'\]"),
    ("unknown spec field", "d.jsonl", [{"prompt": "a", "answer": "b"}], "path: d.jsonl\nprompt_feild: q\n",
     r"my\.dataset\.yaml: unknown field 'prompt_feild'; allowed: name, path, hub"),
    ("wrong kind", "d.jsonl", [{"prompt": "a", "answer": "b"}], "path: d.jsonl\nkind: essay\n",
     r"my\.dataset\.yaml: field 'kind': Input should be 'generate' or 'choice'"),
    ("path and hub", "d.jsonl", [{"prompt": "a", "answer": "b"}], "path: d.jsonl\nhub: a/b\n",
     r"give exactly one of path .* and hub"),
    ("choice without choices", "d.jsonl", [{"prompt": "a", "answer": "b"}], "path: d.jsonl\nkind: choice\n",
     r"kind choice needs exactly one of choices_field .* and choices"),
    ("answer not a choice", "d.jsonl", [{"prompt": "a", "answer": "maybe"}], "path: d.jsonl\nkind: choice\n"
     "choices: ['yes', 'no']\n", r"d\.jsonl:1: answer 'maybe' is not one of choices \['yes', 'no'\]"),
    ("unquoted yes/no", "d.jsonl", [{"prompt": "a", "answer": "yes"}], "path: d.jsonl\nkind: choice\n"
     "choices: [yes, no]\n", r"field 'choices': YAML read \[True, False\] as booleans .* allowed: quoted strings"),
    ("built-in name", "fever.jsonl", [{"prompt": "a", "answer": "b"}], None, r"its name 'fever' is a built-in"),
    ("spec not a mapping", "d.jsonl", [{"prompt": "a", "answer": "b"}], "- path\n", r"a dataset spec is a YAML mapping"),
    ("missing data file", "d.jsonl", [{"prompt": "a", "answer": "b"}], "path: gone.jsonl\n",
     r"field 'path': .*gone\.jsonl does not exist"),
]


@pytest.mark.parametrize("what, data_name, records, spec, match", BAD, ids=[b[0] for b in BAD])
def test_a_bad_dataset_is_one_line_naming_the_field(tmp_path, what, data_name, records, spec, match):
    data = write_jsonl(tmp_path / data_name, records)
    ref = spec_file(tmp_path, spec) if spec is not None else data
    with pytest.raises(ValueError, match=match) as info:
        load_task(str(ref))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ref, match", [("squad", r"Unknown dataset 'squad'; allowed: \['qa_wikidata'.*a data file"),
                                        ("notes.txt", r"Unknown dataset 'notes\.txt'; allowed:"),
                                        ("gone.jsonl", r"dataset 'gone\.jsonl': no such file or folder")])
def test_an_unknown_reference_lists_what_is_allowed(ref, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if ref == "notes.txt":
        (tmp_path / ref).write_text("x")
    with pytest.raises(ValueError, match=match):
        EvalConfig(dataset=ref)


def test_evaluate_a_user_file_on_a_tiny_model(tiny_llama, tiny_tokenizer, tmp_path):
    out = tmp_path / "rows.jsonl"
    result = evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset=str(CAPITALS), split="test", limit=8, batch_size=4),
                      examples_out=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.n == len(rows) == 8 and result.accuracy_kind == "generation" and result.task_counts["items"] == 50
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in rows) / 8)
    assert {r["answer"] for r in rows} <= set(load_task(str(CAPITALS)).dataset["answer"])


def test_evaluate_a_fixed_choice_set_on_a_tiny_model(tiny_llama, tiny_tokenizer, tmp_path):
    rows = [{"claim": f"claim number {i}", "label": "true" if i % 2 else "false"} for i in range(12)]
    write_jsonl(tmp_path / "claims.jsonl", rows)
    spec = spec_file(tmp_path, "path: claims.jsonl\nprompt_field: claim\nanswer_field: label\nkind: choice\n"
                               "choices: ['true', 'false']\n", name="claims.yaml")
    result = evaluate(tiny_llama, tiny_tokenizer, EvalConfig(dataset=str(spec), split="all"))
    # " true" and " false" are single tokens of the tiny tokenizer: accuracy is the argmax between the two
    assert result.accuracy_kind == "classification" and result.n == 12 and 0 <= result.accuracy <= 1
