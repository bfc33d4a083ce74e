"""Attention layouts (tensorllm.layouts) against tiny random models of every supported architecture.

The central check is semantic: the block a layout reads as head ``h`` must be the block the model
uses for head ``h``. We perturb one head's block through ``read_attention -> modify -> write_attention``
and watch the input of the attention output projection (the concatenated per-head outputs): only that
head's columns (or, for a K/V block under GQA, the columns of the query heads sharing that KV head)
may move. For O, the change of the projection's output must be exactly ``input_h @ delta^T``.

A second, finer observable separates Q from K from V (which the output columns alone cannot: a layout
that swapped Q and K would still be head-local): wrapping the modeling file's ``eager_attention_forward``
captures the per-head ``query``/``key``/``value`` the model actually attends with. Perturbing ``q[h]`` by
``delta`` must move ``query[:, h]`` only, by ``x @ delta`` (up to the rotary rotation, which keeps norms).
"""

from __future__ import annotations

import copy
import sys
import types

import pytest
import torch
import transformers

from tensorllm.attention_shape import ATTENTION_KINDS, AttentionWeights
from tensorllm.layouts import (SUPPORTED_MODEL_TYPES, BertLayout, FalconLayout, GPT2Layout, GPTBigCodeLayout, GPTJLayout,
                               GPTNeoXLayout, LlamaLayout, OPTLayout, Phi3Layout, layout_for)
from tensorllm.tiny_models import (
    ATTENTION_MODULE,
    ATTENTION_OUT_PROJ,
    ROTARY,
    TINY_CONFIGS,
    build_tiny,
    sample_input_ids,
    tiny_config,
)

ARCHS = sorted(TINY_CONFIGS)

#: expected (layout class, n_heads, n_kv_heads, d_head, d_model)
EXPECTED = {
    "llama": (LlamaLayout, 4, 4, 8, 32),
    "llama_gqa": (LlamaLayout, 6, 2, 8, 48),
    "llama_mqa": (LlamaLayout, 4, 1, 8, 32),
    "qwen3": (LlamaLayout, 4, 2, 8, 32),
    "gemma2": (LlamaLayout, 4, 1, 16, 32),  # head_dim 16 != 32 / 4
    "mistral": (LlamaLayout, 4, 2, 8, 32),
    "qwen2": (LlamaLayout, 4, 2, 8, 32),
    "gpt2": (GPT2Layout, 4, 4, 8, 32),
    "gptj": (GPTJLayout, 4, 4, 8, 32),
    "gpt_neox": (GPTNeoXLayout, 4, 4, 8, 32),
    "opt": (OPTLayout, 4, 4, 8, 32),
    "bert": (BertLayout, 4, 4, 8, 32),
    "roberta": (BertLayout, 4, 4, 8, 32),
    "gemma": (LlamaLayout, 4, 2, 8, 32),
    "gemma3_text": (LlamaLayout, 4, 1, 16, 32),  # head_dim 16 != 32 / 4; MQA
    "gemma3": (LlamaLayout, 4, 1, 16, 32),  # the text config inside the multimodal wrapper
    "phi3": (Phi3Layout, 4, 2, 8, 32),
    "falcon": (FalconLayout, 4, 1, 8, 32),  # multi_query=True: one KV head whatever num_kv_heads says
    "falcon_gqa": (FalconLayout, 4, 2, 8, 32),
    "starcoder2": (LlamaLayout, 4, 2, 8, 32),
    "olmo": (LlamaLayout, 4, 2, 8, 32),
    "olmo2": (LlamaLayout, 4, 2, 8, 32),
    "cohere": (LlamaLayout, 4, 2, 8, 32),
    "granite": (LlamaLayout, 4, 2, 8, 32),
    "stablelm": (LlamaLayout, 4, 2, 8, 32),
    "gpt_bigcode": (GPTBigCodeLayout, 4, 1, 8, 32),
    "mixtral": (LlamaLayout, 4, 2, 8, 32),
}

