"""Peak memory of loading an exported model folder, against the size of its weight files.

Run it as its own process (the numbers are this process's)::

    python -m bench.load_memory runs/exports/smollm2-135m-qa/v23-uniform          # factorised or dense export

It imports torch, transformers and tensorllm, builds the family's model on the meta device and loads the
tokenizer once (so that code, imports and the tokenizer are not counted), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``),
loads the folder with :func:`tensorllm.models.load_model` in its own dtype, and prints one JSON line:
``export_bytes`` (safetensors files), ``rss_before`` / ``peak_rss`` / ``rss_after`` (bytes) and
``peak_over_export`` = (peak_rss - rss_before) / export_bytes. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"(VmHWM|VmRSS):\s+(\d+) kB", text)}


def measure(folder: str) -> dict:
    import torch  # noqa: F401  (imported before the baseline on purpose)
    import transformers

    from tensorllm.checkpoint import stored_dtype
    from tensorllm.export import folder_bytes
    from tensorllm.load_export import base_config_from_dict, is_factorised_export, read_config_dict
    from tensorllm.models import load_model

    dtype = stored_dtype(folder)
    config = base_config_from_dict(read_config_dict(folder), keep_auto_map=False)
    with torch.device("meta"):  # imports the family's modeling code; allocates nothing
        transformers.AutoModelForCausalLM.from_config(config)
    import tensorllm.evaluation.runtime  # noqa: F401  (load_model's own imports: datasets, pyarrow, ...)

    transformers.AutoTokenizer.from_pretrained(folder, config=config)  # the tokenizers library and its files
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark starts again from the current RSS
    before = _status()["VmRSS"]
    model, _ = load_model(folder, dtype=dtype)
    status = _status()
    size = folder_bytes(folder)
    return {"folder": str(folder), "factorised": is_factorised_export(folder), "dtype": str(dtype),
            "export_bytes": size, "rss_before": before, "peak_rss": status["VmHWM"], "rss_after": status["VmRSS"],
            "peak_over_export": (status["VmHWM"] - before) / size,
            "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.load_memory MODEL_FOLDER")
    print(json.dumps(measure(sys.argv[1])))
