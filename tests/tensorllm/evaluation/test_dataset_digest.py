"""dataset_digest: the content key of a dataset's files, part of every evaluation's cache key (issue 9)."""

from __future__ import annotations

import shutil

import pytest

from tensorllm.evaluation.data import dataset_digest
from tensorllm.evaluation.data.registry import DATASETS, default_data_dir


def test_digest_follows_the_content_not_the_path(tmp_path):
    copy = tmp_path / "data"
    folder = DATASETS["fever"].folder
    shutil.copytree(default_data_dir() / folder, copy / folder)
    original = dataset_digest("fever")
    assert dataset_digest("fever", data_dir=copy) == original  # same bytes elsewhere: same key
    data_file = next(p for p in (copy / folder).iterdir() if p.suffix == ".jsonl")
    with open(data_file, "a") as handle:
        handle.write("\n")  # one byte more: an edited dataset must never be answered from a cache
    assert dataset_digest("fever", data_dir=copy) != original


def test_every_registered_dataset_has_files_to_digest():
    digests = {name: dataset_digest(name) for name in DATASETS}
    assert len(set(digests.values())) == len(DATASETS)  # distinct datasets, distinct keys


def test_unknown_dataset_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'nope'; allowed"):
        dataset_digest("nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_digest("fever", data_dir=tmp_path)