#: prefix of the attention names for (task-head model, bare model)
PREFIXES = {
    "llama": ("model.", ""), "llama_gqa": ("model.", ""), "mistral": ("model.", ""), "qwen2": ("model.", ""),
    "llama_mqa": ("model.", ""), "qwen3": ("model.", ""), "gemma2": ("model.", ""),
    "gpt2": ("transformer.", ""), "gptj": ("transformer.", ""), "gpt_neox": ("gpt_neox.", ""),
    "opt": ("model.decoder.", "decoder."), "bert": ("bert.encoder.", "encoder."),
    "roberta": ("roberta.encoder.", "encoder."),
    **{name: ("model.", "") for name in ("gemma", "gemma3_text", "phi3", "starcoder2", "olmo", "olmo2", "cohere",
                                         "granite", "stablelm", "mixtral")},
    "gemma3": ("model.language_model.", "language_model."),  # next to model.vision_tower.encoder.layers.*
    "falcon": ("transformer.", ""), "falcon_gqa": ("transformer.", ""), "gpt_bigcode": ("transformer.", ""),
}

#: architectures whose attention projections carry biases (Qwen2: q/k/v only)
BIASED = {"qwen2", "gpt2", "gpt_neox", "opt", "bert", "roberta", "starcoder2", "falcon_gqa", "gpt_bigcode"}


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """One pristine tiny model per architecture; tests that modify weights work on a deepcopy."""
    return {name: build_tiny(name) for name in ARCHS}


def _layout_parts(model):
    sd = model.state_dict()
    layout = layout_for(model.config)
    return sd, layout, layout.shape(model.config), layout.find_prefix(sd)


def _attention_tensor_names(layout, prefix, n_layers) -> set[str]:
    return {prefix + n for layer in range(n_layers) for n in layout.attention_names(layer).values()}


# ---- layout_for / shape / names -----------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHS)
def test_layout_for_and_shape(name):
    config = tiny_config(name)
    cls, n_heads, n_kv, d_head, d_model = EXPECTED[name]
    layout = layout_for(config)  # matched on the model's skeleton, built from the config on the meta device
    assert type(layout) is cls
    assert config.model_type in layout.model_types  # the hint agrees with the structure
    shape = layout.shape(config)
    assert (shape.n_heads, shape.n_kv_heads, shape.d_head, shape.d_model) == (n_heads, n_kv, d_head, d_model)
    assert shape.group_size == n_heads // n_kv
    assert layout.n_layers(config) == 2


@pytest.mark.parametrize(
    "config",
    [types.SimpleNamespace(model_type="foo"), types.SimpleNamespace()],
    ids=["foo", "no_model_type"],
)
def test_layout_for_without_structure_lists_supported(config):
    # a bare namespace has no modules to match: only the model_type hint can decide
    with pytest.raises(ValueError, match=r"Unsupported architecture .*Supported model types: .*llama.*gpt2") as info:
        layout_for(config)
    for model_type in SUPPORTED_MODEL_TYPES:
        assert model_type in str(info.value)


def test_unknown_structure_lists_what_was_found_and_the_layouts():
    config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, num_layers=1, num_heads=4)
    with pytest.raises(ValueError) as info:
        layout_for(config)
    message = str(info.value)
    assert message.startswith("Unsupported architecture 't5': no known layout matches the attention of its first layer")
    # the layer's modules with their shapes, the head counts read, and every known layout with its expected tensors
    assert "decoder.block.0.layer.0.SelfAttention.q.weight [32, 32]" in message  # the first layer-0 stem, sorted
    assert "4 heads, 4 KV heads, head dim 8, d_model 32" in message
    assert "llama (layers.0.self_attn.q_proj.weight [32, 32]" in message
    assert "falcon (h.0.self_attention.query_key_value.weight [96, 32]" in message


def test_model_type_is_only_a_hint():
    # a Llama relabelled as an unknown type is still a Llama: its modules decide
    model = build_tiny("llama_gqa")
    config = copy.deepcopy(model.config)
    config.model_type = "my_new_decoder"
    assert type(layout_for(config, model.state_dict())) is LlamaLayout
    # and a hint that disagrees with the modules loses: a GPT-BigCode relabelled "gpt2" keeps its Linear c_attn
    bigcode = build_tiny("gpt_bigcode")
    config = copy.deepcopy(bigcode.config)
    config.model_type = "gpt2"
    assert type(layout_for(config, bigcode.state_dict())) is GPTBigCodeLayout


