"""A memory-bounded store of the hidden states entering layer L, spilled to disk as safetensors.

An entry is the list of per-batch tensors ``[B, T, d_model]`` (one per batch of the evaluation's layout)
plus the output format of layer L-1 (see :class:`~.layer_skip.LayerInput`). Entries live in an LRU
dict capped at ``memory_budget_bytes``; with a ``disk_dir`` every entry is also written there (write-
through, atomically) as ``<key>.safetensors``, so it survives eviction, process restarts and is shared
by workers (Ray/Prefect) that point at the same folder. Without a ``disk_dir`` an evicted entry is
simply recomputed next time.

The key (built by the evaluator) is a hash of everything the tensors depend on: the model's prefix
weights (fingerprint and ``model_id``), dtype and device type, the layer, and the exact batch layout
(token ids, padding, grouping), which in turn covers dataset, split, seed, limit and tokenizer.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .layer_skip import LayerInput

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 1 << 30  # 1 GiB: SmolLM2 on 1,000 prompts of ~60 tokens at one layer is ~140 MB


@dataclass
class CacheStats:
    """How the cache answered: counts of memory hits, disk hits, misses, and entries written to disk."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    disk_writes: int = 0


def entry_bytes(entry: list[LayerInput]) -> int:
    return sum(x.hidden.numel() * x.hidden.element_size() for x in entry)


class HiddenStateCache:
    """LRU in-memory cache of per-batch layer inputs with a byte budget and an optional disk folder."""

    def __init__(self, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET, disk_dir: str | os.PathLike | None = None):
        if isinstance(memory_budget_bytes, bool) or not isinstance(memory_budget_bytes, int) or memory_budget_bytes < 0:
            raise ValueError(f"memory_budget_bytes must be an integer >= 0 (0 = disk only), got {memory_budget_bytes!r}")
        self.memory_budget_bytes = memory_budget_bytes
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else None
        self._memory: OrderedDict[str, list[LayerInput]] = OrderedDict()
        self._bytes = 0
        self.stats = CacheStats()

    @property
    def memory_bytes(self) -> int:
        """Bytes currently held in memory."""
        return self._bytes

    def _path(self, key: str) -> Path:
        assert self.disk_dir is not None
        return self.disk_dir / f"{key}.safetensors"

    def get(self, key: str, device: torch.device | str | None = None) -> list[LayerInput] | None:
        """The entry for ``key`` (moved to ``device``), from memory or disk, or None."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
        elif self.disk_dir is not None and self._path(key).is_file():
            entry = self._read(self._path(key))
            self.stats.disk_hits += 1
            self._remember(key, entry)
        else:
            self.stats.misses += 1
            return None
        if device is not None:
            entry = [LayerInput(x.hidden.to(device), x.tuple_len) for x in entry]
        return entry

    def put(self, key: str, entry: list[LayerInput]) -> None:
        """Store an entry: write it to disk (if a folder is set) and keep it in memory within the budget."""
        entry = [LayerInput(x.hidden.detach().to("cpu", copy=False).contiguous(), x.tuple_len) for x in entry]
        if self.disk_dir is not None:
            self._write(self._path(key), entry)
            self.stats.disk_writes += 1
        self._remember(key, entry)

    def clear(self) -> None:
        """Drop the in-memory entries (the disk files stay)."""
        self._memory.clear()
        self._bytes = 0

    def _remember(self, key: str, entry: list[LayerInput]) -> None:
        size = entry_bytes(entry)
        if key in self._memory:
            self._bytes -= entry_bytes(self._memory.pop(key))
        if size > self.memory_budget_bytes:
            log.info(
                "hidden-state entry of %.1f MB exceeds the memory budget (%.1f MB): %s",
                size / 1e6,
                self.memory_budget_bytes / 1e6,
                "kept on disk only" if self.disk_dir is not None else "not cached (set a cache_dir to spill to disk)",
            )
            return
        while self._memory and self._bytes + size > self.memory_budget_bytes:
            old_key, old = self._memory.popitem(last=False)
            self._bytes -= entry_bytes(old)
            log.debug("evicted hidden-state entry %s from memory", old_key[:12])
        self._memory[key] = entry
        self._bytes += size

    @staticmethod
    def _write(path: Path, entry: list[LayerInput]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"batch_{i:05d}": x.hidden for i, x in enumerate(entry)}
        metadata = {"n_batches": str(len(entry)), "tuple_len": str(entry[0].tuple_len if entry else 0)}
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)

    @staticmethod
    def _read(path: Path) -> list[LayerInput]:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        n = int(metadata.get("n_batches", len(tensors)))
        tuple_len = int(metadata.get("tuple_len", 0))
        missing = [f"batch_{i:05d}" for i in range(n) if f"batch_{i:05d}" not in tensors]
        if missing:
            raise ValueError(f"hidden-state cache file {path} is incomplete (missing {missing[:3]}); delete it")
        return [LayerInput(tensors[f"batch_{i:05d}"], tuple_len) for i in range(n)]


_DEFAULT_CACHES: dict[tuple[str | None, int], HiddenStateCache] = {}


def default_cache(disk_dir: str | os.PathLike | None, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> HiddenStateCache:
    """The process-wide cache for ``(disk_dir, budget)``: repeated ``evaluate`` calls of a sweep share it."""
    key = (str(Path(disk_dir).expanduser().resolve()) if disk_dir is not None else None, memory_budget_bytes)
    if key not in _DEFAULT_CACHES:
        _DEFAULT_CACHES[key] = HiddenStateCache(memory_budget_bytes, disk_dir)
    return _DEFAULT_CACHES[key]
