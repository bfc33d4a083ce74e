"""tensorllm.registry against a real MLflow sqlite store in tmp_path (no mocks, no server).

A tiny random Llama (GQA: 4 query heads, 2 KV heads) with a tiny WordLevel tokenizer is saved to disk,
two real Tucker artifacts of its layer 1 are made with ``decompose_layer``, and variants built from them
are registered, promoted, shown and loaded back as Hugging Face folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch


# ----------------------------------------------------------------------------- tiny model on disk

def build_tiny_llama_folder(out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random LlamaForCausalLM + a tiny fast tokenizer into ``out_dir`` (a HF folder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, vocab_size=128, max_position_embeddings=64,
                         bos_token_id=2, eos_token_id=3, pad_token_id=1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=128, special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"])
    tok.train_from_iterator(["the capital of france is paris", "the capital of italy is rome",
                             "question : who wrote hamlet ? answer : shakespeare"], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out_dir)
    return out_dir


# ----------------------------------------------------------------------------- fixtures

MODEL = "tiny-llama-qa"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model folder, [artifact folder r32x8x2, artifact folder r16x8x4]) shared by the module."""
    from tensorllm.decompose import decompose_layer

    root = tmp_path_factory.mktemp("registry_model")
    model_dir = build_tiny_llama_folder(root / "tiny-llama")
    # kv grouping: tensor (d_model=64, d_head=16, slices=2g+2=6, groups=2)
    records = decompose_layer(str(model_dir), layer=1, rank_list=[(32, 8, 2), (16, 8, 4)],
                              out_root=root / "artifacts", n_iter_max=5, grouping="kv")
    return model_dir, [r.artifact for r in records]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A migrated, empty MLflow sqlite database (creating the tables takes seconds; copying it does not)."""
    from mlflow import MlflowClient

    import tensorllm.registry  # noqa: F401  (sets MLFLOW_DISABLE_TELEMETRY before mlflow is used)

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates the tables
    return db


@pytest.fixture
def registry(tmp_path, empty_store):
    """A fresh Registry on its own sqlite store; its experiment (and artifact folder) is created here."""
    from tensorllm.registry import Registry

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    return Registry(tracking_uri=f"sqlite:///{db}", experiment="test-tensorllm")


def make_record(model_dir: Path, artifacts: list[str], name: str, key: str, acc: float, tmp_path: Path):
    from tensorllm.registry import VariantRecord

    examples = tmp_path / f"{name}-val_examples.jsonl"
    examples.write_text(json.dumps({"q": "capital of france", "pred": "paris", "ok": True}) + "\n")
    kind = "variant" if artifacts else "baseline"
    return VariantRecord(
        key=key, name=name, base_model=str(model_dir), artifacts=list(artifacts),
        params={"model": "tiny-llama", "layer": 1 if artifacts else None, "ranks": name, "grouping": "kv",
                "laser": "none", "dataset": "qa_wikidata", "list_param": [1, 2]},
        metrics={"val_accuracy": acc, "val_loss": 2.5, "compression_ratio": 1.0 if not artifacts else 3.0,
                 "not_computed": None},
        tags={"kind": kind, "dataset": "qa_wikidata", "code_version": "test"},
        files={"val_examples.jsonl": str(examples)},
    )


@pytest.fixture
def populated(registry, setup, tmp_path):
    """baseline -> version 1, variant A -> 2, variant B -> 3."""
    model_dir, (art_a, art_b) = setup
    recs = [make_record(model_dir, [], "baseline", "k-base", 0.50, tmp_path),
            make_record(model_dir, [art_a], "layer001-mha-kv-r32x8x2", "k-a", 0.55, tmp_path),
            make_record(model_dir, [art_b], "layer001-mha-kv-r16x8x4", "k-b", 0.48, tmp_path)]
    versions = [registry.register_variant(r, MODEL) for r in recs]
    assert versions == [1, 2, 3]
    return registry, recs


def n_runs(registry) -> int:
    return len(registry.client.search_runs([registry.experiment_id], max_results=1000))


# ----------------------------------------------------------------------------- tests

def test_default_tracking_uri(tmp_path, monkeypatch):
    from tensorllm.registry import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'runs' / 'mlflow' / 'mlflow.db'}"
    assert (tmp_path / "runs" / "mlflow").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_register_is_idempotent_and_stores_only_the_compressed_folder(populated, tmp_path):
    registry, recs = populated
    assert n_runs(registry) == 3
    # same record again: same version, no new run, no new version
    assert registry.register_variant(recs[1], MODEL) == 2
    assert n_runs(registry) == 3
    assert [m["versions"] for m in registry.list_models()] == [3]

    info = registry.version_info(MODEL, 2)
    # the version is the pyfunc model logged in the variant's run (tests/tensorllm/test_pyfunc.py loads it)
    (output,) = registry.client.get_run(info["run_id"]).outputs.model_outputs
    assert info["source"] == f"models:/{output.model_id}"
    assert info["params"]["layer"] == "1" and info["params"]["list_param"] == "[1, 2]"
    assert info["metrics"]["val_accuracy"] == pytest.approx(0.55) and "not_computed" not in info["metrics"]
    # the version carries its name, identity and key (VERSION_TAGS); the rest is its run's: the model-versions
    # table of MLflow's UI lists every version tag in the row
    assert info["tags"] == {"variant_name": "layer001-mha-kv-r32x8x2", "variant_key": "k-a",
                            "variant_key_sha256": hashlib.sha256(b"k-a").hexdigest()}
    assert info["run_tags"]["kind"] == "variant" and info["run_tags"]["code_version"] == "test"
    # the logged model lists its version (MLflow's UI otherwise says "Not registered"), once
    assert json.loads(registry.client.get_logged_model(output.model_id).tags["mlflow.modelVersions"]) == [
        {"name": MODEL, "version": "2"}]
    assert info["run_name"] == "layer001-mha-kv-r32x8x2"

    # the run's artifact tree: variant.json + the artifact folder + the extra file; no model weights
    run_root = Path(registry.client.get_run(info["run_id"]).info.artifact_uri)
    assert run_root.is_relative_to(tmp_path / "mlflow" / "artifacts")  # next to the sqlite db
    files = sorted(p.relative_to(run_root).as_posix() for p in run_root.rglob("*") if p.is_file())
    assert files == ["val_examples.jsonl", "variant/artifacts/layer001-mha-kv-r32x8x2/artifact.json",
                     "variant/artifacts/layer001-mha-kv-r32x8x2/tensors.safetensors", "variant/variant.json"]
    variant = json.loads((run_root / "variant" / "variant.json").read_text())
    assert variant["key"] == "k-a" and variant["artifacts"][0]["ranks"] == [32, 8, 2]
    assert registry.version_info(MODEL, 1)["run_tags"]["kind"] == "baseline"


def test_failed_registration_reuses_its_run(registry, setup, tmp_path, monkeypatch):
    model_dir, (art_a, _) = setup
    rec = make_record(model_dir, [art_a], "a", "k-retry", 0.5, tmp_path)
    real = registry.client.create_model_version

    def broken(*args, **kwargs):
        raise RuntimeError("registry went away")

    monkeypatch.setattr(registry.client, "create_model_version", broken)
    with pytest.raises(RuntimeError, match="went away"):
        registry.register_variant(rec, MODEL)
    monkeypatch.setattr(registry.client, "create_model_version", real)
    assert registry.register_variant(rec, MODEL) == 1
    assert n_runs(registry) == 1
    # the run's pyfunc model is reused too: one logged model, and it is the version's source
    (model,) = registry.client.search_logged_models([registry.experiment_id])
    assert registry.version_info(MODEL, 1)["source"] == f"models:/{model.model_id}"

    bad = make_record(model_dir, [art_a], "b", "k-bad", 0.5, tmp_path)
    bad.files = {"missing.txt": str(tmp_path / "nope.txt")}
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        registry.register_variant(bad, MODEL)
    bad.files = {"variant/variant.json": str(tmp_path / "x")}
    with pytest.raises(ValueError, match="is reserved"):
        registry.register_variant(bad, MODEL)
    with pytest.raises(FileNotFoundError, match="not a tensorllm artifact"):
        registry.register_variant(make_record(model_dir, [str(tmp_path)], "c", "k-c", 0.5, tmp_path), MODEL)
    with pytest.raises(ValueError, match="registered model name 'bad/name' is invalid"):
        registry.register_variant(rec, "bad/name")
    assert n_runs(registry) == 1


def test_reused_run_without_a_ready_model_gets_one(registry, setup, tmp_path):
    from mlflow.entities import LoggedModelStatus

    model_dir, (art_a, _) = setup
    rec = make_record(model_dir, [art_a], "a", "k-relog", 0.5, tmp_path)
    assert registry.register_variant(rec, MODEL) == 1
    first = registry.version_info(MODEL, 1)["source"].removeprefix("models:/")
    # as if logging the model had failed after the run finished (or the run predates pyfunc versions)
    registry.client.finalize_logged_model(first, LoggedModelStatus.FAILED)
    registry.client.delete_model_version(MODEL, "1")
    assert registry.register_variant(rec, MODEL) == 2
    info = registry.version_info(MODEL, 2)
    assert n_runs(registry) == 1 and info["source"] != f"models:/{first}"
    logged = registry.client.get_logged_model(info["source"].removeprefix("models:/"))
    assert logged.source_run_id == info["run_id"] and logged.status == LoggedModelStatus.READY
    assert (Path(logged.artifact_location) / "artifacts" / "variant" / "variant.json").is_file()


@pytest.mark.parametrize("before", ["unset", "set", "env"])
def test_registration_leaves_the_process_tracking_uri_as_it_was(registry, setup, tmp_path, monkeypatch, before):
    """A Registry writes to its own store: registering (which needs MLflow's process-wide URI for a moment, see
    tensorllm.registry.base._process_tracking_uri) leaves what the process had set, or not set, as it was."""
    import mlflow

    model_dir, (art_a, _) = setup
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    if before == "set":
        mlflow.set_tracking_uri(elsewhere)
    elif before == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    try:
        version = registry.register_variant(make_record(model_dir, [art_a], "a", "k-uri", 0.5, tmp_path), MODEL)
        assert registry.version_info(MODEL, version)["tags"]["variant_key"] == "k-uri"
        assert mlflow.is_tracking_uri_set() == (before != "unset")
        assert (mlflow.get_tracking_uri() == elsewhere) == (before != "unset")
        assert os.environ.get("MLFLOW_TRACKING_URI") == (None if before == "unset" else elsewhere)
        assert not (tmp_path / "elsewhere.db").exists()  # nothing was written to the process's store
    finally:
        mlflow.set_tracking_uri(None)


def test_update_metrics(populated):
    registry, _ = populated
    registry.update_metrics(MODEL, 2, {"test_accuracy": 0.61, "test_loss": 2.0})
    info = registry.version_info(MODEL, 2)
    assert info["metrics"]["test_accuracy"] == pytest.approx(0.61)
    assert info["metrics"]["val_accuracy"] == pytest.approx(0.55)
    assert not any(k.startswith("metric.") for k in info["tags"])  # metrics are the run's, not copied to the version
    with pytest.raises(TypeError, match="must be a number"):
        registry.update_metrics(MODEL, 2, {"x": "high"})
    with pytest.raises(ValueError, match=r"no version 9; versions: 1, 2, 3"):
        registry.update_metrics(MODEL, 9, {"x": 1.0})


def test_metrics_are_on_the_logged_model_too(populated):
    """MLflow's UI shows a logged model's own metrics ("Metrics (N)"), not its run's: registration and
    update_metrics link each metric to the version's logged model, and the run still holds each value once."""
    registry, _ = populated
    info = registry.version_info(MODEL, 2)

    def on_model(version: int) -> dict[str, float]:
        model_id = registry.version_info(MODEL, version)["source"].removeprefix("models:/")
        return {m.key: m.value for m in registry.client.get_logged_model(model_id).metrics or []}

    # make_record's metrics of variant A (its "not_computed": None is dropped, as on the run)
    assert on_model(2) == pytest.approx({"val_accuracy": 0.55, "val_loss": 2.5, "compression_ratio": 3.0})
    assert on_model(1)["val_accuracy"] == pytest.approx(0.50)  # each version's model has its own values
    registry.update_metrics(MODEL, 2, {"test_accuracy": 0.61})
    assert on_model(2)["test_accuracy"] == pytest.approx(0.61)
    assert "test_accuracy" not in on_model(3)
    history = registry.client.get_metric_history(info["run_id"], "val_accuracy")
    assert [m.value for m in history] == [pytest.approx(0.55)]  # logged once, not once per place it shows


