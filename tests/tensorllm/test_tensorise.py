"""Multi-head tensorisation (tensorllm.tensorise) against hand-built references.

References are built with explicit loops straight from the ``nn.Linear`` weights of tiny Llamas (not
through the layout), following the paper's Eqs. 7-8: ``W_all[:, :, 0, i] = W^Q_i = q_proj.weight[i*d:(i+1)*d].T``,
slice 1 = K, slice 2 = V, slice 3 = ``(W^O_i)^T = o_proj.weight[:, i*d:(i+1)*d]``.
"""

from __future__ import annotations

import pytest
import torch

from tensorllm.attention_shape import ATTENTION_KINDS, AttentionShape, AttentionWeights
from tensorllm.layouts import layout_for
from tensorllm.tensorise import (
    DEFAULT_GROUPING,
    GROUPINGS,
    check_grouping,
    is_rearrangement,
    kv_scale,
    slice_labels,
    tensor_shape,
    tensorise,
    untensorise,
    written_rel_error,
)
from tensorllm.tucker import tucker_decompose
from tensorllm.tiny_models import build_tiny


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def llama():
    return build_tiny("llama")  # MHA: 4 heads, d_head 8, d_model 32


@pytest.fixture(scope="module")
def llama_gqa():
    return build_tiny("llama_gqa")  # GQA: 6 query heads, 2 KV heads (g = 3), d_head 8, d_model 48


def _read(model, layer):
    sd = model.state_dict()
    layout = layout_for(model.config)
    shape = layout.shape(model.config)
    return layout.read_attention(sd, layer, shape, layout.find_prefix(sd)), shape


def _linear_weights(model, layer):
    attn = model.model.layers[layer].self_attn
    return tuple(getattr(attn, f"{p}_proj").weight.detach() for p in "qkvo")


def _paper_tensor(model, layer):
    """Eq. 7-8 by hand for MHA: (d_model, d_head, 4, h)."""
    wq, wk, wv, wo = _linear_weights(model, layer)
    config = model.config
    h, d_model = config.num_attention_heads, config.hidden_size
    d = d_model // h
    ref = torch.empty(d_model, d, 4, h)
    for i in range(h):
        ref[:, :, 0, i] = wq[i * d:(i + 1) * d, :].T
        ref[:, :, 1, i] = wk[i * d:(i + 1) * d, :].T
        ref[:, :, 2, i] = wv[i * d:(i + 1) * d, :].T
        ref[:, :, 3, i] = wo[:, i * d:(i + 1) * d]
    return ref


def _assert_weights_equal(a: AttentionWeights, b: AttentionWeights):
    for kind in ATTENTION_KINDS:
        assert torch.equal(getattr(a, kind), getattr(b, kind)), kind


def _random_weights(shape: AttentionShape, seed: int = 0) -> AttentionWeights:
    generator = torch.Generator().manual_seed(seed)

    def block(n):
        return torch.randn(n, shape.d_model, shape.d_head, generator=generator)

    return AttentionWeights(q=block(shape.n_heads), k=block(shape.n_kv_heads), v=block(shape.n_kv_heads),
                            o=block(shape.n_heads))


# ---- MHA: the paper's tensor -------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_mha_tensor_is_paper_eq_7_8(llama, layer, grouping):
    weights, shape = _read(llama, layer)
    tensor = tensorise(weights, shape, grouping)
    assert tensor.shape == (32, 8, 4, 4) == tensor_shape(shape, grouping)
    assert tensor.is_contiguous()
    assert torch.equal(tensor, _paper_tensor(llama, layer))  # pure data movement: bit-exact


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_mha_round_trip_is_exact(llama, grouping):
    weights, shape = _read(llama, 0)
    back = untensorise(tensorise(weights, shape, grouping), shape, grouping)
    _assert_weights_equal(back, weights)  # g = 1: "replicate" averages a single copy, still exact


def test_default_grouping_is_replicate(llama_gqa):
    # the winner of bench/grouping.py (docs/results/grouping.md): one core per query head, K/V copied
    weights, shape = _read(llama_gqa, 0)
    assert DEFAULT_GROUPING == "replicate"
    assert torch.equal(tensorise(weights, shape), tensorise(weights, shape, "replicate"))
    assert tensor_shape(shape) == tensor_shape(shape, "replicate") == (48, 8, 4, 6)


