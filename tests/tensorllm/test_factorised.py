"""Factorised attention (tensorllm.factorised) against the dense-materialised variant, on every causal family.

The factorised layer computes ``X·U1 · C_i · U2^T`` where the dense variant computes ``X·W_i`` with
``W_i = U1 · C_i · U2^T`` written back (``apply_artifacts``): the same numbers in another order, so the
logits agree to fp32 rounding. On these tiny models (|logits| < 1) that is ~1e-7 (measured), far inside
the 1e-4 asserted, while the low-rank edit itself moves the logits away from the base by >= 5.9e-2
(measured: gpt2 is the smallest), so the comparison could fail if the factorised forward were wrong.

Every family's attention biases are set to random values before saving (the initialisers leave them at
zero, which would let an adapter that drops its bias pass): the factorised and dense variants agree only
if the adapters add them.

Each tiny model is saved once by ``save_with_random_biases`` and decomposed at layer 1; layer 0 stays dense.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tensorllm.artifact import apply_artifacts, load_artifact
from tensorllm.decompose import decompose_layer
from tensorllm.export import apply_variant
from tensorllm.factorised import (
    FACTORS_MODULE,
    FactorisedAttention,
    factorised_cost,
    factorised_layers,
    install_factorised,
)
from tensorllm.attention_shape import AttentionShape
from tensorllm.layouts import layout_for
from tensorllm.models import load_model
from tensorllm.tiny_models import build_tiny, sample_input_ids, tiny_tokenizer

# llama_mqa: one KV head; qwen3: per-head q/k norms; gemma2: head_dim != d_model / heads, MQA, soft-capping;
# phi3: fused [Q | K | V] qkv_proj (GQA); falcon: fused query_key_value [Q_1..Q_4 | K | V] (MQA); falcon_gqa: grouped
# per KV head [Q_1, Q_2, K, V]; gpt_bigcode: Linear c_attn, MQA; olmo2: q/k norms over all heads; mixtral: MoE FFN
CAUSAL = ["llama", "llama_gqa", "llama_mqa", "qwen3", "gemma2", "mistral", "qwen2", "gpt2", "gptj", "gpt_neox", "opt",
          "gemma", "gemma3_text", "phi3", "falcon", "falcon_gqa", "starcoder2", "olmo", "olmo2", "cohere", "granite",
          "stablelm", "gpt_bigcode", "mixtral"]
# families whose attention projections carry biases
WITH_BIASES = ["qwen2", "opt", "gpt2", "gpt_neox", "starcoder2", "falcon_gqa", "gpt_bigcode"]
GROUPINGS = ["kv", "replicate", "weighted"]
#: (name, grouping) pairs run: every family with the default; all groupings where they differ (GQA/MQA)
GROUPED = [(name, grouping) for name in CAUSAL for grouping in GROUPINGS
           if grouping == "kv" or name in ("llama_gqa", "llama_mqa", "qwen3", "gemma2", "phi3", "falcon", "falcon_gqa",
                                           "gpt_bigcode", "gemma3_text", "mixtral")]
LAYER = 1
LOW = (0.5, 0.5, 0.5)  # compressing: e.g. (16, 4, 2) for llama's (32, 8, 4, 4) tensor
FULL = (1.0, 1.0, 1.0)
MATCH_TOL = 1e-4  # factorised vs dense, fp32 (measured <= 1.1e-7 on every family here)
CHANGED = 1e-2  # the edit moves logits from the base by >= 5.9e-2 on every family (measured)
BIAS_SCALE = 0.1  # comparable to the projections' outputs (weights ~N(0, 0.02^2), d_model 32-48)


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


def attention_modules(model, layer: int) -> dict[str, str]:
    """role ("q", "k", "v", "o" or "qkv") -> dotted module name of layer ``layer``'s projection."""
    layout = layout_for(model.config)
    prefix = layout.find_prefix(model.state_dict().keys())
    names = layout.qualified(layout.attention_names(layer), prefix)
    return {role: name.removesuffix(".weight") for role, name in names.items()}


