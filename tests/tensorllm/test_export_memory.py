"""Loading a factorised export needs about the export's size in memory: no dense attention, no second copy.

A bf16 Llama-shaped model of ~21M parameters (d_model 512, 4 layers, vocabulary 8192, untied; ~42 MB) is
exported with layer 1 factorised; ``bench/load_memory.py`` loads it in a fresh process and reports the
growth of the peak RSS during the load. The bound is the one the export promises users: at most 1.3x the
export's safetensors bytes (measured 1.09x: every tensor is read straight into its final place, no dense
q/k/v/o is ever allocated). Imports, the modeling code and the tokenizer are loaded before the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from tensorllm.decompose import decompose_layer
from tensorllm.export import export_variant
from tensorllm.tiny_models import tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
BOUND = 1.3  # peak RSS growth / export bytes


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux /proc")
def test_loading_peak_rss_is_within_the_export_size(tmp_path):
    config = transformers.LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    [result] = decompose_layer(str(tmp_path / "base"), layer=1, rank_list=[(0.25, 0.25, 0.5)],
                               out_root=tmp_path / "artifacts")
    info = export_variant(str(tmp_path / "base"), [result.artifact], tmp_path / "export")
    assert info["dtype"] == "bfloat16" and [r["form"] for r in info["layers"]] == ["factorised"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load_memory.py"), info["path"]], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["factorised"] and measured["export_bytes"] == info["bytes"] > 40e6
    assert measured["peak_over_export"] <= BOUND, measured
