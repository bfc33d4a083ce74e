"""Damaged files are refused with one error that names the file (issue 11, item 2: integrity).

Two kinds of files are checked:

* artifacts: ``artifact.json`` records ``tensors_sha256``, the sha256 of ``tensors.safetensors``;
  ``load_artifact`` recomputes it. Without it, a tensors file whose *data* bytes are damaged but whose
  header is intact loads without complaint (the first test shows ``safetensors`` accepting it) and the
  variant silently scores 0.
* model checkpoints: :class:`tensorllm.checkpoint.Checkpoint` reads every safetensors header when the
  folder is opened, so a truncated file, a damaged header, a missing shard or an index that disagrees with
  its shards is a ``ValueError`` / ``FileNotFoundError`` naming the file instead of a bare
  ``SafetensorError`` that names nothing.

Every damaged file is made from a tiny model (``tiny_models``) copied into the test's own folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tensorllm.artifact import DIGEST_KEY, META_FILE, TENSORS_FILE, load_artifact, materialise, read_meta, save_artifact
from tensorllm.checkpoint import INDEX_FILE, SINGLE_FILE, Checkpoint
from tensorllm.decompose import decompose_layer
from tensorllm.tiny_models import save_tiny_with_tokenizer

LOW = (4, 2, 1)  # any ranks do; small ones keep the decomposition instant
LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread (tests/tensorllm/conftest.py)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Pristine tiny llama checkpoints: single-file and sharded (20KB shards: several files per layer)."""
    root = tmp_path_factory.mktemp("integrity-models")
    return {"single": save_tiny_with_tokenizer("llama", root / "single")[0],
            "sharded": save_tiny_with_tokenizer("llama", root / "sharded", max_shard_size="20KB")[0]}


@pytest.fixture
def model_copy(originals, tmp_path):
    """A fresh copy of a pristine checkpoint, which the test may damage."""
    def copy(kind: str) -> Path:
        return Path(shutil.copytree(originals[kind], tmp_path / kind))
    return copy


@pytest.fixture
def artifact(originals, tmp_path) -> Path:
    """A fresh, good artifact folder (layer 1 of the single-file llama) that the test may damage."""
    [record] = decompose_layer(str(originals["single"]), layer=LAYER, rank_list=[LOW], out_root=tmp_path / "artifacts")
    return Path(record.artifact)


def flip_tail(path: Path, n: int = 16) -> None:
    """Invert the last ``n`` bytes: tensor data (the header sits at the start of a safetensors file)."""
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(b ^ 0xFF for b in data[-n:])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_header(path: Path) -> None:
    """Overwrite bytes 8..23, the start of the JSON header (bytes 0..7 are its length)."""
    data = bytearray(path.read_bytes())
    data[8:24] = b"\xff" * 16
    path.write_bytes(bytes(data))


def named(path: Path) -> str:
    return re.escape(str(path))


# ---- artifacts ------------------------------------------------------------------------------------------
def test_good_artifact_loads_and_records_the_file_digest(artifact):
    recorded = json.loads((artifact / META_FILE).read_text())[DIGEST_KEY]  # the raw file
    assert recorded == hashlib.sha256((artifact / TENSORS_FILE).read_bytes()).hexdigest()
    loaded = load_artifact(artifact)
    assert set(loaded.tensors) == {"U1", "U2", "U3", "core"}
    assert loaded.meta[DIGEST_KEY] == recorded


def test_flipped_tensor_bytes_are_refused(artifact):
    tensors_path = artifact / TENSORS_FILE
    flip_tail(tensors_path)
    load_file(tensors_path)  # the header is intact: safetensors alone accepts the damaged file
    actual = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"{named(tensors_path)} is corrupt: its sha256 is {actual} but "
                                         rf"artifact\.json recorded [0-9a-f]{{64}} .*delete {named(artifact)} and recompute"):
        load_artifact(artifact)


@pytest.mark.parametrize("damage", [truncate, damage_header], ids=["truncated", "header"])
def test_truncated_or_damaged_header_artifact_is_refused(artifact, damage):
    damage(artifact / TENSORS_FILE)
    with pytest.raises(ValueError, match=rf"{named(artifact / TENSORS_FILE)} is corrupt"):
        load_artifact(artifact)


