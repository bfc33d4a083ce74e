"""Evaluation of (variant) language models on the paper's datasets, LASER's protocol.

Public API (what the CLI and the Prefect tasks call)::

    from tensorllm.evaluation import evaluate, EvalConfig, EvalResult, load_task, compare_paired

    result = evaluate(model, tokenizer,
                      EvalConfig(dataset="fever", split="val", limit=64, batch_size=16,
                                 generate=True, first_changed_layer=None, cache_dir=None, model_id=None),
                      examples_out="runs/base/fever-val.jsonl")
    result.accuracy, result.accuracy_ci, result.n, result.loss, result.top1_accuracy
    result.examples_per_second, result.to_dict()
    cmp = compare_paired("runs/base/fever-val.jsonl", "runs/variant/fever-val.jsonl")
    cmp.accuracy_diff, cmp.mcnemar_p, cmp.loss_diff, cmp.loss_diff_ci

* ``evaluate(model, tokenizer, config, *, examples_out=None, task=None, cache=None) -> EvalResult``
* ``EvalConfig(dataset, split="val", limit=None, batch_size=16, seed=0, generate=True, match_prompt=False,
  chat_template=False, first_changed_layer=None, cache_dir=None, cache_memory_bytes=1 GiB, model_id=None, data_dir=None,
  source="local", strict=True, task_options={})``
* ``load_task(name, tokenizer=None, *, data_dir=None, source="local", strict=True, **options) -> Task``;
  ``dataset_names()`` -> ``["qa_wikidata", "hotpotqa", "fever", "bios_profession", "counterfact"]``
  ``name`` (and ``EvalConfig.dataset``) may also be your own data: ``"examples/capitals.jsonl"`` (fields prompt,
  answer) or a ``.yaml`` spec (:mod:`.data.user_spec`)
* ``compare_paired(base, variant, metric="correct") -> PairedComparison``
* ``select_split(dataset, split, limit=None, seed=0)``, ``wilson_interval``, ``mcnemar_exact``, ``mean_interval``
* ``HiddenStateCache(memory_budget_bytes, disk_dir)``; ``default_device()``, ``default_dtype(device)``

Metrics (per LASER/TensorLLM):

* ``accuracy``: generative sets (qa_wikidata, hotpotqa, counterfact): greedy generation of up to 10/15/10
  new tokens, correct if the stripped answer occurs case-insensitively in the **continuation** (LASER
  also searches the prompt: ``match_prompt=True``). Classification sets (fever, bios_profession): argmax
  over the candidate tokens (" true"/" false"; " <profession>") right after the prompt. With a 95% Wilson
  interval (``accuracy_ci``) and ``n``.
* ``top1_accuracy``: teacher-forced argmax of the next token after the prompt == the answer's first token.
* ``loss``: per example the mean NLL of the answer tokens of ``prompt + " " + answer`` (teacher forced,
  float32 log-softmax), then the mean over examples; ``loss_ci`` its 95% normal interval.
* Prompts are given to the model as plain text (LASER's protocol); ``chat_template=True`` wraps each in the
  tokenizer's chat template as a user turn (:mod:`.prompt_format`, shared with the served pyfunc model).
* Splits: a seeded hash of each item's group puts 20% in ``val`` (for selection) and 80% in ``test``.

Speed: batches are left-padded (explicit position ids), run on the model's own device and dtype. For a
sweep over variants that change only layers >= L, pass ``first_changed_layer=L``: the hidden states
entering layer L are computed once per (prefix weights, data layout) and kept in a memory-bounded cache
(spilled to ``cache_dir`` as safetensors); the teacher-forced pass (loss, top-1, classification accuracy)
then runs only layers L..end. Generation (accuracy of generative sets) always runs the full model.
"""

from .config import EvalConfig, EvalResult
from .data import DataFormatError, Task, dataset_names, load_task
from .evaluate import evaluate
from .hidden_cache import HiddenStateCache, default_cache
from .paired import PairedComparison, compare_paired
from .records import ExampleRecord, read_examples, write_examples
from .runtime import default_device, default_dtype, parse_dtype
from .splits import SPLITS, select_split, split_of
from .stats import mcnemar_exact, mean_interval, wilson_interval

__all__ = [
    "DataFormatError",
    "EvalConfig",
    "EvalResult",
    "ExampleRecord",
    "HiddenStateCache",
    "PairedComparison",
    "SPLITS",
    "Task",
    "compare_paired",
    "dataset_names",
    "default_cache",
    "default_device",
    "default_dtype",
    "evaluate",
    "load_task",
    "mcnemar_exact",
    "mean_interval",
    "parse_dtype",
    "read_examples",
    "select_split",
    "split_of",
    "wilson_interval",
    "write_examples",
]
