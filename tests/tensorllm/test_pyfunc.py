"""Registered versions as MLflow pyfunc models (tensorllm.pyfunc_model + Registry), on a real sqlite store.

A tiny random Llama (4 heads, 2 layers, a word-level tokenizer with a small chat template) is saved to
disk, its layer 1 is decomposed with ``decompose_layer``, and the variant is registered and promoted.
The tests load it by alias with ``mlflow.pyfunc.load_model`` and check that it generates what
``tensorllm.export.variant_model`` generates (and not what the base model computes), that it formats
prompts as the evaluation that scored it (chat template off and on) and generates what the evaluation
generates, that batched predictions equal one-at-a-time decoding, that the wheel of tensorllm it carries
installs and imports, serve it with a real ``mlflow models serve --env-manager local`` (integration), and
check the base-model identity rule and version descriptions. No mocks, no network (``HF_HUB_OFFLINE=1``
from tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

MODEL = "tiny-llama-pyfunc"
PROMPT = "w5 w17 w9 w30"   # the tiny tokenizer's words are w3..w63 (see tiny_models.tiny_tokenizer)
# enough for the chat path to differ from the plain one; {{ }} is Jinja, evaluated by the tokenizer
CHAT_TEMPLATE = ("{% for m in messages %}<s> w4 {{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %} w3{% endif %}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model folder with a chat-template tokenizer, artifact folder of layer 1 at ranks 16x4x2)."""
    from tensorllm.tiny_models import save_tiny_with_tokenizer
    from transformers import AutoTokenizer

    from tensorllm.decompose import decompose_layer

    root = tmp_path_factory.mktemp("pyfunc_model")
    folder, _ = save_tiny_with_tokenizer("llama", root / "tiny-llama")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    # MHA, kv grouping: tensor (d_model=32, d_head=8, slices=4, groups=4); low ranks change the layer a lot
    (record,) = decompose_layer(str(folder), layer=1, rank_list=[(16, 4, 2)], out_root=root / "artifacts",
                                n_iter_max=5)
    return folder, Path(record.artifact)


def record_for(folder: Path, artifact: Path, key: str, identity: str, **params):
    from tensorllm.registry import VariantRecord

    return VariantRecord(key=key, name=f"layer001-{key}", base_model=str(folder), artifacts=[str(artifact)],
                         params={"layer": 1, "ranks": [16, 4, 2], **params}, metrics={"val_accuracy": 0.5},
                         tags={"kind": "variant", "model_identity": identity})


@pytest.fixture(scope="module")
def registered(tiny, tmp_path_factory):
    """(Registry on its own sqlite store, version number) of the variant, promoted to champion."""
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.registry import Registry

    folder, artifact = tiny
    db = tmp_path_factory.mktemp("pyfunc_store") / "mlflow.db"
    registry = Registry(tracking_uri=f"sqlite:///{db}", experiment="test-pyfunc")  # absolute: 4 slashes
    t = time.perf_counter()
    version = registry.register_variant(
        record_for(folder, artifact, "k-1", Checkpoint(folder).identity()), MODEL)
    print(f"register_variant (run + pyfunc model + version): {time.perf_counter() - t:.2f} s")
    registry.set_champion(MODEL, version, {"reason": "test"})
    return registry, version


@pytest.fixture
def store_env(registered, monkeypatch):
    """Point MLflow's process-wide URIs at the test store through the environment only (restored after),
    and load models on the CPU."""
    import mlflow

    registry, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("TENSORLLM_DEVICE", "cpu")  # the references below run on the CPU, also where a GPU exists
    assert mlflow.get_tracking_uri() == registry.tracking_uri, "something set mlflow's global tracking URI"
    return registry.tracking_uri


