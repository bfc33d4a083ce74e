"""What to evaluate (:class:`EvalConfig`) and what came out (:class:`EvalResult`)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data.registry import SOURCES, check_dataset
from .hidden_cache import DEFAULT_MEMORY_BUDGET
from .prompt_format import check_chat_template_option
from .splits import DEFAULT_SEED, check_split_args


@dataclass
class EvalConfig:
    """One evaluation: a dataset split, how to run it, and (optionally) the layer-L cache.

    * ``dataset``: a name from :func:`tensorllm.evaluation.dataset_names`, or your own data: a data file, a
      save_to_disk folder or a spec file (:mod:`.data.user_spec`).
    * ``split``: ``"val"`` (20%, for selection), ``"test"`` (80%, for reporting) or ``"all"``;
      ``limit``: the first N items of the split (its fixed hash order); ``seed`` changes the split.
    * ``generate``: for generative sets, compute accuracy by greedy generation (slow: full forwards of
      every new token). With False, ``accuracy`` is None for them and ``top1_accuracy`` is the cheap proxy.
      Classification sets (fever, bios_profession) always get their accuracy from the teacher-forced pass.
    * ``match_prompt``: also search the prompt for the answer, as LASER does (inflates accuracy; off by default).
    * ``chat_template``: give the model each prompt as a user turn of the tokenizer's chat template (off by
      default: plain prompts, LASER's protocol); see :mod:`.prompt_format`. Recorded in the result, and by the
      registered pyfunc model, which formats requests the same way.
    * ``first_changed_layer``: the first decoder layer the evaluated model's variant changed (``None``: no
      promise, full forwards). With L set, the hidden states entering layer L are taken from the cache
      (computed once) and only layers L.. run for the teacher-forced pass. Must be true of the model!
    * ``fill_layers``: with ``first_changed_layer=None`` (the base model), record the hidden states entering
      each of these layers during the full pass and cache them: one base pass prepares a whole sweep.
    * ``cache_dir``: folder for the hidden-state cache files (None: memory only); ``cache_memory_bytes``
      its in-memory budget. ``model_id``: an identity of the base weights (e.g. a checkpoint sha256)
      added to the cache key; the prefix weights are fingerprinted in any case.
    * ``data_dir``/``source``/``strict``/``task_options``: passed to :func:`~.data.load_task`.
    """

    dataset: str
    split: str = "val"
    limit: int | None = None
    batch_size: int = 16
    seed: int = DEFAULT_SEED
    generate: bool = True
    match_prompt: bool = False
    chat_template: bool = False
    first_changed_layer: int | None = None
    fill_layers: tuple[int, ...] = ()
    cache_dir: Path | None = None
    cache_memory_bytes: int = DEFAULT_MEMORY_BUDGET
    model_id: str | None = None
    data_dir: Path | None = None
    source: str = "local"
    strict: bool = True
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_dataset(self.dataset)
        check_split_args(self.split, self.limit)
        check_chat_template_option(self.chat_template)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        layer = self.first_changed_layer
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise ValueError(f"first_changed_layer must be None or an integer >= 0, got {layer!r}")
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in self.fill_layers):
            raise ValueError(f"fill_layers must be integers >= 0, got {self.fill_layers!r}")
        if self.fill_layers and layer is not None:
            raise ValueError("fill_layers is for the base model's full pass; leave first_changed_layer unset")
        self.fill_layers = tuple(self.fill_layers)
        if self.source not in SOURCES:
            raise ValueError(f"Unknown source {self.source!r}; allowed: {list(SOURCES)}")
        if isinstance(self.cache_memory_bytes, bool) or not isinstance(self.cache_memory_bytes, int) or self.cache_memory_bytes < 0:
            raise ValueError(f"cache_memory_bytes must be an integer >= 0, got {self.cache_memory_bytes!r}")
        for name in ("cache_dir", "data_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)):
                    raise ValueError(f"{name} must be a path or None, got {value!r}")
                setattr(self, name, Path(value).expanduser())
        if not isinstance(self.task_options, dict):
            raise ValueError(f"task_options must be a dict of loader options, got {self.task_options!r}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class EvalResult:
    """Aggregate metrics of one evaluation (see :mod:`tensorllm.evaluation` for their definitions).

    ``accuracy`` is None for a generative set evaluated with ``generate=False``; ``accuracy_kind`` says
    how it was measured (``"generation"`` or ``"classification"``). Intervals are 95% (Wilson for
    proportions, normal approximation for the loss). ``layer_cache`` is ``"off"`` (no first_changed_layer), ``"fill"`` (a base pass that filled ``fill_layers``),
    ``"hit"``/``"miss"`` (hidden states reused / computed now), or ``"unsupported"`` (full forwards).
    """

    dataset: str
    split: str
    n: int
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    accuracy_kind: str | None
    top1_accuracy: float
    top1_accuracy_ci: tuple[float, float]
    loss: float
    loss_ci: tuple[float, float]
    examples_per_second: float
    seconds: float
    limit: int | None = None
    seed: int = DEFAULT_SEED
    generate: bool = True
    match_prompt: bool = False
    chat_template: bool = False
    first_changed_layer: int | None = None
    layer_cache: str = "off"
    model_id: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    task_counts: dict[str, int] = field(default_factory=dict)
    examples_path: str | None = None
    #: teacher forced: every answer token is the argmax given the gold tokens before it (with its 95% Wilson interval)
    exact_match_accuracy: float | None = None
    exact_match_accuracy_ci: tuple[float, float] | None = None
    #: how generation ran: ``mode`` "full" (token by token) or "drafts" (the base's continuations checked, see
    #: :mod:`.drafts`), rows, and the tokens decoded one at a time; None without generation
    generation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists, NaN as None)."""
        return _json_safe(asdict(self))
