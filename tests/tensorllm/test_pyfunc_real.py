"""Served = evaluated on the real SmolLM2-135M-Instruct, chat template on (its real ChatML template).

The base model is registered as a version (no artifacts) whose run records ``chat_template=True``, loaded
with ``mlflow.pyfunc.load_model``, and its batched predictions on WikidataQA validation prompts are compared
with what ``evaluate`` generated for them under the same option. Marked ``real_model`` (needs the converted
folder; about a minute on 2 busy CPU cores).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real_model

LIMIT = 4  # prompts of different lengths: the batch is padded


def test_smollm2_chat_served_equals_evaluated(tmp_path, monkeypatch):
    import mlflow

    from tensorllm.checkpoint import Checkpoint
    from tensorllm.evaluation import EvalConfig, evaluate, read_examples
    from tensorllm.models import cache_dir
    from tensorllm.registry import Registry, VariantRecord

    folder = cache_dir() / "smollm2-135m-instruct-hf"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"SmolLM2 folder {folder} not found (run tensorllm.models.resolve_model('smollm2-135m'))")
    registry = Registry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test-pyfunc-real")
    record = VariantRecord(key="smollm2-chat", name="baseline", base_model=str(folder),
                           params={"chat_template": True}, tags={"kind": "baseline",
                                                                  "model_identity": Checkpoint(folder).identity()})
    version = registry.register_variant(record, "smollm2-chat")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    py = mlflow.pyfunc.load_model(f"models:/smollm2-chat/{version}").unwrap_python_model()
    assert py.chat_template is True
    assert py.tokenizer.decode(py.encode("Hi")).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    config = EvalConfig(dataset="qa_wikidata", split="val", limit=LIMIT, batch_size=LIMIT, chat_template=True)
    evaluate(py.model, py.tokenizer, config, examples_out=tmp_path / "examples.jsonl")
    rows = read_examples(tmp_path / "examples.jsonl")
    prompts = [r["prompt"] for r in rows]
    assert len({len(py.encode(p)) for p in prompts}) > 1  # padded rows in the batch
    served = py.predict(None, prompts, params={"max_new_tokens": 10})  # WikidataQA's generation length
    assert served == [r["prediction"].strip() for r in rows]
    assert all(served)  # a chat model answers something (min one new token, and not only special tokens)
