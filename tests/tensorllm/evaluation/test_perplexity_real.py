"""Perplexity of the real SmolLM2-135M-Instruct on the shipped Austen corpus, with a small budget.

Marked ``real_model`` (about a minute on 2 CPU cores). The base's perplexity must be in the range of a small
modern LM on 1818 prose (measured 38.7 at 4,096 tokens; printed), and an edit that breaks the model (layer 0's
attention output zeroed) must show as a large, certain increase in the paired ratio.
"""

from __future__ import annotations

import pytest
import torch

from tensorllm.evaluation.perplexity import compare_perplexity, perplexity

pytestmark = pytest.mark.real_model

TOKENS = 2048  # 4 windows of 512


def test_smollm2_perplexity_on_austen_is_sane_and_a_broken_layer_shows(smollm2):
    model, tokenizer = smollm2
    base = perplexity(model, tokenizer, tokens=TOKENS)
    print(base.sentence())  # the known quantity, for the log
    assert base.n_windows == 4 and base.window == 512 and base.dtype == "float32"
    assert 15 < base.perplexity < 80  # a 135M model on Austen: tens; uniform over 49,152 tokens would be 49,152
    assert base.perplexity_ci[0] < base.perplexity < base.perplexity_ci[1]
    o_proj = model.model.layers[0].self_attn.o_proj.weight
    saved = o_proj.detach().clone()
    try:
        with torch.no_grad():
            o_proj.zero_()
        broken = perplexity(model, tokenizer, tokens=TOKENS)
    finally:
        with torch.no_grad():
            o_proj.copy_(saved)  # the session-scoped model is shared with other tests
    cmp = compare_perplexity(base, broken)
    print(cmp.sentence())
    assert cmp.ratio_ci[0] > 1.1 and not cmp.within_margin  # one layer's attention gone: far beyond +10%
