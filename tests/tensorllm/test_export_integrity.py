"""Exports are checked before use and written all at once.

* Integrity: ``export_variant`` records every file's sha256 (``tensorllm_manifest.json``); ``load_compressed``,
  ``from_pretrained(..., trust_remote_code=True)`` and ``tensorllm verify`` check it. Without it, 8 bytes
  flipped in the middle of ``model.safetensors`` (the header intact) loaded silently.
* Atomic outputs: ``export`` writes beside the target and renames at the end; a non-empty target is refused
  unless ``--overwrite``; a process SIGKILLed while writing leaves the old folder (or none), never a partial one,
  and the next run removes its temporary folder.

Tiny random models (``tiny_models``); the kill test runs the real ``export_variant`` in a subprocess whose
safetensors write is slowed down, so that the test can catch it half-way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tensorllm.atomic_folder import PARTIAL, atomic_folder, refuse_existing
from tensorllm.cli import main
from tensorllm.decompose import decompose_layer
from tensorllm.export import WEIGHTS_FILE, export_variant, load_compressed
from tensorllm.manifest import MANIFEST_FILE, verify_manifest
from tensorllm.tiny_models import save_tiny_with_tokenizer

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """(base folder, [artifact]): a llama_gqa with layer 1 at half ranks (factorised pays off there)."""
    root = tmp_path_factory.mktemp("export-integrity")
    folder, _ = save_tiny_with_tokenizer("llama_gqa", root / "base")
    [record] = decompose_layer(str(folder), layer=1, rank_list=[(0.5, 0.5, 0.5)], out_root=root / "artifacts")
    return folder, [record.artifact]


@pytest.fixture
def export(variant, tmp_path) -> Path:
    folder, artifacts = variant
    out = tmp_path / "export"
    export_variant(str(folder), artifacts, out)
    return out


def flip_middle(path: Path, n: int = 8) -> None:
    """Invert ``n`` bytes in the middle of ``path`` (the tensor data of a safetensors file: its header stays valid)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


# ---- integrity ---------------------------------------------------------------------------------------------
def test_the_manifest_records_every_file_and_verifies(export):
    recorded = json.loads((export / MANIFEST_FILE).read_text())["files"]
    on_disk = {p.name for p in export.iterdir() if p.name != MANIFEST_FILE}
    assert set(recorded) == on_disk  # weights, config, tokenizer, loader code, model card: all of them
    assert {WEIGHTS_FILE, "config.json", "modeling_tensorllm.py", "README.md"} <= on_disk
    assert len(verify_manifest(export)) == len(on_disk)


def test_flipped_bytes_in_the_weights_are_refused_by_every_loader(export):
    from transformers import AutoModelForCausalLM

    flip_middle(export / WEIGHTS_FILE)
    # without the check this loads: the header is intact, only tensor values changed
    model, _ = load_compressed(export, verify=False)
    assert model is not None
    pattern = rf"{export / WEIGHTS_FILE} is damaged: its sha256 is [0-9a-f]{{64}} but {MANIFEST_FILE} recorded"
    with pytest.raises(ValueError, match=pattern):
        load_compressed(export)
    with pytest.raises(ValueError, match=pattern):
        AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True)


def test_a_changed_config_or_loader_file_is_refused(export):
    config = export / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps"', '"rms_norm_eps" ', 1))  # still valid JSON
    with pytest.raises(ValueError, match=rf"{config} is damaged"):
        load_compressed(export)


def test_an_export_without_a_manifest_loads_with_a_warning(export, caplog):
    (export / MANIFEST_FILE).unlink()  # an export written before exports recorded digests
    with caplog.at_level("WARNING", logger="tensorllm.load_export"):
        load_compressed(export)
    assert f"{export} has no {MANIFEST_FILE}" in caplog.text


def test_save_pretrained_of_a_loaded_export_writes_a_manifest(export, tmp_path):
    model, _ = load_compressed(export)
    model.save_pretrained(tmp_path / "again")
    assert verify_manifest(tmp_path / "again")  # what the model's own save writes is checked too


# ---- tensorllm verify --------------------------------------------------------------------------------------
def test_verify_an_intact_export_prints_one_line_per_file_and_exits_0(export, capsys):
    assert main(["verify", str(export)]) == 0
    lines = capsys.readouterr().out.splitlines()
    n_files = len(json.loads((export / MANIFEST_FILE).read_text())["files"])
    assert len(lines) == n_files + 1 and all(line.startswith("ok  ") for line in lines[:-1])
    assert lines[-1].startswith(f"export {export}: {n_files} items intact")


def test_verify_a_damaged_export_names_the_file_and_exits_2(export, capsys):
    flip_middle(export / WEIGHTS_FILE)
    assert main(["verify", str(export)]) == 2
    captured = capsys.readouterr()
    assert f"DAMAGED  {export / WEIGHTS_FILE}" in captured.out
    assert captured.err.count("\n") == 1  # one line
    assert captured.err.startswith(f"tensorllm verify: error: 1 of ") and f"{export / WEIGHTS_FILE} is damaged" in captured.err