def test_champion_promotion_and_decisions(populated):
    registry, _ = populated
    assert registry.champion(MODEL) is None
    assert registry.champion("not-registered-yet") is None
    assert registry.show(MODEL)["version"] == 3  # no champion: latest

    registry.set_champion(MODEL, 2, {"reason": "val_accuracy +5 pts over baseline", "metric": "val_accuracy",
                                     "rule": "denoise"})
    champ = registry.champion(MODEL)
    shown = registry.show(f"{MODEL}@champion")
    assert champ["version"] == shown["version"] == registry.show(MODEL)["version"] == 2
    assert champ["run_id"] == shown["run_id"] and champ["aliases"] == ["champion"]
    assert champ["description"] == "val_accuracy +5 pts over baseline"  # the reason: shown on the version's page
    # one promotion tag, "<rule>, <time>" (a version row of MLflow's UI lists every tag); the reason is the description
    assert {k for k in champ["tags"] if k.startswith("promotion")} == {"promotion"}
    assert re.fullmatch(r"denoise, \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", champ["tags"]["promotion"])
    tags = registry.list_models()[0]["tags"]
    assert tags["last_decision.version"] == "2" and tags["last_decision.promoted"] == "true"
    assert tags["last_decision.previous_version"] == "" and tags["last_decision.alias"] == "champion"
    assert tags["last_decision.metric"] == "val_accuracy"
    assert not any(k.startswith("last_promotion.") for k in tags)  # one record of the decision, not two

    registry.client.set_registered_model_tag(MODEL, "last_promotion.version", "2")  # as older versions wrote
    registry.record_decision(MODEL, {"reason": "no candidate beats the champion"})
    tags = registry.list_models()[0]["tags"]
    assert tags["last_decision.promoted"] == "false" and tags["last_decision.reason"] == "no candidate beats the champion"
    assert "last_decision.metric" not in tags  # stale keys of the previous decision are dropped
    assert "last_promotion.version" not in tags  # and the copies an older store carries
    assert registry.champion(MODEL)["version"] == 2  # the last promotion: the champion's own promotion.* tags

    # keys may also come prefixed (flows.policy.decision_tags does so)
    registry.set_champion(MODEL, 3, {"promotion.reason": "test", "promotion.decision": "promote"})
    assert registry.champion(MODEL)["version"] == 3
    assert registry.champion(MODEL)["description"] == "test"
    assert registry.list_models()[0]["tags"]["last_decision.decision"] == "promote"
    assert registry.list_models()[0]["tags"]["last_decision.previous_version"] == "2"
    assert registry.version_info(MODEL, 2)["aliases"] == []
    with pytest.raises(ValueError, match="reserved"):
        registry.set_champion(MODEL, 3, {}, alias="latest")


