"""Sweep input validation (flows.validate): every bad input is one line naming the value and what is allowed.

The model is a saved tiny GQA Llama (2 layers, 6 query heads, 2 KV heads, d_head 8, d_model 48; its kv
tensor is (48, 8, 8, 2)), so only its config.json and safetensors headers are read. The CLI test runs
``tensorllm sweep`` in a subprocess: exit code 2, one stderr line, no traceback, before any Prefect or Ray.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from flows.config import SweepConfig
from flows.validate import SweepInputError, validate_sweep
from tensorllm.tiny_models import save_tiny_with_tokenizer

DATASETS = "qa_wikidata, hotpotqa, fever, bios_profession, counterfact"  # the registry's names, in its order
DATASET_LIST = str(DATASETS.split(", "))
GOOD = {"layers": "last 2", "ranks": [(4, 2, 1)], "datasets": ["fever"]}  # valid for the tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_with_tokenizer("llama_gqa", tmp_path_factory.mktemp("validate") / "llama_gqa")[0]


#: a state-space model's tensors: no attention projection in its layers (shapes for d_model 16)
MAMBA_TENSORS = {"backbone.embeddings.weight": (32, 16), "backbone.layers.0.mixer.in_proj.weight": (64, 16),
                 "backbone.layers.0.mixer.out_proj.weight": (16, 32)}
#: a Llama config (heads and width known), for weights that are not a Llama's
LLAMA_CONFIG = {"model_type": "llama", "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                "intermediate_size": 32, "vocab_size": 32}


def model_folder(tmp_path, config: dict | None, tensors: dict | None = None):
    """A folder with ``config.json`` = ``config`` (none when None) and zero tensors of the given shapes."""
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if tensors is not None:
        from safetensors.torch import save_file
        import torch

        save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, str(folder / "model.safetensors"))
    return str(folder)


#: (id, parameters over GOOD, the start of the one-line message); "{tmp}" is the test's tmp_path
BAD = [
    ("unknown dataset", {"datasets": ["nope"]}, f"datasets: Unknown dataset 'nope'; allowed: {DATASET_LIST}, a data "
                                                "file (.jsonl, .json, .csv) with fields prompt and answer"),
    ("no dataset", {"datasets": []}, f"datasets: must not be empty (got []); allowed: evaluation datasets, built-in "
                                     f"names ({DATASETS}) or your own data"),
    ("layer 99", {"layers": [99]}, "layers: [99] out of range: this model has layers 0..1 (got [99]); allowed: "
                                   "indices 0..1, 'last N' with 1 <= N <= 2, or 'all'"),
    ("last 0", {"layers": "last 0"}, "layers: 'last 0' needs 1 <= N <= 2"),
    ("last 3 of 2", {"layers": "last 3"}, "layers: 'last 3' needs 1 <= N <= 2"),
    ("first 3", {"layers": "first 3"}, "layers: must be a list of integers, 'last N' or 'all'; got 'first 3'"),
    ("ranks 0", {"ranks": [(0, 0, 0)]}, "ranks: must be positive integers or fractions in (0, 1]; got (0.0, 0.0, 0.0)"),
    ("R2 > d_head", {"ranks": [(4, 2, 1), (4, 9, 1)]},
     "ranks[1] (4, 9, 1): R2 (d_head)=9 is out of range: allowed 1..8 (the dimension's size) (tensor (48, 8, 4, 6) "
     "with grouping 'replicate')"),
    ("R3 > slices, replicate", {"ranks": [(4, 2, 5)], "grouping": "replicate"},
     "ranks[0] (4, 2, 5): R3 (slices)=5 is out of range: allowed 1..4"),
    ("fraction > 1", {"ranks": [(1.5, 0.5, 0.5)]}, "ranks[0] (1.5, 0.5, 0.5): R1 (d_model) as a fraction must be in (0, 1]"),
    ("grouping x", {"grouping": "x"}, "grouping: unknown value 'x' (got 'x'); allowed: kv, replicate"),
    ("registered_model", {"registered_model": "bad name!"}, "registered_model: must be letters, digits"),
    ("alpha 0", {"alpha": 0}, "alpha: must be in (0, 1)"),
    ("margin 1.5", {"margin": 1.5}, "margin: must be in [0, 1)"),
    ("val_limit 0", {"val_limit": 0}, "val_limit: must be >= 1 (got 0); allowed: an integer >= 1, or None"),
    ("batch_size 0", {"batch_size": 0}, "batch_size: must be >= 1 (got 0); allowed: an integer >= 1"),
    ("test_top_k 0", {"test_top_k": 0}, "test_top_k: must be >= 1 (got 0); allowed: an integer >= 1"),
    ("objective best", {"objective": "best"}, "objective: unknown value 'best' (got 'best'); allowed: denoise, compress"),
    ("compose all", {"compose": ["all"]}, "compose[0]: unknown value 'all' (got ['all']); allowed: uniform, allocate, greedy"),
    ("targets 1", {"targets": [1.0, 2.0]}, "targets: must be finite ratios > 1 (2 = half the attention parameters); got [1.0]"),
    ("selection_metric f1", {"selection_metric": "f1"},
     "selection_metric: unknown value 'f1' (got 'f1'); allowed: accuracy, top1_accuracy, loss"),
    ("laser rho 0", {"laser": [{"matrix": "fc_in", "rho": 0}]},
     "laser[0].rho: must be > 0 (got 0); allowed: a number > 0 and <= 1"),
    ("laser matrix", {"laser": [{"matrix": "fc_x", "rho": 0.1}]},
     "laser[0].matrix: unknown value 'fc_x' (got 'fc_x'); allowed: fc_in, fc_up, fc_out"),
    ("unknown parameter", {"rank": [(4, 2, 1)]}, "unknown parameter(s) ['rank']; allowed: model, datasets, layers"),
    ("missing model path", {"model": "/no/such/model"}, "model: model folder /no/such/model does not exist; allowed: "
                                                        "smollm2-135m, a local Hugging Face folder"),
    ("no config.json", {"model": "{tmp}/model", "config": None}, "model: folder {tmp}/model has no config.json"),
    ("no weights", {"model": "{tmp}/model", "config": {"model_type": "llama"}},
     "model: {tmp}/model has neither model.safetensors nor model.safetensors.index.json (found: ['config.json'])"),
    ("model_type mamba", {"model": "{tmp}/model", "config": {"model_type": "mamba"}, "tensors": MAMBA_TENSORS},
     "model: config MambaConfig has no head count or model width: looked for num_attention_heads"),
    ("attention of no known layout", {"model": "{tmp}/model", "config": LLAMA_CONFIG, "tensors": MAMBA_TENSORS},
     "model: Unsupported architecture 'llama': no known layout matches the attention of its first layer. Found: "
     "backbone.layers.0.mixer.in_proj.weight [64, 16], backbone.layers.0.mixer.out_proj.weight [16, 32]. Head counts "
     "from the config: 2 heads, 2 KV heads, head dim 8, d_model 16. Known layouts: llama (layers.0.self_attn.q_proj"),
    ("model_type unknown", {"model": "{tmp}/model", "config": {"model_type": "nonsense"}},
     "model: cannot read {tmp}/model/config.json (The checkpoint you are trying to load has model type `nonsense`"),
    ("config.json not JSON", {"model": "{tmp}/model", "config": "not json"},
     "model: {tmp}/model/config.json is not a JSON object ("),
    ("data folder missing", {"data_dir": "{tmp}"}, "datasets: the data folder of 'fever' does not exist ({tmp}/"),
    ("mlflow closed port", {"mlflow_tracking_uri": "http://127.0.0.1:9/"},
     "mlflow_tracking_uri: http://127.0.0.1:9/ is not reachable (connection refused); allowed: a running MLflow server"),
    ("mlflow scheme", {"mlflow_tracking_uri": "ftp://host/x"},
     "mlflow_tracking_uri: unknown scheme 'ftp' (got 'ftp://host/x'); allowed: sqlite:////ABSOLUTE/PATH.db, http(s)://HOST:PORT"),
    ("mlflow sqlite under a file", {"mlflow_tracking_uri": "sqlite:///{tmp}/file/mlflow.db"},
     "mlflow_tracking_uri: {tmp}/file is a file, not a folder"),
    ("mlflow sqlite without ///", {"mlflow_tracking_uri": "sqlite:relative.db"},
     "mlflow_tracking_uri: a sqlite URI starts with sqlite:/// (got 'sqlite:relative.db'); allowed: "
     "sqlite:////ABSOLUTE/PATH.db"),
    ("mlflow sqlite relative", {"mlflow_tracking_uri": "sqlite:///runs/mlflow.db"},
     "mlflow_tracking_uri: the sqlite path 'runs/mlflow.db' is relative, so each process"),
    ("artifacts root under a file", {"artifacts_root": "{tmp}/file/artifacts"},
     "artifacts_root: {tmp}/file is a file, not a folder (got '{tmp}/file/artifacts'); allowed: a folder this user"),
    ("transfer dataset missing", {"data_only": "fever"},
     "transfer_dataset: the data folder of 'counterfact' does not exist ({tmp}/data/counterfact)"),
    ("malformed dataset line", {"data_only": "fever", "break_line": 3, "transfer_dataset": None},
     "datasets: 'fever' cannot be read: {tmp}/data/fever/paper_dev.jsonl:3:"),
    ("ray closed port", {"ray_address": "127.0.0.1:9"},
     "ray_address: 127.0.0.1:9 is not reachable (connection refused); allowed: a running Ray head"),
    ("ray client closed port", {"ray_address": "ray://127.0.0.1:9"}, "ray_address: ray://127.0.0.1:9 is not reachable"),
    ("ray nonsense", {"ray_address": "head-node"},
     "ray_address: not an address (got 'head-node'); allowed: None or 'local' (a private local Ray), 'auto', HOST:PORT"),
]


def one_dataset(root, name: str, break_line: int | None):
    """A copy of the shipped data folder of ``name`` under ``root``; with ``break_line``, that line is not JSON."""
    import shutil

    from tensorllm.evaluation.data.registry import DATASETS, default_data_dir

    folder = root / DATASETS[name].folder
    shutil.copytree(default_data_dir() / DATASETS[name].folder, folder)
    if break_line is not None:
        (data_file,) = folder.glob("*.jsonl")
        lines = data_file.read_text().splitlines(keepends=True)
        lines[break_line - 1] = '{"claim": "cut off in the mid\n'
        data_file.write_text("".join(lines))
    return root


def bad_params(tiny, tmp_path, monkeypatch, overrides: dict) -> dict:
    """GOOD on the tiny model with ``overrides``; ``config`` makes a model folder, ``data_dir`` moves the data."""
    overrides = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in overrides.items()}
    if "config" in overrides:
        model_folder(tmp_path, overrides.pop("config"), overrides.pop("tensors", None))
    if "data_dir" in overrides:
        monkeypatch.setenv("TENSORLLM_DATA_DIR", overrides.pop("data_dir"))
    if "data_only" in overrides:  # a data folder holding one dataset (line ``break_line`` of its file broken)
        monkeypatch.setenv("TENSORLLM_DATA_DIR", str(one_dataset(tmp_path / "data", overrides.pop("data_only"),
                                                                 overrides.pop("break_line", None))))
    (tmp_path / "file").write_text("not a folder")
    return {"model": str(tiny), **GOOD, **overrides}


@pytest.mark.parametrize("overrides, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_one_line(tiny, tmp_path, monkeypatch, overrides, message):
    params = bad_params(tiny, tmp_path, monkeypatch, overrides)
    start = time.perf_counter()
    with pytest.raises(SweepInputError, match="^" + re.escape(message.replace("{tmp}", str(tmp_path)))) as info:
        validate_sweep(params)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 5.5  # closed ports are refused at once; the connect timeout is 5 s


def test_good_input_gives_the_config(tiny):
    config = validate_sweep({"model": str(tiny), **GOOD, "laser": [{"matrix": "fc_up", "rho": 0.5}],
                             "mlflow_tracking_uri": "sqlite:////tmp/runs-not-created/mlflow.db", "ray_address": "local"})
    assert isinstance(config, SweepConfig) and config.resolve_layers(2) == [0, 1]


def test_an_error_is_a_value_error():
    assert issubclass(SweepInputError, ValueError)  # the CLI's one-line handler catches ValueError
    assert str(SweepInputError("a\n  b")) == "a b"  # one line, whatever it wraps


def test_flow_validates_its_parameters_first(tiny):
    """The flow's body (``.fn``: no Prefect API needed) raises the same line before it builds a Ray runner."""
    from flows.compress_sweep import compress_sweep

    with pytest.raises(SweepInputError, match=r"^layers: \[99\] out of range"):
        compress_sweep.fn(model=str(tiny), layers=[99])


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_bad_sweep_is_one_line_exit_2_fast(tiny, tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "sweep", "--layers", "99", "--model", str(tiny)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    print(f"tensorllm sweep --layers 99: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("tensorllm sweep: error: layers: [99] out of range")
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
    # the target is 10 s; measured 6-8 s on 2 busy cores (~5 s of it importing torch and transformers)
    assert seconds < 30


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_debug_shows_the_traceback(tiny, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "--debug", "sweep", "--layers", "99",
                           "--model", str(tiny)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr and "SweepInputError: layers: [99]" in done.stderr


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_cli_bad_option_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tensorllm.cli", "sweep", "--grouping", "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("tensorllm sweep: error: argument --grouping")


def test_ray_address_falls_back_to_the_ray_address_variable(tiny, tmp_path, monkeypatch):
    """No ``ray_address``: ``$RAY_ADDRESS`` names the cluster (checked like the parameter); "local" overrides it."""
    from flows.runtime.ray_runner import ray_address

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    assert ray_address(None) == "127.0.0.1:9" and ray_address("local") is None and ray_address("h:1") == "h:1"
    with pytest.raises(SweepInputError, match=r"^ray_address: 127\.0\.0\.1:9 is not reachable \(connection refused\)"):
        validate_sweep({"model": str(tiny), **GOOD})
    validate_sweep({"model": str(tiny), **GOOD, "ray_address": "local"})  # a private local Ray: nothing to reach
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address(None) is None


#: your own data in the sweep's datasets: (id, records of the file, spec or None, the start of the message)
USER_BAD = [
    ("malformed line", ['{"prompt": "a", "answer": "b"}', '{"prompt": "c"}'], None,
     "datasets: '{path}' cannot be read: {path}:2: missing field(s) ['answer']; required: ['answer', 'prompt']"),
    ("empty file", [], None, "datasets: '{path}' cannot be read: {path}: no usable record"),
    ("choices not single tokens", ['{"prompt": "a", "answer": "maybe not"}', '{"prompt": "b", "answer": "surely so"}'],
     "path: mine.jsonl\nkind: choice\nchoices: ['maybe not', 'surely so']\n",
     "datasets: '{spec}' cannot be read: candidate 'maybe not' is not a single token for this tokenizer"),
]


@pytest.mark.parametrize("lines, spec, message", [case[1:] for case in USER_BAD], ids=[case[0] for case in USER_BAD])
def test_your_own_data_is_read_before_the_run(tiny, tmp_path, lines, spec, message):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    ref = path
    if spec is not None:
        ref = tmp_path / "mine.yaml"
        ref.write_text(spec)
    expected = message.replace("{path}", str(path)).replace("{spec}", str(ref))
    with pytest.raises(SweepInputError, match="^" + re.escape(expected)):
        validate_sweep({"model": str(tiny), **GOOD, "datasets": ["fever", str(ref)], "transfer_dataset": None})


def test_your_own_data_as_transfer_dataset_is_checked_and_made_absolute(tiny, tmp_path, monkeypatch):
    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is", "answer": "blue"}\n')
    monkeypatch.chdir(tmp_path)
    config = validate_sweep({"model": str(tiny), **GOOD, "transfer_dataset": "mine.jsonl"})
    assert config.transfer_dataset == str(tmp_path / "mine.jsonl")  # Ray workers resolve paths elsewhere
    assert SweepConfig(transfer_dataset="none").transfer_dataset is None  # how the command line says None
    with pytest.raises(SweepInputError, match=r"^transfer_dataset: dataset 'gone\.csv': no such file or folder"):
        validate_sweep({"model": str(tiny), **GOOD, "transfer_dataset": "gone.csv"})


def test_cli_sweep_with_a_bad_dataset_file_is_one_line_exit_2(tiny, tmp_path, capsys, monkeypatch):
    from tensorllm.cli import main

    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is"}\n')
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "--model", str(tiny), "--layers", "last 2", "--ranks", "4,2,1", "--datasets", "mine.jsonl"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"tensorllm sweep: error: datasets: '{tmp_path / 'mine.jsonl'}' cannot be read: "
                          f"{tmp_path / 'mine.jsonl'}:1: missing field(s) ['answer']")
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_config_file_names_your_own_data_and_print_config_writes_it_absolute(tiny, tmp_path, capsys, monkeypatch):
    import yaml

    from tensorllm.cli import main

    (tmp_path / "mine.jsonl").write_text('{"prompt": "The sky is", "answer": "blue"}\n')
    (tmp_path / "sweep.yaml").write_text(f"model: {tiny}\nlayers: last 2\nranks: [[4, 2, 1]]\n"
                                         "datasets: [fever, mine.jsonl]\ntransfer_dataset: none\n")
    monkeypatch.chdir(tmp_path)  # a relative path is read from the folder the command runs in
    assert main(["sweep", "--config", "sweep.yaml", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["datasets"] == ["fever", str(tmp_path / "mine.jsonl")] and printed["transfer_dataset"] is None