def save_with_random_biases(name: str, folder: Path, seed: int = 0) -> Path:
    """``build_tiny(name, seed)`` with random attention biases (where the family has them), saved with a tokenizer."""
    model = build_tiny(name, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for layer in range(model.config.num_hidden_layers):
            for module_name in attention_modules(model, layer).values():
                bias = getattr(model.get_submodule(module_name), "bias", None)
                if bias is not None:
                    bias.copy_(torch.randn(bias.shape, generator=generator) * BIAS_SCALE)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("factorised_models")
    out = {name: save_with_random_biases(name, root / name) for name in CAUSAL}
    out["llama_other"] = save_with_random_biases("llama", root / "llama_other", seed=1)  # same shape, other weights
    return out


@pytest.fixture(scope="module")
def artifact(folders, tmp_path_factory):
    """(name, ranks, grouping) -> artifact folder of layer 1 (decomposed once per module)."""
    root = tmp_path_factory.mktemp("factorised_artifacts")
    cache: dict = {}

    def get(name, ranks=LOW, grouping="kv"):
        key = (name, ranks, grouping)
        if key not in cache:
            [record] = decompose_layer(str(folders[name]), layer=LAYER, rank_list=[ranks], grouping=grouping,
                                       out_root=root)
            cache[key] = record.artifact
        return cache[key]

    return get


def fresh(folders, name):
    return load_model(folders[name])[0]


def logits(model, ids=None):
    with torch.no_grad():
        return model(sample_input_ids() if ids is None else ids).logits


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def generate(model, **kwargs):
    ids = sample_input_ids()
    with torch.no_grad():
        # min_new_tokens: random tiny models may pick their EOS id early (gpt_neox does), which would end the test's
        # generation after one token
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5,
                              do_sample=False, pad_token_id=0, **kwargs)


def dense_and_factorised(folders, artifact_path, name):
    art = load_artifact(artifact_path)
    dense, factorised = fresh(folders, name), fresh(folders, name)
    apply_artifacts(dense, [art])
    factors = install_factorised(factorised, art)
    return dense, factorised, factors


# ---- numerics ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,grouping", GROUPED)
def test_factorised_logits_match_dense_variant(folders, artifact, name, grouping):
    base = fresh(folders, name)
    dense, factorised, _ = dense_and_factorised(folders, artifact(name, LOW, grouping), name)
    assert max_diff(logits(factorised), logits(dense)) <= MATCH_TOL
    # the edit is real, so the comparison above can fail
    assert max_diff(logits(dense), logits(base)) > CHANGED
    assert max_diff(logits(factorised), logits(base)) > CHANGED


@pytest.mark.parametrize("name,grouping", GROUPED)
def test_generation_with_kv_cache_matches_dense_variant(folders, artifact, name, grouping):
    dense, factorised, _ = dense_and_factorised(folders, artifact(name, LOW, grouping), name)
    tokens = generate(factorised)
    assert tokens.shape == (2, 7 + 5)  # sample_input_ids is 2 x 7; five new tokens each
    assert torch.equal(tokens, generate(dense))
    # the cached path (each step feeds one token through the factors) agrees with full recomputation
    assert torch.equal(tokens, generate(factorised, use_cache=False))