def test_show_and_list_models(populated, setup):
    registry, _ = populated
    model_dir, (_, art_b) = setup
    shown = registry.show(f"{MODEL}/3")
    assert shown["version"] == 3 and shown["resolved"] == f"{MODEL}/3"
    assert shown["base_model"] == str(model_dir) and shown["key"] == "k-b"
    assert [a["ranks"] for a in shown["artifacts"]] == [[16, 8, 4]]
    assert shown["artifacts"][0]["dir"] == f"artifacts/{Path(art_b).name}"
    assert shown["params"]["ranks"] == "layer001-mha-kv-r16x8x4"
    assert registry.show(f"{MODEL}@latest")["version"] == 3
    assert registry.show(f"models:/{MODEL}/1")["artifacts"] == []

    registry.set_champion(MODEL, 2, {"reason": "best"})
    (entry,) = registry.list_models()
    assert entry["name"] == MODEL and entry["latest_version"] == 3 and entry["versions"] == 3
    assert entry["aliases"] == {"champion": 2} and entry["champion"] == 2


@pytest.mark.parametrize("spec, match", [
    ("", "empty model spec"),
    ("m@champion/2", "both '@' and '/'"),
    ("m/two", "must be a positive integer"),
    ("m/0", "must be a positive integer"),
    ("m@", "empty alias"),
    ("@champion", "no model name"),
    ("m/1/2", "more than one"),
    ("bad name", "is invalid"),
])
def test_parse_spec_errors(spec, match):
    from tensorllm.registry import parse_spec

    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