def test_unreadable_tensors_file_names_it_even_when_the_digest_matches(artifact):
    # a digest only proves the file is the one written; a writer that wrote garbage is still refused clearly
    tensors_path = artifact / TENSORS_FILE
    truncate(tensors_path)
    meta = read_meta(artifact)
    meta[DIGEST_KEY] = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    (artifact / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{named(tensors_path)}: not a readable safetensors file \(.*incomplete"):
        load_artifact(artifact)


def test_artifact_without_a_digest_is_refused_unless_forced(artifact):
    # artifacts written before tensors_sha256 existed: their tensors cannot be checked
    meta = read_meta(artifact)
    del meta[DIGEST_KEY]
    (artifact / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{named(artifact / META_FILE)} records no tensors_sha256 .*"
                                         rf"delete {named(artifact)} and recompute it \(or .*verify=False\)"):
        load_artifact(artifact)
    assert set(load_artifact(artifact, verify=False).tensors) == {"U1", "U2", "U3", "core"}


def test_damaged_artifact_json_names_the_file(artifact):
    (artifact / META_FILE).write_text('{"format": "tensorllm-artifact/1", "kind": ')  # cut mid-write
    with pytest.raises(ValueError, match=rf"{named(artifact / META_FILE)}: not readable JSON .*delete"):
        read_meta(artifact)


def test_save_artifact_records_the_written_bytes_not_a_stale_digest(tmp_path, artifact):
    old = load_artifact(artifact)
    out = save_artifact(tmp_path / "copy", {**old.meta, DIGEST_KEY: "0" * 64}, old.tensors)
    assert read_meta(out)[DIGEST_KEY] == hashlib.sha256((out / TENSORS_FILE).read_bytes()).hexdigest()
    load_artifact(out)


def test_decompose_recomputes_a_damaged_artifact(originals, artifact, caplog):
    flip_tail(artifact / TENSORS_FILE)
    out_root = artifact.parent.parent
    with caplog.at_level(logging.WARNING, logger="tensorllm.decompose"):
        [again] = decompose_layer(str(originals["single"]), layer=LAYER, rank_list=[LOW], out_root=out_root)
    assert Path(again.artifact) == artifact and not again.reused
    assert f"not reusing {artifact}" in caplog.text and "is corrupt" in caplog.text
    load_artifact(artifact)  # rewritten whole: loads again
    # and a good artifact is still reused
    assert decompose_layer(str(originals["single"]), layer=LAYER, rank_list=[LOW], out_root=out_root)[0].reused


def test_materialise_refuses_a_damaged_artifact_before_loading_the_model(originals, artifact, tmp_path):
    flip_tail(artifact / TENSORS_FILE)
    with pytest.raises(ValueError, match=rf"{named(artifact / TENSORS_FILE)} is corrupt"):
        materialise(originals["single"], [artifact], tmp_path / "variant")
    assert not (tmp_path / "variant").exists()


def test_materialise_names_a_truncated_base_model(model_copy, originals, artifact, tmp_path):
    # transformers' from_pretrained raises a bare SafetensorError here; materialise names the file
    folder = model_copy("single")
    truncate(folder / SINGLE_FILE)
    with pytest.raises(ValueError, match=rf"{named(folder / SINGLE_FILE)}: not a readable safetensors file"):
        materialise(folder, [artifact], tmp_path / "variant")


# ---- checkpoints ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [truncate, damage_header], ids=["truncated", "header"])
def test_damaged_single_file_checkpoint_names_the_file(model_copy, damage):
    folder = model_copy("single")
    damage(folder / SINGLE_FILE)
    with pytest.raises(ValueError, match=rf"{named(folder / SINGLE_FILE)}: not a readable safetensors file "
                                         r"\(.*\); it is truncated or damaged: re-download or re-save the model"):
        Checkpoint(folder)


def shards(folder: Path) -> list[str]:
    return sorted(set(json.loads((folder / INDEX_FILE).read_text())["weight_map"].values()))


def test_sharded_checkpoint_with_a_missing_shard(model_copy):
    folder = model_copy("sharded")
    gone = shards(folder)[-1]
    (folder / gone).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{named(folder / INDEX_FILE)} names shard\(s\) that are not in "
                                                rf"{named(folder)}: \['{re.escape(gone)}'\]"):
        Checkpoint(folder)


@pytest.mark.parametrize("damage", [truncate, damage_header], ids=["truncated", "header"])
def test_sharded_checkpoint_with_a_damaged_shard(model_copy, damage):
    folder = model_copy("sharded")
    shard = folder / shards(folder)[0]
    damage(shard)
    with pytest.raises(ValueError, match=rf"{named(shard)}: not a readable safetensors file"):
        Checkpoint(folder)


def test_index_that_names_a_tensor_its_shard_lacks(model_copy):
    folder = model_copy("sharded")
    index = json.loads((folder / INDEX_FILE).read_text())
    first = shards(folder)[0]
    index["weight_map"]["model.layers.9.self_attn.q_proj.weight"] = first  # no layer 9 anywhere
    (folder / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"{named(folder / INDEX_FILE)} maps 1 tensor\(s\) to {named(folder / first)}, "
                                         r"which does not hold them: \['model\.layers\.9\.self_attn\.q_proj\.weight'\]"):
        Checkpoint(folder)


def test_index_that_is_not_json(model_copy):
    folder = model_copy("sharded")
    (folder / INDEX_FILE).write_text('{"weight_map": {')
    with pytest.raises(ValueError, match=rf"{named(folder / INDEX_FILE)}: not a safetensors index"):
        Checkpoint(folder)


def test_file_damaged_after_the_folder_was_opened(model_copy):
    folder = model_copy("single")
    ckpt = Checkpoint(folder)
    truncate(folder / SINGLE_FILE)
    with pytest.raises(ValueError, match=rf"{named(folder / SINGLE_FILE)}: not a readable safetensors file"):
        ckpt.attention(LAYER)


def test_good_checkpoints_still_open(originals):
    for folder in originals.values():
        assert Checkpoint(folder).attention(LAYER).q.shape[0] > 0
