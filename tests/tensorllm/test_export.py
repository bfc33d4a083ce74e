"""Exporting a variant (tensorllm.export) and loading it back, on tiny saved models.

``export_variant(format="factorised")`` writes the factors of the compressed layers instead of their dense
weights; ``load_compressed`` rebuilds the model from ``config.json`` and the safetensors. The loaded model
must compute what ``variant_model(form="dense")`` computes (same factors, another order of the products:
fp32 rounding, ~1e-7 on these tiny models, measured) while the edit itself moves logits by > 5e-2 from
the base. Each variant has a compressing artifact at layer 1 (factorised) and a full-rank one at layer 0
(not smaller factorised: written back dense), so both paths of the report are exercised.

Families: llama_gqa with separate (untied) and tied embeddings (tied weights are stored once, loaded
tied), gpt2 (fused Conv1D c_attn, tied) and gpt_neox (interleaved query_key_value, untied).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from tensorllm.decompose import decompose_layer
from tensorllm.export import (
    CONFIG_KEY,
    EXPORT_FORMAT,
    WEIGHTS_FILE,
    export_variant,
    folder_bytes,
    load_compressed,
    variant_model,
)
from tensorllm.factorised import FACTORS_MODULE, factorised_layers
from tensorllm.models import load_model
from tensorllm.tiny_models import sample_input_ids, save_tiny_with_tokenizer, tiny_config, tiny_tokenizer

NAMES = ["llama_gqa", "llama_gqa_tied", "gpt2", "gpt_neox"]
TIED = {"llama_gqa_tied", "gpt2"}
MATCH_TOL = 1e-4  # exported-and-loaded vs the dense variant, fp32 (measured ~1e-7)
CHANGED = 1e-2  # the layer-1 edit moves logits by >= 5e-2 from the base (measured)


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


def save_tied_llama_gqa(folder: Path) -> Path:
    config = tiny_config("llama_gqa")
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """name -> (base folder, [artifact layer 1 at (0.5, 0.5, 0.5), artifact layer 0 at full rank])."""
    root = tmp_path_factory.mktemp("export_models")
    out = {}
    for name in NAMES:
        folder = save_tied_llama_gqa(root / name) if name == "llama_gqa_tied" else \
            save_tiny_with_tokenizer(name, root / name)[0]
        [low] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root / "artifacts")
        [full] = decompose_layer(str(folder), layer=0, rank_list=[(1.0, 1.0, 1.0)], out_root=root / "artifacts")
        out[name] = (folder, [low.artifact, full.artifact])
    return out


@pytest.fixture(scope="module")
def exports(variants, tmp_path_factory):
    """name -> export_variant's result (factorised), written once per module."""
    root = tmp_path_factory.mktemp("exports")
    return {name: export_variant(str(folder), paths, root / name) for name, (folder, paths) in variants.items()}


def logits(model):
    with torch.no_grad():
        return model(sample_input_ids()).logits


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def generate(model):
    ids = sample_input_ids()
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5,
                              do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_matches_dense_variant(variants, exports, name):
    folder, paths = variants[name]
    info = exports[name]
    model, tokenizer = load_compressed(info["path"])
    dense, _, _ = variant_model(str(folder), paths, "dense")
    base, _ = load_model(folder)
    assert max_diff(logits(model), logits(dense)) <= MATCH_TOL
    assert max_diff(logits(model), logits(base)) > CHANGED  # it is the variant, not the base
    tokens = generate(model)
    assert tokens.shape == (2, 7 + 5)  # 2 x 7 prompt ids, five new tokens each
    assert torch.equal(tokens, generate(dense))
    assert tokenizer("w5 w17").input_ids[-2:] == [5, 17]  # the base's tokenizer came along
    # the loaded model runs layer 1 factorised; layer 0 (full rank) holds its dense weights
    assert list(factorised_layers(model)) and all(".1." in k for k in factorised_layers(model))


