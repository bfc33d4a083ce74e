"""Write a synthetic Llama-2-7B-shaped checkpoint: every tensor a real one has, fp16, sharded like the Hub's.

    python -m bench.make_checkpoint                      # -> runs/synthetic-7b (~13.7 GB, a few minutes)
    python -m bench.make_checkpoint --tiny --out /tmp/x  # 2 small layers, tiny shards (what the test runs)

Why: the pipeline must be measured at the scale its users work at (issue 10), and no 7B model can be
downloaded here. What is written:

* ``config.json``: a ``LlamaConfig`` with Llama-2-7B's dimensions (d_model 4096, 32 layers, 32 heads of
  128, MLP 11008, RMSNorm eps 1e-5, rope theta 1e4), ``dtype`` float16, untied ``lm_head`` (as Llama-2);
  ``vocab_size`` is that of the tokenizer below (49152 instead of Llama-2's 32000).
* the tokenizer of SmolLM2-135M-Instruct (``tokenizer.json``, ``tokenizer_config.json``, chat template),
  so that evaluation code paths (prompts, scoring) run on this model; the embedding has one row per token.
* every tensor of ``LlamaForCausalLM`` (embedding, per layer q/k/v/o, gate/up/down, the two RMSNorm
  weights, the final norm, ``lm_head``) in float16, in shards of about ``--shard-gb`` GB
  (``model-0000i-of-0000n.safetensors``) listed by ``model.safetensors.index.json`` (``total_size`` and
  ``weight_map``), as ``save_pretrained`` writes them.
* attention weights with a decaying multilinear spectrum, so that Tucker ranks matter: each layer's
  tensor ``W_all`` (d_model, d_head, 4, heads) (paper Eq. 8, built with :func:`tensorllm.tensorise.untensorise`)
  is ``C x_1 Q1 x_2 Q2`` with ``C`` Gaussian scaled by ``exp(-decay k / I_n)`` along d_model and d_head and
  random orthogonal ``Q1`` (a Kronecker product of two small ones, cheap at 4096) and ``Q2``; then scaled to
  std 0.02 (the initialiser's). The MLP, embedding and lm_head are Gaussian (std 0.02), the norms ones.
* ``synthetic.json``: the settings that made it (seed, decay, dimensions, command).

Deterministic for a given seed (one generator per tensor group). The folder is written as
``<out>.partial`` and renamed when complete, so a reader never sees half a checkpoint; an existing
complete folder made with the same settings is kept (``--overwrite`` rewrites it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tensorllm.attention_shape import AttentionShape
from tensorllm.layouts import LlamaLayout
from tensorllm.tensorise import tensor_shape, untensorise

REPO_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("make_checkpoint")

DEFAULT_OUT = REPO_ROOT / "runs" / "synthetic-7b"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
WEIGHT_STD = 0.02  # LlamaConfig.initializer_range


@dataclass(frozen=True)
class Dims:
    """The model's dimensions (Llama-2-7B by default)."""

    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


LLAMA2_7B = Dims()
TINY = Dims(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=512)


