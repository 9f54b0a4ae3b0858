"""Payloads to readings: bare numbers, JSON, msgpack maps and firmware frames v1.

A payload becomes one or more readings ``(stream, ts, value)``. The stream is the topic, or
``topic/field`` for every field not literally named ``value``, so a single-value sensor keeps its
topic as its name and a multi-field payload (or a firmware frame) gets one stream per field.
Anything else is a :class:`~edge_ml.records.Reject` with a reason code; nothing here raises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from edge_ml.records import Message, Reject
from edge_ml.timestamps import parse_timestamp

# How much of a rejected payload is kept for diagnosis.
PAYLOAD_PREFIX_BYTES = 256
MAX_FIELDS = 64
MAX_STREAM_NAME = 256
# Nested structures deeper than this are not sensor readings (and deep JSON is a DoS vector).
MAX_JSON_DEPTH = 4
FRAME_VERSION = 1

# Reason codes, stable: they are stored and counted.
OVERSIZED = "oversized"
EMPTY = "empty"
MALFORMED_JSON = "malformed_json"
MALFORMED_MSGPACK = "malformed_msgpack"
NOT_A_READING = "not_a_reading"
NON_FINITE = "non_finite"
WRONG_TYPE = "wrong_type"
NO_FIELDS = "no_fields"
TOO_MANY_FIELDS = "too_many_fields"
BAD_TIMESTAMP = "bad_timestamp"
BAD_FRAME = "bad_frame"
BAD_STREAM_NAME = "bad_stream_name"
# Given by the pipeline, not here: a reading for a new stream while ``[daemon] max_streams``
# streams are already held.
STREAM_LIMIT = "stream_limit"

_NUMBER_START = frozenset(b"0123456789+-.")
_NUMBER_TYPES = frozenset((int, float))  # exact types: bool is not a measurement
_CONTAINER_TYPES = frozenset((dict, list))
# Stream names of the fields of a map, by (topic, field names): a sensor sends the same fields
# every time, so they are checked once. Cleared when it grows past this many shapes.
_NAMES_CACHED = 4096
_names_by_shape: dict[tuple[str, tuple[Any, ...]], list[str]] = {}


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedBatch:
    """Readings of a micro-batch in arrival order, plus what was rejected."""

    streams: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    frames: list[tuple[str, int]] = field(default_factory=list)  # (dev, seq) of good frames
    # Stream -> the topic whose one map (JSON, msgpack, frame) carried it with other fields:
    # its device (edge_ml.devices). Streams of single-value payloads are not in it.
    devices: dict[str, str] = field(default_factory=dict)

    def ts_array(self) -> np.ndarray:
        return np.asarray(self.ts, dtype=np.float64)

    def value_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.values)


def _number(value: Any, name: str) -> float:
    # bool is an int subclass in Python, but true/false is not a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(WRONG_TYPE, f"{name}: expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (JSON allows any length)
        number = math.inf
    if not math.isfinite(number):
        raise _Rejected(NON_FINITE, f"{name}: {str(value)[:40]}")
    return number


def _timestamp(raw: Any, fallback: float) -> float:
    if raw is None:
        return fallback
    if isinstance(raw, str):
        try:
            ts = parse_timestamp(raw, strict=True)
        except ValueError as exc:
            raise _Rejected(BAD_TIMESTAMP, str(exc)) from exc
    elif isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Rejected(BAD_TIMESTAMP, f"expected epoch seconds, got {type(raw).__name__}")
    else:
        try:
            ts = float(raw)
        except OverflowError:  # an integer beyond float range
            ts = math.inf
    # Epoch seconds between 1970 and 2200 (ISO ones too); milliseconds would be ~1000x too large.
    if not math.isfinite(ts) or not 0.0 <= ts < 7.3e9:
        raise _Rejected(BAD_TIMESTAMP, f"out of range: {str(raw)[:40]}")
    return ts


def _stream_name(topic: str, name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise _Rejected(BAD_STREAM_NAME, f"field name {str(name)[:40]!r}")
    if name == "value":
        return topic
    if any(c in name for c in "#+/\0") or not name.isprintable():
        raise _Rejected(BAD_STREAM_NAME, f"field name {name[:40]!r}")
    return f"{topic}/{name}"


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _fields(obj: dict[Any, Any], topic: str, received_at: float, out: DecodedBatch) -> None:
    if "v" in obj and "m" in obj:
        _frame(obj, topic, received_at, out)
        return
    ts = _timestamp(obj.get("ts"), received_at)
    items = [(k, v) for k, v in obj.items() if k != "ts"]
    _measurements(items, topic, ts, out)


def _measurements(items: list[tuple[Any, Any]], topic: str, ts: float, out: DecodedBatch) -> None:
    if not items:
        raise _Rejected(NO_FIELDS, "no measurement fields")
    if len(items) > MAX_FIELDS:
        raise _Rejected(TOO_MANY_FIELDS, f"{len(items)} fields (max {MAX_FIELDS})")
    # Validate everything before emitting anything: a payload is taken whole or not at all.
    readings = [(_stream_name(topic, k), _number(v, str(k))) for k, v in items]
    if len(readings) > 1:
        out.devices.update((stream, topic) for stream, _ in readings)
    for stream, value in readings:
        out.streams.append(stream)
        out.ts.append(ts)
        out.values.append(value)


def _flat_map(obj: dict[Any, Any], topic: str, received_at: float, out: DecodedBatch) -> bool:
    """A map of number fields with an optional epoch ``ts`` (the usual payload), in a few C
    calls, with the result the general path would give. False, with nothing appended, for
    anything else (frames, ISO timestamps, anything to reject): the general path decides."""
    if "v" in obj and "m" in obj:
        return False
    ts = received_at
    fields = obj
    if "ts" in obj:
        raw = obj["ts"]
        if type(raw) not in _NUMBER_TYPES:
            return False
        try:
            ts = float(raw)
        except OverflowError:
            return False
        if not (math.isfinite(ts) and 0.0 <= ts < 7.3e9):
            return False
        fields = dict(obj)
        del fields["ts"]
    if not fields or len(fields) > MAX_FIELDS:
        return False
    values = list(fields.values())
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return False
    try:
        values = list(map(float, values))
    except OverflowError:
        return False
    if not all(map(math.isfinite, values)):
        return False
    shape = (topic, tuple(fields))
    names = _names_by_shape.get(shape)
    if names is None:
        try:
            names = [_stream_name(topic, name) for name in shape[1]]
        except _Rejected:
            return False
        if len(_names_by_shape) >= _NAMES_CACHED:
            _names_by_shape.clear()
        _names_by_shape[shape] = names
    if len(names) > 1:
        out.devices.update(dict.fromkeys(names, topic))
    out.streams.extend(names)
    out.ts.extend([ts] * len(names))
    out.values.extend(values)
    return True


def _frame(obj: dict[Any, Any], topic: str, received_at: float, out: DecodedBatch) -> None:
    version = obj.get("v")
    if version != FRAME_VERSION or isinstance(version, bool):
        raise _Rejected(BAD_FRAME, f"unsupported frame version {version!r}")
    dev, seq, measurements = obj.get("dev"), obj.get("seq"), obj.get("m")
    if not isinstance(dev, str) or not dev:
        raise _Rejected(BAD_FRAME, "dev must be a non-empty string")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _Rejected(BAD_FRAME, "seq must be a non-negative integer")
    if not isinstance(measurements, dict):
        raise _Rejected(BAD_FRAME, "m must be a map of measurements")
    ts = _timestamp(obj.get("ts"), received_at)
    _measurements(list(measurements.items()), topic, ts, out)
    out.frames.append((dev, seq))


def decode_payload(topic: str, payload: bytes, received_at: float, out: DecodedBatch) -> None:
    """Append the readings of one payload to ``out`` (or one reject)."""
    try:
        _decode(topic, payload, received_at, out)
    except _Rejected as rej:
        out.rejects.append(
            Reject(topic, rej.reason, rej.detail, payload[:PAYLOAD_PREFIX_BYTES], received_at)
        )


def _decode(topic: str, payload: bytes, received_at: float, out: DecodedBatch) -> None:
    if len(topic) > MAX_STREAM_NAME - 66 or not topic.isprintable():
        raise _Rejected(BAD_STREAM_NAME, f"topic {topic[:60]!r}")
    stripped = payload.strip()
    if not stripped:
        raise _Rejected(EMPTY, "empty payload")
    first = stripped[0]
    if first in _NUMBER_START or stripped[:3].lower() in (b"nan", b"inf"):
        try:
            value = float(stripped)
        except ValueError:
            pass  # not a bare number after all (msgpack ints also start with these bytes)
        else:
            if not math.isfinite(value):
                raise _Rejected(NON_FINITE, stripped[:20].decode(errors="replace"))
            out.streams.append(topic)
            out.ts.append(received_at)
            out.values.append(value)
            return
    if first == 0x7B:  # "{"
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            raise _Rejected(MALFORMED_JSON, str(exc)[:120]) from exc
    else:
        try:
            obj = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=False,
                max_str_len=1024,
                max_bin_len=1024,
                max_array_len=MAX_FIELDS,
                max_map_len=MAX_FIELDS + 4,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types on hostile input
            raise _Rejected(MALFORMED_MSGPACK, f"{type(exc).__name__}: {exc}"[:120]) from exc
    if not isinstance(obj, dict):
        raise _Rejected(NOT_A_READING, f"expected a number or a map, got {type(obj).__name__}")
    if _CONTAINER_TYPES.isdisjoint(map(type, obj.values())) and _flat_map(
            obj, topic, received_at, out):
        return
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise _Rejected(NOT_A_READING, "nested too deeply")
    _fields(obj, topic, received_at, out)


def _bare_numbers(messages: list[Message], max_payload_bytes: int) -> DecodedBatch | None:
    """A batch of bare numbers only (the usual case), decoded in bulk; None for anything else.

    The same readings as one by one: every payload that ``float`` takes passes ``_decode``'s
    test of its first byte, and the checks on sizes and topics are the same.
    """
    if not messages:
        return None
    topics, payloads, received = zip(*messages, strict=True)
    if (max(map(len, payloads)) > max_payload_bytes
            or max(map(len, topics)) > MAX_STREAM_NAME - 66
            or not all(map(str.isprintable, topics))):
        return None
    try:
        values = list(map(float, payloads))
    except ValueError:  # not all bare numbers
        return None
    if not all(map(math.isfinite, values)):
        return None
    return DecodedBatch(list(topics), list(received), values)


def decode_batch(messages: list[Message], max_payload_bytes: int) -> DecodedBatch:
    """Decode a micro-batch of ``(topic, payload, received_at)`` in arrival order.

    Examples
    --------
    >>> batch = decode_batch([("sensors/t", b"21.5", 1.0), ("sensors/h", b'{"a": 1, "b": 2}', 2.0),
    ...                       ("sensors/x", b"hello", 3.0)], 65536)
    >>> batch.streams, batch.values, [r.reason for r in batch.rejects]
    (['sensors/t', 'sensors/h/a', 'sensors/h/b'], [21.5, 1.0, 2.0], ['malformed_msgpack'])
    """
    numbers = _bare_numbers(messages, max_payload_bytes)
    if numbers is not None:
        return numbers
    out = DecodedBatch()
    for topic, payload, received_at in messages:
        if len(payload) > max_payload_bytes:
            out.rejects.append(
                Reject(
                    topic, OVERSIZED, f"{len(payload)} bytes (max {max_payload_bytes})",
                    payload[:PAYLOAD_PREFIX_BYTES], received_at,
                )
            )
            continue
        decode_payload(topic, payload, received_at, out)
    return out


# Firmware counts ``seq`` modulo 2**32 (a uint32). A step forward of less than half that range is
# a step forward (RFC 1982 serial-number arithmetic: 0 after 2**32 - 1 is the next frame); a
# larger one is a step back, which a device makes when it restarts and counts from 0 again.
SEQ_MODULUS = 2**32
SEQ_HALF = 2**31


class FrameGaps:
    """Firmware frames missing from each device's ``seq``, counted as frames arrive.

    A device's first frame (after this process started) sets where it is; a duplicate ``seq``
    is not a gap; a step back is a restart (counting begins again there), not a gap of four
    billion. Per device, and the total in ``missing``.

    Examples
    --------
    >>> gaps = FrameGaps()
    >>> gaps.record([("node-1", 7), ("node-1", 8), ("node-1", 11), ("node-1", 11)])
    2
    >>> gaps.record([("node-1", 0), ("node-1", 1)])  # restarted: no gap
    0
    >>> gaps.record([("node-2", 2**32 - 2), ("node-2", 2**32 - 1), ("node-2", 1)])  # wrapped
    1
    >>> gaps.missing, gaps.by_device
    (3, {'node-1': 2, 'node-2': 1})
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.by_device: dict[str, int] = {}
        self.missing = 0
        self.restarts = 0

    def record(self, frames: list[tuple[str, int]]) -> int:
        """Take the (dev, seq) of frames in arrival order; returns the frames newly missed."""
        missed = 0
        for dev, seq in frames:
            last = self.last.get(dev)
            self.last[dev] = seq
            if last is None:
                continue
            step = (seq - last) % SEQ_MODULUS
            if step == 0:
                continue  # the same frame again (a resend)
            if step >= SEQ_HALF:
                self.restarts += 1
                continue
            if step > 1:
                self.by_device[dev] = self.by_device.get(dev, 0) + step - 1
                missed += step - 1
        self.missing += missed
        return missed