def test_verify_artifact_folders(variant, tmp_path, capsys):
    _, [artifact] = variant
    assert main(["verify", artifact]) == 0  # one artifact folder
    assert main(["verify", str(Path(artifact).parent)]) == 0  # a folder of them
    out = capsys.readouterr().out
    assert out.count("ok  ") == 2 and "items intact" in out
    copy = Path(shutil.copytree(artifact, tmp_path / "artifact"))
    flip_middle(copy / "tensors.safetensors")
    assert main(["verify", str(copy)]) == 2
    assert f"{copy / 'tensors.safetensors'} is corrupt" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), "is a file; give an export folder"),
    (lambda p: p.mkdir(), "is neither an export folder"),
    (lambda p: None, "is not a folder, nor a registry spec"),
], ids=["file", "empty-folder", "missing"])
def test_verify_bad_targets_exit_2(tmp_path, capsys, make, message):
    target = tmp_path / "target"
    make(target)
    assert main(["verify", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow  # an MLflow store: left out of `make test-fast`
def test_verify_a_registered_version(variant, tmp_path, capsys):
    from tensorllm.registry import Registry, VariantRecord

    folder, artifacts = variant
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    registry = Registry(uri)
    version = registry.register_variant(VariantRecord(key="k-verify", name="layer1-half", base_model=str(folder),
                                                      artifacts=list(artifacts)), "tiny-verify")
    registry.set_champion("tiny-verify", version, {"reason": "test"})
    assert main(["verify", "tiny-verify@champion", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    # two stored copies: the run's variant/ folder and the registered MLflow model's
    assert out.count("ok  ") == 2 and f"tiny-verify@champion (version {version}): 2 items intact" in out
    stored = sorted((tmp_path / "mlflow").rglob("tensors.safetensors"))
    assert len(stored) == 2, stored
    for copy in stored:  # damage each copy in the store in turn: the spec's check finds it
        pristine = copy.read_bytes()
        flip_middle(copy)
        assert main(["verify", "tiny-verify@champion", "--tracking-uri", uri]) == 2
        captured = capsys.readouterr()
        assert captured.out.count("DAMAGED") == 1 and "1 of 2 items" in captured.err
        assert "tensors.safetensors is corrupt" in captured.err
        copy.write_bytes(pristine)


# ---- atomic outputs ----------------------------------------------------------------------------------------
def test_a_non_empty_target_is_refused_unless_overwrite(variant, export, capsys):
    folder, artifacts = variant
    before = verify_manifest(export)
    with pytest.raises(FileExistsError, match=rf"{export} is not empty; give --overwrite to replace it"):
        export_variant(str(folder), artifacts, export)
    assert main(["export", *artifacts, "--out", str(export)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{export} is not empty; give --overwrite" in err
    (export / "stray.txt").write_text("left by someone")
    assert main(["export", *artifacts, "--out", str(export), "--overwrite"]) == 0
    assert not (export / "stray.txt").exists()  # replaced, not mixed in beside what was there
    assert [c.sha256 for c in verify_manifest(export)] == [c.sha256 for c in before]  # deterministic export
    assert not list(export.parent.glob(f".{export.name}.*"))  # no temporary folder left


def test_an_output_path_that_is_a_file_exits_2(variant, tmp_path, capsys):
    _, artifacts = variant
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert main(["export", *artifacts, "--out", str(target)]) == 2
    assert f"{target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "not a folder"


def test_a_failure_inside_the_block_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary folder is gone
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    refuse_existing(tmp_path / "missing", overwrite=False)  # a new folder is fine


SLOW_EXPORT = textwrap.dedent("""
    import sys, time
    import safetensors.torch as st

    original = st.save_model

    def slow_save_model(model, filename, metadata=None, force_contiguous=False):
        original(model, filename + ".fast", metadata=metadata)  # the real bytes, then copied slowly
        with open(filename + ".fast", "rb") as src, open(filename, "wb") as dst:
            while chunk := src.read(4096):
                dst.write(chunk)
                dst.flush()
                time.sleep(0.01)

    st.save_model = slow_save_model
    from tensorllm.export import export_variant

    export_variant(sys.argv[1], sys.argv[3:], sys.argv[2], overwrite=True)
""")


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "overwrite"])
def test_sigkill_while_writing_leaves_the_old_folder_or_none(variant, export, tmp_path, existing):
    folder, artifacts = variant
    target = export if existing else tmp_path / "new"
    before = _digests(export)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(folder), str(target), *artifacts], env=env)
    partial_weights = None
    deadline = time.monotonic() + 120
    try:
        while partial_weights is None and time.monotonic() < deadline and proc.poll() is None:
            for weights in target.parent.glob(f".{target.name}{PARTIAL}*/{WEIGHTS_FILE}"):
                if weights.stat().st_size > 0:  # half-way through the weights file
                    partial_weights = weights
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert partial_weights is not None, "the export finished (or failed) before the test could catch it"
    stale = partial_weights.parent
    assert stale.is_dir()  # the killed process's temporary folder, with a partial file
    if existing:
        assert _digests(target) == before  # the old folder, complete and intact
    else:
        assert not target.exists()  # no half-written folder under the target's name
    export_variant(str(folder), artifacts, target, overwrite=True)  # the next run
    assert not stale.exists()  # removed what the killed one left
    assert _digests(target) == before
    assert not list(target.parent.glob(f".{target.name}.*"))


def _digests(folder: Path) -> dict[str, str]:
    """file -> sha256 of an export, verified; the model card names its folder, so it is left out."""
    return {c.path.name: c.sha256 for c in verify_manifest(folder) if c.path.name != "README.md"}
