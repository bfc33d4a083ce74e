"""The 20/80 split: seeded, stable under file order, other items and limit; limit = a prefix of the split."""

import random

import datasets
import pytest

from tensorllm.evaluation.splits import VAL_FRACTION, select_split, split_of


def _dataset(groups):
    return datasets.Dataset.from_dict({"id": [f"{g}/0" for g in groups], "group": list(groups),
                                       "prompt": ["p"] * len(groups), "answer": ["a"] * len(groups)})  # fmt: skip


GROUPS = [f"item-{i}" for i in range(5000)]


def test_fraction_is_about_twenty_percent():
    val = sum(split_of(g) == "val" for g in GROUPS)
    # Binomial(5000, 0.2): mean 1000, sd sqrt(5000*0.2*0.8) = 28.3; allow 4 sd
    assert abs(val - VAL_FRACTION * len(GROUPS)) < 4 * 28.3


def test_membership_ignores_file_order_other_items_and_limit():
    shuffled = GROUPS[:]
    random.Random(1).shuffle(shuffled)
    full = set(select_split(_dataset(GROUPS), "val")["group"])
    assert set(select_split(_dataset(shuffled), "val")["group"]) == full  # file order
    assert set(select_split(_dataset(GROUPS[:700]), "val")["group"]) == {g for g in GROUPS[:700] if g in full}  # subset
    assert set(select_split(_dataset(GROUPS), "val", limit=50)["group"]) <= full  # limit


def test_order_and_limit_are_prefixes_and_independent_of_file_order():
    shuffled = GROUPS[:]
    random.Random(2).shuffle(shuffled)
    a = select_split(_dataset(GROUPS), "test")["id"]
    b = select_split(_dataset(shuffled), "test")["id"]
    assert a == b  # the split's order is fixed by the hash, not by the file
    assert select_split(_dataset(shuffled), "test", limit=30)["id"] == a[:30]
    assert a[:10] != sorted(a)[:10]  # not file/lexical order: a random-looking sample


def test_val_and_test_partition_all():
    ds = _dataset(GROUPS[:400])
    val, test = set(select_split(ds, "val")["id"]), set(select_split(ds, "test")["id"])
    assert not val & test and val | test == set(select_split(ds, "all")["id"]) and len(val | test) == 400


def test_seed_changes_the_split():
    assert [split_of(g, seed=0) for g in GROUPS[:200]] != [split_of(g, seed=1) for g in GROUPS[:200]]
    assert [split_of(g, seed=3) for g in GROUPS[:200]] == [split_of(g, seed=3) for g in GROUPS[:200]]


def test_groups_stay_together():
    ds = datasets.Dataset.from_dict({"id": ["c1/0", "c1/1", "c2/0", "c2/1"], "group": ["c1", "c1", "c2", "c2"],
                                     "prompt": ["p"] * 4, "answer": ["a"] * 4})  # fmt: skip
    for split in ("val", "test"):
        groups = select_split(ds, split)["group"]
        assert all(groups.count(g) == 2 for g in set(groups))


def test_bad_arguments():
    ds = _dataset(GROUPS[:10])
    with pytest.raises(ValueError, match="Unknown split 'train'; allowed: \\['val', 'test', 'all'\\]"):
        select_split(ds, "train")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        select_split(ds, "val", limit=0)