@pytest.mark.parametrize("name", ARCHS)
def test_config_only_hint_agrees_with_the_skeleton(name):
    """Without tensors, a known model_type gives its layout directly; the structure (the model's skeleton built
    from the same config on the meta device) must say the same, FFN names included."""
    from tensorllm.layout_detection import detect_layout, skeleton_shapes

    config = tiny_config(name)
    assert detect_layout(skeleton_shapes(config), config).layout == layout_for(config)


def test_unknown_model_type_is_matched_on_its_skeleton():
    config = tiny_config("phi3")
    config.model_type = "my_new_decoder"  # no hint: the skeleton built from the config decides
    assert type(layout_for(config)) is Phi3Layout


def test_supported_types_cover_every_tiny_model():
    assert {tiny_config(name).model_type for name in ARCHS} <= set(SUPPORTED_MODEL_TYPES)


def test_shape_rejects_heads_not_a_multiple_of_kv_heads():
    config = types.SimpleNamespace(num_attention_heads=6, num_key_value_heads=4, hidden_size=48)
    with pytest.raises(ValueError, match="not a multiple"):
        LlamaLayout().shape(config)


@pytest.mark.parametrize("name", ARCHS)
def test_find_prefix_task_head_and_bare_model(name, models):
    with_head, bare = PREFIXES[name]
    layout = layout_for(models[name].config)
    assert layout.find_prefix(models[name].state_dict()) == with_head
    assert layout.find_prefix(build_tiny(name, task_head=False).state_dict()) == bare
    with pytest.raises(KeyError, match="no layer named"):
        layout.find_prefix(["lm_head.weight"])


def test_build_tiny_is_deterministic():
    a, b = build_tiny("llama_gqa").state_dict(), build_tiny("llama_gqa").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_tiny("llama_gqa", seed=1).state_dict()
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"])


# ---- read / write -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHS)
def test_read_shapes(name, models):
    sd, layout, shape, prefix = _layout_parts(models[name])
    for layer in range(2):
        w = layout.read_attention(sd, layer, shape, prefix)
        assert w.q.shape == (shape.n_heads, shape.d_model, shape.d_head)
        assert w.o.shape == (shape.n_heads, shape.d_model, shape.d_head)
        assert w.k.shape == (shape.n_kv_heads, shape.d_model, shape.d_head)
        assert w.v.shape == (shape.n_kv_heads, shape.d_model, shape.d_head)
        assert all(getattr(w, kind).dtype == torch.float32 for kind in ATTENTION_KINDS)


@pytest.mark.parametrize("name", ARCHS)
def test_write_of_read_into_copy_is_bit_exact(name, models):
    sd, layout, shape, prefix = _layout_parts(models[name])
    attention = _attention_tensor_names(layout, prefix, 2)
    # every attention tensor of the copy starts as NaN, so an element the write misses cannot compare equal
    target = {k: (torch.full_like(v, float("nan")) if k in attention else v.clone()) for k, v in sd.items()}
    for layer in range(2):
        layout.write_attention(target, layer, shape, layout.read_attention(sd, layer, shape, prefix), prefix)
    assert target.keys() == sd.keys()
    for key in sd:
        assert torch.equal(target[key], sd[key]), key


@pytest.mark.parametrize("name", ARCHS)
def test_write_into_state_dict_edits_model_in_place(name, models):
    model = copy.deepcopy(models[name])
    sd, layout, shape, prefix = _layout_parts(model)
    before = {k: v.clone() for k, v in sd.items()}
    layer = 1
    new = layout.read_attention(sd, layer, shape, prefix).clone()
    generator = torch.Generator().manual_seed(0)
    for kind in ATTENTION_KINDS:
        getattr(new, kind).add_(torch.randn(getattr(new, kind).shape, generator=generator))
    layout.write_attention(sd, layer, shape, new, prefix)

    names = layout.qualified(layout.attention_names(layer), prefix)
    for full in names.values():
        param = model.get_parameter(full)
        assert param.data_ptr() == sd[full].data_ptr()  # state-dict tensors share storage with the parameters
        assert torch.equal(param, sd[full])
        assert not torch.equal(param, before[full])
    # a fresh state_dict of the model reads back exactly what was written
    again = layout.read_attention(model.state_dict(), layer, shape, prefix)
    for kind in ATTENTION_KINDS:
        assert torch.equal(getattr(again, kind), getattr(new, kind)), kind
    # nothing else moved: other layer, biases, embeddings, norms, FFN
    for key, value in model.state_dict().items():
        if key not in names.values():
            assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", sorted(BIASED))
