"""A factorised export as the ecosystem meets it: the base's dtype kept, standard loaders, common inference code.

Tiny bases saved in **bf16** (llama_gqa: separate q/k/v/o with GQA; qwen3: per-head q/k norms; gpt2: fused
Conv1D ``c_attn``, tied embeddings; gpt_neox: interleaved ``query_key_value``), each with a compressing
artifact at layer 1 (runs factorised) and a full-rank one at layer 0 (kept dense).

* dtype: every floating tensor of the export is bf16, the model card and ``export_variant`` state the bytes, and
  the export is smaller than the base by exactly what :func:`tensorllm.composed.whole_model_size` (the registry's
  ``bytes_before``/``bytes_after``) says, counting tensor bytes; the files differ from that by their JSON headers.
* ``AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True)`` is ``load_compressed``'s model (logits
  within 1e-5 in fp32: the same tensors and code, measured 0.0); without ``trust_remote_code``, or without
  tensorllm importable, it raises instead of building the base family with random attention weights.
* ``load_model`` / ``tensorllm evaluate`` on the export score the factorised model (same loss as
  ``load_compressed``'s to 1e-6), not the base family with random q/k/v/o.
* ``torch.inference_mode()``, cached ``generate`` and ``pipeline("text-generation")`` work, and the factorised
  modules keep no reference to past inputs.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from tensorllm.checkpoint import safetensors_header, stored_dtype
from tensorllm.composed import checkpoint_tensor_sizes, whole_model_size
from tensorllm.decompose import decompose_layer
from tensorllm.export import WEIGHTS_FILE, export_variant, folder_bytes, load_compressed, variant_model
from tensorllm.factorised import factorised_layers
from tensorllm.models import load_model
from tensorllm.tiny_models import build_tiny, sample_input_ids, tiny_tokenizer

FAMILIES = ["llama_gqa", "qwen3", "gpt2", "gpt_neox"]
REPO = Path(__file__).resolve().parents[2]
FP32_TOL = 1e-5  # from_pretrained vs load_compressed, fp32: the same tensors through the same modules (measured 0.0)
BF16_TOL = 5e-2  # load_compressed (bf16) vs variant_model (bf16): products in another order, bf16 rounding (~1e-2)


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


def save_bf16(name: str, folder: Path) -> Path:
    build_tiny(name).to(torch.bfloat16).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bf16_exports(tmp_path_factory):
    """name -> (base folder, artifact paths, export_variant's result), bases and exports in bf16."""
    root = tmp_path_factory.mktemp("bf16")
    out = {}
    for name in FAMILIES:
        folder = save_bf16(name, root / name)
        [low] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root / "artifacts")
        [full] = decompose_layer(str(folder), layer=0, rank_list=[(1.0, 1.0, 1.0)], out_root=root / "artifacts")
        paths = [low.artifact, full.artifact]
        out[name] = (folder, paths, export_variant(str(folder), paths, root / "exports" / name))
    return out


def logits(model, dtype=None):
    with torch.no_grad():
        return model(sample_input_ids()).logits.to(dtype or torch.float32)


