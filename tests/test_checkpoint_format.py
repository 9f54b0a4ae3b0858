"""The checkpoint blob (edge_ml.checkpoint_format): round trip, corrupt or foreign blobs refused."""

from __future__ import annotations

import zlib

import msgpack
import numpy as np
import pytest
from pipeline_helpers import make_pipeline, readings

from edge_ml.checkpoint_format import MAGIC, SCHEMA_VERSION, decode, encode
from edge_ml.errors import CheckpointError
from edge_ml.state import compatibility, export_state


def test_round_trip_keeps_every_array() -> None:
    p = make_pipeline()
    p.process_readings(*readings(600))
    document = export_state(p)
    back = decode(encode(document).blob, compatibility(p))
    assert back["header"]["readings_total"] == 600
    assert back["state"]["names"] == document["state"]["names"]
    for part in ("stats", "features", "detector", "alerts", "drift"):
        for key, array in document["state"][part].items():
            restored = back["state"][part][key]
            assert restored.dtype == array.dtype and restored.shape == array.shape
            np.testing.assert_array_equal(restored, array)


def _blob() -> bytes:
    p = make_pipeline()
    p.process_readings(*readings(300))
    return encode(export_state(p)).blob


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[: len(b) // 2], "checksum"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum"),
        (lambda b: b"NOTACKPT" + b[8:], "magic"),
        (lambda b: b"", "magic"),
    ],
)
def test_corrupt_or_truncated_blobs_are_refused(mangle, reason) -> None:
    with pytest.raises(CheckpointError, match=reason):
        decode(mangle(_blob()))


def _signed(raw: bytes) -> bytes:
    import hashlib

    body = zlib.compress(raw)
    return MAGIC + hashlib.sha256(body).digest() + body


def test_wrong_schema_and_garbage_bodies_are_refused() -> None:
    wrong = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION + 1}, "state": {}})
    with pytest.raises(CheckpointError, match="schema version"):
        decode(_signed(wrong))
    for version in (0, "3", None):
        foreign = msgpack.packb({"header": {"schema_version": version}, "state": {}})
        with pytest.raises(CheckpointError, match="schema version"):
            decode(_signed(foreign))
    for version in (1, 2):  # older layouts are read (edge_ml.state upgrades them)
        old = msgpack.packb({"header": {"schema_version": version}, "state": {}})
        assert decode(_signed(old))["header"]["schema_version"] == version
    with pytest.raises(CheckpointError, match="cannot decode"):
        decode(_signed(b"\xc1\xc1\xc1"))
    with pytest.raises(CheckpointError, match="header/state"):
        decode(_signed(msgpack.packb([1, 2, 3])))
    bad_array = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                               "state": {"a": {"nd": 1, "dtype": "|O", "shape": [1],
                                               "data": b"12345678"}}})
    with pytest.raises(CheckpointError, match="not allowed"):
        decode(_signed(bad_array))
    short = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                           "state": {"a": {"nd": 1, "dtype": "<f8", "shape": [4],
                                           "data": b"1234"}}})
    with pytest.raises(CheckpointError, match="bytes"):
        decode(_signed(short))


def test_params_mismatch_is_refused_with_the_difference() -> None:
    blob = _blob()
    other = make_pipeline(n_trees=7)
    with pytest.raises(CheckpointError, match="n_trees: checkpoint 5, config 7"):
        decode(blob, compatibility(other))
