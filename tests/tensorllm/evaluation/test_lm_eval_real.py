"""lm-eval on the real SmolLM2-135M-Instruct: the base, a layer-29 variant and its factorised export, on a
local 16-question multiple-choice task (tests/data/lm_eval/capitals.jsonl), offline.

With the real (BPE) tokenizer, lm-eval's log-likelihood of every choice is the model's own forward pass, and
the factorised export (loaded through load_compressed) scores as the dense variant it came from.
Marked ``real_model`` (~2-3 minutes on 2 CPU cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorllm.artifact import apply_artifacts, load_artifact
from tensorllm.decompose import decompose_layer
from tensorllm.export import export_variant
from tensorllm.models import load_model

from eval_helpers import SMOLLM2_FOLDER
from test_lm_eval import assert_own_loglikelihoods, choice_loglikelihoods, task_folder

pytestmark = pytest.mark.real_model
TASK = "capitals"
EXPORT_TOL = 1e-3  # factorised vs dense-reconstructed attention, fp32, 30 layers: log-likelihoods agree to ~1e-5


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory) -> Path:
    return task_folder(tmp_path_factory.mktemp("lm_eval_real_tasks"), "tiny_choice.yaml", "capitals.jsonl", TASK)


def test_variant_and_its_factorised_export_score_alike(smollm2, include_dir, tmp_path):
    pytest.importorskip("lm_eval")
    from tensorllm.evaluation.lm_eval_runner import run_lm_eval, task_manager

    manager = task_manager([TASK], include_dir)
    model, tokenizer = smollm2
    [rec] = decompose_layer(str(SMOLLM2_FOLDER), layer=29, rank_list=[(64, 32, 4)], out_root=tmp_path / "artifacts")
    with apply_artifacts(model, [load_artifact(rec.artifact)]):
        variant = run_lm_eval(model, tokenizer, [TASK], manager=manager, log_samples=True)
        variant_lls = choice_loglikelihoods(variant, TASK)
        assert_own_loglikelihoods(model, tokenizer, variant_lls)
    export = export_variant(str(SMOLLM2_FOLDER), [rec.artifact], tmp_path / "export")
    exported_model, exported_tokenizer = load_model(export["path"], device="cpu", dtype=model.dtype)
    exported = run_lm_eval(exported_model, exported_tokenizer, [TASK], manager=manager, log_samples=True)
    exported_lls = choice_loglikelihoods(exported, TASK)
    assert exported_lls.keys() == variant_lls.keys() and len(variant_lls) == 64  # 16 questions x 4 choices
    assert max(abs(exported_lls[k] - variant_lls[k]) for k in variant_lls) < EXPORT_TOL
    assert exported.score(TASK, "acc").value == variant.score(TASK, "acc").value
    assert variant.score(TASK, "acc").value >= 0.5  # a working model knows most capitals (measured 0.875; chance 0.25)