def test_parse_spec_forms():
    from tensorllm.registry import parse_spec

    assert parse_spec("m") == ("m", None, None)
    assert parse_spec("m@champion") == ("m", "champion", None)
    assert parse_spec("m/12") == ("m", None, 12)
    assert parse_spec("models:/m@latest") == ("m", "latest", None)


def test_unknown_names_list_what_exists(populated):
    registry, _ = populated
    with pytest.raises(ValueError, match=rf"no registered model 'nope'.*registered models: {MODEL}"):
        registry.show("nope")
    registry.set_champion(MODEL, 2, {"reason": "best"})
    with pytest.raises(ValueError, match=r"no alias 'staging'; its aliases: champion -> 2"):
        registry.show(f"{MODEL}@staging")
    with pytest.raises(ValueError, match=r"no version 7; versions: 1, 2, 3"):
        registry.show(f"{MODEL}/7")


def test_log_sweep(populated, tmp_path):
    registry, _ = populated
    plot = tmp_path / "accuracy_vs_cr.png"
    plot.write_bytes(b"\x89PNG fake")
    run_id = registry.log_sweep(MODEL, {"n_variants": 2, "best": "layer001-mha-kv-r32x8x2",
                                        "best_val_accuracy": 0.55, "table": [{"v": 2}]}, [plot],
                                description="2 variants of layer 1; best +5 pts")
    run = registry.client.get_run(run_id)
    assert run.info.run_name == "sweep" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.note.content"] == "2 variants of layer 1; best +5 pts"  # the run's description
    assert run.data.params["best"] == "layer001-mha-kv-r32x8x2"
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.55)
    names = sorted(a.path for a in registry.client.list_artifacts(run_id))
    assert names == ["accuracy_vs_cr.png", "summary.json", "tensorllm_manifest.json"]
    assert registry.list_models()[0]["tags"]["last_sweep.run_id"] == run_id
    with pytest.raises(FileNotFoundError, match="nope.png"):
        registry.log_sweep(MODEL, {}, [tmp_path / "nope.png"])
    assert "mlflow.note.content" not in registry.client.get_run(registry.log_sweep(MODEL, {}, [])).data.tags