def test_biases_untouched(name, models):
    model = copy.deepcopy(models[name])
    sd, layout, shape, prefix = _layout_parts(model)
    biases = {}
    for layer in range(2):
        for module_weight in layout.qualified(layout.attention_names(layer), prefix).values():
            bias = module_weight.removesuffix("weight") + "bias"
            if bias in sd:
                biases[bias] = sd[bias].clone()
    # Qwen2 has q/k/v biases (3 tensors per layer, none on o); the others bias every projection
    n_attention_tensors = len(layout.attention_names(0))
    assert len(biases) == 2 * (3 if name == "qwen2" else n_attention_tensors)
    for layer in range(2):
        w = layout.read_attention(sd, layer, shape, prefix).clone()
        for kind in ATTENTION_KINDS:
            getattr(w, kind).mul_(-3.0).add_(1.0)
        layout.write_attention(sd, layer, shape, w, prefix)
    for bias, value in biases.items():
        assert torch.equal(sd[bias], value), bias


def test_write_keeps_stored_dtype(models):
    sd, layout, shape, prefix = _layout_parts(models["llama_gqa"])
    target = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    w = layout.read_attention(sd, 0, shape, prefix)
    layout.write_attention(target, 0, shape, w, prefix)
    for full in layout.qualified(layout.attention_names(0), prefix).values():
        assert target[full].dtype == torch.bfloat16
        assert torch.equal(target[full], sd[full].to(torch.bfloat16))


@pytest.mark.parametrize("name", ARCHS)
def test_n_params_matches_real_weights(name, models):
    sd, layout, shape, prefix = _layout_parts(models[name])
    for layer in range(2):
        names = layout.qualified(layout.attention_names(layer), prefix)
        assert sum(sd[n].numel() for n in names.values()) == shape.n_params
    if shape.n_kv_heads < shape.n_heads:  # GQA: K/V smaller than Q/O
        assert shape.n_params < 4 * shape.d_model * shape.n_heads * shape.d_head


@pytest.mark.parametrize("name", ARCHS)
def test_ffn_names_exist(name, models):
    sd, layout, shape, prefix = _layout_parts(models[name])
    for layer in range(2):
        names = layout.ffn_names(layer)
        if name == "mixtral":  # MoE: the experts are not one matrix; LASER leaves them alone
            assert names == {}
            continue
        assert {"fc_in", "fc_out"} <= names.keys() <= {"fc_in", "fc_up", "fc_out"}
        for role, rel in names.items():
            weight = sd[prefix + rel]
            assert weight.ndim == 2 and shape.d_model in weight.shape, (role, rel)
            assert weight.shape != (shape.d_model, shape.d_model), (role, rel)  # an FFN matrix, not attention


# ---- semantics: head h of the layout is head h of the model -------------------------------------


def _run_capturing(model, name, input_ids):
    """Run the model; return {layer: (input, output)} of each layer's attention output projection."""
    modules = {ATTENTION_OUT_PROJ[name].format(l=layer): layer for layer in range(2)}
    return {modules[m]: io for m, io in _projection_outputs(model, list(modules), input_ids).items()}


def _perturbed_copy(model, layer, kind, index, delta):
    model = copy.deepcopy(model)
    sd, layout, shape, prefix = _layout_parts(model)
    w = layout.read_attention(sd, layer, shape, prefix).clone()
    getattr(w, kind)[index] += delta
    layout.write_attention(sd, layer, shape, w, prefix)
    return model