# ---- GQA, "kv" grouping -------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 1])
def test_gqa_kv_grouping_slices(llama_gqa, layer):
    weights, shape = _read(llama_gqa, layer)
    wq, wk, wv, wo = _linear_weights(llama_gqa, layer)
    g, d, n_kv = 3, 8, 2
    tensor = tensorise(weights, shape, "kv")
    assert tensor.shape == (48, 8, 2 * g + 2, n_kv) == tensor_shape(shape, "kv")
    ref = torch.empty(48, d, 2 * g + 2, n_kv)
    for j in range(n_kv):
        for s in range(g):
            i = j * g + s  # query heads j*g .. j*g+g-1 share KV head j
            ref[:, :, s, j] = wq[i * d:(i + 1) * d, :].T
            ref[:, :, g + 2 + s, j] = wo[:, i * d:(i + 1) * d]
        ref[:, :, g, j] = wk[j * d:(j + 1) * d, :].T
        ref[:, :, g + 1, j] = wv[j * d:(j + 1) * d, :].T
    assert torch.equal(tensor, ref)  # pure data movement: bit-exact


def test_gqa_kv_round_trip_is_exact(llama_gqa):
    for layer in range(2):
        weights, shape = _read(llama_gqa, layer)
        _assert_weights_equal(untensorise(tensorise(weights, shape, "kv"), shape, "kv"), weights)


def test_kv_grouping_with_g1_is_the_paper_tensor(llama):
    weights, shape = _read(llama, 0)
    assert shape.group_size == 1
    assert torch.equal(tensorise(weights, shape, "kv"), _paper_tensor(llama, 0))
    assert torch.equal(tensorise(weights, shape, "kv"), tensorise(weights, shape, "replicate"))


@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (6, 2), (8, 2), (4, 1)])
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_synthetic_round_trip_and_labels(n_heads, n_kv_heads, grouping):
    shape = AttentionShape(n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=3, d_model=5)
    weights = _random_weights(shape)
    tensor = tensorise(weights, shape, grouping)
    assert tuple(tensor.shape) == tensor_shape(shape, grouping)
    assert len(slice_labels(shape, grouping)) == tensor.shape[2]
    back = untensorise(tensor, shape, grouping)
    assert torch.equal(back.q, weights.q) and torch.equal(back.o, weights.o)
    # "kv" moves data only (exact); "replicate" averages g identical copies and "weighted" also scales them by
    # 1/sqrt(g) and back, which may round by an ulp or two (values are O(1) here, an ulp ~1e-7)
    atol = 0.0 if grouping == "kv" else 1e-6
    torch.testing.assert_close(back.k, weights.k, atol=atol, rtol=0)
    torch.testing.assert_close(back.v, weights.v, atol=atol, rtol=0)
    # every parameter appears exactly once in the "kv" tensor
    if grouping == "kv":
        assert tensor.numel() == sum(getattr(weights, kind).numel() for kind in ATTENTION_KINDS)


def test_untensorise_returns_independent_tensors():
    shape = AttentionShape(n_heads=4, n_kv_heads=2, d_head=3, d_model=5)
    tensor = tensorise(_random_weights(shape), shape)
    snapshot = tensor.clone()
    back = untensorise(tensor, shape)
    for kind in ATTENTION_KINDS:
        getattr(back, kind).zero_()
    assert torch.equal(tensor, snapshot)


def test_slice_labels():
    mha = AttentionShape(n_heads=4, n_kv_heads=4, d_head=8, d_model=32)
    gqa = AttentionShape(n_heads=6, n_kv_heads=2, d_head=8, d_model=48)
    assert slice_labels(mha) == ["Q", "K", "V", "O"]
    assert slice_labels(gqa, "replicate") == ["Q", "K", "V", "O"]
    assert slice_labels(gqa, "kv") == ["Q1", "Q2", "Q3", "K", "V", "O1", "O2", "O3"]


# ---- GQA, "replicate" grouping ------------------------------------------------------------------


def test_gqa_replicate_tensor(llama_gqa):
    weights, shape = _read(llama_gqa, 0)
    wq, wk, wv, wo = _linear_weights(llama_gqa, 0)
    g, d = 3, 8
    tensor = tensorise(weights, shape, "replicate")
    assert tensor.shape == (48, 8, 4, 6) == tensor_shape(shape, "replicate")
    for i in range(6):
        j = i // g  # KV head of query head i
        assert torch.equal(tensor[:, :, 0, i], wq[i * d:(i + 1) * d, :].T)
        assert torch.equal(tensor[:, :, 1, i], wk[j * d:(j + 1) * d, :].T)
        assert torch.equal(tensor[:, :, 2, i], wv[j * d:(j + 1) * d, :].T)
        assert torch.equal(tensor[:, :, 3, i], wo[:, i * d:(i + 1) * d])