def test_a_sweep_run_records_digests_that_verify_checks(registry, tmp_path, capsys):
    """The sweep run's files are in its manifest, the manifest's sha256 is the run's tag (in the database, apart
    from the artifact store), and ``tensorllm verify runs:/RUN_ID`` finds a changed byte in either."""
    from tensorllm.artifact import file_sha256
    from tensorllm.cli import main

    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG fake")
    run_id = registry.log_sweep(MODEL, {"n_variants": 2}, [plot])
    root = Path(registry.client.get_run(run_id).info.artifact_uri)
    manifest = json.loads((root / "tensorllm_manifest.json").read_text())["files"]
    assert sorted(manifest) == ["plot.png", "summary.json"]
    assert manifest["plot.png"]["sha256"] == file_sha256(plot)
    assert registry.client.get_run(run_id).data.tags["tensorllm_manifest_sha256"] == file_sha256(
        root / "tensorllm_manifest.json")

    verify = ["verify", f"runs:/{run_id}", "--tracking-uri", registry.tracking_uri]
    assert main(verify) == 0
    assert f"sweep run {run_id}: 2 items intact" in capsys.readouterr().out
    summary = root / "summary.json"
    summary.write_text(summary.read_text().replace("2", "3"))  # same size: only the digest tells
    assert main(verify) == 2
    assert "summary.json is damaged: its sha256 is" in capsys.readouterr().err
    (root / "tensorllm_manifest.json").write_text(json.dumps({"format": "tensorllm-manifest/1", "files": {}}))
    assert main(verify) == 2  # a manifest rewritten to hide the change no longer matches the run's tag
    assert "tensorllm_manifest.json is damaged" in capsys.readouterr().err
    bare = registry.client.create_run(registry.experiment_id).info.run_id
    assert main(["verify", f"runs:/{bare}", "--tracking-uri", registry.tracking_uri]) == 2
    assert "has no tensorllm_manifest_sha256 tag: not a sweep's report run" in capsys.readouterr().err


def test_load_materialises_a_loadable_hf_folder(populated, setup, tmp_path):
    from transformers import AutoModelForCausalLM

    from tensorllm.artifact import VARIANT_FILE, apply_artifacts, load_artifact

    registry, _ = populated
    model_dir, (art_a, _) = setup
    registry.set_champion(MODEL, 2, {"reason": "best"})

    out = registry.load(f"{MODEL}@champion", tmp_path / "champion-hf")
    assert out == tmp_path / "champion-hf"
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    apply_artifacts(base, [load_artifact(art_a)])
    expected = base.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
    q1 = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(got[q1], original[q1])  # the edit is really there
    lineage = json.loads((out / VARIANT_FILE).read_text())
    assert lineage["registry"]["version"] == 2 and lineage["registry"]["key"] == "k-a"
    assert lineage["artifacts"][0]["path"] == f"models:/{MODEL}/2/artifacts/{Path(art_a).name}"

    baseline = AutoModelForCausalLM.from_pretrained(registry.load(f"{MODEL}/1", tmp_path / "base-hf")).eval()
    for name, tensor in baseline.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