def _head_cols(records, layer, d_head):
    """Layer's projection input split per head: [n_heads, batch, seq, d_head]."""
    x = records[layer][0]
    return x.reshape(*x.shape[:-1], -1, d_head).movedim(-2, 0)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("name", ARCHS)
def test_qkv_block_drives_only_its_heads(name, kind, models):
    if name in LAYER_WIDE_QK_NORM and kind != "v":
        pytest.skip("a layer-wide q/k norm couples every head's queries/keys (see LAYER_WIDE_QK_NORM)")
    model = models[name]
    _, _, shape, _ = _layout_parts(model)
    ids = sample_input_ids()
    base = _run_capturing(model, name, ids)
    n_blocks = shape.n_heads if kind == "q" else shape.n_kv_heads
    generator = torch.Generator().manual_seed(42)
    for layer in range(2):
        for index in range(n_blocks):
            # O(0.5) entries against weights initialised at std ~0.02: a large, unmistakable change
            delta = 0.5 * torch.randn(shape.d_model, shape.d_head, generator=generator)
            run = _run_capturing(_perturbed_copy(model, layer, kind, index, delta), name, ids)
            for earlier in range(layer):  # layers before the perturbed one see nothing
                assert torch.equal(run[earlier][0], base[earlier][0])
            heads = [index] if kind == "q" else list(range(index * shape.group_size, (index + 1) * shape.group_size))
            old, new = _head_cols(base, layer, shape.d_head), _head_cols(run, layer, shape.d_head)
            for h in range(shape.n_heads):
                change = (new[h] - old[h]).abs().max().item()
                if h in heads:
                    # fp32 noise is ~1e-7; a real change from the O(0.5) perturbation is orders larger
                    assert change > 1e-4, f"layer {layer} {kind}[{index}] did not change head {h}"
                else:
                    # other heads run the identical computation on identical inputs; 1e-6 only guards fp noise
                    assert change <= 1e-6, f"layer {layer} {kind}[{index}] changed head {h} by {change}"