def test_gqa_replicate_round_trip(llama_gqa):
    weights, shape = _read(llama_gqa, 1)
    back = untensorise(tensorise(weights, shape, "replicate"), shape, "replicate")
    assert torch.equal(back.q, weights.q) and torch.equal(back.o, weights.o)
    # the mean of g identical fp32 copies can differ from the copy by an ulp (weights are O(0.1), ulp ~1e-8)
    torch.testing.assert_close(back.k, weights.k, atol=1e-7, rtol=0)
    torch.testing.assert_close(back.v, weights.v, atol=1e-7, rtol=0)


def test_gqa_replicate_averages_disagreeing_copies(llama_gqa):
    weights, shape = _read(llama_gqa, 0)
    tensor = tensorise(weights, shape, "replicate")
    tensor = tensor + torch.randn(tensor.shape, generator=torch.Generator().manual_seed(0))
    back = untensorise(tensor, shape, "replicate")
    g = shape.group_size
    for j in range(shape.n_kv_heads):
        copies = tensor[:, :, :, j * g:(j + 1) * g]
        # mean over g fp32 values of O(1): summation order may differ, ~1e-7
        torch.testing.assert_close(back.k[j], copies[:, :, 1].mean(dim=-1), atol=1e-6, rtol=0)
        torch.testing.assert_close(back.v[j], copies[:, :, 2].mean(dim=-1), atol=1e-6, rtol=0)
    assert torch.equal(back.q, tensor[:, :, 0].permute(2, 0, 1))
    assert torch.equal(back.o, tensor[:, :, 3].permute(2, 0, 1))


# ---- errors -------------------------------------------------------------------------------------


def test_bad_grouping_lists_allowed_values(llama_gqa):
    weights, shape = _read(llama_gqa, 0)
    tensor = tensorise(weights, shape)
    allowed = r"Unknown grouping 'tucker'; allowed: kv, replicate"
    with pytest.raises(ValueError, match=allowed):
        check_grouping("tucker")
    with pytest.raises(ValueError, match=allowed):
        tensorise(weights, shape, "tucker")
    with pytest.raises(ValueError, match=allowed):
        untensorise(tensor, shape, "tucker")
    with pytest.raises(ValueError, match=allowed):
        tensor_shape(shape, "tucker")


def test_untensorise_rejects_wrong_shape(llama_gqa):
    weights, shape = _read(llama_gqa, 0)
    kv = tensorise(weights, shape, "kv")
    replicate = tensorise(weights, shape, "replicate")
    with pytest.raises(ValueError, match="does not match"):
        untensorise(replicate, shape, "kv")  # (48, 8, 4, 6) is not (48, 8, 8, 2)
    with pytest.raises(ValueError, match="does not match"):
        untensorise(kv, shape, "replicate")
    with pytest.raises(ValueError, match="does not match"):
        untensorise(kv.transpose(0, 1), shape, "kv")  # d_model and d_head swapped
    with pytest.raises(ValueError, match="does not match"):
        untensorise(kv[..., :1], shape, "kv")  # a KV group missing


# ---- GQA/MQA, "weighted" grouping ---------------------------------------------------------------


def test_gqa_weighted_tensor_scales_every_kv_copy(llama_gqa):
    weights, shape = _read(llama_gqa, 0)
    g = shape.group_size
    weighted, replicate = tensorise(weights, shape, "weighted"), tensorise(weights, shape, "replicate")
    assert weighted.shape == (48, 8, 4, 6) == tensor_shape(shape, "weighted")  # one slab (core) per query head
    assert kv_scale(shape, "weighted") == pytest.approx(3 ** -0.5)  # g = 3
    assert torch.equal(weighted[:, :, 0], replicate[:, :, 0]) and torch.equal(weighted[:, :, 3], replicate[:, :, 3])
    # K and V copies scaled by 1/sqrt(g): one multiplication, so at most an ulp from the reference product
    torch.testing.assert_close(weighted[:, :, 1:3], replicate[:, :, 1:3] / g ** 0.5, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (6, 2), (4, 1)])
def test_weighted_tensor_counts_each_weight_once(n_heads, n_kv_heads):
    """||tensor||^2 is the sum of every real weight squared once, for kv and weighted; replicate counts K/V g times."""
    shape = AttentionShape(n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=3, d_model=5)
    weights = _random_weights(shape)
    norms = {kind: float(getattr(weights, kind).pow(2).sum()) for kind in ATTENTION_KINDS}
    once = sum(norms.values())
    g = shape.group_size
    squared = {grouping: float(tensorise(weights, shape, grouping).pow(2).sum()) for grouping in GROUPINGS}
    # sums of ~100 fp32 squares of O(1): relative rounding ~1e-6
    assert squared["kv"] == pytest.approx(once, rel=1e-5)
    assert squared["weighted"] == pytest.approx(once, rel=1e-5)
    assert squared["replicate"] == pytest.approx(once + (g - 1) * (norms["k"] + norms["v"]), rel=1e-5)