def tensor_plan(dims: Dims, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of LlamaForCausalLM (untied lm_head) in the Hub's order: name and shape."""
    d, f = dims.hidden_size, dims.intermediate_size
    plan = [("model.embed_tokens.weight", (vocab, d))]
    for layer in range(dims.num_hidden_layers):
        p = f"model.layers.{layer}."
        plan += [(p + f"self_attn.{r}_proj.weight", (d, d)) for r in "qkvo"]
        plan += [(p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                 (p + "mlp.down_proj.weight", (d, f)),
                 (p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,))]
    plan += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    return plan


def assign_shards(plan: list[tuple[str, tuple[int, ...]]], shard_bytes: int) -> list[int]:
    """Shard index of each tensor: a new shard starts when the next tensor would pass ``shard_bytes``."""
    out, current, size = [], 0, 0
    for _, shape in plan:
        nbytes = 2 * math.prod(shape)  # fp16
        if size and size + nbytes > shard_bytes:
            current, size = current + 1, 0
        out.append(current)
        size += nbytes
    return out


def _random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # Haar-distributed


def _two_factors(n: int) -> tuple[int, int]:
    """n = a * b with a the largest divisor <= sqrt(n) (4096 -> 64 x 64)."""
    a = max(k for k in range(1, int(math.isqrt(n)) + 1) if n % k == 0)
    return a, n // a


def attention_tensor(dims: Dims, decay: float, generator: torch.Generator) -> torch.Tensor:
    """One layer's W_all (d_model, d_head, 4, heads) with a decaying spectrum in modes d_model and d_head."""
    shape = AttentionShape(n_heads=dims.num_attention_heads, n_kv_heads=dims.num_attention_heads,
                           d_head=dims.head_dim, d_model=dims.hidden_size)
    i1, i2, i3, i4 = tensor_shape(shape, "kv")
    core = torch.randn(i1, i2, i3, i4, generator=generator)
    core *= torch.exp(-decay * torch.arange(i1) / i1).reshape(-1, 1, 1, 1)
    core *= torch.exp(-decay * torch.arange(i2) / i2).reshape(1, -1, 1, 1)
    a, b = _two_factors(i1)
    qa, qb = _random_orthogonal(a, generator), _random_orthogonal(b, generator)
    q2 = _random_orthogonal(i2, generator)
    # mode 1 by the orthogonal Kronecker product Qa (x) Qb: reshape d_model into (a, b) and rotate each
    x = torch.einsum("ia,jb,abr->ijr", qa, qb, core.reshape(a, b, -1)).reshape(i1, i2, i3, i4)
    x = torch.einsum("jb,ibrs->ijrs", q2, x)
    return x * (WEIGHT_STD / float(x.std()))


def layer_tensors(dims: Dims, layer: int, seed: int, decay: float) -> dict[str, torch.Tensor]:
    """All fp16 tensors of one decoder layer (names with the ``model.`` prefix)."""
    g = torch.Generator().manual_seed(seed * 100_003 + layer)
    d, f = dims.hidden_size, dims.intermediate_size
    shape = AttentionShape(n_heads=dims.num_attention_heads, n_kv_heads=dims.num_attention_heads,
                           d_head=dims.head_dim, d_model=d)
    layout = LlamaLayout()
    tensors = {"model." + name: torch.empty(d, d, dtype=torch.float16)
               for name in layout.attention_names(layer).values()}
    weights = untensorise(attention_tensor(dims, decay, g), shape, "kv")
    layout.write_attention(tensors, layer, shape, weights, prefix="model.")
    p = f"model.layers.{layer}."
    for name, rows, cols in (("mlp.gate_proj.weight", f, d), ("mlp.up_proj.weight", f, d),
                             ("mlp.down_proj.weight", d, f)):
        tensors[p + name] = (torch.randn(rows, cols, generator=g) * WEIGHT_STD).half()
    tensors[p + "input_layernorm.weight"] = torch.ones(d, dtype=torch.float16)
    tensors[p + "post_attention_layernorm.weight"] = torch.ones(d, dtype=torch.float16)
    return tensors


def other_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if name == "model.norm.weight":
        return torch.ones(shape, dtype=torch.float16)
    g = torch.Generator().manual_seed(seed * 100_003 + (1 if name.startswith("lm_head") else 2) * 10_000_000)
    return (torch.randn(shape, generator=g) * WEIGHT_STD).half()


def write_config(folder: Path, dims: Dims, tokenizer_dir: Path, vocab: int) -> None:
    from transformers import AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_hidden_layers, num_attention_heads=dims.num_attention_heads,
        num_key_value_heads=dims.num_attention_heads, max_position_embeddings=dims.max_position_embeddings,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        initializer_range=WEIGHT_STD,
    )
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch.float16
    config.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, folder / name)


def tokenizer_vocab(tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tokenizer_dir))


def default_tokenizer_dir() -> Path:
    from tensorllm.models import resolve_model

    return resolve_model("smollm2-135m")


