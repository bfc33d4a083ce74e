"""A damaged cached task result is never used: a warning names the file and the task recomputes.

A real Prefect API (``prefect_test_harness``) and the real ``decompose-layer`` task on a tiny Llama: the first
flow run computes and stores the result, the test flips one bit in the stored record, and a second flow run
(which Prefect would answer from the cache) must warn, recompute and return the true value. Without the digest
the flipped bit comes back as another float, silently (a validation top-1 of 0.05 read back as 0.0 that way).
The unit tests of :class:`tasks.result_integrity.DigestSerializer` need no server.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from pathlib import Path

import pytest

from tasks.result_integrity import CORRUPT_SUFFIX, DigestSerializer, check_record

RANKS = [[8, 4, 1]]  # any ranks of the tiny model do; small ones keep the HOOI instant


def test_the_envelope_round_trips_and_refuses_a_changed_payload():
    serializer = DigestSerializer()
    value = [{"rel_error": 0.05, "ranks": (8, 4, 1)}]
    blob = serializer.dumps(value)
    assert serializer.loads(blob) == value  # pickle inside: the tuple stays a tuple
    envelope = json.loads(blob)
    envelope["payload"] = _flip_float_bit(envelope["payload"], 0.05)
    with pytest.raises(ValueError, match="payload sha256 is .* the record says"):
        serializer.loads(json.dumps(envelope).encode())
    with pytest.raises(ValueError, match="not a tensorllm-sha256 envelope"):
        serializer.loads(b"{not json")


def test_a_cached_perplexity_whose_prefix_file_is_missing_or_changed_is_refused(tmp_path):
    """A base perplexity names the layer inputs the variants replay: a cached one is used only while that file is
    intact (else it is recomputed, which writes the file again)."""
    from tensorllm.artifact import file_sha256
    from tasks.result_integrity import check_files

    prefix = tmp_path / "ppl-prefix-L2-abc.safetensors"
    prefix.write_bytes(b"stored hidden states")
    value = {"perplexity": 12.0, "prefix_file": str(prefix), "prefix_sha256": file_sha256(prefix)}
    check_files(value)  # intact: accepted
    check_files({"perplexity": 12.0, "prefix_file": None, "prefix_sha256": None})  # nothing recorded: nothing to check
    prefix.write_bytes(b"stored hidden stateZ")
    with pytest.raises(ValueError, match="the perplexity prefix it names, is missing or changed"):
        check_files(value)
    prefix.unlink()
    with pytest.raises(ValueError, match="the perplexity prefix it names, is missing or changed"):
        check_files(value)


def _flip_float_bit(payload_b64: str, value: float) -> str:
    """The base64 pickle with the lowest bit of ``value``'s 8 bytes flipped: still a valid pickle, another float."""
    raw = bytearray(base64.decodebytes(payload_b64.encode()))
    at = bytes(raw).index(struct.pack(">d", value))  # pickle's BINFLOAT: big-endian double
    raw[at + 7] ^= 0x01
    return base64.encodebytes(bytes(raw)).decode()


def _flip_stored_float(path: Path, value: float) -> None:
    """Flip one bit of ``value`` inside the record file, in whichever format the record uses (an envelope, or
    Prefect's plain pickle serializer as before the digest): the damage a disk or a copy can do."""
    record = json.loads(path.read_text())
    try:
        envelope = json.loads(record["result"])
        envelope["payload"] = _flip_float_bit(envelope["payload"], value)
        record["result"] = json.dumps(envelope)
    except (ValueError, KeyError):
        record["result"] = _flip_float_bit(record["result"], value)
    path.write_text(json.dumps(record))


@pytest.mark.integration
def test_a_flipped_bit_in_a_cached_result_is_recomputed_with_a_warning(prefect_api, tiny_llm, tmp_path):
    from prefect import flow
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from tasks.caching import decompose_cache_key
    from tasks.decompose import decompose_layer_task

    params = dict(model=str(tiny_llm), layer=1, ranks=RANKS, grouping="kv", out_root=str(tmp_path / "artifacts"),
                  model_identity="tiny", layout=None, balance="none", fit="weights", calibration=None)

    @flow(name="cached-result-integrity")
    def one_layer() -> list[dict]:
        return decompose_layer_task(**params)

    storage = tmp_path / "storage"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(storage)}):
        first = one_layer()
        record = storage / decompose_cache_key(None, params)
        assert record.is_file(), sorted(p.name for p in storage.iterdir())
        assert check_record(record) == first  # the stored value is the returned one, and it verifies
        assert one_layer()[0]["reused"] is False  # a cache hit returns the stored record unchanged

        true_error = first[0]["rel_error"]
        _flip_stored_float(record, true_error)
        task_log = logging.getLogger("prefect.task_runs")  # the run logger: the console and the Prefect UI
        task_log.addHandler(handler := _Collect())
        try:
            again = one_layer()
        finally:
            task_log.removeHandler(handler)
    warnings = [m for m in handler.messages if "integrity" in m]
    assert len(warnings) == 1 and str(record) in warnings[0] and "recomputing" in warnings[0], warnings
    # recomputed: the library found its artifact on disk (reused), and the value is the true one, not the flipped
    assert again[0]["reused"] is True
    assert again[0]["rel_error"] == true_error
    assert (storage / (record.name + CORRUPT_SUFFIX)).is_file()  # the damaged record is kept aside, not read
    assert check_record(record)[0]["rel_error"] == true_error  # and a fresh, verified record replaced it


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