@pytest.mark.parametrize("name", FAMILIES)
def test_bf16_export_keeps_dtype_and_saves_the_bytes_it_reports(bf16_exports, name):
    folder, paths, info = bf16_exports[name]
    out = Path(info["path"])
    header = safetensors_header(out / WEIGHTS_FILE)
    floats = {k: v["dtype"] for k, v in header.items() if v["dtype"].startswith(("F", "BF"))}
    assert floats and set(floats.values()) == {"BF16"}, {k: v for k, v in floats.items() if v != "BF16"}
    assert info["dtype"] == "bfloat16" and stored_dtype(out) == torch.bfloat16
    size = whole_model_size(str(folder), [json.loads((Path(p) / "artifact.json").read_text()) for p in paths])
    written = sum(b for _, b in checkpoint_tensor_sizes(out).values())
    assert size.bytes_before == sum(b for _, b in checkpoint_tensor_sizes(folder).values())
    assert written == size.bytes_after < size.bytes_before  # tensor bytes: exactly what the registry records
    # on disk: the same tensors plus each file's JSON header (a few KB; the export's names differ from the base's)
    assert abs(info["bytes"] - written) < 8192 and info["bytes"] == folder_bytes(out) < folder_bytes(folder)
    card = (out / "README.md").read_text()
    assert f"{info['bytes']:,} bytes" in card and "arXiv 2501.15674" in card and "trust_remote_code=True" in card
    assert json.loads((out / "generation_config.json").read_text())  # publishable: a generation config
    model, _ = load_compressed(out)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    expected, _, _ = variant_model(str(folder), paths, "factorised")
    assert {p.dtype for p in expected.parameters()} == {torch.bfloat16}  # the base's dtype in memory too
    assert float((logits(model) - logits(expected)).abs().max()) <= BF16_TOL


def test_dense_export_is_bf16_and_plain(bf16_exports, tmp_path):
    folder, paths, _ = bf16_exports["llama_gqa"]
    info = export_variant(str(folder), paths, tmp_path / "dense", format="dense")
    assert stored_dtype(tmp_path / "dense") == torch.bfloat16 and info["dtype"] == "bfloat16"
    assert abs(info["bytes"] - folder_bytes(folder)) < 4096  # the base's size: same tensors, same dtype
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense")
    assert model.dtype == torch.bfloat16 and "from_pretrained" in (tmp_path / "dense" / "README.md").read_text()


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_from_pretrained_with_remote_code_is_load_compressed(bf16_exports, name):
    out = bf16_exports[name][2]["path"]
    auto = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32)
    ours, _ = load_compressed(out, dtype=torch.float32)
    assert factorised_layers(auto) and type(auto) is type(ours)
    assert float((logits(auto) - logits(ours)).abs().max()) <= FP32_TOL
    native = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert native.dtype == torch.bfloat16  # by default the export's own dtype


def test_from_pretrained_without_remote_code_refuses(bf16_exports):
    out = bf16_exports["llama_gqa"][2]["path"]
    # transformers' own refusal (config.json's model_type is tensorllm's, not the base family's): it names the
    # folder and what to pass; it asks first on a terminal, and refuses on a closed or captured stdin
    for kwargs in ({}, {"trust_remote_code": False}):
        with pytest.raises(ValueError, match=rf"{out} contains custom code(.|\n)*pass the argument `trust_remote_code=True`"):
            transformers.AutoModelForCausalLM.from_pretrained(out, **kwargs)
    with pytest.raises(ValueError, match=r"trust_remote_code=True"):
        transformers.pipeline("text-generation", model=out)