def make_checkpoint(out: Path, dims: Dims = LLAMA2_7B, *, shard_gb: float = 5.0, seed: int = 0,
                    decay: float = 6.0, tokenizer_dir: Path | None = None, overwrite: bool = False) -> Path:
    """Write the checkpoint to ``out`` (see the module docstring) and return ``out``."""
    from safetensors.torch import save_file

    if shard_gb <= 0:
        raise ValueError(f"--shard-gb must be > 0; got {shard_gb}")
    if decay < 0:
        raise ValueError(f"--decay must be >= 0 (0: a flat spectrum); got {decay}")
    if dims.hidden_size % dims.num_attention_heads:
        raise ValueError(f"hidden_size {dims.hidden_size} is not a multiple of num_attention_heads "
                         f"{dims.num_attention_heads}")
    out = Path(out)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    vocab = tokenizer_vocab(tokenizer_dir)
    settings = {"dims": asdict(dims), "vocab_size": vocab, "shard_gb": shard_gb, "seed": seed, "decay": decay,
                "dtype": "float16", "weight_std": WEIGHT_STD}
    marker = out / "synthetic.json"
    if marker.is_file() and not overwrite:
        existing = json.loads(marker.read_text())
        if existing.get("settings") == settings:
            log.info("%s already holds this checkpoint (same settings); nothing to do", out)
            return out
        raise FileExistsError(f"{out} holds a synthetic checkpoint with other settings "
                              f"({existing.get('settings')}); pass --overwrite or another --out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists and is not a synthetic checkpoint; pass --overwrite or another --out")

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    write_config(partial, dims, tokenizer_dir, vocab)

    plan = tensor_plan(dims, vocab)
    shard_of = assign_shards(plan, int(shard_gb * 1e9))
    n_shards = shard_of[-1] + 1
    names = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
    weight_map, total, pending, layer_cache = {}, 0, {}, {}
    for k, ((name, shape), shard) in enumerate(zip(plan, shard_of)):
        if name.startswith("model.layers."):
            layer = int(name.split(".")[2])
            if layer not in layer_cache:
                layer_cache = {layer: layer_tensors(dims, layer, seed, decay)}  # one layer in memory at a time
            tensor = layer_cache[layer][name]
        else:
            tensor = other_tensor(name, shape, seed)
        assert tuple(tensor.shape) == shape and tensor.dtype == torch.float16, (name, tensor.shape)
        pending[name] = tensor.contiguous()
        weight_map[name] = names[shard]
        total += tensor.numel() * 2
        if k + 1 == len(plan) or shard_of[k + 1] != shard:
            save_file(pending, str(partial / names[shard]), metadata={"format": "pt"})
            log.info("wrote %s (%d tensors, %.2f GB) at %.0f s", names[shard], len(pending),
                     sum(t.numel() * 2 for t in pending.values()) / 1e9, time.perf_counter() - start)
            pending = {}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (partial / "synthetic.json").write_text(json.dumps(
        {"settings": settings, "tokenizer_from": str(tokenizer_dir), "command": " ".join(sys.argv),
         "seconds": round(time.perf_counter() - start, 1)}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    log.info("checkpoint complete: %s (%d shards, %.2f GB) in %.0f s", out, n_shards, total / 1e9,
             time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; required with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="small dims (d_model 256, 2 layers, 4 heads, MLP 688) for tests; same tensors and files")
    parser.add_argument("--shard-gb", type=float, default=None, help="shard size in GB (default 5; 0.02 with --tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decay", type=float, default=6.0,
                        help="attention spectrum decay: singular values ~ exp(-decay k / I_n) in d_model and d_head")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="folder with the tokenizer to copy (default: SmolLM2-135M-Instruct's)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite an existing folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out (the default folder is for the 7B-shaped checkpoint)")
    dims = TINY if args.tiny else LLAMA2_7B
    shard_gb = args.shard_gb if args.shard_gb is not None else (0.02 if args.tiny else 5.0)
    return make_checkpoint(args.out or DEFAULT_OUT, dims, shard_gb=shard_gb, seed=args.seed, decay=args.decay,
                           tokenizer_dir=args.tokenizer, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
