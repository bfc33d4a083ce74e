"""The ``tensorllm`` command line (tensorllm.cli.main) on a tiny saved GQA Llama, and once on SmolLM2.

With ``--json`` the last line printed must be one JSON object; errors must exit with code 2 and a
message on stderr (argparse errors raise ``SystemExit(2)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tensorllm.artifact import read_meta
from tensorllm.cli import main, parse_ranks
from tensorllm.tiny_models import save_tiny_with_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved llama_gqa: 2 layers, 6 query heads, 2 KV heads, d_head 8, d_model 48."""
    return save_tiny_with_tokenizer("llama_gqa", tmp_path_factory.mktemp("cli") / "llama_gqa")


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_inspect_json(tiny, capsys):
    folder, model = tiny
    assert main(["inspect", str(folder), "--json"]) == 0
    out = capsys.readouterr().out
    info = last_json(out)
    params = sum(model.state_dict()[f"model.layers.0.self_attn.{p}_proj.weight"].numel() for p in "qkvo")
    assert params == 48 * 48 * 2 + 16 * 48 * 2  # q, o: 48x48; k, v: (2 KV heads * 8) x 48
    assert info["layers"] == 2 and info["heads"] == 6 and info["kv_heads"] == 2 and info["head_dim"] == 8
    assert info["d_model"] == 48 and info["mha_params_per_layer"] == params
    assert info["architecture"] == "llama"
    assert info["tensor_shape_kv"] == [48, 8, 8, 2] and info["tensor_shape_replicate"] == [48, 8, 4, 6]
    assert "GQA, group size 3" in out  # the human-readable part comes first


def test_inspect_without_json_prints_no_json(tiny, capsys):
    assert main(["inspect", str(tiny[0])]) == 0
    with pytest.raises(json.JSONDecodeError):
        last_json(capsys.readouterr().out)


def test_decompose_json(tiny, tmp_path, capsys):
    folder, _ = tiny
    code = main(["decompose", str(folder), "--layer", "1", "--ranks", "12,4,3", "--grouping", "kv", "--json",
                 "--out", str(tmp_path)])
    assert code == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["layer"] == 1 and payload["ranks"] == [12, 4, 3] and payload["grouping"] == "kv"
    assert 0 < payload["rel_error"] < 1
    original, compressed = 6144, 48 * 12 + 8 * 4 + 8 * 3 + 2 * 12 * 4 * 3  # see test_artifact for the counts
    assert payload["compression_ratio"] == pytest.approx(original / compressed, rel=1e-12)
    assert payload["seconds"] > 0 and payload["wall_seconds"] >= payload["seconds"]
    assert payload["reused"] is False
    artifact = Path(payload["artifact"])
    assert artifact.is_dir() and artifact.parent.parent == tmp_path
    assert read_meta(artifact)["rel_error"] == payload["rel_error"]