def test_from_pretrained_without_tensorllm_names_it(bf16_exports):
    out = bf16_exports["llama_gqa"][2]["path"]
    # a fresh interpreter in which `import tensorllm` fails, as where the package is not installed
    code = ("import sys; sys.modules['tensorllm'] = None\n"
            "from transformers import AutoModelForCausalLM\n"
            f"AutoModelForCausalLM.from_pretrained({out!r}, trust_remote_code=True)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=300)
    assert run.returncode != 0
    assert "ImportError: This folder is a TensorLLM factorised export" in run.stderr
    assert "Install it (pip install tensorllm" in run.stderr


def test_load_model_and_cli_evaluate_score_the_factorised_model(bf16_exports, tmp_path, capsys):
    from tensorllm.cli import main
    from tensorllm.evaluation import EvalConfig, evaluate

    out = bf16_exports["llama_gqa"][2]["path"]
    model, tokenizer = load_model(out)  # CPU: fp32 by default
    assert factorised_layers(model) and model.dtype == torch.float32
    assert main(["evaluate", out, "--dataset", "qa_wikidata", "--limit", "6", "--no-generate", "--device", "cpu",
                 "--out", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["dtype"] == "float32" and payload["n"] == 6
    ours, tok = load_compressed(out, dtype=torch.float32)
    expected = evaluate(ours, tok, EvalConfig(dataset="qa_wikidata", limit=6, generate=False))
    assert abs(payload["loss"] - expected.loss) <= 1e-6
    base, _ = load_model(bf16_exports["llama_gqa"][0])
    assert abs(evaluate(base, tok, EvalConfig(dataset="qa_wikidata", limit=6, generate=False)).loss - expected.loss) > 1e-4


def test_cli_export_of_an_export_folder_gives_the_dense_form(bf16_exports, tmp_path, capsys):
    from tensorllm.cli import main

    folder, paths, info = bf16_exports["gpt2"]
    out = tmp_path / "dense"
    assert main(["export", info["path"], "--format", "dense", "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    payload = json.loads(text.strip().splitlines()[-1])
    assert payload["source"] == {"export": info["path"], "artifacts": [str(p) for p in paths]}
    assert "bfloat16; load with AutoModelForCausalLM.from_pretrained" in text
    dense = transformers.AutoModelForCausalLM.from_pretrained(out)  # plain: no tensorllm, no remote code
    factorised, _ = load_compressed(info["path"])
    assert dense.dtype == torch.bfloat16 and not factorised_layers(dense)
    assert float((logits(dense) - logits(factorised)).abs().max()) <= BF16_TOL  # the same variant, two forms


def generate(model, ids, **kwargs):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                          do_sample=False, pad_token_id=0, **kwargs)


def test_inference_mode_cached_generate_and_pipeline(bf16_exports):
    out = bf16_exports["gpt_neox"][2]["path"]
    model, tokenizer = load_compressed(out, dtype=torch.float32)
    ids = sample_input_ids()
    with torch.no_grad():
        reference = generate(model, ids, use_cache=False)  # no cache: every step recomputes the whole prefix
    with torch.inference_mode():
        cached = generate(model, ids, use_cache=True)
        assert torch.equal(cached, reference)
        # after a forward no factorised module keeps X·U1 or its input
        assert all(f._shared is None for f in factorised_layers(model).values())
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = pipe("w5 w17 w33", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    prompt = tokenizer("w5 w17 w33", return_tensors="pt").input_ids
    with torch.no_grad():
        new = generate(model, prompt)[0, prompt.shape[1]:][:4]
    # the pipeline's text: the prompt, then the model's own four greedy tokens (the word-level decoder drops the space)
    assert text == "w5 w17 w33" + tokenizer.decode(new, skip_special_tokens=True) and len(new) == 4


def test_shared_input_holds_no_reference_to_its_input(bf16_exports):
    import weakref

    model, _ = load_compressed(bf16_exports["llama_gqa"][2]["path"], dtype=torch.float32)
    factors = next(iter(factorised_layers(model).values()))
    x = torch.randn(2, 3, factors.shape.d_model)
    seen = weakref.ref(x)
    first = factors.shared_input(x)
    assert factors.shared_input(x) is first  # q, k and v of one call share X·U1
    with torch.no_grad():
        x.mul_(2)  # an in-place edit: the cache must not answer for the new values
    assert factors.shared_input(x) is not first
    del x
    gc.collect()
    assert seen() is None  # the module did not keep the input alive


# ---- the real model, saved in bf16 ------------------------------------------------------------------------
@pytest.mark.real_model
def test_real_model_bf16_export(tmp_path):
    """SmolLM2 saved in bf16 (as most Hub checkpoints are), two layers at (288, 32, 4): the export is bf16 through
    and through, smaller by exactly the bytes the registry's accounting states, and loads through transformers."""
    from tensorllm.models import resolve_model

    try:
        folder = resolve_model("smollm2-135m")
    except ModuleNotFoundError as exc:
        pytest.skip(str(exc))
    base = tmp_path / "smollm2-bf16"
    model, tokenizer = load_model(folder)
    model.to(torch.bfloat16).save_pretrained(base)
    tokenizer.save_pretrained(base)
    del model
    paths = [decompose_layer(str(base), layer=layer, rank_list=[(288, 32, 4)], out_root=tmp_path / "a", n_iter_max=2)[0]
             .artifact for layer in (27, 29)]
    info = export_variant(str(base), paths, tmp_path / "export")
    out = Path(info["path"])
    assert {v["dtype"] for v in safetensors_header(out / WEIGHTS_FILE).values()} == {"BF16"}
    size = whole_model_size(str(base), [json.loads((Path(p) / "artifact.json").read_text()) for p in paths])
    assert sum(b for _, b in checkpoint_tensor_sizes(out).values()) == size.bytes_after
    # per layer 576·64·(9+3+3+9) = 884,736 dense parameters -> 576·288 + 64·32 + 288·32·(2·9+2·3) = 389,120
    # factorised; two layers, 2 bytes each (bf16; the fp32 export wrote 4)
    assert size.bytes_before - size.bytes_after == 2 * (884_736 - 389_120) * 2 == 1_982_464
    assert folder_bytes(base) - info["bytes"] == pytest.approx(size.bytes_before - size.bytes_after, abs=8192)
    auto = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    ours, tok = load_compressed(out)
    assert auto.dtype == ours.dtype == torch.bfloat16 and len(factorised_layers(auto)) == 2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(auto(ids).logits, ours(ids).logits)  # the same bf16 tensors through the same code
        text = tok.decode(auto.generate(ids, max_new_tokens=4, do_sample=False)[0])
    assert text.startswith("The capital of France is") and len(text) > len("The capital of France is")


def test_model_card_states_metrics_with_intervals(bf16_exports, tmp_path):
    from tensorllm.model_card import card_metrics

    folder, paths, _ = bf16_exports["qwen3"]
    results = {"qa_wikidata": {"split": "test", "dtype": "bfloat16", "n": 400, "accuracy": 0.4125,
                               "accuracy_ci": [0.3651, 0.4615], "top1_accuracy": 0.5, "top1_accuracy_ci": [0.45, 0.55],
                               "loss": 2.25, "loss_ci": [2.1, 2.4]}}
    info = export_variant(str(folder), paths, tmp_path / "carded", metrics=card_metrics(results))
    card = (tmp_path / "carded" / "README.md").read_text()
    assert "| qa_wikidata/test (bfloat16, n=400) accuracy | 0.4125 (95% CI 0.3651 to 0.4615) |" in card
    assert f"`{folder}`" in card and "| 1 | tucker_mha | factorised | (16, 4) |" in card  # base model; ranks of layer 1
    assert "| 0 | tucker_mha | dense |" in card and info["format"] == "factorised"


def test_pipeline_from_the_folder_with_remote_code(bf16_exports):
    out = bf16_exports["gpt_neox"][2]["path"]
    pipe = transformers.pipeline("text-generation", model=out, trust_remote_code=True)
    assert factorised_layers(pipe.model) and pipe.model.dtype == torch.bfloat16
    assert pipe("w5 w6", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("w5 w6")


def test_save_pretrained_of_a_loaded_export_writes_an_export_again(bf16_exports, tmp_path):
    model, _ = load_compressed(bf16_exports["gpt2"][2]["path"])
    model.save_pretrained(tmp_path / "again")  # transformers' own would write gpt2's config next to the factors
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model_type"] == "tensorllm_factorised"
    with pytest.raises(ValueError, match=r"trust_remote_code=True"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    again, tokenizer = load_compressed(tmp_path / "again")
    assert tokenizer is None and again.dtype == torch.bfloat16  # save_pretrained writes no tokenizer, as in transformers
    assert torch.equal(logits(again), logits(model))