def test_version_is_a_small_pyfunc_model(registered, tiny):
    import yaml

    from tensorllm.pyfunc_model import pip_requirements

    registry, version = registered
    info = registry.version_info(MODEL, version)
    assert info["source"].startswith("models:/m-")
    logged = registry.client.get_logged_model(info["source"].removeprefix("models:/"))
    assert logged.source_run_id == info["run_id"]
    root = Path(logged.artifact_location)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    art = tiny[1].name
    wheels = [f for f in files if f.startswith("wheels/")]
    assert len(wheels) == 1 and wheels[0].startswith("wheels/tensorllm-0.1.0+g") and wheels[0].endswith("-py3-none-any.whl")
    # MLflow adds registered_model_meta once a version points at the model
    assert set(files) - {"registered_model_meta"} == {
        "MLmodel", "pyfunc_entry.py", "code/pyfunc_model.py", "conda.yaml", "python_env.yaml", "requirements.txt",
        "artifacts/variant/variant.json", f"artifacts/variant/artifacts/{art}/artifact.json",
        f"artifacts/variant/artifacts/{art}/tensors.safetensors", wheels[0]}
    weights = [f for f in files if f.endswith((".safetensors", ".bin", ".pt", ".pth", ".pkl"))]
    assert weights == [f"artifacts/variant/artifacts/{art}/tensors.safetensors"]  # the factors, no base weights
    # what a fresh environment installs: the pinned stack, then tensorllm from the wheel inside the model
    requirements = (root / "requirements.txt").read_text().split()
    assert requirements == pip_requirements(wheels[0])
    assert all("==" in r for r in requirements[:-1]) and requirements[-1] == wheels[0]
    conda_pip = next(d["pip"] for d in yaml.safe_load((root / "conda.yaml").read_text())["dependencies"]
                     if isinstance(d, dict))
    assert wheels[0] in conda_pip and any(r.startswith("torch==") for r in conda_pip)
    # the recorded prompt formatting: no chat_template param on the run -> plain, the evaluation's default
    mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["config"] == {"chat_template": False}
    # show() and load() read the run's variant/ folder, not the version's source
    assert registry.show(f"{MODEL}@champion")["artifacts"][0]["dir"] == f"artifacts/{art}"


def test_load_by_alias_generates_what_variant_model_generates(registered, tiny, store_env):
    import mlflow
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from tensorllm.export import variant_model

    folder, artifact = tiny
    t = time.perf_counter()
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    print(f"mlflow.pyfunc.load_model: {time.perf_counter() - t:.2f} s")

    out = loaded.predict(["The capital of France is"])
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)
    assert len(loaded.predict(pd.DataFrame({"prompt": [PROMPT, "w7"]}), params={"max_new_tokens": 2})) == 2
    assert len(loaded.predict({"prompt": [PROMPT, "w7", "w8"]}, params={"max_new_tokens": 2})) == 3
    assert loaded.unwrap_python_model().predict(None, [], params={"max_new_tokens": 2}) == []

    py = loaded.unwrap_python_model()
    assert py.chat_template is False and py.model.dtype == torch.float32  # recorded formatting; base's dtype
    model, tok, _ = variant_model(str(folder), [artifact])
    enc = tok(PROMPT, return_tensors="pt")
    assert enc["input_ids"][0].tolist() == [5, 17, 9, 30]  # the plain prompt: no template, as evaluation
    assert py.encode(PROMPT) == [5, 17, 9, 30]
    n = enc["input_ids"].shape[1]
    with torch.no_grad():  # an independent reference: HF generate on the unpadded prompt (one row ends at </s>)
        expected = model.generate(**enc, max_new_tokens=6, min_new_tokens=1, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, n:]
        got_logits, variant_logits = py.model(**enc).logits, model(**enc).logits
        base_logits = AutoModelForCausalLM.from_pretrained(folder).eval()(**enc).logits
    assert py.generate_ids([PROMPT], 6) == [expected.tolist()]
    assert loaded.predict([PROMPT], params={"max_new_tokens": 6}) == \
        [tok.decode(expected, skip_special_tokens=True).strip()]
    # same code path on the same CPU: equal up to float32 summation-order noise
    torch.testing.assert_close(got_logits, variant_logits, rtol=0, atol=1e-5)
    # the factors are applied: a rank-16x4x2 layer 1 moves the logits far more than that noise
    assert (got_logits - base_logits).abs().max() > 1e-3
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
            py.predict(None, [PROMPT], params={"max_new_tokens": bad})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        py.predict(None, [PROMPT], params={"batch_size": 0})


