"""Whole-model size of a composed variant (tensorllm.composed.whole_model_size), counted from headers and metadata.

The counts must agree with what is really in the model and with what ``export_variant`` really writes:
parameters from the model's own modules, bytes from the exported ``model.safetensors``, whose size is the
8-byte length, the JSON header and the tensor data, so ``exported bytes - bytes_after`` is exactly the
export's header (the count has no header; the tensors' bytes are the same).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorllm.artifact import read_meta
from tensorllm.composed import checkpoint_tensor_sizes, whole_model_size
from tensorllm.decompose import decompose_layer, laser_layer
from tensorllm.export import WEIGHTS_FILE, export_variant, folder_bytes
from tensorllm.factorised import factorised_cost, factorised_layers
from tensorllm.attention_shape import AttentionShape
from tensorllm.models import load_model
from tensorllm.tiny_models import N_LAYERS, save_tiny_with_tokenizer

LOW = (0.5, 0.5, 0.5)
FULL = (1.0, 1.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (folder, {(layer, ranks): artifact folder}) for llama_gqa and gpt2 (fused, biases, tied)."""
    root = tmp_path_factory.mktemp("composed")
    out = {}
    for name in ("llama_gqa", "gpt2"):
        folder, _ = save_tiny_with_tokenizer(name, root / name)
        artifacts = {}
        for layer in range(N_LAYERS):
            low, full = decompose_layer(str(folder), layer=layer, rank_list=[LOW, FULL], out_root=root / "artifacts")
            artifacts[(layer, LOW)], artifacts[(layer, FULL)] = low.artifact, full.artifact
        out[name] = (folder, artifacts)
    return out


def header_bytes(file: Path) -> int:
    """The 8-byte length plus the JSON header of a safetensors file."""
    with open(file, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_no_artifacts_counts_the_checkpoint(tiny, name):
    folder, _ = tiny[name]
    model, _ = load_model(folder)
    size = whole_model_size(str(folder), [])
    shape = AttentionShape(**read_meta(tiny[name][1][(0, LOW)])["attention_shape"])
    # the four projection weights of every layer (biases are not MHA weights: the paper's CR counts weights)
    assert size.attention_params_before == N_LAYERS * shape.n_params
    assert size.attention_params_after == size.attention_params_before
    # every tensor of the checkpoint once (tied embeddings are one tensor in the file and in the model)
    assert size.total_params_before == sum(p.numel() for p in model.parameters())
    assert size.bytes_before == 4 * size.total_params_before  # fp32
    assert size.bytes_before == folder_bytes(folder) - header_bytes(Path(folder) / "model.safetensors")
    assert size.layers_factorised == size.layers_kept_dense == ()
    assert size.attention_compression_ratio == 1.0


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_counts_agree_with_the_installed_model_and_the_export(tiny, name, tmp_path):
    folder, artifacts = tiny[name]
    paths = [artifacts[(1, LOW)], artifacts[(0, LOW)]]
    metas = [read_meta(p) for p in paths]
    size = whole_model_size(str(folder), metas)
    before = whole_model_size(str(folder), [])
    shape = AttentionShape(**metas[0]["attention_shape"])
    per_layer = [factorised_cost(shape, *m["ranks"][:2]).factorised_params for m in metas]
    assert size.attention_params_after == before.attention_params_before - 2 * shape.n_params + sum(per_layer)
    assert size.total_params_after == before.total_params_before - 2 * shape.n_params + sum(per_layer)
    assert size.bytes_after == size.bytes_before - 4 * (2 * shape.n_params - sum(per_layer))  # fp32
    assert size.layers_factorised == (0, 1) and size.layers_kept_dense == ()
    assert size.attention_compression_ratio == pytest.approx(2 * shape.n_params / sum(per_layer), rel=1e-12)

    info = export_variant(str(folder), paths, tmp_path / "export")
    weights = Path(info["path"]) / WEIGHTS_FILE
    assert info["bytes"] - size.bytes_after == header_bytes(weights)  # the data bytes agree exactly
    from tensorllm.export import load_compressed

    model, _ = load_compressed(info["path"])
    assert sum(p.numel() for p in model.parameters()) == size.total_params_after
    assert sum(p.numel() for f in factorised_layers(model).values() for p in f.parameters()) == sum(per_layer)


def test_full_rank_artifact_is_counted_as_kept_dense(tiny):
    folder, artifacts = tiny["llama_gqa"]
    size = whole_model_size(str(folder), [read_meta(artifacts[(0, FULL)]), read_meta(artifacts[(1, LOW)])])
    assert size.layers_kept_dense == (0,) and size.layers_factorised == (1,)
    # layer 0 keeps its 6,144 dense weights; layer 1 goes from 6,144 to 2,720 (48*24 + 8*4 + 24*4*16)
    assert size.attention_params_after == 6144 + 2720
    metrics = size.metrics()
    assert metrics["n_layers_factorised"] == 1.0 and metrics["attention_params_after"] == 8864.0
    assert metrics["attention_compression_ratio"] == pytest.approx(12288 / 8864, rel=1e-12)


def test_two_artifacts_on_one_layer_are_refused(tiny):
    folder, artifacts = tiny["llama_gqa"]
    with pytest.raises(ValueError, match=r"two Tucker artifacts edit layer 1; a composed variant edits each layer once"):
        whole_model_size(str(folder), [read_meta(artifacts[(1, LOW)]), read_meta(artifacts[(1, FULL)])])


def test_laser_artifacts_do_not_change_the_count(tiny, tmp_path):
    folder, artifacts = tiny["llama_gqa"]
    laser = laser_layer(str(folder), 1, "fc_in", 0.1, out_root=tmp_path)
    with_laser = whole_model_size(str(folder), [read_meta(artifacts[(1, LOW)]), read_meta(laser.artifact)])
    assert with_laser == whole_model_size(str(folder), [read_meta(artifacts[(1, LOW)])])  # written back dense


def test_checkpoint_tensor_sizes_reads_headers_only(tiny):
    folder, _ = tiny["llama_gqa"]
    sizes = checkpoint_tensor_sizes(Path(folder))
    assert sizes["model.layers.0.self_attn.k_proj.weight"] == (16 * 48, 16 * 48 * 4)  # 2 KV heads x 8, fp32
    model, _ = load_model(folder)
    assert {k: v.numel() for k, v in model.state_dict().items()} == {k: e for k, (e, _) in sizes.items()}


@pytest.mark.real_model
def test_real_model_last_four_layers():
    from tensorllm.models import resolve_model

    try:
        resolve_model("smollm2-135m")
    except ModuleNotFoundError as exc:
        pytest.skip(str(exc))
    shape = AttentionShape(n_heads=9, n_kv_heads=3, d_head=64, d_model=576)
    metas = [{"kind": "tucker_mha", "layer": layer, "ranks": [288, 32, 4], "attention_shape": vars(shape)}
             for layer in (26, 27, 28, 29)]
    size = whole_model_size("smollm2-135m", metas)
    assert size.attention_params_before == 30 * 884_736  # 576 * 64 * (2*9 + 2*3) per layer
    # factorised at (288, 32): 576*288 + 64*32 + 288*32*24 = 389,120 per layer
    assert size.attention_params_after == 30 * 884_736 - 4 * (884_736 - 389_120)
    assert size.layers_factorised == (26, 27, 28, 29)
    assert size.total_params_before == 134_515_008  # SmolLM2-135M, tied embeddings counted once
    assert size.bytes_after == size.bytes_before - 4 * 4 * (884_736 - 389_120)  # fp32 checkpoint
