"""Every decoder family, detected from its own modules: detection, full-rank round trips, ``inspect``, overrides.

Each family's tiny random model (tensorllm/tiny_models.py) is saved as a Hugging Face folder, so the
layout is detected the way a user's checkpoint is: from the safetensors headers (names and shapes), with
``model_type`` only a hint. The round trip decomposes layer 1 at full ranks (orthogonal square factors:
the reconstruction is the layer itself up to fp32 rounding), writes it back with ``apply_artifacts`` and
compares the logits with the base model's: a layout that read or wrote a head's block in the wrong place
would move them by far more than the tolerance. The per-head perturbation tests of every family are in
test_layouts.py, factorised-vs-dense in test_factorised.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from tensorllm.artifact import apply_artifacts, load_artifact
from tensorllm.checkpoint import Checkpoint
from tensorllm.cli import main
from tensorllm.decompose import decompose_layer
from tensorllm.layout_detection import detect_layout
from tensorllm.layouts import layout_for
from tensorllm.models import load_model
from tensorllm.tensorise import tensor_shape
from tensorllm.tiny_models import NEW_FAMILIES, build_tiny, sample_input_ids, save_tiny_with_tokenizer

FAMILIES = sorted(set(NEW_FAMILIES) | {"qwen3", "gemma2", "qwen2", "llama_mqa"})
FULL = (1.0, 1.0, 1.0)
LAYER = 1
FULL_RANK_LOGITS_TOL = 1e-4  # full ranks in fp32 (the bound); measured <= 2e-6 on these tiny models
#: multimodal wrappers whose text model holds the layers (Gemma3Config keeps its counts in text_config)
WRAPPED = {"gemma3"}


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: save_tiny_with_tokenizer(name, root / name)[0] for name in FAMILIES}


def logits(model):
    with torch.no_grad():
        return model(input_ids=sample_input_ids()).logits


# ---- detection ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_model_and_config_agree_on_the_layout(name, folders):
    ckpt = Checkpoint(folders[name])  # from the safetensors headers
    model = build_tiny(name)
    from_model = detect_layout(model.state_dict(), model.config)  # from the loaded model's tensors
    from_config = layout_for(model.config)  # from the model's skeleton on the meta device
    assert ckpt.layout == from_model.layout == from_config
    assert ckpt.shape == from_model.shape
    # the checkpoint's prefix is the saved name's (Gemma-3 saves its text model as language_model.model.*)
    assert all(n in ckpt.weight_map for n in ckpt.attention_names(LAYER))


def test_explicit_layout_is_checked_against_the_modules(folders):
    assert Checkpoint(folders["phi3"], layout="phi3").layout.name == "phi3"
    with pytest.raises(ValueError, match=r"layout 'llama' does not match the attention of its first layer\. "
                                         r"Found: model\.layers\.0\..*self_attn\.qkv_proj\.weight \[64, 32\]"):
        Checkpoint(folders["phi3"], layout="llama").shape
    with pytest.raises(ValueError, match=r"Unknown layout 'phi4'; known layouts: llama, phi3, gpt2"):
        Checkpoint(folders["phi3"], layout="phi4").shape


def test_the_modules_decide_not_the_model_type(folders, tmp_path):
    """A Phi-3 checkpoint relabelled ``llama``: the hint says separate q/k/v/o, the tensors say fused qkv_proj."""
    import shutil

    folder = tmp_path / "relabelled"
    shutil.copytree(folders["phi3"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    ckpt = Checkpoint(folder)
    assert ckpt.config.model_type == "llama" and ckpt.layout.name == "phi3"
    assert ckpt.attention_names(0) == ["model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.self_attn.o_proj.weight"]


# ---- full-rank round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("grouping", ["kv", "weighted"])
@pytest.mark.parametrize("name", FAMILIES)
def test_full_rank_round_trip_keeps_logits(name, grouping, folders, tmp_path):
    [record] = decompose_layer(str(folders[name]), layer=LAYER, rank_list=[FULL], grouping=grouping,
                               out_root=tmp_path)
    assert record.rel_error < 1e-5  # orthogonal square factors: fp32 rounding only (on the written weights)
    meta = load_artifact(record.artifact).meta
    assert meta["layout"] == Checkpoint(folders[name]).layout.name
    model, _ = load_model(folders[name])
    before = logits(model)
    applied = apply_artifacts(model, [load_artifact(record.artifact)])
    assert (logits(model) - before).abs().max() <= FULL_RANK_LOGITS_TOL
    applied.restore()
    assert torch.equal(logits(model), before)  # restore is bit-exact


def test_a_variant_is_applied_with_the_layout_it_was_decomposed_with(folders, tmp_path):
    """The artifact records its layout (detected, or given by --layout); applying it reads the model by that
    name, so the sweep's evaluate tasks, which load the model without --layout, use the decomposition's layout.
    A layout that does not fit the model, or one that contradicts --layout, is refused with both names."""
    [record] = decompose_layer(str(folders["falcon"]), layer=LAYER, rank_list=[FULL], layout="falcon",
                               out_root=tmp_path)
    artifact = load_artifact(record.artifact)
    model, _ = load_model(folders["falcon"])
    assert getattr(model.config, "tensorllm_layout", None) is None
    apply_artifacts(model, [artifact]).restore()
    assert model.config.tensorllm_layout == "falcon"

    model, _ = load_model(folders["falcon"], layout="falcon")
    artifact.meta["layout"] = "gpt_neox"  # as if made from another checkpoint
    with pytest.raises(ValueError, match=r"made with the attention layout 'gpt_neox', but the model was loaded "
                                         r"with --layout 'falcon'"):
        apply_artifacts(model, [artifact])
    model, _ = load_model(folders["falcon"])
    with pytest.raises(ValueError, match=r"layout 'gpt_neox' does not match"):
        apply_artifacts(model, [artifact])


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_wrapped_text_model_round_trip_through_the_layout(name, folders, tmp_path):
    """Gemma-3's text model inside the multimodal wrapper: the artifact's dense weights written with the layout."""
    [record] = decompose_layer(str(folders[name]), layer=LAYER, rank_list=[FULL], out_root=tmp_path)
    artifact = load_artifact(record.artifact)
    model, _ = load_model(folders[name])
    before = logits(model)
    state = model.state_dict()
    found = detect_layout(state, model.config)
    assert found.prefix == "model.language_model."  # not the vision tower's model.vision_tower.encoder.
    names = found.layout.qualified(found.layout.attention_names(LAYER), found.prefix).values()
    originals = {n: state[n].clone() for n in names}
    found.layout.write_attention(state, LAYER, found.shape, artifact.dense_attention(), found.prefix)
    assert any(not torch.equal(state[n], originals[n]) for n in names)  # really written (rounding moved bits)
    assert (logits(model) - before).abs().max() <= FULL_RANK_LOGITS_TOL


@pytest.mark.parametrize("name", ["gemma3_text", "olmo2", "qwen3", "stablelm"])
def test_norms_and_rotary_are_untouched(name, folders, tmp_path):
    """Per-head q/k norms, layer norms and rotary buffers are not decomposed: only q/k/v/o weights change."""
    [record] = decompose_layer(str(folders[name]), layer=LAYER, rank_list=[(0.5, 0.5, 0.5)], out_root=tmp_path)
    model, _ = load_model(folders[name])
    layout = layout_for(model.config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    apply_artifacts(model, [load_artifact(record.artifact)])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    prefix = layout.find_prefix(before)
    assert changed == set(layout.qualified(layout.attention_names(LAYER), prefix).values())
    norms = [k for k in before if "norm" in k and f".{LAYER}." in k]
    assert norms  # the family has norms in the layer, and none of them changed
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


# ---- rank specs resolving to the same integers -------------------------------------------------------------
def test_rank_specs_with_the_same_integers_are_decomposed_once(folders, tmp_path):
    # phi3 (4 heads, 2 KV heads): kv tensor (32, 8, 2g+2 = 6, 2); 0.5 of 32 is 16, of 8 is 4, of 6 slices is 3
    records = decompose_layer(str(folders["phi3"]), layer=LAYER, rank_list=[(16, 4, 3), (0.5, 0.5, 0.5), (8, 4, 2)],
                              grouping="kv", out_root=tmp_path, n_iter_max=2)
    assert [r.ranks for r in records] == [[16, 4, 3], [16, 4, 3], [8, 4, 2]]
    assert records[0] is records[1]  # one decomposition, one record, both positions
    assert [r.reused for r in records] == [False, False, False]
    assert len({r.artifact for r in records}) == 2


# ---- inspect -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_inspect_prints_the_layout_and_every_groupings_tensor(name, folders, capsys):
    assert main(["inspect", str(folders[name]), "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out.strip().splitlines()[-1])
    ckpt = Checkpoint(folders[name])
    assert info["layout"] == ckpt.layout.name
    assert f"layout            {ckpt.layout.name}  (detected from the checkpoint's tensors" in out
    for grouping in ("kv", "replicate", "weighted"):
        assert info[f"tensor_shape_{grouping}"] == list(tensor_shape(ckpt.shape, grouping))
        assert f"tensor ({grouping})" in out


def test_cli_layout_override(folders, capsys, tmp_path):
    assert main(["inspect", str(folders["falcon"]), "--layout", "falcon", "--json"]) == 0
    assert "(given by --layout" in capsys.readouterr().out
    assert main(["inspect", str(folders["falcon"]), "--layout", "gpt_neox"]) == 2  # one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("tensorllm inspect: error: Unsupported architecture 'falcon': layout 'gpt_neox' does not match")
    assert main(["decompose", str(folders["falcon"]), "--layer", "1", "--ranks", "16,4,4", "--layout", "falcon",
                 "--grouping", "kv", "--out", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["ranks"] == [16, 4, 4]  # falcon MQA, kv grouping: tensor (32, 8, 10, 1)