def test_missing_base_model_is_named(tmp_path):
    from tensorllm.pyfunc_model import resolve_base_offline

    with pytest.raises(FileNotFoundError, match=r"base model '/nonexistent/tiny-llama' of this variant"):
        resolve_base_offline("/nonexistent/tiny-llama")
    with pytest.raises(FileNotFoundError, match=r"base model 'no-such-org/no-such-model' .* not available"):
        resolve_base_offline("no-such-org/no-such-model")
    assert resolve_base_offline(str(tmp_path)) == str(tmp_path)


def test_load_names_a_base_model_that_is_gone(registered, tiny, store_env, tmp_path):
    import mlflow

    registry, version = registered
    identity = registry.version_info(MODEL, version)["tags"]["model_identity"]
    gone = tmp_path / "moved-away"  # the registered folder no longer exists where the model is loaded
    registry.register_variant(record_for(gone, tiny[1], "k-gone", identity), f"{MODEL}-gone")
    with pytest.raises(FileNotFoundError, match=rf"base model '{gone}' of this variant is not available here"):
        mlflow.pyfunc.load_model(f"models:/{MODEL}-gone/1")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))  # a zombie has exited


@pytest.mark.integration
def test_mlflow_models_serve_answers_invocations(registered, tmp_path):
    from flows.runtime.services import stop_process

    registry, _ = registered
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": registry.tracking_uri, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120  # measured 16-24 s here on 2 busy cores (imports + model build)
        while True:
            children = _children(proc.pid) or children
            assert proc.poll() is None, f"mlflow models serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping after 120 s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        print(f"mlflow models serve ready: {time.perf_counter() - t:.1f} s")
        children = _children(proc.pid) or children
        assert children, "no uvicorn child under the mlflow process"

        body = json.dumps({"inputs": [PROMPT, "The capital of France is"], "params": {"max_new_tokens": 4}})
        request = urllib.request.Request(f"{url}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as r:
            status, answer = r.status, json.loads(r.read())
        print(f"POST /invocations: {time.perf_counter() - t:.2f} s -> {answer}")
        assert status == 200
        predictions = answer["predictions"]
        assert isinstance(predictions, list) and len(predictions) == 2
        assert all(isinstance(p, str) for p in predictions)
    finally:  # stop what this test started, by PID: mlflow, then wait for its uvicorn child to exit
        stop_process(proc)
        deadline = time.monotonic() + 30
        for pid in children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not any(_alive(pid) for pid in children)


def test_other_base_model_identity_is_refused(registered, tiny, tmp_path):
    registry, version = registered
    folder, artifact = tiny
    identity = registry.version_info(MODEL, version)["tags"]["model_identity"]
    runs_before = len(registry.client.search_runs([registry.experiment_id]))
    other = record_for(folder, artifact, "k-other", "0123456789abcdef")
    with pytest.raises(ValueError, match=rf"registered model '{MODEL}' holds variants of base model identity "
                                         rf"'{identity}', not '0123456789abcdef'"):
        registry.register_variant(other, MODEL)
    assert len(registry.client.search_runs([registry.experiment_id])) == runs_before  # refused before logging
    # the same identity is fine, and the same record again is the same version
    same = record_for(folder, artifact, "k-1", identity)
    assert registry.register_variant(same, MODEL) == version


def test_describe_sets_the_version_description(registered):
    registry, version = registered
    text = "layer 1 MHA at ranks 16x4x2: a test variant"
    registry.describe(MODEL, version, text)
    assert registry.version_info(MODEL, version)["description"] == text
    assert registry.client.get_model_version(MODEL, str(version)).description == text
    with pytest.raises(ValueError, match="no version 99"):
        registry.describe(MODEL, 99, text)
    with pytest.raises(TypeError, match="must be a string"):
        registry.describe(MODEL, version, None)


def test_registration_does_not_warn_about_a_missing_input_example(registered, tiny):
    """A sweep registers dozens of variants; MLflow's input-example warning (an example would make it load
    the base model at every registration) must not be printed for each of them."""
    import warnings

    from tensorllm.checkpoint import Checkpoint

    registry, _ = registered
    folder, artifact = tiny
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.register_variant(record_for(folder, artifact, "k-quiet", Checkpoint(folder).identity()), MODEL)
    assert not [w for w in caught if "input example" in str(w.message)], [str(w.message)[:120] for w in caught]


# prompts of 1..5 words: batching them left-pads all but the longest (so padding is exercised)
PROMPTS = ["w5 w17 w9 w30", "w7", "w8 w40", "w11 w12 w13 w14 w15", "w60 w3 w21"]


@pytest.fixture(scope="module")
def registered_chat(registered, tiny):
    """Model URI of the same variant registered with ``chat_template=True`` in its run params (as a sweep that
    evaluated with the chat template records it)."""
    from tensorllm.checkpoint import Checkpoint

    registry, _ = registered
    folder, artifact = tiny
    name = f"{MODEL}-chat"
    version = registry.register_variant(
        record_for(folder, artifact, "k-chat", Checkpoint(folder).identity(), chat_template=True), name)
    return f"models:/{name}/{version}"


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain", "chat"])
def test_served_predictions_equal_the_evaluations_generations(registered, registered_chat, tiny, store_env,
                                                               tmp_path, chat_template):
    """Served = evaluated: the pyfunc formats a prompt as recorded and generates what ``evaluate`` generated
    for the same prompt under the same ``chat_template`` option."""
    import mlflow

    from tensorllm.evaluation import EvalConfig, evaluate, read_examples
    from tensorllm.evaluation.data.task import Task, make_dataset
    from tensorllm.export import variant_model

    folder, artifact = tiny
    uri = registered_chat if chat_template else f"models:/{MODEL}@champion"
    py = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    assert py.chat_template is chat_template  # recorded with the model (run param -> model config)
    # <s> w4 <prompt> w3 is what the test template renders; the plain prompt is the words alone
    assert py.encode(PROMPT) == ([1, 4, 5, 17, 9, 30, 3] if chat_template else [5, 17, 9, 30])

    rows = [{"id": f"t/{i}", "group": f"g{i}", "prompt": p, "answer": "w7"} for i, p in enumerate(PROMPTS)]
    task = Task(name="qa_wikidata", kind="generate", dataset=make_dataset(rows), max_new_tokens=6)
    model, tok, _ = variant_model(str(folder), [artifact])
    config = EvalConfig(dataset="qa_wikidata", split="all", batch_size=2, chat_template=chat_template)
    result = evaluate(model, tok, config, task=task, examples_out=tmp_path / "examples.jsonl")
    assert result.chat_template is chat_template and result.n == len(PROMPTS)
    evaluated = {r["prompt"]: r["prediction"].strip() for r in read_examples(tmp_path / "examples.jsonl")}

    served = py.predict(None, PROMPTS, params={"max_new_tokens": 6})
    assert served == [evaluated[p] for p in PROMPTS]
    other = EvalConfig(dataset="qa_wikidata", split="all", batch_size=2, chat_template=not chat_template)
    evaluate(model, tok, other, task=task, examples_out=tmp_path / "other.jsonl")
    other_by_prompt = {r["prompt"]: r["prediction"].strip() for r in read_examples(tmp_path / "other.jsonl")}
    other_preds = [other_by_prompt[p] for p in PROMPTS]  # (the jsonl holds the split's order, not ours)
    # the formatting matters on this model, so the equality above could not hold by accident
    assert other_preds != [evaluated[p] for p in PROMPTS]
    # a load-time override (documented in docs/serving.md) switches the formatting, and then serves the other
    flipped = mlflow.pyfunc.load_model(uri, model_config={"chat_template": not chat_template}).unwrap_python_model()
    assert flipped.chat_template is (not chat_template)
    assert flipped.predict(None, PROMPTS, params={"max_new_tokens": 6}) == other_preds


def test_batched_predict_equals_one_at_a_time(registered, store_env):
    """``predict`` generates left-padded batches; each row must be what decoding that prompt alone gives."""
    import mlflow

    py = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model()
    alone = [py.predict(None, [p], params={"max_new_tokens": 8, "batch_size": 1})[0] for p in PROMPTS]
    for batch_size in (2, 8):  # several batches (with a ragged last one), and all rows in one batch
        assert py.predict(None, PROMPTS, params={"max_new_tokens": 8, "batch_size": batch_size}) == alone
    assert len(set(alone)) > 1  # the prompts give different answers: rows cannot have been mixed up unnoticed
    lengths = [len(py.encode(p)) for p in PROMPTS]
    assert min(lengths) < max(lengths)  # rows of one batch were padded


def test_parse_chat_template_accepts_only_booleans():
    from tensorllm.pyfunc_model import parse_chat_template

    assert [parse_chat_template(v) for v in (None, False, True, "False", "True")] == [False, False, True, False, True]
    for bad in ("yes", 1, "true"):
        with pytest.raises(ValueError, match="chat_template must be True or False"):
            parse_chat_template(bad)


@pytest.mark.slow
def test_logged_wheel_installs_and_imports(registered, tmp_path):
    """The wheel a version carries (named in requirements.txt) installs with pip, and the tensorllm imported
    from it is the wheel's, with the modules the pyfunc model needs."""
    registry, version = registered
    info = registry.version_info(MODEL, version)
    root = Path(registry.client.get_logged_model(info["source"].removeprefix("models:/")).artifact_location)
    wheel = root / (root / "requirements.txt").read_text().split()[-1]
    assert wheel.is_file() and wheel.suffix == ".whl"
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                          "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    code = ("import importlib.metadata as m, tensorllm, tensorllm.pyfunc_model, tensorllm.evaluation.prompt_format;"
            "print(tensorllm.__file__); print(m.version('tensorllm'))")
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the venv's editable install of the project
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    where, installed = run.stdout.split()
    assert Path(where).is_relative_to(site)
    assert wheel.name.startswith(f"tensorllm-{installed}-")
    # the whole requirements.txt, read from the model folder as MLflow's virtualenv manager does, resolves
    # without an index here: the pins are what is installed and they satisfy the wheel's own dependencies
    dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r", "requirements.txt"],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"Would install tensorllm-{installed}" in dry.stdout


def test_a_version_is_served_in_the_dtype_its_evaluation_used(tmp_path, capsys):
    """A bf16 checkpoint: ``tensorllm evaluate`` records the dtype it ran in (fp32 on the CPU, the base's own on a
    GPU) and the served model is built in that same dtype, whatever the config's ``dtype`` key says."""

    from tensorllm.checkpoint import stored_dtype
    from tensorllm.cli import main
    from tensorllm.pyfunc_model import serving_dtype
    from tensorllm.tiny_models import save_tiny_with_tokenizer

    folder, model = save_tiny_with_tokenizer("llama", tmp_path / "bf16")
    model.to(torch.bfloat16).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))  # disagrees with the weights
    assert stored_dtype(folder) == torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--dataset", "qa_wikidata", "--limit", "2", "--no-generate", "--device", device,
                 "--out", str(tmp_path / "evals"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dtype"]
    assert str(serving_dtype(folder, device)).replace("torch.", "") == evaluated
    assert evaluated == ("bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32")