@pytest.mark.parametrize("n_heads,n_kv_heads", [(6, 2), (4, 1)])
def test_mqa_and_gqa_weighted_shapes_and_labels(n_heads, n_kv_heads):
    shape = AttentionShape(n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=8, d_model=32)
    # one core per query head (Eq. 9-12) for replicate/weighted; one per KV head (2g+2 slices) for kv
    assert tensor_shape(shape, "weighted") == tensor_shape(shape, "replicate") == (32, 8, 4, n_heads)
    assert tensor_shape(shape, "kv") == (32, 8, 2 * shape.group_size + 2, n_kv_heads)
    assert slice_labels(shape, "weighted") == ["Q", "K", "V", "O"]


# ---- the error of the weights actually written back ---------------------------------------------


def _low_rank_reconstruction(weights, shape, grouping, ranks):
    return tucker_decompose(tensorise(weights, shape, grouping), ranks)


def test_written_rel_error_by_hand():
    shape = AttentionShape(n_heads=4, n_kv_heads=2, d_head=3, d_model=5)
    weights = _random_weights(shape)
    noisy = tensorise(weights, shape, "replicate").clone()
    noisy[:, :, 1, 0] += 1.0  # one K copy of KV head 0 off by 1 everywhere: the written K_0 moves by 1/g = 0.5
    expected = (0.5 ** 2 * shape.d_model * shape.d_head) ** 0.5 / sum(
        float(getattr(weights, k).pow(2).sum()) for k in ATTENTION_KINDS) ** 0.5
    # float64 sums of 15 identical squared terms vs the closed form: exact to ~1e-7 after the fp32 averaging
    assert written_rel_error(weights, noisy, shape, "replicate") == pytest.approx(expected, rel=1e-5)
    assert written_rel_error(weights, tensorise(weights, shape, "kv"), shape, "kv") == 0.0  # nothing moved


@pytest.mark.parametrize("n_heads,n_kv_heads", [(6, 2), (4, 1)])
def test_written_error_of_each_grouping(n_heads, n_kv_heads):
    """kv: the tensor's error is the written error. replicate: they differ (the tensor counts K/V g times and the
    written K/V is an average). weighted: the written error is at most the fit error (the average of the g
    reconstructed copies is closer to K than the copies are on average: Jensen), and the norms agree."""
    shape = AttentionShape(n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=4, d_model=12)
    weights = _random_weights(shape, seed=3)
    ranks = (4, 2, 2)  # R1 <= groups * R2 * R3 holds for the MQA kv tensor too (one group)
    kv = _low_rank_reconstruction(weights, shape, "kv", ranks)
    # the kv fit's own relative error is the written one (same weights, each once): fp64 vs fp32 norms, 1e-5
    assert written_rel_error(weights, kv.reconstruct(), shape, "kv") == pytest.approx(kv.rel_error, rel=1e-5)
    rep = _low_rank_reconstruction(weights, shape, "replicate", ranks)
    written = written_rel_error(weights, rep.reconstruct(), shape, "replicate")
    assert abs(written - rep.rel_error) > 1e-3  # a different number: reporting the fit's would be wrong
    weighted = _low_rank_reconstruction(weights, shape, "weighted", ranks)
    written_w = written_rel_error(weights, weighted.reconstruct(), shape, "weighted")
    assert written_w <= weighted.rel_error + 1e-6  # Jensen; 1e-6 for fp32 rounding
    assert 0.0 < written_w < 1.0


@pytest.mark.parametrize("grouping", ["kv", "replicate", "weighted"])
@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (6, 2)])
def test_written_error_from_the_tensors_equals_the_untensorised_one(grouping, n_heads, n_kv_heads):
    """With ``original_tensor`` the error is computed on the tensors where they hold each weight once (kv, or
    MHA in any grouping) and through the written weights elsewhere: the same number either way."""
    shape = AttentionShape(n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=4, d_model=12)
    weights = _random_weights(shape, seed=5)
    tensor = tensorise(weights, shape, grouping)
    approx = _low_rank_reconstruction(weights, shape, grouping, (4, 2, 2)).reconstruct()
    assert is_rearrangement(shape, grouping) == (grouping == "kv" or n_heads == n_kv_heads)
    fast = written_rel_error(weights, approx, shape, grouping, original_tensor=tensor)
    assert fast == pytest.approx(written_rel_error(weights, approx, shape, grouping), rel=1e-6)
