"""Reading one layer straight from safetensors files (tensorllm.checkpoint) against the in-memory model.

Each tiny model is saved with ``save_pretrained``; what :class:`Checkpoint` reads from the files must be
exactly (bit for bit) what the layout reads from the model's ``state_dict()``, for a single
``model.safetensors``, for a sharded checkpoint with ``model.safetensors.index.json``, and for the fused
layouts (GPT-2 ``c_attn`` Conv1D, GPT-NeoX interleaved ``query_key_value``).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tensorllm.checkpoint import INDEX_FILE, SINGLE_FILE, Checkpoint, tensors_digest
from tensorllm.attention_shape import ATTENTION_KINDS
from tensorllm.layouts import layout_for
from tensorllm.tiny_models import N_LAYERS, save_tiny_with_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder, model): single-file checkpoints of several layouts, plus a sharded llama_gqa."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {name: save_tiny_with_tokenizer(name, root / name) for name in ("llama_gqa", "gpt2", "gpt_neox", "opt")}
    # ~14k fp32 params per layer: 20KB shards split every layer's tensors over several files
    out["llama_gqa_sharded"] = save_tiny_with_tokenizer("llama_gqa", root / "sharded", max_shard_size="20KB")
    return out


def model_attention(model, layer):
    sd = model.state_dict()
    layout = layout_for(model.config)
    prefix = layout.find_prefix(sd.keys())
    return layout.read_attention(sd, layer, layout.shape(model.config), prefix), prefix


def model_layer_tensors(model, layer):
    sd = model.state_dict()
    layout = layout_for(model.config)
    prefix = layout.find_prefix(sd.keys())
    names = layout.qualified(layout.attention_names(layer), prefix).values()
    return {n: sd[n] for n in names}, prefix


def assert_same_weights(a, b):
    for kind in ATTENTION_KINDS:
        x, y = getattr(a, kind), getattr(b, kind)
        assert x.shape == y.shape, kind
        assert torch.equal(x, y), kind  # both are views of the same saved fp32 bytes: bit-exact


# ---- reading --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llama_gqa", "llama_gqa_sharded", "gpt2", "gpt_neox", "opt"])
@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_attention_equals_in_memory_model(saved, name, layer):
    folder, model = saved[name]
    ckpt = Checkpoint(folder)
    expected, prefix = model_attention(model, layer)
    assert ckpt.prefix == prefix
    assert_same_weights(ckpt.attention(layer), expected)


def test_sharded_checkpoint_really_is_sharded(saved):
    folder, _ = saved["llama_gqa_sharded"]
    assert (folder / INDEX_FILE).is_file() and not (folder / SINGLE_FILE).exists()
    ckpt = Checkpoint(folder)
    files = {ckpt.weight_map[n] for n in ckpt.attention_names(1)}
    assert len(files) > 1  # the layer's four tensors come from more than one shard (exercises the grouping)


def test_shapes_and_names(saved):
    ckpt = Checkpoint(saved["llama_gqa"][0])
    shape = ckpt.shape
    assert (shape.n_heads, shape.n_kv_heads, shape.d_head, shape.d_model) == (6, 2, 8, 48)
    assert ckpt.n_layers == N_LAYERS
    weights = ckpt.attention(0)
    assert weights.q.shape == (6, 48, 8) and weights.k.shape == (2, 48, 8) and weights.o.shape == (6, 48, 8)
    assert ckpt.attention_names(1) == [f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkvo"]
    # fused layouts read two tensors per layer
    assert Checkpoint(saved["gpt2"][0]).attention_names(0) == ["transformer.h.0.attn.c_attn.weight",
                                                               "transformer.h.0.attn.c_proj.weight"]
    assert Checkpoint(saved["gpt_neox"][0]).attention_names(1) == [
        "gpt_neox.layers.1.attention.query_key_value.weight", "gpt_neox.layers.1.attention.dense.weight"]


def test_tensors_loads_only_what_is_asked(saved):
    folder, model = saved["llama_gqa_sharded"]
    ckpt = Checkpoint(folder)
    names = ["model.layers.0.mlp.up_proj.weight", "model.norm.weight"]
    got = ckpt.tensors(names)
    assert sorted(got) == sorted(names)
    for n in names:
        assert torch.equal(got[n], model.state_dict()[n])


def test_tensors_unknown_name(saved):
    ckpt = Checkpoint(saved["llama_gqa"][0])
    with pytest.raises(KeyError, match=r"'model.layers.0.self_attn.nope.weight' is not in the checkpoint"):
        ckpt.tensors(["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.nope.weight"])


def test_ffn_names(saved):
    ckpt = Checkpoint(saved["gpt2"][0])
    assert ckpt.ffn_name(1, "fc_in") == "transformer.h.1.mlp.c_fc.weight"
    with pytest.raises(ValueError, match=r"FFN matrix 'fc_up' does not exist for gpt2; allowed: \['fc_in', 'fc_out'\]"):
        ckpt.ffn_name(1, "fc_up")


# ---- layer digest ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llama_gqa", "llama_gqa_sharded", "gpt2", "gpt_neox", "opt"])
def test_layer_digest_equals_model_digest(saved, name):
    folder, model = saved[name]
    ckpt = Checkpoint(folder)
    for layer in range(N_LAYERS):
        tensors, prefix = model_layer_tensors(model, layer)
        assert ckpt.layer_digest(layer) == tensors_digest(tensors, strip_prefix=prefix)
    assert ckpt.layer_digest(0) != ckpt.layer_digest(1)  # different layers, different content and names


def test_digest_ignores_the_prefix_but_not_the_names(saved):
    folder, model = saved["llama_gqa"]
    tensors, prefix = model_layer_tensors(model, 1)
    bare = {n.removeprefix(prefix): t for n, t in tensors.items()}  # e.g. a model without the LM head
    assert tensors_digest(bare) == Checkpoint(folder).layer_digest(1)
    renamed = {n.replace("layers.1", "layers.0"): t for n, t in bare.items()}
    assert tensors_digest(renamed) != tensors_digest(bare)


def test_digest_changes_when_one_weight_changes(saved, tmp_path):
    folder, _ = saved["llama_gqa"]
    reference = Checkpoint(folder).layer_digest(1)
    for file in folder.iterdir():
        if file.name != SINGLE_FILE:
            (tmp_path / file.name).write_bytes(file.read_bytes())
    state = load_file(folder / SINGLE_FILE)
    name = "model.layers.1.self_attn.v_proj.weight"
    state[name] = state[name].clone()
    state[name][3, 5] = torch.nextafter(state[name][3, 5], torch.tensor(1.0))  # one ulp in one entry
    save_file(state, tmp_path / SINGLE_FILE, metadata={"format": "pt"})
    edited = Checkpoint(tmp_path)
    assert edited.layer_digest(1) != reference
    assert edited.layer_digest(0) == Checkpoint(folder).layer_digest(0)  # layer 0 untouched


def test_digest_includes_dtype():
    t = {"a": torch.zeros(2, 2)}
    assert tensors_digest(t) != tensors_digest({"a": torch.zeros(2, 2, dtype=torch.float64)})
    assert tensors_digest(t) != tensors_digest({"a": torch.zeros(4)})  # same bytes, other shape


# ---- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [2, -1, 99, True, 1.0, "1"])
def test_bad_layer(saved, layer):
    ckpt = Checkpoint(saved["llama_gqa"][0])
    with pytest.raises(ValueError, match=r"out of range: this model has layers 0\.\.1"):
        ckpt.attention(layer)
    with pytest.raises(ValueError, match=r"layers 0\.\.1"):
        ckpt.layer_digest(layer)


def test_folder_without_config(tmp_path):
    (tmp_path / SINGLE_FILE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json; expected a Hugging Face model folder"):
        Checkpoint(tmp_path)


def test_folder_without_safetensors(saved, tmp_path):
    (tmp_path / "config.json").write_text((saved["llama_gqa"][0] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"neither model\.safetensors nor model\.safetensors\.index\.json "
                                                 r"\(found: \['config\.json', 'pytorch_model\.bin'\]\).*convert \.bin"):
        Checkpoint(tmp_path)


def test_weight_map_comes_from_the_index(saved):
    folder, _ = saved["llama_gqa_sharded"]
    index = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
    assert Checkpoint(folder).weight_map == index