# ---- what the model holds ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAUSAL)
def test_dense_weights_replaced_by_factors(folders, artifact, name):
    base_state = fresh(folders, name).state_dict()
    model = fresh(folders, name)
    factors = install_factorised(model, load_artifact(artifact(name)))
    state = model.state_dict()
    modules = attention_modules(model, LAYER)
    for role, module in modules.items():
        assert f"{module}.weight" not in state, role  # the dense projection weight is gone
    attention = modules["o"].rpartition(".")[0]
    factor_keys = {k for k in state if k.startswith(f"{attention}.{FACTORS_MODULE}.")}
    assert factor_keys == {f"{attention}.{FACTORS_MODULE}.{p}"
                           for p in ("U1", "U2", "core_q", "core_k", "core_v", "core_o")}  # each stored once
    # layer 0 is untouched, and everything else is the base model's
    for role, module in attention_modules(model, 0).items():
        assert torch.equal(state[f"{module}.weight"], base_state[f"{module}.weight"]), role
    removed = {f"{m}.weight" for m in modules.values()}
    assert set(base_state) - removed == set(state) - factor_keys
    assert factorised_layers(model) == {f"{attention}.{FACTORS_MODULE}": factors}


@pytest.mark.parametrize("name", WITH_BIASES)
def test_biases_are_kept_and_used(folders, artifact, name):
    base_state = fresh(folders, name).state_dict()
    _, model, _ = dense_and_factorised(folders, artifact(name), name)
    state = model.state_dict()
    bias_names = [f"{m}.bias" for m in attention_modules(model, LAYER).values() if f"{m}.bias" in base_state]
    # q/k/v; all four; fused + out
    assert len(bias_names) == {"qwen2": 3, "opt": 4, "gpt2": 2, "gpt_neox": 2, "starcoder2": 4, "falcon_gqa": 2,
                               "gpt_bigcode": 2}[name]
    for bias in bias_names:
        assert torch.equal(state[bias], base_state[bias]), bias  # same values, same name as before
        assert float(base_state[bias].abs().max()) > BIAS_SCALE / 10  # random, not the initialiser's zeros
    # and the forward adds them: dropping the layer's biases moves the logits
    before = logits(model)
    with torch.no_grad():
        for bias in bias_names:
            model.get_submodule(bias.removesuffix(".bias")).bias.zero_()
    # measured >= 6.4e-2 (qwen2, whose output projection has no bias), i.e. 600x the factorised-vs-dense tolerance
    assert max_diff(logits(model), before) > 100 * MATCH_TOL


# ---- refusals ---------------------------------------------------------------------------------------------
def test_artifact_from_another_model_is_refused(folders, artifact):
    model = fresh(folders, "llama")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    other = load_artifact(artifact("llama_other"))  # same architecture and shapes, seed 1
    with pytest.raises(ValueError, match=r"was made from other weights for layer 1"):
        install_factorised(model, other)
    assert factorised_layers(model) == {}  # nothing was replaced
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match=r"is for a 'llama' model; this model is 'gpt2'"):
        install_factorised(fresh(folders, "gpt2"), load_artifact(artifact("llama")))


def test_laser_artifact_is_refused(folders, tmp_path):
    from tensorllm.decompose import laser_layer

    laser = load_artifact(laser_layer(str(folders["llama"]), LAYER, "fc_in", 0.1, out_root=tmp_path).artifact)
    with pytest.raises(ValueError, match=r"is 'laser_ffn'; only tucker_mha artifacts run factorised"):
        install_factorised(fresh(folders, "llama"), laser)


# ---- cost ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAUSAL)
def test_cost_matches_installed_parameters(folders, artifact, name):
    model = fresh(folders, name)
    dense_weights = sum(model.get_submodule(m).weight.numel() for m in attention_modules(model, LAYER).values())
    factors = install_factorised(model, load_artifact(artifact(name)))
    cost = factors.cost()
    assert cost.factorised_params == sum(p.numel() for p in factors.parameters())
    assert cost.dense_params == dense_weights == factors.shape.n_params
    assert cost.pays_off and cost.factorised_macs < cost.dense_macs