def test_decompose_two_ranks_two_artifacts(tiny, tmp_path, capsys):
    args = ["decompose", str(tiny[0]), "--layer", "0", "--ranks", "12,4,3", "--ranks", "0.5,0.5,1.0",
            "--grouping", "kv", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    payload = last_json(capsys.readouterr().out)
    variants = payload["variants"]
    assert [v["ranks"] for v in variants] == [[12, 4, 3], [24, 4, 8]]  # fractions of (48, 8, 8)
    assert len({v["artifact"] for v in variants}) == 2 and all(Path(v["artifact"]).is_dir() for v in variants)
    # a re-run reuses both
    assert main(args) == 0
    assert all(v["reused"] for v in last_json(capsys.readouterr().out)["variants"])


def test_decompose_replicate_grouping(tiny, tmp_path, capsys):
    args = ["decompose", str(tiny[0]), "--layer", "1", "--ranks", "1.0,1.0,1.0", "--grouping", "replicate",
            "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["grouping"] == "replicate" and payload["ranks"] == [48, 8, 4]
    assert payload["rel_error"] < 1e-5  # full ranks: fp32 rounding only


def test_bad_layer_exits_2(tiny, tmp_path, capsys):
    code = main(["decompose", str(tiny[0]), "--layer", "99", "--ranks", "4,2,1", "--out", str(tmp_path)])
    assert code == 2
    captured = capsys.readouterr()
    assert "tensorllm decompose: error:" in captured.err and "layers 0..1" in captured.err
    assert captured.out == ""
    assert not any(tmp_path.iterdir())


def test_out_of_range_ranks_exit_2(tiny, tmp_path, capsys):
    code = main(["decompose", str(tiny[0]), "--layer", "1", "--ranks", "4,9,1", "--out", str(tmp_path)])
    assert code == 2
    assert "R2 (d_head)=9 is out of range: allowed 1..8" in capsys.readouterr().err


@pytest.mark.parametrize("ranks, message", [
    ("1,2", "--ranks needs three comma-separated values R1,R2,R3; got '1,2'"),
    ("1,2,x", "--ranks value 'x' is neither an integer nor a fraction"),
])
def test_malformed_ranks_are_argparse_errors(tiny, capsys, ranks, message):
    with pytest.raises(SystemExit) as exc:
        main(["decompose", str(tiny[0]), "--layer", "1", "--ranks", ranks])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"tensorllm decompose: error: argument --ranks: {message}\n"  # one line, no usage block


def test_parse_ranks():
    assert parse_ranks("64, 32,4") == (64, 32, 4)
    assert parse_ranks("0.5,1.0,1") == (0.5, 1.0, 1)
    assert isinstance(parse_ranks("0.5,1.0,1")[2], int)  # "1" is the rank 1, "1.0" the whole dimension


def test_missing_layer_option_is_an_argparse_error(tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["decompose", str(tiny[0]), "--ranks", "4,2,1"])
    assert exc.value.code == 2
    assert "--layer" in capsys.readouterr().err


def test_unknown_model_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "no" / "such-model"
    assert main(["inspect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tensorllm inspect: error:") and str(missing) in err
    assert "does not exist; allowed: smollm2-135m, a local Hugging Face folder" in err  # a path: never tried on the hub


def test_folder_without_config_exits_2(tmp_path, capsys):
    assert main(["decompose", str(tmp_path), "--layer", "0", "--ranks", "4,2,1", "--out", str(tmp_path / "o")]) == 2
    assert "has no config.json" in capsys.readouterr().err


# ---- the real model (the acceptance criterion) --------------------------------------------------
@pytest.mark.real_model
def test_real_decompose_matches_tensorly(tmp_path, capsys):
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import partial_tucker
    from tensorly.tenalg import multi_mode_dot

    from tensorllm.checkpoint import Checkpoint
    from tensorllm.models import resolve_model
    from tensorllm.tensorise import tensorise

    try:
        folder = resolve_model("smollm2-135m")
    except ModuleNotFoundError as exc:
        pytest.skip(str(exc))
    code = main(["decompose", "smollm2-135m", "--layer", "15", "--ranks", "64,32,4", "--grouping", "kv",
                 "--balance", "none", "--fit", "weights", "--json", "--out", str(tmp_path)])
    assert code == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["ranks"] == [64, 32, 4] and payload["layer"] == 15
    # 884,736 = 576 * 64 * (2*9 + 2*3); compressed = 576*64 + 64*32 + 8*4 + 3*64*32*4 = 63,520
    assert payload["compression_ratio"] == pytest.approx(884_736 / 63_520, rel=1e-12)

    ckpt = Checkpoint(folder)
    x = tensorise(ckpt.attention(15).to(dtype=torch.float32), ckpt.shape, "kv")
    with tl.backend_context("pytorch"):
        (core, factors), _ = partial_tucker(x, rank=[64, 32, 4], modes=[0, 1, 2])
        theirs = float(torch.linalg.norm(x - multi_mode_dot(core, factors, modes=[0, 1, 2])) / torch.linalg.norm(x))
    print(f"CLI rel_error {payload['rel_error']:.6f} vs TensorLy {theirs:.6f}")
    assert payload["rel_error"] <= theirs + 1e-3  # the issue: never worse than TensorLy by more than 1e-3
    assert payload["rel_error"] == pytest.approx(theirs, abs=1e-3)  # and the same model: not wildly better either


# ---- export ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_artifacts(tiny, tmp_path_factory):
    """[layer 1 at (24, 4, 4): factorised pays off; layer 0 at full rank (48, 8, 8): kept dense]."""
    from tensorllm.decompose import decompose_layer

    folder, _ = tiny
    root = tmp_path_factory.mktemp("export_artifacts")
    [low] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root)
    [full] = decompose_layer(str(folder), layer=0, rank_list=[(1.0, 1.0, 1.0)], out_root=root)
    return [low.artifact, full.artifact]


def test_export_artifact_folders_json(tiny, export_artifacts, tmp_path, capsys):
    from tensorllm.export import EXPORT_FORMAT, folder_bytes, load_compressed

    folder, _ = tiny
    out = tmp_path / "exported"
    assert main(["export", *export_artifacts, "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    payload = last_json(text)
    assert payload["path"] == str(out) and payload["format"] == "factorised"
    assert payload["base_model"] == str(folder)  # recorded in the first artifact's artifact.json
    assert payload["base_bytes"] == folder_bytes(folder) and payload["bytes"] == folder_bytes(out)
    # layer 1's attention: 6,144 -> 2,720 parameters (test_factorised), i.e. 13,696 bytes fewer in fp32
    assert payload["bytes"] < payload["base_bytes"]
    assert [(r["layer"], r["form"]) for r in payload["layers"]] == [(1, "factorised"), (0, "dense")]
    assert payload["source"] == {"artifacts": export_artifacts}
    assert "kept dense: factorised would need" in text and "2,720 parameters instead of 6,144" in text
    assert "bytes on disk" in text.splitlines()[1]
    model, _ = load_compressed(out)
    assert model.config.tensorllm_compression["format"] == EXPORT_FORMAT


def test_export_dense_format(tiny, export_artifacts, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dense"
    assert main(["export", *export_artifacts, "--out", str(out), "--format", "dense", "--json"]) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["format"] == "dense"
    assert [(r["layer"], r["form"], r["reason"]) for r in payload["layers"]] == [(1, "dense", "dense requested"),
                                                                                (0, "dense", "dense requested")]
    # the same tensors as the base, written back: the size differs by the file header at most
    assert abs(payload["bytes"] - payload["base_bytes"]) < 4096
    AutoModelForCausalLM.from_pretrained(out)  # a plain Hugging Face folder


def test_export_base_model_option_is_used(tiny, export_artifacts, tmp_path, capsys):
    other, _ = save_tiny_with_tokenizer("llama_gqa", tmp_path / "other", seed=1)  # same shapes, other weights
    code = main(["export", *export_artifacts, "--out", str(tmp_path / "x"), "--base-model", str(other)])
    assert code == 2
    assert "was made from other weights" in capsys.readouterr().err  # the artifact's identity check


def test_export_unknown_format_exits_2(export_artifacts, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["export", *export_artifacts, "--out", str(out), "--format", "int8"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "tensorllm export: error: unknown format 'int8'; allowed: factorised, dense\n"  # one line
    assert captured.out == "" and not out.exists()


def test_export_nonexistent_path_exits_2(export_artifacts, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such-artifact")
    assert main(["export", export_artifacts[0], missing, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tensorllm export: error: ")
    assert f"artifact folder {missing!r} does not exist" in err
    assert main(["export", missing, "--out", str(tmp_path / "x")]) == 2  # alone: not a registry spec either
    assert f"artifact folder {missing!r} does not exist" in capsys.readouterr().err


def test_export_folder_that_is_not_an_artifact_exits_2(tiny, tmp_path, capsys):
    assert main(["export", str(tiny[0]), "--out", str(tmp_path / "x")]) == 2  # a model folder, not an artifact
    assert "is not a tensorllm artifact" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess or many generations: left out of `make test-fast`
def test_export_registry_spec(tiny, export_artifacts, tmp_path, capsys):
    from tensorllm.export import load_compressed
    from tensorllm.registry import Registry, VariantRecord

    folder, _ = tiny
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    registry = Registry(uri)
    record = VariantRecord(key="k-export", name="layer1-r24x4x4+layer0-full", base_model=str(folder),
                           artifacts=list(export_artifacts))
    version = registry.register_variant(record, "tiny-export")
    registry.set_champion("tiny-export", version, {"reason": "test"})
    out = tmp_path / "from-registry"
    assert main(["export", "tiny-export@champion", "--tracking-uri", uri, "--out", str(out), "--json"]) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["base_model"] == str(folder) and payload["format"] == "factorised"
    assert [(r["layer"], r["form"]) for r in payload["layers"]] == [(1, "factorised"), (0, "dense")]
    assert payload["source"]["resolved"] == "tiny-export@champion" and payload["source"]["version"] == version
    load_compressed(out)
    # an unknown registered model: one line, exit 2, says what was tried
    assert main(["export", "no-such-model@champion", "--tracking-uri", uri, "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'no-such-model@champion' is not an artifact folder, and as a registry spec: no registered model" in err
    # --base-model belongs to artifact folders
    assert main(["export", "tiny-export/1", "--tracking-uri", uri, "--out", str(tmp_path / "z"),
                 "--base-model", str(folder)]) == 2
    assert "--base-model goes with artifact folders" in capsys.readouterr().err


def test_help_says_what_the_tool_does_and_shows_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "Tucker-decomposed with shared factors" in out and "examples:" in out
    assert "    tensorllm sweep --json" in out and "``" not in out  # plain text, not the docstring's RST