def _run_capturing_qkv(model, name, input_ids, monkeypatch):
    """Run the model; return {layer: (x, query, key, value)} as the attention function receives them."""
    modeling = sys.modules[type(model).__module__]
    original = modeling.eager_attention_forward
    layers = {id(model.get_submodule(ATTENTION_MODULE[name].format(l=layer))): layer for layer in range(2)}
    records, inputs, hooks = {}, {}, []

    def capture(module, query, key, value, *args, **kwargs):
        # OPT multiplies the query by 1/sqrt(d_head) itself and passes scaling=1.0; rescale every query to the
        # un-scaled projection x @ W^Q so that all architectures compare alike
        standard = query.shape[-1] ** -0.5
        scaling = kwargs.get("scaling") or standard
        query = query * (scaling / standard) if scaling != standard else query
        records[layers[id(module)]] = (query.detach().clone(), key.detach().clone(), value.detach().clone())
        return original(module, query, key, value, *args, **kwargs)

    for layer in range(2):
        module = model.get_submodule(ATTENTION_MODULE[name].format(l=layer))

        def pre_hook(_module, args, kwargs, layer=layer):
            inputs[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        hooks.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    with monkeypatch.context() as patch:
        patch.setattr(modeling, "eager_attention_forward", capture)
        try:
            with torch.no_grad():
                model(input_ids=input_ids)
        finally:
            for handle in hooks:
                handle.remove()
    assert records.keys() == inputs.keys() == {0, 1}, "the attention function was not called once per layer"
    return {layer: (inputs[layer], *records[layer]) for layer in range(2)}


#: the captured Q/K of these are not x @ W_i: Qwen3, Gemma-3 and OLMo-2 normalise q and k (q_norm, k_norm; OLMo-2
#: over all heads at once), Gemma-2 and Granite rescale the query by their own factor, and Falcon computes its
#: attention inline (no eager_attention_forward to capture); their blocks are checked at the projections' outputs
#: (test_projection_output_moves_only_that_heads_features) and through the factorised-vs-dense test
NONLINEAR_QK = {"qwen3", "gemma2", "gemma3_text", "gemma3", "olmo2", "granite", "falcon", "falcon_gqa"}
#: a layer-wide q/k norm (RMS over all heads together) makes a Q/K block move every head's scores: the
#: head-locality test below holds for V and O only; the projection-output test covers Q and K
LAYER_WIDE_QK_NORM = {"olmo2"}


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("name", [a for a in ARCHS if a not in NONLINEAR_QK])
def test_qkv_block_is_the_models_projection_of_that_head(name, kind, models, monkeypatch):
    model = models[name]
    _, _, shape, _ = _layout_parts(model)
    ids = sample_input_ids()
    base = _run_capturing_qkv(model, name, ids, monkeypatch)
    slot = {"q": 1, "k": 2, "v": 3}[kind]
    n_blocks = shape.n_heads if kind == "q" else shape.n_kv_heads
    generator = torch.Generator().manual_seed(3)
    for layer in range(2):
        for index in range(n_blocks):
            delta = 0.5 * torch.randn(shape.d_model, shape.d_head, generator=generator)
            run = _run_capturing_qkv(_perturbed_copy(model, layer, kind, index, delta), name, ids, monkeypatch)
            x = base[layer][0]
            assert torch.equal(run[layer][0], x)  # the layer's input does not depend on its own attention
            for other in (1, 2, 3):  # the other two projections are untouched
                if other != slot:
                    assert torch.equal(run[layer][other], base[layer][other]), (kind, other)
            assert run[layer][slot].shape[1] == n_blocks  # [batch, heads, seq, d_head], KV heads unrepeated
            change = run[layer][slot] - base[layer][slot]
            others = torch.cat([change[:, :index], change[:, index + 1:]], dim=1)
            # the same GEMM on unchanged weight rows; 1e-6 only guards fp noise (MQA: K/V have no other head)
            assert others.numel() == 0 or others.abs().max() <= 1e-6, f"layer {layer} {kind}[{index}] moved other heads"
            head_change = change[:, index]  # [batch, seq, d_head]
            expected = x @ delta  # the block in paper orientation: x @ W_i
            if kind == "v" or name not in ROTARY:
                # fp32 difference of two projections with O(1) terms: rounding ~1e-7, 1e-5 leaves margin
                torch.testing.assert_close(head_change, expected, atol=1e-5, rtol=1e-5)
            else:
                # rotary rotates each position's vector (orthogonal map), so only the norms must agree;
                # a mis-sliced block would give a different vector norm, not a rotated copy
                torch.testing.assert_close(head_change.norm(dim=-1), expected.norm(dim=-1), atol=1e-5, rtol=1e-5)
            assert expected.abs().max() > 1e-2  # the identity is not vacuous


@pytest.mark.parametrize("name", ARCHS)
def test_o_block_is_the_output_projection_of_its_head(name, models):
    model = models[name]
    _, _, shape, _ = _layout_parts(model)
    ids = sample_input_ids()
    base = _run_capturing(model, name, ids)
    generator = torch.Generator().manual_seed(7)
    d = shape.d_head
    for layer in range(2):
        for h in range(shape.n_heads):
            delta = 0.5 * torch.randn(shape.d_model, d, generator=generator)
            run = _run_capturing(_perturbed_copy(model, layer, "o", h, delta), name, ids)
            x, y_old = base[layer]
            assert torch.equal(run[layer][0], x)  # O does not feed its own input
            expected = x[..., h * d:(h + 1) * d] @ delta.T  # o[h] = (W^O_h)^T multiplies head h's columns only
            # difference of two fp32 matmuls with O(1) terms: rounding is ~1e-7, 1e-5 leaves ample margin
            torch.testing.assert_close(run[layer][1] - y_old, expected, atol=1e-5, rtol=1e-5)
            assert expected.abs().max() > 1e-3  # the identity is not vacuous


@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox"])
def test_o_block_has_no_effect_when_its_head_is_silenced(name, models):
    """Zero head h's input columns: perturbing o[h] then changes nothing, perturbing o[h+1] does."""
    model = models[name]
    _, _, shape, _ = _layout_parts(model)
    d, h, layer = shape.d_head, 1, 0
    ids = sample_input_ids()

    def silence(_module, args):
        x = args[0].clone()
        x[..., h * d:(h + 1) * d] = 0
        return (x, *args[1:])

    def output_with(m):
        module = m.get_submodule(ATTENTION_OUT_PROJ[name].format(l=layer))
        handle = module.register_forward_pre_hook(silence)
        try:
            return _run_capturing(m, name, ids)[layer][1]
        finally:
            handle.remove()

    delta = torch.ones(shape.d_model, d)
    reference = output_with(model)
    assert torch.equal(output_with(_perturbed_copy(model, layer, "o", h, delta)), reference)
    assert not torch.allclose(output_with(_perturbed_copy(model, layer, "o", h + 1, delta)), reference)


def test_attention_weights_clone_and_to():
    w = AttentionWeights(*(torch.randn(2, 4, 3) for _ in ATTENTION_KINDS))
    c = w.clone()
    c.q.add_(1)
    assert not torch.equal(c.q, w.q) and torch.equal(c.k, w.k)
    h = w.to(torch.float64)
    assert all(getattr(h, kind).dtype == torch.float64 for kind in ATTENTION_KINDS)


# ---- the projections' own outputs: every family, fused or not, norms or not ------------------------------


def _projection_outputs(model, modules, input_ids):
    """Run the model; return {module name: (input, output)} of the given projection modules."""
    records, hooks = {}, []
    for module_name in modules:
        def hook(_module, args, output, module_name=module_name):
            records[module_name] = (args[0].detach().clone(), output.detach().clone())

        hooks.append(model.get_submodule(module_name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in hooks:
            handle.remove()
    return records


def _feature_slice(layout, shape, kind, index):
    """The output features of the (fused or separate) projection that carry block ``kind[index]``."""
    d, h, kv, g = shape.d_head, shape.n_heads, shape.n_kv_heads, shape.group_size
    if "qkv" not in layout.attention_names(0):
        return slice(index * d, (index + 1) * d)
    if isinstance(layout, (GPT2Layout, Phi3Layout)):  # [Q | K | V]
        start = {"q": 0, "k": h * d, "v": (h + kv) * d}[kind] + index * d
        return slice(start, start + d)
    # grouped per KV head: (kv, [Q_1..Q_g, K, V], d)
    group, slot = (index // g, index % g) if kind == "q" else (index, {"k": g, "v": g + 1}[kind])
    start = (group * (g + 2) + slot) * d
    return slice(start, start + d)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("name", [a for a in ARCHS if a not in ("bert", "roberta")])
def test_projection_output_moves_only_that_heads_features(name, kind, models):
    """Perturb block ``kind[i]`` by delta: the projection's output moves by exactly ``x @ delta`` in that block's
    features and nowhere else (before any norm, rotary or head split: the layout's slicing, checked directly)."""
    model = models[name]
    _, layout, shape, prefix = _layout_parts(model)
    layer = 1
    names = layout.qualified(layout.attention_names(layer), prefix)
    role = "qkv" if "qkv" in names else kind
    module = names[role].removesuffix(".weight")
    ids = sample_input_ids()
    base = _projection_outputs(model, [module], ids)[module]
    n_blocks = shape.n_heads if kind == "q" else shape.n_kv_heads
    generator = torch.Generator().manual_seed(11)
    for index in range(n_blocks):
        delta = 0.5 * torch.randn(shape.d_model, shape.d_head, generator=generator)
        x, y = _projection_outputs(_perturbed_copy(model, layer, kind, index, delta), [module], ids)[module]
        assert torch.equal(x, base[0])  # the projection's input does not depend on its own weights
        change = y - base[1]
        where = _feature_slice(layout, shape, kind, index)
        # the same matmul with one weight block changed: fp32 rounding ~1e-7; 1e-5 leaves margin
        torch.testing.assert_close(change[..., where], x @ delta, atol=1e-5, rtol=1e-5)
        rest = torch.cat([change[..., :where.start], change[..., where.stop:]], dim=-1)
        assert rest.numel() == 0 or rest.abs().max() <= 1e-6, f"{kind}[{index}] moved other features"
        assert (x @ delta).abs().max() > 1e-2  # the identity is not vacuous