def test_cost_formula_by_hand():
    # llama_gqa: 6 query heads, 2 KV heads, d_head 8, d_model 48, ranks R1=24, R2=4
    shape = AttentionShape(n_heads=6, n_kv_heads=2, d_head=8, d_model=48)
    cost = factorised_cost(shape, 24, 4)
    assert cost.dense_params == cost.dense_macs == 48 * 8 * (2 * 6 + 2 * 2)  # 6,144: one MAC per weight per token
    assert cost.factorised_params == 48 * 24 + 8 * 4 + 24 * 4 * (2 * 6 + 2 * 2)  # U1, U2, 16 cores: 2,720
    # X·U1, then per Q/K/V head a core and U2^T, per output head U2 and a core, then U1^T
    assert cost.factorised_macs == 48 * 24 + (6 + 4) * (24 * 4 + 4 * 8) + 6 * (8 * 4 + 4 * 24) + 24 * 48
    module = FactorisedAttention(shape, 24, 4)
    assert sum(p.numel() for p in module.parameters()) == cost.factorised_params


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_full_rank_does_not_pay_off_and_stays_dense(folders, artifact, name):
    path = artifact(name, FULL)
    meta = load_artifact(path).meta
    r1, r2, _ = meta["ranks"]
    cost = factorised_cost(AttentionShape(**meta["attention_shape"]), r1, r2)
    # square U1, U2: the cores alone hold d_model·d_head per head and role, as many as the dense weights
    assert not cost.pays_off and cost.factorised_params > cost.dense_params
    model = fresh(folders, name)
    before = logits(model)
    [report] = apply_variant(model, [path], "factorised")
    assert (report.layer, report.form) == (LAYER, "dense")
    assert report.reason.startswith("kept dense: factorised would need")
    assert f"{cost.factorised_params:,} parameters (dense {cost.dense_params:,})" in report.reason
    assert factorised_layers(model) == {}
    assert max_diff(logits(model), before) <= MATCH_TOL  # full rank, written back dense: fp32 rounding only


def test_apply_variant_factorises_where_it_pays_off(folders, artifact):
    model = fresh(folders, "llama_gqa")
    [report] = apply_variant(model, [artifact("llama_gqa")], "factorised")
    assert (report.layer, report.form) == (LAYER, "factorised")
    assert "2,720 parameters instead of 6,144" in report.reason  # see test_cost_formula_by_hand
    assert list(factorised_layers(model)) == [f"model.layers.{LAYER}.self_attn.{FACTORS_MODULE}"]
    dense = fresh(folders, "llama_gqa")
    [dense_report] = apply_variant(dense, [artifact("llama_gqa")], "dense")
    assert (dense_report.form, dense_report.reason) == ("dense", "dense requested")
    assert max_diff(logits(model), logits(dense)) <= MATCH_TOL
    with pytest.raises(ValueError, match=r"unknown format 'int8'; allowed: factorised, dense"):
        apply_variant(fresh(folders, "llama_gqa"), [artifact("llama_gqa")], "int8")


# ---- the real model ---------------------------------------------------------------------------------------
@pytest.mark.real_model
def test_real_model_factorised_matches_dense(tmp_path):
    from tensorllm.models import resolve_model

    try:
        folder = resolve_model("smollm2-135m")
    except ModuleNotFoundError as exc:
        pytest.skip(str(exc))
    # two layers at (288, 32, 4); 2 HOOI sweeps are enough: the test compares two ways of running the same factors
    paths = [decompose_layer("smollm2-135m", layer=layer, rank_list=[LOW], out_root=tmp_path, n_iter_max=2)[0].artifact
             for layer in (27, 29)]
    model, tokenizer = load_model(folder)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    base = logits(model, ids)
    apply_variant(model, paths, "dense")
    dense = logits(model, ids)
    del model
    factorised, _ = load_model(folder)
    report = apply_variant(factorised, paths, "factorised")
    assert [r.form for r in report] == ["factorised", "factorised"]
    # |logits| up to ~27 here; the two orders of the same products differ by 1.8e-5 (measured)
    assert max_diff(logits(factorised, ids), dense) <= MATCH_TOL
    assert max_diff(dense, base) > 1.0  # rel_error ~0.76 per layer: the edit moves logits by ~17 (measured)