@pytest.mark.parametrize("name", NAMES)
def test_export_is_smaller_and_says_what_it_is(variants, exports, name):
    folder, paths = variants[name]
    info = exports[name]
    out = Path(info["path"])
    assert info["format"] == "factorised" and info["bytes"] == folder_bytes(out)
    # layer 1's attention shrinks (e.g. 6,144 -> 2,720 parameters for llama_gqa); nothing else grows
    assert info["bytes"] < folder_bytes(folder)
    section = json.loads((out / "config.json").read_text())[CONFIG_KEY]
    assert section["format"] == EXPORT_FORMAT == "tensorllm-factorised/1"
    assert section["base_model"] == str(folder)
    assert list(section["layers"]) == ["1"]  # layer 0's full-rank artifact is kept dense
    assert [(r["layer"], r["form"]) for r in info["layers"]] == [(1, "factorised"), (0, "dense")]
    assert info["layers"][1]["reason"].startswith("kept dense: factorised would need")
    lineage = json.loads((out / "tensorllm_variant.json").read_text())
    assert lineage["artifacts"] == [str(p) for p in paths] and lineage["base_model"] == str(folder)


@pytest.mark.parametrize("name", NAMES)
def test_tied_weights_are_stored_once_and_load_tied(exports, name):
    model, _ = load_compressed(exports[name]["path"])
    output, inputs = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert (output.data_ptr() == inputs.data_ptr()) == (name in TIED)
    from safetensors import safe_open

    with safe_open(str(Path(exports[name]["path"]) / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
    assert any(f"{FACTORS_MODULE}.U1" in k for k in keys)
    n_embeddings = sum(1 for k in keys if k.endswith(("embed_tokens.weight", "wte.weight", "embed_in.weight",
                                                      "lm_head.weight", "embed_out.weight")))
    assert n_embeddings == (1 if name in TIED else 2)  # tied: one tensor on disk for both ends


def test_dense_export_is_a_plain_hf_folder(variants, tmp_path):
    folder, paths = variants["llama_gqa"]
    dense_info = export_variant(str(folder), paths, tmp_path / "dense", format="dense")
    assert dense_info["format"] == "dense"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(dense_info["path"], dtype=torch.float32).eval()
    expected, _, _ = variant_model(str(folder), paths, "dense")
    assert max_diff(logits(reloaded), logits(expected)) <= 1e-5  # the same fp32 weights written and read back
    assert CONFIG_KEY not in json.loads((Path(dense_info["path"]) / "config.json").read_text())
    with pytest.raises(ValueError, match=r"is not a factorised tensorllm export"):
        load_compressed(dense_info["path"])


def test_unknown_format_is_refused(variants, tmp_path):
    folder, paths = variants["llama_gqa"]
    with pytest.raises(ValueError, match=r"unknown format 'int8'; allowed: factorised, dense"):
        export_variant(str(folder), paths, tmp_path / "x", format="int8")
    assert not (tmp_path / "x").exists()


# ---- bad folders ------------------------------------------------------------------------------------------
def test_loading_a_base_model_folder_is_refused(variants):
    folder, _ = variants["llama_gqa"]
    with pytest.raises(ValueError, match=rf"{folder} is not a factorised tensorllm export: config.json has no "
                                         rf"{CONFIG_KEY} with format '{EXPORT_FORMAT}'"):
        load_compressed(folder)


def copy_export(exports, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(exports["gpt2"]["path"], out)
    return out


def test_missing_weights_file_names_it(exports, tmp_path):
    out = copy_export(exports, tmp_path)
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{out}: model\.safetensors is missing"):
        load_compressed(out)


@pytest.mark.parametrize("keep", [4, 0.5], ids=["header-cut", "data-cut"])
def test_truncated_weights_file_names_it(exports, tmp_path, keep):
    out = copy_export(exports, tmp_path)
    weights = out / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if isinstance(keep, int) else data[: int(len(data) * keep)])
    # safetensors' own message ("incomplete metadata, file not fully covered") does not say which file
    with pytest.raises((ValueError, OSError), match=rf"{weights}"):
        load_compressed(out)


def test_tensor_missing_from_the_export_is_named(exports, tmp_path):
    from safetensors.torch import load_file, save_file

    out = copy_export(exports, tmp_path)
    tensors = load_file(str(out / WEIGHTS_FILE))
    dropped = next(k for k in tensors if k.endswith(f"{FACTORS_MODULE}.U1"))
    del tensors[dropped]
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": EXPORT_FORMAT})
    with pytest.raises(ValueError, match=rf"{out / WEIGHTS_FILE} is damaged"):  # the manifest's check comes first
        load_compressed(out)
    with pytest.raises(ValueError, match=rf"tensors missing from the export: \['{dropped}'\]"):
        load_compressed(out, verify=False)  # the structural check, for a folder whose digests are not checked
