"""The fast sensitivity path (all configurations of a layer together) against one edit at a time."""

from __future__ import annotations

import pytest
import torch

from tensorllm.compression import sensitivity
from tensorllm.compression.layer_damage import layer_damages
from tensorllm.decompose import decompose_layer
from tensorllm.models import load_model
from tensorllm.tiny_models import save_tiny_with_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folder, _ = save_tiny_with_tokenizer("llama", root / "llama")
    net, tok = load_model(str(folder), dtype=torch.float32)
    # 6 prompts in batches of 4: two batches, the second one padded differently
    ref = sensitivity.record_reference(net, sensitivity.calibration_sequences(tok, "qa_wikidata", 6), tok.pad_token_id,
                                       batch_size=4)
    paths = {layer: [r.artifact for r in decompose_layer(str(folder), layer, [(0.5, 1.0, 1.0), (0.25, 0.5, 1.0),
                                                                               (0.125, 0.5, 1.0)],
                                                           out_root=root / "a", n_iter_max=3)]
             for layer in (0, 1)}
    return net, ref, paths


def test_stacked_configurations_give_the_damages_of_one_edit_at_a_time(tiny):
    net, ref, paths = tiny
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = layer_damages(net, ref, 0, paths[0])  # layer 0 of 2: layer 1 and the head run once on 3 x prompts
    slow = [sensitivity.edit_damage(net, ref, 0, p) for p in paths[0]]
    assert len(set(slow)) == 3 and min(slow) > 1e-4  # three distinct, non-trivial damages to compare
    assert fast == pytest.approx(slow, rel=1e-5, abs=1e-7)
    # the model is left as it was: every edit is restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_last_layer_and_full_forward_families_take_the_one_edit_path(tiny):
    net, ref, paths = tiny
    assert layer_damages(net, ref, 1, paths[1]) == [sensitivity.edit_damage(net, ref, 1, p) for p in paths[1]]
    no_replay = sensitivity.Reference(ref.batches, ref.logprobs, {})
    assert layer_damages(net, no_replay, 0, paths[0]) == pytest.approx(layer_damages(net, ref, 0, paths[0]),
                                                                       rel=1e-4)
