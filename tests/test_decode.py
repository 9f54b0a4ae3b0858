"""Every payload form DESIGN.md lists, and every way a payload can be wrong."""

from __future__ import annotations

import json

import msgpack
import pytest

from edge_ml.decode import decode_batch


def _one(payload: bytes, topic: str = "sensors/t", received_at: float = 100.0):
    return decode_batch([(topic, payload, received_at)], 65536)


@pytest.mark.parametrize(
    "payload,streams,values,ts",
    [
        (b"21.5", ["sensors/t"], [21.5], 100.0),
        (b" -3e2\n", ["sensors/t"], [-300.0], 100.0),
        (b'{"value": 21.5}', ["sensors/t"], [21.5], 100.0),
        (b'{"value": 1, "ts": 1700000000.5}', ["sensors/t"], [1.0], 1700000000.5),
        (b'{"value": 1, "ts": "2023-11-14T22:13:20Z"}', ["sensors/t"], [1.0], 1700000000.0),
        (b'{"temperature": 21.5, "humidity": 40}', ["sensors/t/temperature", "sensors/t/humidity"],
         [21.5, 40.0], 100.0),
        (msgpack.packb({"value": 2.5}), ["sensors/t"], [2.5], 100.0),
        (msgpack.packb({"a": 1, "b": 2, "ts": 5.0}), ["sensors/t/a", "sensors/t/b"], [1.0, 2.0],
         5.0),
        (msgpack.packb({"v": 1, "dev": "node-7", "seq": 1234, "ts": 1700000000.5,
                        "m": {"temperature": 21.5, "vibration": 0.02}}),
         ["sensors/t/temperature", "sensors/t/vibration"], [21.5, 0.02], 1700000000.5),
    ],
)
def test_payload_forms(payload: bytes, streams: list[str], values: list[float], ts: float) -> None:
    batch = _one(payload)
    assert not batch.rejects
    assert batch.streams == streams
    assert batch.values == values
    assert batch.ts == [ts] * len(values)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"nan", "non_finite"),
        (b"-inf", "non_finite"),
        (b'{"value": NaN}', "non_finite"),
        (b'{"value": 1e999}', "non_finite"),
        (b'{"value": "hot"}', "wrong_type"),
        (b'{"value": true}', "wrong_type"),
        (b'{"value": null}', "wrong_type"),
        (b'{"value": [1, 2]}', "wrong_type"),
        (b'{"value": 1', "malformed_json"),
        (b"{}", "no_fields"),
        (b'{"ts": 5}', "no_fields"),
        (b"[1, 2, 3]", "malformed_msgpack"),
        (b"hello", "malformed_msgpack"),
        (b"\xff\xfe\x00", "malformed_msgpack"),
        (json.dumps({"value": 1, "ts": "yesterday"}).encode(), "bad_timestamp"),
        (json.dumps({"value": 1, "ts": 1.7e12}).encode(), "bad_timestamp"),  # milliseconds
        (json.dumps({"value": 1, "ts": "2023-11-14T22:13:20"}).encode(), "bad_timestamp"),
        (json.dumps({f"f{i}": i for i in range(100)}).encode(), "too_many_fields"),
        (json.dumps({"a/b": 1}).encode(), "bad_stream_name"),
        (json.dumps({"#": 1}).encode(), "bad_stream_name"),
        (json.dumps({"value": {"x": {"y": {"z": {"w": 1}}}}}).encode(), "not_a_reading"),
        (b"[" * 30_000 + b"]" * 30_000, "malformed_msgpack"),
        (b"{" * 60_000, "malformed_json"),
        (b"{\"a\": " * 9_000 + b"1" + b"}" * 9_000, "malformed_json"),
        (msgpack.packb([1, 2]), "not_a_reading"),
        (msgpack.packb({"v": 2, "dev": "x", "seq": 1, "m": {"a": 1}}), "bad_frame"),
        (msgpack.packb({"v": 1, "dev": "", "seq": 1, "m": {"a": 1}}), "bad_frame"),
        (msgpack.packb({"v": 1, "dev": "x", "seq": -1, "m": {"a": 1}}), "bad_frame"),
        (msgpack.packb({"v": 1, "dev": "x", "seq": 1, "m": [1]}), "bad_frame"),
        (msgpack.packb({"v": 1, "dev": "x", "seq": 1, "m": {"a": "1"}}), "wrong_type"),
        (msgpack.packb({"value": 1.0}) + b"\x00", "malformed_msgpack"),
    ],
)
def test_rejects_name_their_reason(payload: bytes, reason: str) -> None:
    batch = _one(payload)
    assert batch.streams == []
    assert [r.reason for r in batch.rejects] == [reason]
    reject = batch.rejects[0]
    assert reject.topic == "sensors/t"
    assert reject.payload_prefix == payload[:256]
    assert reject.received_at == 100.0


def test_oversized_payload_is_rejected_before_parsing() -> None:
    batch = decode_batch([("sensors/t", b"1" * 2000, 1.0)], max_payload_bytes=1024)
    assert [r.reason for r in batch.rejects] == ["oversized"]
    assert len(batch.rejects[0].payload_prefix) == 256


def test_a_payload_is_taken_whole_or_not_at_all() -> None:
    batch = _one(b'{"good": 1, "bad": "x"}')
    assert batch.values == []
    assert [r.reason for r in batch.rejects] == ["wrong_type"]


def test_good_and_bad_interleave_in_order() -> None:
    messages = [("a", b"1", 1.0), ("b", b"junk", 2.0), ("c", b'{"value": 3}', 3.0),
                ("d", b"nan", 4.0), ("e", b"5", 5.0)]
    batch = decode_batch(messages, 65536)
    assert batch.streams == ["a", "c", "e"]
    assert batch.values == [1.0, 3.0, 5.0]
    assert [r.topic for r in batch.rejects] == ["b", "d"]


def test_unprintable_topic_is_rejected() -> None:
    assert [r.reason for r in _one(b"1", topic="bad\x00topic").rejects] == ["bad_stream_name"]
