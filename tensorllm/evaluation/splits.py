"""Seeded, stable 20% validation / 80% test split, and ``limit`` = the first N items of a split.

An item's split depends only on its ``group`` (a stable, content-derived key) and the seed: a hash
``u = sha256(seed, group) / 2**64`` in [0, 1) puts it in ``val`` when ``u < 0.2``. So the same item
always lands in the same split, whatever the file order, the other items, or the limit. Within a split,
items are ordered by ``(u, id)``: a pseudo-random but fixed order, so ``limit=N`` is a random-looking
sample (not "the first N lines of the file", which are often sorted by relation or type), and a
larger limit always contains a smaller one. Hyper-parameter selection must use ``val`` only (LASER);
``test`` is for reporting. A dataset with a ``split`` column (your own data with a ``split_field``) keeps
the split its records name; the order within a split is the same hash order.
"""

from __future__ import annotations

import hashlib

import datasets

SPLITS = ("val", "test", "all")
VAL_FRACTION = 0.2  # LASER: validation = 20%, test = 80%
DEFAULT_SEED = 0


def unit_hash(group: str, seed: int = DEFAULT_SEED) -> float:
    """A uniform-looking number in [0, 1) fixed by ``(seed, group)``."""
    digest = hashlib.sha256(f"{seed}\x1f{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(group: str, seed: int = DEFAULT_SEED, val_fraction: float = VAL_FRACTION) -> str:
    """``"val"`` or ``"test"`` for an item group."""
    return "val" if unit_hash(group, seed) < val_fraction else "test"


def check_split_args(split: str, limit: int | None, val_fraction: float = VAL_FRACTION) -> None:
    """Raise a clear error for a bad split name, limit or fraction."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; allowed: {list(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None (all items), got {limit!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")


def select_split(
    dataset: datasets.Dataset,
    split: str,
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = VAL_FRACTION,
) -> datasets.Dataset:
    """The items of ``split`` (``val``, ``test`` or ``all``) in their fixed order, at most ``limit`` of them."""
    check_split_args(split, limit, val_fraction)
    keyed = []
    given = dataset["split"] if "split" in dataset.column_names else None  # the records' own split
    for index, (group, item_id) in enumerate(zip(dataset["group"], dataset["id"])):
        u = unit_hash(group, seed)
        in_val = given[index] == "val" if given is not None else u < val_fraction
        if split == "all" or (split == "val") == in_val:
            keyed.append((u, item_id, index))
    keyed.sort()
    indices = [index for _, _, index in keyed[:limit]]
    return dataset.select(indices)
